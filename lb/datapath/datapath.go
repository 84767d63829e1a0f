// Package datapath holds the words the controller and the XDP balancer
// share: a real's index, an installed VIP, the counters, a flow, the
// run-time configuration, what the kernel maps hold and the maps' names.
// control speaks of the datapath in these words (its Datapath interface)
// and bpf/xdp implements them (its names are aliases of these), so that
// control depends on no bpf/ package. Like lb, it is a leaf: it imports
// lb and nothing else of the module (scripts/check-layers.sh checks this).
package datapath

import (
	"errors"
	"net/netip"

	"github.com/lbd-dev/lbd/lb"
)

// Errors callers may test for with errors.Is.
var (
	ErrLimit    = errors.New("limit reached")
	ErrExists   = errors.New("already exists")
	ErrNotFound = errors.New("not found")
	// ErrRingUnreadable is returned (wrapped, with the kernel's error) by
	// Ring for a live ring buffer this process did not create and may not
	// open: an inner map of the pinned rings array is reachable only by
	// its ID, and BPF_MAP_GET_FD_BY_ID needs CAP_SYS_ADMIN. Its contents
	// are unknown, not wrong: the caller rewrites the ring it wants
	// (SetRing creates the idle buffer anew, so the result is readable).
	ErrRingUnreadable = errors.New("ring buffer not readable without CAP_SYS_ADMIN")
)

// RealID is a real's index in the datapath: what ring slots hold. 0 is
// never a real.
type RealID uint32

// VIP is an installed VIP as the datapath has it.
type VIP struct {
	Key      lb.VIPKey
	Num      uint32 // index of its ring and counters
	Flags    lb.VIPFlags
	RingSize uint32 // 0 until SetRing
	Buf      uint32 // the live ring buffer, 0 or 1
	// Gen is the generation the number was given with: it tells this VIP
	// from earlier ones that had its number, as a connection table entry
	// is the VIP's only if its VIPGen is Gen (see RestoreVIP).
	Gen uint32
}

// The names of the maps drift is reported by: the kernel maps themselves
// (bpf/xdp checks them against the generated names).
const (
	MapVIPs      = "vips"
	MapVIPInfo   = "vip_info"
	MapVIPAddrs  = "vip_addrs"
	MapVIPFilter = "vip_filter"
	MapReals     = "reals"
	MapRings     = "rings"
	MapConfig    = "config"
)

// VIPInfo is a vip_info entry as the kernel holds it.
type VIPInfo struct {
	Flags    lb.VIPFlags
	RingSize uint32 // slots of the live ring
	Buf      uint32 // the live ring buffer, 0 or 1
	Gen      uint32 // 0: the number is free
}

// AddrFlags are a vip_addrs entry: which port-less VIPs the address has
// (enum lbd_addr_flag in lbd_types.h; bpf/xdp checks the values).
type AddrFlags uint32

// The address flags.
const (
	AddrPortlessTCP AddrFlags = 1 << 0
	AddrPortlessUDP AddrFlags = 1 << 1
)

// AddrFlagsOf is what vip_addrs must hold for an address used by the VIPs
// keys (those of other addresses are ignored).
func AddrFlagsOf(addr netip.Addr, keys []lb.VIPKey) AddrFlags {
	var f AddrFlags
	for _, k := range keys {
		if k.Addr != addr || k.Port != 0 {
			continue
		}
		if k.Proto == lb.TCP {
			f |= AddrPortlessTCP
		} else {
			f |= AddrPortlessUDP
		}
	}
	return f
}

// MapState is what the kernel maps hold, read back entry by entry (not
// the balancer's bookkeeping of what it wrote): drift repair compares it
// with what they should hold.
type MapState struct {
	VIPs     map[lb.VIPKey]uint32     // vips: key → number
	VIPInfo  map[uint32]VIPInfo       // vip_info entries with a generation or flags (in use, or left by someone)
	VIPAddrs map[netip.Addr]AddrFlags // vip_addrs
	Filter   []uint64                 // vip_filter, word by word
	Reals    map[RealID]netip.Addr    // reals: the defined entries
	// BadEntries are entries no lbd writes (an unknown address family,
	// an index out of range), by map name, for the caller to report and
	// clear with ClearVIPEntry / ClearReal.
	BadVIPs  []lb.VIPKey
	BadReals []RealID
	Config   Config
	// ConfigErr says why the config map holds no valid configuration.
	ConfigErr error
}

// TableUsage is the fill of the connection table.
type TableUsage struct {
	Entries  int // flows in the table
	Capacity int // the table's max_entries
	// CPUs share the table; each CPU's LRU lists have Capacity/CPUs
	// entries (BPF_F_NO_COMMON_LRU): a CPU that has made that many
	// entries evicts its least recently used one for a new flow even
	// while other CPUs' shares have room. Which CPU made an entry cannot
	// be read back, so there is no count per CPU.
	CPUs int
}
