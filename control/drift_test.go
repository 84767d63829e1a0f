package control

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// driftLab is a pinned balancer with two VIPs at one address (one of them
// port-less, so vip_addrs has flags), reconciled and in sync, and a
// client whose flow has a real.
type driftLab struct {
	b       *xdp.Balancer
	c       *Controller
	dir     string
	client  netip.AddrPort
	real    netip.Addr // the client's real
	vipA    lb.VIPKey
	portles lb.VIPKey
}

var (
	driftR1 = netip.MustParseAddr("10.0.0.1")
	driftR2 = netip.MustParseAddr("10.0.0.2")
)

func newDriftLab(t *testing.T) *driftLab {
	t.Helper()
	privtest.Require(t)
	var r [6]byte
	_, _ = rand.Read(r[:])
	dir := filepath.Join(xdp.BPFFSRoot, "lbd-test-drift-"+hex.EncodeToString(r[:]))
	if err := xdp.EnsureBPFFS(dir); err != nil {
		privtest.Unavailable(t, err.Error())
	}
	t.Cleanup(func() {
		if err := xdp.Cleanup(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = os.RemoveAll(dir)
	})
	b, err := xdp.Open(xdp.Options{Limits: xdp.Limits{MaxVIPs: 8, MaxReals: 16, MaxFlows: 256}, PinDir: dir})
	privtest.CheckNotSupported(t, "load balancer", err)
	t.Cleanup(func() { b.Close() })
	cfg, err := b.Config()
	if err != nil {
		t.Fatal(err)
	}
	l := &driftLab{b: b, dir: dir, client: netip.MustParseAddrPort("198.18.0.7:40000"),
		vipA:    lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP},
		portles: lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 0, Proto: lb.UDP}}
	l.c = New(b, &memStore{}, nil, nil)
	l.c.SetDatapathConfig(cfg)
	mustCreate(t, l.c, VIP{Key: l.portles, RingSize: 1021, Reals: []Real{active(driftR2, 1)}})
	mustCreate(t, l.c, VIP{Key: l.vipA, RingSize: 1021, Reals: []Real{active(driftR1, 1), active(driftR2, 1)}})
	if d, err := l.c.Reconcile(); err != nil || len(d) != 0 {
		t.Fatalf("fresh lab is not in sync: %+v %v", d, err)
	}
	act, dst := l.send(t, l.client, true)
	if act != xdp.ActionTX {
		t.Fatalf("SYN of the client: %v, want TX", act)
	}
	l.real = dst
	return l
}

// send runs one TCP packet from client to VIP A through the program and
// returns the action and, for TX, the outer destination (the real).
func (l *driftLab) send(t *testing.T, client netip.AddrPort, syn bool) (xdp.Action, netip.Addr) {
	t.Helper()
	flags := "A"
	if syn {
		flags = "S"
	}
	frame := packettest.Packet{Src: client.Addr(), Dst: l.vipA.Addr, SPort: client.Port(), DPort: l.vipA.Port,
		Proto: layers.IPProtocolTCP, Flags: flags, Payload: []byte("x")}.Frame(t)
	act, out, err := l.b.Simulate(frame)
	if err != nil {
		t.Fatal(err)
	}
	if act != xdp.ActionTX {
		return act, netip.Addr{}
	}
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.NoCopy)
	if v4, ok := p.NetworkLayer().(*layers.IPv4); ok {
		a, _ := netip.AddrFromSlice(v4.DstIP)
		return act, a
	}
	return act, netip.Addr{}
}

// pinned opens one of the lab's pinned maps as an outsider would.
func (l *driftLab) pinned(t *testing.T, name string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(l.dir, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// progMap opens a map of the program by name through its ID (vip_filter
// is not pinned; bpftool would do the same).
func (l *driftLab) progMap(t *testing.T, name string) *ebpf.Map {
	t.Helper()
	info, err := l.b.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := info.MapIDs()
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatal(err)
		}
		if mi, err := m.Info(); err == nil && mi.Name == name {
			t.Cleanup(func() { m.Close() })
			return m
		}
		m.Close()
	}
	t.Fatalf("program has no map %s", name)
	return nil
}

