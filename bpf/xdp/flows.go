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

// LookupFlow returns the connection table entry of a flow.
func (b *Balancer) LookupFlow(key FlowKey) (Flow, error) {
	raw, err := key.raw()
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

// Flows iterates over the connection table. The table changes while it is
// read: an entry may be missed or, rarely, seen twice (the kernel's hash
// iteration restarts a bucket that changed).
func (b *Balancer) Flows() iter.Seq2[Flow, error] {
	return func(yield func(Flow, error) bool) {
		clock, err := b.clock()
		if err != nil {
			yield(Flow{}, err)
			return
		}
		var k balancerFlowKey
		var v balancerFlowState
		it := b.objs.Conns.Iterate()
		for it.Next(&k, &v) {
			f, err := clock.flow(k, v)
			if !yield(f, err) {
				return
			}
		}
		if err := it.Err(); err != nil {
			yield(Flow{}, fmt.Errorf("iterate the connection table: %w", err))
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
	var victims []balancerFlowKey
	var k balancerFlowKey
	var v balancerFlowState
	it := b.objs.Conns.Iterate()
	for it.Next(&k, &v) {
		f, err := clock.flow(k, v)
		if err != nil {
			return 0, err
		}
		if match(f) {
			victims = append(victims, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate the connection table: %w", err)
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
