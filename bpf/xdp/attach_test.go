package xdp

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// testNetns is a network namespace the test made, removed after it.
type testNetns struct {
	name string
	h    netns.NsHandle
}

func newTestNetns(t *testing.T) *testNetns {
	t.Helper()
	privtest.Require(t)
	var r [4]byte
	_, _ = rand.Read(r[:])
	n := &testNetns{name: "lbdt-" + hex.EncodeToString(r[:])}
	// Made with netlink and netns rather than ip(8): the kernel-matrix
	// guests have only busybox, whose ip knows no netns.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	h, err := netns.NewNamed(n.name) // enters the new namespace
	if serr := netns.Set(orig); serr != nil {
		t.Fatalf("return to the test's namespace: %v", serr) // the thread stays locked and dies
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		privtest.Unavailable(t, fmt.Sprintf("create netns: %v", err))
	}
	n.h = h
	t.Cleanup(func() {
		h.Close()
		_ = netns.DeleteNamed(n.name)
	})
	return n
}

// handle is a netlink handle inside the namespace (route family only:
// others may be missing from the kernel).
func (n *testNetns) handle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(n.h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink in netns: %v", err)
	}
	return h
}

// vethPair makes a veth pair a <-> b in the namespace, both up.
func (n *testNetns) vethPair(t *testing.T, a, b string) {
	t.Helper()
	h := n.handle(t)
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
		t.Fatalf("add veth %s/%s: %v", a, b, err)
	}
	for _, name := range []string{a, b} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
	}
}

// linkDel deletes an interface of the namespace.
func (n *testNetns) linkDel(t *testing.T, name string) {
	t.Helper()
	h := n.handle(t)
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkDel(l); err != nil {
		t.Fatalf("delete %s: %v", name, err)
	}
}

// do runs f on a thread inside the namespace.
func (n *testNetns) do(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: Go discards it with the goroutine.
			t.Errorf("return to the original netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	f()
}

// xdpOn is what netlink says of the interface's XDP program.
func (n *testNetns) xdpOn(t *testing.T, ifname string) netlink.LinkXdp {
	t.Helper()
	var x netlink.LinkXdp
	n.do(t, func() {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().Xdp != nil {
			x = *l.Attrs().Xdp
		}
	})
	return x
}

func (n *testNetns) attach(t *testing.T, b *Balancer, ifname string, mode AttachMode) (Attachment, error) {
	t.Helper()
	var a Attachment
	var err error
	n.do(t, func() { a, err = b.Attach(ifname, mode) })
	return a, err
}

func progID(t *testing.T, p *ebpf.Program) uint32 {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("kernel does not report program IDs")
	}
	return uint32(id)
}

