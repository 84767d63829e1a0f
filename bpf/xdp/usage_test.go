package xdp

import (
	"testing"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// fillFlowTables writes n entries into each CPU's connection table.
func fillFlowTables(t testing.TB, b *Balancer, n int) {
	t.Helper()
	const chunk = 4096
	keys := make([]balancerFlowKey, chunk)
	vals := make([]balancerFlowState, chunk)
	for cpu, tbl := range b.flowTables {
		for done := 0; done < n; {
			m := min(chunk, n-done)
			for i := range m {
				id := uint32(done + i)
				keys[i] = balancerFlowKey{Src: [4]uint32{id}, Dst: [4]uint32{uint32(cpu)}, Sport: 1, Dport: 80, Proto: 6, Family: 4}
				vals[i] = balancerFlowState{Real: 1}
			}
			if _, err := tbl.BatchUpdate(keys[:m], vals[:m], nil); err != nil {
				t.Fatalf("fill table of CPU %d: %v", cpu, err)
			}
			done += m
		}
	}
}

// TestFlowTableUsage: the gauge counts exactly the entries each CPU's
// table holds, and gives each table's capacity.
func TestFlowTableUsage(t *testing.T) {
	privtest.Require(t)
	b, err := Load(Limits{MaxVIPs: 4, MaxReals: 4, MaxFlows: 1 << 16})
	privtest.CheckNotSupported(t, "load balancer", err)
	defer b.Close()
	u, err := b.FlowTableUsage()
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != len(b.flowTables) || u[0].Entries != 0 {
		t.Fatalf("empty tables: %+v", u)
	}
	fillFlowTables(t, b, 5000) // more than one batch
	u, err = b.FlowTableUsage()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range u {
		if c.Entries != 5000 || c.Capacity != int(b.flowTables[c.CPU].MaxEntries()) {
			t.Errorf("CPU %d: %d entries of %d, want 5000 of %d", c.CPU, c.Entries, c.Capacity, b.flowTables[c.CPU].MaxEntries())
		}
	}
}

// BenchmarkFlowTableUsage: counting full 1M-entry tables (the default
// limit), what one uncached scrape costs.
func BenchmarkFlowTableUsage(b *testing.B) {
	privtest.Require(b)
	bal, err := Load(Limits{MaxVIPs: 4, MaxReals: 4, MaxFlows: 1 << 20})
	privtest.CheckNotSupported(b, "load balancer", err)
	defer bal.Close()
	fillFlowTables(b, bal, int(bal.flowTables[0].MaxEntries()))
	b.ResetTimer()
	for b.Loop() {
		u, err := bal.FlowTableUsage()
		if err != nil {
			b.Fatal(err)
		}
		if u[0].Entries == 0 {
			b.Fatal("no entries")
		}
	}
}
