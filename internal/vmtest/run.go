package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/bpf/features"
	"github.com/lbd-dev/lbd/internal/privtest"
)

// PkgResult is one test binary's outcome on one column (host or kernel).
type PkgResult struct {
	Exit    int
	Seconds float64
	Output  string // file with the binary's full output
}

// Column is one run target: the host or one kernel in a VM.
type Column struct {
	Name     string // "host", "5.10", ...
	Release  string // uname -r
	Results  map[string]*PkgResult
	Wall     time.Duration
	Err      error  // the column could not finish (VM timeout, panic, ...)
	Console  string // VM console log
	Features string // bpf/features report (JSON), if its test wrote one
	timedOut bool
}

// Failed reports whether anything in the column failed or did not run.
func (c *Column) Failed(pkgs []TestPackage) bool {
	if c.Err != nil {
		return true
	}
	for _, p := range pkgs {
		if r := c.Results[p.Name]; r == nil || r.Exit != 0 {
			return true
		}
	}
	return false
}

// RunOptions apply to every column.
type RunOptions struct {
	Root        string        // module root (the guest sees it read-only)
	BinDir      string        // the compiled *.test binaries
	Env         []string      // extra KEY=VALUE for every test binary
	TestArgs    []string      // e.g. -test.run=X
	TestTimeout time.Duration // per binary
	VMTimeout   time.Duration // per kernel, boot to poweroff
	MemMB, SMP  int
	Verbose     io.Writer // console of the VMs, when not nil
	Progress    io.Writer // one line per finished binary
}

func (o RunOptions) testArgs() []string {
	args := []string{"-test.v", "-test.count=1", "-test.timeout=" + o.TestTimeout.String()}
	return append(args, o.TestArgs...)
}

// RunHost runs the binaries on this machine, as `make test` would, from
// each package's directory, with CI=true.
func RunHost(o RunOptions, pkgs []TestPackage, outDir string) *Column {
	c := &Column{Name: "host", Release: features.KernelRelease(), Results: map[string]*PkgResult{}}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		c.Err = err
		return c
	}
	c.Features = filepath.Join(outDir, "features.json")
	start := time.Now()
	for _, p := range pkgs {
		out := filepath.Join(outDir, p.Name+".out")
		f, err := os.Create(out)
		if err != nil {
			c.Err = err
			return c
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.TestTimeout+30*time.Second)
		cmd := exec.CommandContext(ctx, p.Binary, o.testArgs()...)
		cmd.Dir = filepath.Join(o.Root, p.RelDir)
		cmd.Env = append(append(os.Environ(), "CI=true", "LBD_FEATURES_JSON="+c.Features), o.Env...)
		cmd.Stdout, cmd.Stderr = f, f
		t0 := time.Now()
		err = cmd.Run()
		cancel()
		f.Close()
		r := &PkgResult{Seconds: time.Since(t0).Seconds(), Output: out}
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.ExitCode() > 0:
			r.Exit = ee.ExitCode()
		default:
			r.Exit = -1
			fmt.Fprintf(f, "\nvmtest: %v\n", err)
		}
		c.Results[p.Name] = r
		progress(o.Progress, c.Name, p.Name, r)
	}
	c.Wall = time.Since(start)
	return c
}

func progress(w io.Writer, col, pkg string, r *PkgResult) {
	if w == nil {
		return
	}
	st := "ok"
	if r.Exit != 0 {
		st = fmt.Sprintf("FAIL (exit %d)", r.Exit)
	}
	fmt.Fprintf(w, "  [%s] %-24s %s %.1fs\n", col, pkg, st, r.Seconds)
}

