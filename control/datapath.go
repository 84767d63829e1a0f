package control

import (
	"iter"
	"net/netip"

	"github.com/lbd-dev/lbd/bpf/xdp"
)

// Datapath is what the controller needs of the XDP balancer. *xdp.Balancer
// implements it; tests use an in-memory fake that can be made to fail.
type Datapath interface {
	AddVIP(key xdp.VIPKey, flags xdp.VIPFlags) error
	SetVIPFlags(key xdp.VIPKey, flags xdp.VIPFlags) error
	RemoveVIP(key xdp.VIPKey) error
	VIPs() []xdp.VIP
	LookupVIP(key xdp.VIPKey) (xdp.VIP, error)
	SetRing(key xdp.VIPKey, ring []xdp.RealID) error
	Ring(key xdp.VIPKey) ([]xdp.RealID, error)

	// Each (VIP, real) pair has its own real index (slot), so that the
	// datapath's per-index counters are per pair.
	AddRealSlot(addr netip.Addr) (xdp.RealID, error)
	RemoveRealSlots(ids []xdp.RealID) (map[xdp.RealID]xdp.RealStats, error)
	RealSlots() map[xdp.RealID]netip.Addr

	GlobalStats() (xdp.GlobalStats, error)
	VIPStats(key xdp.VIPKey) (xdp.VIPStats, error)
	RealStats(id xdp.RealID) (xdp.RealStats, error)
	ResetVIPStats(key xdp.VIPKey) error
	ResetRealStats(id xdp.RealID) error
	FlowTableUsage() ([]xdp.TableUsage, error)

	Flows() iter.Seq2[xdp.Flow, error]
	DeleteFlows(match func(xdp.Flow) bool) (int, error)
}

var _ Datapath = (*xdp.Balancer)(nil)
