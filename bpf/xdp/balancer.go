// Package xdp loads lbd's XDP balancer (balancer.bpf.c), attaches it to
// interfaces and gives typed access to its maps: VIPs, reals, Maglev
// rings, configuration, counters and the connection table.
//
// It owns the kernel objects and the bookkeeping that only the datapath
// needs (which VIP number and real index is free), and nothing else: it
// knows neither the desired state (which reals a VIP should have, with what
// weights; that is control's) nor HTTP. A Balancer is safe for concurrent
// use.
//
// # Restart contract
//
// Opened with a pin directory (Options.PinDir, on bpffs: see EnsureBPFFS),
// the maps that hold state are pinned there and every XDP attachment is a
// bpf_link pinned under PinDir/links/<ifname>. Close then only drops this
// process's handles: the program stays attached and keeps forwarding with
// the maps as they are, even if the process is killed. The next Open with
// the same PinDir and limits reuses the pins and recovers the VIPs, reals,
// rings, configuration, counters and connection table (Recovered reports
// it), and Attach swaps the new program into the pinned link atomically,
// so established flows keep their reals across the restart and no packet
// meets an interface without a program. Detach takes lbd off one
// interface; Cleanup removes every pin and attachment (the state is lost).
// Keeping two lbd processes off the same pins is the caller's job.
package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/lbd-dev/lbd/lb"
)

// Limits are the map sizes, fixed when the program is loaded.
type Limits struct {
	MaxVIPs  uint32 // VIPs (each with its own ring and counters)
	MaxReals uint32 // real indices (one per real of each VIP, see AddRealSlot), plus the unused index 0
	MaxFlows uint32 // connection table entries (rounded up to a multiple of the CPUs), an equal share per CPU
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
	objs      balancerObjects
	limits    Limits
	ringSpec  *ebpf.MapSpec // template for the per-VIP rings
	pinDir    string        // "" when nothing is pinned
	recovered bool

	mu      sync.Mutex
	closed  bool
	vips    map[lb.VIPKey]vipEntry
	vipNums []bool // vipNums[n]: number n is taken
	lastGen uint32 // the generation given to the latest VIP
	reals   map[netip.Addr]RealID
	slots   map[RealID]netip.Addr // every defined real index
	realIDs []bool                // realIDs[i]: index i is taken (0 always is)
	// nextReal is where AddRealSlot looks for a free index first.
	nextReal uint32
	filter   []uint64      // what vip_filter holds
	tick     time.Duration // the kernel's tick: one jiffy, the datapath's clock unit
	hz       uint32
	links    map[string]*attachment
	// ringMaps are the open ring buffers by outer slot.
	ringMaps map[uint32]*ebpf.Map
	// ringScratch is writeRing's copy buffer (b.mu).
	ringScratch []byte
}

// Options for Open.
type Options struct {
	Limits Limits
	// PinDir is a directory on a bpf filesystem (see EnsureBPFFS), e.g.
	// /sys/fs/bpf/lbd, where the maps and XDP attachments are pinned so
	// that they outlive the process. "" pins nothing: everything goes
	// away with Close (tests, one-shot tools).
	PinDir string
}

// Load loads the balancer into the kernel with the given map sizes and a
// default configuration, pinning nothing. Nothing is attached to an
// interface yet. It is Open without a PinDir.
func Load(limits Limits) (*Balancer, error) {
	return Open(Options{Limits: limits})
}

// Open loads the balancer program. Without a PinDir its maps are new and
// get the default configuration, as with Load. With a PinDir the maps
// that hold state (see pinnedMaps) are pinned there by name: on the first
// run they are created and pinned; when a previous run left them, they
// are reused, with everything in them (VIPs, reals, rings, configuration,
// counters and the connection table), and the balancer's bookkeeping is
// recovered from them (Recovered reports true). Pins made with other
// limits or by an lbd with another map layout are refused with an error
// that says what to do, and are left as they are.
//
// Only one Balancer of a process may use a PinDir at a time; keeping a
// second lbd process away is the caller's job (a lock file).
func Open(opts Options) (*Balancer, error) {
	limits := opts.Limits
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
		balancerMapRings:     2 * limits.MaxVIPs, // two ring buffers per VIP
		balancerMapVipStats:  limits.MaxVIPs,
		balancerMapReals:     limits.MaxReals,
		balancerMapRealStats: limits.MaxReals,
	} {
		spec.Maps[name].MaxEntries = size
	}
	if err := connsSpec(spec, limits); err != nil {
		return nil, err
	}
	b := &Balancer{
		limits:   limits,
		ringSpec: spec.Maps[balancerMapRings].InnerMap.Copy(),
		vips:     make(map[lb.VIPKey]vipEntry),
		vipNums:  make([]bool, limits.MaxVIPs),
		reals:    make(map[netip.Addr]RealID),
		slots:    make(map[RealID]netip.Addr),
		realIDs:  make([]bool, limits.MaxReals),
		links:    make(map[string]*attachment),
	}
	b.realIDs[0] = true
	b.filter = make([]uint64, spec.Maps[balancerMapVipFilter].MaxEntries)
	b.ringMaps = map[uint32]*ebpf.Map{}
	if b.tick, b.hz, err = kernelTick(); err != nil {
		return nil, err
	}

	var collOpts *ebpf.CollectionOptions
	fresh := true
	if opts.PinDir != "" {
		dir, err := claimPinDir(opts.PinDir)
		if err != nil {
			return nil, err
		}
		b.pinDir = dir
		if err := migrateLegacyFlows(spec, dir); err != nil {
			releasePinDir(dir)
			return nil, err
		}
		if fresh, err = checkPins(spec, dir, limits); err != nil {
			releasePinDir(dir)
			return nil, err
		}
		for _, name := range pinnedMaps {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		collOpts = &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	}

	if err := spec.LoadAndAssign(&b.objs, collOpts); err != nil {
		if b.pinDir != "" {
			if fresh {
				removeMapPins(b.pinDir) // leave no half-made pins behind
			}
			releasePinDir(b.pinDir)
		}
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load balancer program: %+v", verr)
		}
		return nil, fmt.Errorf("load balancer program: %w", err)
	}
	if fresh {
		err = b.SetConfig(DefaultConfig())
	} else {
		b.recovered = true
		err = b.recover()
	}
	if err != nil {
		if fresh && b.pinDir != "" {
			removeMapPins(b.pinDir)
		}
		b.Close()
		return nil, err
	}
	return b, nil
}

// Recovered reports whether Open found the maps pinned by an earlier run
// and took its state from them.
func (b *Balancer) Recovered() bool { return b.recovered }

// PinDir returns the directory the maps are pinned in ("" if none).
func (b *Balancer) PinDir() string { return b.pinDir }

// Close releases the process's handles on the program, maps and links.
//
// The restart contract: what is pinned stays. With a PinDir the maps keep
// their contents and a pinned XDP link keeps the program attached, so
// packets keep flowing with the state as it was while lbd is down, and the
// next Open + Attach takes over without a gap. Only Detach and Cleanup
// take traffic off an interface. Without a PinDir Close frees everything
// and detaches the program (once nothing else holds them).
// Close may be called more than once.
func (b *Balancer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	for slot, m := range b.ringMaps {
		m.Close()
		delete(b.ringMaps, slot)
	}
	for ifname, a := range b.links {
		if err := a.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close XDP link of %s: %w", ifname, err))
		}
		delete(b.links, ifname)
	}
	errs = append(errs, b.objs.Close())
	if b.pinDir != "" {
		releasePinDir(b.pinDir)
	}
	return errors.Join(errs...)
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
