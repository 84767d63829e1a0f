// Command matrix runs every package's tests on the host and inside qemu
// VMs booted with the kernels of internal/vmtest/kernels.conf, prints a
// package × kernel table, and exits non-zero if any test binary failed
// anywhere. `make test-kernels` runs it (as root).
//
//	go run ./internal/vmtest/matrix [-kernels 5.10,6.1] [-host=false] [-run REGEXP] [-v] [-doc docs/kernels.md]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/lbd-dev/lbd/internal/vmtest"
)

func main() {
	os.Exit(run())
}

func run() int {
	defCache := os.Getenv("LBD_VMK")
	if defCache == "" {
		defCache = "/var/cache/lbd-vmk"
	}
	var (
		cache       = flag.String("cache", defCache, "kernel cache and run logs (env LBD_VMK)")
		kernels     = flag.String("kernels", "", "comma-separated kernel names or suites from kernels.conf (default: all)")
		host        = flag.Bool("host", true, "run the tests on the host too")
		runRE       = flag.String("run", "", "passed to the test binaries as -test.run")
		verbose     = flag.Bool("v", false, "show the VMs' consoles")
		doc         = flag.String("doc", "", "write the support table (e.g. docs/kernels.md) from this run")
		testTimeout = flag.Duration("test-timeout", 10*time.Minute, "per test binary")
		vmTimeout   = flag.Duration("vm-timeout", 15*time.Minute, "per kernel, boot to poweroff (4 kernels x 15 min stays under CI's 90)")
		mem         = flag.Int("mem", 1536, "guest memory, MiB")
		smp         = flag.Int("smp", 2, "guest CPUs")
	)
	flag.Parse()
	start := time.Now()
	loadStart := vmtest.LoadAvg()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "test-kernels: "+format+"\n", a...)
		return 2
	}
	if os.Geteuid() != 0 {
		return fail("needs root (the tests load BPF programs; apt and qemu share state under %s)", *cache)
	}
	for _, tool := range []string{"qemu-system-x86_64", "apt-get", "dpkg-deb", "xz", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fail("%s not found: run scripts/install-deps.sh", tool)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return fail("%v", err)
	}
	cfg, err := vmtest.DefaultConfig()
	if err != nil {
		return fail("%v", err)
	}
	if *kernels != "" {
		if err := cfg.Select(strings.Split(*kernels, ",")); err != nil {
			return fail("%v", err)
		}
	}
	logf := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }

	// One matrix per cache at a time: runs share the apt state and run/.
	if err := os.MkdirAll(*cache, 0o755); err != nil {
		return fail("%v", err)
	}
	lock, err := os.OpenFile(filepath.Join(*cache, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fail("%v", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		logf("another kernel matrix uses %s: waiting for it", *cache)
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			return fail("lock %s: %v", *cache, err)
		}
	}

	// 1. kernels
	phase := time.Now()
	logf("==> resolving kernels (newest per suite) into %s", *cache)
	apt, err := vmtest.NewApt(*cache)
	if err != nil {
		return fail("%v", err)
	}
	if err := apt.Update(); err != nil {
		return fail("%v", err)
	}
	logf("apt lists updated [%.1fs]", time.Since(phase).Seconds())
	var ks []*vmtest.Kernel
	for _, spec := range cfg.Kernels {
		k, err := vmtest.PrepareKernel(apt, spec, *cache, logf)
		if err != nil {
			return fail("kernel %s (%s): %v", spec.Name, spec.Suite, err)
		}
		logf("kernel %-5s %-17s -> %s (%s %s) [%.1fs]", spec.Name, spec.Suite, k.Release, k.Package.Name, k.Package.Version, time.Since(phase).Seconds())
		ks = append(ks, k)
	}
	var irs []*vmtest.Initramfs
	for _, k := range ks {
		ir, err := vmtest.BuildInitramfs(k, cfg.Modules)
		if err != nil {
			return fail("initramfs for %s: %v", k.Release, err)
		}
		logf("initramfs %s: modules %s [%.1fs]", k.Release, strings.Join(ir.Loaded, " "), time.Since(phase).Seconds())
		if len(ir.Absent) > 0 {
			logf("  WARNING: not in %s: %s", k.Release, strings.Join(ir.Absent, " "))
		}
		irs = append(irs, ir)
	}
	logf("    kernels ready in %.1fs", time.Since(phase).Seconds())

	// 2. test binaries
	phase = time.Now()
	pkgs, err := vmtest.ListTestPackages(root)
	if err != nil {
		return fail("%v", err)
	}
	runDir := filepath.Join(*cache, "run")
	binDir := filepath.Join(runDir, "bin")
	os.RemoveAll(binDir)
	logf("==> compiling %d test binaries (CGO_ENABLED=0)", len(pkgs))
	if err := vmtest.BuildTests(root, binDir, pkgs); err != nil {
		return fail("%v", err)
	}
	logf("    compiled in %.1fs", time.Since(phase).Seconds())

	// 3. run
	opts := vmtest.RunOptions{
		Root: root, BinDir: binDir, TestTimeout: *testTimeout, VMTimeout: *vmTimeout,
		MemMB: *mem, SMP: *smp, Progress: os.Stdout,
	}
	if *runRE != "" {
		opts.TestArgs = append(opts.TestArgs, "-test.run="+*runRE)
	}
	if *verbose {
		opts.Verbose = os.Stdout
	}
	// LBD_* settings reach the guests' tests too (e.g. LBD_VMTEST_BREAK=1).
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "LBD_") && !strings.HasPrefix(e, "LBD_VMK=") && !strings.HasPrefix(e, "LBD_FEATURES_JSON=") {
			opts.Env = append(opts.Env, e)
		}
	}
	var cols []*vmtest.Column
	if *host {
		logf("==> host (%s)", runtime.GOOS)
		cols = append(cols, vmtest.RunHost(opts, pkgs, filepath.Join(runDir, "host")))
	}
	for i, k := range ks {
		logf("==> kernel %s (%s) in qemu", k.Spec.Name, k.Release)
		c := vmtest.RunVM(opts, k, irs[i], pkgs, filepath.Join(runDir, k.Spec.Name))
		logf("    %s: %.1fs boot to poweroff", k.Spec.Name, c.Wall.Seconds())
		cols = append(cols, c)
	}

	failed := false
	for _, c := range cols {
		failed = failed || c.Failed(pkgs)
	}
	if failed {
		vmtest.ShowFailures(os.Stdout, pkgs, cols)
	}
	vmtest.Summary(os.Stdout, pkgs, cols)
	fmt.Println()
	fmt.Print(vmtest.FeatureTable(cols))
	total := time.Since(start)
	if *doc != "" {
		if !*host || len(ks) != len(cfg.Kernels) && *kernels != "" {
			logf("note: %s is written from a partial run", *doc)
		}
		if err := vmtest.WriteDoc(*doc, pkgs, cols, ks, vmtest.RunInfo{
			Total: total, CPUs: runtime.NumCPU(), LoadStart: loadStart, LoadEnd: vmtest.LoadAvg()}); err != nil {
			return fail("write %s: %v", *doc, err)
		}
		logf("wrote %s", *doc)
	}
	fmt.Printf("\nmatrix wall time %.1fs (load average %s at the start, %s now); logs in %s\n",
		total.Seconds(), loadStart, vmtest.LoadAvg(), runDir)
	if failed {
		fmt.Println("test-kernels: FAIL")
		return 1
	}
	fmt.Println("test-kernels: ok")
	return 0
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run from inside the lbd module")
	}
	return filepath.Dir(mod), nil
}
