package edgetest

import (
	"math/rand/v2"
	"testing"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
)

// TestDisabledVIPKeepsEstablishedFlows drives the real datapath
// (BPF_PROG_TEST_RUN) through the controller: after the VIP is disabled,
// its established TCP flows keep going to their reals through the
// connection table, while new flows (a SYN, or a first packet the table
// does not know) are dropped and counted as drop_no_real. Enabled again,
// it takes new flows, and the established ones still keep their reals.
func TestDisabledVIPKeepsEstablishedFlows(t *testing.T) {
	n := newNode(t)
	if _, err := n.ctl.CreateVIP(control.VIP{Key: web, RingSize: 1021, Reals: reals(webReals)}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(17, 1))
	established, fresh := randomFlows(rng, web, 100), randomFlows(rng, web, 100)
	realOf := map[flow]string{}
	for _, f := range established {
		for _, syn := range []bool{true, false} {
			act, out := n.send(t, f.frame(t, syn, "hello"))
			if act != xdp.ActionTX {
				t.Fatalf("before disabling: %v for %s", act, f.client)
			}
			realOf[f] = outerDst(out).String()
		}
	}
	noReal := func() uint64 {
		t.Helper()
		g, err := n.b.GlobalStats()
		if err != nil {
			t.Fatal(err)
		}
		return g[xdp.StatDropNoReal]
	}

	on, off := true, false
	if _, err := n.ctl.UpdateVIP(web, control.VIPUpdate{Disabled: &on}); err != nil {
		t.Fatal(err)
	}
	check := func(phase string) {
		t.Helper()
		for _, f := range established {
			act, out := n.send(t, f.frame(t, false, "more data "+phase))
			if act != xdp.ActionTX || outerDst(out).String() != realOf[f] {
				t.Fatalf("%s: established flow %s: %v to %s, was with %s", phase, f.client, act, outerDst(out), realOf[f])
			}
		}
	}
	check("disabled")
	before := noReal()
	for _, f := range fresh {
		for _, syn := range []bool{true, false} {
			if act, _ := n.send(t, f.frame(t, syn, "")); act != xdp.ActionDrop {
				t.Fatalf("disabled: new flow %s (syn %v): %v, want drop", f.client, syn, act)
			}
		}
	}
	if got := noReal() - before; got != 2*uint64(len(fresh)) {
		t.Errorf("disabled: drop_no_real rose by %d, want %d", got, 2*len(fresh))
	}
	if drifts, err := n.ctl.Reconcile(); err != nil || len(drifts) != 0 {
		t.Errorf("reconcile of the disabled VIP: %+v %v", drifts, err)
	}

	if _, err := n.ctl.UpdateVIP(web, control.VIPUpdate{Disabled: &off}); err != nil {
		t.Fatal(err)
	}
	check("enabled again")
	for _, f := range fresh {
		if act, _ := n.send(t, f.frame(t, true, "")); act != xdp.ActionTX {
			t.Fatalf("enabled again: new flow %s: %v", f.client, act)
		}
	}
}
