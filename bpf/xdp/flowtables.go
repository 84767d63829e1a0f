package xdp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The connection table is one LRU hash per possible CPU, in the outer
// array flows[cpu] (Katran's layout): each CPU inserts into and evicts
// from its own table, with its own lock and LRU lists, in memory of its
// NUMA node. The datapath searches the other CPUs' tables for a packet
// its own table misses (FlowSearchRate bounds how often), so a flow whose
// packets change CPU keeps its real.

// progFlowSearch is lbd_flow_search's slot in progs (enum lbd_prog in
// lbd_maps.h).
const progFlowSearch = 0

// fillProgs puts the flow search into progs, the balancer's tail-call
// table. progs is not pinned: while no lbd runs, the attached program
// finds it empty and a packet its CPU's table misses follows the ring.
func (b *Balancer) fillProgs() error {
	if err := b.objs.Progs.Put(uint32(progFlowSearch), b.objs.LbdFlowSearch); err != nil {
		return fmt.Errorf("install the flow search as tail-call target: %w", err)
	}
	return nil
}

// flowTablesSpec sizes the outer map (one slot per possible CPU) and the
// table template, and returns the template for the tables.
func flowTablesSpec(spec *ebpf.CollectionSpec, limits Limits) (*ebpf.MapSpec, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	outer := spec.Maps[balancerMapFlows]
	outer.MaxEntries = uint32(ncpu)
	inner := outer.InnerMap
	inner.MaxEntries = (limits.MaxFlows + uint32(ncpu) - 1) / uint32(ncpu)
	// Every table is placed on a NUMA node; the flag is part of what
	// the outer map requires of its inner maps, so the template has it
	// too.
	inner.Flags |= unix.BPF_F_NUMA_NODE
	return inner, nil
}

// createFlowTables makes a table for every possible CPU and puts it in
// flows. The outer map holds the tables; the handles kept here are for
// reading them.
func (b *Balancer) createFlowTables(template *ebpf.MapSpec) error {
	n := int(b.objs.Flows.MaxEntries())
	for cpu := 0; cpu < n; cpu++ {
		m, err := b.newFlowTable(template, cpu)
		if err != nil {
			return err
		}
		if err := b.objs.Flows.Put(uint32(cpu), m); err != nil {
			m.Close()
			return fmt.Errorf("install connection table of CPU %d: %w", cpu, err)
		}
		b.flowTables = append(b.flowTables, m)
	}
	return nil
}

func (b *Balancer) newFlowTable(template *ebpf.MapSpec, cpu int) (*ebpf.Map, error) {
	spec := template.Copy()
	spec.Name = "lbd_flows_" + strconv.Itoa(cpu)
	spec.NumaNode = cpuNode(cpu)
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create connection table of CPU %d (%d entries): %w", cpu, spec.MaxEntries, err)
	}
	return m, nil
}

// recoverFlowTables opens the tables a previous run left in the pinned
// flows map, checking that they are the size these limits ask for. A
// slot left empty (a run that stopped while creating them) gets a table.
func (b *Balancer) recoverFlowTables(template *ebpf.MapSpec) error {
	n := int(b.objs.Flows.MaxEntries())
	for cpu := 0; cpu < n; cpu++ {
		var m *ebpf.Map
		err := b.objs.Flows.Lookup(uint32(cpu), &m)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			if m, err = b.newFlowTable(template, cpu); err != nil {
				return err
			}
			if err := b.objs.Flows.Put(uint32(cpu), m); err != nil {
				m.Close()
				return fmt.Errorf("install connection table of CPU %d: %w", cpu, err)
			}
		} else if err != nil {
			return fmt.Errorf("recover: connection table of CPU %d: %w", cpu, err)
		}
		b.flowTables = append(b.flowTables, m)
		if m.Type() != template.Type || m.KeySize() != template.KeySize || m.ValueSize() != template.ValueSize ||
			m.MaxEntries() != template.MaxEntries {
			return fmt.Errorf("recover: connection table of CPU %d is a %s of %d entries (key %d, value %d bytes), want %s of %d (%d flows over %d CPUs): %w; %s",
				cpu, m.Type(), m.MaxEntries(), m.KeySize(), m.ValueSize(), template.Type, template.MaxEntries,
				b.limits.MaxFlows, n, ebpf.ErrMapIncompatible, cleanupHint)
		}
	}
	return nil
}

// flowTablesCompatible checks the first pinned table against the template
// (the others were made alike), in Compatible's words.
func flowTablesCompatible(template *ebpf.MapSpec, outer *ebpf.Map) error {
	var m *ebpf.Map
	if err := outer.Lookup(uint32(0), &m); err != nil {
		return nil // no table yet: recovery makes it
	}
	defer m.Close()
	if m.MaxEntries() != template.MaxEntries {
		return fmt.Errorf("per-CPU tables' MaxEntries: %d changed to %d: %w", m.MaxEntries(), template.MaxEntries, ebpf.ErrMapIncompatible)
	}
	if m.Type() != template.Type || m.KeySize() != template.KeySize || m.ValueSize() != template.ValueSize {
		return fmt.Errorf("per-CPU tables: %s with key %d, value %d bytes changed to %s with %d, %d: %w",
			m.Type(), m.KeySize(), m.ValueSize(), template.Type, template.KeySize, template.ValueSize, ebpf.ErrMapIncompatible)
	}
	return nil
}

// cpuNode is the NUMA node of a CPU (0 if sysfs does not say).
func cpuNode(cpu int) uint32 {
	entries, err := os.ReadDir(filepath.Join("/sys/devices/system/cpu", "cpu"+strconv.Itoa(cpu)))
	if err != nil {
		return 0
	}
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), "node"); ok {
			if v, err := strconv.ParseUint(n, 10, 32); err == nil {
				return uint32(v)
			}
		}
	}
	return 0
}

// TableUsage is one CPU's connection table: entries in it and room.
type TableUsage struct {
	CPU      int
	Entries  int
	Capacity int
}

// FlowTableUsage counts the entries of every CPU's connection table. The
// kernel keeps no count an LRU hash can be asked for, so this reads every
// key, in batches (a few syscalls per table): it costs time in
// proportion to the entries (see docs/benchmarks.md), and callers that
// poll it should cache the answer.
func (b *Balancer) FlowTableUsage() ([]TableUsage, error) {
	out := make([]TableUsage, 0, len(b.flowTables))
	const chunk = 4096
	keys := make([]balancerFlowKey, chunk)
	vals := make([]balancerFlowState, chunk)
	for cpu, t := range b.flowTables {
		u := TableUsage{CPU: cpu, Capacity: int(t.MaxEntries())}
		var cursor ebpf.MapBatchCursor
		for {
			n, err := t.BatchLookup(&cursor, keys, vals, nil)
			u.Entries += n
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("count the connection table of CPU %d: %w", cpu, err)
			}
		}
		out = append(out, u)
	}
	return out, nil
}
