package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// The connection table is one LRU hash shared by all CPUs (conns), with
// BPF_F_NO_COMMON_LRU: each CPU has its own LRU lists and an equal share
// of the entries, and inserts and evicts under its own lock, as per-CPU
// tables did, but a flow has one entry that every CPU sees. Per-CPU
// tables (the layout before, Katran's) let a 5-tuple have an entry in
// several CPUs' tables at once, and a stale one won on its CPU: a reused
// 5-tuple's connection went to two reals.

// legacyFlowsPin is the pinned array of per-CPU connection tables of lbd
// before the shared table. Open moves its entries into conns.
const legacyFlowsPin = "flows"

// connsSpec sizes the shared table: MaxFlows rounded up to a multiple of
// the possible CPUs, as the kernel does for BPF_F_NO_COMMON_LRU (it
// gives each CPU the same share), so that a pinned table compares equal
// to the spec on the next start.
func connsSpec(spec *ebpf.CollectionSpec, limits Limits) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count possible CPUs: %w", err)
	}
	n := uint32(ncpu)
	spec.Maps[balancerMapConns].MaxEntries = (limits.MaxFlows + n - 1) / n * n
	return nil
}

// migrateLegacyFlows moves the entries of an older lbd's per-CPU tables,
// pinned as flows in dir, into the shared table, pinned as conns, and
// removes the old pin: a restart into this version keeps every flow on
// its real. Where several CPUs' tables have a 5-tuple, the entry made
// last (the latest first packet: a reused 5-tuple's newest connection)
// wins. It does nothing if there is no old pin or conns is pinned
// already. The old tables stay in use by the attached program until the
// new one replaces it: flows made in between follow the ring.
func migrateLegacyFlows(spec *ebpf.CollectionSpec, dir string) error {
	oldPath := filepath.Join(dir, legacyFlowsPin)
	if _, err := os.Lstat(oldPath); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := os.Lstat(filepath.Join(dir, balancerMapConns)); err == nil {
		return nil
	}
	outer, err := ebpf.LoadPinnedMap(oldPath, nil)
	if err != nil {
		return fmt.Errorf("open the old per-CPU connection tables %s: %w (%s)", oldPath, err, cleanupHint)
	}
	defer outer.Close()
	if outer.Type() != ebpf.ArrayOfMaps {
		return fmt.Errorf("old connection tables %s: a %s, want an array of per-CPU tables: %w; %s",
			oldPath, outer.Type(), ebpf.ErrMapIncompatible, cleanupHint)
	}
	cs := spec.Maps[balancerMapConns].Copy()
	cs.Pinning = ebpf.PinByName
	var newest map[balancerFlowKey]balancerFlowState
	newest, err = readLegacyTables(outer)
	if err != nil {
		return err
	}
	if uint32(len(newest)) > cs.MaxEntries {
		return fmt.Errorf("old connection tables hold %d flows, more than the %d of the shared table: %w; %s",
			len(newest), cs.MaxEntries, ebpf.ErrMapIncompatible, cleanupHint)
	}
	m, err := ebpf.NewMapWithOptions(cs, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		return fmt.Errorf("create the shared connection table %s: %w", filepath.Join(dir, balancerMapConns), err)
	}
	defer m.Close()
	for k, v := range newest {
		if err := m.Put(&k, &v); err != nil {
			m.Unpin()
			return fmt.Errorf("move flows into the shared connection table: %w", err)
		}
	}
	if err := os.Remove(oldPath); err != nil {
		m.Unpin()
		return fmt.Errorf("remove the old connection tables' pin: %w", err)
	}
	slog.Info("moved the per-CPU connection tables into the shared one", "flows", len(newest), "pin", filepath.Join(dir, balancerMapConns))
	return nil
}

// readLegacyTables reads every per-CPU table of outer, the newest entry
// of each 5-tuple.
func readLegacyTables(outer *ebpf.Map) (map[balancerFlowKey]balancerFlowState, error) {
	newest := map[balancerFlowKey]balancerFlowState{}
	for cpu := uint32(0); cpu < outer.MaxEntries(); cpu++ {
		var t *ebpf.Map
		err := outer.Lookup(cpu, &t)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("old connection table of CPU %d: %w", cpu, err)
		}
		var k balancerFlowKey
		var v balancerFlowState
		it := t.Iterate()
		for it.Next(&k, &v) {
			if have, ok := newest[k]; !ok || int32(v.FirstTick-have.FirstTick) > 0 {
				newest[k] = v
			}
		}
		err = it.Err()
		t.Close()
		if err != nil {
			return nil, fmt.Errorf("read the old connection table of CPU %d: %w", cpu, err)
		}
	}
	return newest, nil
}

// FlowTableUsage counts the entries of the connection table. The kernel
// keeps no count an LRU hash can be asked for, so this reads every key,
// with batch lookups as Flows does (a few syscalls per 4096 entries): it
// costs time in proportion to the entries (BenchmarkFlowTableUsage), and
// callers that poll it should cache the answer.
func (b *Balancer) FlowTableUsage() (TableUsage, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return TableUsage{}, fmt.Errorf("count possible CPUs: %w", err)
	}
	u := TableUsage{Capacity: int(b.objs.Conns.MaxEntries()), CPUs: ncpu}
	buf := flowBatches.Get().(*flowBatch)
	defer flowBatches.Put(buf)
	var ferr error
	for range buf.entries(b.objs.Conns, &ferr) {
		u.Entries++
	}
	if ferr != nil {
		return TableUsage{}, fmt.Errorf("count the connection table's entries: %w", ferr)
	}
	return u, nil
}
