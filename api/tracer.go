package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// TracerSource is what the API needs of the connection tracer, in the
// API's own terms: the API does not import the tracer (bpf/kprobe);
// cmd/lbd adapts it. Options.Tracer nil means the daemon runs without a
// tracer: the tracer endpoints answer 503.
type TracerSource interface {
	Status() TracerStatusJSON
	// Connections lists the connections f selects, largest first.
	Connections(f ConnectionFilter) ([]ConnectionJSON, error)
	Subscribe(ctx context.Context, buffer int) (TracerSubscription, error)
}

// TracerSubscription is a stream of tracer events: Events is closed
// when the tracer stops; Dropped counts the events this subscriber
// missed because it fell behind.
type TracerSubscription interface {
	Events() <-chan EventJSON
	Dropped() uint64
}

// ErrTracerNotRunning is what a TracerSource returns when the tracer
// stopped (answered 503).
var ErrTracerNotRunning = errors.New("tracer not running")

// ConnectionFilter selects connections; zero fields match everything.
type ConnectionFilter struct {
	PID   uint32
	Port  uint16     // either end
	Addr  netip.Addr // either end
	Netns uint32
	State string   // ConnOpen, ConnClosed or ""
	Proto lb.Proto // 0: both
}

// The states of a connection.
const (
	ConnOpen   = "open"
	ConnClosed = "closed"
)

// TracerStatusJSON answers GET /api/v1/tracer: what the tracer runs and
// its counters.
type TracerStatusJSON struct {
	Running       bool              `json:"running"`
	Kernel        string            `json:"kernel"`
	Mode          string            `json:"mode"`          // kprobe or tracepoint
	BTF           bool              `json:"btf"`           // the kernel has BTF
	OffsetSource  string            `json:"offset_source"` // co-re or guessed
	Offsets       TracerOffsetsJSON `json:"offsets"`
	Guess         *TracerGuessJSON  `json:"guess,omitempty"`         // set when the offsets were guessed
	Buffer        string            `json:"buffer"`                  // "ringbuf" or "perf"
	FdInstall     bool              `json:"fd_install"`              // the fd_install watcher works
	SRTT          bool              `json:"srtt"`                    // smoothed RTT reported (needs BTF)
	AcceptBy      string            `json:"accept_by"`               // kretprobe, syscall or first-use
	Attached      []string          `json:"attached"`                // every hook, e.g. "kprobe tcp_v4_connect"
	Events        map[string]uint64 `json:"events"`                  // events output by the kernel, by type
	Lost          map[string]uint64 `json:"lost"`                    // events lost (buffer full), by type
	LostPerf      uint64            `json:"lost_perf"`               // samples the perf buffer dropped
	StatsMapFull  uint64            `json:"stats_map_full"`          // connections not tracked for lack of room
	SocksMapFull  uint64            `json:"socks_map_full"`          // sockets not tracked for lack of room
	Expired       uint64            `json:"expired"`                 // idle entries removed
	CloseInferred uint64            `json:"close_inferred"`          // TCP closes inferred from a reused address
	KprobeMissed  *uint64           `json:"kprobe_missed,omitempty"` // probe hits that did not run (6.7+, kprobe mode)
	HookMisses    uint64            `json:"hook_misses"`             // program runs skipped (another BPF program ran)
	Connections   int               `json:"connections"`
}

// TracerOffsetsJSON are the socket field offsets the tracer reads.
type TracerOffsetsJSON struct {
	Saddr     uint16 `json:"saddr"`
	Daddr     uint16 `json:"daddr"`
	Sport     uint16 `json:"sport"`
	Dport     uint16 `json:"dport"`
	Family    uint16 `json:"family"`
	Netns     uint16 `json:"netns"`
	Ino       uint16 `json:"ino"`
	DaddrIPv6 uint16 `json:"daddr_ipv6"`
	SaddrIPv6 uint16 `json:"saddr_ipv6"`
}

// TracerGuessJSON reports the guessing of the offsets.
type TracerGuessJSON struct {
	Connections int           `json:"connections"` // connections made
	Captures    int           `json:"captures"`    // successful captures
	Duration    time.Duration `json:"duration_ns"`
	IPv6        bool          `json:"ipv6"` // IPv6 offsets guessed
}

