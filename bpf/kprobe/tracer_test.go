package kprobe

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	lbdfeatures "github.com/lbd-dev/lbd/bpf/features"
	"github.com/lbd-dev/lbd/internal/nsexec"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// ownNetns makes a network namespace for one test (lo up) and returns it
// with its inode. The tracer sees the whole machine, and in softirq
// context it may even see another namespace's packets under this
// process's pid: a test makes its traffic in a namespace of its own and
// looks only at what the tracer saw there (Filter.Netns, Event.Netns).
func ownNetns(t *testing.T) (netns.NsHandle, uint32) {
	t.Helper()
	h := newNetns(t)
	return h, nsInode(t, h)
}

// inOwn runs f on a thread inside ns and fails the test on its error.
func inOwn(t *testing.T, ns netns.NsHandle, f func() error) {
	t.Helper()
	if err := nsexec.Do(ns, f); err != nil {
		t.Fatal(err)
	}
}

// modesHere lists the attach modes the running kernel supports.
func modesHere(t *testing.T) []Mode {
	var modes []Mode
	if lbdfeatures.HaveKprobes() {
		modes = append(modes, ModeKprobe)
	}
	if err := ensureTracefs(); err == nil && haveTracepoint("sock", "sock_send_length") {
		modes = append(modes, ModeTracepoint)
	}
	if len(modes) == 0 {
		privtest.Unavailable(t, "kernel has neither kprobes nor sock:sock_send_length")
	}
	return modes
}

// collector keeps every event in arrival order.
type collector struct {
	mu     sync.Mutex
	events []Event
}

func (c *collector) add(ev Event) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

func (c *collector) snapshot() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

func startTracer(t *testing.T, opts Options) (*Tracer, *collector) {
	t.Helper()
	privtest.Require(t)
	col := &collector{}
	opts.OnEvent = col.add
	if opts.KeepClosed == 0 {
		// The tracer sees every connection on the machine, and other test
		// packages run at the same time (lab tests make thousands): keep
		// enough closed ones that the test's own are still there.
		opts.KeepClosed = 1 << 16
	}
	tr, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		privtest.CheckNotSupported(t, "start tracer", err)
	}
	t.Cleanup(func() { tr.Stop() })
	return tr, col
}

// TestTracerReportsWorkload: a child process makes TCP and UDP flows over
// IPv4 and IPv6, in the root netns and in one it creates; the tracer must
// report exactly those, with the child's pid, comm, netns inode, ports and
// byte counts, connect/accept before close. Every mode this kernel has,
// with CO-RE and with guessed offsets, ring and perf buffer.
func TestTracerReportsWorkload(t *testing.T) {
	privtest.Require(t)
	for _, mode := range modesHere(t) {
		for _, c := range []struct {
			name string
			opts Options
		}{
			{"core", Options{}},
			{"guessed", Options{Guess: true}},
			{"perf", Options{PerfBuffer: true}},
			{"accept-syscalls", Options{AcceptSyscalls: true}},
			// as on a kernel without BTF: guessed offsets, no CO-RE at all
			{"nobtf", Options{noBTF: true}},
		} {
			t.Run(string(mode)+"/"+c.name, func(t *testing.T) {
				opts := c.opts
				opts.Mode = mode
				tr, col := startTracer(t, opts)
				st := tr.Status()
				t.Logf("status: mode=%s offsets=%s (%s) buffer=%s fd_install=%v accept_by=%s attached=%v", st.Mode, st.OffsetSource, st.Offsets, st.Buffer, st.FdInstall, st.AcceptBy, st.Attached)
				rep := runChild(t, true)
				if !tr.Flush(5 * time.Second) {
					t.Fatalf("events not all delivered: %v", tr.Status().Events)
				}
				checkWorkload(t, tr, col.snapshot(), rep)
				// Lost events may be anyone's (the buffer takes the whole
				// machine's); checkWorkload has seen every one of the
				// child's arrive.
				if lost := tr.Lost(); sum(lost) != 0 {
					t.Logf("events lost (not the child's): %v", lost)
				}
				if m := tr.Status().KprobeMissed; m != nil {
					t.Logf("kprobe hits missed: %d", *m)
					if *m != 0 {
						t.Errorf("kprobes missed %d hits", *m)
					}
				}
			})
		}
	}
}

