package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control/maglev"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lab"
	"github.com/lbd-dev/lbd/lb"
	"golang.org/x/sys/unix"
)

// TestLabOneReal: one connection, one real, with real traffic through
// lbd. A client port's connection goes to real X; a real is removed, which
// moves the port's ring choice to another surviving real Y; the port is
// reused by a new connection whose SYN is sent from another CPU (with
// veth, lbd's XDP runs on the sender's CPU), and then its data is sent
// from both CPUs. Every line must be echoed by Y: a packet that reached X
// would be reset (X has no such connection), and the connection would be
// split. 20 runs, both CPU orders, 3 ports each; 0 splits.
func TestLabOneReal(t *testing.T) {
	if runtime.NumCPU() < 2 {
		privtest.Unavailable(t, fmt.Sprintf("needs two CPUs, this machine has %d", runtime.NumCPU()))
	}
	e := newE2E(t)
	const runs, perRun = 20, 3
	all := []string{"r1", "r2", "r3", "r4"}
	client := e.lab.Clients[0]
	// Such ports are rare (Maglev moves little but the removed real's
	// flows): every run reuses the same ones, as the ring is restored.
	ports := movingPorts(t, e, client.Addr4, all, "r4", perRun)

	splits := 0
	for run := range runs {
		a, b := run%2, 1-run%2 // the old connection's CPU, the new SYN's
		vip := e.setVIP(t, "tcp", lab.VIP4, all...)
		for _, p := range ports {
			c := dialPinned(t, client.Netns, client.Addr4, p.port, a)
			if c.real != p.before {
				t.Fatalf("run %d: port %d went to %s, the ring says %s", run, p.port, c.real, p.before)
			}
			if err := c.ping(a, "old"); err != nil {
				t.Fatalf("run %d: old connection on port %d: %v", run, p.port, err)
			}
			c.abort(a) // a reset: the client keeps no TIME_WAIT, the port is free at once
		}
		if err := e.api.DeleteReal(e.ctx, vip, e.realAddr("r4", lab.VIP4)); err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			c := dialPinned(t, client.Netns, client.Addr4, p.port, b)
			split := c.real != p.after
			for i, cpu := range []int{a, b, a, b, a} {
				if err := c.ping(cpu, fmt.Sprintf("new %d", i)); err != nil {
					split = true
					t.Errorf("run %d: port %d (SYN on CPU %d to %s, was %s): line %d sent on CPU %d: %v",
						run, p.port, b, c.real, p.before, i, cpu, err)
					break
				}
			}
			if split {
				splits++
			}
			c.abort(b)
		}
	}
	t.Logf("%d runs × %d reused ports: %d split connections", runs, perRun, splits)
	if splits != 0 {
		t.Errorf("%d split connections, want 0", splits)
	}
}

type movingPort struct {
	port          uint16
	before, after string
}

// movingPorts finds n client ports whose ring choice moves from one real
// to another when removed is taken out of reals, neither being removed
// (the rare case of Maglev: most choices stay, those of the removed real
// move). It builds the rings as lbd does (control.buildRing).
func movingPorts(t *testing.T, e *e2e, client netip.Addr, reals []string, removed string, n int) []movingPort {
	t.Helper()
	ring := func(names []string) []string {
		var bs []maglev.Backend
		for i, name := range names {
			bs = append(bs, maglev.Backend{Name: e.realAddr(name, lab.VIP4), ID: uint32(i), Weight: 1})
		}
		tbl, err := maglev.Build(bs, 65537)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(tbl))
		for i, id := range tbl {
			out[i] = names[id]
		}
		return out
	}
	var rest []string
	for _, r := range reals {
		if r != removed {
			rest = append(rest, r)
		}
	}
	before, after := ring(reals), ring(rest)
	var ports []movingPort
	for p := uint16(1024); p != 0 && len(ports) < n; p++ {
		k := xdp.FlowKey{Client: netip.AddrPortFrom(client, p), Dest: netip.AddrPortFrom(lab.VIP4, lab.WhoPort), Proto: lb.TCP}
		s := xdp.RingSlot(k, false, 65537)
		if before[s] != removed && before[s] != after[s] {
			ports = append(ports, movingPort{p, before[s], after[s]})
		}
	}
	if len(ports) < n {
		t.Fatalf("found %d client ports whose real moves, want %d", len(ports), n)
	}
	return ports
}

// pinnedConn is a connection to a WhoPort server whose packets the test
// sends from chosen CPUs.
type pinnedConn struct {
	net.Conn
	real string
	rd   *bufio.Reader
}

// onCPU runs f on a thread bound to cpu.
func onCPU(cpu int, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("run on CPU %d: %w", cpu, err)
	}
	defer unix.SchedSetaffinity(0, &old)
	return f()
}

// dialPinned connects from addr:port in the client's namespace to the
// VIP's WhoPort server, its SYN sent from cpu, and reads who answered.
func dialPinned(t *testing.T, netns string, addr netip.Addr, port uint16, cpu int) *pinnedConn {
	t.Helper()
	var nc net.Conn
	err := lab.InNetns(netns, func() error {
		return onCPU(cpu, func() error {
			d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, port))}
			var err error
			nc, err = d.Dial("tcp", netip.AddrPortFrom(lab.VIP4, lab.WhoPort).String())
			return err
		})
	})
	if err != nil {
		t.Fatalf("connect from port %d on CPU %d: %v", port, cpu, err)
	}
	c := &pinnedConn{Conn: nc, rd: bufio.NewReader(nc)}
	t.Cleanup(func() { c.Close() })
	_ = nc.SetDeadline(time.Now().Add(3 * time.Second))
	name, err := c.rd.ReadString('\n')
	if err != nil {
		t.Fatalf("read the real's name (port %d): %v", port, err)
	}
	c.real = strings.TrimSpace(name)
	return c
}

// ping sends a line from cpu and waits for its echo.
func (c *pinnedConn) ping(cpu int, msg string) error {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	err := onCPU(cpu, func() error {
		_, err := fmt.Fprintf(c, "%s\n", msg)
		return err
	})
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, err := c.rd.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// abort closes with a reset sent from cpu.
func (c *pinnedConn) abort(cpu int) {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = onCPU(cpu, c.Close)
}
