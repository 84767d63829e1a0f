//go:build lbdbench && lbdkatran

package xdp

// TestKatranSideBySide measures Facebook Katran's XDP balancer and lbd's in
// one process, through the same harness (BPF_PROG_TEST_RUN, one packet per
// run, the kernel's own timer), interleaved over rounds on one pinned CPU.
//
// Katran is not part of lbd: scripts/katran-bench.sh compiles Katran's
// balancer from a checkout outside this repository and passes the object
// in KATRAN_OBJ. This file only speaks Katran's map ABI, with Go structs of
// its own that follow the layouts of katran/lib/bpf/balancer_structs.h;
// their sizes are checked against the object's BTF before use.
//
//	KATRAN_OBJ=/tmp/balancer.o go test -count=1 -tags 'lbdbench lbdkatran' \
//	    -run TestKatranSideBySide -v ./bpf/xdp/

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/bpf/features"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/lb"
)

// Katran's constants (katran/lib/bpf/balancer_consts.h, default build).
const (
	katranMaxVIPs     = 512    // MAX_VIPS
	katranRingSize    = 65537  // RING_SIZE
	katranMaxConnRate = 125000 // MAX_CONN_RATE, new flows/s/CPU before is_under_flood
	katranDefaultLRU  = 8000000

	// Global counters live in the stats map at MAX_VIPS + index.
	katranStatLRU         = katranMaxVIPs + 0  // LRU_CNTRS: v1 VIP packets, v2 LRU misses
	katranStatLRUMiss     = katranMaxVIPs + 1  // LRU_MISS_CNTR: v1 SYN misses, v2 non-SYN misses
	katranStatNewConnRate = katranMaxVIPs + 2  // NEW_CONN_RATE_CNTR: v1 flows this second, v2 its start
	katranStatFallbackLRU = katranMaxVIPs + 3  // FALLBACK_LRU_CNTR: v1 packets that used fallback_cache
	katranStatEncapFail   = katranMaxVIPs + 7  // ENCAP_FAIL_CNTR
	katranStatCHDrop      = katranMaxVIPs + 9  // CH_DROP_STATS
	katranStatXDPTotal    = katranMaxVIPs + 16 // XDP_TOTAL_CNTR
	katranStatXDPTX       = katranMaxVIPs + 17 // XDP_TX_CNTR
	katranStatXDPDrop     = katranMaxVIPs + 18 // XDP_DROP_CNTR
	katranStatXDPPass     = katranMaxVIPs + 19 // XDP_PASS_CNTR

	xdpDrop = 1
	xdpPass = 2
	xdpTX   = 3
)

// Go mirrors of Katran's structs (balancer_structs.h). Ports and addresses
// are kept as bytes in network order, as Katran stores them.
type katranFlowKey struct { // struct flow_key, 40 bytes
	Src, Dst     [16]byte // __be32 src / srcv6[4]
	Sport, Dport [2]byte  // union { __u32 ports; __u16 port16[2] }: [0]=sport, [1]=dport
	Proto        uint8
	_            [3]byte
}

type katranRealPosLRU struct { // struct real_pos_lru, 16 bytes
	Pos   uint32
	_     uint32
	Atime uint64
}

type katranVIPDefinition struct { // struct vip_definition, 20 bytes
	Addr  [16]byte
	Port  [2]byte // network order (folly::Endian::big in KatranLb)
	Proto uint8
	_     uint8
}

type katranVIPMeta struct { // struct vip_meta
	Flags  uint32
	VIPNum uint32
}

type katranRealDefinition struct { // struct real_definition, 20 bytes
	Addr  [16]byte
	Flags uint8
	_     [3]byte
}

type katranCtlValue [8]byte // struct ctl_value: union { __u64; __u32 ifindex; __u8 mac[6] }

type katranLBStats struct{ V1, V2 uint64 } // struct lb_stats

func katranFlowOf(p pkt) katranFlowKey {
	var k katranFlowKey
	src, dst := netip.MustParseAddr(p.src).AsSlice(), netip.MustParseAddr(p.dst).AsSlice()
	copy(k.Src[:], src)
	copy(k.Dst[:], dst)
	binary.BigEndian.PutUint16(k.Sport[:], p.sport)
	binary.BigEndian.PutUint16(k.Dport[:], p.dport)
	k.Proto = uint8(p.proto)
	return k
}

// katranLB is Katran's balancer program loaded with cilium/ebpf and
// provisioned the way KatranLb (its C++ control plane) would.
type katranLB struct {
	coll     *ebpf.Collection
	prog     *ebpf.Program
	stats    *ebpf.Map
	lruMap   *ebpf.Map // lru_mapping, ARRAY_OF_MAPS cpu -> LRU_HASH
	fallback *ebpf.Map
	ncpu     int
	lrus     map[string][]*ebpf.Map // variant -> one LRU per possible CPU; absent: lru_mapping left empty
	current  string
}