// entries reads every key and value of a map as bytes.
func entries(t *testing.T, m *ebpf.Map) (keys, vals [][]byte) {
	t.Helper()
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys, vals = append(keys, slices.Clone(k)), append(vals, slices.Clone(v))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return keys, vals
}

// vipKeyBytes finds a VIP's key in the vips map: the entry with its port
// (network order at offset 16) and protocol (offset 18).
func vipKeyBytes(t *testing.T, m *ebpf.Map, k lb.VIPKey) (key, val []byte) {
	t.Helper()
	keys, vals := entries(t, m)
	for i, kb := range keys {
		if binary.BigEndian.Uint16(kb[16:]) == k.Port && kb[18] == byte(k.Proto) {
			return kb, vals[i]
		}
	}
	t.Fatalf("VIP %s not in the vips map", lb.VIPName(k))
	return nil, nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// TestReconcileRepairsKernelMaps: an entry of each map removed, added or
// altered from outside through its pin is reported by map name, repaired,
// counted, and traffic is right again (the established flow keeps its
// real, a new flow gets one).
func TestReconcileRepairsKernelMaps(t *testing.T) {
	cases := []struct {
		name   string
		mapped string // the map the drift must be reported for
		tamper func(t *testing.T, l *driftLab)
		broken xdp.Action // what a new flow gets before the repair (0: not checked)
	}{
		{"vips: every entry deleted", datapath.MapVIPs, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPs)
			keys, _ := entries(t, m)
			for _, k := range keys {
				must(t, m.Delete(k))
			}
		}, xdp.ActionPass},
		{"vips: stray entry added", datapath.MapVIPs, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPs)
			k, v := vipKeyBytes(t, m, l.vipA)
			k = slices.Clone(k)
			binary.BigEndian.PutUint16(k[16:], 8080)
			must(t, m.Update(k, v, ebpf.UpdateNoExist))
		}, 0},
		{"vips: entry points to another number", datapath.MapVIPs, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPs)
			k, _ := vipKeyBytes(t, m, l.vipA)
			_, other := vipKeyBytes(t, m, l.portles)
			must(t, m.Update(k, other, ebpf.UpdateExist))
		}, 0},
		{"vip_info: generation altered", datapath.MapVIPInfo, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPInfo)
			v, _ := l.b.LookupVIP(l.vipA)
			var val []byte
			must(t, m.Lookup(v.Num, &val))
			binary.NativeEndian.PutUint32(val[8:], v.Gen+1000)
			must(t, m.Update(v.Num, val, ebpf.UpdateExist))
		}, 0},
		{"vip_info: entry cleared", datapath.MapVIPInfo, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPInfo)
			v, _ := l.b.LookupVIP(l.vipA)
			must(t, m.Update(v.Num, make([]byte, 16), ebpf.UpdateExist))
		}, xdp.ActionPass},
		{"vip_info: entry of a free number set", datapath.MapVIPInfo, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPInfo)
			v, _ := l.b.LookupVIP(l.vipA)
			var val []byte
			must(t, m.Lookup(v.Num, &val))
			must(t, m.Update(uint32(7), val, ebpf.UpdateExist))
		}, 0},
		{"vip_addrs: entry deleted", datapath.MapVIPAddrs, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPAddrs)
			keys, _ := entries(t, m)
			must(t, m.Delete(keys[0]))
		}, 0},
		{"vip_addrs: flags altered", datapath.MapVIPAddrs, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPAddrs)
			keys, _ := entries(t, m)
			must(t, m.Update(keys[0], u32(0), ebpf.UpdateExist))
		}, 0},
		{"vip_addrs: stray entry added", datapath.MapVIPAddrs, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapVIPAddrs)
			keys, vals := entries(t, m)
			k := slices.Clone(keys[0])
			k[0] ^= 0xff
			must(t, m.Update(k, vals[0], ebpf.UpdateNoExist))
		}, 0},
		{"vip_filter: bits cleared", datapath.MapVIPFilter, func(t *testing.T, l *driftLab) {
			m := l.progMap(t, datapath.MapVIPFilter)
			for i := range m.MaxEntries() {
				must(t, m.Update(i, uint64(0), ebpf.UpdateExist))
			}
		}, xdp.ActionPass},
		{"vip_filter: bit set", datapath.MapVIPFilter, func(t *testing.T, l *driftLab) {
			m := l.progMap(t, datapath.MapVIPFilter)
			var w uint64
			must(t, m.Lookup(uint32(3), &w))
			must(t, m.Update(uint32(3), w^1, ebpf.UpdateExist))
		}, 0},
		{"reals: entry altered", datapath.MapReals, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapReals)
			var other []byte
			must(t, m.Lookup(l.pair(l.vipA, l.otherReal()), &other))
			must(t, m.Update(l.pair(l.vipA, l.real), other, ebpf.UpdateExist))
		}, 0},
		{"reals: entry cleared", datapath.MapReals, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapReals)
			must(t, m.Update(l.pair(l.vipA, l.real), make([]byte, 20), ebpf.UpdateExist))
		}, 0},
		{"reals: the other VIP's entry of a shared real cleared", datapath.MapReals, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapReals)
			if l.pair(l.portles, driftR2) == l.pair(l.vipA, driftR2) {
				t.Fatal("the real of two VIPs has one index")
			}
			must(t, m.Update(l.pair(l.portles, driftR2), make([]byte, 20), ebpf.UpdateExist))
		}, 0},
		{"reals: stray entry added", datapath.MapReals, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapReals)
			var def []byte
			must(t, m.Lookup(l.pair(l.vipA, l.real), &def))
			def = slices.Clone(def)
			def[3] ^= 0x40
			must(t, m.Update(uint32(12), def, ebpf.UpdateExist))
		}, 0},
		{"rings: live ring overwritten", datapath.MapRings, func(t *testing.T, l *driftLab) {
			inner := l.liveRing(t)
			for i := range inner.MaxEntries() {
				must(t, inner.Update(i, uint32(0), ebpf.UpdateExist))
			}
		}, xdp.ActionDrop},
		{"rings: live ring buffer removed", datapath.MapRings, func(t *testing.T, l *driftLab) {
			v, _ := l.b.LookupVIP(l.vipA)
			must(t, l.pinned(t, datapath.MapRings).Delete(2*v.Num+v.Buf))
		}, xdp.ActionDrop},
		{"config: zeroed", datapath.MapConfig, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapConfig)
			var val []byte
			must(t, m.Lookup(uint32(0), &val))
			must(t, m.Update(uint32(0), make([]byte, len(val)), ebpf.UpdateExist))
		}, 0},
		{"config: MTU altered", datapath.MapConfig, func(t *testing.T, l *driftLab) {
			m := l.pinned(t, datapath.MapConfig)
			var val []byte
			must(t, m.Lookup(uint32(0), &val))
			val = slices.Clone(val)
			binary.NativeEndian.PutUint16(val[6:], 40) // smaller than any encapsulated packet
			must(t, m.Update(uint32(0), val, ebpf.UpdateExist))
		}, xdp.ActionDrop},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newDriftLab(t)
			newClient := netip.MustParseAddrPort("198.18.1.9:41000")
			tc.tamper(t, l)
			if tc.broken != 0 {
				if act, _ := l.send(t, newClient, true); act != tc.broken {
					t.Fatalf("tampering did not break traffic as expected: a new flow got %v, want %v", act, tc.broken)
				}
				newClient = netip.MustParseAddrPort("198.18.1.10:41001")
			}
			before := l.c.Drifts()
			drifts, err := l.c.Reconcile()
			if err != nil {
				t.Fatalf("reconcile: %v (drifts %+v)", err, drifts)
			}
			found := false
			for _, d := range drifts {
				if d.Error != "" {
					t.Errorf("repair failed: %+v", d)
				}
				found = found || d.Map == tc.mapped
			}
			if !found {
				t.Fatalf("no drift reported for map %s: %+v", tc.mapped, drifts)
			}
			if got := l.c.Drifts(); got != before+uint64(len(drifts)) || got == before {
				t.Errorf("drift counter went %d → %d for %d drifts", before, got, len(drifts))
			}
			if d, err := l.c.Reconcile(); err != nil || len(d) != 0 {
				t.Fatalf("after the repair the maps still differ: %+v %v", d, err)
			}
			if act, real := l.send(t, l.client, false); act != xdp.ActionTX || real != l.real {
				t.Errorf("established flow after the repair: %v to %s, want TX to %s", act, real, l.real)
			}
			if act, real := l.send(t, newClient, true); act != xdp.ActionTX || (real != driftR1 && real != driftR2) {
				t.Errorf("new flow after the repair: %v to %s, want TX to a real", act, real)
			}
			t.Logf("drifts: %+v", drifts)
		})
	}
}

