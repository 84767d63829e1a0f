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

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// TracerSource is what the API needs of the connection tracer, in the
// API's own terms: the API does not import the tracer (bpf/kprobe);
// cmd/lbd adapts it. Options.Tracer nil means the daemon runs without a
// tracer: the tracer endpoints answer 503.
type TracerSource interface {
	Status() apiv1.TracerStatusJSON
	// Connections lists the connections f selects, largest first.
	Connections(f ConnectionFilter) ([]apiv1.ConnectionJSON, error)
	Subscribe(ctx context.Context, buffer int) (TracerSubscription, error)
}

// TracerSubscription is a stream of tracer events: Events is closed
// when the tracer stops; Dropped counts the events this subscriber
// missed because it fell behind.
type TracerSubscription interface {
	Events() <-chan apiv1.EventJSON
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
	out := apiv1.ConnectionListJSON{Connections: []apiv1.ConnectionJSON{}, Total: len(conns)}
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
// apiv1.EventJSON), or only one source with ?source=lbd|tracer. A client that
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
	var tracerEvents <-chan apiv1.EventJSON
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
	var resumed *apiv1.ResumeJSON
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

// subscribeLBD subscribes to lbd's events. With lastID, the SSE id of the
// last event a client saw, it also returns the kept events after it and
// the "resumed" notice; an id of an earlier run of the daemon (it
// restarted) replays all that this run kept.
func (s *Server) subscribeLBD(lastID string) ([]control.Event, *apiv1.ResumeJSON, <-chan control.Event, func()) {
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
	r := &apiv1.ResumeJSON{Replayed: len(replay), Complete: complete && reason == ""}
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
	b, err := json.Marshal(apiv1.LBDEventJSON(ev))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "id: %s-%d\nevent: %s\ndata: %s\n\n", s.eventRun, ev.Seq, ev.Type, b)
	return err
}
