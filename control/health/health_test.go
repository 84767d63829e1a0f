package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRiseAndFall(t *testing.T) {
	spec := Spec{Type: TCP, Rise: 2, Fall: 3}.Defaults()
	s := Status{State: Up}
	seq := []struct {
		ok        bool
		changed   bool
		wantState State
	}{
		{false, false, Up}, {false, false, Up}, {true, false, Up}, // a success resets the failures
		{false, false, Up}, {false, false, Up}, {false, true, Down}, // third failure in a row
		{false, false, Down}, {true, false, Down}, {false, false, Down}, // a failure resets the successes
		{true, false, Down}, {true, true, Up}, {true, false, Up},
	}
	for i, step := range seq {
		changed := s.apply(Result{OK: step.ok, Reason: "r", At: time.Unix(int64(i), 0)}, spec)
		if changed != step.changed || s.State != step.wantState {
			t.Fatalf("step %d: changed %v state %s, want %v %s", i, changed, s.State, step.changed, step.wantState)
		}
	}
	if s.LastChange != time.Unix(10, 0) || !strings.Contains(s.Reason, "2 successes") {
		t.Errorf("last change %v reason %q", s.LastChange, s.Reason)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		port uint16
		want string
	}{
		{Spec{Type: "ping"}, 80, "use none, tcp"},
		{Spec{Type: TCP}, 0, "port-less VIP"},
		{Spec{Type: TCP, Interval: time.Millisecond}, 80, "interval"},
		{Spec{Type: TCP, Interval: time.Second, Timeout: 2 * time.Second}, 80, "at most the interval"},
		{Spec{Type: TCP, Rise: 1000}, 80, "rise"},
		{Spec{Type: HTTP, Path: "health"}, 80, "must start with /"},
	} {
		err := tc.spec.Defaults().Validate(tc.port)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.spec, err, tc.want)
		}
	}
	if err := (Spec{Type: HTTP}).Defaults().Validate(80); err != nil {
		t.Error(err)
	}
	if err := (Spec{}).Defaults().Validate(0); err != nil {
		t.Error(err)
	}
}

// scripted answers probes from a per-real switch and counts them.
type scripted struct {
	mu      sync.Mutex
	healthy map[netip.Addr]bool
	probes  atomic.Int64
	running atomic.Int64
	maxRun  atomic.Int64
}

