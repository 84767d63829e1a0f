package control

import (
	"iter"
	"net/netip"

	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// Datapath is what the controller needs of the XDP balancer, in the words
// of lb/datapath: control imports no bpf/ package. *xdp.Balancer
// implements it (cmd/lbd loads it and hands it to New; datapath_test.go
// checks it implements Datapath); tests use an in-memory fake that can be
// made to fail.
type Datapath interface {
	AddVIP(key lb.VIPKey, flags lb.VIPFlags) error
	SetVIPFlags(key lb.VIPKey, flags lb.VIPFlags) error
	RemoveVIP(key lb.VIPKey) error
	VIPs() []datapath.VIP
	LookupVIP(key lb.VIPKey) (datapath.VIP, error)
	SetRing(key lb.VIPKey, ring []uint32) error
	Ring(key lb.VIPKey) ([]uint32, error)

	// Each (VIP, real) pair has its own real index (slot), so that the
	// datapath's per-index counters are per pair.
	// AddRealSlots defines a new index for each address (ids[i] for
	// addrs[i]), all or none.
	AddRealSlots(addrs []netip.Addr) ([]datapath.RealID, error)
	RemoveRealSlots(ids []datapath.RealID) (map[datapath.RealID]datapath.RealStats, error)
	RealSlots() map[datapath.RealID]netip.Addr

	GlobalStats() (datapath.GlobalStats, error)
	VIPStats(key lb.VIPKey) (datapath.VIPStats, error)
	RealStats(id datapath.RealID) (datapath.RealStats, error)
	ResetVIPStats(key lb.VIPKey) error
	ResetRealStats(id datapath.RealID) error
	FlowTableUsage() (datapath.TableUsage, error)

	// Readers of the kernel maps and repairs from the datapath's
	// bookkeeping, for drift repair (see Reconcile).
	ReadMaps() (*datapath.MapState, error)
	FilterOf(addrs []netip.Addr) []uint64
	RepairVIP(key lb.VIPKey) error
	RestoreVIP(v datapath.VIP) error
	ClearVIPEntry(key lb.VIPKey) error
	ClearVIPInfo(num uint32) error
	SyncAddrs() error
	RepairRealSlot(id datapath.RealID) error
	ClearReal(id datapath.RealID) error
	SetConfig(cfg datapath.Config) error

	Flows() iter.Seq2[datapath.Flow, error]
	Tick() (uint32, error) // the datapath's clock, in the units of datapath.Flow.LastTick
	DeleteFlows(match func(datapath.Flow) bool) (int, error)
}
