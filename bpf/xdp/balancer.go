// Package xdp loads lbd's XDP balancer (balancer.bpf.c) and gives typed
// access to its maps: VIPs, reals, Maglev rings, configuration, counters
// and the connection table.
//
// It owns the kernel objects and the bookkeeping that only the datapath
// needs (which VIP number and real index is free), and nothing else: it
// knows neither the desired state (which reals a VIP should have, with what
// weights; that is control's) nor HTTP. A Balancer is safe for concurrent
// use.
package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
)

// Errors callers may test for with errors.Is.
var (
	ErrLimit    = errors.New("limit reached")
	ErrExists   = errors.New("already exists")
	ErrNotFound = errors.New("not found")
)

// Limits are the map sizes, fixed when the program is loaded.
type Limits struct {
	MaxVIPs  uint32 // VIPs (each with its own ring and counters)
	MaxReals uint32 // distinct real addresses across all VIPs, plus the unused index 0
	MaxFlows uint32 // connection table entries, shared by all CPUs' LRU lists
}

// DefaultLimits are Katran's defaults for VIPs and reals, and a 1M-entry table.
func DefaultLimits() Limits {
	return Limits{MaxVIPs: 512, MaxReals: 4096, MaxFlows: 1 << 20}
}

func (l Limits) validate() error {
	if l.MaxVIPs < 1 || l.MaxVIPs > 1<<16 {
		return fmt.Errorf("max VIPs %d: must be between 1 and 65536", l.MaxVIPs)
	}
	if l.MaxReals < 2 || l.MaxReals > 1<<20 {
		return fmt.Errorf("max reals %d: must be between 2 and 1048576 (index 0 is reserved)", l.MaxReals)
	}
	if l.MaxFlows < 1 {
		return fmt.Errorf("max flows %d: must be at least 1", l.MaxFlows)
	}
	return nil
}

// Balancer is a loaded balancer program with its maps.
type Balancer struct {
	objs     balancerObjects
	limits   Limits
	ringSpec *ebpf.MapSpec // template for the per-VIP rings

	mu      sync.Mutex
	vips    map[VIPKey]vipEntry
	vipNums []bool // vipNums[n]: number n is taken
	lastGen uint32 // the generation given to the latest VIP
	reals   map[netip.Addr]RealID
	realIDs []bool // realIDs[i]: index i is taken (0 always is)
}

// Load loads the balancer into the kernel with the given map sizes and a
// default configuration. Nothing is attached to an interface yet.
func Load(limits Limits) (*Balancer, error) {
	if err := limits.validate(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit (needed on kernels before 5.11): %w", err)
	}
	spec, err := loadBalancer()
	if err != nil {
		return nil, err
	}
	for name, size := range map[string]uint32{
		balancerMapVips:      limits.MaxVIPs,
		balancerMapVipInfo:   limits.MaxVIPs,
		balancerMapVipAddrs:  limits.MaxVIPs,
		balancerMapRings:     limits.MaxVIPs,
		balancerMapVipStats:  limits.MaxVIPs,
		balancerMapReals:     limits.MaxReals,
		balancerMapRealStats: limits.MaxReals,
		balancerMapFlows:     limits.MaxFlows,
	} {
		spec.Maps[name].MaxEntries = size
	}
	b := &Balancer{
		limits:   limits,
		ringSpec: spec.Maps[balancerMapRings].InnerMap.Copy(),
		vips:     make(map[VIPKey]vipEntry),
		vipNums:  make([]bool, limits.MaxVIPs),
		reals:    make(map[netip.Addr]RealID),
		realIDs:  make([]bool, limits.MaxReals),
	}
	b.realIDs[0] = true
	if err := setClock(spec); err != nil {
		return nil, err
	}
	if err := spec.LoadAndAssign(&b.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load balancer program: %+v", verr)
		}
		return nil, fmt.Errorf("load balancer program: %w", err)
	}
	if err := b.SetConfig(DefaultConfig()); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// setClock tells the program whether it may use the cheap coarse clock.
func setClock(spec *ebpf.CollectionSpec) error {
	coarse := uint32(0)
	if features.HaveProgramHelper(ebpf.XDP, asm.FnKtimeGetCoarseNs) == nil {
		coarse = 1
	}
	v, ok := spec.Variables["lbd_coarse_clock"]
	if !ok {
		return fmt.Errorf("balancer object has no lbd_coarse_clock variable")
	}
	if err := v.Set(coarse); err != nil {
		return fmt.Errorf("set lbd_coarse_clock: %w", err)
	}
	return nil
}

// Close releases the program and maps (the kernel frees them once nothing
// else, such as an attachment or a pin, holds them).
func (b *Balancer) Close() error {
	return b.objs.Close()
}

// Limits returns the map sizes the balancer was loaded with.
func (b *Balancer) Limits() Limits { return b.limits }

// Program returns the XDP program, for attaching and for test runs.
func (b *Balancer) Program() *ebpf.Program { return b.objs.LbdBalancer }

// Simulate runs one frame through the program (BPF_PROG_TEST_RUN) and
// returns the XDP action and the frame as the program left it. The run is
// real: counters and the connection table change as for a received frame.
func (b *Balancer) Simulate(frame []byte) (Action, []byte, error) {
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := b.objs.LbdBalancer.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("test run of balancer: %w", err)
	}
	return Action(ret), opts.DataOut, nil
}