// ConnectionJSON is one traced connection.
type ConnectionJSON struct {
	Protocol    string    `json:"protocol"`
	Source      string    `json:"source"`      // address:port
	Destination string    `json:"destination"` // address:port
	Netns       uint32    `json:"netns"`
	PID         uint32    `json:"pid"`
	Comm        string    `json:"comm"`
	Direction   string    `json:"direction"`
	State       string    `json:"state"`
	BytesSent   uint64    `json:"bytes_sent"`
	BytesRecv   uint64    `json:"bytes_received"`
	Retransmits uint32    `json:"retransmits"`
	SRTTMicros  int64     `json:"srtt_us"`
	FirstSeen   time.Time `json:"first_seen,omitzero"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
}

// ConnectionListJSON answers GET /api/v1/connections.
type ConnectionListJSON struct {
	Connections []ConnectionJSON `json:"connections"`
	Total       int              `json:"total"` // matching connections before the limit
}

// EventJSON is one event of GET /api/v1/events.
type EventJSON struct {
	Type        string    `json:"type"`
	Time        time.Time `json:"time"`
	Monotonic   uint64    `json:"monotonic_ns"`
	CPU         uint32    `json:"cpu"`
	PID         uint32    `json:"pid"`
	TID         uint32    `json:"tid"`
	Comm        string    `json:"comm"`
	Protocol    string    `json:"protocol,omitempty"`
	Source      string    `json:"source,omitempty"`
	Destination string    `json:"destination,omitempty"`
	Netns       uint32    `json:"netns"`
	BytesSent   uint64    `json:"bytes_sent"`
	BytesRecv   uint64    `json:"bytes_received"`
	Retransmits uint32    `json:"retransmits"`
	SRTTMicros  int64     `json:"srtt_us"`
	FD          uint32    `json:"fd,omitempty"`
}

// registerTracer adds the tracer's routes.
func (s *Server) registerTracer(v1 *echo.Group) {
	v1.GET("/connections", s.connections)
	v1.GET("/tracer", s.tracerStatus)
	v1.GET("/events", s.events)
}

func (s *Server) tracer() (TracerSource, error) {
	if s.opts.Tracer == nil {
		return nil, problem(http.StatusServiceUnavailable, "tracer not running: start lbd serve with --tracer auto (or kprobe / tracepoint)")
	}
	return s.opts.Tracer, nil
}

func tracerError(err error) error {
	if errors.Is(err, ErrTracerNotRunning) {
		return problem(http.StatusServiceUnavailable, "tracer not running: "+err.Error())
	}
	return err
}

// connectionFilter reads the query of GET /api/v1/connections.
func connectionFilter(c echo.Context) (ConnectionFilter, int, error) {
	var f ConnectionFilter
	limit := 100
	uintParam := func(name string, bits int) (uint64, error) {
		v := c.QueryParam(name)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseUint(v, 10, bits)
		if err != nil {
			return 0, &control.InvalidError{Field: name, Msg: fmt.Sprintf("%s %q: not a number in range", name, v)}
		}
		return n, nil
	}
	pid, err := uintParam("pid", 32)
	if err != nil {
		return f, 0, err
	}
	port, err := uintParam("port", 16)
	if err != nil {
		return f, 0, err
	}
	netns, err := uintParam("netns", 32)
	if err != nil {
		return f, 0, err
	}
	f.PID, f.Port, f.Netns = uint32(pid), uint16(port), uint32(netns)
	if v := c.QueryParam("address"); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return f, 0, &control.InvalidError{Field: "address", Msg: fmt.Sprintf("address %q: not an IPv4 or IPv6 address", v)}
		}
		f.Addr = a
	}
	switch v := c.QueryParam("state"); v {
	case "", "all":
	case ConnOpen, ConnClosed:
		f.State = v
	default:
		return f, 0, &control.InvalidError{Field: "state", Msg: fmt.Sprintf("state %q: want open, closed or all", v)}
	}
	switch v := c.QueryParam("protocol"); v {
	case "":
	case "tcp":
		f.Proto = lb.TCP
	case "udp":
		f.Proto = lb.UDP
	default:
		return f, 0, &control.InvalidError{Field: "protocol", Msg: fmt.Sprintf("protocol %q: want tcp or udp", v)}
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return f, 0, &control.InvalidError{Field: "limit", Msg: fmt.Sprintf("limit %q: want 1-10000", v)}
		}
		limit = n
	}
	return f, limit, nil
}

func (s *Server) connections(c echo.Context) error {
	tr, err := s.tracer()
	if err != nil {
		return err
	}
	f, limit, err := connectionFilter(c)
	if err != nil {
		return err
	}
	conns, err := tr.Connections(f) // sorted by bytes, largest first
	if err != nil {
		return tracerError(err)
	}
	out := ConnectionListJSON{Connections: []ConnectionJSON{}, Total: len(conns)}
	for i, conn := range conns {
		if i == limit {
			break
		}
		out.Connections = append(out.Connections, conn)
	}
	return reply(c, http.StatusOK, out)
}

func (s *Server) tracerStatus(c echo.Context) error {
	tr, err := s.tracer()
	if err != nil {
		return err
	}
	st := tr.Status()
	if !st.Running {
		return problem(http.StatusServiceUnavailable, "tracer not running (it stopped, or failed to start: see the daemon's log)")
	}
	if st.Attached == nil {
		st.Attached = []string{}
	}
	if st.Events == nil {
		st.Events = map[string]uint64{}
	}
	if st.Lost == nil {
		st.Lost = map[string]uint64{}
	}
	return reply(c, http.StatusOK, st)
}

// eventsKeepalive is how often an idle event stream gets a comment line,
// so that proxies and clients see the connection alive.
const eventsKeepalive = 15 * time.Second

// An event stream's buffers: small, since every open stream holds them
// (the tracer's used to be 4096 events, some 1 MB a stream). A client
// that falls further behind on the tracer's events is told how many it
// missed ("event: dropped"); lbd's own events are rare.
const (
	eventsTracerBuffer = 256
	eventsLBDBuffer    = 64
	// eventsRetryAfter is the Retry-After, in seconds, of a stream
	// refused because too many are open.
	eventsRetryAfter = 10
)

// events streams events as Server-Sent Events: "event: <type>" and
// "data: <JSON>". lbd's own events (real_health, vip_changed, bgp_*: a
// control.Event) and the tracer's (connect, accept, close, ...: an
// EventJSON), or only one source with ?source=lbd|tracer. A client that
// falls behind on the tracer's events gets a "dropped" event with the
// count; when the tracer stops, "end". Without a tracer, ?source=tracer
// answers 503 and the default stream carries lbd's events only.
//
// lbd's events carry an SSE id, "<run>-<seq>": a client that reconnects
// with Last-Event-ID gets the events it missed first (see subscribeLBD).
// The tracer's events carry none: they are too many to keep.
func (s *Server) events(c echo.Context) error {
	source := c.QueryParam("source")
	switch source {
	case "", "all", "lbd", "tracer":
	default:
		return &control.InvalidError{Field: "source", Msg: fmt.Sprintf("source %q: use all, lbd or tracer", source)}
	}
	wantLBD := source != "tracer"
	wantTracer := source != "lbd"
	var pid uint64
	if v := c.QueryParam("pid"); v != "" {
		var err error
		if pid, err = strconv.ParseUint(v, 10, 32); err != nil {
			return &control.InvalidError{Field: "pid", Msg: fmt.Sprintf("pid %q: not a process id", v)}
		}
	}
	if n := s.streams.Add(1); n > int64(s.opts.MaxEventStreams) {
		s.streams.Add(-1)
		c.Response().Header().Set("Retry-After", strconv.Itoa(eventsRetryAfter))
		return problem(http.StatusServiceUnavailable, fmt.Sprintf("%d event streams are open, the most this daemon serves (--max-event-streams): retry later, or close a stream", s.opts.MaxEventStreams))
	}
	defer s.streams.Add(-1)
	ctx := c.Request().Context()
	var sub TracerSubscription
	var tracerEvents <-chan EventJSON
	if wantTracer {
		tr, err := s.tracer()
		switch {
		case err != nil && source == "tracer":
			return err
		case err == nil:
			if sub, err = tr.Subscribe(ctx, eventsTracerBuffer); err != nil {
				if source == "tracer" {
					return tracerError(err)
				}
			} else {
				tracerEvents = sub.Events()
			}
		}
	}
	var lbdEvents <-chan control.Event
	var replay []control.Event
	var resumed *ResumeJSON
	if wantLBD {
		var ch <-chan control.Event
		var stop func()
		replay, resumed, ch, stop = s.subscribeLBD(c.Request().Header.Get("Last-Event-ID"))
		defer stop()
		lbdEvents = ch
	}

	w := c.Response()
	// a stream outlives the server's write timeout
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	w.Header().Set(echo.HeaderContentType, "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": lbd events\n\n")
	if wantTracer && tracerEvents == nil {
		fmt.Fprint(w, ": tracer not running: only lbd's events\n\n")
	}
	if resumed != nil {
		b, _ := json.Marshal(resumed)
		fmt.Fprintf(w, "event: resumed\ndata: %s\n\n", b)
	}
	for _, ev := range replay {
		if err := s.writeLBDEvent(w, ev); err != nil {
			return err
		}
	}
	w.Flush()
	tick := time.NewTicker(eventsKeepalive)
	defer tick.Stop()
	var dropped uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			fmt.Fprint(w, ": keepalive\n\n")
			w.Flush()
		case ev := <-lbdEvents:
			if err := s.writeLBDEvent(w, ev); err != nil {
				return err
			}
			w.Flush()
		case ev, ok := <-tracerEvents:
			if !ok {
				fmt.Fprint(w, "event: end\ndata: {\"reason\":\"tracer stopped\"}\n\n")
				w.Flush()
				return nil
			}
			if d := sub.Dropped(); d != dropped {
				fmt.Fprintf(w, "event: dropped\ndata: {\"dropped\":%d}\n\n", d-dropped)
				dropped = d
			}
			if pid != 0 && ev.PID != uint32(pid) {
				continue
			}
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, b)
			w.Flush()
		}
	}
}

// ResumeJSON is the data of the "resumed" event that opens a stream
// asked for with Last-Event-ID: how many events are replayed, and
// whether some are missing (Complete false, Reason why).
type ResumeJSON struct {
	Replayed int    `json:"replayed"`
	Complete bool   `json:"complete"`
	Reason   string `json:"reason,omitempty"`
}

// subscribeLBD subscribes to lbd's events. With lastID, the SSE id of the
// last event a client saw, it also returns the kept events after it and
// the "resumed" notice; an id of an earlier run of the daemon (it
// restarted) replays all that this run kept.
func (s *Server) subscribeLBD(lastID string) ([]control.Event, *ResumeJSON, <-chan control.Event, func()) {
	const buf = eventsLBDBuffer
	lastID = strings.TrimSpace(lastID)
	if lastID == "" {
		ch, stop := s.ctl.Subscribe(buf)
		return nil, nil, ch, stop
	}
	run, seqText, _ := strings.Cut(lastID, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	var reason string
	switch {
	case err != nil:
		reason = fmt.Sprintf("Last-Event-ID %q is not an id of lbd's events: sending the kept ones", lastID)
		seq = 0
	case run != s.eventRun:
		reason = "the daemon restarted since that event: sending the events of this run that it kept"
		seq = 0
	}
	replay, complete, ch, stop := s.ctl.SubscribeAfter(buf, seq)
	r := &ResumeJSON{Replayed: len(replay), Complete: complete && reason == ""}
	switch {
	case reason != "":
		r.Reason = reason
	case !complete:
		r.Reason = fmt.Sprintf("events after %s are no longer kept (the last %d are): some are missing", lastID, control.EventHistory)
	}
	return replay, r, ch, stop
}

// writeLBDEvent writes one of lbd's events with its SSE id.
func (s *Server) writeLBDEvent(w io.Writer, ev control.Event) error {
	b, err := json.Marshal(LBDEventJSON(ev))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "id: %s-%d\nevent: %s\ndata: %s\n\n", s.eventRun, ev.Seq, ev.Type, b)
	return err
}
