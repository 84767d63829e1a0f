// Package health checks reals: it runs one probe loop per (VIP, real),
// counts consecutive successes and failures, and reports a real as down
// after Fall failures and up again after Rise successes. It knows nothing
// of rings or maps: the controller decides what a state change does.
//
// Probes of a real go to the VIP's address and port, marked with the
// real's socket mark: on the LB node a TC egress program (bpf/tc HCEncap)
// encapsulates marked packets to that real exactly as the balancer does,
// so a probe fails when the real's decapsulation or VIP setup is broken,
// not only when its server is. Mark 0 probes the real's own address
// instead (no tunnel).
package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Type is what a probe does.
type Type string

// The probe types.
const (
	None  Type = "none"  // no checks: the real is always up
	TCP   Type = "tcp"   // a TCP connection is accepted
	HTTP  Type = "http"  // an HTTP GET answers with the expected status
	HTTPS Type = "https" // the same over TLS (certificates are not verified: the real is reached by a VIP name it may not carry)
	UDP   Type = "udp"   // a datagram gets any answer and no ICMP error
)

// Spec says how to check the reals of one VIP.
type Spec struct {
	Type         Type
	Port         uint16        // 0: the VIP's port
	Path         string        // HTTP(S) path, default "/"
	ExpectStatus int           // HTTP(S) status, default 200
	Interval     time.Duration // between probes of one real, default 5s
	Timeout      time.Duration // of one probe, default 2s (at most the interval)
	Rise         int           // successes in a row to come up, default 2
	Fall         int           // failures in a row to go down, default 3
}

// Defaults fills the unset fields.
func (s Spec) Defaults() Spec {
	if s.Type == "" {
		s.Type = None
	}
	if s.Type == HTTP || s.Type == HTTPS {
		if s.Path == "" {
			s.Path = "/"
		}
		if s.ExpectStatus == 0 {
			s.ExpectStatus = 200
		}
	}
	if s.Interval == 0 {
		s.Interval = 5 * time.Second
	}
	if s.Timeout == 0 {
		s.Timeout = min(2*time.Second, s.Interval)
	}
	if s.Rise == 0 {
		s.Rise = 2
	}
	if s.Fall == 0 {
		s.Fall = 3
	}
	return s
}

// Validate says what is wrong with a spec (after Defaults).
func (s Spec) Validate(vipPort uint16) error {
	switch s.Type {
	case None, TCP, HTTP, HTTPS, UDP:
	default:
		return fmt.Errorf("health check type %q: use none, tcp, http, https or udp", s.Type)
	}
	if s.Type == None {
		return nil
	}
	if s.Port == 0 && vipPort == 0 {
		return errors.New("a port-less VIP needs a health check port")
	}
	if s.Interval < 100*time.Millisecond || s.Interval > time.Hour {
		return fmt.Errorf("health check interval %v: use 100ms to 1h", s.Interval)
	}
	if s.Timeout <= 0 || s.Timeout > s.Interval {
		return fmt.Errorf("health check timeout %v: must be positive and at most the interval (%v)", s.Timeout, s.Interval)
	}
	if s.Rise < 1 || s.Rise > 100 || s.Fall < 1 || s.Fall > 100 {
		return fmt.Errorf("health check rise %d / fall %d: use 1 to 100", s.Rise, s.Fall)
	}
	if (s.Type == HTTP || s.Type == HTTPS) && (!strings.HasPrefix(s.Path, "/") || s.ExpectStatus < 100 || s.ExpectStatus > 599) {
		return fmt.Errorf("HTTP health check: path %q must start with / and the expected status %d be 100-599", s.Path, s.ExpectStatus)
	}
	return nil
}

// Target is one (VIP, real) pair to check.
type Target struct {
	VIP  string // the VIP's name, for reports
	Dest netip.AddrPort
	Real netip.Addr
	// Mark is the socket mark that sends the probe through the tunnel to
	// Real; 0 probes Real's own address at Dest's port.
	Mark uint32
}

// State is a real's health.
type State string

// The states. A real starts up: adding a real, or restarting lbd, does not
// wait Rise probes before the real takes traffic; a real that fails goes
// down after Fall probes.
const (
	Up   State = "up"
	Down State = "down"
)

// Result is the outcome of one probe.
type Result struct {
	OK       bool
	Reason   string // why it failed, or what it saw
	At       time.Time
	Duration time.Duration
}

// Status is what is known of one target. State, LastChange and Reason
// are the state the datapath has (shown once applied); LastResult and the
// counts are what the probes saw, shown as soon as they see it.
type Status struct {
	State      State
	LastResult Result // the latest probe's; zero until the first probe
	LastChange time.Time
	// Reason of the last change, e.g. "3 failures in a row: connect:
	// connection refused"; NotChecked before the first probe, and
	// Unchanged after it while the state is still the one it started in.
	Reason string
	// Successes and Failures are the probes in a row that succeeded or
	// failed (one of them is 0): a state changes when one reaches Rise or
	// Fall.
	Successes int
	Failures  int
}

// The reasons of a state no probe has changed.
const (
	NotChecked = "not checked yet"
	Unchanged  = "no change since the check started"
)

// Prober runs one probe.
type Prober interface {
	Probe(ctx context.Context, t Target, s Spec) Result
}

// Key names a check: a VIP and one of its reals.
type Key struct {
	VIP  string
	Real netip.Addr
}

// Change is a state change, as reported to OnChange.
type Change struct {
	Key    Key
	Status Status
}