// guestScript is /out/guest.sh: run each binary from its package
// directory in the read-only repository share, output into /out, one
// "VMTEST_RESULT name exit t0 t1" line per binary (guest uptime seconds).
func guestScript(o RunOptions, pkgs []TestPackage) string {
	var b strings.Builder
	b.WriteString("# written by internal/vmtest for one VM run\nrc=0\n")
	b.WriteString("run() {\n")
	b.WriteString("\tt0=$(cut -d' ' -f1 /proc/uptime)\n")
	// LBD_VMTEST_GUEST=1 tells tests they run in a busybox guest: the
	// few that need a host program (BIRD for the multi-node lab) skip
	// there instead of failing under CI=true.
	env := []string{"CI=true", "LBD_FEATURES_JSON=/out/features.json", privtest.GuestEnv + "=1"}
	env = append(env, o.Env...)
	var qenv, qargs []string
	for _, e := range env {
		qenv = append(qenv, shellQuote(e))
	}
	for _, a := range o.testArgs() {
		qargs = append(qargs, shellQuote(a))
	}
	fmt.Fprintf(&b, "\t(cd \"/src/$2\" && exec env %s \"/tests/$1.test\" %s) >\"/out/$1.out\" 2>&1\n",
		strings.Join(qenv, " "), strings.Join(qargs, " "))
	b.WriteString("\tr=$?\n\tt1=$(cut -d' ' -f1 /proc/uptime)\n")
	b.WriteString("\techo \"VMTEST_RESULT $1 $r $t0 $t1\" >>/out/results\n")
	b.WriteString("\techo \"VMTEST_RESULT $1 $r $t0 $t1\"\n")
	b.WriteString("\t[ $r = 0 ] || rc=1\n}\n")
	for _, p := range pkgs {
		fmt.Fprintf(&b, "run %s %s\n", shellQuote(p.Name), shellQuote(p.RelDir))
	}
	b.WriteString("exit $rc\n")
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

var resultLine = regexp.MustCompile(`^VMTEST_RESULT (\S+) (\d+) ([0-9.]+) ([0-9.]+)$`)

// parseResults reads the guest's results file.
func parseResults(data []byte, outDir string) map[string]*PkgResult {
	res := map[string]*PkgResult{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		m := resultLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		exit, _ := strconv.Atoi(m[2])
		t0, _ := strconv.ParseFloat(m[3], 64)
		t1, _ := strconv.ParseFloat(m[4], 64)
		res[m[1]] = &PkgResult{Exit: exit, Seconds: t1 - t0, Output: filepath.Join(outDir, m[1]+".out")}
	}
	return res
}

var exitLine = regexp.MustCompile(`VMTEST_EXIT=(\d+)`)

// bootAttempts is how often a VM that dies before any test binary ran is
// booted again. Under TCG a kernel now and then panics while it boots
// (seen: an int3 Oops in sched_clock_cpu on 7.3 with -smp 2), which says
// nothing about lbd.
const bootAttempts = 3

// tcgInt3Oops is the console line of the other TCG artefact: with -smp 2
// the emulation of a kernel patching its own text (static keys, e.g. when
// a tracepoint or kprobe is armed) now and then leaves an int3 the kernel
// no longer knows as its own, and it oopses at a random place (seen on 6.12
// in syscall_exit_to_user_mode_prepare, in a test that attaches kprobes).
// A VM that ends that way is run again from the start (up to int3Retries
// times; seen in about one VM run in six here) and says so; any other death
// after tests ran is never retried, and a fault lbd causes would come back
// every time.
// 5.10 words the same oops "int3: 0000 [#1] SMP" (seen in bpf_dispatcher_xdp_func,
// which 5.10 patches for every XDP test run).
var tcgInt3Oops = regexp.MustCompile(`Oops: int3: |\bint3: 0000 \[#`)

const int3Retries = 3

// RunVM boots k with the initramfs, runs every binary inside (see
// guestScript) and collects the results from the out share.
func RunVM(o RunOptions, k *Kernel, ir *Initramfs, pkgs []TestPackage, outDir string) *Column {
	var c *Column
	oopses := 0
	for attempt := 1; attempt <= bootAttempts; attempt++ {
		c = runVM(o, k, ir, pkgs, outDir)
		if c.Err != nil && !c.timedOut && oopses < int3Retries && consoleMatches(c.Console, tcgInt3Oops) {
			oopses++
			kept := fmt.Sprintf("%s-int3-%d-console.log", outDir, oopses) // outside outDir, which the next run empties
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "  [%s] the kernel oopsed on an int3 (a TCG artefact; console kept in %s): running the VM again (%d/%d)\n", c.Name, kept, oopses, int3Retries)
			}
			_ = os.Rename(c.Console, kept)
			attempt--
			continue
		}
		if c.Err == nil || len(c.Results) > 0 || c.timedOut {
			break
		}
		if attempt < bootAttempts {
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "  [%s] the VM died before any test ran (%v): booting it again (%d/%d)\n", c.Name, c.Err, attempt+1, bootAttempts)
			}
			_ = os.Rename(c.Console, c.Console+fmt.Sprintf(".attempt%d", attempt))
		}
	}
	return c
}

