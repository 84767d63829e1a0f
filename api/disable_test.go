package api

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/lb"
)

// TestDisableVIP: "disabled" is carried like "sticky": in the VIP as
// answered, on create and PUT, and by PATCH alone; a disabled VIP's ring
// is empty and enabling it restores it. Anything but a boolean is refused
// by the strict checker.
func TestDisableVIP(t *testing.T) {
	h := newHarness(t)
	const path = "/api/v1/vips/tcp-192.0.2.1-80"
	var vip apiv1.VIPJSON
	h.expect(req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.1","port":80,"ring_size":1021,"reals":[{"address":"10.0.0.1"},{"address":"10.0.0.2","weight":2}]}`}, http.StatusCreated, &vip)
	if vip.Disabled {
		t.Fatalf("created disabled: %+v", vip)
	}
	key := lb.VIPKey{Proto: lb.TCP, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}
	before := slices.Clone(h.dp.Rings[key])
	num := h.dp.VIPMap[key].Num

	on := true
	h.expect(req{method: "PATCH", path: path, body: apiv1.VIPPatchJSON{Disabled: &on}}, http.StatusOK, &vip)
	if !vip.Disabled || len(vip.Reals) != 2 || vip.RingSize != 1021 {
		t.Errorf("patch disabled: %+v", vip)
	}
	if !slices.Equal(h.dp.Rings[key], []uint32{0}) || h.dp.VIPMap[key].Num != num {
		t.Errorf("disabled: ring of %d slots, VIP number %d (was %d)", len(h.dp.Rings[key]), h.dp.VIPMap[key].Num, num)
	}
	var ring apiv1.RingJSON
	h.expect(req{method: "GET", path: path + "/ring"}, http.StatusOK, &ring)
	if ring.EmptySlots != ring.Size {
		t.Errorf("ring of a disabled VIP: %+v", ring)
	}
	h.expect(req{method: "GET", path: path}, http.StatusOK, &vip)
	var list apiv1.VIPListJSON
	h.expect(req{method: "GET", path: "/api/v1/vips"}, http.StatusOK, &list)
	if !vip.Disabled || len(list.VIPs) != 1 || !list.VIPs[0].Disabled {
		t.Errorf("get: %+v, list %+v", vip, list.VIPs)
	}
	// another PATCH keeps it
	h.expect(req{method: "PATCH", path: path, body: apiv1.VIPPatchJSON{SetFlags: lb.VIPSticky}}, http.StatusOK, &vip)
	if !vip.Disabled || !vip.Flags.Has(lb.VIPSticky) {
		t.Errorf("patch sticky: %+v", vip)
	}
	h.expect(req{method: "PATCH", path: path, body: `{"disabled":false,"sticky":false}`}, http.StatusOK, &vip)
	if vip.Disabled || vip.Flags.Has(lb.VIPSticky) || !slices.Equal(h.dp.Rings[key], before) {
		t.Errorf("enabled: %+v; ring restored: %v", vip, slices.Equal(h.dp.Rings[key], before))
	}

	// PUT and create carry it too; PUT without it enables
	h.expect(req{method: "PUT", path: path, body: `{"ring_size":1021,"disabled":true,"reals":[{"address":"10.0.0.1"}]}`}, http.StatusOK, &vip)
	if !vip.Disabled || !slices.Equal(h.dp.Rings[key], []uint32{0}) {
		t.Errorf("put disabled: %+v", vip)
	}
	h.expect(req{method: "PUT", path: path, body: `{"ring_size":1021,"reals":[{"address":"10.0.0.1"}]}`}, http.StatusOK, &vip)
	if vip.Disabled || len(h.dp.Rings[key]) != 1021 {
		t.Errorf("put without disabled: %+v", vip)
	}
	h.expect(req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"udp","address":"192.0.2.1","port":53,"disabled":true}`}, http.StatusCreated, &vip)
	if v, err := h.ctl.VIP(lb.VIPKey{Proto: lb.UDP, Addr: netip.MustParseAddr("192.0.2.1"), Port: 53}); err != nil || !vip.Disabled || !v.Disabled {
		t.Errorf("create disabled: %+v", vip)
	}

	// only booleans
	for _, tc := range []struct{ body, detail string }{
		{`{"disabled":null}`, `field "disabled" must be a boolean (true or false), not null`},
		{`{"disabled":"yes"}`, `field "disabled" must be a boolean (true or false), not a string`},
		{`{"disabled":1}`, `field "disabled" must be a boolean (true or false), not a number`},
	} {
		code, body := h.do(req{method: "PATCH", path: path, body: tc.body, invalid: true})
		var p apiv1.ProblemJSON
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("%s: answer is not a problem: %s", tc.body, body)
		}
		if code != http.StatusBadRequest || !strings.Contains(p.Detail, tc.detail) || p.Field != "disabled" {
			t.Errorf("%s: got %d %q (field %q)", tc.body, code, p.Detail, p.Field)
		}
	}
	if v, err := h.ctl.VIP(key); err != nil || v.Disabled {
		t.Errorf("a refused PATCH changed the VIP: %+v %v", v, err)
	}
}
