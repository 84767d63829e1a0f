package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/lb"
)

// TestRingBuffers: back-to-back ring changes of one size and of another
// each take effect at once (the live buffer alternates and the idle one
// waits for its grace period before being written), Ring reads the live
// buffer, and a reopened balancer finds whichever buffer was live.
func TestRingBuffers(t *testing.T) {
	dir := testPinDir(t)
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}
	b := openPinned(t, limits, dir)
	key := lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 80, Proto: lb.TCP}
	if err := b.AddVIP(key, lb.VIPNoLRU); err != nil { // every packet follows the ring
		t.Fatal(err)
	}
	var ids []RealID
	for _, a := range []string{"10.0.1.1", "10.0.1.2", "10.0.1.3"} {
		id, err := b.AddReal(netip.MustParseAddr(a))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	syn := pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 1234, dport: 80, proto: lb.TCP, flags: "S"}.frame(t)
	realOf := func() netip.Addr {
		t.Helper()
		act, out, err := b.Simulate(syn)
		if err != nil || act != ActionTX {
			t.Fatalf("simulate: %v %v", act, err)
		}
		return netip.AddrFrom4([4]byte(out[14+16 : 14+20])) // outer IPv4 destination
	}
	uniform := func(id RealID, n int) []uint32 {
		r := make([]uint32, n)
		for i := range r {
			r[i] = uint32(id)
		}
		return r
	}
	for i := range 12 {
		id := ids[i%3]
		size := 1021
		if i%4 == 3 {
			size = 4099 // a size change takes a new map
		}
		if err := b.SetRing(key, uniform(id, size)); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		want, _ := b.RealAddr(id)
		if got := realOf(); got != want {
			t.Fatalf("change %d: packet went to %s, want %s", i, got, want)
		}
		ring, err := b.Ring(key)
		if err != nil || len(ring) != size || ring[0] != uint32(id) {
			t.Fatalf("change %d: Ring() = %d slots of %v, %v", i, len(ring), ring[:1], err)
		}
	}
	v, _ := b.LookupVIP(key)
	live := b.vips[key].buf
	b.Close()

	b2 := openPinned(t, limits, dir)
	if b2.vips[key].buf != live {
		t.Errorf("reopened with buffer %d live, want %d", b2.vips[key].buf, live)
	}
	ring, err := b2.Ring(key)
	if err != nil || !slices.Equal(ring, uniform(ids[11%3], int(v.RingSize))) {
		t.Fatalf("ring after reopen: %d slots, %v", len(ring), err)
	}
	b = b2
	if err := b.SetRing(key, uniform(ids[0], 1021)); err != nil {
		t.Fatal(err)
	}
	if want, _ := b.RealAddr(ids[0]); realOf() != want {
		t.Error("a change after reopen does not take effect")
	}
	if err := b.RemoveVIP(key); err != nil {
		t.Fatal(err)
	}
	if len(b.ringMaps) != 0 {
		t.Errorf("ring buffers of a removed VIP still open: %v", b.ringMaps)
	}
}

// TestRingUnreadable: a recovered VIP whose live ring buffer may not be
// opened by id (EPERM without CAP_SYS_ADMIN) gives ErrRingUnreadable, not
// another error; SetRing still installs a ring (a new map in the idle
// buffer), which is then read back.
func TestRingUnreadable(t *testing.T) {
	dir := testPinDir(t)
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}
	b := openPinned(t, limits, dir)
	key := lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 80, Proto: lb.TCP}
	if err := b.AddVIP(key, 0); err != nil {
		t.Fatal(err)
	}
	id, err := b.AddReal(netip.MustParseAddr("10.0.1.1"))
	if err != nil {
		t.Fatal(err)
	}
	ring := slices.Repeat(ringOf(id), 1021)
	if err := b.SetRing(key, ring); err != nil {
		t.Fatal(err)
	}
	b.Close()

	saved := newMapFromID
	t.Cleanup(func() { newMapFromID = saved })
	newMapFromID = func(ebpf.MapID) (*ebpf.Map, error) { return nil, fmt.Errorf("map get fd by id: %w", unix.EPERM) }
	b = openPinned(t, limits, dir)
	if _, err := b.Ring(key); !errors.Is(err, ErrRingUnreadable) || !errors.Is(err, unix.EPERM) {
		t.Fatalf("Ring of a recovered VIP without permission: %v, want ErrRingUnreadable", err)
	}
	newMapFromID = func(ebpf.MapID) (*ebpf.Map, error) { return nil, fmt.Errorf("map get fd by id: %w", unix.ENOENT) }
	if _, err := b.Ring(key); err == nil || errors.Is(err, ErrRingUnreadable) {
		t.Fatalf("Ring with another error: %v, want it not to be ErrRingUnreadable", err)
	}
	newMapFromID = func(ebpf.MapID) (*ebpf.Map, error) { return nil, fmt.Errorf("map get fd by id: %w", unix.EPERM) }
	if err := b.SetRing(key, ring); err != nil {
		t.Fatalf("SetRing over an unreadable ring: %v", err)
	}
	got, err := b.Ring(key)
	if err != nil || !slices.Equal(got, ring) {
		t.Fatalf("ring after the rewrite: %d slots, %v", len(got), err)
	}
}
