package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
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
		_, _ = h.ctl.CreateVIP(control.VIP{Key: xdp.VIPKey{Addr: netip.MustParseAddr("192.0.2.7"), Port: 80, Proto: xdp.TCP}})
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
