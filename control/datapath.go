package control

import (
	"iter"
	"net/netip"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/lb"
)

// Datapath is what the controller needs of the XDP balancer. *xdp.Balancer
// implements it; tests use an in-memory fake that can be made to fail.
type Datapath interface {
	AddVIP(key lb.VIPKey, flags lb.VIPFlags) error
	SetVIPFlags(key lb.VIPKey, flags lb.VIPFlags) error
	RemoveVIP(key lb.VIPKey) error
	VIPs() []xdp.VIP
	LookupVIP(key lb.VIPKey) (xdp.VIP, error)
	SetRing(key lb.VIPKey, ring []uint32) error
	Ring(key lb.VIPKey) ([]uint32, error)

	// Each (VIP, real) pair has its own real index (slot), so that the
	// datapath's per-index counters are per pair.
	AddRealSlot(addr netip.Addr) (xdp.RealID, error)
	RemoveRealSlots(ids []xdp.RealID) (map[xdp.RealID]xdp.RealStats, error)
	RealSlots() map[xdp.RealID]netip.Addr

	GlobalStats() (xdp.GlobalStats, error)
	VIPStats(key lb.VIPKey) (xdp.VIPStats, error)
	RealStats(id xdp.RealID) (xdp.RealStats, error)
	ResetVIPStats(key lb.VIPKey) error
	ResetRealStats(id xdp.RealID) error
	FlowTableUsage() (xdp.TableUsage, error)

	// Readers of the kernel maps and repairs from the datapath's
	// bookkeeping, for drift repair (see Reconcile).
	ReadMaps() (*xdp.MapState, error)
	FilterOf(addrs []netip.Addr) []uint64
	RepairVIP(key lb.VIPKey) error
	RestoreVIP(v xdp.VIP) error
	ClearVIPEntry(key lb.VIPKey) error
	ClearVIPInfo(num uint32) error
	SyncAddrs() error
	RepairRealSlot(id xdp.RealID) error
	ClearReal(id xdp.RealID) error
	SetConfig(cfg xdp.Config) error

	Flows() iter.Seq2[xdp.Flow, error]
	Tick() (uint32, error) // the datapath's clock, in the units of xdp.Flow.LastTick
	DeleteFlows(match func(xdp.Flow) bool) (int, error)
}

var _ Datapath = (*xdp.Balancer)(nil)
