package xdp

import (
	"errors"
	"fmt"
	"hash/maphash"
	"iter"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// FlowKey is a client's 5-tuple as it reaches the balancer.
type FlowKey struct {
	Client netip.AddrPort
	Dest   netip.AddrPort // the VIP address and the port the client used
	Proto  Proto
}

func (k FlowKey) String() string {
	return fmt.Sprintf("%s %s -> %s", k.Proto, k.Client, k.Dest)
}

func (k FlowKey) raw() (balancerFlowKey, error) {
	src, sf := addrWords(k.Client.Addr())
	dst, df := addrWords(k.Dest.Addr())
	if sf != df {
		return balancerFlowKey{}, fmt.Errorf("flow %s: client and destination families differ", k)
	}
	return balancerFlowKey{
		Src: src, Dst: dst,
		Sport: htons(k.Client.Port()), Dport: htons(k.Dest.Port()),
		Proto: uint8(k.Proto), Family: sf,
	}, nil
}

func flowKeyFromRaw(r balancerFlowKey) (FlowKey, error) {
	src, err := wordsAddr(r.Src, uint32(r.Family))
	if err != nil {
		return FlowKey{}, err
	}
	dst, err := wordsAddr(r.Dst, uint32(r.Family))
	if err != nil {
		return FlowKey{}, err
	}
	return FlowKey{
		Client: netip.AddrPortFrom(src, ntohs(r.Sport)),
		Dest:   netip.AddrPortFrom(dst, ntohs(r.Dport)),
		Proto:  Proto(r.Proto),
	}, nil
}

// Flow is one connection table entry.
type Flow struct {
	Key       FlowKey
	Real      RealID
	VIPNum    uint32
	VIPGen    uint32 // the generation of the VIP that made the entry (see VIP.Gen)
	Packets   uint64
	Bytes     uint64 // IP bytes as the client sent them
	FirstSeen time.Time
	LastSeen  time.Time
	// LastTick is LastSeen as the datapath's clock has it (jiffies, 32
	// bits): unlike LastSeen, which is converted to wall time on every
	// read and may differ by a tick from one read to the next, it is the
	// same in every read until the flow's next packet. Compare it with
	// Tick's by subtraction (it wraps).
	LastTick uint32
}

func (c tickClock) flow(k balancerFlowKey, v balancerFlowState) (Flow, error) {
	key, err := flowKeyFromRaw(k)
	if err != nil {
		return Flow{}, err
	}
	return Flow{
		Key: key, Real: RealID(v.Real), VIPNum: v.VipNum, VIPGen: v.VipGen,
		Packets: v.Packets, Bytes: v.Bytes,
		FirstSeen: c.at(v.FirstTick), LastSeen: c.at(v.LastTick), LastTick: v.LastTick,
	}, nil
}

// LookupFlow returns the connection table entry of a flow. A flow lives
// in the table of the CPU its packets come in on; if (for a moment, while
// it moves) two CPUs' tables have it, the one used last is returned.
func (b *Balancer) LookupFlow(key FlowKey) (Flow, error) {
	raw, err := key.raw()
	if err != nil {
		return Flow{}, err
	}
	var v, latest balancerFlowState
	found := false
	for cpu, t := range b.flowTables {
		// A lookup from user space does not mark the entry as used, so
		// reading the table does not keep idle flows from being evicted.
		err := t.Lookup(&raw, &v)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			continue
		case err != nil:
			return Flow{}, fmt.Errorf("flow %s in the table of CPU %d: %w", key, cpu, err)
		}
		if !found || int32(v.LastTick-latest.LastTick) > 0 {
			latest = v
		}
		found = true
	}
	if !found {
		return Flow{}, fmt.Errorf("flow %s: %w", key, ErrNotFound)
	}
	clock, err := b.clock()
	if err != nil {
		return Flow{}, err
	}
	return clock.flow(raw, latest)
}

// Tick reads the datapath's clock now, in the units of Flow.LastTick: a
// flow whose LastTick is before it (int32(tick-LastTick) > 0) has had no
// packet since.
func (b *Balancer) Tick() (uint32, error) {
	c, err := b.clock()
	if err != nil {
		return 0, err
	}
	return uint32(c.tick), nil
}

