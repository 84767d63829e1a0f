package xdp

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// fillConns writes perCPU entries into the shared connection table from
// each online CPU (the thread pinned there), so that no CPU's share of
// the table (BPF_F_NO_COMMON_LRU) overflows while it has room: a table is
// filled completely only by every CPU filling its own share. It returns
// the entries written.
func fillConns(t testing.TB, b *Balancer, perCPU int) int {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)
	keys := make([]balancerFlowKey, flowBatchSize)
	vals := make([]balancerFlowState, flowBatchSize)
	total := 0
	for cpu := range runtime.NumCPU() {
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Fatal(fmt.Errorf("run on CPU %d: %w", cpu, err))
		}
		for done := 0; done < perCPU; {
			m := min(len(keys), perCPU-done)
			for i := range m {
				id := uint32(done + i)
				keys[i] = balancerFlowKey{Src: [4]uint32{id}, Dst: [4]uint32{uint32(cpu)}, Sport: 1, Dport: 80, Proto: 6, Family: 4}
				vals[i] = balancerFlowState{Real: 1}
			}
			if _, err := b.objs.Conns.BatchUpdate(keys[:m], vals[:m], nil); err != nil {
				t.Fatalf("fill the connection table from CPU %d: %v", cpu, err)
			}
			done += m
		}
		total += perCPU
	}
	return total
}

// TestFlowTableUsage: the gauge counts exactly the entries the shared
// connection table holds, and gives its capacity and the CPUs that
// share it.
func TestFlowTableUsage(t *testing.T) {
	privtest.Require(t)
	b, err := Load(Limits{MaxVIPs: 4, MaxReals: 4, MaxFlows: 1 << 16})
	privtest.CheckNotSupported(t, "load balancer", err)
	defer b.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	u, err := b.FlowTableUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Entries != 0 || u.Capacity != int(b.objs.Conns.MaxEntries()) || u.CPUs != ncpu {
		t.Fatalf("empty table: %+v, want 0 entries of %d, %d CPUs", u, b.objs.Conns.MaxEntries(), ncpu)
	}
	n := fillConns(t, b, 5000) // more than one batch
	u, err = b.FlowTableUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Entries != n || u.Capacity != int(b.objs.Conns.MaxEntries()) {
		t.Errorf("%d entries of %d, want %d of %d", u.Entries, u.Capacity, n, b.objs.Conns.MaxEntries())
	}
}

// BenchmarkFlowTableUsage: counting a full 1M-entry table (the default
// limit), what one uncached scrape costs.
func BenchmarkFlowTableUsage(b *testing.B) {
	privtest.Require(b)
	bal, err := Load(Limits{MaxVIPs: 4, MaxReals: 4, MaxFlows: 1 << 20})
	privtest.CheckNotSupported(b, "load balancer", err)
	defer bal.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		b.Fatal(err)
	}
	n := fillConns(b, bal, int(bal.objs.Conns.MaxEntries())/ncpu)
	b.ResetTimer()
	for b.Loop() {
		u, err := bal.FlowTableUsage()
		if err != nil {
			b.Fatal(err)
		}
		if u.Entries != n {
			b.Fatalf("%d entries, want %d", u.Entries, n)
		}
	}
}