// TestAttachAcrossRestart: a pinned link keeps the program on the
// interface after Close; the next run takes it over atomically; a foreign
// XDP program is refused; Cleanup takes everything away, and may be run again.
func TestAttachAcrossRestart(t *testing.T) {
	dir := testPinDir(t)
	ns := newTestNetns(t)
	ns.vethPair(t, "va", "vb")
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}

	b1 := openPinned(t, limits, dir)
	a, err := ns.attach(t, b1, "va", ModeNative)
	if err != nil {
		t.Fatal(err)
	}
	if a.Interface != "va" || a.Ifindex == 0 || a.Mode != ModeNative || a.Reused || a.Fallback != "" {
		t.Errorf("first attach: %+v", a)
	}
	id1 := progID(t, b1.Program())
	if x := ns.xdpOn(t, "va"); !x.Attached || x.ProgId != id1 || x.AttachMode != xdpAttachedDriver {
		t.Errorf("after attach, va has XDP %+v, want program %d in driver mode", x, id1)
	}
	if _, err := os.Stat(filepath.Join(dir, linksDir, "va")); err != nil {
		t.Errorf("link not pinned: %v", err)
	}
	if again, err := ns.attach(t, b1, "va", ModeAuto); err != nil || again != a {
		t.Errorf("second attach of the same balancer: %+v, %v; want %+v", again, err, a)
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	if x := ns.xdpOn(t, "va"); !x.Attached || x.ProgId != id1 {
		t.Errorf("after Close, va has XDP %+v, want program %d still attached", x, id1)
	}

	b2 := openPinned(t, limits, dir)
	if _, err := ns.attach(t, b2, "va", ModeGeneric); err == nil || !strings.Contains(err.Error(), "native mode") {
		t.Errorf("attach in generic mode over a native pinned link: %v", err)
	}
	a, err = ns.attach(t, b2, "va", ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	id2 := progID(t, b2.Program())
	if !a.Reused || a.Mode != ModeNative {
		t.Errorf("attach after restart: %+v, want Reused in native mode", a)
	}
	if x := ns.xdpOn(t, "va"); !x.Attached || x.ProgId != id2 || id2 == id1 {
		t.Errorf("after re-attach, va has XDP %+v, want the new program %d (old %d)", x, id2, id1)
	}

	// A program lbd did not attach.
	foreign, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lbd_test_pass", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
	})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	var fl link.Link
	ns.do(t, func() {
		dev, err := netlink.LinkByName("vb")
		if err != nil {
			t.Fatal(err)
		}
		fl, err = link.AttachXDP(link.XDPOptions{Program: foreign, Interface: dev.Attrs().Index, Flags: link.XDPDriverMode})
		if err != nil {
			t.Fatal(err)
		}
	})
	_, err = ns.attach(t, b2, "vb", ModeAuto)
	want := fmt.Sprintf("interface vb already has an XDP program (id %d, name lbd_test_pass) that lbd did not attach: detach it first (ip link set dev vb xdp off)", progID(t, foreign))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("attach over a foreign program: %v\nwant it to say: %s", err, want)
	}
	if x := ns.xdpOn(t, "vb"); x.ProgId != progID(t, foreign) {
		t.Errorf("refused attach changed vb's program: %+v", x)
	}
	fl.Close()

	// Generic mode, then Detach.
	if a, err := ns.attach(t, b2, "vb", ModeGeneric); err != nil || a.Mode != ModeGeneric || a.Reused {
		t.Errorf("generic attach: %+v, %v", a, err)
	}
	if x := ns.xdpOn(t, "vb"); !x.Attached || x.ProgId != id2 || x.AttachMode != xdpAttachedSKB {
		t.Errorf("after generic attach, vb has XDP %+v, want program %d in skb mode", x, id2)
	}
	if err := b2.Detach("vb"); err != nil {
		t.Fatal(err)
	}
	if x := ns.xdpOn(t, "vb"); x.Attached {
		t.Errorf("after Detach, vb has XDP %+v", x)
	}
	if _, err := os.Stat(filepath.Join(dir, linksDir, "vb")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link pin left after Detach: %v", err)
	}
	if err := b2.Detach("vb"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Detach: %v, want ErrNotFound", err)
	}

	b2.Close()
	if x := ns.xdpOn(t, "va"); !x.Attached || x.ProgId != id2 {
		t.Errorf("after the second Close, va has XDP %+v, want program %d", x, id2)
	}
	if err := Cleanup(dir); err != nil {
		t.Fatal(err)
	}
	if x := ns.xdpOn(t, "va"); x.Attached {
		t.Errorf("after Cleanup, va has XDP %+v", x)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory left after Cleanup: %v", err)
	}
	if err := Cleanup(dir); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// TestAttachStalePin: a link pinned on an interface that was deleted and
// made again is replaced by a new attachment.
func TestAttachStalePin(t *testing.T) {
	dir := testPinDir(t)
	ns := newTestNetns(t)
	ns.vethPair(t, "va", "vb")
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}
	b := openPinned(t, limits, dir)
	if _, err := ns.attach(t, b, "va", ModeNative); err != nil {
		t.Fatal(err)
	}
	b.Close()
	ns.linkDel(t, "va")
	ns.vethPair(t, "va", "vb")

	b = openPinned(t, limits, dir)
	a, err := ns.attach(t, b, "va", ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	if a.Reused || a.Mode != ModeNative {
		t.Errorf("attach over a stale pin: %+v", a)
	}
	if x := ns.xdpOn(t, "va"); !x.Attached || x.ProgId != progID(t, b.Program()) {
		t.Errorf("va has XDP %+v", x)
	}
}

