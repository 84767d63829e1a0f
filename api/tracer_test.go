package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/lb"
)

func init() {
	// event streams are text: validate them as plain strings
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
}

// fakeTracer serves fixed connections and a fixed list of events (the
// stream ends after them, as when the tracer stops).
type fakeTracer struct {
	conns   []apiv1.ConnectionJSON
	events  []apiv1.EventJSON
	filters []ConnectionFilter
}

func (f *fakeTracer) Status() apiv1.TracerStatusJSON {
	return apiv1.TracerStatusJSON{
		Running: true, Kernel: "6.18.0", Mode: "tracepoint", BTF: true, OffsetSource: "guessed",
		Offsets: apiv1.TracerOffsetsJSON{Saddr: 4, Sport: 14, Dport: 12, Family: 16, Netns: 48, Ino: 176, DaddrIPv6: 56, SaddrIPv6: 72},
		Guess:   &apiv1.TracerGuessJSON{Connections: 23, Captures: 21, Duration: 5 * time.Millisecond, IPv6: true},
		Buffer:  "ringbuf", SRTT: true, AcceptBy: "first-use", Attached: []string{"tracepoint sock:inet_sock_set_state"},
		Events: map[string]uint64{"connect": 3}, Lost: map[string]uint64{"connect": 1}, Connections: len(f.conns),
	}
}

func (f *fakeTracer) Connections(fl ConnectionFilter) ([]apiv1.ConnectionJSON, error) {
	f.filters = append(f.filters, fl)
	var out []apiv1.ConnectionJSON
	for _, c := range f.conns {
		if fl.PID != 0 && c.PID != fl.PID {
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

// chanSub is a subscription of a channel.
type chanSub chan apiv1.EventJSON

func (c chanSub) Events() <-chan apiv1.EventJSON { return c }
func (c chanSub) Dropped() uint64                { return 0 }

func (f *fakeTracer) Subscribe(ctx context.Context, buffer int) (TracerSubscription, error) {
	ch := make(chanSub, len(f.events))
	for _, ev := range f.events {
		ch <- ev
	}
	close(ch)
	return ch, nil
}

func testConn(pid uint32, sent uint64) apiv1.ConnectionJSON {
	return apiv1.ConnectionJSON{
		Protocol: "tcp", Source: "127.0.0.1:40000", Destination: "[::1]:80", Netns: 4026531840, PID: pid,
		Comm: "curl", Direction: "outgoing", State: ConnOpen, BytesSent: sent, BytesRecv: 7,
		SRTTMicros: 33, FirstSeen: time.Unix(1700000000, 0).UTC(), LastSeen: time.Unix(1700000001, 0).UTC(),
	}
}

func testEvent(typ string, pid uint32, comm string) apiv1.EventJSON {
	c := testConn(pid, 0)
	return apiv1.EventJSON{Type: typ, PID: pid, TID: pid, Comm: comm, Protocol: c.Protocol, Source: c.Source, Destination: c.Destination, Netns: c.Netns}
}

// exerciseTracer sends the tracer operations to a harness whose server
// has no tracer: each answers 503 with a problem that says what to do.
// TestEveryOperation calls it so that every operation is exercised.
func exerciseTracer(h *harness) {
	h.t.Helper()
	for _, path := range []string{"/api/v1/connections?pid=1&state=open", "/api/v1/tracer", "/api/v1/events?source=tracer"} {
		var p apiv1.ProblemJSON
		h.expect(req{method: "GET", path: path}, http.StatusServiceUnavailable, &p)
		if !strings.Contains(p.Detail, "tracer not running") {
			h.t.Errorf("GET %s without tracer: %q", path, p.Detail)
		}
	}
}

func withTracer(t *testing.T, tr TracerSource) *harness {
	h := newHarness(t)
	srv, err := New(Options{Controller: h.ctl, Token: testToken, Tracer: tr})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	return h
}

func TestTracerEndpoints(t *testing.T) {
	ft := &fakeTracer{
		conns:  []apiv1.ConnectionJSON{testConn(42, 1000), testConn(43, 10)},
		events: []apiv1.EventJSON{testEvent("connect", 42, "curl"), testEvent("close", 42, "curl"), testEvent("connect", 43, "other")},
	}
	h := withTracer(t, ft)

	var list apiv1.ConnectionListJSON
	h.expect(req{method: "GET", path: "/api/v1/connections"}, http.StatusOK, &list)
	if list.Total != 2 || len(list.Connections) != 2 || list.Connections[0].BytesSent != 1000 || list.Connections[0].Source != "127.0.0.1:40000" || list.Connections[0].Destination != "[::1]:80" || list.Connections[0].SRTTMicros != 33 {
		t.Errorf("list %+v", list)
	}
	h.expect(req{method: "GET", path: "/api/v1/connections?pid=43&port=80&address=::1&netns=4026531840&state=open&protocol=tcp&limit=1"}, http.StatusOK, &list)
	if list.Total != 1 || list.Connections[0].PID != 43 {
		t.Errorf("filtered list %+v", list)
	}
	got := ft.filters[len(ft.filters)-1]
	if got.PID != 43 || got.Port != 80 || got.Addr != netip.MustParseAddr("::1") || got.Netns != 4026531840 || got.State != "open" || got.Proto != lb.TCP {
		t.Errorf("filter passed to the tracer: %+v", got)
	}
	var p apiv1.ProblemJSON
	h.expect(req{method: "GET", path: "/api/v1/connections?address=nope"}, http.StatusUnprocessableEntity, &p)
	if p.Field != "address" {
		t.Errorf("bad address: %+v", p)
	}

	var st apiv1.TracerStatusJSON
	h.expect(req{method: "GET", path: "/api/v1/tracer"}, http.StatusOK, &st)
	if st.Mode != "tracepoint" || st.OffsetSource != "guessed" || st.Offsets.Ino != 176 || st.Lost["connect"] != 1 || st.Guess == nil {
		t.Errorf("status %+v", st)
	}

	code, body := h.do(req{method: "GET", path: "/api/v1/events?pid=42&source=tracer"})
	if code != http.StatusOK {
		t.Fatalf("events: %d %s", code, body)
	}
	var types []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	var event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event != "end":
			var ev apiv1.EventJSON
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				t.Fatalf("event data %q: %v", line, err)
			}
			if ev.Type != event || ev.PID != 42 || ev.Comm != "curl" {
				t.Errorf("event %q: %+v", event, ev)
			}
			types = append(types, ev.Type)
		}
	}
	if strings.Join(types, ",") != "connect,close" || event != "end" {
		t.Errorf("stream had %v then %q:\n%s", types, event, body)
	}
}
