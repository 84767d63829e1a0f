// Package tc holds lbd's TC programs and attaches them to interfaces.
//
// Decap (decap.bpf.c) runs on a real server's ingress and removes the
// outer header of what the XDP balancer sends (IP-in-IP in every family
// combination, and GUE variant 1), but only for packets to the VIPs the
// real serves; everything else goes on untouched. HCEncap
// (hcencap.bpf.c) runs on the LB node's egress and sends health-check
// probes to a real through the same tunnel. Attach puts any TC program on
// an interface with TCX where the kernel has it (>= 6.6) and with a
// clsact qdisc and a cls_bpf filter otherwise; Pin, Attached and
// DetachProgram let a one-shot command leave it running and remove it
// later.
//
// The package owns these kernel objects and nothing else: which VIPs a
// real serves is the caller's (control's, or `lbd real setup`'s) decision.
package tc

import (
	"github.com/lbd-dev/lbd/lb"

	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Errors callers may test for with errors.Is.
var (
	ErrNotFound = errors.New("not found")
)

// DefaultGUEPort is the UDP port of GUE tunnels (the balancer's default too).
const DefaultGUEPort = 6080

// Options are fixed when the program is loaded, except GUEPort (see SetGUEPort).
type Options struct {
	// MaxVIPs is the size of the VIP set (IPv4 and IPv6 together).
	MaxVIPs uint32
	// GUEPort is the UDP destination port of GUE packets; 0 turns GUE off
	// (UDP is then never decapsulated).
	GUEPort uint16
	// PinDir, if set, is a bpffs directory (e.g. /sys/fs/bpf/lbd/decap, not
	// shared with other programs' maps) where the maps are pinned by name,
	// or reused if already pinned there: a later process then changes the
	// same VIP set and reads the same counters. Load fails if the pinned
	// maps do not match (e.g. another MaxVIPs): remove the directory.
	PinDir string
}

// DefaultOptions returns 1024 VIPs and GUE on port 6080.
func DefaultOptions() Options {
	return Options{MaxVIPs: 1024, GUEPort: DefaultGUEPort}
}

// Decap is the loaded decapsulation program with its maps. It is safe for
// concurrent use.
type Decap struct {
	objs decapObjects
	mu   sync.Mutex // serialises SetVIPs against single changes
}

// LoadDecap loads the program. Nothing is attached yet: pass Program() to
// Attach with the Ingress direction.
func LoadDecap(opts Options) (*Decap, error) {
	if opts.MaxVIPs < 1 || opts.MaxVIPs > 1<<20 {
		return nil, fmt.Errorf("max VIPs %d: must be between 1 and 1048576", opts.MaxVIPs)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit (needed on kernels before 5.11): %w", err)
	}
	spec, err := loadDecap()
	if err != nil {
		return nil, err
	}
	spec.Maps[decapMapDecapVips].MaxEntries = opts.MaxVIPs
	var copts *ebpf.CollectionOptions
	if opts.PinDir != "" {
		if err := os.MkdirAll(opts.PinDir, 0o700); err != nil {
			return nil, fmt.Errorf("decap pin directory: %w (is bpffs mounted at /sys/fs/bpf?)", err)
		}
		for _, name := range []string{decapMapDecapVips, decapMapConfig, decapMapStats} {
			spec.Maps[name].Pinning = ebpf.PinByName
		}
		copts = &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}}
	}
	d := &Decap{}
	if err := spec.LoadAndAssign(&d.objs, copts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load decap program: %+v", verr)
		}
		return nil, fmt.Errorf("load decap program: %w", err)
	}
	if err := d.SetGUEPort(opts.GUEPort); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close releases the program and maps (an attachment keeps the program alive
// until it is detached).
func (d *Decap) Close() error { return d.objs.Close() }

// Program returns the TC program, for Attach and for test runs.
func (d *Decap) Program() *ebpf.Program { return d.objs.LbdDecap }

// SetGUEPort changes the UDP port of GUE packets at once; 0 turns GUE off.
func (d *Decap) SetGUEPort(port uint16) error {
	cfg := decapDecapConfig{GuePort: htons(port)}
	if err := d.objs.Config.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set GUE port %d: %w", port, err)
	}
	return nil
}