// TestAttachUnpinned: without a pin directory the attachment lives as
// long as the Balancer holds it.
func TestAttachUnpinned(t *testing.T) {
	ns := newTestNetns(t)
	ns.vethPair(t, "va", "vb")
	b, err := Load(Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := ns.attach(t, b, "nosuchif0", ModeAuto); err == nil || !strings.Contains(err.Error(), "nosuchif0") {
		t.Errorf("attach to a missing interface: %v", err)
	}
	if _, err := ns.attach(t, b, "va", ModeAuto); err != nil {
		t.Fatal(err)
	}
	if x := ns.xdpOn(t, "va"); !x.Attached {
		t.Fatal("not attached")
	}
	if err := b.Detach("va"); err != nil {
		t.Fatal(err)
	}
	if x := ns.xdpOn(t, "va"); x.Attached {
		t.Errorf("after Detach, va has XDP %+v", x)
	}
	if _, err := ns.attach(t, b, "va", ModeAuto); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if x := ns.xdpOn(t, "va"); x.Attached {
		t.Errorf("after Close of an unpinned balancer, va has XDP %+v", x)
	}
	if _, err := ns.attach(t, b, "va", ModeAuto); err == nil {
		t.Error("attach of a closed balancer succeeded")
	}
}

// rawSock is an AF_PACKET socket on one interface of a test namespace.
type rawSock struct{ fd int }

func (n *testNetns) rawSock(t *testing.T, ifname string) *rawSock {
	t.Helper()
	s := &rawSock{fd: -1}
	n.do(t, func() {
		dev, err := netlink.LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		all := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, all)
		if err != nil {
			t.Fatal(err)
		}
		s.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(all), Ifindex: dev.Attrs().Index}); err != nil {
			t.Fatal(err)
		}
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
	})
	return s
}

// exchange sends a frame out of the socket's interface and returns the
// first frame that comes back addressed to the gateway MAC (what the
// balancer sends), or nil after a bounded wait.
func (s *rawSock) exchange(t *testing.T, frame []byte) []byte {
	t.Helper()
	if _, err := unix.Write(s.fd, frame); err != nil {
		t.Fatalf("send frame: %v", err)
	}
	buf := make([]byte, 2048)
	for range 50 {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n >= 14 && bytes.Equal(buf[:6], packettest.GatewayMAC) {
			return append([]byte(nil), buf[:n]...)
		}
	}
	return nil
}

// TestTrafficAcrossRestart: real frames through a veth get the same
// encapsulation before the restart, while no lbd runs (the pinned link
// and maps carry on) and after the next run took the link over.
func TestTrafficAcrossRestart(t *testing.T) {
	// Every frame on one CPU: while no lbd runs there is no search of the
	// other CPUs' tables (TestFlowMovesBetweenCPUs), so the table hits
	// this test counts need the frames on the CPU of the flow's entry.
	pinToOneCPU(t)
	dir := testPinDir(t)
	ns := newTestNetns(t)
	ns.vethPair(t, "va", "vb")
	limits := Limits{MaxVIPs: 16, MaxReals: 64, MaxFlows: 1024}
	l := newTestLBOpts(t, Options{Limits: limits, PinDir: dir})
	if _, err := ns.attach(t, l.Balancer, "va", ModeNative); err != nil {
		t.Fatal(err)
	}
	// XDP_TX on va reaches vb only if vb runs an XDP program too.
	pass, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lbd_test_pass", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pass.Close()
	var passLink link.Link
	ns.do(t, func() {
		dev, err := netlink.LinkByName("vb")
		if err != nil {
			t.Fatal(err)
		}
		if passLink, err = link.AttachXDP(link.XDPOptions{Program: pass, Interface: dev.Attrs().Index}); err != nil {
			t.Fatal(err)
		}
	})
	defer passLink.Close()
	client := ns.rawSock(t, "vb")

	syn := pkt{src: "198.51.100.70", dst: "10.10.0.1", sport: 40300, dport: 80, proto: lb.TCP, flags: "S"}
	k := syn.flowKey()
	real := l.ringReal(t, vipTCP, k)
	send := func(lb *testLB, p pkt, when string) {
		t.Helper()
		in := p.frame(t)
		want := lb.expectEncap(t, in, vipTCP, k, real)
		got := client.exchange(t, in)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: frame back from the balancer\n got: %x\nwant: %x", when, got, want)
		}
	}
	ack := syn
	ack.flags = "A"
	send(l, syn, "before the restart")
	send(l, ack, "before the restart") // records the connection
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data := syn
	data.flags, data.payload = "PA", []byte("while lbd is down")
	send(l, data, "while no lbd runs")

	l2 := &testLB{Balancer: openPinned(t, limits, dir), cfg: l.cfg, rings: l.rings}
	if a, err := ns.attach(t, l2.Balancer, "va", ModeAuto); err != nil || !a.Reused {
		t.Fatalf("attach after restart: %+v, %v", a, err)
	}
	f, err := l2.LookupFlow(k)
	if err != nil {
		t.Fatal(err)
	}
	l2.setRing(t, vipTCP, otherRing(t, l2, vipTCP, f.Real))
	data.payload = []byte("after the restart")
	send(l2, data, "after the restart, with a moved ring")
	if s, err := l2.VIPStats(vipTCP); err != nil || s.Packets != 4 || s.LRUHits != 2 || s.LRUMisses != 2 {
		t.Errorf("VIP counters after four packets across the restart (SYN and ACK miss, data hits): %+v, %v", s, err)
	}
}

