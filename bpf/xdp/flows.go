package xdp

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
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
	Packets   uint64
	Bytes     uint64 // IP bytes as the client sent them
	FirstSeen time.Time
	LastSeen  time.Time
}

func (c tickClock) flow(k balancerFlowKey, v balancerFlowState) (Flow, error) {
	key, err := flowKeyFromRaw(k)
	if err != nil {
		return Flow{}, err
	}
	return Flow{
		Key: key, Real: RealID(v.Real), VIPNum: v.VipNum,
		Packets: v.Packets, Bytes: v.Bytes,
		FirstSeen: c.at(v.FirstTick), LastSeen: c.at(v.LastTick),
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

// Flows iterates over the connection tables, CPU by CPU. The tables
// change while they are read: an entry may be missed or, rarely, seen
// twice (e.g. while its flow moves to another CPU).
func (b *Balancer) Flows() iter.Seq2[Flow, error] {
	return func(yield func(Flow, error) bool) {
		clock, err := b.clock()
		if err != nil {
			yield(Flow{}, err)
			return
		}
		for cpu, t := range b.flowTables {
			var k balancerFlowKey
			var v balancerFlowState
			it := t.Iterate()
			for it.Next(&k, &v) {
				f, err := clock.flow(k, v)
				if !yield(f, err) {
					return
				}
			}
			if err := it.Err(); err != nil {
				yield(Flow{}, fmt.Errorf("iterate the connection table of CPU %d: %w", cpu, err))
				return
			}
		}
	}
}

// DeleteFlows removes the connection table entries for which match is
// true (e.g. those of a removed real) and returns how many it removed.
func (b *Balancer) DeleteFlows(match func(Flow) bool) (int, error) {
	clock, err := b.clock()
	if err != nil {
		return 0, err
	}
	n := 0
	for cpu, t := range b.flowTables {
		var victims []balancerFlowKey
		var k balancerFlowKey
		var v balancerFlowState
		it := t.Iterate()
		for it.Next(&k, &v) {
			f, err := clock.flow(k, v)
			if err != nil {
				return n, err
			}
			if match(f) {
				victims = append(victims, k)
			}
		}
		if err := it.Err(); err != nil {
			return n, fmt.Errorf("iterate the connection table of CPU %d: %w", cpu, err)
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