const katranNoLRU = "fallback" // the variant that leaves lru_mapping empty

func loadKatran(t *testing.T, path string, reals []netip.Addr, vip lb.VIPKey) *katranLB {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		t.Fatalf("KATRAN_OBJ=%s: %v", path, err)
	}
	ps, ok := spec.Programs["balancer_ingress"]
	if !ok || ps.Type != ebpf.XDP {
		t.Fatalf("KATRAN_OBJ=%s: no XDP program balancer_ingress (programs: %v)", path, keysOf(spec.Programs))
	}
	// The layouts we write must be Katran's, byte for byte.
	sizes := []struct {
		m         string
		key, val  any
		innerOnly bool
	}{
		{"vip_map", katranVIPDefinition{}, katranVIPMeta{}, false},
		{"reals", uint32(0), katranRealDefinition{}, false},
		{"ctl_array", uint32(0), katranCtlValue{}, false},
		{"ch_rings", uint32(0), uint32(0), false},
		{"stats", uint32(0), katranLBStats{}, false},
		{"fallback_cache", katranFlowKey{}, katranRealPosLRU{}, false},
		{"lru_mapping", katranFlowKey{}, katranRealPosLRU{}, true},
	}
	for _, s := range sizes {
		ms, ok := spec.Maps[s.m]
		if !ok {
			t.Fatalf("KATRAN_OBJ=%s: no map %s", path, s.m)
		}
		if s.innerOnly {
			if ms.InnerMap == nil {
				t.Fatalf("%s: no inner map definition", s.m)
			}
			ms = ms.InnerMap
		}
		if int(ms.KeySize) != binary.Size(s.key) || int(ms.ValueSize) != binary.Size(s.val) {
			t.Fatalf("%s: Katran's key/value are %d/%d bytes, our Go structs %d/%d: the ABI changed",
				s.m, ms.KeySize, ms.ValueSize, binary.Size(s.key), binary.Size(s.val))
		}
	}
	if n := spec.Maps["ch_rings"].MaxEntries; n != katranMaxVIPs*katranRingSize {
		t.Fatalf("ch_rings has %d entries, want MAX_VIPS*RING_SIZE = %d (built with other defines?)", n, katranMaxVIPs*katranRingSize)
	}
	if n := spec.Maps["stats"].MaxEntries; n != 2*katranMaxVIPs {
		t.Fatalf("stats has %d entries, want %d", n, 2*katranMaxVIPs)
	}

	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("load Katran: %+v", ve)
		}
		t.Fatalf("load Katran: %v", err)
	}
	t.Cleanup(func() { coll.Close() })
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	k := &katranLB{coll: coll, prog: coll.Programs["balancer_ingress"], stats: coll.Maps["stats"],
		lruMap: coll.Maps["lru_mapping"], fallback: coll.Maps["fallback_cache"], ncpu: ncpu,
		lrus: map[string][]*ebpf.Map{}, current: katranNoLRU}

	// ctl_array[0]: the default gateway's MAC (KatranLb::changeMac, kMacAddrPos 0).
	var mac katranCtlValue
	copy(mac[:], packettest.GatewayMAC)
	if err := coll.Maps["ctl_array"].Put(uint32(0), mac); err != nil {
		t.Fatalf("ctl_array: %v", err)
	}
	// The VIP: vip_num 0, no flags.
	var vd katranVIPDefinition
	copy(vd.Addr[:], vip.Addr.AsSlice())
	binary.BigEndian.PutUint16(vd.Port[:], vip.Port)
	vd.Proto = uint8(vip.Proto)
	if err := coll.Maps["vip_map"].Put(vd, katranVIPMeta{Flags: 0, VIPNum: 0}); err != nil {
		t.Fatalf("vip_map: %v", err)
	}
	// Reals at indices 1..n (index 0 means "uninitialised" to Katran).
	for i, a := range reals {
		var rd katranRealDefinition
		copy(rd.Addr[:], a.AsSlice())
		if err := coll.Maps["reals"].Put(uint32(i+1), rd); err != nil {
			t.Fatalf("reals: %v", err)
		}
	}
	// ch_rings[vip_num*RING_SIZE + i], cycling through the reals like lbd's ring.
	keys := make([]uint32, katranRingSize)
	vals := make([]uint32, katranRingSize)
	for i := range keys {
		keys[i] = uint32(0*katranRingSize + i)
		vals[i] = uint32(i%len(reals) + 1)
	}
	if _, err := coll.Maps["ch_rings"].BatchUpdate(keys, vals, nil); err != nil {
		for i := range keys {
			if err := coll.Maps["ch_rings"].Put(keys[i], vals[i]); err != nil {
				t.Fatalf("ch_rings: %v", err)
			}
		}
	}
	return k
}

