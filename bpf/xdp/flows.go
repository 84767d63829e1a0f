package xdp

import (
	"errors"
	"fmt"
	"hash/maphash"
	"iter"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/bpf/features"
	"github.com/lbd-dev/lbd/lb"
)

// rawFlowKey is a flow key as the connection table holds it.
func rawFlowKey(k FlowKey) (balancerFlowKey, error) {
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
		Proto:  lb.Proto(r.Proto),
	}, nil
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

// LookupFlow returns the connection table entry of a flow.
func (b *Balancer) LookupFlow(key FlowKey) (Flow, error) {
	raw, err := rawFlowKey(key)
	if err != nil {
		return Flow{}, err
	}
	var v balancerFlowState
	// A lookup from user space does not mark the entry as used, so
	// reading the table does not keep idle flows from being evicted.
	err = b.objs.Conns.Lookup(&raw, &v)
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return Flow{}, fmt.Errorf("flow %s: %w", key, ErrNotFound)
	case err != nil:
		return Flow{}, fmt.Errorf("flow %s in the connection table: %w", key, err)
	}
	clock, err := b.clock()
	if err != nil {
		return Flow{}, err
	}
	return clock.flow(raw, v)
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

// Flows lists the connection table, each key once. A flow that is in the
// table throughout the listing is never missed, even while other flows
// are inserted and evicted: the table is read with batch lookups
// (BPF_MAP_LOOKUP_BATCH, 5.6+), which copy a whole hash bucket at a time
// under its lock, and a key always lives in the same bucket, so no entry
// that stays is skipped. Walking the table key by key (get-next-key) can
// skip entries when the walk's current node is evicted and reused
// meanwhile; it is only the fallback for kernels without batch lookups,
// and the reason a key is still checked against the keys already given
// (a set of 64-bit hashes with a random seed, about 50 bytes an entry for
// the listing; should two keys share a hash, odds of about n²/2^65, the
// second is left out).
func (b *Balancer) Flows() iter.Seq2[Flow, error] {
	return func(yield func(Flow, error) bool) {
		clock, err := b.clock()
		if err != nil {
			yield(Flow{}, err)
			return
		}
		seed := maphash.MakeSeed()
		seen := make(map[uint64]struct{})
		buf := flowBatches.Get().(*flowBatch)
		defer flowBatches.Put(buf)
		for k, v := range buf.entries(b.objs.Conns, &err) {
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
			yield(Flow{}, fmt.Errorf("read the connection table: %w", err))
		}
	}
}

// flowBatch reads connection tables in batches; its buffers are reused
// from one table to the next.
type flowBatch struct {
	keys []balancerFlowKey
	vals []balancerFlowState
}

// flowBatches keeps flowBatch buffers between listings: a ring change
// that removes reals lists the table once, and a few hundred KB of
// garbage per change would make the collector run every few changes.
var flowBatches = sync.Pool{New: func() any { return new(flowBatch) }}

// flowBatchSize is the entries of one batch lookup: a few hundred KB.
const flowBatchSize = 4096

// entries yields a table's entries, read in batches of whole buckets.
// On a kernel without batch lookups it walks the table key by key. It
// sets *errp if the reading fails.
func (fb *flowBatch) entries(t *ebpf.Map, errp *error) iter.Seq2[balancerFlowKey, balancerFlowState] {
	return func(yield func(balancerFlowKey, balancerFlowState) bool) {
		if n := min(flowBatchSize, int(max(t.MaxEntries(), 1))); len(fb.keys) < n {
			fb.keys, fb.vals = make([]balancerFlowKey, n), make([]balancerFlowState, n)
		}
		if !batchListingSafe() {
			fb.iterate(t, errp, yield)
			return
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

// batchListingSafe reports whether the kernel's batch lookups of the
// connection table may run while packets update it: on 5.10 (the kernel
// matrix, qemu) a listing with batch lookups under concurrent inserts and
// evictions locked up both CPUs (soft lockups, never recovered); 6.1 and
// later ran the same test clean. Older kernels walk the table key by key,
// which can miss an entry the walk stands on when it is evicted and
// reused (docs/operations.md, "Listing flows").
var batchListingSafe = sync.OnceValue(func() bool { return features.KernelAtLeast(6, 1) })

// BatchListing reports whether Flows reads the table with batch lookups
// (kernels from 6.1; see batchListingSafe), which never miss an entry
// that stays in the table, or walks it key by key.
func BatchListing() bool { return batchListingSafe() }

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
	var victims []balancerFlowKey
	buf := flowBatches.Get().(*flowBatch)
	defer flowBatches.Put(buf)
	var ferr error
	for k, v := range buf.entries(b.objs.Conns, &ferr) {
		f, err := clock.flow(k, v)
		if err != nil {
			return 0, err
		}
		if match(f) {
			victims = append(victims, k)
		}
	}
	if ferr != nil {
		return 0, fmt.Errorf("read the connection table: %w", ferr)
	}
	n := 0
	for _, k := range victims {
		if err := b.objs.Conns.Delete(&k); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			key, _ := flowKeyFromRaw(k)
			return n, fmt.Errorf("delete flow %s from the connection table: %w", key, err)
		}
		n++
	}
	return n, nil
}
