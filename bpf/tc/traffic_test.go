package tc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// realLab is two test-created namespaces joined by a veth pair: "lb"
// (vL, where the test writes hand-built tunnel frames with an AF_PACKET
// socket) and "real" (vR, with the VIPs on lo, listeners on them, and the
// decapsulation program on vR's ingress).
type realLab struct {
	lb, real *testNS
	lbMAC    net.HardwareAddr
	realMAC  net.HardwareAddr
	pkt      int // AF_PACKET socket in lb, bound to vL
	vL       int // vL's ifindex
}

var (
	labVIP4 = netip.MustParseAddr("10.200.0.1")
	labVIP6 = netip.MustParseAddr("fd00:200::1")
)

func newRealLab(t *testing.T) *realLab {
	t.Helper()
	l := &realLab{lb: newNetns(t, "lb"), real: newNetns(t, "real")}
	l.lb.must(t, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vL"}, PeerName: "vR",
			PeerNamespace: netlink.NsFd(l.real.h)}); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		for _, a := range []string{"10.99.0.1/24", "fd99::1/64"} {
			if err := addAddr("vL", a); err != nil {
				return err
			}
		}
		return linkUp("vL")
	})
	l.real.must(t, func() error {
		for _, a := range [][2]string{{"vR", "10.99.0.2/24"}, {"vR", "fd99::2/64"},
			{"lo", labVIP4.String() + "/32"}, {"lo", labVIP6.String() + "/128"}} {
			if err := addAddr(a[0], a[1]); err != nil {
				return err
			}
		}
		if err := linkUp("vR"); err != nil {
			return err
		}
		if err := addRoute("", "10.99.0.1"); err != nil {
			return err
		}
		return addRoute("", "fd99::1")
	})
	// IPv6 installs an address's local route from addrconf's work queue,
	// after the address is added and even on lo: a packet that comes
	// first finds no route (drop reason IP_INNOROUTES), which made the
	// first IPv6 case fail now and then on a busy host. Wait for the
	// VIPs' local routes, bounded.
	l.real.must(t, func() error {
		deadline := time.Now().Add(5 * time.Second)
		for _, a := range []netip.Addr{labVIP4, labVIP6} {
			for {
				rs, err := netlink.RouteGet(a.AsSlice())
				if err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("no local route to %s 5 s after adding it (%v, %v)", a, rs, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		return nil
	})
	// The inner source is a client elsewhere: no reverse-path filtering.
	// (/proc/sys/net belongs to the namespace of the thread that opens it.)
	err := l.real.do(func() error {
		for _, k := range []string{"all", "default", "vR", "lo"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+k+"/rp_filter", []byte("0"), 0o644); err != nil {
				return fmt.Errorf("rp_filter: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = l.lb.do(func() error {
		vl, err := netlink.LinkByName("vL")
		if err != nil {
			return err
		}
		l.lbMAC, l.vL = vl.Attrs().HardwareAddr, vl.Attrs().Index
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		l.pkt = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.vL}); err != nil {
			return fmt.Errorf("bind packet socket to vL: %w", err)
		}
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if l.pkt > 0 {
		t.Cleanup(func() { unix.Close(l.pkt) })
	}
	if err != nil {
		t.Fatal(err)
	}
	err = l.real.do(func() error {
		vr, err := netlink.LinkByName("vR")
		if err != nil {
			return err
		}
		l.realMAC = vr.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Static neighbours: the real's replies need no ARP/ND round trip.
	l.real.must(t, func() error {
		if err := setNeigh("vR", "10.99.0.1", l.lbMAC); err != nil {
			return err
		}
		return setNeigh("vR", "fd99::1", l.lbMAC)
	})
	return l
}

// send writes one frame to vL: it arrives at vR's ingress.
func (l *realLab) send(t testing.TB, frame []byte) {
	t.Helper()
	if err := unix.Sendto(l.pkt, frame, 0, &unix.SockaddrLinklayer{Ifindex: l.vL, Halen: 6}); err != nil {
		t.Fatalf("write frame to vL: %v", err)
	}
}

// frame is the tunnel frame from lb to real for an inner IP packet.
func (l *realLab) frame(t testing.TB, inner []byte, outer6, gue bool) []byte {
	tun := tunnel{src: "10.99.0.1", dst: "10.99.0.2", gue: gue, port: DefaultGUEPort, sport: 0xc001}
	if outer6 {
		tun.src, tun.dst = "fd99::1", "fd99::2"
	}
	f := encapFrame(t, inner, tun)
	copy(f[0:6], l.realMAC)
	copy(f[6:12], l.lbMAC)
	return f
}

// listenUDP opens a UDP socket on addr:port inside the real namespace.
func (l *realLab) listenUDP(t testing.TB, addr netip.Addr, port uint16) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := l.real.do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRealTraffic: hand-built tunnel frames of every kind sent to a real
// namespace are decapsulated by the attached program and the inner UDP
// payload reaches a listener on the VIP (on lo); a TCP SYN through the
// tunnel is answered by the real's stack directly (DSR). Both modes.
func TestRealTraffic(t *testing.T) {
	for _, mode := range []Mode{ModeAuto, ModeClsact} {
		name := "auto"
		if mode != ModeAuto {
			name = string(mode)
		}
		t.Run(name, func(t *testing.T) {
			testRealTraffic(t, mode)
		})
	}
}

func testRealTraffic(t *testing.T, mode Mode) {
	d := newTestDecap(t)
	if err := d.SetVIPs([]netip.Addr{labVIP4, labVIP6}); err != nil {
		t.Fatal(err)
	}
	l := newRealLab(t)
	a, err := attachIn(l.real, "vR", d.Program(), AttachOptions{Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Detach() })
	t.Logf("attached: %s", a)
	u4 := l.listenUDP(t, labVIP4, 9000)
	u6 := l.listenUDP(t, labVIP6, 9000)

	client4, client6 := "198.51.100.1", "2001:db8:1::1"
	for _, c := range []struct {
		name        string
		inner6      bool
		outer6, gue bool
		stat        Stat
	}{
		{"ipip 4in4", false, false, false, StatIPIP4in4},
		{"ipip 6in4", true, false, false, StatIPIP6in4},
		{"ipip 4in6", false, true, false, StatIPIP4in6},
		{"ipip 6in6", true, true, false, StatIPIP6in6},
		{"gue 4in4", false, false, true, StatGUE4in4},
		{"gue 6in4", true, false, true, StatGUE6in4},
		{"gue 4in6", false, true, true, StatGUE4in6},
		{"gue 6in6", true, true, true, StatGUE6in6},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, src, vip := u4, client4, labVIP4
			if c.inner6 {
				conn, src, vip = u6, client6, labVIP6
			}
			payload := "hello through " + c.name
			inner := clientPacket(t, src, vip.String(), 40000, 9000, false, payload)
			before, _ := d.Stats()
			l.send(t, l.frame(t, inner, c.outer6, c.gue))

			buf := make([]byte, 2048)
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				after, _ := d.Stats()
				t.Fatalf("listener on %s got nothing: %v (counters before %v, after %v)", vip, err, before.Map(), after.Map())
			}
			want := netip.AddrPortFrom(netip.MustParseAddr(src), 40000)
			if string(buf[:n]) != payload || netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != want {
				t.Fatalf("listener got %q from %s, want %q from %s", buf[:n], from, payload, want)
			}
			after, _ := d.Stats()
			if got := after[c.stat] - before[c.stat]; got != 1 {
				t.Errorf("counter %s changed by %d, want 1", c.stat, got)
			}
		})
	}

	// TCP: a SYN through the tunnel reaches the listener's stack, whose
	// SYN-ACK goes straight back to the client (out of vR, seen on vL).
	for _, c := range []struct {
		name     string
		vip, src string
		outer6   bool
	}{
		{"tcp ipip 4in4", labVIP4.String(), client4, false},
		{"tcp ipip 6in6", labVIP6.String(), client6, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ln net.Listener
			err := l.real.do(func() error {
				var err error
				ln, err = net.Listen("tcp", net.JoinHostPort(c.vip, "9001"))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			syn := clientPacket(t, c.src, c.vip, 40001, 9001, true, "")
			l.send(t, l.frame(t, syn, c.outer6, false))
			if err := l.expectSynAck(t, c.vip, c.src, 9001, 40001); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// expectSynAck reads frames on vL until the real's SYN-ACK from vip:vport
// to client:cport, for at most two seconds.
func (l *realLab) expectSynAck(t testing.TB, vip, client string, vport, cport uint16) error {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(l.pkt, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read vL: %w", err)
		}
		p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
		tl, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || p.NetworkLayer() == nil {
			continue
		}
		src, dst := p.NetworkLayer().NetworkFlow().Endpoints()
		if src.String() == vip && dst.String() == client && uint16(tl.SrcPort) == vport &&
			uint16(tl.DstPort) == cport && tl.SYN && tl.ACK && tl.Ack == 1001 {
			return nil
		}
	}
	return fmt.Errorf("no SYN-ACK from %s:%d to %s:%d within 2s", vip, vport, client, cport)
}

// TestHealthCheckTraffic: a probe sent on the LB side with a socket mark
// leaves vL encapsulated by the health-check program (egress), is
// decapsulated on the real (ingress) and reaches the listener on the VIP;
// an unmarked packet is left alone.
func TestHealthCheckTraffic(t *testing.T) {
	d := newTestDecap(t)
	if err := d.SetVIPs([]netip.Addr{labVIP4, labVIP6}); err != nil {
		t.Fatal(err)
	}
	l := newRealLab(t)
	h, err := LoadHCEncap(16, HCConfig{SourceV4: netip.MustParseAddr("10.99.0.1"), SourceV6: netip.MustParseAddr("fd99::1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := h.SetReal(markReal4, netip.MustParseAddr("10.99.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := h.SetReal(markReal6, netip.MustParseAddr("fd99::2")); err != nil {
		t.Fatal(err)
	}
	dec, err := attachIn(l.real, "vR", d.Program(), AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dec.Detach() })
	enc, err := attachIn(l.lb, "vL", h.Program(), AttachOptions{Direction: Egress})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.Detach() })
	// The LB side routes the VIPs to the real, as a gateway would.
	l.lb.must(t, func() error {
		for _, r := range [][2]string{{labVIP4.String() + "/32", "10.99.0.2"}, {labVIP6.String() + "/128", "fd99::2"}} {
			if err := addRoute(r[0], r[1]); err != nil {
				return err
			}
		}
		if err := setNeigh("vL", "10.99.0.2", l.realMAC); err != nil {
			return err
		}
		return setNeigh("vL", "fd99::2", l.realMAC)
	})

	for _, c := range []struct {
		name  string
		vip   netip.Addr
		mark  int
		hstat HCStat
		dstat Stat
	}{
		{"ipv4 probe", labVIP4, markReal4, HCStatEncap4in4, StatIPIP4in4},
		{"ipv6 probe", labVIP6, markReal6, HCStatEncap6in6, StatIPIP6in6},
		{"ipv4 unmarked", labVIP4, 0, HCStatPassUnmarked, StatPassNotTunnel},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln := l.listenUDP(t, c.vip, 9100)
			hb, _ := h.Stats()
			db, _ := d.Stats()
			err := l.lb.do(func() error {
				conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.vip, 9100)))
				if err != nil {
					return err
				}
				defer conn.Close()
				raw, err := conn.SyscallConn()
				if err != nil {
					return err
				}
				var serr error
				if err := raw.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, c.mark)
				}); err != nil {
					return err
				}
				if serr != nil {
					return fmt.Errorf("SO_MARK: %w", serr)
				}
				_, err = conn.Write([]byte("probe " + c.name))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 512)
			ln.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := ln.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "probe "+c.name {
				t.Fatalf("listener on %s: %q, %v", c.vip, buf[:n], err)
			}
			ha, _ := h.Stats()
			da, _ := d.Stats()
			// Exact for probes; unmarked also counts the namespaces' own ND/MLD.
			if got := ha[c.hstat] - hb[c.hstat]; got != 1 && (c.mark != 0 || got < 1) {
				t.Errorf("health-check counter %s changed by %d: %v -> %v", c.hstat, got, hb, ha)
			}
			if got := da[c.dstat] - db[c.dstat]; got != 1 && (c.mark != 0 || got < 1) {
				t.Errorf("decap counter %s changed by %d: %v -> %v", c.dstat, got, db.Map(), da.Map())
			}
		})
	}
}