func keysOf[V any](m map[string]V) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// addLRUs creates one LRU_HASH per possible CPU, total entries split evenly,
// as KatranLb::initLrus does (LruSize / forwardingCores, map flags 0).
func (k *katranLB) addLRUs(t *testing.T, name string, total int) {
	t.Helper()
	per := total / k.ncpu
	for cpu := 0; cpu < k.ncpu; cpu++ {
		m, err := ebpf.NewMap(&ebpf.MapSpec{
			Name:       fmt.Sprintf("katran_lru%d", cpu),
			Type:       ebpf.LRUHash,
			KeySize:    uint32(binary.Size(katranFlowKey{})),
			ValueSize:  uint32(binary.Size(katranRealPosLRU{})),
			MaxEntries: uint32(per),
		})
		if err != nil {
			t.Fatalf("create Katran LRU %s for CPU %d (%d entries): %v", name, cpu, per, err)
		}
		t.Cleanup(func() { m.Close() })
		k.lrus[name] = append(k.lrus[name], m)
	}
}

// use points lru_mapping at a variant's per-CPU LRUs, or empties it.
func (k *katranLB) use(t *testing.T, variant string) {
	t.Helper()
	if k.current == variant {
		return
	}
	for cpu := 0; cpu < k.ncpu; cpu++ {
		var err error
		if maps, ok := k.lrus[variant]; ok {
			err = k.lruMap.Put(uint32(cpu), maps[cpu])
		} else if err = k.lruMap.Delete(uint32(cpu)); errors.Is(err, ebpf.ErrKeyNotExist) {
			err = nil
		}
		if err != nil {
			t.Fatalf("lru_mapping[%d] for %s: %v", cpu, variant, err)
		}
	}
	k.current = variant
}

// stat sums a global counter over the CPUs.
func (k *katranLB) stat(t *testing.T, idx uint32) katranLBStats {
	t.Helper()
	var per []katranLBStats
	if err := k.stats.Lookup(idx, &per); err != nil {
		t.Fatalf("Katran stats[%d]: %v", idx, err)
	}
	var s katranLBStats
	for _, v := range per {
		s.V1 += v.V1
		s.V2 += v.V2
	}
	return s
}

// resetFloodGuard zeroes NEW_CONN_RATE so the next packets start a new
// one-second window: a measurement of 2000 new flows can then never reach
// MAX_CONN_RATE, and Katran inserts every new flow into its LRU as lbd
// (which has no flood guard) does.
func (k *katranLB) resetFloodGuard(t *testing.T) {
	t.Helper()
	if err := k.stats.Put(uint32(katranStatNewConnRate), make([]katranLBStats, k.ncpu)); err != nil {
		t.Fatalf("reset NEW_CONN_RATE: %v", err)
	}
}

// katranExpect is a counter's expected growth in a measurement of n runs:
// mult*n (so 1 means "every packet", 0 "none").
type katranExpect struct {
	idx  uint32
	v2   bool
	mult uint64
	what string
}

type sideRow struct {
	name    string
	prog    *ebpf.Program
	want    uint32
	frames  func() [][]byte
	setup   func(t *testing.T)                           // untimed, before the frames are built
	check   func(t *testing.T) func(t *testing.T, n int) // snapshot before; the returned func verifies after
	floor   bool
	repeat  int       // >0: one test run repeating the first frame this often (frames it does not change only)
	pair    string    // "lbd KEY" or "Katran KEY": rows of one KEY are compared round by round
	means   []float64 // mean ns per run, one per round
	perRun  []float64 // every run's ns, all rounds
	checked string    // what check verified, for the table
}

