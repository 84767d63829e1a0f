package tc

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// testNS is a network namespace the test created (and deletes on cleanup).
type testNS struct {
	name string
	h    netns.NsHandle
}

// uniq returns a short random suffix, so that parallel runs do not collide.
func uniq(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func newNetns(t testing.TB, prefix string) *testNS {
	t.Helper()
	name := "lbdtc-" + prefix + "-" + uniq(t)
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	n := &testNS{name: name, h: h}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// sh runs a command and fails the test with its output if it fails.
func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ip runs `ip -n <ns> args...`.
func (n *testNS) ip(t testing.TB, args ...string) string {
	t.Helper()
	return sh(t, "ip", append([]string{"-n", n.name}, args...)...)
}

// exec runs a command inside the namespace.
func (n *testNS) exec(t testing.TB, args ...string) string {
	t.Helper()
	return sh(t, "ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// do runs f on an OS thread switched into the namespace. Sockets and
// netlink handles opened by f stay in the namespace after it returns.
func (n *testNS) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.name, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it is discarded with this goroutine.
			errc <- fmt.Errorf("leave netns %s: %w", n.name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