// TestKill9Restart: an lbd killed with SIGKILL (no Close, no cleanup of
// any kind) leaves the program attached and the state pinned, and the
// next run recovers both. The killed lbd is this test binary run again.
func TestKill9Restart(t *testing.T) {
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}
	syn := pkt{src: "198.51.100.80", dst: "10.10.0.1", sport: 40400, dport: 80, proto: lb.TCP, flags: "S"}
	if os.Getenv("LBD_TEST_KILL9_DIR") != "" {
		// The process to be killed.
		ns := &testNetns{name: os.Getenv("LBD_TEST_KILL9_NETNS")}
		h, err := netns.GetFromName(ns.name)
		if err != nil {
			t.Fatal(err)
		}
		ns.h = h
		b, err := Open(Options{Limits: limits, PinDir: os.Getenv("LBD_TEST_KILL9_DIR")})
		if err != nil {
			t.Fatal(err)
		}
		id, err := b.AddReal(netip.MustParseAddr("10.0.1.1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddVIP(vipTCP, 0); err != nil {
			t.Fatal(err)
		}
		if err := b.SetRing(vipTCP, ringOf(id, id, id)); err != nil {
			t.Fatal(err)
		}
		ack := syn
		ack.flags = "A"
		// The SYN goes by the ring; the ACK records the connection (1 packet).
		for _, p := range []pkt{syn, ack} {
			if act, _, err := b.Simulate(p.frame(t)); err != nil || act != ActionTX {
				t.Fatal(act, err)
			}
		}
		if _, err := ns.attach(t, b, "va", ModeNative); err != nil {
			t.Fatal(err)
		}
		fmt.Println("ready")
		time.Sleep(time.Minute) // killed long before
		t.Fatal("not killed")
	}

	dir := testPinDir(t)
	ns := newTestNetns(t)
	ns.vethPair(t, "va", "vb")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Restart$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LBD_TEST_KILL9_DIR="+dir, "LBD_TEST_KILL9_NETNS="+ns.name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make([]byte, 6)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("helper lbd did not get ready: %q, %v", line, err)
	}
	attached := ns.xdpOn(t, "va")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if x := ns.xdpOn(t, "va"); !x.Attached || x.ProgId != attached.ProgId {
		t.Errorf("after kill -9, va has XDP %+v, want program %d still attached", x, attached.ProgId)
	}

	b := openPinned(t, limits, dir)
	if !b.Recovered() {
		t.Fatal("not recovered after kill -9")
	}
	if v, err := b.LookupVIP(vipTCP); err != nil || v.RingSize != 3 {
		t.Errorf("VIP after kill -9: %+v, %v", v, err)
	}
	if f, err := b.LookupFlow(syn.flowKey()); err != nil || f.Packets != 1 {
		t.Errorf("flow after kill -9: %+v, %v", f, err)
	}
	a, err := ns.attach(t, b, "va", ModeAuto)
	if err != nil || !a.Reused {
		t.Fatalf("attach after kill -9: %+v, %v", a, err)
	}
	if x := ns.xdpOn(t, "va"); x.ProgId != progID(t, b.Program()) {
		t.Errorf("va runs program %d, want the new %d", x.ProgId, progID(t, b.Program()))
	}
}
