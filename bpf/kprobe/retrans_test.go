package kprobe

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/nsexec"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// inNetns runs f on an OS thread inside ns (sockets f opens stay there).
func inNetns(ns netns.NsHandle, f func() error) error { return nsexec.Do(ns, f) }

// newNetns makes an unnamed network namespace with lo up.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	h, err := nsexec.New()
	if err == nil {
		err = nsexec.Do(h, func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return netlink.LinkSetUp(lo)
		})
	}
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestRetransmitsCounted: a connection between two namespaces over a veth
// pair loses packets while the receiver lacks its address, so TCP
// retransmits; the tracer's count equals the kernel's (TCP_INFO
// tcpi_total_retrans), in every mode this kernel has.
func TestRetransmitsCounted(t *testing.T) {
	privtest.Require(t)
	for _, mode := range modesHere(t) {
		t.Run(string(mode), func(t *testing.T) {
			// A run of the tracer's retransmit hook that the kernel skipped
			// (another BPF program was running on that CPU, e.g. the tracer
			// itself in process context when the timer softirq came: more
			// likely on a loaded machine, and counted in HookMisses) loses one
			// retransmit that cannot be told apart from a bug: such a run is
			// repeated, at most 3 times; one with no skipped run must match.
			attempt := func() (matched bool) {
				tr, _ := startTracer(t, Options{Mode: mode})
				a, b := newNetns(t), newNetns(t)
				sfx := make([]byte, 3)
				rand.Read(sfx)
				va, vb := "lbdra"+hex.EncodeToString(sfx), "lbdrb"+hex.EncodeToString(sfx)
				la := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: va, Namespace: netlink.NsFd(a)}, PeerName: vb, PeerNamespace: netlink.NsFd(b)}
				if err := netlink.LinkAdd(la); err != nil {
					t.Fatalf("veth: %v", err)
				}
				setup := func(ns netns.NsHandle, name, addr string) {
					if err := inNetns(ns, func() error {
						l, err := netlink.LinkByName(name)
						if err != nil {
							return err
						}
						a, _ := netlink.ParseAddr(addr)
						if err := netlink.AddrAdd(l, a); err != nil {
							return err
						}
						return netlink.LinkSetUp(l)
					}); err != nil {
						t.Fatalf("set up %s: %v", name, err)
					}
				}
				setup(a, va, "10.213.7.1/24")
				setup(b, vb, "10.213.7.2/24")
				// b drops what it receives while it lacks its address (silently:
				// a's transmissions succeed, so TCP retransmits on its timer)
				addrB := func(present bool) {
					if err := inNetns(b, func() error {
						l, err := netlink.LinkByName(vb)
						if err != nil {
							return err
						}
						a, _ := netlink.ParseAddr("10.213.7.2/24")
						if present {
							return netlink.AddrAdd(l, a)
						}
						return netlink.AddrDel(l, a)
					}); err != nil {
						t.Fatal(err)
					}
				}
				var ln net.Listener
				if err := inNetns(b, func() (err error) { ln, err = net.Listen("tcp4", "10.213.7.2:0"); return err }); err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				got := make(chan int64, 1)
				go func() {
					// A dial below that timed out may still have been
					// completed here and be accepted first, then closed
					// by the client: read the connection that carries
					// the data, whichever it is.
					for {
						c, err := ln.Accept()
						if err != nil {
							got <- -1
							return
						}
						n, _ := io.CopyN(io.Discard, c, 2000)
						c.Close()
						if n > 0 {
							got <- n
							return
						}
					}
				}()
				// The kernel's tcpi_total_retrans also counts SYN
				// retransmissions (before the connection is established, so
				// not the tracer's) and retransmissions the local stack
				// failed to send (no tracepoint): under load a SYN may wait
				// past its 1 s timer, and a full backlog fails a send. Both
				// are counted in the namespace's own TcpExt counters, which
				// only this test's sockets touch: read them around the dial
				// that succeeded and subtract them.
				var c net.Conn
				var dialErr error
				var before tcpExt
				for i := 0; i < 50; i++ { // the veth may take a moment to carry traffic
					if err := inNetns(a, func() (err error) {
						if before, err = readTCPExt(); err != nil {
							return err
						}
						c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
						return err
					}); err == nil {
						dialErr = nil
						break
					} else {
						dialErr = err
					}
					time.Sleep(50 * time.Millisecond)
				}
				if dialErr != nil {
					t.Fatalf("dial across the veth: %v", dialErr)
				}
				defer c.Close()
				if _, err := c.Write(make([]byte, 1000)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
				addrB(false)
				if _, err := c.Write(make([]byte, 1000)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(700 * time.Millisecond) // RTO >= 200ms: at least one retransmission
				addrB(true)
				select {
				case n := <-got:
					if n != 2000 {
						t.Fatalf("server read %d bytes, want 2000", n)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("data never arrived after the address came back")
				}
				raw, err := c.(*net.TCPConn).SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				// The kernel's count is final once nothing is left unacked
				// (no retransmission timer can fire again).
				var info *unix.TCPInfo
				for deadline := time.Now().Add(20 * time.Second); ; {
					raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
					if err != nil {
						t.Fatal(err)
					}
					if info.Unacked == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%d segments still unacked 20 s after the server read everything", info.Unacked)
					}
					time.Sleep(20 * time.Millisecond)
				}
				if info.Total_retrans == 0 {
					t.Fatalf("the kernel retransmitted nothing: test did not lose packets")
				}
				var after tcpExt
				if err := inNetns(a, func() (err error) { after, err = readTCPExt(); return err }); err != nil {
					t.Fatal(err)
				}
				synRetrans, failed := after.synRetrans-before.synRetrans, after.retransFail-before.retransFail
				want := info.Total_retrans - uint32(synRetrans) - uint32(failed)
				local := c.LocalAddr().(*net.TCPAddr)
				// Only this namespace's connection from this port: the
				// tracer sees the whole machine, and the same port may be
				// in use in other namespaces at the same moment.
				conns, err := tr.Connections(Filter{Netns: nsInode(t, a), Port: uint16(local.Port), Proto: lb.TCP, State: StateOpen})
				if err != nil {
					t.Fatal(err)
				}
				var found *Connection
				for i := range conns {
					if conns[i].Src.Port() == uint16(local.Port) {
						if found != nil {
							t.Fatalf("two traced connections from %s in the test's namespace: %+v", local, conns)
						}
						found = &conns[i]
					}
				}
				if found == nil {
					t.Fatalf("client connection %s not traced: %+v", local, conns)
				}
				t.Logf("kernel total_retrans %d (of which SYN %d, failed to send %d), tracer %d, netns %d", info.Total_retrans, synRetrans, failed, found.Retransmits, found.Netns)
				if found.PID != uint32(os.Getpid()) {
					t.Errorf("connection owned by pid %d, want %d", found.PID, os.Getpid())
				}
				if found.Retransmits != want {
					if misses := tr.Status().HookMisses; misses > 0 {
						t.Logf("tracer counted %d retransmits, the kernel %d, and the kernel skipped %d runs of the tracer's hooks meanwhile: again", found.Retransmits, want, misses)
						return false
					}
					// the kernel also skips a hook run without counting it
					// (docs/tracer.md, seen on 6.18 for a state change in
					// softirq on top of an unrelated task): one retransmit
					// short is repeated too; a bug would be short every time
					if found.Retransmits+1 == want {
						t.Logf("tracer counted %d retransmits, the kernel %d, no hook run counted as skipped (the kernel does not count them all): again", found.Retransmits, want)
						return false
					}
					t.Errorf("tracer counted %d retransmits, the kernel %d sent (total_retrans %d - SYN %d - failed %d), no hook run skipped", found.Retransmits, want, info.Total_retrans, synRetrans, failed)
				}
				if found.BytesSent != 2000 {
					t.Errorf("bytes sent %d, want 2000", found.BytesSent)
				}
				return true
			}
			for i := 1; ; i++ {
				if attempt() {
					return
				}
				if i == 3 {
					t.Fatal("3 runs in a row had skipped hook runs (counted, or one retransmit short): cannot compare retransmit counts")
				}
			}
		})
	}
}