// Checker runs the checks. The zero value is not usable; see NewChecker.
type Checker struct {
	prober   Prober
	onChange func(Change)
	sem      chan struct{}

	mu     sync.Mutex
	checks map[Key]*check
	ctx    context.Context
}

type check struct {
	target Target
	spec   Spec
	status Status
	cancel context.CancelFunc
}

// NewChecker returns a checker that runs at most maxConcurrent probes at
// once and calls onChange (from its own goroutines, never concurrently
// for one key) when a real's state changes. Checks run until ctx ends.
func NewChecker(ctx context.Context, prober Prober, maxConcurrent int, onChange func(Change)) *Checker {
	if maxConcurrent < 1 {
		maxConcurrent = 1
	}
	return &Checker{prober: prober, onChange: onChange, sem: make(chan struct{}, maxConcurrent), checks: map[Key]*check{}, ctx: ctx}
}

// SetMaxConcurrent changes how many probes may run at once (at least 1).
// Probes in flight finish under the old bound; new ones take the new.
func (c *Checker) SetMaxConcurrent(n int) {
	if n < 1 {
		n = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cap(c.sem) != n {
		c.sem = make(chan struct{}, n)
	}
}

// MaxConcurrent is the current bound on probes in flight.
func (c *Checker) MaxConcurrent() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cap(c.sem)
}

// Set makes the running checks exactly these: new ones start (in state
// up), removed ones stop, changed ones restart with their state kept.
func (c *Checker) Set(checks map[Key]struct {
	Target Target
	Spec   Spec
}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ch := range c.checks {
		want, ok := checks[k]
		if ok && want.Target == ch.target && want.Spec == ch.spec && want.Spec.Type != None {
			continue
		}
		ch.cancel()
		delete(c.checks, k)
		if ok && want.Spec.Type != None {
			c.start(k, want.Target, want.Spec, ch.status)
		}
	}
	for k, want := range checks {
		if _, running := c.checks[k]; running || want.Spec.Type == None {
			continue
		}
		c.start(k, want.Target, want.Spec, Status{State: Up, LastChange: time.Now(), Reason: NotChecked})
	}
}

// start runs a check's loop; c.mu is held.
func (c *Checker) start(k Key, t Target, s Spec, st Status) {
	ctx, cancel := context.WithCancel(c.ctx)
	ch := &check{target: t, spec: s, status: st, cancel: cancel}
	c.checks[k] = ch
	go c.loop(ctx, k, ch)
}

// Status returns the status of a check, and false if none runs for k.
func (c *Checker) Status(k Key) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.checks[k]
	if !ok {
		return Status{}, false
	}
	return ch.status, true
}

// loop probes every interval, the first time after a random part of it so
// that checks started together do not probe together, and every time with
// ±10% jitter.
func (c *Checker) loop(ctx context.Context, k Key, ch *check) {
	wait := time.Duration(rand.Int64N(int64(ch.spec.Interval)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		c.mu.Lock()
		sem := c.sem // SetMaxConcurrent may swap it; release where we took
		c.mu.Unlock()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		pctx, cancel := context.WithTimeout(ctx, ch.spec.Timeout)
		r := c.prober.Probe(pctx, ch.target, ch.spec)
		cancel()
		<-sem
		if ctx.Err() != nil {
			return
		}
		if changed, st := c.record(k, ch, r); changed {
			if c.onChange != nil {
				c.onChange(Change{Key: k, Status: st})
			}
			c.commit(k, st)
		}
		jitter := time.Duration(rand.Int64N(int64(ch.spec.Interval)/5+1)) - ch.spec.Interval/10
		wait = ch.spec.Interval + jitter
	}
}

// record applies one result and reports whether the state changed, with
// the new status. A new state is not shown by Status until commit: it
// must first reach the datapath (onChange), or a reader that sees "down"
// could still find the real in the VIP's ring.
func (c *Checker) record(k Key, ch *check, r Result) (bool, Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks[k] != ch {
		return false, Status{} // replaced meanwhile
	}
	prev := ch.status
	changed := ch.status.apply(r, ch.spec)
	next := ch.status
	if changed { // the counters and the result show now, the state at commit
		ch.status.State, ch.status.LastChange, ch.status.Reason = prev.State, prev.LastChange, prev.Reason
	}
	return changed, next
}

// commit makes a changed state visible to Status once it is applied.
// If Set replaced the check meanwhile (a changed spec keeps the state),
// the replacement takes the state: it is what the datapath now has.
func (c *Checker) commit(k Key, st Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.checks[k]; ok {
		cur.status.State, cur.status.LastChange, cur.status.Reason = st.State, st.LastChange, st.Reason
	}
}

// apply counts a result and changes the state when Rise or Fall is
// reached; it reports whether the state changed.
func (s *Status) apply(r Result, spec Spec) bool {
	s.LastResult = r
	if s.Reason == NotChecked {
		s.Reason = Unchanged // the state stays: checked now
	}
	if r.OK {
		s.Successes++
		s.Failures = 0
		if s.State != Up && s.Successes >= spec.Rise {
			s.State, s.LastChange = Up, r.At
			s.Reason = fmt.Sprintf("%d successes in a row", s.Successes)
			return true
		}
		return false
	}
	s.Failures++
	s.Successes = 0
	if s.State != Down && s.Failures >= spec.Fall {
		s.State, s.LastChange = Down, r.At
		s.Reason = fmt.Sprintf("%d failures in a row: %s", s.Failures, r.Reason)
		return true
	}
	return false
}
