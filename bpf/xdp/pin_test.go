package xdp

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// testPinDir is a fresh pin directory on bpffs, cleaned up after the test
// (after the test's Balancers are closed: cleanups run last-in first-out).
func testPinDir(t *testing.T) string {
	t.Helper()
	privtest.Require(t)
	var r [6]byte
	_, _ = rand.Read(r[:])
	dir := filepath.Join(BPFFSRoot, "lbd-test-"+hex.EncodeToString(r[:]))
	if err := EnsureBPFFS(dir); err != nil {
		privtest.Unavailable(t, err.Error())
	}
	t.Cleanup(func() {
		if err := Cleanup(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

func openPinned(t *testing.T, limits Limits, dir string) *Balancer {
	t.Helper()
	b, err := Open(Options{Limits: limits, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// lbState is everything a restart must keep, as the API shows it.
type lbState struct {
	VIPs      []VIP
	Gens      map[lb.VIPKey]uint32
	Reals     map[netip.Addr]RealID
	Rings     map[lb.VIPKey][]uint32
	Global    GlobalStats
	VIPStats  map[lb.VIPKey]VIPStats
	RealStats map[RealID]RealStats
	Config    Config
	Flows     map[FlowKey]Flow // without times (their wall-clock conversion moves)
}

func snapshot(t *testing.T, b *Balancer) lbState {
	t.Helper()
	s := lbState{
		VIPs: b.VIPs(), Gens: map[lb.VIPKey]uint32{}, Reals: b.Reals(), Rings: map[lb.VIPKey][]uint32{},
		VIPStats: map[lb.VIPKey]VIPStats{}, RealStats: map[RealID]RealStats{}, Flows: map[FlowKey]Flow{},
	}
	slices.SortFunc(s.VIPs, func(a, b VIP) int { return int(a.Num) - int(b.Num) })
	var err error
	for _, v := range s.VIPs {
		b.mu.Lock()
		s.Gens[v.Key] = b.vips[v.Key].gen
		b.mu.Unlock()
		if s.Rings[v.Key], err = b.Ring(v.Key); err != nil {
			t.Fatal(err)
		}
		if s.VIPStats[v.Key], err = b.VIPStats(v.Key); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range s.Reals {
		if s.RealStats[id], err = b.RealStats(id); err != nil {
			t.Fatal(err)
		}
	}
	if s.Global, err = b.GlobalStats(); err != nil {
		t.Fatal(err)
	}
	if s.Config, err = b.Config(); err != nil {
		t.Fatal(err)
	}
	for f, err := range b.Flows() {
		if err != nil {
			t.Fatal(err)
		}
		s.Flows[f.Key] = Flow{Key: f.Key, Real: f.Real, VIPNum: f.VIPNum, Packets: f.Packets, Bytes: f.Bytes}
	}
	return s
}

// TestReopen: a balancer opened again from its pins has the VIPs, reals,
// rings, counters, configuration and connection table of the one before,
// established flows keep their reals, and new VIPs and reals get numbers
// and generations that do not collide with what the table remembers.
func TestReopen(t *testing.T) {
	dir := testPinDir(t)
	limits := Limits{MaxVIPs: 16, MaxReals: 64, MaxFlows: 1024}
	l := newTestLBOpts(t, Options{Limits: limits, PinDir: dir})
	if l.Recovered() {
		t.Error("Recovered() on a fresh pin directory")
	}
	for _, name := range pinnedMaps {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("map %s not pinned: %v", name, err)
		}
	}

	tcp4 := pkt{src: "198.51.100.60", dst: "10.10.0.1", sport: 40200, dport: 80, proto: lb.TCP, flags: "S"}
	tcp6 := pkt{src: "2001:db8:1::60", dst: "2001:db8::10", sport: 40200, dport: 80, proto: lb.TCP, flags: "S"}
	gone := pkt{src: "2001:db8:1::61", dst: "2001:db8::30", sport: 7000, dport: 443, proto: lb.UDP, payload: []byte("q")}
	l.openOn(t, 0, tcp4)
	l.openOn(t, 0, tcp6)
	if act, _, err := l.Simulate(gone.frame(t)); err != nil || act != ActionTX {
		t.Fatalf("%v: %v %v", gone.flowKey(), act, err)
	}
	goneFlow, err := l.LookupFlow(gone.flowKey())
	if err != nil {
		t.Fatal(err)
	}

	// Remove the VIP with the highest generation (its table entry stays)
	// and a real, before the restart.
	goneVIP, _ := l.LookupVIP(vip6GUE)
	goneGen := l.vips[vip6GUE].gen
	if goneGen != l.lastGen {
		t.Fatalf("test setup: %s has generation %d, want the highest (%d)", vip6GUE, goneGen, l.lastGen)
	}
	if err := l.RemoveVIP(vip6GUE); err != nil {
		t.Fatal(err)
	}
	extra, err := l.AddReal(netip.MustParseAddr("10.0.9.9"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveReal(netip.MustParseAddr("10.0.9.9")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, l.Balancer)
	if len(before.Flows) != 3 {
		t.Fatalf("test setup: %d flows, want 3", len(before.Flows))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l2 := &testLB{Balancer: openPinned(t, limits, dir), cfg: l.cfg, rings: l.rings}
	if !l2.Recovered() {
		t.Fatal("Recovered() = false after reopening the pins")
	}
	after := snapshot(t, l2.Balancer)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("state changed across the restart\nbefore: %+v\n after: %+v", before, after)
	}
	if !reflect.DeepEqual(after.Config, l.cfg) {
		t.Errorf("config after restart = %+v, want %+v", after.Config, l.cfg)
	}

	// Established flows keep their reals although their rings move.
	for _, c := range []struct {
		vip lb.VIPKey
		p   pkt
	}{{vipTCP, tcp4}, {vip6, tcp6}} {
		k := c.p.flowKey()
		f, err := l2.LookupFlow(k)
		if err != nil {
			t.Fatal(err)
		}
		oldReal, ok := l2.RealAddr(f.Real)
		if !ok {
			t.Fatalf("flow %s: real %d unknown after restart", k, f.Real)
		}
		l2.setRing(t, c.vip, otherRing(t, l2, c.vip, f.Real))
		if l2.ringReal(t, c.vip, k) == oldReal {
			t.Fatal("test setup: the new ring must move the flow")
		}
		data := c.p
		data.flags, data.payload = "PA", []byte("after the restart")
		in := data.frame(t)
		l2.run(t, in, ActionTX, l2.expectEncap(t, in, c.vip, k, oldReal), txHit)
	}

	// The removed VIP's number is free again, under a new generation: the
	// table entry it left must not match the VIP that now has the number.
	if err := l2.AddVIP(vip6GUE, lb.VIPGUE); err != nil {
		t.Fatal(err)
	}
	v, _ := l2.LookupVIP(vip6GUE)
	if v.Num != goneVIP.Num {
		t.Errorf("re-added VIP has number %d, want the freed %d", v.Num, goneVIP.Num)
	}
	if g := l2.vips[vip6GUE].gen; g <= goneGen {
		t.Errorf("re-added VIP has generation %d, want more than the removed one's %d", g, goneGen)
	}
	l2.setRing(t, vip6GUE, otherRing(t, l2, vip6GUE, goneFlow.Real))
	k := gone.flowKey()
	in := gone.frame(t)
	l2.run(t, in, ActionTX, l2.expectEncap(t, in, vip6GUE, k, l2.ringReal(t, vip6GUE, k)), txNew)

	// A new VIP gets a number no recovered VIP has, and the newest generation.
	fresh := lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.99"), Port: 80, Proto: lb.TCP}
	if err := l2.AddVIP(fresh, 0); err != nil {
		t.Fatal(err)
	}
	fv, _ := l2.LookupVIP(fresh)
	for _, old := range after.VIPs {
		if old.Num == fv.Num {
			t.Errorf("new VIP got number %d of recovered VIP %s", fv.Num, old.Key)
		}
		if after.Gens[old.Key] >= l2.vips[fresh].gen {
			t.Errorf("new VIP generation %d not above recovered %s's %d", l2.vips[fresh].gen, old.Key, after.Gens[old.Key])
		}
	}
	// The removed real's index is free again.
	if id, err := l2.AddReal(netip.MustParseAddr("10.0.9.10")); err != nil || id != extra {
		t.Errorf("new real: id %d, %v; want the freed index %d", id, err, extra)
	}
}

// TestOpenPinDir: a fresh pin directory gets the default configuration,
// a directory elsewhere than bpffs is refused, and one directory serves
// one Balancer of a process at a time.
func TestOpenPinDir(t *testing.T) {
	dir := testPinDir(t)
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}
	b := openPinned(t, limits, dir)
	if b.Recovered() {
		t.Error("Recovered() on a fresh pin directory")
	}
	if c, err := b.Config(); err != nil || !reflect.DeepEqual(c, DefaultConfig()) {
		t.Errorf("config = %+v, %v; want %+v", c, err, DefaultConfig())
	}
	if _, err := Open(Options{Limits: limits, PinDir: dir}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second Open of the same pin directory: %v", err)
	}
	if err := Cleanup(dir); err == nil {
		t.Error("Cleanup of a pin directory in use succeeded")
	}
	if _, err := Open(Options{Limits: limits, PinDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("Open with a pin directory off bpffs: %v", err)
	}
	if _, err := Open(Options{Limits: limits, PinDir: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open with a missing pin directory: %v", err)
	}
	// A configuration set before the restart is kept.
	cfg := DefaultConfig()
	cfg.MTU = 9000
	cfg.FragmentPolicy = PolicyPass
	if err := b.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b = openPinned(t, limits, dir)
	if c, err := b.Config(); err != nil || !reflect.DeepEqual(c, cfg) {
		t.Errorf("config after restart = %+v, %v; want %+v", c, err, cfg)
	}
}

// TestReopenIncompatible: pins made with other limits are refused with
// an error that names the map and says what to do, and are left as they
// are; incomplete pins too.
func TestReopenIncompatible(t *testing.T) {
	dir := testPinDir(t)
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}
	b := openPinned(t, limits, dir)
	if err := b.AddVIP(vipTCP, lb.VIPSticky); err != nil {
		t.Fatal(err)
	}
	b.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	// The shared table holds MaxFlows rounded up to a multiple of the CPUs.
	shared := func(flows int) int { return (flows + ncpu - 1) / ncpu * ncpu }

	for _, c := range []struct {
		limits Limits
		want   []string
	}{
		{Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64*uint32(ncpu) + 1}, []string{
			fmt.Sprintf("map conns: MaxEntries: %d changed to %d", shared(64), shared(64*ncpu+1))}},
		{Limits{MaxVIPs: 8, MaxReals: 8, MaxFlows: 64}, []string{"map vips: MaxEntries: 4 changed to 8", "map vip_stats"}},
		{Limits{MaxVIPs: 4, MaxReals: 16, MaxFlows: 64}, []string{"map reals: MaxEntries: 8 changed to 16"}},
	} {
		_, err := Open(Options{Limits: c.limits, PinDir: dir})
		if err == nil {
			t.Fatalf("Open with %+v over pins of %+v succeeded", c.limits, limits)
		}
		if !errors.Is(err, ebpf.ErrMapIncompatible) {
			t.Errorf("error does not wrap ErrMapIncompatible: %v", err)
		}
		for _, w := range append(c.want, "lbd cleanup", "same limits") {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	}

	b = openPinned(t, limits, dir)
	if !b.Recovered() {
		t.Error("pins not recovered after refused opens")
	}
	if v, err := b.LookupVIP(vipTCP); err != nil || v.Flags != lb.VIPSticky {
		t.Errorf("VIP after refused opens: %+v, %v", v, err)
	}
	b.Close()

	if err := os.Remove(filepath.Join(dir, balancerMapStats)); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Limits: limits, PinDir: dir})
	if err == nil || !strings.Contains(err.Error(), "incomplete") || !strings.Contains(err.Error(), "lbd cleanup") {
		t.Errorf("Open over incomplete pins: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, balancerMapStats)); err == nil {
		t.Error("Open over incomplete pins created the missing one")
	}
}

// TestEnsureBPFFS: where nothing is mounted on /sys/fs/bpf (here: a
// private mount namespace with the host's bpffs unmounted), EnsureBPFFS
// mounts it and makes the directory.
func TestEnsureBPFFS(t *testing.T) {
	privtest.Require(t)
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, and its mount namespace with the
		// test's mount, go away with this goroutine.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make mounts private: %w", err)
			}
			for range 8 {
				if checkBPFFS(BPFFSRoot) != nil {
					break
				}
				if err := unix.Unmount(BPFFSRoot, unix.MNT_DETACH); err != nil {
					return fmt.Errorf("unmount %s: %w", BPFFSRoot, err)
				}
			}
			if checkBPFFS(BPFFSRoot) == nil {
				return fmt.Errorf("%s is still bpffs after unmounting", BPFFSRoot)
			}
			dir := filepath.Join(BPFFSRoot, "lbd")
			if err := EnsureBPFFS(dir); err != nil {
				return err
			}
			if err := checkBPFFS(dir); err != nil {
				return fmt.Errorf("after EnsureBPFFS: %w", err)
			}
			return EnsureBPFFS(dir) // again: nothing to do
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := EnsureBPFFS(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("EnsureBPFFS off bpffs: %v", err)
	}
}

// TestReopenUpgradesConfig: a configuration pinned by an lbd that knew no
// LBD_CFG_F_GW_MAC flag (gateway MAC set, flag clear) gets the flag on
// reopen, so encapsulated frames keep going to the gateway.
func TestReopenUpgradesConfig(t *testing.T) {
	dir := testPinDir(t)
	limits := Limits{MaxVIPs: 16, MaxReals: 64, MaxFlows: 1024}
	l := newTestLBOpts(t, Options{Limits: limits, PinDir: dir})
	var r balancerLbdConfig
	if err := l.objs.Config.Lookup(uint32(0), &r); err != nil {
		t.Fatal(err)
	}
	if r.Flags&balancerLbdConfigFlagLBD_CFG_F_GW_MAC == 0 {
		t.Fatal("SetConfig with a gateway MAC did not set LBD_CFG_F_GW_MAC")
	}
	r.Flags &^= balancerLbdConfigFlagLBD_CFG_F_GW_MAC
	if err := l.objs.Config.Update(uint32(0), &r, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	l.Close()

	b := openPinned(t, limits, dir)
	if err := b.objs.Config.Lookup(uint32(0), &r); err != nil {
		t.Fatal(err)
	}
	if r.Flags&balancerLbdConfigFlagLBD_CFG_F_GW_MAC == 0 || r.GwMac != [6]uint8(packettest.GatewayMAC) {
		t.Fatalf("after reopen: flags %#x, gateway MAC %x; want the flag and %s", r.Flags, r.GwMac, packettest.GatewayMAC)
	}
	syn := pkt{src: "198.51.100.92", dst: "10.10.0.1", sport: 40902, dport: 80, proto: lb.TCP, flags: "S"}
	act, out, err := b.Simulate(syn.frame(t))
	if err != nil || act != ActionTX || !bytes.Equal(out[0:6], packettest.GatewayMAC) {
		t.Fatalf("SYN after reopen: %v %v, destination MAC %x, want TX to %s", act, err, out[:6], packettest.GatewayMAC)
	}
}
