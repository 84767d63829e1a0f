package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// TestLBDEventsStream: lbd's own events reach /api/v1/events, with or
// without a tracer.
func TestLBDEventsStream(t *testing.T) {
	h := newHarness(t)
	ts := httptest.NewServer(h.srv)
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	go func() {
		time.Sleep(50 * time.Millisecond) // subscribed by then
		_, _ = h.ctl.CreateVIP(control.VIP{Key: lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.7"), Port: 80, Proto: lb.TCP}})
	}()
	sc := bufio.NewScanner(resp.Body)
	var event string
	sawNote := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ": tracer not running"):
			sawNote = true
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var ev control.Event
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				t.Fatal(err)
			}
			if event != "vip_changed" || ev.Type != event || ev.VIP != "tcp-192.0.2.7-80" || !strings.Contains(ev.Reason, "create VIP") {
				t.Fatalf("event %q: %+v", event, ev)
			}
			if !sawNote {
				t.Error("the stream did not say the tracer is not running")
			}
			return
		}
	}
	t.Fatalf("stream ended without the event: %v", sc.Err())
}

func TestEventsSourceIsChecked(t *testing.T) {
	h := newHarness(t)
	code, body := h.do(req{method: "GET", path: "/api/v1/events?source=kernel", invalid: true})
	if code != 422 || !strings.Contains(string(body), "use all, lbd or tracer") {
		t.Errorf("%d %s", code, body)
	}
}

// sseMessage is one message of an event stream.
type sseMessage struct{ id, event, data string }

// readSSE opens /api/v1/events?source=lbd with lastID and returns its
// first n messages.
func readSSE(t *testing.T, url, lastID string, n int, during func()) []sseMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/v1/events?source=lbd", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if during != nil {
		go during()
	}
	var out []sseMessage
	var m sseMessage
	sc := bufio.NewScanner(resp.Body)
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if m.event != "" {
				out = append(out, m)
			}
			m = sseMessage{}
		case strings.HasPrefix(line, "id: "):
			m.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			m.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			m.data = strings.TrimPrefix(line, "data: ")
		}
	}
	if len(out) < n {
		t.Fatalf("stream gave %d of %d messages: %+v (%v)", len(out), n, out, sc.Err())
	}
	return out
}

// TestEventsResume: lbd's events carry ids; a client that reconnects with
// Last-Event-ID gets what it missed, in order, then the live events; an
// id of another run of the daemon is answered with what this run kept
// and a notice that some may be missing.
func TestEventsResume(t *testing.T) {
	h := newHarness(t)
	ts := httptest.NewServer(h.srv)
	defer ts.Close()
	create := func(port uint16) {
		if _, err := h.ctl.CreateVIP(control.VIP{Key: lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.7"), Port: port, Proto: lb.TCP}}); err != nil {
			t.Error(err)
		}
	}
	first := readSSE(t, ts.URL, "", 1, func() { time.Sleep(50 * time.Millisecond); create(81) })[0]
	run, seq, ok := strings.Cut(first.id, "-")
	if !ok || run == "" || seq != "1" || first.event != "vip_changed" {
		t.Fatalf("first event %+v: want id <run>-1", first)
	}
	// missed while away
	create(82)
	create(83)
	got := readSSE(t, ts.URL, first.id, 4, func() { time.Sleep(50 * time.Millisecond); create(84) })
	if got[0].event != "resumed" || got[0].data != `{"replayed":2,"complete":true}` {
		t.Errorf("resume notice %+v", got[0])
	}
	for i, port := range []string{"82", "83", "84"} {
		m := got[i+1]
		if m.id != fmt.Sprintf("%s-%d", run, i+2) || !strings.Contains(m.data, `"vip":"tcp-192.0.2.7-`+port+`"`) {
			t.Errorf("message %d: %+v", i+1, m)
		}
	}
	// an id from before a restart of the daemon
	got = readSSE(t, ts.URL, "oldrun-3", 2, nil)
	if got[0].event != "resumed" || !strings.Contains(got[0].data, `"replayed":4,"complete":false,"reason":"the daemon restarted`) ||
		got[1].id != run+"-1" {
		t.Errorf("after a restart: %+v", got)
	}
	// up to date: nothing to replay, nothing missing
	got = readSSE(t, ts.URL, run+"-4", 1, nil)
	if got[0].data != `{"replayed":0,"complete":true}` {
		t.Errorf("up to date: %+v", got)
	}
}
