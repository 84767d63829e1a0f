package api

import (
	"bytes"
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control/health"
)

// downProber fails every probe of one real.
type downProber struct{ down netip.Addr }

func (p downProber) Probe(_ context.Context, t health.Target, _ health.Spec) health.Result {
	if t.Real == p.down {
		return health.Result{OK: false, Reason: "connect: connection refused", At: time.Now(), Duration: time.Millisecond}
	}
	return health.Result{OK: true, Reason: "connected", At: time.Now(), Duration: time.Millisecond}
}

func TestHealthChecksInTheAPI(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.ctl.StartHealth(ctx, downProber{down: netip.MustParseAddr("10.0.0.2")}, 4, nil)

	var vip apiv1.VIPJSON
	h.expect(req{method: "POST", path: "/api/v1/vips", body: map[string]any{
		"protocol": "tcp", "address": "192.0.2.1", "port": 80, "ring_size": 1021,
		"health_check": map[string]any{"type": "tcp", "interval": "100ms", "fall": 1},
		"down_flows":   "reset",
		"reals":        []map[string]any{{"address": "10.0.0.1"}, {"address": "10.0.0.2"}},
	}}, http.StatusCreated, &vip)
	want := apiv1.HealthCheckJSON{Type: "tcp", Interval: "100ms", Timeout: "100ms", Rise: 2, Fall: 1}
	if vip.HealthCheck != want || vip.DownFlows != "reset" || vip.AllDown != "serve-all" {
		t.Errorf("defaults: %+v %s %s", vip.HealthCheck, vip.DownFlows, vip.AllDown)
	}

	var real apiv1.RealJSON
	deadline := time.Now().Add(3 * time.Second)
	for {
		h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.2"}, http.StatusOK, &real)
		if real.Health != nil && real.Health.State == "down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("real never reported down: %+v", real.Health)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if real.Health.LastResult == nil || real.Health.LastResult.OK || real.Health.Reason != "1 failures in a row: connect: connection refused" {
		t.Errorf("health %+v", real.Health)
	}
	var ring apiv1.RingJSON
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/ring"}, http.StatusOK, &ring)
	for _, r := range ring.Reals {
		if r.Address == "10.0.0.2" && r.Slots != 0 || r.Address == "10.0.0.1" && r.Slots != 1021 {
			t.Errorf("ring with 10.0.0.2 down: %+v", ring.Reals)
		}
	}
	_, metrics := h.do(req{method: "GET", path: "/metrics"})
	for _, line := range []string{`lbd_real_up{real="10.0.0.2",vip="tcp-192.0.2.1-80"} 0`, `lbd_real_up{real="10.0.0.1",vip="tcp-192.0.2.1-80"} 1`} {
		if !contains(metrics, line) {
			t.Errorf("metrics lack %s", line)
		}
	}

	var off apiv1.VIPJSON
	h.expect(req{method: "PATCH", path: "/api/v1/vips/tcp-192.0.2.1-80", body: map[string]any{"health_check": map[string]any{"type": "none"}}}, http.StatusOK, &off)
	if off.HealthCheck != (apiv1.HealthCheckJSON{Type: "none"}) || off.Reals[1].Health != nil {
		t.Errorf("checks off: %+v %+v", off.HealthCheck, off.Reals[1].Health)
	}
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/ring"}, http.StatusOK, &ring)
	for _, r := range ring.Reals {
		if r.Slots < 510 || r.Slots > 511 {
			t.Errorf("checks off: every real is back in the ring: %+v", ring.Reals)
		}
	}

	for _, bad := range []struct{ body, field string }{
		{`{"health_check":{"type":"tcp","interval":"soon"}}`, "health_check.interval"},
		{`{"health_check":{"type":"ping"}}`, "health_check"},
		{`{"down_flows":"drop"}`, "down_flows"},
	} {
		code, body := h.do(req{method: "PATCH", path: "/api/v1/vips/tcp-192.0.2.1-80", body: bad.body, invalid: true})
		if code != 422 || !contains(body, `"field":"`+bad.field+`"`) {
			t.Errorf("%s: %d %s", bad.body, code, body)
		}
	}
}

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
