//go:build lbdbench

package xdp

import (
	"bytes"
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

	"github.com/lbd-dev/lbd/lb"
)

// TestBenchReport measures the datapath's cost per packet with the
// kernel's own BPF_PROG_TEST_RUN timer, every row in the same run,
// interleaved over rounds, each row checked against the program's counters
// and against its output frame. `make bench` runs it and writes the table
// to docs/benchmarks.md (LBD_BENCH_REPORT names the file to write).
//
//	go test -tags lbdbench -run TestBenchReport -v ./bpf/xdp/
func TestBenchReport(t *testing.T) {
	pinToOneCPU(t)
	l := newTestLBWithLimits(t, DefaultLimits())
	bench := loadBenchWrappers(t, l)
	// The fixtures' rings are tiny; a real VIP's ring has 65537 slots, so
	// a new flow's slot is as cold as in production.
	setBigRing(t, l, vipTCP)
	setBigRing(t, l, vipUDP)
	setBigRing(t, l, vipNoLRU)
	// The same UDP service on a VIP with the no_flow_search flag (which
	// changes nothing since the connection table is shared).
	vipUDPNoFlowSearch := lb.VIPKey{Addr: vipUDP.Addr, Port: 5353, Proto: lb.UDP}
	l.addVIP(t, vipUDPNoFlowSearch, lb.VIPNoFlowSearch, reals4)
	setBigRing(t, l, vipUDPNoFlowSearch)

	established := pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "PA", payload: make([]byte, 64)}
	established6 := pkt{src: "2001:db8:1::1", dst: "2001:db8::10", sport: 31337, dport: 80, proto: lb.TCP, flags: "PA", payload: make([]byte, 64)}
	nonVIP := pkt{src: "198.51.100.1", dst: "10.99.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "PA", payload: make([]byte, 64)}
	for _, p := range []pkt{established, established6} {
		l.openOn(t, runtime.NumCPU()-1, p) // SYN, then the ACK that records it
	}

	const repeat = 20000 // per measurement of a repeat row
	const singles = 2000 // one-packet runs per measurement of a new-flow row
	const rounds = 15
	newFlowPort := uint16(1)
	newFlowNet := byte(0)
	// newFlowTo builds the first frame of a new flow to vip: a SYN for
	// TCP; for UDP a datagram, which no SYN marks new: the table misses,
	// and the entry is created only if no CPU made one meanwhile. One-packet rows build all their frames before the timed
	// runs, so that Go's work between two runs does not cool the caches
	// of the next one; the floor runs on the same kind of frames, each
	// run a new buffer, as the issue asks ("a floor measured the same way").
	newFlowTo := func(vip lb.VIPKey) func() []byte {
		return func() []byte {
			newFlowPort++
			if newFlowPort == 0 {
				newFlowNet++
			}
			p := pkt{src: fmt.Sprintf("198.51.%d.%d", newFlowNet, newFlowPort%250+1), dst: vip.Addr.String(),
				sport: newFlowPort, dport: vip.Port, proto: vip.Proto, flags: "S"}
			if vip.Proto == lb.UDP {
				p.flags, p.payload = "", []byte("query")
			}
			return p.frame(t)
		}
	}
	newSYN := newFlowTo(vipTCP)
	// firstACK is the packet that records a new TCP connection: the first
	// after its SYN (which went by the ring and was not recorded). The
	// SYN itself need not be sent: it left no trace.
	firstACK := func() []byte {
		newFlowPort++
		if newFlowPort == 0 {
			newFlowNet++
		}
		p := pkt{src: fmt.Sprintf("198.52.%d.%d", newFlowNet, newFlowPort%250+1), dst: vipTCP.Addr.String(),
			sport: newFlowPort, dport: vipTCP.Port, proto: lb.TCP, flags: "A"}
		return p.frame(t)
	}

	rows := []*benchRow{
		{name: "floor: XDP_DROP", prog: bench.BenchDrop, in: established.frame(t), repeat: repeat, floorOf: "repeat"},
		{name: "floor: IPIP encap only (+undo)", prog: bench.BenchEncapUndo, in: established.frame(t), repeat: repeat, sameOut: true},
		{name: "LRU hit, IPv4 -> IPIP (+undo)", prog: bench.BenchBalancerUndo, in: established.frame(t), repeat: repeat, sameOut: true,
			counters: []Stat{StatTX, StatLRUHit}, katran: "established"},
		{name: "LRU hit, IPv6 -> IP6IP6 (+undo)", prog: bench.BenchBalancerUndo, in: established6.frame(t), repeat: repeat, sameOut: true,
			counters: []Stat{StatTX, StatLRUHit}},
		{name: "non-VIP pass", prog: l.Program(), in: nonVIP.frame(t), repeat: repeat,
			counters: []Stat{StatPassNonVIP}, katran: "non-VIP, repeat loop"},
		{name: "floor: XDP_DROP, one packet per run (a new SYN frame each run)", prog: bench.BenchDrop, next: newSYN, floorOf: "single"},
		{name: "XDP_DROP, one packet per run (the same frame every run)", prog: bench.BenchDrop, in: established.frame(t)},
		{name: "new flow (SYN, new 5-tuple each run)", prog: l.Program(), counters: []Stat{StatTX, StatLRUMiss}, katran: "new flow", next: newSYN},
		{name: "first ACK of a new connection (records it: the table insert)", prog: l.Program(),
			counters: []Stat{StatTX, StatLRUMiss, StatLRUMissNonSYN}, next: firstACK},
		{name: "of which lbd's own work: new flow to a no-LRU VIP (no table insert)", prog: l.Program(), counters: []Stat{StatTX}, next: newFlowTo(vipNoLRU)},
		{name: "of which the kernel's: the table insert alone (bench_lru_insert)", prog: bench.BenchLruInsert, action: ActionDrop, next: newSYN},
		{name: "new UDP flow (new 5-tuple each run)", prog: l.Program(),
			counters: []Stat{StatTX, StatLRUMiss}, next: newFlowTo(vipUDP)},
		{name: "new UDP flow to a no-flow-search VIP (the flag changes nothing now)", prog: l.Program(),
			counters: []Stat{StatTX, StatLRUMiss}, next: newFlowTo(vipUDPNoFlowSearch)},
	}
	for _, r := range rows {
		r.selfCheck(t, l)
	}
	for round := 0; round < rounds; round++ {
		for _, r := range rows {
			r.measure(t, l, singles)
		}
	}

	report := benchTable(rows)
	t.Log("\n" + report)
	if path := os.Getenv("LBD_BENCH_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// setBigRing gives vip a ring of the default size (65537 slots) over the
// fixtures' IPv4 reals.
func setBigRing(t *testing.T, l *testLB, vip lb.VIPKey) {
	t.Helper()
	defined := l.Reals()
	ids := make([]RealID, len(reals4))
	for i, r := range reals4 {
		id, ok := defined[netip.MustParseAddr(r)]
		if !ok {
			t.Fatalf("real %s not defined", r)
		}
		ids[i] = id
	}
	ring := make([]RealID, 65537)
	for i := range ring {
		ring[i] = ids[i%len(ids)]
	}
	l.setRing(t, vip, ring)
}

type benchRow struct {
	name     string
	prog     *ebpf.Program
	in       []byte        // the frame of a repeat row
	next     func() []byte // a new frame for each run of a one-packet-per-run row
	repeat   int           // >0: one test run repeating the frame this often
	sameOut  bool          // the output must equal the input (undo wrappers)
	counters []Stat        // the counters that must grow by one per packet; no other action counter may move
	action   Action        // if set, what every one-packet run must return
	floorOf  string        // "repeat" or "single": this row is the floor of rows measured that way
	katran   string        // the path of Katran's equal-size comparison (LBD_KATRAN_RATIOS) this row shows
	samples  []float64     // ns per packet, one per round
}

func (r *benchRow) selfCheck(t *testing.T, l *testLB) {
	t.Helper()
	if r.in == nil {
		return
	}
	opts := &ebpf.RunOptions{Data: r.in, DataOut: make([]byte, len(r.in)+256), Repeat: 3}
	if _, err := r.prog.Run(opts); err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	if r.sameOut && !bytes.Equal(opts.DataOut, r.in) {
		t.Fatalf("%s: frame not restored after 3 runs\n got %x\nwant %x", r.name, opts.DataOut, r.in)
	}
}

// measure takes one sample and checks the counters it moved.
func (r *benchRow) measure(t *testing.T, l *testLB, singles int) {
	t.Helper()
	grown := l.statsSince(t)
	var ns float64
	var runs uint64
	if r.repeat > 0 {
		_, d, err := r.prog.Benchmark(r.in, r.repeat, nil)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		ns = float64(d.Nanoseconds())
		runs = uint64(r.repeat)
	} else {
		frames := make([][]byte, singles)
		for i := range frames {
			frames[i] = r.in
			if r.next != nil {
				frames[i] = r.next()
			}
		}
		var total time.Duration
		for _, in := range frames {
			ret, d, err := r.prog.Benchmark(in, 1, nil)
			if err != nil {
				t.Fatalf("%s: %v", r.name, err)
			}
			if r.action != 0 && Action(ret) != r.action {
				t.Fatalf("%s: the program returned %s, not %s: the row does not measure what it says", r.name, Action(ret), r.action)
			}
			total += d
		}
		ns = float64(total.Nanoseconds()) / float64(singles)
		runs = uint64(singles)
	}
	delta := grown(t)
	for s := StatTX; s < NumStats; s++ {
		d := delta[s]
		want := slices.Contains(r.counters, s)
		switch {
		case want && d < runs:
			t.Fatalf("%s: counter %s grew by %d in %d runs: the row does not measure what it says", r.name, s, d, runs)
		case !want && s.IsAction() && d != 0:
			t.Fatalf("%s: counter %s grew by %d: the row does not measure what it says", r.name, s, d)
		}
	}
	r.samples = append(r.samples, ns)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchTable renders the rows. A row's ratio to its floor is the median
// over the rounds of (row / floor of the same round): both were measured
// moments apart, so load that comes and goes on the machine moves both.
func benchTable(rows []*benchRow) string {
	floors := map[string]*benchRow{}
	for _, r := range rows {
		if r.floorOf != "" {
			floors[r.floorOf] = r
		}
	}
	var b strings.Builder
	katran, err := katranRatios()
	fmt.Fprintf(&b, "| path | ns/packet (median) | min–max over %d rounds | × floor (median of per-round ratios; a fact, not a bar) | lbd / Katran (same run, equal sizes) |\n", len(rows[0].samples))
	b.WriteString("|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		floor := floors["repeat"]
		if r.repeat == 0 {
			floor = floors["single"]
		}
		ratios := make([]float64, len(r.samples))
		for i := range r.samples {
			ratios[i] = r.samples[i] / floor.samples[i]
		}
		ratio := median(ratios)
		bar := ""
		switch {
		case r.katran == "":
		case err != nil:
			bar = err.Error()
		case katran[r.katran] == "":
			bar = "not measured"
		default:
			bar = katran[r.katran]
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.0f–%.0f | %.2f | %s |\n", r.name, median(r.samples),
			slices.Min(r.samples), slices.Max(r.samples), ratio, bar)
	}
	return b.String()
}

// loadBenchWrappers loads the wrappers on the balancer's own maps.
func loadBenchWrappers(t *testing.T, l *testLB) *benchObjects {
	t.Helper()
	spec, err := loadBench()
	if err != nil {
		t.Fatal(err)
	}
	maps := map[string]*ebpf.Map{
		"vips": l.objs.Vips, "vip_info": l.objs.VipInfo, "vip_addrs": l.objs.VipAddrs, "vip_filter": l.objs.VipFilter, "reals": l.objs.Reals, "rings": l.objs.Rings,
		"conns": l.objs.Conns, "config": l.objs.Config, "vip_stats": l.objs.VipStats,
		"real_stats": l.objs.RealStats, "stats": l.objs.Stats,
	}
	for name, m := range maps {
		spec.Maps[name].MaxEntries = m.MaxEntries()
	}
	var objs benchObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: maps}); err != nil {
		t.Fatalf("load bench programs: %v", err)
	}
	t.Cleanup(func() { objs.Close() })
	return &objs
}

// katranRatios reads the lbd/Katran ratios that TestKatranSideBySide wrote
// in the same make bench run (LBD_KATRAN_RATIOS: "path<TAB>median<TAB>min<TAB>max").
func katranRatios() (map[string]string, error) {
	path := os.Getenv("LBD_KATRAN_RATIOS")
	if path == "" {
		return nil, errors.New("no Katran (KATRAN_SRC not given)")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("no Katran ratios: %v", err)
	}
	m := map[string]string{}
	for line := range strings.Lines(string(data)) {
		f := strings.Split(strings.TrimSpace(line), "\t")
		if len(f) == 4 {
			m[f[0]] = fmt.Sprintf("%s (%s–%s)", f[1], f[2], f[3])
		}
	}
	return m, nil
}
