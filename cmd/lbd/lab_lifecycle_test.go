package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lab"
)

// privateRunEnv marks a test binary re-executed in a mount namespace of
// its own with an empty /run (runInFreshRun).
const privateRunEnv = "LBD_TEST_FRESH_RUN"

// runInFreshRun runs test name again in a child of this test binary that
// has a mount namespace of its own and an empty tmpfs on /run, as on a
// freshly booted machine: /run/netns does not exist, so whether it is a
// shared mount point depends on the code under test alone, not on what
// else ran on this machine before. It reports whether this is the child,
// which then runs the test's body.
func runInFreshRun(t *testing.T, name string) (child bool) {
	t.Helper()
	if os.Getenv(privateRunEnv) == "1" {
		must(t, "mount an empty /run", unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"))
		return true
	}
	privtest.Require(t)
	if privtest.InVMGuest() {
		t.Skip("needs iproute2 (ip netns add), which the kernel-matrix guests lack")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		privtest.Unavailable(t, "needs iproute2 (ip netns add): "+err.Error())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), privateRunEnv+"=1")
	// Go makes the new mount namespace's mounts private.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("in a mount namespace with an empty /run:\n%s", out)
	if err != nil {
		t.Fatalf("%s failed: %v", name, err)
	}
	return false
}

// TestLabComesDown runs what `make demo`, `make demo`, `make demo-down`,
// `make demo-down` do — lab down, up, down, up, down, down — with an `ip
// netns add` of a namespace of someone else's after the first up, which
// used to hide the lab's namespaces for good (device or resource busy),
// and checks that nothing of the lab is left, that the other namespace is
// still there, and that the hint of a second up names a command that runs.
func TestLabComesDown(t *testing.T) {
	if !runInFreshRun(t, "TestLabComesDown") {
		return
	}
	name := randomName("lc")
	foreign := randomName("lbdt-foreign-")
	bin, err := os.Executable()
	must(t, "find test binary", err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, "free port", err)
	api := ln.Addr().String()
	ln.Close()
	t.Cleanup(func() {
		_ = lab.Down(name, nil)
		_ = exec.Command("ip", "netns", "delete", foreign).Run()
	})
	cfg := lab.Config{Name: name, Clients: 2, Reals: 2, Binary: bin, Env: []string{"LBD_TEST_MAIN=1"}, API: api, Log: tlog{t}}
	down := func(when string) {
		t.Helper()
		cmd := exec.Command(bin, "lab", "down", "--name", name) // as make demo-down
		cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "lab "+name+" is down") {
			t.Fatalf("lbd lab down %s: %v: %s", when, err, out)
		}
		if left := lab.Leftovers(name); len(left) > 0 {
			t.Fatalf("after lbd lab down %s, left: %v", when, left)
		}
	}
	up := func(when string) {
		t.Helper()
		if _, err := lab.Up(cfg); err != nil {
			t.Fatalf("lab up %s: %v", when, err)
		}
	}

	down("before the first up")
	up("first")
	out, err := exec.Command("ip", "netns", "add", foreign).CombinedOutput()
	must(t, "ip netns add "+foreign+": "+string(out), err)

	// A second up while the lab is up refuses and says how to take it
	// down: that command must run.
	_, err = lab.Up(cfg)
	if err == nil {
		t.Fatal("a second lab up while it is up succeeded")
	}
	hint := err.Error()
	i := strings.Index(hint, "`")
	j := strings.LastIndex(hint, "`")
	if i < 0 || j <= i {
		t.Fatalf("lab up over a running lab: %v: no command in backquotes", err)
	}
	args := strings.Fields(hint[i+1 : j])
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the hint %q does not run: %v: %s", hint[i+1:j], err, out)
	}
	if left := lab.Leftovers(name); len(left) > 0 {
		t.Fatalf("after the hint %q, left: %v", hint[i+1:j], left)
	}

	up("second")
	down("first")
	down("second")
	if out, err := exec.Command("ip", "netns", "exec", foreign, "true").CombinedOutput(); err != nil {
		t.Errorf("the other namespace %s is gone or broken: %v: %s", foreign, err, out)
	}
}

// TestLabDownSaysWhatIsLeft: a namespace lbd lab down cannot remove — here
// one mounted the old way, on /run/netns before it was a shared mount,
// and then hidden by an `ip netns add` — makes lbd lab down fail (exit
// status 1) and name it, instead of saying the lab is down.
func TestLabDownSaysWhatIsLeft(t *testing.T) {
	if !runInFreshRun(t, "TestLabDownSaysWhatIsLeft") {
		return
	}
	name := randomName("ll")
	ns := "lbdlab-" + name + "-c1"
	foreign := randomName("lbdt-foreign-")
	// What lbd did before: a bind mount on the plain directory.
	created := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // NewNamed enters the namespace: the thread is discarded with the goroutine
		h, err := netns.NewNamed(ns)
		if err == nil {
			h.Close()
		}
		created <- err
	}()
	must(t, "create "+ns+" the old way", <-created)
	out, err := exec.Command("ip", "netns", "add", foreign).CombinedOutput()
	must(t, "ip netns add: "+string(out), err)

	bin, err := os.Executable()
	must(t, "find test binary", err)
	for range 2 {
		cmd := exec.Command(bin, "lab", "down", "--name", name)
		cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("lbd lab down of a lab it cannot remove: %v, want exit status 1: %s", err, out)
		}
		if strings.Contains(string(out), "is down") || !strings.Contains(string(out), "left behind") || !strings.Contains(string(out), ns) {
			t.Fatalf("lbd lab down does not say what is left: %s", out)
		}
		t.Logf("lbd lab down: %s", out)
	}
}
