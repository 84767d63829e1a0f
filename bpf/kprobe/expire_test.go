package kprobe

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/lb"
)

// udpFlows sends one datagram on n new connected UDP sockets (n flows)
// over the loopback of a network namespace of the test's own, and
// returns the receiver's port and the namespace's inode.
func udpFlows(t *testing.T, n int) (uint16, uint32) {
	t.Helper()
	ns, ino := ownNetns(t)
	var srv *net.UDPConn
	inOwn(t, ns, func() error {
		var err error
		if srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			c, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				return err
			}
			_, err = c.Write([]byte("hello"))
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	t.Cleanup(func() { srv.Close() })
	return uint16(srv.LocalAddr().(*net.UDPAddr).Port), ino
}

// TestIdleExpiry: an idle UDP flow leaves the map after the UDP idle
// time, with an Expire event carrying its numbers.
func TestIdleExpiry(t *testing.T) {
	tr, col := startTracer(t, Options{UDPIdle: 300 * time.Millisecond, ExpireEvery: 100 * time.Millisecond})
	port, ino := udpFlows(t, 1)
	pid := uint32(os.Getpid())
	open := func() int {
		c, err := tr.Connections(Filter{Netns: ino, PID: pid, Port: port, Proto: lb.UDP, State: StateOpen})
		if err != nil {
			t.Fatal(err)
		}
		return len(c)
	}
	// Only the test's namespace: the tracer sees the whole machine, and
	// a softirq may run another namespace's packets to the same port
	// under this pid. The flow may already have expired on a loaded
	// machine (300 ms is short); then its expire event below proves it
	// was tracked.
	if n := open(); n > 1 {
		t.Fatalf("%d open flows to port %d in the test's namespace, want 1", n, port)
	} else if n == 0 {
		t.Logf("flow to port %d expired before the first look", port)
	}
	deadline := time.Now().Add(5 * time.Second)
	for open() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle UDP flow never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Expire deletes the entries first and delivers their events after:
	// on a loaded machine the event may come a moment after the entry
	// went.
	var expired *Event
	for deadline := time.Now().Add(5 * time.Second); expired == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, ev := range col.snapshot() {
			if ev.Type == EventExpire && ev.Netns == ino && ev.PID == pid && ev.Dst.Port() == port {
				if expired != nil {
					t.Fatalf("two expire events for the one flow: %+v, %+v", *expired, ev)
				}
				expired = &ev
			}
		}
	}
	if expired == nil || expired.BytesSent != 5 || expired.Proto != lb.UDP {
		t.Fatalf("expire event %+v, want one with 5 bytes sent", expired)
	}
	if st := tr.Status(); st.Expired == 0 {
		t.Errorf("status counts no expired entry: %+v", st)
	}
}

// TestFullMapIsCounted: with room for 8 connections, 32 new UDP flows
// must show up as stats_map_full, not vanish.
func TestFullMapIsCounted(t *testing.T) {
	tr, _ := startTracer(t, Options{MaxConnections: 8})
	_, ino := udpFlows(t, 32)
	st := tr.Status()
	if st.StatsMapFull == 0 {
		t.Fatalf("32 flows into an 8-entry map, stats_map_full = 0 (connections %d)", st.Connections)
	}
	// The full count may come from other traffic on the machine; the
	// test's own flows must be counted too: at most 8 of its 32 were
	// kept (all 8 entries may hold other connections).
	ours, err := tr.Connections(Filter{Netns: ino, Proto: lb.UDP, State: StateOpen})
	if err != nil {
		t.Fatal(err)
	}
	if len(ours) > 8 {
		t.Errorf("%d of the test's flows in an 8-entry map", len(ours))
	}
	t.Logf("connections %d (of the test's %d), stats_map_full %d", st.Connections, len(ours), st.StatsMapFull)
}