func TestKatranSideBySide(t *testing.T) {
	path := os.Getenv("KATRAN_OBJ")
	if path == "" {
		t.Skip("KATRAN_OBJ not set: build Katran's balancer with scripts/katran-bench.sh")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("KATRAN_OBJ: %v", err)
	}
	pinToOneCPU(t)
	cpu := runtime.NumCPU() - 1

	l := newTestLBWithLimits(t, DefaultLimits())
	bench := loadBenchWrappers(t, l)
	setBigRing(t, l, vipTCP) // a production-sized ring, as Katran's
	var realAddrs []netip.Addr
	for _, r := range reals4 {
		realAddrs = append(realAddrs, netip.MustParseAddr(r))
	}

	k := loadKatran(t, path, realAddrs, vipTCP)
	start := time.Now()
	k.addLRUs(t, "8M", katranDefaultLRU)
	k.addLRUs(t, "1M", 1<<20)
	t.Logf("created Katran's per-CPU LRUs (%d CPUs: 2 x %d and 2 x %d entries) in %v",
		k.ncpu, katranDefaultLRU/k.ncpu, (1<<20)/k.ncpu, time.Since(start).Round(time.Millisecond))

	established := pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "PA", payload: make([]byte, 64)}
	estSYN := established
	estSYN.flags, estSYN.payload = "S", nil
	nonVIP := pkt{src: "198.51.100.1", dst: "10.99.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "PA", payload: make([]byte, 64)}
	estFrame, synFrame, nonVIPFrame := established.frame(t), estSYN.frame(t), nonVIP.frame(t)

	// Katran's output for a SYN must be the input's IP packet in IPIP to
	// one of the reals, toward the gateway: proof that it is provisioned.
	k.use(t, "8M")
	katranSelfCheck(t, k, synFrame, realAddrs)

	const singles = 2000
	const rounds = 15

	// New flows: each run a SYN of a 5-tuple never seen before (source
	// address and port vary), pre-built before the timed runs.
	flowN := 0
	var lastKeys []katranFlowKey
	newSYNs := func() [][]byte {
		frames := make([][]byte, singles)
		lastKeys = lastKeys[:0]
		for i := range frames {
			flowN++
			p := freshTuple(18, flowN, "S")
			frames[i] = p.frame(t)
			lastKeys = append(lastKeys, katranFlowOf(p))
		}
		return frames
	}
	// The packets that record new connections in lbd's table: each run
	// the first ACK of a 5-tuple never seen (its SYN, not recorded, need
	// not be sent: it leaves no trace).
	ackN := 0
	newACKs := func() [][]byte {
		frames := make([][]byte, singles)
		for i := range frames {
			ackN++
			frames[i] = freshTuple(20, ackN, "A").frame(t)
		}
		return frames
	}
	// Handshakes: each pair of runs the SYN of a 5-tuple never seen, then
	// its ACK, back to back (as if the round trip took no time: what the
	// SYN warmed is still warm for both balancers). lbd records the
	// connection at the ACK, Katran at the SYN.
	hsN := 0
	handshakes := func() [][]byte {
		frames := make([][]byte, 0, singles)
		for len(frames) < singles {
			hsN++
			p := freshTuple(22, hsN, "S")
			frames = append(frames, p.frame(t))
			p.flags = "A"
			frames = append(frames, p.frame(t))
		}
		return frames
	}
	same := func(f []byte) func() [][]byte {
		return func() [][]byte {
			frames := make([][]byte, singles)
			for i := range frames {
				frames[i] = f
			}
			return frames
		}
	}

	lbdCheck := func(counters ...Stat) func(t *testing.T) func(t *testing.T, n int) {
		return func(t *testing.T) func(t *testing.T, n int) {
			grown := l.statsSince(t)
			return func(t *testing.T, n int) {
				delta := grown(t)
				for s := StatTX; s < NumStats; s++ {
					d := delta[s]
					want := slices.Contains(counters, s)
					switch {
					case want && d != uint64(n):
						t.Fatalf("lbd counter %s grew by %d in %d runs", s, d, n)
					case !want && (s.IsAction() || s == StatLRUInsertFail || s == StatLRUMiss || s == StatLRUHit) && d != 0:
						t.Fatalf("lbd counter %s grew by %d: the row does not measure what it says", s, d)
					}
				}
			}
		}
	}
	katranCheck := func(variant string, exp []katranExpect, after func(t *testing.T, n int)) func(t *testing.T) func(t *testing.T, n int) {
		return func(t *testing.T) func(t *testing.T, n int) {
			before := map[uint32]katranLBStats{}
			for _, e := range exp {
				before[e.idx] = k.stat(t, e.idx)
			}
			return func(t *testing.T, n int) {
				if k.current != variant {
					t.Fatalf("Katran ran with %s, want %s", k.current, variant)
				}
				for _, e := range exp {
					a, b := k.stat(t, e.idx), before[e.idx]
					d := a.V1 - b.V1
					if e.v2 {
						d = a.V2 - b.V2
					}
					if d != e.mult*uint64(n) {
						t.Fatalf("Katran %s grew by %d in %d runs, want %d", e.what, d, n, e.mult*uint64(n))
					}
				}
				if after != nil {
					after(t, n)
				}
			}
		}
	}
	// Every Katran VIP row: all packets TX, no drop, no pass, no CH drop,
	// no encap failure.
	katranTX := []katranExpect{
		{katranStatXDPTX, false, 1, "XDP_TX"}, {katranStatXDPPass, false, 0, "XDP_PASS"}, {katranStatXDPDrop, false, 0, "XDP_DROP"},
		{katranStatXDPTotal, false, 1, "XDP_TOTAL"}, {katranStatCHDrop, false, 0, "CH drop (real 0)"}, {katranStatCHDrop, true, 0, "CH drop (no real)"},
		{katranStatEncapFail, false, 0, "encap fail"}, {katranStatLRU, false, 1, "LRU_CNTRS.v1 (VIP packets)"},
	}
	// katranVIPRow is what every packet of a VIP row must count: TX, and
	// misses (SYN ones) per packet if synMiss is 1, none if 0.
	katranVIPRow := func(variant string, synMiss uint64) []katranExpect {
		fb := uint64(0)
		if variant == katranNoLRU {
			fb = 1
		}
		return append(slices.Clone(katranTX),
			katranExpect{katranStatLRU, true, synMiss, "LRU_CNTRS.v2 (LRU misses)"},
			katranExpect{katranStatLRUMiss, false, synMiss, "LRU_MISS.v1 (SYN misses)"},
			katranExpect{katranStatLRUMiss, true, 0, "LRU_MISS.v2 (non-SYN misses)"},
			katranExpect{katranStatFallbackLRU, false, fb, "FALLBACK_LRU"})
	}
	katranNew := func(variant string) func(t *testing.T) func(t *testing.T, n int) {
		return katranCheck(variant, katranVIPRow(variant, 1), func(t *testing.T, n int) {
			// The flood guard must not have tripped, and the flows must be
			// in the LRU this CPU used.
			if r := k.stat(t, katranStatNewConnRate).V1; r > katranMaxConnRate {
				t.Fatalf("Katran NEW_CONN_RATE %d > %d: under flood, LRU inserts skipped", r, katranMaxConnRate)
			}
			lru := k.fallback
			keys := lastKeys[len(lastKeys)-1:] // fallback_cache holds 1000: check the newest
			if variant != katranNoLRU {
				lru, keys = k.lrus[variant][cpu], lastKeys
			}
			var v katranRealPosLRU
			for _, key := range keys {
				if err := lru.Lookup(key, &v); err != nil {
					t.Fatalf("Katran %s: new flow %x not in the LRU of CPU %d: %v", variant, key, cpu, err)
				}
				if v.Pos < 1 || int(v.Pos) > len(realAddrs) {
					t.Fatalf("Katran %s: flow %x -> real index %d", variant, key, v.Pos)
				}
			}
		})
	}
	// lbdHandshake: n runs are n/2 SYNs (a miss each, not recorded) and
	// n/2 ACKs (a non-SYN miss each, which records the connection).
	lbdHandshake := func(t *testing.T) func(t *testing.T, n int) {
		grown := l.statsSince(t)
		return func(t *testing.T, n int) {
			delta := grown(t)
			want := map[Stat]uint64{StatTX: uint64(n), StatLRUMiss: uint64(n), StatLRUMissNonSYN: uint64(n / 2)}
			for s := StatTX; s < NumStats; s++ {
				if d := delta[s]; d != want[s] && (want[s] != 0 || s.IsAction() || s == StatLRUHit || s == StatLRUInsertFail) {
					t.Fatalf("lbd handshakes: counter %s grew by %d in %d runs, want %d", s, d, n, want[s])
				}
			}
		}
	}
	// katranHandshake: n runs are n/2 SYNs (a miss and an insert each)
	// and n/2 ACKs (a hit each).
	katranHandshake := func(variant string) func(t *testing.T) func(t *testing.T, n int) {
		exp := slices.Clone(katranTX)
		for i := range exp {
			exp[i].mult *= 2
		}
		exp = append(exp,
			katranExpect{katranStatLRU, true, 1, "LRU_CNTRS.v2 (LRU misses)"},
			katranExpect{katranStatLRUMiss, false, 1, "LRU_MISS.v1 (SYN misses)"},
			katranExpect{katranStatLRUMiss, true, 0, "LRU_MISS.v2 (non-SYN misses)"})
		inner := katranCheck(variant, exp, func(t *testing.T, n int) {
			if r := k.stat(t, katranStatNewConnRate).V1; r > katranMaxConnRate {
				t.Fatalf("Katran NEW_CONN_RATE %d > %d: under flood, LRU inserts skipped", r, katranMaxConnRate)
			}
		})
		return func(t *testing.T) func(t *testing.T, n int) {
			verify := inner(t)
			return func(t *testing.T, n int) { verify(t, n/2) }
		}
	}
	katranHit := func(variant string) func(t *testing.T) func(t *testing.T, n int) {
		return katranCheck(variant, katranVIPRow(variant, 0), nil)
	}
	katranSetup := func(variant string, open bool) func(t *testing.T) {
		return func(t *testing.T) {
			k.use(t, variant)
			k.resetFloodGuard(t)
			if open { // (re)open the established flow in this variant's LRU
				if act, err := k.prog.Run(&ebpf.RunOptions{Data: synFrame}); err != nil || act != xdpTX {
					t.Fatalf("Katran %s: open flow: %d %v", variant, act, err)
				}
			}
		}
	}
	lbdOpen := func(t *testing.T) { // SYN, then the ACK that records the connection
		l.openOn(t, cpu, established)
	}

	lbdName := fmt.Sprintf("lbd shared table %d", l.objs.Conns.MaxEntries())
	if int(l.objs.Conns.MaxEntries()) != 1<<20 {
		t.Fatalf("lbd's table has %d entries, Katran's equal-size LRUs %d in all: the comparison would not be at equal sizes", l.objs.Conns.MaxEntries(), 1<<20)
	}
	const repeat = 20000
	katranPass := katranCheck("1M", []katranExpect{{katranStatXDPPass, false, 1, "XDP_PASS"}, {katranStatXDPTX, false, 0, "XDP_TX"},
		{katranStatXDPDrop, false, 0, "XDP_DROP"}, {katranStatLRU, false, 0, "LRU_CNTRS.v1"}}, nil)
	lruDesc := func(total int) string {
		return fmt.Sprintf("per-CPU LRU %d x %d", k.ncpu, total/k.ncpu)
	}
	rows := []*sideRow{
		{name: "floor: lbd XDP_DROP (same frame)", prog: bench.BenchDrop, want: xdpDrop, frames: same(estFrame), floor: true,
			checked: "returns XDP_DROP"},
		{name: lbdName + ": new flow (SYN)", prog: l.Program(), want: xdpTX, frames: newSYNs, check: lbdCheck(StatTX, StatLRUMiss),
			checked: "TX, LRUMiss = runs; no insert fail", pair: "lbd new flow"},
		{name: lbdName + ": first ACK of a new connection (records it)", prog: l.Program(), want: xdpTX, frames: newACKs,
			check: lbdCheck(StatTX, StatLRUMiss, StatLRUMissNonSYN), checked: "TX, LRUMiss = LRUMissNonSYN = runs; no insert fail", pair: "lbd first ACK"},
		{name: lbdName + ": handshake (SYN, then its ACK; per packet)", prog: l.Program(), want: xdpTX, frames: handshakes,
			check: lbdHandshake, checked: "TX = LRUMiss = runs, LRUMissNonSYN = runs/2; no hit, no insert fail", pair: "lbd handshake (SYN, then its ACK; per packet)"},
		{name: lbdName + ": LRU hit (ACK)", prog: l.Program(), want: xdpTX, frames: same(estFrame), setup: lbdOpen, check: lbdCheck(StatTX, StatLRUHit),
			checked: "TX, LRUHit = runs; no miss", pair: "lbd established"},
		{name: lbdName + ": non-VIP", prog: l.Program(), want: xdpPass, frames: same(nonVIPFrame), check: lbdCheck(StatPassNonVIP),
			checked: "PassNonVIP = runs", pair: "lbd non-VIP"},
		{name: lbdName + ": non-VIP, repeat loop", prog: l.Program(), want: xdpPass, frames: same(nonVIPFrame), repeat: repeat,
			check: lbdCheck(StatPassNonVIP), checked: "PassNonVIP = runs", pair: "lbd non-VIP, repeat loop"},
		{name: "Katran " + lruDesc(katranDefaultLRU) + ": new flow (SYN)", prog: k.prog, want: xdpTX, frames: newSYNs,
			setup: katranSetup("8M", false), check: katranNew("8M"), checked: "TX, LRU miss(SYN) = runs; flows in CPU's LRU", pair: "Katran default new flow"},
		{name: "Katran " + lruDesc(katranDefaultLRU) + ": LRU hit (ACK)", prog: k.prog, want: xdpTX, frames: same(estFrame),
			setup: katranSetup("8M", true), check: katranHit("8M"), checked: "TX = runs; 0 misses", pair: "Katran default established"},
		{name: "Katran " + lruDesc(1<<20) + ": non-VIP", prog: k.prog, want: xdpPass, frames: same(nonVIPFrame),
			setup: katranSetup("1M", false), checked: "XDP_PASS = runs; no VIP packet", check: katranPass, pair: "Katran non-VIP"},
		{name: "Katran " + lruDesc(1<<20) + ": non-VIP, repeat loop", prog: k.prog, want: xdpPass, frames: same(nonVIPFrame), repeat: repeat,
			setup: katranSetup("1M", false), checked: "XDP_PASS = runs; no VIP packet", check: katranPass, pair: "Katran non-VIP, repeat loop"},
		{name: "Katran " + lruDesc(1<<20) + ": new flow (SYN)", prog: k.prog, want: xdpTX, frames: newSYNs,
			setup: katranSetup("1M", false), check: katranNew("1M"), checked: "TX, LRU miss(SYN) = runs; flows in CPU's LRU", pair: "Katran new flow"},
		{name: "Katran " + lruDesc(1<<20) + ": handshake (SYN, then its ACK; per packet)", prog: k.prog, want: xdpTX, frames: handshakes,
			setup: katranSetup("1M", false), check: katranHandshake("1M"), checked: "TX = runs, LRU miss(SYN) = runs/2, 0 non-SYN misses",
			pair: "Katran handshake (SYN, then its ACK; per packet)"},
		{name: "Katran " + lruDesc(1<<20) + ": LRU hit (ACK)", prog: k.prog, want: xdpTX, frames: same(estFrame),
			setup: katranSetup("1M", true), check: katranHit("1M"), checked: "TX = runs; 0 misses", pair: "Katran established"},
		{name: "Katran no per-CPU LRU (fallback_cache 1000): new flow (SYN)", prog: k.prog, want: xdpTX, frames: newSYNs,
			setup: katranSetup(katranNoLRU, false), check: katranNew(katranNoLRU), checked: "TX, LRU miss(SYN), FALLBACK_LRU = runs"},
		{name: "Katran no per-CPU LRU (fallback_cache 1000): LRU hit (ACK)", prog: k.prog, want: xdpTX, frames: same(estFrame),
			setup: katranSetup(katranNoLRU, true), check: katranHit(katranNoLRU), checked: "TX, FALLBACK_LRU = runs; 0 misses"},
	}
	for round := 0; round < rounds; round++ {
		for _, r := range rows {
			r.measure(t)
		}
	}

	pairs, ratios := pairTable(rows)
	report := "## Headline: lbd / Katran at equal table sizes\n\n" +
		fmt.Sprintf("lbd's one shared table of %d entries (per-CPU LRU lists, %d per CPU) against Katran's %s (%d in all). "+
			"Ratio per round (lbd's round mean over Katran's in the same round), median and range over the rounds; below 1, lbd is faster.\n\n",
			l.objs.Conns.MaxEntries(), int(l.objs.Conns.MaxEntries())/k.ncpu, lruDesc(1<<20), 1<<20) +
		pairs + "\n## Every row\n\n" +
		fmt.Sprintf("Repeat-loop rows: one test run repeating one frame %d times (the kernel's own per-repetition mean); they exist for frames "+
			"the program does not change (non-VIP): a TX row would see its own IPIP output from the second repetition on, and Katran has no "+
			"undo wrapper as lbd's bench.bpf.c (lbd's repeat-loop TX rows are in docs/benchmarks.md). Their × floor is against the one-packet floor: "+
			"read it as a fact, not a comparison. The second labelled fact: Katran at its default size (%s) rows.\n\n", repeat, lruDesc(katranDefaultLRU)) +
		sideTable(rows, rounds, singles)
	if out := os.Getenv("LBD_KATRAN_RATIOS"); out != "" {
		if err := os.WriteFile(out, []byte(ratios), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "Kernel %s, %d CPUs, pinned to CPU %d, %s. ", features.KernelRelease(), runtime.NumCPU(), cpu, runtime.Version())
	if d := os.Getenv("LBD_KATRAN_DESC"); d != "" {
		fmt.Fprintf(&hdr, "%s. ", d)
	}
	fmt.Fprintf(&hdr, "%d rounds x %d one-packet BPF_PROG_TEST_RUN runs per row (frames pre-built); lbd ring and Katran ring 65537 slots, 3 IPv4 reals, IPIP.\n\n", rounds, singles)
	report = hdr.String() + report
	t.Log("\n" + report)
	if out := os.Getenv("LBD_KATRAN_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// measure takes one sample of a row: setup, frames, counters before, the
// timed runs, then the checks.
func (r *sideRow) measure(t *testing.T) {
	t.Helper()
	if r.setup != nil {
		r.setup(t)
	}
	frames := r.frames()
	var verify func(t *testing.T, n int)
	if r.check != nil {
		verify = r.check(t)
	}
	if r.repeat > 0 {
		ret, d, err := r.prog.Benchmark(frames[0], r.repeat, nil)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if ret != r.want {
			t.Fatalf("%s: returned %d, want %d", r.name, ret, r.want)
		}
		if verify != nil {
			verify(t, r.repeat)
		}
		r.means = append(r.means, float64(d.Nanoseconds()))
		r.perRun = append(r.perRun, float64(d.Nanoseconds()))
		return
	}
	durs := make([]time.Duration, len(frames))
	rets := make([]uint32, len(frames))
	for i, in := range frames {
		ret, d, err := r.prog.Benchmark(in, 1, nil)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		durs[i], rets[i] = d, ret
	}
	for i, ret := range rets {
		if ret != r.want {
			t.Fatalf("%s: run %d returned %d, want %d", r.name, i, ret, r.want)
		}
	}
	if verify != nil {
		verify(t, len(frames))
	}
	var total time.Duration
	for _, d := range durs {
		total += d
		r.perRun = append(r.perRun, float64(d.Nanoseconds()))
	}
	r.means = append(r.means, float64(total.Nanoseconds())/float64(len(frames)))
}

func katranSelfCheck(t *testing.T, k *katranLB, in []byte, reals []netip.Addr) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	act, err := k.prog.Run(opts)
	if err != nil {
		t.Fatalf("Katran test run: %v", err)
	}
	out := opts.DataOut
	if act != xdpTX || len(out) != len(in)+20 {
		t.Fatalf("Katran: action %d, %d bytes out for %d in; want XDP_TX and an IPIP frame", act, len(out), len(in))
	}
	dst, _ := netip.AddrFromSlice(out[14+16 : 14+20])
	switch {
	case !bytes.Equal(out[0:6], packettest.GatewayMAC):
		t.Fatalf("Katran: dst MAC %x, want the gateway's %x", out[0:6], []byte(packettest.GatewayMAC))
	case binary.BigEndian.Uint16(out[12:]) != unix.ETH_P_IP || out[14]>>4 != 4 || out[14+9] != unix.IPPROTO_IPIP:
		t.Fatalf("Katran: not an IPv4 IPIP frame: %x", out[:34])
	case !slices.Contains(reals, dst):
		t.Fatalf("Katran: outer dst %s is not a real", dst)
	case !bytes.Equal(out[34:], in[14:]):
		t.Fatalf("Katran: inner packet differs from the client's")
	}
	t.Logf("Katran self-check: SYN -> XDP_TX, IPIP %s -> %s via %x", netip.AddrFrom4([4]byte(out[14+12:14+16])), dst, out[0:6])
}

func sideTable(rows []*sideRow, rounds, singles int) string {
	var floor *sideRow
	for _, r := range rows {
		if r.floor {
			floor = r
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| row | mean ns/run (median of %d rounds) | min–max of round means | × floor (median of per-round ratios) | median ns of the %d single runs | checked every round |\n",
		rounds, rounds*singles)
	b.WriteString("|---|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		ratios := make([]float64, len(r.means))
		for i := range r.means {
			ratios[i] = r.means[i] / floor.means[i]
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.0f–%.0f | %.2f | %.0f | %s |\n", r.name, median(r.means),
			slices.Min(r.means), slices.Max(r.means), median(ratios), median(r.perRun), r.checked)
	}
	return b.String()
}

// pairTable compares the rows paired by key ("lbd KEY" with "Katran
// KEY"), round by round, and returns the Markdown table and the medians
// as "KEY<TAB>ratio" lines (for make bench's report).
func pairTable(rows []*sideRow) (string, string) {
	byPair := map[string]*sideRow{}
	var keys []string
	for _, r := range rows {
		if r.pair == "" {
			continue
		}
		byPair[r.pair] = r
		if k, ok := strings.CutPrefix(r.pair, "lbd "); ok {
			keys = append(keys, k)
		}
	}
	var b, lines strings.Builder
	b.WriteString("| path | lbd / Katran (median of per-round ratios) | min–max over rounds | lbd ns (median) | Katran ns (median) |\n|---|---:|---:|---:|---:|\n")
	for _, key := range keys {
		l, k := byPair["lbd "+key], byPair["Katran "+key]
		if k == nil {
			continue
		}
		ratios := perRound(l, k)
		fmt.Fprintf(&b, "| %s | %.2f | %.2f–%.2f | %.1f | %.1f |\n", key, median(ratios), slices.Min(ratios), slices.Max(ratios), median(l.means), median(k.means))
		fmt.Fprintf(&lines, "%s\t%.2f\t%.2f\t%.2f\n", key, median(ratios), slices.Min(ratios), slices.Max(ratios))
	}
	// The second fact: against Katran at its default size (not equal).
	for _, key := range keys {
		l, k := byPair["lbd "+key], byPair["Katran default "+key]
		if k == nil {
			continue
		}
		ratios := perRound(l, k)
		fmt.Fprintf(&b, "| %s, against Katran at its default size (%d in all; NOT equal sizes) | %.2f | %.2f–%.2f | %.1f | %.1f |\n",
			key, katranDefaultLRU, median(ratios), slices.Min(ratios), slices.Max(ratios), median(l.means), median(k.means))
	}
	return b.String(), lines.String()
}

func perRound(l, k *sideRow) []float64 {
	ratios := make([]float64, len(l.means))
	for i := range l.means {
		ratios[i] = l.means[i] / k.means[i]
	}
	return ratios
}

// freshTuple is the n-th (from 1) TCP 5-tuple to vipTCP of a source
// range of its own: 198.base.x.y for n below 65536, then 198.base+1.x.y
// (the ranges of base 18, 20 and 22 never meet), so no run reuses a
// flow another run made.
func freshTuple(base byte, n int, flags string) pkt {
	hi := base
	if n >= 1<<16 {
		hi++
	}
	src := netip.AddrFrom4([4]byte{198, hi, byte(n >> 8), byte(n)})
	return pkt{src: src.String(), dst: "10.10.0.1", sport: uint16(1024 + (n*7919)%60000), dport: 80, proto: lb.TCP, flags: flags}
}