// pair is the real index of a (VIP, real) pair.
func (l *driftLab) pair(vip lb.VIPKey, a netip.Addr) uint32 {
	return uint32(l.c.slots[RealKey{vip, a}])
}

// TestReconcileAfterRestartKeepsPairIndices: a new controller over the
// pinned maps (a restart, here without the counters file) finds every
// index defined and owned by no pair yet; the reals check does not clear
// them, the first reconcile gives each pair back its own (the one in its
// VIP's ring, also for the real two VIPs share) and reports nothing, and
// the established flow keeps its real.
func TestReconcileAfterRestartKeepsPairIndices(t *testing.T) {
	l := newDriftLab(t)
	slots := maps.Clone(l.c.slots)
	desired := map[lb.VIPKey]*VIP{}
	for _, v := range l.c.VIPs() {
		desired[v.Key] = v
	}
	cfg, err := l.b.Config()
	must(t, err)
	limits := l.b.Limits()
	must(t, l.b.Close())
	b, err := xdp.Open(xdp.Options{Limits: limits, PinDir: l.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	l.b = b
	l.c = New(b, &memStore{}, desired, nil)
	l.c.SetDatapathConfig(cfg)
	if d, err := l.c.Reconcile(); err != nil || len(d) != 0 {
		t.Fatalf("first reconcile after the restart: %+v %v", d, err)
	}
	if !maps.Equal(l.c.slots, slots) {
		t.Errorf("pair indices after the restart %v, before %v", l.c.slots, slots)
	}
	if act, real := l.send(t, l.client, false); act != xdp.ActionTX || real != l.real {
		t.Errorf("established flow after the restart: %v to %s, want TX to %s", act, real, l.real)
	}
	if d, err := l.c.Reconcile(); err != nil || len(d) != 0 {
		t.Fatalf("second reconcile: %+v %v", d, err)
	}
}

func (l *driftLab) otherReal() netip.Addr {
	if l.real == driftR1 {
		return driftR2
	}
	return driftR1
}

// liveRing opens VIP A's live ring buffer through the pinned outer map.
func (l *driftLab) liveRing(t *testing.T) *ebpf.Map {
	t.Helper()
	v, _ := l.b.LookupVIP(l.vipA)
	var id ebpf.MapID
	must(t, l.pinned(t, datapath.MapRings).Lookup(2*v.Num+v.Buf, &id))
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestRemovedSharedRealFlowsFollowTheRing: through the real datapath, a
// real removed from VIP A that VIP B (the port-less VIP) keeps loses A's
// connection table entries with A's index of it, so A's established flow
// to it follows the ring to the other real, while B's index of the real
// stays defined and holds its address.
func TestRemovedSharedRealFlowsFollowTheRing(t *testing.T) {
	l := newDriftLab(t)
	client := l.client
	for port := uint16(40001); l.real != driftR2; port++ {
		if port > 40100 {
			t.Fatal("no client port lands on the shared real")
		}
		client = netip.AddrPortFrom(l.client.Addr(), port)
		_, l.real = l.send(t, client, true)
	}
	bIndex := l.pair(l.portles, driftR2)
	if _, err := l.c.DeleteReal(l.vipA, driftR2); err != nil {
		t.Fatal(err)
	}
	key := datapath.FlowKey{Client: client, Dest: netip.AddrPortFrom(l.vipA.Addr, l.vipA.Port), Proto: lb.TCP}
	if f, err := l.b.LookupFlow(key); !errors.Is(err, datapath.ErrNotFound) {
		t.Errorf("A's entry to the removed real is still there: %+v %v", f, err)
	}
	if act, real := l.send(t, client, false); act != xdp.ActionTX || real != driftR1 {
		t.Errorf("A's flow to the removed real: %v to %s, want TX to %s (the ring's choice)", act, real, driftR1)
	}
	if a, ok := l.b.RealSlots()[datapath.RealID(bIndex)]; !ok || a != driftR2 {
		t.Errorf("B's index %d of %s: %s %v", bIndex, driftR2, a, ok)
	}
	if d, err := l.c.Reconcile(); err != nil || len(d) != 0 {
		t.Fatalf("reconcile after the removal: %+v %v", d, err)
	}
}

// unreadableRings is a datapath whose rings, until lbd writes them, cannot
// be opened: what a restart without CAP_SYS_ADMIN sees (BPF_MAP_GET_FD_BY_ID
// of the ring buffers of the pinned rings array is refused).
type unreadableRings struct {
	Datapath
	written map[lb.VIPKey]bool
	setRing int
}

func (u *unreadableRings) Ring(key lb.VIPKey) ([]uint32, error) {
	if !u.written[key] {
		return nil, fmt.Errorf("VIP %s: open ring buffer 0: %w: %w", key, datapath.ErrRingUnreadable, syscall.EPERM)
	}
	return u.Datapath.Ring(key)
}

func (u *unreadableRings) SetRing(key lb.VIPKey, ring []uint32) error {
	u.setRing++
	u.written[key] = true
	return u.Datapath.SetRing(key, ring)
}

// TestReconcileUnreadableRingIsNoDrift: after a restart onto pins whose
// rings lbd may not open, the first reconcile rewrites each VIP's ring
// (logged once, at info level) and reports no drift; the established flow
// keeps its real, and the next reconcile reads the rewritten rings and
// changes nothing.
func TestReconcileUnreadableRingIsNoDrift(t *testing.T) {
	l := newDriftLab(t)
	desired := map[lb.VIPKey]*VIP{}
	for _, v := range l.c.VIPs() {
		desired[v.Key] = v
	}
	cfg, err := l.b.Config()
	must(t, err)
	limits := l.b.Limits()
	must(t, l.b.Close())
	b, err := xdp.Open(xdp.Options{Limits: limits, PinDir: l.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	l.b = b
	dp := &unreadableRings{Datapath: b, written: map[lb.VIPKey]bool{}}
	var logs bytes.Buffer
	l.c = New(dp, &memStore{}, desired, slog.New(slog.NewTextHandler(&logs, nil)))
	l.c.SetDatapathConfig(cfg)
	if d, err := l.c.Reconcile(); err != nil || len(d) != 0 {
		t.Fatalf("first reconcile after the restart: %+v %v", d, err)
	}
	if dp.setRing != len(desired) {
		t.Errorf("rings rewritten: %d, want %d (one per VIP)", dp.setRing, len(desired))
	}
	if n := strings.Count(logs.String(), "not readable without CAP_SYS_ADMIN: rewritten"); n != len(desired) || !strings.Contains(logs.String(), "level=INFO") {
		t.Errorf("want one info line per VIP, got %d:\n%s", n, logs.String())
	}
	if act, real := l.send(t, l.client, false); act != xdp.ActionTX || real != l.real {
		t.Errorf("established flow after the restart: %v to %s, want TX to %s", act, real, l.real)
	}
	if d, err := l.c.Reconcile(); err != nil || len(d) != 0 || dp.setRing != len(desired) {
		t.Fatalf("second reconcile: %+v %v (rings written %d)", d, err, dp.setRing)
	}
}
