package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/fakedp"
)

// bufTracer is a tracer whose subscriptions hold a buffer of the size
// asked, as the real one's do.
type bufTracer struct{ fakeTracer }

func (b *bufTracer) Subscribe(ctx context.Context, buffer int) (TracerSubscription, error) {
	return make(chanSub, buffer), nil
}

func streamServer(t testing.TB, o Options) *httptest.Server {
	t.Helper()
	o.Controller = control.New(fakedp.New(), nopSaver{}, nil, nil)
	o.Token = testToken
	if o.Tracer == nil {
		o.Tracer = &bufTracer{}
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts
}

// openStream opens an event stream and reads its first line; the
// stream stays open until cancel.
func openStream(t testing.TB, url string) (*http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != ": lbd events\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
	}
	return resp, func() { cancel(); resp.Body.Close() }
}

// TestEventStreamsCapped: beyond --max-event-streams a stream is refused
// with 503, Retry-After and a problem document; a closed stream frees
// its place.
func TestEventStreamsCapped(t *testing.T) {
	ts := streamServer(t, Options{MaxEventStreams: 3})
	var closers []context.CancelFunc
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for range 3 {
		resp, stop := openStream(t, ts.URL)
		closers = append(closers, stop)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream refused below the cap: %d", resp.StatusCode)
		}
	}
	resp, stop := openStream(t, ts.URL)
	var p apiv1.ProblemJSON
	err := json.NewDecoder(resp.Body).Decode(&p)
	stop()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "10" ||
		resp.Header.Get("Content-Type") != "application/problem+json" || err != nil || p.Status != 503 || !strings.Contains(p.Detail, "--max-event-streams") {
		t.Fatalf("4th stream: %d Retry-After %q %q: %+v %v", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), p, err)
	}
	closers[0]()
	// the server sees the close shortly after; bounded wait
	for i := 0; ; i++ {
		resp, stop := openStream(t, ts.URL)
		if resp.StatusCode == http.StatusOK {
			closers[0] = stop
			break
		}
		stop()
		if i == 200 {
			t.Fatalf("a closed stream never freed its place: %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEventStreamMemory measures what an idle stream costs (client and
// server both live in this process: the figure is an upper bound) and
// bounds it. Each stream used to hold a buffer of 4096 tracer events
// (~750 KB, ~1.7 MB RSS with the garbage collector's headroom).
func TestEventStreamMemory(t *testing.T) {
	const n = 200
	ts := streamServer(t, Options{MaxEventStreams: n})
	before := memInUse()
	var closers []context.CancelFunc
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for range n {
		resp, stop := openStream(t, ts.URL)
		closers = append(closers, stop)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream refused: %d", resp.StatusCode)
		}
	}
	after := memInUse()
	per := (int64(after) - int64(before)) / n
	t.Logf("%d idle event streams: %d bytes of heap and stacks each (client side included)", n, per)
	if per > 256<<10 {
		t.Errorf("an idle event stream costs %d bytes: more than 256 KiB", per)
	}
}

func memInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// TestRequestLogPeer: the request log gives the socket's peer, whatever
// X-Forwarded-For and X-Real-IP say, unless the peer is a trusted proxy.
func TestRequestLogPeer(t *testing.T) {
	cases := []struct {
		name    string
		trusted []netip.Prefix
		xff     string
		want    string
	}{
		{"no proxies trusted", nil, "203.0.113.9", "192.0.2.1"},
		{"no proxies trusted, private XFF", nil, "10.1.2.3", "192.0.2.1"},
		{"peer is a trusted proxy", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, "203.0.113.9", "203.0.113.9"},
		{"nearest untrusted hop", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")}, "203.0.113.9, 198.51.100.7", "203.0.113.9"},
		{"spoofed hop before an untrusted one", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, "1.2.3.4, 203.0.113.9", "203.0.113.9"},
		{"peer not trusted", []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, "203.0.113.9", "192.0.2.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			srv, err := New(Options{Controller: control.New(fakedp.New(), nopSaver{}, nil, nil), Token: testToken, TrustedProxies: tc.trusted,
				Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("DELETE", "/api/v1/vips/tcp-192.0.2.1-80", nil) // RemoteAddr 192.0.2.1:1234
			r.Header.Set("X-Forwarded-For", tc.xff)
			r.Header.Set("X-Real-IP", "198.18.0.66")
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, r) // no token: 401
			var line struct {
				Status int    `json:"status"`
				Remote string `json:"remote"`
			}
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("log %q: %v", logs.String(), err)
			}
			if w.Code != 401 || line.Status != 401 || line.Remote != tc.want {
				t.Errorf("status %d, logged %+v: want remote %s", w.Code, line, tc.want)
			}
		})
	}
}
