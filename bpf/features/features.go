// Package features reports what the running kernel offers lbd (BTF,
// kprobes, TCX, ring buffers, tunnel and lab link types, XDP on veth, the
// coarse clock helper) and which mechanism lbd uses for each job on it
// (TC attach, tracer events and attach, real-side decapsulation, lab
// reals). It creates nothing that outlives Probe: link checks run in a
// throwaway network namespace.
//
// It is a report generator, not the place where the choices are made.
// The packages that attach things decide by trying, on the very device
// and at the moment they need the mechanism, and fall back in the same
// order as decide below: tc.Attach (ModeAuto: TCX, else clsact),
// kprobe.Tracer (ModeAuto: kprobes, else tracepoints; ring buffer, else
// perf), realsetup.Setup (DecapAuto: the kernel's ipip and ip6tnl, else
// lbd's TC program) and the lab (IPVLAN, else macvlan, else veth). A
// probe on a throwaway veth could not promise what a real interface
// accepts, and a trial that fails still has to fall back. The two cheap
// facts those packages and the report share live here once:
// KernelRelease, KernelAtLeast (bpf/xdp lists flows with batch lookups
// from 6.1) and HaveKprobes.
//
// The kernel matrix (make test-kernels) runs this package's tests on every
// kernel lbd supports and asserts the report per kernel; docs/kernels.md
// is generated from those reports.
package features

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	ebpffeatures "github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Check is the outcome of one probe: whether the kernel has the feature,
// and why not (the error the kernel gave) when it does not.
type Check struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func checkErr(err error) Check {
	if err != nil {
		return Check{Detail: strings.ReplaceAll(err.Error(), "\n", " ")}
	}
	return Check{OK: true}
}

// Mechanisms lbd chooses between. The zero value of each choice ("") means
// the kernel offers none of them.
const (
	TCAttachTCX    = "tcx"    // bpf_link TCX (>= 6.6)
	TCAttachClsact = "clsact" // clsact qdisc + cls_bpf direct-action filter

	EventsRingBuf = "ringbuf" // BPF_MAP_TYPE_RINGBUF (>= 5.8)
	EventsPerf    = "perf"    // perf event array

	TracerKprobe     = "kprobe"
	TracerTracepoint = "tracepoint" // sock:inet_sock_set_state and friends

	DecapKernelIPIP = "kernel-ipip" // the kernel's ipip/ip6tnl tunnel on the real
	DecapBPFTC      = "bpf-tc"      // lbd's TC ingress decapsulation program

	LabRealsIPVLAN  = "ipvlan"
	LabRealsMacvlan = "macvlan"

	// ClockJiffies: the balancer keeps time in jiffies (bpf_jiffies64,
	// every kernel lbd supports); the coarse ktime helper is probed only
	// as a fact of the kernel.
	ClockJiffies = "jiffies"
)

// Report is what the running kernel has, and what lbd chooses on it.
type Report struct {
	Kernel  string `json:"kernel"`  // uname -r
	Version string `json:"version"` // major.minor, e.g. "6.1"

	BTF           Check `json:"btf"`             // /sys/kernel/btf/vmlinux, parsed
	Kprobes       Check `json:"kprobes"`         // a kprobe attaches to tcp_v4_connect
	Tracepoints   Check `json:"tracepoints"`     // sock:inet_sock_set_state attaches
	RingBuf       Check `json:"ringbuf"`         // ring buffer map type
	CoarseClock   Check `json:"coarse_clock"`    // bpf_ktime_get_coarse_ns for XDP
	XDPNativeVeth Check `json:"xdp_native_veth"` // XDP in driver mode on veth
	TCX           Check `json:"tcx"`             // TCX ingress link on veth
	Clsact        Check `json:"clsact"`          // clsact + cls_bpf on veth
	IPVLAN        Check `json:"ipvlan"`          // ipvlan L2 link on veth
	Macvlan       Check `json:"macvlan"`         // macvlan link on veth
	IPIP          Check `json:"ipip"`            // ipip collect_md ("external") link
	IP6Tnl        Check `json:"ip6tnl"`          // ip6tnl collect_md link
	FOU           Check `json:"fou"`             // GUE receive port (fou genl family)

	TCAttach     string `json:"tc_attach"`
	Events       string `json:"events"`
	TracerAttach string `json:"tracer_attach"`
	Decap        string `json:"decap"`
	LabReals     string `json:"lab_reals"`
	Clock        string `json:"clock"`
}

// Probe checks the running kernel. It needs root (CAP_BPF, CAP_NET_ADMIN,
// CAP_SYS_ADMIN for the network namespace); an error means nothing could
// be probed, while a missing feature is a Check with OK false.
func Probe() (Report, error) {
	var r Report
	r.Kernel = KernelRelease()
	r.Version = majorMinor(r.Kernel)

	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return r, fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := ebpffeatures.HaveProgramType(ebpf.XDP); err != nil {
		return r, fmt.Errorf("cannot load a BPF program (run as root on Linux >= 5.10): %w", err)
	}

	r.BTF = checkErr(probeBTF())
	r.Kprobes = checkErr(probeKprobe())
	r.Tracepoints = checkErr(probeTracepoint())
	r.RingBuf = checkErr(ebpffeatures.HaveMapType(ebpf.RingBuf))
	r.CoarseClock = checkErr(ebpffeatures.HaveProgramHelper(ebpf.XDP, asm.FnKtimeGetCoarseNs))
	if err := probeLinks(&r); err != nil {
		return r, err
	}
	r.decide()
	return r, nil
}

