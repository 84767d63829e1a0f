package control

import (
	"net/netip"
	"testing"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control/maglev"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// BenchmarkRingRebuildSwap65537 is the datapath half of a change: build a
// 65537-slot Maglev ring for 100 reals (weights alternate, so every build
// differs) and swap it into the kernel.
func BenchmarkRingRebuildSwap65537(b *testing.B) {
	privtest.Require(b)
	bal, err := xdp.Load(xdp.Limits{MaxVIPs: 4, MaxReals: 512, MaxFlows: 1024})
	privtest.CheckNotSupported(b, "load balancer", err)
	defer bal.Close()
	key := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	if err := bal.AddVIP(key, 0); err != nil {
		b.Fatal(err)
	}
	backends := make([]maglev.Backend, 100)
	for i := range backends {
		a := netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})
		id, err := bal.AddReal(a)
		if err != nil {
			b.Fatal(err)
		}
		backends[i] = maglev.Backend{Name: a.String(), ID: uint32(id), Weight: 1}
	}
	var builder maglev.Builder
	table := make([]uint32, maglev.DefaultSize)
	b.ResetTimer()
	for i := range b.N {
		backends[0].Weight = uint32(1 + i%2)
		if err := builder.BuildInto(table, backends); err != nil {
			b.Fatal(err)
		}
		if err := bal.SetRing(key, table); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconcile100VIPs65537 is the periodic reconcile of a datapath
// in sync: 100 VIPs with 65537-slot rings and 10 reals each (1000 reals in
// all), every kernel map read back and compared, every live ring read and
// compared with the one the desired state builds.
func BenchmarkReconcile100VIPs65537(b *testing.B) {
	privtest.Require(b)
	bal, err := xdp.Load(xdp.Limits{MaxVIPs: 128, MaxReals: 2048, MaxFlows: 1024})
	privtest.CheckNotSupported(b, "load balancer", err)
	defer bal.Close()
	cfg, err := bal.Config()
	if err != nil {
		b.Fatal(err)
	}
	c := New(bal, &memStore{}, nil, nil)
	c.SetDatapathConfig(cfg)
	for v := range 100 {
		reals := make([]Real, 10)
		for i := range reals {
			reals[i] = Real{Addr: netip.AddrFrom4([4]byte{10, 2, byte(v), byte(i + 1)}), Weight: 1}
		}
		key := lb.VIPKey{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(v + 1)}), Port: 80, Proto: lb.TCP}
		if _, err := c.CreateVIP(VIP{Key: key, RingSize: maglev.DefaultSize, Reals: reals}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		drifts, err := c.Reconcile()
		if err != nil || len(drifts) != 0 {
			b.Fatalf("%+v %v", drifts, err)
		}
	}
}