// Flows lists the connection tables, each key once. A flow that is in the
// tables throughout the listing is never missed, even while other flows
// are inserted and evicted, unless it moves between CPUs' tables twice or
// more during the listing:
//
//   - Each table is read with batch lookups (BPF_MAP_LOOKUP_BATCH, 5.6+),
//     which copy a whole hash bucket at a time under its lock, and a key
//     always lives in the same bucket: no entry that stays is skipped.
//     Walking the table key by key (get-next-key) can skip entries when
//     the walk's current node is evicted and reused meanwhile; it is only
//     the fallback for kernels without batch lookups.
//   - A flow whose packets change CPU is moved by the datapath: inserted
//     into the new CPU's table, then deleted from the old one. A pass that
//     reads table A, then table B, misses a flow that moves from B to A in
//     between. So after one pass over all the tables, every table but the
//     last is read again: a flow missed by the first pass was inserted into
//     a table after that table was read, and the second pass finds it
//     there unless it has moved away again.
//
// A key found more than once (in two tables while it moves, or in both
// passes) is given once, the first copy found. That takes a set of the
// keys given, by a 64-bit hash with a random seed: about 50 bytes an entry
// for the listing (5 MB for 100 000). Should two keys share a hash (odds
// of about n²/2^65: 3e-8 for a million entries), the second is left out.
func (b *Balancer) Flows() iter.Seq2[Flow, error] {
	return func(yield func(Flow, error) bool) {
		clock, err := b.clock()
		if err != nil {
			yield(Flow{}, err)
			return
		}
		order := make([]int, 0, 2*len(b.flowTables))
		for cpu := range b.flowTables {
			order = append(order, cpu)
		}
		for cpu := range len(b.flowTables) - 1 {
			order = append(order, cpu)
		}
		seed := maphash.MakeSeed()
		seen := make(map[uint64]struct{})
		var buf flowBatch
		for _, cpu := range order {
			for k, v := range buf.entries(b.flowTables[cpu], &err) {
				h := maphash.Comparable(seed, k)
				if _, dup := seen[h]; dup {
					continue
				}
				seen[h] = struct{}{}
				f, ferr := clock.flow(k, v)
				if !yield(f, ferr) {
					return
				}
			}
			if err != nil {
				yield(Flow{}, fmt.Errorf("read the connection table of CPU %d: %w", cpu, err))
				return
			}
		}
	}
}

// flowBatch reads connection tables in batches; its buffers are reused
// from one table to the next.
type flowBatch struct {
	keys []balancerFlowKey
	vals []balancerFlowState
}

// flowBatchSize is the entries of one batch lookup: a few hundred KB.
const flowBatchSize = 4096

// entries yields a table's entries, read in batches of whole buckets.
// On a kernel without batch lookups it walks the table key by key. It
// sets *errp if the reading fails.
func (fb *flowBatch) entries(t *ebpf.Map, errp *error) iter.Seq2[balancerFlowKey, balancerFlowState] {
	return func(yield func(balancerFlowKey, balancerFlowState) bool) {
		if fb.keys == nil {
			n := min(flowBatchSize, int(max(t.MaxEntries(), 1)))
			fb.keys, fb.vals = make([]balancerFlowKey, n), make([]balancerFlowState, n)
		}
		var cursor ebpf.MapBatchCursor
		for first := true; ; first = false {
			n, err := t.BatchLookup(&cursor, fb.keys, fb.vals, nil)
			for i := range n {
				if !yield(fb.keys[i], fb.vals[i]) {
					return
				}
			}
			switch {
			case errors.Is(err, ebpf.ErrKeyNotExist):
				return // the end
			case errors.Is(err, unix.ENOSPC) && n == 0:
				// A bucket holds more entries than the batch: retry that
				// bucket with room for it.
				if len(fb.keys) >= int(t.MaxEntries()) {
					*errp = err
					return
				}
				fb.keys, fb.vals = make([]balancerFlowKey, 2*len(fb.keys)), make([]balancerFlowState, 2*len(fb.vals))
			case errors.Is(err, ebpf.ErrNotSupported):
				if first {
					fb.iterate(t, errp, yield)
					return
				}
				*errp = err
				return
			case err != nil:
				*errp = err
				return
			}
		}
	}
}

// iterate walks a table key by key: the fallback before Linux 5.6.
func (fb *flowBatch) iterate(t *ebpf.Map, errp *error, yield func(balancerFlowKey, balancerFlowState) bool) {
	var k balancerFlowKey
	var v balancerFlowState
	it := t.Iterate()
	for it.Next(&k, &v) {
		if !yield(k, v) {
			return
		}
	}
	*errp = it.Err()
}

// DeleteFlows removes the connection table entries for which match is
// true (e.g. those of a removed real) and returns how many it removed.
func (b *Balancer) DeleteFlows(match func(Flow) bool) (int, error) {
	clock, err := b.clock()
	if err != nil {
		return 0, err
	}
	n := 0
	var buf flowBatch
	for cpu, t := range b.flowTables {
		var victims []balancerFlowKey
		var ferr error
		for k, v := range buf.entries(t, &ferr) {
			f, err := clock.flow(k, v)
			if err != nil {
				return n, err
			}
			if match(f) {
				victims = append(victims, k)
			}
		}
		if ferr != nil {
			return n, fmt.Errorf("read the connection table of CPU %d: %w", cpu, ferr)
		}
		for _, k := range victims {
			if err := t.Delete(&k); err != nil {
				if errors.Is(err, ebpf.ErrKeyNotExist) {
					continue
				}
				key, _ := flowKeyFromRaw(k)
				return n, fmt.Errorf("delete flow %s from the table of CPU %d: %w", key, cpu, err)
			}
			n++
		}
	}
	return n, nil
}