// decide fills in the choices from the checks alone.
func (r *Report) decide() {
	pick := func(options ...any) string {
		for i := 0; i+1 < len(options); i += 2 {
			if options[i].(Check).OK {
				return options[i+1].(string)
			}
		}
		return ""
	}
	r.TCAttach = pick(r.TCX, TCAttachTCX, r.Clsact, TCAttachClsact)
	r.Events = pick(r.RingBuf, EventsRingBuf, Check{OK: true}, EventsPerf)
	r.TracerAttach = pick(r.Kprobes, TracerKprobe, r.Tracepoints, TracerTracepoint)
	// The kernel tunnel needs both families (IPv4-in-IPv4, IPv6-in-IPv6,
	// IPv4-in-IPv6); without either, lbd's TC program decapsulates.
	both := Check{OK: r.IPIP.OK && r.IP6Tnl.OK}
	r.Decap = pick(both, DecapKernelIPIP, Check{OK: r.TCAttach != ""} /* needs a TC hook */, DecapBPFTC)
	r.LabReals = pick(r.IPVLAN, LabRealsIPVLAN, r.Macvlan, LabRealsMacvlan)
	r.Clock = ClockJiffies
}

// majorMinor turns "6.1.0-50-amd64" or "6.12.117+deb13-amd64" into "6.1"
// / "6.12"; "" if the release does not start with two numbers.
func majorMinor(release string) string {
	f := strings.FieldsFunc(release, func(c rune) bool { return c < '0' || c > '9' })
	if len(f) < 2 || !strings.HasPrefix(release, f[0]+"."+f[1]) {
		return ""
	}
	return f[0] + "." + f[1]
}

// AtLeast reports whether the kernel's major.minor is >= major.minor.
func (r Report) AtLeast(major, minor int) bool {
	a, b, ok := strings.Cut(r.Version, ".")
	if !ok {
		return false
	}
	ma, _ := strconv.Atoi(a)
	mi, _ := strconv.Atoi(b)
	return ma > major || ma == major && mi >= minor
}

// Row is one line of the support table: a feature or a choice.
type Row struct {
	Name  string // "kprobes", "TC attach", ...
	Value string // "yes", "no", or the chosen mechanism
	Why   string // the kernel's error when a feature is missing
}

// Rows lists the report in a fixed order, features first, then choices.
func (r Report) Rows() []Row {
	yn := func(name string, c Check) Row {
		if c.OK {
			return Row{name, "yes", ""}
		}
		return Row{name, "no", c.Detail}
	}
	orNone := func(s string) string {
		if s == "" {
			return "none"
		}
		return s
	}
	return []Row{
		yn("BTF (/sys/kernel/btf/vmlinux)", r.BTF),
		yn("kprobes", r.Kprobes),
		yn("tracepoints", r.Tracepoints),
		yn("ring buffer map", r.RingBuf),
		yn("bpf_ktime_get_coarse_ns (not used by lbd)", r.CoarseClock),
		yn("XDP native on veth", r.XDPNativeVeth),
		yn("TCX", r.TCX),
		yn("clsact + cls_bpf", r.Clsact),
		yn("IPVLAN", r.IPVLAN),
		yn("macvlan", r.Macvlan),
		yn("ipip (collect_md)", r.IPIP),
		yn("ip6tnl (collect_md)", r.IP6Tnl),
		yn("FOU/GUE port", r.FOU),
		{"→ TC attach", orNone(r.TCAttach), ""},
		{"→ tracer events", orNone(r.Events), ""},
		{"→ tracer attach", orNone(r.TracerAttach), ""},
		{"→ real-side decap", orNone(r.Decap), ""},
		{"→ lab reals", orNone(r.LabReals), ""},
		{"→ XDP clock", orNone(r.Clock), ""},
	}
}

// WriteJSON writes the report to path (the kernel matrix collects them).
func (r Report) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// ReadJSON reads a report written by WriteJSON.
func ReadJSON(path string) (Report, error) {
	var r Report
	data, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func probeBTF() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return err
	}
	if _, err := btf.LoadKernelSpec(); err != nil {
		return fmt.Errorf("parse kernel BTF: %w", err)
	}
	return nil
}

var errNoSymbol = errors.New("symbol not in /proc/kallsyms")

// KernelRelease is the running kernel's release, as uname -r prints it
// ("unknown" if uname fails).
func KernelRelease() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(uts.Release[:])
}

// KernelAtLeast reports whether the running kernel's major.minor is at
// least major.minor (false if its release cannot be read).
func KernelAtLeast(major, minor int) bool {
	return Report{Version: majorMinor(KernelRelease())}.AtLeast(major, minor)
}

// HaveKprobes reports, cheaply and without privileges, whether the kernel
// has kprobes: the kprobe PMU or tracefs's kprobe_events exists (neither
// does without CONFIG_KPROBES). The tracer asks it at start; the report's
// Kprobes check goes further and attaches one.
func HaveKprobes() bool {
	for _, p := range []string{"/sys/bus/event_source/devices/kprobe/type", "/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}
