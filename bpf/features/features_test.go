package features

import (
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// expectation is what a known kernel must report. Only the fields that
// differ between kernels are listed; invariants live in TestProbe.
type expectation struct {
	kprobes, tcx, ipvlan, ipip, fou, coarse bool
	tcAttach, tracer, decap, labReals       string
}

// expected is the kernel matrix's table of known kernels, keyed by a
// pattern on uname -r. The Debian rows come from each kernel's config
// (see docs/kernels.md); the host row is the CI machine's kernel, a
// Firecracker build without kprobes and without tunnel/IPVLAN modules.
// A kernel matching no row is checked only against the invariants.
var expected = []struct {
	release *regexp.Regexp
	want    expectation
}{
	{regexp.MustCompile(`^5\.10\..*-amd64$`), expectation{
		kprobes: true, tcx: false, ipvlan: true, ipip: true, fou: true, coarse: false,
		tcAttach: TCAttachClsact, tracer: TracerKprobe, decap: DecapKernelIPIP, labReals: LabRealsIPVLAN}},
	{regexp.MustCompile(`^6\.1\..*-amd64$`), expectation{
		kprobes: true, tcx: false, ipvlan: true, ipip: true, fou: true, coarse: true,
		tcAttach: TCAttachClsact, tracer: TracerKprobe, decap: DecapKernelIPIP, labReals: LabRealsIPVLAN}},
	{regexp.MustCompile(`^6\.12\..*-amd64$`), expectation{
		kprobes: true, tcx: true, ipvlan: true, ipip: true, fou: true, coarse: true,
		tcAttach: TCAttachTCX, tracer: TracerKprobe, decap: DecapKernelIPIP, labReals: LabRealsIPVLAN}},
	{regexp.MustCompile(`^7\.[0-9]+\..*-amd64$`), expectation{
		kprobes: true, tcx: true, ipvlan: true, ipip: true, fou: true, coarse: true,
		tcAttach: TCAttachTCX, tracer: TracerKprobe, decap: DecapKernelIPIP, labReals: LabRealsIPVLAN}},
	{regexp.MustCompile(`^6\.18\..*-fc-`), expectation{
		kprobes: false, tcx: true, ipvlan: false, ipip: false, fou: false, coarse: true,
		tcAttach: TCAttachTCX, tracer: TracerTracepoint, decap: DecapBPFTC, labReals: LabRealsMacvlan}},
}

func TestProbe(t *testing.T) {
	privtest.Require(t)
	r, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range r.Rows() {
		t.Logf("%-32s %-12s %s", row.Name, row.Value, row.Why)
	}
	// The kernel matrix collects every kernel's report for docs/kernels.md.
	if path := os.Getenv("LBD_FEATURES_JSON"); path != "" {
		if err := r.WriteJSON(path); err != nil {
			t.Fatal(err)
		}
	}

	// Invariants: lbd's minimum kernel (5.10 with BTF) has all of these.
	for name, c := range map[string]Check{
		"BTF": r.BTF, "tracepoints": r.Tracepoints, "ring buffer": r.RingBuf,
		"XDP native on veth": r.XDPNativeVeth, "clsact": r.Clsact, "macvlan": r.Macvlan,
	} {
		if !c.OK {
			t.Errorf("%s: missing on %s (%s); lbd needs it on every supported kernel", name, r.Kernel, c.Detail)
		}
	}
	if r.TCX.OK != r.AtLeast(6, 6) {
		t.Errorf("TCX = %v on %s, want it exactly from 6.6", r.TCX.OK, r.Kernel)
	}
	if r.CoarseClock.OK != r.AtLeast(5, 11) {
		t.Errorf("bpf_ktime_get_coarse_ns = %v on %s, want it exactly from 5.11", r.CoarseClock.OK, r.Kernel)
	}
	if r.Events != EventsRingBuf || r.TCAttach == "" || r.TracerAttach == "" || r.Decap == "" || r.LabReals == "" {
		t.Errorf("a choice is missing: %+v", r)
	}

	for _, e := range expected {
		if !e.release.MatchString(r.Kernel) {
			continue
		}
		w := e.want
		got := expectation{
			kprobes: r.Kprobes.OK, tcx: r.TCX.OK, ipvlan: r.IPVLAN.OK, ipip: r.IPIP.OK && r.IP6Tnl.OK,
			fou: r.FOU.OK, coarse: r.CoarseClock.OK,
			tcAttach: r.TCAttach, tracer: r.TracerAttach, decap: r.Decap, labReals: r.LabReals,
		}
		if got != w {
			t.Errorf("kernel %s (row %s):\n got  %+v\n want %+v", r.Kernel, e.release, got, w)
		}
		return
	}
	t.Logf("kernel %s has no row in the expectation table: only the invariants were checked", r.Kernel)
}

func TestDecide(t *testing.T) {
	yes, no := Check{OK: true}, Check{Detail: "operation not supported"}
	for _, tc := range []struct {
		name string
		in   Report
		want [6]string // TC attach, events, tracer, decap, lab reals, clock
	}{
		{"everything", Report{TCX: yes, Clsact: yes, RingBuf: yes, Kprobes: yes, Tracepoints: yes, IPIP: yes, IP6Tnl: yes, IPVLAN: yes, Macvlan: yes, CoarseClock: yes},
			[6]string{TCAttachTCX, EventsRingBuf, TracerKprobe, DecapKernelIPIP, LabRealsIPVLAN, ClockJiffies}},
		{"5.10-like", Report{TCX: no, Clsact: yes, RingBuf: yes, Kprobes: yes, Tracepoints: yes, IPIP: yes, IP6Tnl: yes, IPVLAN: yes, Macvlan: yes, CoarseClock: no},
			[6]string{TCAttachClsact, EventsRingBuf, TracerKprobe, DecapKernelIPIP, LabRealsIPVLAN, ClockJiffies}},
		{"firecracker-like", Report{TCX: yes, Clsact: yes, RingBuf: yes, Kprobes: no, Tracepoints: yes, IPIP: no, IP6Tnl: no, IPVLAN: no, Macvlan: yes, CoarseClock: yes},
			[6]string{TCAttachTCX, EventsRingBuf, TracerTracepoint, DecapBPFTC, LabRealsMacvlan, ClockJiffies}},
		{"ipip without ip6tnl", Report{TCX: no, Clsact: yes, RingBuf: no, Kprobes: no, Tracepoints: no, IPIP: yes, IP6Tnl: no, IPVLAN: no, Macvlan: no},
			[6]string{TCAttachClsact, EventsPerf, "", DecapBPFTC, "", ClockJiffies}},
		{"nothing", Report{}, [6]string{"", EventsPerf, "", "", "", ClockJiffies}},
	} {
		r := tc.in
		r.decide()
		got := [6]string{r.TCAttach, r.Events, r.TracerAttach, r.Decap, r.LabReals, r.Clock}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestMajorMinor(t *testing.T) {
	for in, want := range map[string]string{
		"6.1.0-50-amd64": "6.1", "6.12.117+deb13-amd64": "6.12", "7.3.4+deb13-amd64": "7.3",
		"5.10.0-32-amd64": "5.10", "6.18.44-fc-v595": "6.18", "weird": "", "6": "",
	} {
		if got := majorMinor(in); got != want {
			t.Errorf("majorMinor(%q) = %q, want %q", in, got, want)
		}
	}
	r := Report{Version: "6.12"}
	if !r.AtLeast(6, 6) || r.AtLeast(6, 13) || !r.AtLeast(5, 11) || r.AtLeast(7, 0) {
		t.Errorf("AtLeast wrong for 6.12")
	}
}

// TestKernelAtLeast: the running kernel is at least its own major.minor
// and not at least the next minor, as its release says.
func TestKernelAtLeast(t *testing.T) {
	rel := KernelRelease()
	var ma, mi int
	if _, err := fmt.Sscanf(majorMinor(rel), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("release %q: %v", rel, err)
	}
	if !KernelAtLeast(ma, mi) || !KernelAtLeast(ma-1, 99) || KernelAtLeast(ma, mi+1) || KernelAtLeast(ma+1, 0) {
		t.Errorf("KernelAtLeast wrong on %s", rel)
	}
}

// TestBrokenOnPurpose fails when LBD_VMTEST_BREAK=1: it exists to show
// that a failing test inside a kernel-matrix guest fails the host run
// (make test-kernels LBD_VMTEST_BREAK=1).
func TestBrokenOnPurpose(t *testing.T) {
	if os.Getenv("LBD_VMTEST_BREAK") == "1" {
		t.Fatalf("LBD_VMTEST_BREAK=1: failing on purpose on %s", KernelRelease())
	}
}
