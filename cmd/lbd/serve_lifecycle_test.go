package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/privtest"
)

func randomName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// serveArgs are lbd serve's arguments for a daemon of the test's.
func serveArgs(ifname, pinDir, stateDir string, extra ...string) []string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	return append([]string{"serve", "--interface", ifname, "--gateway-mac", "02:00:00:00:00:99", "--listen", listen,
		"--state-dir", stateDir, "--token-file", filepath.Join(stateDir, "token"), "--pin-dir", pinDir,
		"--max-flows", "4096", "--max-vips", "16", "--max-reals", "64", "--health-checks=false", "--tracer", "off"}, extra...)
}

// runUntilExit runs cmd and waits up to 20 s for it to exit; it returns
// its combined output and exit code (-1: killed after the 20 s).
func runUntilExit(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return out.String(), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), -1
	}
}

// startUntil starts cmd and waits (20 s) until its output contains line;
// stop sends SIGTERM and returns the whole output and the exit error.
func startUntil(t *testing.T, cmd *exec.Cmd, line string) (stop func() (string, error)) {
	t.Helper()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop = func() (string, error) {
		if stopped {
			return out.String(), nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return out.String(), err
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return out.String(), fmt.Errorf("still running 15 s after SIGTERM")
		}
	}
	t.Cleanup(func() { _, _ = stop() })
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), line); {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("%s exited (%v) before %q:\n%s", strings.Join(cmd.Args, " "), err, line, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after 20 s:\n%s", line, out.String())
		}
	}
	return stop
}

// TestServeRefusesSameDaemonPinsByAnotherPath: while one lbd serve runs,
// a second one on another interface given a symlink to its pin
// directory, or a bind mount of it, is refused and changes nothing; the
// first keeps serving its VIP. (The lock used to be keyed on the path:
// the second daemon took over the first one's maps.)
func TestServeRefusesSameDaemonPinsByAnotherPath(t *testing.T) {
	l := newDaemonLab(t)
	l.start()
	l.call("POST", "/api/v1/vips", map[string]any{"protocol": "udp", "address": "192.0.2.1", "port": 53,
		"reals": []map[string]any{{"address": "10.0.0.1"}}}, http.StatusCreated, nil)

	other := "lbdc" + l.lbIf[4:]
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: other}, PeerName: "lbdd" + l.lbIf[4:]}
	must(t, "add second veth", netlink.LinkAdd(veth))
	t.Cleanup(func() {
		if link, err := netlink.LinkByName(other); err == nil {
			_ = netlink.LinkDel(link)
		}
	})
	link := filepath.Join(t.TempDir(), "pins")
	must(t, "symlink", os.Symlink(l.pinDir, link))
	bind := l.pinDir + "-bind"
	must(t, "mkdir", os.Mkdir(bind, 0o700))
	t.Cleanup(func() { _ = os.Remove(bind) })
	must(t, "bind mount", unix.Mount(l.pinDir, bind, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(bind, unix.MNT_DETACH) })

	for _, pins := range []string{link, bind} {
		out, code := runUntilExit(t, l.lbd(serveArgs(other, pins, t.TempDir())...))
		if code != 1 || !strings.Contains(out, "another lbd") || !strings.Contains(out, "pin directory "+pins) {
			t.Fatalf("second lbd serve with pin directory %s: exit %d, want 1 and another lbd named:\n%s", pins, code, out)
		}
		if xdpAttached(t, other) {
			t.Fatalf("the refused lbd attached to %s", other)
		}
	}
	var vips struct{ VIPs []map[string]any }
	l.call("GET", "/api/v1/vips", nil, http.StatusOK, &vips)
	if len(vips.VIPs) != 1 || l.vipPackets() != 0 {
		t.Errorf("the first daemon's VIPs after the refusals: %v", vips)
	}
	l.send(40001)
	if got := l.vipPackets(); got != 1 {
		t.Errorf("VIP packets after sending one: %d, want 1 (its maps are not the first daemon's any more)", got)
	}
}

