package control

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

// failProber fails every probe of the reals in down.
type failProber struct{ down map[netip.Addr]bool }

func (p failProber) Probe(_ context.Context, t health.Target, _ health.Spec) health.Result {
	return health.Result{OK: !p.down[t.Real], Reason: "test", At: time.Now()}
}

func TestServing(t *testing.T) {
	ctl := New(fakedp.New(), &memStore{}, nil, nil)
	key := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	if ctl.Serving(key) {
		t.Error("a VIP that does not exist is served")
	}
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if _, err := ctl.CreateVIP(VIP{Key: key, RingSize: 1021}); err != nil {
		t.Fatal(err)
	}
	if ctl.Serving(key) {
		t.Error("a VIP without reals is served")
	}
	if _, err := ctl.SetReals(key, []Real{{Addr: a, Weight: 1, State: lb.RealDraining}, {Addr: b, Weight: 0, State: lb.RealActive}}); err != nil {
		t.Fatal(err)
	}
	if ctl.Serving(key) {
		t.Error("a VIP whose reals are draining or weightless is served")
	}
	if _, _, err := ctl.PutReal(key, Real{Addr: b, Weight: 1, State: lb.RealActive}); err != nil {
		t.Fatal(err)
	}
	if !ctl.Serving(key) || !ctl.ServingVIPs()[key] {
		t.Error("a VIP with an active real is not served")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, done := ctl.Subscribe(16)
	defer done()
	ctl.StartHealth(ctx, failProber{down: map[netip.Addr]bool{b: true}}, 2, nil)
	spec := health.Spec{Type: health.TCP, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 1}
	if _, err := ctl.UpdateVIP(key, VIPUpdate{Health: &spec}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(3 * time.Second)
	for ctl.Serving(key) {
		select {
		case <-events:
		case <-deadline:
			t.Fatal("the VIP's only active real went down, yet the VIP is still served")
		}
	}
	ctl.Publish(Event{Type: "bgp_withdraw", VIP: "192.0.2.1/32"})
	for e := range events {
		if e.Type == "bgp_withdraw" {
			break
		}
	}
}
