// Package privtest holds helpers for tests that need root and a BPF-capable
// kernel. Such tests skip on a developer's unprivileged machine, but in CI
// (CI=true) they fail instead: a skipped privileged test would hide a
// regression.
package privtest

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// InCI reports whether the tests run in CI, where nothing may be skipped
// for lack of privileges.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require stops the test unless it runs as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (CAP_BPF, CAP_NET_ADMIN)")
	}
}

// Unavailable skips the test, or fails it under CI=true.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("privileged test cannot run in CI: %s", why)
	}
	t.Skipf("skipped: %s (set up root to run it; in CI this fails)", why)
}

// CheckNotSupported turns a kernel's "not supported" into Unavailable and
// any other error into a failure.
func CheckNotSupported(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		Unavailable(t, what+": "+err.Error())
	}
	t.Fatalf("%s: %v", what, err)
}

// GuestEnv is set to 1 in the kernel-matrix VMs' busybox guests
// (internal/vmtest), which have the kernel under test but none of the
// host's programs.
const GuestEnv = "LBD_VMTEST_GUEST"

// InVMGuest reports whether the test runs in a kernel-matrix guest: a
// test that needs a program only the host has (BIRD) skips there, even
// under CI=true, and runs on the host, where CI requires it.
func InVMGuest() bool { return os.Getenv(GuestEnv) == "1" }