// TestServeTypoInterface: lbd serve with an interface that does not exist
// fails first, naming it and what exists, creates no pins and does not
// claim to have left a program attached.
func TestServeTypoInterface(t *testing.T) {
	privtest.Require(t)
	name := randomName("lbdnosuch")
	pinDir := "/sys/fs/bpf/" + randomName("lbdt-typo-")
	stateDir := t.TempDir()
	bin, err := os.Executable()
	must(t, "find test binary", err)
	cmd := exec.Command(bin, serveArgs(name, pinDir, stateDir)...)
	cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
	out, code := runUntilExit(t, cmd)
	t.Cleanup(func() { _ = os.RemoveAll(pinDir) })
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	if !strings.Contains(out, `interface "`+name+`" does not exist`) || !strings.Contains(out, "lo") || !strings.Contains(out, "ip link show") {
		t.Errorf("the error does not name the interface and what exists:\n%s", out)
	}
	if strings.Contains(out, "stays attached") || strings.Contains(out, "reconciled") {
		t.Errorf("it went on before failing:\n%s", out)
	}
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Errorf("pin directory %s made: %v", pinDir, err)
	}
	if ents, _ := os.ReadDir(stateDir); len(ents) != 0 {
		t.Errorf("state directory not empty: %v", ents)
	}
}

// TestServePinsThatDieWithTheMountNamespace: under `ip netns exec`, which
// gives the command a mount namespace of its own with a fresh /sys, lbd's
// pins would live in a bpf filesystem of that namespace alone and vanish
// with it when lbd exits. lbd serve refuses to start so, pointing to
// `nsenter --net`; with --allow-private-pins it runs and its exit line
// says that the program goes; under nsenter --net the pins live in the
// machine's /sys/fs/bpf and the program stays attached after exit.
func TestServePinsThatDieWithTheMountNamespace(t *testing.T) {
	privtest.Require(t)
	if privtest.InVMGuest() {
		t.Skip("needs iproute2 and nsenter, which the kernel-matrix guests lack")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			privtest.Unavailable(t, "needs "+tool+": "+err.Error())
		}
	}
	ns := randomName("lbdt-pins-")
	out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput()
	must(t, "ip netns add: "+string(out), err)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	pinDir := "/sys/fs/bpf/" + ns
	bin, err := os.Executable()
	must(t, "find test binary", err)
	t.Cleanup(func() {
		cmd := exec.Command(bin, "cleanup", "--pin-dir", pinDir)
		cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
		_ = cmd.Run()
	})
	serve := func(wrapper []string, extra ...string) *exec.Cmd {
		args := append(wrapper, bin)
		args = append(args, serveArgs("lo", pinDir, t.TempDir(), append([]string{"--xdp-mode", "generic"}, extra...)...)...)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
		return cmd
	}
	loHasXDP := func() bool {
		out, err := exec.Command("ip", "-n", ns, "link", "show", "lo").CombinedOutput()
		must(t, "ip link show lo: "+string(out), err)
		return strings.Contains(string(out), "xdp")
	}
	ipExec := []string{"ip", "netns", "exec", ns}

	// 1. Refused, before anything is attached.
	out2, code := runUntilExit(t, serve(ipExec))
	if code != 1 || !strings.Contains(out2, "would not outlive lbd") || !strings.Contains(out2, "nsenter --net") || !strings.Contains(out2, "--allow-private-pins") {
		t.Fatalf("lbd serve under ip netns exec: exit %d, want 1 and a refusal that points to nsenter --net:\n%s", code, out2)
	}
	if loHasXDP() {
		t.Fatal("the refused lbd attached a program")
	}

	// 2. Allowed: it runs, and its exit line says the program goes.
	stop := startUntil(t, serve(ipExec, "--allow-private-pins"), "API listening")
	if !loHasXDP() {
		t.Fatal("no XDP program on lo while lbd runs")
	}
	out2, err = stop()
	if err != nil || !strings.Contains(out2, "will not outlive lbd") || !strings.Contains(out2, "pins were private") || strings.Contains(out2, "stays attached") {
		t.Fatalf("lbd serve --allow-private-pins: %v, want a warning and an exit line saying the program goes:\n%s", err, out2)
	}
	for range 100 { // the mount namespace goes with its last process
		if !loHasXDP() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if loHasXDP() {
		t.Fatal("the program is still attached after lbd with private pins exited")
	}
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Fatalf("private pins visible in the machine's bpffs: %v", err)
	}

	// 3. nsenter --net: the machine's bpffs, the program stays.
	stop = startUntil(t, serve([]string{"nsenter", "--net=/run/netns/" + ns}), "API listening")
	out2, err = stop()
	if err != nil || !strings.Contains(out2, "stays attached and keeps forwarding") || strings.Contains(out2, "would not outlive") {
		t.Fatalf("lbd serve under nsenter --net: %v:\n%s", err, out2)
	}
	if !loHasXDP() {
		t.Error("the program went with lbd under nsenter --net")
	}
	if _, err := os.Stat(filepath.Join(pinDir, "links", "lo")); err != nil {
		t.Errorf("link pin after lbd under nsenter --net exited: %v", err)
	}
}
