package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// FuzzRequestBodies throws arbitrary bodies at every operation that takes
// one. Whatever comes in, the answer is a success or a 4xx problem that
// the document allows (never a 5xx), and a refused request changes
// nothing: the datapath still holds exactly the desired state.
func FuzzRequestBodies(f *testing.F) {
	for _, seed := range []string{
		`{"protocol":"tcp","address":"192.0.2.1","port":80,"reals":[{"address":"10.0.0.1","weight":2}]}`,
		`{"protocol":"udp","address":"2001:db8::1","port":0,"sticky":true,"encap":"gue","ring_size":1021}`,
		`{"reals":[{"address":"10.0.0.1"},{"address":"10.0.0.1"}]}`,
		`{"weight":0,"state":"draining"}`,
		`{"sticky":true,"ring_size":655373}`,
		`{"protocol":"tcp","address":"::ffff:1.2.3.4","port":70000}`,
		`[]`, `null`, `{"reals":null}`, `{"port":1e3}`,
	} {
		for op := range uint8(5) {
			f.Add(op, []byte(seed))
		}
	}
	targets := []struct{ method, path string }{
		{"POST", "/api/v1/vips"},
		{"PUT", "/api/v1/vips/tcp-192.0.2.1-80"},
		{"PATCH", "/api/v1/vips/tcp-192.0.2.1-80"},
		{"PUT", "/api/v1/vips/tcp-192.0.2.1-80/reals"},
		{"PUT", "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.9"},
	}
	h := newHarness(f)
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		target := targets[int(op)%len(targets)]
		before := len(h.ctl.VIPs())
		r := httptest.NewRequest(target.method, target.path, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+testToken)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)
		switch {
		case w.Code >= 500:
			t.Fatalf("%s %s %q: %d %s", target.method, target.path, body, w.Code, w.Body)
		case w.Code >= 400:
			var p apiv1.ProblemJSON
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != w.Code || p.Detail == "" {
				t.Fatalf("refusal without a problem document: %d %s", w.Code, w.Body)
			}
			if len(h.ctl.VIPs()) != before {
				t.Fatalf("refused request changed the VIPs")
			}
		case w.Code != http.StatusOK && w.Code != http.StatusCreated:
			t.Fatalf("unexpected status %d", w.Code)
		}
		// Whatever happened, the datapath matches the state.
		if drifts, err := h.ctl.Reconcile(); err != nil || len(drifts) != 0 {
			t.Fatalf("after %s %s %q the datapath differs from the state: %+v %v", target.method, target.path, body, drifts, err)
		}
	})
}
