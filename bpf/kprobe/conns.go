package kprobe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/lb"
)

// State of a connection in Connections.
const (
	StateOpen   = "open"
	StateClosed = "closed"
)

// Direction of a TCP connection.
const (
	DirectionOutgoing = "outgoing"
	DirectionIncoming = "incoming"
	DirectionUnknown  = "unknown" // UDP, or older than the tracer
)

// Connection is one connection's counters.
type Connection struct {
	Tuple
	Comm        string
	Direction   string
	State       string
	BytesSent   uint64
	BytesRecv   uint64
	Retransmits uint32
	SRTT        time.Duration
	FirstSeen   time.Time
	LastSeen    time.Time
}

// Filter selects connections; zero fields match everything.
type Filter struct {
	PID   uint32
	Port  uint16     // either end
	Addr  netip.Addr // either end
	Netns uint32
	State string   // StateOpen, StateClosed or ""
	Proto lb.Proto // 0: both
}

func (f Filter) match(c *Connection) bool {
	if f.PID != 0 && c.PID != f.PID {
		return false
	}
	if f.Port != 0 && c.Src.Port() != f.Port && c.Dst.Port() != f.Port {
		return false
	}
	if f.Addr.IsValid() && c.Src.Addr() != f.Addr.Unmap() && c.Dst.Addr() != f.Addr.Unmap() && c.Src.Addr() != f.Addr && c.Dst.Addr() != f.Addr {
		return false
	}
	if f.Netns != 0 && c.Netns != f.Netns {
		return false
	}
	if f.State != "" && c.State != f.State {
		return false
	}
	if f.Proto != 0 && c.Proto != f.Proto {
		return false
	}
	return true
}

func direction(d uint8) string {
	switch d {
	case 1:
		return DirectionOutgoing
	case 2:
		return DirectionIncoming
	}
	return DirectionUnknown
}

func connectionOf(ev Event) Connection {
	return Connection{
		Tuple: ev.Tuple, Comm: ev.Comm, State: StateClosed, Direction: DirectionUnknown,
		BytesSent: ev.BytesSent, BytesRecv: ev.BytesRecv, Retransmits: ev.Retransmits, SRTT: ev.SRTT,
		LastSeen: ev.Time,
	}
}

// Connections returns the open connections (from the kernel's map) and the
// recently closed ones, filtered, most bytes (sent + received) first.
func (t *Tracer) Connections(f Filter) ([]Connection, error) {
	t.mu.Lock()
	if !t.running {
		t.mu.Unlock()
		return nil, ErrNotRunning
	}
	var out []Connection
	if f.State != StateOpen {
		for i := range t.closed {
			if f.match(&t.closed[i]) {
				out = append(out, t.closed[i])
			}
		}
	}
	m, clk := t.maps.Conns, t.clock
	if f.State != StateClosed {
		var k tracerConnTuple
		var v tracerConnStats
		it := m.Iterate()
		for it.Next(&k, &v) {
			c := Connection{
				Tuple: tupleOf(&k), Comm: commString(v.Comm), Direction: direction(v.Direction), State: StateOpen,
				BytesSent: v.BytesSent, BytesRecv: v.BytesRecv, Retransmits: v.Retrans,
				SRTT:      time.Duration(v.SrttUs) * time.Microsecond,
				FirstSeen: clk.wall(v.FirstNs), LastSeen: clk.wall(max(v.LastNs, v.FirstNs)),
			}
			if f.match(&c) {
				out = append(out, c)
			}
		}
		if err := it.Err(); err != nil {
			t.mu.Unlock()
			return nil, fmt.Errorf("read connections: %w", err)
		}
	}
	t.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].BytesSent+out[i].BytesRecv, out[j].BytesSent+out[j].BytesRecv
		if a != b {
			return a > b
		}
		return out[i].LastSeen.After(out[j].LastSeen)
	})
	return out, nil
}

func (t *Tracer) countConns() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		return 0, ErrNotRunning
	}
	var k tracerConnTuple
	var v tracerConnStats
	n := 0
	it := t.maps.Conns.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

func (t *Tracer) expireLoop(ctx context.Context) {
	defer t.wg.Done()
	tick := time.NewTicker(t.opts.ExpireEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := t.Expire(); err != nil && !errors.Is(err, ErrNotRunning) {
				t.opts.Logger.Warn("tracer: expire idle connections", "err", err)
			}
		}
	}
}

// Expire removes the connections idle for longer than their protocol's
// idle time now (it also runs every Options.ExpireEvery), each with an
// Expire event carrying its final numbers.
func (t *Tracer) Expire() error {
	now := monoNow()
	var expired []Event
	t.mu.Lock()
	if !t.running {
		t.mu.Unlock()
		return ErrNotRunning
	}
	var k tracerConnTuple
	var v tracerConnStats
	var keys []tracerConnTuple
	it := t.maps.Conns.Iterate()
	for it.Next(&k, &v) {
		idle := t.opts.TCPIdle
		if lb.Proto(k.Proto) == lb.UDP {
			idle = t.opts.UDPIdle
		}
		last := max(v.LastNs, v.FirstNs)
		if now > last && time.Duration(now-last) > idle {
			keys = append(keys, k)
			expired = append(expired, Event{
				Type: EventExpire, Time: time.Now(), Monotonic: now, Comm: commString(v.Comm), Tuple: tupleOf(&k),
				BytesSent: v.BytesSent, BytesRecv: v.BytesRecv, Retransmits: v.Retrans,
				SRTT: time.Duration(v.SrttUs) * time.Microsecond,
			})
		}
	}
	err := it.Err()
	gone := map[tracerConnTuple]bool{}
	for _, k := range keys {
		if e := t.maps.Conns.Delete(&k); e != nil && !errors.Is(e, ebpf.ErrKeyNotExist) {
			err = errors.Join(err, e)
		}
		gone[k] = true
	}
	if len(gone) > 0 {
		// sockets whose connection expired (their close was never seen)
		var sk uint64
		var ref tracerSockRef
		var stale []uint64
		it := t.maps.Socks.Iterate()
		for it.Next(&sk, &ref) {
			if gone[ref.Key] {
				stale = append(stale, sk)
			}
		}
		for _, sk := range stale {
			_ = t.maps.Socks.Delete(&sk)
		}
	}
	t.expired += uint64(len(keys))
	t.mu.Unlock()
	for _, ev := range expired {
		t.deliver(ev)
	}
	if err != nil {
		return fmt.Errorf("expire connections: %w", err)
	}
	return nil
}

// AddFdInstallWatcher reports every file descriptor process pid installs
// (EventFdInstall). Kprobe mode only: ErrFdInstallUnavailable otherwise.
func (t *Tracer) AddFdInstallWatcher(pid uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		return ErrNotRunning
	}
	if !t.status.FdInstall {
		return ErrFdInstallUnavailable
	}
	if err := t.maps.FdinstallPids.Put(pid, uint8(1)); err != nil {
		return fmt.Errorf("watch fd_install of pid %d: %w", pid, err)
	}
	t.watchers[pid] = true
	return nil
}

// RemoveFdInstallWatcher stops reporting pid's fd_install calls.
func (t *Tracer) RemoveFdInstallWatcher(pid uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		return ErrNotRunning
	}
	if !t.status.FdInstall {
		return ErrFdInstallUnavailable
	}
	delete(t.watchers, pid)
	if err := t.maps.FdinstallPids.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unwatch fd_install of pid %d: %w", pid, err)
	}
	return nil
}
