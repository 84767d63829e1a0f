package kprobe

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/lb"
)

// TestUDPUnconnectedPeers: a server socket that is not connected answers
// two clients. In kprobe mode its flows are per peer (the address comes
// from the message); in tracepoint mode the kernel hands over only the
// socket, so its traffic is summed under the unspecified peer.
func TestUDPUnconnectedPeers(t *testing.T) {
	for _, mode := range modesHere(t) {
		t.Run(string(mode), func(t *testing.T) {
			tr, _ := startTracer(t, Options{Mode: mode})
			// The test's own namespace: the tracer sees the whole machine.
			ns, ino := ownNetns(t)
			var srv *net.UDPConn
			inOwn(t, ns, func() (err error) {
				srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				return err
			})
			defer srv.Close()
			sp := srv.LocalAddr().(*net.UDPAddr).AddrPort()
			var peers []netip.AddrPort
			buf := make([]byte, 100)
			for i, size := range []int{11, 22} {
				var c *net.UDPConn
				inOwn(t, ns, func() (err error) {
					c, err = net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
					return err
				})
				defer c.Close()
				c.Write(make([]byte, size))
				n, from, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil || n != size {
					t.Fatalf("server read %d from %v: %v", n, from, err)
				}
				srv.WriteToUDPAddrPort(make([]byte, 3+i), from)
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(buf); err != nil {
					t.Fatal(err)
				}
				peers = append(peers, from)
			}
			conns, err := tr.Connections(Filter{Netns: ino, PID: uint32(os.Getpid()), Port: sp.Port(), Proto: lb.UDP})
			if err != nil {
				t.Fatal(err)
			}
			server := map[netip.AddrPort]Connection{}
			for _, c := range conns {
				if c.Src == sp {
					server[c.Dst] = c
				}
			}
			if mode == ModeKprobe {
				for i, p := range peers {
					c, ok := server[p]
					if !ok || c.BytesRecv != uint64(11*(i+1)) || c.BytesSent != uint64(3+i) {
						t.Errorf("server flow with %s: %+v (found %v), want recv %d sent %d; all: %v", p, c, ok, 11*(i+1), 3+i, server)
					}
				}
				return
			}
			any := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
			if c, ok := server[any]; !ok || c.BytesRecv != 33 || c.BytesSent != 7 {
				t.Errorf("server traffic under %s: %+v (found %v), want recv 33 sent 7; all: %v", any, c, ok, server)
			}
		})
	}
}
