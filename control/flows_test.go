package control

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

func flowsFixture(t *testing.T) (*Controller, *fakedp.Datapath) {
	t.Helper()
	c, dp, _ := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1)}})
	mustCreate(t, c, VIP{Key: vipB, RingSize: 1021, Reals: []Real{active(r3, 1)}})
	base := time.Unix(1_700_000_000, 0)
	for i := range 25 {
		key, real := vipA, dp.RealMap[r1]
		if i%5 == 0 {
			key, real = vipB, dp.RealMap[r3]
		} else if i%2 == 0 {
			real = dp.RealMap[r2]
		}
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 3)}), uint16(10000+i))
		dp.FlowList = append(dp.FlowList, datapath.Flow{
			Key:  datapath.FlowKey{Client: client, Dest: netip.AddrPortFrom(key.Addr, key.Port), Proto: key.Proto},
			Real: real, VIPNum: dp.VIPMap[key].Num, VIPGen: dp.VIPMap[key].Gen,
			Packets: uint64(i), Bytes: uint64(1000 * (i % 7)), // ties on purpose
			FirstSeen: base, LastSeen: base.Add(time.Duration(i) * time.Second),
		})
	}
	return c, dp
}

// Paging through with any limit returns every matching flow exactly once,
// in order.
func TestFlowPagesCoverEverythingOnce(t *testing.T) {
	c, dp := flowsFixture(t)
	for _, sort := range []FlowSort{SortBytes, SortLastSeen} {
		for _, limit := range []int{1, 2, 7, 25, 100} {
			seen := map[string]bool{}
			var prev *FlowInfo
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatal("paging does not end")
				}
				p, err := c.Flows(FlowQuery{Sort: sort, Limit: limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				if p.Scanned != len(dp.FlowList) || len(p.Flows) > limit {
					t.Fatalf("scanned %d, page of %d", p.Scanned, len(p.Flows))
				}
				for i := range p.Flows {
					f := &p.Flows[i]
					k := f.Client.String()
					if seen[k] {
						t.Fatalf("sort %s limit %d: %s twice", sort, limit, k)
					}
					seen[k] = true
					if prev != nil && value(*prev, sort) < value(*f, sort) {
						t.Fatalf("sort %s: out of order", sort)
					}
					prev = f
				}
				if p.Next == "" {
					break
				}
				cursor = p.Next
			}
			if len(seen) != len(dp.FlowList) {
				t.Errorf("sort %s limit %d: saw %d of %d flows", sort, limit, len(seen), len(dp.FlowList))
			}
		}
	}
}

func value(f FlowInfo, s FlowSort) uint64 {
	if s == SortLastSeen {
		return uint64(f.LastSeen.UnixNano())
	}
	return f.Bytes
}

func TestFlowFilters(t *testing.T) {
	c, _ := flowsFixture(t)
	count := func(q FlowQuery) int {
		t.Helper()
		q.Limit = 1000
		p, err := c.Flows(q)
		if err != nil {
			t.Fatal(err)
		}
		return len(p.Flows)
	}
	if n := count(FlowQuery{VIP: &vipB}); n != 5 {
		t.Errorf("VIP B: %d flows, want 5", n)
	}
	if n := count(FlowQuery{VIP: &vipA, Real: r2}); n != 10 {
		t.Errorf("VIP A real 2: %d flows, want 10", n)
	}
	if n := count(FlowQuery{Client: netip.MustParsePrefix("198.51.100.1/32")}); n != 8 {
		t.Errorf("one client: %d flows, want 8", n)
	}
	p, _ := c.Flows(FlowQuery{VIP: &vipB, Limit: 1})
	if f := p.Flows[0]; f.VIP != lb.VIPName(vipB) || f.Real != r3 || f.Proto != lb.UDP {
		t.Errorf("flow not named: %+v", f)
	}
	other := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.50"), Port: 1, Proto: lb.TCP}
	if _, err := c.Flows(FlowQuery{VIP: &other}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown VIP: %v", err)
	}
	for _, q := range []FlowQuery{{Limit: 1001}, {Limit: -1}, {Sort: "packets"}, {Cursor: "!!"}, {Cursor: "YWJj"}} {
		var inv *InvalidError
		if _, err := c.Flows(q); !errors.As(err, &inv) {
			t.Errorf("%+v: %v, want InvalidError", q, err)
		}
	}
}

