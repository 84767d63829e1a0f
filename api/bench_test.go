package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// BenchmarkReplaceReals100 measures a change as an operator sees it: PUT
// a new set of 100 reals for a VIP with a 65537-slot ring, over HTTP, to
// a daemon stack with real maps and a state file on disk (fsync'd). The
// answer comes once the new ring is in the kernel and the state saved, so
// each request's time is "request to maps updated". Alternate sets share
// half their reals. Reports p50 and p99 per change, of the answer
// (p50-ms, p99-ms) and of the moment the new ring went live in the kernel
// (live-p50-ms, live-p99-ms: when SetRing returned).
func BenchmarkReplaceReals100(b *testing.B) {
	privtest.Require(b)
	bal, err := xdp.Load(xdp.Limits{MaxVIPs: 4, MaxReals: 512, MaxFlows: 1024})
	privtest.CheckNotSupported(b, "load balancer", err)
	defer bal.Close()
	store, err := control.NewStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	dp := &liveTimer{Balancer: bal}
	ctl := control.New(dp, store, nil, nil)
	if _, err := ctl.Reconcile(); err != nil { // as lbd serve does before it serves
		b.Fatal(err)
	}
	srv, err := New(Options{Controller: ctl, Token: testToken})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	sets := make([][]byte, 2)
	for s := range sets {
		var reals []apiv1.RealJSON
		for i := range 100 {
			n := 50*s + i
			reals = append(reals, apiv1.RealJSON{Address: netip.AddrFrom4([4]byte{10, 1, byte(n >> 8), byte(n)}).String()})
		}
		sets[s], _ = json.Marshal(apiv1.RealListJSON{Reals: reals})
	}
	call := func(method, path string, body []byte) {
		req, _ := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			b.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	call("POST", "/api/v1/vips", []byte(`{"protocol":"tcp","address":"192.0.2.1","port":80}`))

	lat := make([]time.Duration, 0, b.N)
	live := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		call("PUT", "/api/v1/vips/tcp-192.0.2.1-80/reals", sets[i%2])
		lat = append(lat, time.Since(t0))
		live = append(live, dp.last.Sub(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	slices.Sort(live)
	b.ReportMetric(ms(live[len(live)/2]), "live-p50-ms")
	b.ReportMetric(ms(live[(len(live)*99)/100]), "live-p99-ms")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[(len(lat)*99)/100]), "p99-ms")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
	if testing.Verbose() {
		fmt.Printf("replace 100 reals: p50 %v p99 %v over %d changes\n", lat[len(lat)/2], lat[(len(lat)*99)/100], len(lat))
	}
}

// liveTimer notes when the latest ring went live in the kernel.
type liveTimer struct {
	*xdp.Balancer
	last time.Time
}

func (l *liveTimer) SetRing(key lb.VIPKey, ring []uint32) error {
	err := l.Balancer.SetRing(key, ring)
	l.last = time.Now()
	return err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