func sum(m map[EventType]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func checkWorkload(t *testing.T, tr *Tracer, events []Event, rep workloadReport) {
	t.Helper()
	// events of the child only, by connection (client/server end)
	type end struct {
		src, dst netip.AddrPort
		netns    uint32
	}
	byEnd := map[end][]Event{}
	for _, ev := range events {
		if ev.PID != uint32(rep.PID) {
			continue
		}
		if ev.Comm != rep.Comm {
			t.Errorf("event %v %s: comm %q, want %q", ev.Type, ev.Src, ev.Comm, rep.Comm)
		}
		k := end{ev.Src, ev.Dst, ev.Netns}
		byEnd[k] = append(byEnd[k], ev)
	}
	conns, err := tr.Connections(Filter{PID: uint32(rep.PID)})
	if err != nil {
		t.Fatal(err)
	}
	connOf := func(proto lb.Proto, src, dst netip.AddrPort, netns uint32) *Connection {
		for i := range conns {
			c := &conns[i]
			if c.Proto == proto && c.Src == src && c.Dst == dst && c.Netns == netns {
				return c
			}
		}
		return nil
	}
	seen := 0
	for _, f := range rep.Flows {
		cli, srv := mustAddrPort(t, f.Client), mustAddrPort(t, f.Server)
		cli = netip.AddrPortFrom(cli.Addr().Unmap(), cli.Port())
		srv = netip.AddrPortFrom(srv.Addr().Unmap(), srv.Port())
		name := fmt.Sprintf("%s %s->%s netns %d", f.Proto, cli, srv, f.Netns)
		switch f.Proto {
		case "tcp":
			for _, side := range []struct {
				what       string
				src, dst   netip.AddrPort
				open       EventType
				sent, recv int
			}{
				{"client", cli, srv, EventConnect, f.C2S, f.S2C},
				{"server", srv, cli, EventAccept, f.S2C, f.C2S},
			} {
				evs := byEnd[end{side.src, side.dst, f.Netns}]
				seen += len(evs)
				sort.SliceStable(evs, func(i, j int) bool { return evs[i].Monotonic < evs[j].Monotonic })
				if len(evs) != 2 || evs[0].Type != side.open || evs[1].Type != EventClose {
					t.Errorf("%s %s: events %v, want [%v close]", name, side.what, types(evs), side.open)
					continue
				}
				cl := evs[1]
				if cl.Proto != lb.TCP || cl.BytesSent != uint64(side.sent) || cl.BytesRecv != uint64(side.recv) {
					t.Errorf("%s %s: close says sent %d recv %d (proto %v), want %d/%d", name, side.what, cl.BytesSent, cl.BytesRecv, cl.Proto, side.sent, side.recv)
				}
				if c := connOf(lb.TCP, side.src, side.dst, f.Netns); c == nil || c.State != StateClosed || c.BytesSent != uint64(side.sent) {
					t.Errorf("%s %s: Connections has %+v, want it closed with %d bytes sent", name, side.what, c, side.sent)
				}
			}
		case "udp":
			for _, side := range []struct {
				what       string
				src, dst   netip.AddrPort
				first      EventType
				sent, recv int
			}{
				{"client", cli, srv, EventUDPSend, f.C2S, f.S2C},
				{"server", srv, cli, EventUDPRecv, f.S2C, f.C2S},
			} {
				evs := byEnd[end{side.src, side.dst, f.Netns}]
				seen += len(evs)
				if len(evs) != 1 || evs[0].Type != side.first {
					t.Errorf("%s %s: events %v, want [%v]", name, side.what, types(evs), side.first)
				}
				c := connOf(lb.UDP, side.src, side.dst, f.Netns)
				if c == nil || c.State != StateOpen || c.BytesSent != uint64(side.sent) || c.BytesRecv != uint64(side.recv) {
					t.Errorf("%s %s: Connections has %+v, want open with sent %d recv %d", name, side.what, c, side.sent, side.recv)
				}
			}
		}
	}
	// In the namespace the child starts in (this process's, shared with
	// the rest of the machine), a softirq
	// may handle another process's packets while the child is current
	// and so carry its pid: there only the child's own flows count. In
	// the namespace the child made, every event with its pid is its.
	expected := map[end]bool{}
	for _, f := range rep.Flows {
		cli, srv := mustAddrPort(t, f.Client), mustAddrPort(t, f.Server)
		cli = netip.AddrPortFrom(cli.Addr().Unmap(), cli.Port())
		srv = netip.AddrPortFrom(srv.Addr().Unmap(), srv.Port())
		expected[end{cli, srv, f.Netns}], expected[end{srv, cli, f.Netns}] = true, true
	}
	shared, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for k, evs := range byEnd {
		if k.netns == shared && !expected[k] {
			t.Logf("ignored: events %v of %v->%v in the shared namespace under the child's pid", types(evs), k.src, k.dst)
			continue
		}
		total += len(evs)
	}
	if total != seen {
		for k, evs := range byEnd {
			t.Logf("child event group %v: %v", k, types(evs))
		}
		t.Errorf("child produced %d events, %d expected ones", total, seen)
	}
}

func types(evs []Event) []EventType {
	var l []EventType
	for _, e := range evs {
		l = append(l, e.Type)
	}
	return l
}
