package kprobe

import (
	"net"
	"os"
	"testing"
	"time"
)

// udpFlows sends one datagram on n new connected UDP sockets (n flows)
// and returns the receiver's port.
func udpFlows(t *testing.T, n int) uint16 {
	t.Helper()
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for i := 0; i < n; i++ {
		c, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	return uint16(srv.LocalAddr().(*net.UDPAddr).Port)
}

// TestIdleExpiry: an idle UDP flow leaves the map after the UDP idle
// time, with an Expire event carrying its numbers.
func TestIdleExpiry(t *testing.T) {
	tr, col := startTracer(t, Options{UDPIdle: 300 * time.Millisecond, ExpireEvery: 100 * time.Millisecond})
	port := udpFlows(t, 1)
	pid := uint32(os.Getpid())
	open := func() int {
		c, err := tr.Connections(Filter{PID: pid, Port: port, Proto: UDP, State: StateOpen})
		if err != nil {
			t.Fatal(err)
		}
		return len(c)
	}
	if n := open(); n != 1 {
		t.Fatalf("%d open flows to port %d right after sending, want 1", n, port)
	}
	deadline := time.Now().Add(5 * time.Second)
	for open() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle UDP flow never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var expired *Event
	for _, ev := range col.snapshot() {
		if ev.Type == EventExpire && ev.PID == pid && ev.Dst.Port() == port {
			expired = &ev
		}
	}
	if expired == nil || expired.BytesSent != 5 || expired.Proto != UDP {
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
	udpFlows(t, 32)
	st := tr.Status()
	if st.StatsMapFull == 0 {
		t.Fatalf("32 flows into an 8-entry map, stats_map_full = 0 (connections %d)", st.Connections)
	}
	t.Logf("connections %d, stats_map_full %d", st.Connections, st.StatsMapFull)
}