// AddVIP lets packets to vip be decapsulated. Adding a VIP twice is fine.
func (d *Decap) AddVIP(vip netip.Addr) error {
	key, err := vipKey(vip)
	if err != nil {
		return err
	}
	if err := d.objs.DecapVips.Update(&key, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add decap VIP %s: %w (is the VIP set full? raise Options.MaxVIPs)", vip, err)
	}
	return nil
}

// RemoveVIP stops decapsulating packets to vip; ErrNotFound if it was not set.
func (d *Decap) RemoveVIP(vip netip.Addr) error {
	key, err := vipKey(vip)
	if err != nil {
		return err
	}
	if err := d.objs.DecapVips.Delete(&key); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove decap VIP %s: %w", vip, ErrNotFound)
		}
		return fmt.Errorf("remove decap VIP %s: %w", vip, err)
	}
	return nil
}

// SetVIPs makes the VIP set exactly vips: new VIPs are added first, then
// the others removed, so a VIP in both the old and new set never stops
// being decapsulated.
func (d *Decap) SetVIPs(vips []netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		if err := d.AddVIP(v); err != nil {
			return err
		}
		want[v.Unmap()] = true
	}
	have, err := d.VIPs()
	if err != nil {
		return err
	}
	for _, v := range have {
		if !want[v] {
			if err := d.RemoveVIP(v); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// VIPs returns the VIP set, sorted.
func (d *Decap) VIPs() ([]netip.Addr, error) {
	var (
		key decapAddrKey
		val uint8
		out []netip.Addr
	)
	it := d.objs.DecapVips.Iterate()
	for it.Next(&key, &val) {
		a, err := keyAddr(key)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list decap VIPs: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, nil
}

// Verdict is a TC program's return code.
type Verdict int32

// The verdicts of the decapsulation program.
const (
	// VerdictNext (TC_ACT_UNSPEC): not ours; the next program, then the stack, decides.
	VerdictNext Verdict = -1
	// VerdictOK (TC_ACT_OK): hand the (decapsulated) packet to the stack.
	VerdictOK Verdict = 0
	// VerdictShot (TC_ACT_SHOT): drop.
	VerdictShot Verdict = 2
)

func (v Verdict) String() string {
	switch v {
	case VerdictNext:
		return "TC_ACT_UNSPEC"
	case VerdictOK:
		return "TC_ACT_OK"
	case VerdictShot:
		return "TC_ACT_SHOT"
	}
	return fmt.Sprintf("TC_ACT_%d", int32(v))
}

// Simulate runs one frame (Ethernet header first) through the program with
// BPF_PROG_TEST_RUN and returns the verdict and the frame as the program
// left it. Counters change as for a received frame.
func (d *Decap) Simulate(frame []byte) (Verdict, []byte, error) {
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := d.objs.LbdDecap.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("test run of decap: %w", err)
	}
	return Verdict(int32(ret)), opts.DataOut, nil
}

// Address families as the datapath stores them (lbd_family in lbd_types.h).
const (
	familyIPv4 = 4
	familyIPv6 = 6
)

func vipKey(a netip.Addr) (decapAddrKey, error) {
	if err := checkAddr("decap VIP", a); err != nil {
		return decapAddrKey{}, err
	}
	w, fam := addrWords(a)
	return decapAddrKey{Addr: w, Family: fam}, nil
}

// checkAddr rejects what cannot be a VIP or real address.
func checkAddr(what string, a netip.Addr) error {
	if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("%s %q: must be a unicast IPv4 or IPv6 address without zone", what, a)
	}
	return nil
}

// addrWords returns an address as the programs store it (see lb.AddrWords).
func addrWords(a netip.Addr) (w [4]uint32, family uint32) { return lb.AddrWords(a) }

func keyAddr(k decapAddrKey) (netip.Addr, error) {
	a, err := lb.WordsAddr(k.Addr, k.Family)
	if err != nil {
		return a, fmt.Errorf("decap_vips: %w", err)
	}
	return a, nil
}

// htons converts a port to the value whose memory bytes are in network order.
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}
