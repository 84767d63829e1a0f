package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// fakeBGP is a BGP whose state the test sets.
type fakeBGP struct {
	mu      sync.Mutex
	st      apiv1.BGPStatusJSON
	failSet error
}

func (f *fakeBGP) Status(context.Context) (apiv1.BGPStatusJSON, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Prefixes = append([]apiv1.BGPPrefixJSON(nil), f.st.Prefixes...)
	for i := range st.Prefixes {
		if f.st.Drained {
			st.Prefixes[i].Announced, st.Prefixes[i].Reason = false, "node is drained"
		}
	}
	return st, nil
}

func (f *fakeBGP) SetDrained(d bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSet != nil {
		return f.failSet
	}
	f.st.Drained = d
	return nil
}

func newBGPHarness(t *testing.T, b BGP) *harness {
	h := newHarness(t)
	var err error
	h.srv, err = New(Options{Controller: h.ctl, Token: testToken, BGP: b})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// exerciseBGPDisabled calls the BGP operations of a server without BGP
// (TestEveryOperation's), each checked against the document.
func exerciseBGPDisabled(t *testing.T, h *harness) {
	t.Helper()
	var st apiv1.BGPStatusJSON
	h.expect(req{method: "GET", path: "/api/v1/bgp"}, http.StatusOK, &st)
	if st.Enabled || st.Drained || st.Peers == nil || st.Prefixes == nil || len(st.Peers)+len(st.Prefixes) != 0 {
		t.Errorf("BGP off: %+v", st)
	}
	for _, m := range []string{"POST", "DELETE"} {
		code, body := h.do(req{method: m, path: "/api/v1/drain"})
		if code != http.StatusConflict || !contains(body, "BGP is not configured") {
			t.Errorf("%s /drain without BGP: %d %s", m, code, body)
		}
	}
}

func TestBGPInTheAPI(t *testing.T) {
	b := &fakeBGP{st: apiv1.BGPStatusJSON{
		Enabled: true, LocalAS: 65101, RouterID: "10.255.0.11",
		Peers: []apiv1.BGPPeerJSON{
			{Address: "192.0.2.254", AS: 65000, State: "established", EstablishedAt: "2026-01-02T03:04:05Z", UptimeSeconds: 42, RoutesSent: 1},
			{Address: "2001:db8::fe", AS: 65000, State: "active", LastError: "hold timer expired"},
		},
		Prefixes: []apiv1.BGPPrefixJSON{
			{Prefix: "192.0.2.1/32", Announced: true, VIPs: []string{"tcp-192.0.2.1-80", "udp-192.0.2.1-53"}, Since: "2026-01-02T03:04:06Z"},
			{Prefix: "2001:db8::1/128", Reason: "no VIP at this address has a healthy active real", VIPs: []string{"tcp-2001:db8::1-443"}},
		},
	}}
	h := newBGPHarness(t, b)
	var st apiv1.BGPStatusJSON
	h.expect(req{method: "GET", path: "/api/v1/bgp"}, http.StatusOK, &st)
	if !st.Enabled || st.Drained || len(st.Peers) != 2 || st.Peers[0].RoutesSent != 1 || len(st.Prefixes) != 2 || !st.Prefixes[0].Announced {
		t.Errorf("status %+v", st)
	}
	_, metrics := h.do(req{method: "GET", path: "/metrics"})
	for _, line := range []string{`lbd_bgp_session_up{peer="192.0.2.254"} 1`, `lbd_bgp_session_up{peer="2001:db8::fe"} 0`, "lbd_bgp_announced_prefixes 1", "lbd_drained 0"} {
		if !contains(metrics, line) {
			t.Errorf("metrics lack %s", line)
		}
	}

	for range 2 { // idempotent
		h.expect(req{method: "POST", path: "/api/v1/drain"}, http.StatusOK, &st)
		if !st.Drained || st.Prefixes[0].Announced {
			t.Errorf("drained: %+v", st)
		}
	}
	_, metrics = h.do(req{method: "GET", path: "/metrics"})
	if !contains(metrics, "lbd_drained 1") || !contains(metrics, "lbd_bgp_announced_prefixes 0") {
		t.Errorf("metrics after drain:\n%s", metrics)
	}
	h.expect(req{method: "DELETE", path: "/api/v1/drain"}, http.StatusOK, &st)
	if st.Drained || !st.Prefixes[0].Announced {
		t.Errorf("undrained: %+v", st)
	}

	b.failSet = errors.New("save drain state: read-only file system")
	code, body := h.do(req{method: "POST", path: "/api/v1/drain"})
	if code != http.StatusInternalServerError || !strings.Contains(string(body), "read-only file system") {
		t.Errorf("failed drain: %d %s", code, body)
	}
}
