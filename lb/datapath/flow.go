package datapath

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/lbd-dev/lbd/lb"
)

// FlowKey is a client's 5-tuple as it reaches the balancer.
type FlowKey struct {
	Client netip.AddrPort
	Dest   netip.AddrPort // the VIP address and the port the client used
	Proto  lb.Proto
}

func (k FlowKey) String() string {
	return fmt.Sprintf("%s %s -> %s", k.Proto, k.Client, k.Dest)
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