// nsInode is the inode of a network namespace (what the tracer reports).
func nsInode(t *testing.T, ns netns.NsHandle) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		t.Fatalf("stat netns: %v", err)
	}
	return uint32(st.Ino)
}

// tcpExt holds the TcpExt counters of the calling thread's network
// namespace that tcpi_total_retrans counts but tcp:tcp_retransmit_skb
// does not see.
type tcpExt struct{ synRetrans, retransFail uint64 }

// readTCPExt reads them from /proc/thread-self/net/netstat (the thread's
// namespace; /proc/self/net is the main thread's).
func readTCPExt() (tcpExt, error) {
	data, err := os.ReadFile("/proc/thread-self/net/netstat")
	if err != nil {
		return tcpExt{}, err
	}
	var names, values []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f
		} else {
			values = f
		}
	}
	if len(names) == 0 || len(names) != len(values) {
		return tcpExt{}, fmt.Errorf("netstat: no TcpExt counters in %q", data)
	}
	var e tcpExt
	found := 0
	for i, n := range names {
		var dst *uint64
		switch n {
		case "TCPSynRetrans":
			dst = &e.synRetrans
		case "TCPRetransFail":
			dst = &e.retransFail
		default:
			continue
		}
		v, err := strconv.ParseUint(values[i], 10, 64)
		if err != nil {
			return tcpExt{}, fmt.Errorf("netstat %s: %w", n, err)
		}
		*dst = v
		found++
	}
	if found != 2 {
		return tcpExt{}, fmt.Errorf("netstat: TcpExt lacks TCPSynRetrans or TCPRetransFail")
	}
	return e, nil
}