func (p *scripted) Probe(ctx context.Context, t Target, _ Spec) Result {
	p.probes.Add(1)
	n := p.running.Add(1)
	defer p.running.Add(-1)
	for {
		m := p.maxRun.Load()
		if n <= m || p.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(2 * time.Millisecond)
	p.mu.Lock()
	ok := p.healthy[t.Real]
	p.mu.Unlock()
	return Result{OK: ok, At: time.Now(), Reason: map[bool]string{true: "ok", false: "refused"}[ok]}
}

func (p *scripted) set(a netip.Addr, ok bool) {
	p.mu.Lock()
	p.healthy[a] = ok
	p.mu.Unlock()
}

func TestCheckerReportsChangesAndCapsConcurrency(t *testing.T) {
	r1, r2 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	p := &scripted{healthy: map[netip.Addr]bool{r1: true, r2: true}}
	changes := make(chan Change, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewChecker(ctx, p, 1, func(ch Change) { changes <- ch })
	spec := Spec{Type: TCP, Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 2}
	dest := netip.MustParseAddrPort("192.0.2.1:80")
	set := map[Key]struct {
		Target Target
		Spec   Spec
	}{
		{"v", r1}: {Target{VIP: "v", Dest: dest, Real: r1}, spec},
		{"v", r2}: {Target{VIP: "v", Dest: dest, Real: r2}, spec},
	}
	c.Set(set)
	if st, ok := c.Status(Key{"v", r1}); !ok || st.State != Up {
		t.Fatalf("a new real starts up: %+v %v", st, ok)
	}
	p.set(r2, false)
	select {
	case ch := <-changes:
		if ch.Key.Real != r2 || ch.Status.State != Down || !strings.Contains(ch.Status.Reason, "refused") {
			t.Fatalf("change %+v", ch)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("r2 never went down")
	}
	p.set(r2, true)
	select {
	case ch := <-changes:
		if ch.Key.Real != r2 || ch.Status.State != Up {
			t.Fatalf("change %+v", ch)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("r2 never came back")
	}
	if m := p.maxRun.Load(); m != 1 {
		t.Errorf("%d probes ran at once, cap is 1", m)
	}
	// Removing checks stops them.
	c.Set(nil)
	time.Sleep(30 * time.Millisecond)
	n := p.probes.Load()
	time.Sleep(100 * time.Millisecond)
	if p.probes.Load() != n {
		t.Error("removed checks still probe")
	}
	if _, ok := c.Status(Key{"v", r1}); ok {
		t.Error("removed check still has a status")
	}
}

// TestStateShowsOnceApplied: while onChange applies a new state (the
// controller rebuilding the ring), Status still reports the old one, so
// that no reader sees "down" while the real is still in the ring; once
// onChange returns, Status reports the new state.
func TestStateShowsOnceApplied(t *testing.T) {
	r1 := netip.MustParseAddr("10.0.0.1")
	p := &scripted{healthy: map[netip.Addr]bool{r1: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := Key{"v", r1}
	var c *Checker
	type seen struct{ during, change State }
	applying := make(chan seen, 4)
	c = NewChecker(ctx, p, 1, func(ch Change) {
		st, _ := c.Status(k)
		applying <- seen{st.State, ch.Status.State}
	})
	spec := Spec{Type: TCP, Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 2}
	c.Set(map[Key]struct {
		Target Target
		Spec   Spec
	}{k: {Target{VIP: "v", Dest: netip.MustParseAddrPort("192.0.2.1:80"), Real: r1}, spec}})
	for _, step := range []struct {
		healthy bool
		from    State
		to      State
	}{{false, Up, Down}, {true, Down, Up}} {
		p.set(r1, step.healthy)
		select {
		case s := <-applying:
			if s.change != step.to || s.during != step.from {
				t.Fatalf("while %s was applied, Status said %s, want %s", s.change, s.during, step.from)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("r1 never went %s", step.to)
		}
		deadline := time.Now().Add(time.Second)
		for {
			st, _ := c.Status(k)
			if st.State == step.to && strings.Contains(st.Reason, "in a row") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after onChange returned, Status says %+v, want %s", st, step.to)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func TestNetProber(t *testing.T) {
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	probe := func(s Spec, port uint16) Result {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return NetProber{}.Probe(ctx, Target{Dest: netip.AddrPortFrom(lo, port), Real: lo}, s.Defaults())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	if r := probe(Spec{Type: TCP}, open); r.OK || !strings.HasSuffix(r.Reason, "connect: connection refused") {
		t.Errorf("closed port: %+v", r)
	}
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if r := probe(Spec{Type: TCP}, uint16(ln.Addr().(*net.TCPAddr).Port)); !r.OK {
		t.Errorf("open port: %+v", r)
	}

	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	port := netip.MustParseAddrPort(srv.Listener.Addr().String()).Port()
	if r := probe(Spec{Type: HTTP, Path: "/healthz"}, port); !r.OK || r.Reason != "HTTP 200" {
		t.Errorf("http 200: %+v", r)
	}
	status = http.StatusServiceUnavailable
	if r := probe(Spec{Type: HTTP, Path: "/healthz"}, port); r.OK || !strings.Contains(r.Reason, "HTTP status 503, want 200") {
		t.Errorf("http 503: %+v", r)
	}

	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 100)
		for {
			n, a, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(buf[:n], a)
		}
	}()
	uport := uint16(uc.LocalAddr().(*net.UDPAddr).Port)
	if r := probe(Spec{Type: UDP}, uport); !r.OK {
		t.Errorf("udp echo: %+v", r)
	}
	uc.Close()
	if r := probe(Spec{Type: UDP}, uport); r.OK || !strings.Contains(r.Reason, "refused") {
		t.Errorf("udp closed port: %+v", r)
	}
}

// TestProbesShowFromTheFirstResult: a check's status says what the probes
// saw from the first result on: the last probe's time and outcome and the
// successes or failures in a row, for a real that answers and for one that
// fails but has not failed Fall times yet, and it no longer says "not
// checked yet". While a change is applied, those show already while the
// state does not (TestStateShowsOnceApplied).
func TestProbesShowFromTheFirstResult(t *testing.T) {
	good, bad := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	p := &scripted{healthy: map[netip.Addr]bool{good: true, bad: false}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var c *Checker
	during := make(chan Status, 1)
	c = NewChecker(ctx, p, 2, func(ch Change) {
		st, _ := c.Status(ch.Key)
		select {
		case during <- st:
		default:
		}
	})
	spec := Spec{Type: TCP, Interval: 30 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 20}
	dest := netip.MustParseAddrPort("192.0.2.1:80")
	kg, kb := Key{"v", good}, Key{"v", bad}
	started := time.Now()
	c.Set(map[Key]struct {
		Target Target
		Spec   Spec
	}{kg: {Target{VIP: "v", Dest: dest, Real: good}, spec}, kb: {Target{VIP: "v", Dest: dest, Real: bad}, spec}})

	// Before Fall failures: both up, both checked, each with its last probe.
	deadline := time.Now().Add(2 * time.Second)
	for {
		g, _ := c.Status(kg)
		b, _ := c.Status(kb)
		if g.Successes >= 1 && b.Failures >= 2 {
			if g.State != Up || g.Reason != Unchanged || !g.LastResult.OK || g.LastResult.At.Before(started) || g.Failures != 0 {
				t.Errorf("answering real: %+v; want up, %q, its last probe ok", g, Unchanged)
			}
			if b.State != Up || b.Reason != Unchanged || b.LastResult.OK || b.LastResult.Reason != "refused" || b.LastResult.At.Before(started) || b.Successes != 0 {
				t.Errorf("failing real before %d failures: %+v; want up, %q, its last probe failed: refused", spec.Fall, b, Unchanged)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no probe results after 2 s: %+v / %+v", g, b)
		}
		time.Sleep(time.Millisecond)
	}
	// The Fall-th failure: while it is applied, the failures show, the state not yet.
	select {
	case st := <-during:
		if st.State != Up || st.Failures != spec.Fall || st.LastResult.OK {
			t.Errorf("while down was applied, Status said %+v; want still up, with %d failures and the failed probe", st, spec.Fall)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the failing real never went down")
	}
}
