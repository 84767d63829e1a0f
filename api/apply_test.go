package api

import (
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/lb"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func ifMatchHeader(tags ...string) http.Header { return http.Header{"If-Match": tags} }

func port(p int) *int { return &p }

// exerciseApply applies whole sets (dry run, real, again, stale) on a
// harness, whatever it holds.
func exerciseApply(t *testing.T, h *harness) {
	t.Helper()
	set := apiv1.ApplyJSON{VIPs: []apiv1.VIPCreateJSON{
		{Protocol: "tcp", Address: "192.0.2.7", Port: port(443), VIPSettingsJSON: apiv1.VIPSettingsJSON{RingSize: 1021, Reals: []apiv1.RealJSON{{Address: "10.0.0.1", Weight: u32(2)}, {Address: "10.0.0.2"}}}},
		{Protocol: "udp", Address: "2001:db8::7", Port: port(53), VIPSettingsJSON: apiv1.VIPSettingsJSON{Flags: lb.VIPSticky, Reals: []apiv1.RealJSON{{Address: "2001:db8:1::1"}}}},
	}}
	var list apiv1.VIPListJSON
	h.expect(req{method: "GET", path: "/api/v1/vips"}, http.StatusOK, &list)
	before := h.answered.Get("ETag")
	var d apiv1.DiffJSON
	h.expect(req{method: "PUT", path: "/api/v1/vips?dry_run=true", body: set}, http.StatusOK, &d)
	if !d.DryRun || len(d.Added) != 2 || len(d.Removed) != len(list.VIPs) {
		t.Fatalf("dry run %+v", d)
	}
	var again apiv1.VIPListJSON
	h.expect(req{method: "GET", path: "/api/v1/vips"}, http.StatusOK, &again)
	if !reflect.DeepEqual(again, list) || h.answered.Get("ETag") != before {
		t.Fatal("a dry run changed the set")
	}
	h.expect(req{method: "PUT", path: "/api/v1/vips", body: set, header: ifMatchHeader(before)}, http.StatusOK, &d)
	if d.DryRun || len(d.Added) != 2 || d.Added[0].Name != "tcp-192.0.2.7-443" || len(d.Removed) != len(list.VIPs) {
		t.Fatalf("apply %+v", d)
	}
	if fp := h.answered.Get(apiv1.HeaderFingerprint); fp != h.ctl.Fingerprint() || fp != d.Fingerprint {
		t.Errorf("fingerprint header %q, body %q, controller %q", fp, d.Fingerprint, h.ctl.Fingerprint())
	}
	after := h.answered.Get("ETag")
	if after == before || after == "" {
		t.Errorf("set ETag %q after the change, %q before", after, before)
	}
	// Applied on the stale tag: refused, nothing changes.
	code, body := h.do(req{method: "PUT", path: "/api/v1/vips", body: apiv1.ApplyJSON{VIPs: []apiv1.VIPCreateJSON{}}, header: ifMatchHeader(before)})
	if code != http.StatusPreconditionFailed || !strings.Contains(string(body), "read it again") || len(h.ctl.VIPs()) != 2 {
		t.Fatalf("stale apply: %d %s", code, body)
	}
	// The same set again, in another order: nothing to do.
	set.VIPs[0], set.VIPs[1] = set.VIPs[1], set.VIPs[0]
	h.expect(req{method: "PUT", path: "/api/v1/vips", body: set, header: ifMatchHeader(after)}, http.StatusOK, &d)
	if len(d.Added)+len(d.Removed)+len(d.Changed) != 0 {
		t.Errorf("the same set again: %+v", d)
	}
	// A change of one weight and one setting.
	set.VIPs[1].RingSize = 4099
	set.VIPs[1].Reals[1].Weight = u32(5)
	h.expect(req{method: "PUT", path: "/api/v1/vips", body: set}, http.StatusOK, &d)
	if len(d.Changed) != 1 || len(d.Changed[0].Settings) != 1 || d.Changed[0].Settings[0].Setting != "ring_size" ||
		d.Changed[0].Settings[0].Old != 1021.0 || d.Changed[0].Settings[0].New != 4099.0 ||
		len(d.Changed[0].ChangedReals) != 1 || *d.Changed[0].ChangedReals[0].New.Weight != 5 {
		t.Errorf("change %+v", d)
	}
	// A bad VIP names itself and changes nothing.
	fp := h.ctl.Fingerprint()
	set.VIPs[0].Reals[0].Address = "127.0.0.1"
	var p apiv1.ProblemJSON
	h.expect(req{method: "PUT", path: "/api/v1/vips", body: set}, http.StatusUnprocessableEntity, &p)
	if p.Field != "vips[0].address" || !strings.Contains(p.Detail, "VIP 1 of the set (udp-2001:db8::7-53)") || h.ctl.Fingerprint() != fp {
		t.Errorf("bad VIP: %+v", p)
	}
}

// ETags and If-Match on single resources: a stale tag is refused with
// 412 and nothing changes; the current tag, or *, goes through.
func TestIfMatch(t *testing.T) {
	h := newHarness(t)
	var vip apiv1.VIPJSON
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80", body: apiv1.VIPSettingsJSON{Reals: []apiv1.RealJSON{{Address: "10.0.0.1"}, {Address: "10.0.0.2"}}}}, http.StatusCreated, &vip)
	vipTag := h.answered.Get("ETag")
	var real apiv1.RealJSON
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.1"}, http.StatusOK, &real)
	r1Tag := h.answered.Get("ETag")
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80"}, http.StatusOK, &vip)
	if h.answered.Get("ETag") != vipTag || !strings.HasPrefix(vipTag, `"`) || r1Tag == vipTag {
		t.Fatalf("tags: VIP %q then %q, real %q", vipTag, h.answered.Get("ETag"), r1Tag)
	}
	// A concurrent change of 10.0.0.2: the VIP's tag is stale, 10.0.0.1's is not.
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.2", body: apiv1.RealSettingsJSON{Weight: u32(4)}}, http.StatusOK, &real)
	fp := h.ctl.Fingerprint()
	for _, r := range []req{
		{method: "PATCH", path: "/api/v1/vips/tcp-192.0.2.1-80", body: apiv1.VIPPatchJSON{ClearFlags: lb.VIPSticky}},
		{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80", body: apiv1.VIPSettingsJSON{}},
		{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals", body: apiv1.RealListJSON{Reals: []apiv1.RealJSON{}}},
		{method: "DELETE", path: "/api/v1/vips/tcp-192.0.2.1-80"},
	} {
		r.header = ifMatchHeader(vipTag)
		var p apiv1.ProblemJSON
		h.expect(r, http.StatusPreconditionFailed, &p)
		if !strings.Contains(p.Detail, "changed since it was read") {
			t.Errorf("%s %s: %+v", r.method, r.path, p)
		}
	}
	// Weak tags never match; a tag of a real that is gone neither; * needs it to exist.
	for _, r := range []req{
		{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.1", body: apiv1.RealSettingsJSON{Weight: u32(9)}, header: ifMatchHeader("W/" + r1Tag)},
		{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.9", body: apiv1.RealSettingsJSON{Weight: u32(9)}, header: ifMatchHeader("*")},
		{method: "DELETE", path: "/api/v1/vips/tcp-192.0.2.9-80", header: ifMatchHeader("*")},
	} {
		h.expect(r, http.StatusPreconditionFailed, nil)
	}
	if h.ctl.Fingerprint() != fp || len(h.ctl.VIPs()) != 1 {
		t.Fatal("a refused change changed something")
	}
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.1", body: apiv1.RealSettingsJSON{Weight: u32(3)}, header: ifMatchHeader(`"nope"`, r1Tag)}, http.StatusOK, &real)
	if *real.Weight != 3 || h.answered.Get("ETag") == r1Tag || h.answered.Get(apiv1.HeaderFingerprint) != h.ctl.Fingerprint() || h.ctl.Fingerprint() == fp {
		t.Errorf("change on the current tag: %+v, ETag %q", real, h.answered.Get("ETag"))
	}
	h.expect(req{method: "DELETE", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.1", header: ifMatchHeader("*")}, http.StatusNoContent, nil)
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80", body: apiv1.VIPSettingsJSON{}, header: ifMatchHeader("bare")}, http.StatusBadRequest, nil)
}

func TestStatusAndMetricShowFingerprint(t *testing.T) {
	h := newHarness(t)
	var st apiv1.StatusJSON
	h.expect(req{method: "GET", path: "/api/v1/status"}, http.StatusOK, &st)
	empty := st.Fingerprint
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80", body: apiv1.VIPSettingsJSON{Reals: []apiv1.RealJSON{{Address: "10.0.0.1"}}}}, http.StatusCreated, nil)
	h.expect(req{method: "GET", path: "/api/v1/status"}, http.StatusOK, &st)
	if len(st.Fingerprint) != 64 || st.Fingerprint == empty || st.FingerprintShort != st.Fingerprint[:12] || st.Fingerprint != h.ctl.Fingerprint() {
		t.Errorf("status fingerprint %q (%q), empty %q", st.Fingerprint, st.FingerprintShort, empty)
	}
	_, metrics := h.do(req{method: "GET", path: "/metrics"})
	if want := `lbd_config_fingerprint_info{fingerprint="` + st.Fingerprint + `"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("metrics lack %s", want)
	}
}