// consoleMatches reports whether the console log has a line matching re.
func consoleMatches(path string, re *regexp.Regexp) bool {
	b, err := os.ReadFile(path)
	return err == nil && re.Match(b)
}

func runVM(o RunOptions, k *Kernel, ir *Initramfs, pkgs []TestPackage, outDir string) *Column {
	c := &Column{Name: k.Spec.Name, Release: k.Release, Results: map[string]*PkgResult{}}
	c.Console = filepath.Join(outDir, "console.log")
	c.Features = filepath.Join(outDir, "features.json")
	start := time.Now()
	defer func() { c.Wall = time.Since(start) }()
	if err := os.RemoveAll(outDir); err != nil {
		c.Err = err
		return c
	}
	if err := os.MkdirAll(outDir, 0o777); err != nil {
		c.Err = err
		return c
	}
	if err := os.WriteFile(filepath.Join(outDir, "guest.sh"), []byte(guestScript(o, pkgs)), 0o755); err != nil {
		c.Err = err
		return c
	}
	ttyS1 := filepath.Join(outDir, "ttyS1")
	console, err := os.Create(c.Console)
	if err != nil {
		c.Err = err
		return c
	}
	defer console.Close()

	virtfs := func(tag, path string, ro bool) []string {
		opt := fmt.Sprintf("local,path=%s,mount_tag=%s,security_model=none,id=%s", path, tag, tag)
		if ro {
			opt += ",readonly=on"
		}
		return []string{"-virtfs", opt}
	}
	args := []string{
		// TCG: KVM is not usable on the CI machines (kernel-matrix.md).
		"-accel", "tcg", "-cpu", "max", "-m", strconv.Itoa(o.MemMB), "-smp", strconv.Itoa(o.SMP),
		"-kernel", k.Vmlinuz, "-initrd", ir.Path,
		"-append", "console=ttyS0 panic=-1 oops=panic quiet loglevel=3",
		"-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none",
		"-serial", "stdio", "-serial", "file:" + ttyS1,
	}
	args = append(args, virtfs("src", o.Root, true)...)
	args = append(args, virtfs("tests", o.BinDir, true)...)
	args = append(args, virtfs("out", outDir, false)...)

	ctx, cancel := context.WithTimeout(context.Background(), o.VMTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var w io.Writer = console
	if o.Verbose != nil {
		w = io.MultiWriter(console, o.Verbose)
	}
	lw := &lineWatcher{fn: func(line string) {
		if m := resultLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			r := parseResults([]byte(m[0]), outDir)[m[1]]
			progress(o.Progress, c.Name, m[1], r)
		}
	}}
	cmd.Stdout = io.MultiWriter(w, lw)
	cmd.Stderr = w
	runErr := cmd.Run()

	data, _ := os.ReadFile(filepath.Join(outDir, "results"))
	c.Results = parseResults(data, outDir)
	tty, _ := os.ReadFile(ttyS1)
	m := exitLine.FindAllSubmatch(tty, -1)
	switch {
	case ctx.Err() != nil:
		c.timedOut = true
		c.Err = fmt.Errorf("VM timed out after %s (raise -vm-timeout, or see %s)", o.VMTimeout, c.Console)
	case len(m) == 0:
		c.Err = fmt.Errorf("VM ended without a result (kernel panic or init died; qemu: %v): see %s", runErr, c.Console)
	case string(m[len(m)-1][1]) == "125":
		c.Err = fmt.Errorf("the guest could not run the tests (9p mount?): see %s", c.Console)
	}
	return c
}

// lineWatcher calls fn for every complete line written to it.
type lineWatcher struct {
	buf []byte
	fn  func(string)
}

func (l *lineWatcher) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.fn(strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
}
