package tc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// HCEncap is the LB node's health-check encapsulation program
// (hcencap.bpf.c), for the egress of the interface probes leave by: a
// probe to a VIP whose socket mark (SO_MARK) names a real is sent to that
// real through the same IP-in-IP tunnel a client's packet would take. It
// is safe for concurrent use.
type HCEncap struct {
	objs hcencapObjects
}

// HCConfig is the encapsulation's run-time configuration.
type HCConfig struct {
	// SourceV4 and SourceV6 are the outer sources (this node's addresses);
	// the one of a probe's family must be set.
	SourceV4, SourceV6 netip.Addr
	// GatewayMAC, if set, becomes the destination MAC of encapsulated
	// probes; else the MAC the stack chose for the VIP's route stays.
	GatewayMAC net.HardwareAddr
}

// LoadHCEncap loads the program with room for maxReals probe marks.
func LoadHCEncap(maxReals uint32, cfg HCConfig) (*HCEncap, error) {
	if maxReals < 1 || maxReals > 1<<20 {
		return nil, fmt.Errorf("max reals %d: must be between 1 and 1048576", maxReals)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit (needed on kernels before 5.11): %w", err)
	}
	spec, err := loadHcencap()
	if err != nil {
		return nil, err
	}
	spec.Maps[hcencapMapHcReals].MaxEntries = maxReals
	h := &HCEncap{}
	if err := spec.LoadAndAssign(&h.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load health-check encap program: %+v", verr)
		}
		return nil, fmt.Errorf("load health-check encap program: %w", err)
	}
	if err := h.SetConfig(cfg); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Close releases the program and maps.
func (h *HCEncap) Close() error { return h.objs.Close() }

// Program returns the TC program, for Attach (Egress) and for test runs.
func (h *HCEncap) Program() *ebpf.Program { return h.objs.LbdHcEncap }

// SetConfig changes the configuration at once.
func (h *HCEncap) SetConfig(c HCConfig) error {
	var raw hcencapHcConfig
	if c.SourceV4.IsValid() {
		if !c.SourceV4.Unmap().Is4() {
			return fmt.Errorf("health-check source v4 %s: not an IPv4 address", c.SourceV4)
		}
		w, _ := addrWords(c.SourceV4)
		raw.Src4 = w[0]
	}
	if c.SourceV6.IsValid() {
		if c.SourceV6.Unmap().Is4() {
			return fmt.Errorf("health-check source v6 %s: not an IPv6 address", c.SourceV6)
		}
		raw.Src6, _ = addrWords(c.SourceV6)
	}
	switch len(c.GatewayMAC) {
	case 0:
	case 6:
		copy(raw.GwMac[:], c.GatewayMAC)
	default:
		return fmt.Errorf("gateway MAC %s: must be a 6-byte Ethernet address", c.GatewayMAC)
	}
	if err := h.objs.HcSettings.Update(uint32(0), &raw, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set health-check encap config: %w", err)
	}
	return nil
}

// SetReal makes probes with socket mark send to real (mark 0 is never a probe).
func (h *HCEncap) SetReal(mark uint32, real netip.Addr) error {
	if mark == 0 {
		return fmt.Errorf("probe mark 0: marks start at 1 (0 means unmarked)")
	}
	if err := checkAddr("real", real); err != nil {
		return err
	}
	w, fam := addrWords(real)
	if err := h.objs.HcReals.Update(mark, hcencapRealDef{Addr: w, Family: fam}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set probe mark %d -> real %s: %w", mark, real, err)
	}
	return nil
}

// RemoveReal forgets a probe mark; ErrNotFound if it was not set.
func (h *HCEncap) RemoveReal(mark uint32) error {
	if err := h.objs.HcReals.Delete(mark); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("probe mark %d: %w", mark, ErrNotFound)
		}
		return fmt.Errorf("remove probe mark %d: %w", mark, err)
	}
	return nil
}

// HCStat names one counter of the health-check encapsulation (enum
// lbd_hc_stat in bpf/include/lbd_hcencap.h, same order).
type HCStat int

// The counters; every packet is counted in exactly one.
const (
	HCStatEncap4in4 HCStat = iota
	HCStatEncap6in6
	HCStatPassUnmarked
	HCStatDropFamily
	HCStatDropFailed
	NumHCStats
)

var hcStatNames = [NumHCStats]string{"encap_4in4", "encap_6in6", "pass_unmarked", "drop_family", "drop_failed"}

func (s HCStat) String() string {
	if s < 0 || s >= NumHCStats {
		return fmt.Sprintf("hc-stat-%d", int(s))
	}
	return hcStatNames[s]
}

// HCStats are the counters summed over CPUs.
type HCStats [NumHCStats]uint64

// Stats reads the counters.
func (h *HCEncap) Stats() (HCStats, error) {
	var per []hcencapHcCounters
	if err := h.objs.HcStats.Lookup(uint32(0), &per); err != nil {
		return HCStats{}, fmt.Errorf("read health-check encap stats: %w", err)
	}
	var s HCStats
	for _, c := range per {
		for i := range s {
			s[i] += c.Counters[i]
		}
	}
	return s, nil
}

// Simulate runs one frame through the program (BPF_PROG_TEST_RUN) with
// the given skb mark and returns the verdict and the resulting frame.
func (h *HCEncap) Simulate(frame []byte, mark uint32) (Verdict, []byte, error) {
	ctx := skbContext{Mark: mark}
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256), Context: ctx}
	ret, err := h.objs.LbdHcEncap.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("test run of health-check encap: %w", err)
	}
	return Verdict(int32(ret)), opts.DataOut, nil
}

// skbContext is the start of struct __sk_buff, as BPF_PROG_TEST_RUN takes
// it: of these fields the kernel lets a test set only the mark.
type skbContext struct {
	Len, PktType, Mark uint32
}