func TestRates(t *testing.T) {
	c, dp := flowsFixture(t)
	t0 := time.Unix(100, 0)
	dp.VIPCounters[vipA] = datapath.VIPStats{Packets: 100, Bytes: 10000}
	dp.Global[datapath.StatTX] = 100
	if err := c.SampleRates(t0); err != nil {
		t.Fatal(err)
	}
	dp.VIPCounters[vipA] = datapath.VIPStats{Packets: 300, Bytes: 50000, LRUHits: 7}
	dp.Global[datapath.StatTX] = 400
	if err := c.SampleRates(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	s, err := c.VIPStats(vipA)
	if err != nil {
		t.Fatal(err)
	}
	if s.Packets != 300 || s.PacketsPerSec != 100 || s.BytesPerSec != 20000 || s.LRUHits != 7 {
		t.Errorf("VIP stats %+v", s)
	}
	g, _ := c.GlobalStats()
	if r := g.Rates[datapath.StatTX.String()]; r != 150 {
		t.Errorf("global tx rate %v, want 150 (%v)", r, fmt.Sprint(g.Rates))
	}
	all, err := c.AllStats()
	if err != nil || len(all.VIPs) != 2 || len(all.Reals) != 3 {
		t.Errorf("all stats: %+v %v", all, err)
	}
}

// TestFlowsOfAGoneVIPAreNotListed: a VIP that has a removed VIP's number
// (the fake never reuses numbers, so the test gives the removed VIP's
// entries the new VIP's number, as the datapath's reuse does) does not
// show them: they have the old generation.
func TestFlowsOfAGoneVIPAreNotListed(t *testing.T) {
	c, dp := flowsFixture(t)
	old := dp.VIPMap[vipB]
	var left []datapath.Flow
	for _, f := range dp.FlowList {
		if f.VIPNum == old.Num && f.VIPGen == old.Gen {
			left = append(left, f)
		}
	}
	if err := c.DeleteVIP(vipB); err != nil {
		t.Fatal(err)
	}
	// Deleting the VIP freed its reals' indices, which deleted the entries
	// that name them; entries that outlive that (made by packets in flight
	// meanwhile, or left by a deletion that failed) must not be listed.
	dp.FlowList = append(dp.FlowList, left...)
	vipC := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.77"), Port: 443, Proto: lb.TCP}
	mustCreate(t, c, VIP{Key: vipC, RingSize: 1021, Reals: []Real{active(r1, 1)}})
	cur := dp.VIPMap[vipC]
	stale := 0
	for i := range dp.FlowList {
		if f := &dp.FlowList[i]; f.VIPNum == old.Num && f.VIPGen == old.Gen {
			f.VIPNum = cur.Num // the number taken again; the generation is the gone VIP's
			stale++
		}
	}
	if stale != 5 || cur.Gen == old.Gen {
		t.Fatalf("test setup: %d stale entries, generations %d and %d", stale, old.Gen, cur.Gen)
	}
	p, err := c.Flows(FlowQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Flows) != 20 || p.Scanned != 25 {
		t.Errorf("listed %d flows of %d scanned, want VIP A's 20 of 25", len(p.Flows), p.Scanned)
	}
	for _, f := range p.Flows {
		if f.VIP != lb.VIPName(vipA) {
			t.Errorf("flow %s -> %s listed under %q", f.Client, f.Dest, f.VIP)
		}
	}
	p, err = c.Flows(FlowQuery{VIP: &vipC, Limit: 1000})
	if err != nil || len(p.Flows) != 0 {
		t.Errorf("VIP C has %d flows (%v), want none: the entries are the removed VIP's", len(p.Flows), err)
	}
}

// TestFlowPagesMissNothingWhileCountersChange: between pages, flows not
// yet listed get packets (their bytes and last_seen jump ahead of the
// cursor) and new flows come. Every flow that was there from the start
// is listed; a flow listed twice is one that changed, and its second
// listing has its newer counters; the unchanged ones come in order.
func TestFlowPagesMissNothingWhileCountersChange(t *testing.T) {
	for _, sort := range []FlowSort{SortBytes, SortLastSeen} {
		c, dp := flowsFixture(t)
		start := dp.FlowList[0].LastSeen
		for _, f := range dp.FlowList {
			start = maxTime(start, f.LastSeen)
		}
		original := map[string]bool{}
		for _, f := range dp.FlowList {
			original[f.Key.Client.String()] = true
		}
		seen := map[string]FlowInfo{}
		changed := map[string]bool{}
		cursor := ""
		for page := 0; ; page++ {
			if page > 40 {
				t.Fatal("paging does not end")
			}
			p, err := c.Flows(FlowQuery{Sort: sort, Limit: 3, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range p.Flows {
				k := f.Client.String()
				if prev, twice := seen[k]; twice {
					if !changed[k] || f.Packets <= prev.Packets {
						t.Errorf("sort %s: %s listed twice (%d then %d packets) without a change between", sort, k, prev.Packets, f.Packets)
					}
				}
				seen[k] = f
			}
			if p.Next == "" {
				break
			}
			cursor = p.Next
			// The flows at the end of the listing so far unseen get the
			// most bytes and the latest packet: they move to the top.
			for i := range dp.FlowList {
				f := &dp.FlowList[i]
				k := f.Key.Client.String()
				if _, listed := seen[k]; !listed && !changed[k] && len(changed)%2 == page%2 {
					f.Bytes += 1_000_000
					f.Packets += 10
					f.LastSeen = start.Add(time.Duration(page+1) * time.Second)
					changed[k] = true
					break
				}
			}
			// And a new flow comes.
			dp.FlowList = append(dp.FlowList, datapath.Flow{
				Key:  datapath.FlowKey{Client: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.99"), uint16(page+1)), Dest: netip.AddrPortFrom(vipA.Addr, vipA.Port), Proto: vipA.Proto},
				Real: dp.RealMap[r1], VIPNum: dp.VIPMap[vipA].Num, VIPGen: dp.VIPMap[vipA].Gen,
				Packets: 1, Bytes: 2_000_000, FirstSeen: start.Add(time.Second), LastSeen: start.Add(time.Duration(page+1) * time.Second),
			})
		}
		for k := range original {
			if _, ok := seen[k]; !ok {
				t.Errorf("sort %s: flow of %s never listed (changed while paging: %v)", sort, k, changed[k])
			}
		}
		if len(changed) < 5 {
			t.Errorf("sort %s: test setup: only %d flows changed while paging", sort, len(changed))
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestRatesAfterZeroSample: a counter that was zero at the previous
// sample (a global counter absent from the non-zero map, a real with no
// traffic yet) has a rate from zero, not 0 as for a new series.
func TestRatesAfterZeroSample(t *testing.T) {
	c, dp := flowsFixture(t)
	t0 := time.Unix(100, 0)
	if err := c.SampleRates(t0); err != nil { // everything zero
		t.Fatal(err)
	}
	dp.Global[datapath.StatTX] = 44733
	dp.VIPCounters[vipA] = datapath.VIPStats{Packets: 400, Bytes: 4000}
	dp.RealCounters[dp.RealMap[r1]] = datapath.RealStats{Packets: 400, Bytes: 4000}
	if err := c.SampleRates(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	g, err := c.GlobalStats()
	if err != nil {
		t.Fatal(err)
	}
	if r := g.Rates[datapath.StatTX.String()]; r != 44733.0/2 {
		t.Errorf("global tx rate %v after a zero sample, want %v", r, 44733.0/2)
	}
	s, err := c.RealStats(vipA, r1)
	if err != nil {
		t.Fatal(err)
	}
	if s.PacketsPerSec != 200 || s.BytesPerSec != 2000 {
		t.Errorf("real %s rates %v pkt/s %v B/s after a zero sample, want 200 and 2000", r1, s.PacketsPerSec, s.BytesPerSec)
	}
	v, err := c.VIPStats(vipA)
	if err != nil {
		t.Fatal(err)
	}
	if v.PacketsPerSec != 200 {
		t.Errorf("VIP rate %v, want 200", v.PacketsPerSec)
	}
}

// TestCountersSurviveRestart: after a restart over the same (pinned)
// datapath, each pair gets back its own index, even for a real that two
// VIPs share and neither ring holds (draining in both), and the removed
// reals' totals come back from the counters file: the VIP's total still
// equals the sum of its reals.
func TestCountersSurviveRestart(t *testing.T) {
	dp := fakedp.New()
	store, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	drain := func(a netip.Addr) Real { return Real{Addr: a, Weight: 1, State: RealDraining} }
	c := New(dp, store, nil, nil)
	// B first: its index of r1 is the lower one, which A would adopt by
	// mistake if the pairs' indices were not restored
	mustCreate(t, c, VIP{Key: vipB, RingSize: 1021, Reals: []Real{drain(r1), active(r3, 1)}})
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{drain(r1), active(r2, 1), active(r3, 1)}})
	idA, idB := c.slots[RealKey{vipA, r1}], c.slots[RealKey{vipB, r1}]
	if idA == idB || idA == 0 || idB == 0 {
		t.Fatalf("shared real has indices %d (A) and %d (B), want two", idA, idB)
	}
	dp.RealCounters[idA] = datapath.RealStats{Packets: 10, Bytes: 1000}
	dp.RealCounters[idB] = datapath.RealStats{Packets: 1, Bytes: 100}
	dp.RealCounters[c.slots[RealKey{vipA, r3}]] = datapath.RealStats{Packets: 5, Bytes: 500}
	dp.VIPCounters[vipA] = datapath.VIPStats{Packets: 15, Bytes: 1500}
	if _, err := c.DeleteReal(vipA, r3); err != nil {
		t.Fatal(err)
	}

	// restart: a new controller over the same datapath, state from disk
	desired, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := store.LoadCounters()
	if err != nil {
		t.Fatal(err)
	}
	c2 := New(dp, store, desired, nil)
	c2.RestoreCounters(saved)
	if drifts, err := c2.Reconcile(); err != nil || len(drifts) != 0 {
		t.Fatalf("reconcile after restart: %+v %v", drifts, err)
	}
	if got := c2.slots[RealKey{vipA, r1}]; got != idA {
		t.Errorf("A's r1 has index %d after restart, had %d", got, idA)
	}
	st, err := c2.VIPStats(vipA)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, r := range st.Reals {
		sum += r.Packets
	}
	if sum != st.Packets || len(st.Reals) != 3 || !st.Reals[2].Removed || st.Reals[2].Packets != 5 || st.Reals[0].Packets != 10 {
		t.Errorf("after restart: VIP %d packets, reals %d: %+v", st.Packets, sum, st.Reals)
	}
}
