package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// TestStrictJSON: bodies are read as strictly as openapi.yaml describes
// them, and the errors name the JSON field and JSON type, never a Go type.
func TestStrictJSON(t *testing.T) {
	h := newHarness(t)
	h.expect(req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.1","port":80}`}, http.StatusCreated, nil)
	const vip = "/api/v1/vips/tcp-192.0.2.1-80"
	cases := []struct {
		name, method, path, body string
		status                   int
		detail, field            string
	}{
		{"key case", "POST", "/api/v1/vips", `{"PROTOCOL":"tcp","address":"192.0.2.2","port":80}`, 400, `field names are case-sensitive: write "protocol"`, "PROTOCOL"},
		{"nested key case", "PUT", vip, `{"reals":[{"Address":"10.0.0.1"}]}`, 400, `write "reals[0].address"`, "reals[0].Address"},
		{"duplicate key", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.2","port":80,"port":81}`, 400, `field "port" is given twice`, "port"},
		{"nested duplicate", "PATCH", vip, `{"health_check":{"type":"tcp","type":"http"}}`, 400, `field "health_check.type" is given twice`, "health_check.type"},
		{"null boolean", "PATCH", vip, `{"sticky":null}`, 400, `field "sticky" must be a boolean (true or false), not null`, "sticky"},
		{"null object", "PUT", vip, `{"health_check":null}`, 400, `field "health_check" must be an object, not null`, "health_check"},
		{"null reals", "PUT", vip + "/reals", `{"reals":null}`, 400, `field "reals" must be an array, not null`, "reals"},
		{"null body", "PUT", vip, `null`, 400, `the body must be an object, not null`, ""},
		{"array body", "POST", "/api/v1/vips", `[]`, 400, `the body must be an object, not an array`, ""},
		{"string for bool", "PATCH", vip, `{"no_lru":"yes"}`, 400, `field "no_lru" must be a boolean (true or false), not a string`, "no_lru"},
		{"float port", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.2","port":80.5}`, 400, `field "port" must be an integer (digits only`, "port"},
		{"exponent", "PATCH", vip, `{"ring_size":1e3}`, 400, `field "ring_size" must be an integer (digits only`, "ring_size"},
		{"too big for its type", "PUT", vip + "/reals/10.0.0.1", `{"weight":5000000000}`, 400, `field "weight" must be an integer from 0 to 4294967295, not number 5000000000`, "weight"},
		{"health check without type", "PATCH", vip, `{"health_check":{"path":"/"}}`, 422, `needs a "type"`, "health_check.type"},
		{"health path with CRLF", "PATCH", vip, `{"health_check":{"type":"http","path":"/x\r\nHost: evil"}}`, 422, `not allowed in a URL path`, "health_check.path"},
		{"unknown nested", "PATCH", vip, `{"health_check":{"type":"tcp","port":80,"retries":3}}`, 400, `unknown field "health_check.retries"`, "health_check.retries"},
		{"loopback VIP", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"127.0.0.1","port":80}`, 422, "loopback", "address"},
		{"conflict after a bad body", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.1","port":80,"ring_size":7}`, 422, "one of the primes", "ring_size"},
		{"conflict after a bad real", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.1","port":80,"reals":[{"address":"169.254.1.1"}]}`, 422, "link-local", "address"},
		{"conflict", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.1","port":80}`, 409, "already exists", ""},
		{"limit 0", "GET", "/api/v1/flows?limit=0", "", 422, "want a number from 1 to 1000", "limit"},
		{"limit -1", "GET", "/api/v1/flows?limit=-1", "", 422, "want a number from 1 to 1000", "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			r := req{method: tc.method, path: tc.path, invalid: true}
			if tc.body != "" {
				r.body = tc.body
			}
			code, body := h.do(r)
			var p apiv1.ProblemJSON
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("answer is not a problem: %s", body)
			}
			if code != tc.status || !strings.Contains(p.Detail, tc.detail) || p.Field != tc.field {
				t.Errorf("got %d %q (field %q); want %d with %q (field %q)", code, p.Detail, p.Field, tc.status, tc.detail, tc.field)
			}
			for _, goType := range []string{"api.", "control.", "uint32", "int64", "*bool", "struct"} {
				if strings.Contains(p.Detail, goType) {
					t.Errorf("the error names a Go type (%s): %q", goType, p.Detail)
				}
			}
		})
	}
	h.t = t
	var v apiv1.VIPJSON
	h.expect(req{method: "GET", path: vip}, http.StatusOK, &v)
	if v.Flags != 0 || len(v.Reals) != 0 || v.HealthCheck.Type != "none" || len(h.ctl.VIPs()) != 1 {
		t.Errorf("refused bodies changed the VIP: %+v", v)
	}
}
