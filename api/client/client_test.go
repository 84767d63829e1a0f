package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

const token = "client-test-token"

type nopSaver struct{}

func (nopSaver) Save(map[lb.VIPKey]*control.VIP) error { return nil }

// fixture is the real API server over a fake datapath; it records which
// operations of the OpenAPI document were called.
type fixture struct {
	dp     *fakedp.Datapath
	url    string
	ready  error
	mu     sync.Mutex
	called map[string]bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dp: fakedp.New(), called: map[string]bool{}}
	srv, err := api.New(api.Options{
		Controller: control.New(f.dp, nopSaver{}, nil, nil), Token: token, Build: buildinfo.Info{Version: "test", Commit: "c0ffee"},
		Ready: func() error { return f.ready },
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route, _, err := router.FindRoute(r); err == nil {
			f.mu.Lock()
			f.called[route.Operation.OperationID] = true
			f.mu.Unlock()
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	f.url = ts.URL
	return f
}

func newClient(t *testing.T, server string) *client.Client {
	t.Helper()
	c, err := client.New(server, client.Options{Token: token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func ptr[T any](v T) *T { return &v }

// Every operation of the document (but the document itself and metrics)
// has a method, and each does what it says.
func TestEveryOperation(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, f.url)
	ctx := context.Background()
	const name = "tcp-192.0.2.1-80"
	key := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}

	if h := must[apiv1.HealthJSON](t)(c.Health(ctx)); h.Status != "ok" {
		t.Errorf("health: %+v", h)
	}
	if h := must[apiv1.HealthJSON](t)(c.Ready(ctx)); h.Status != "ok" {
		t.Errorf("ready: %+v", h)
	}

	v := must[apiv1.VIPJSON](t)(c.CreateVIP(ctx, apiv1.VIPCreateJSON{Protocol: "tcp", Address: "192.0.2.1", Port: ptr(80),
		VIPSettingsJSON: apiv1.VIPSettingsJSON{RingSize: 1021, Reals: []apiv1.RealJSON{{Address: "10.0.0.1"}}}}))
	if v.Name != name || len(v.Reals) != 1 || f.dp.VIPMap[key].RingSize != 1021 {
		t.Errorf("create: %+v; datapath %+v", v, f.dp.VIPMap[key])
	}
	if vs := must[[]apiv1.VIPJSON](t)(c.ListVIPs(ctx)); len(vs) != 1 || vs[0].Name != name {
		t.Errorf("list: %+v", vs)
	}
	if g := must[apiv1.VIPJSON](t)(c.GetVIP(ctx, name)); g.RingSize != 1021 {
		t.Errorf("get: %+v", g)
	}
	p := must[apiv1.VIPJSON](t)(c.PatchVIP(ctx, name, apiv1.VIPPatchJSON{SetFlags: lb.VIPSticky}))
	if !p.Flags.Has(lb.VIPSticky) || f.dp.VIPMap[key].Flags != lb.VIPSticky {
		t.Errorf("patch: %+v", p)
	}
	put, created, err := c.PutVIP(ctx, "udp-2001:db8::1-53", apiv1.VIPSettingsJSON{Encap: "gue", RingSize: 4099})
	if err != nil || !created || put.Encap != "gue" {
		t.Errorf("put new VIP: %+v created=%v err=%v", put, created, err)
	}
	if _, created, err = c.PutVIP(ctx, "udp-2001:db8::1-53", apiv1.VIPSettingsJSON{RingSize: 4099}); err != nil || created {
		t.Errorf("put existing VIP: created=%v err=%v", created, err)
	}

	r, created, err := c.PutReal(ctx, name, "10.0.0.2", apiv1.RealSettingsJSON{Weight: ptr(uint32(3))})
	if err != nil || !created || *r.Weight != 3 || r.State != "active" {
		t.Errorf("put real: %+v created=%v err=%v", r, created, err)
	}
	if g := must[apiv1.RealJSON](t)(c.GetReal(ctx, name, "10.0.0.2")); *g.Weight != 3 {
		t.Errorf("get real: %+v", g)
	}
	if rs := must[[]apiv1.RealJSON](t)(c.ListReals(ctx, name)); len(rs) != 2 {
		t.Errorf("list reals: %+v", rs)
	}
	rs := must[[]apiv1.RealJSON](t)(c.ReplaceReals(ctx, name, []apiv1.RealJSON{{Address: "10.0.0.3"}, {Address: "2001:db8::10", Weight: ptr(uint32(2))}}))
	if len(rs) != 2 || rs[0].Address != "10.0.0.3" {
		t.Errorf("replace reals: %+v", rs)
	}
	if err := c.DeleteReal(ctx, name, "10.0.0.3"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.dp.RealMap[netip.MustParseAddr("10.0.0.3")]; ok {
		t.Error("deleted real still defined in the datapath")
	}

	f.dp.VIPCounters[key] = datapath.VIPStats{Packets: 10, Bytes: 600, LRUHits: 9, LRUMisses: 1}
	f.dp.RealCounters[f.dp.RealMap[netip.MustParseAddr("2001:db8::10")]] = datapath.RealStats{Packets: 10, Bytes: 600}
	f.dp.Global[datapath.StatTX] = 10
	if s := must[apiv1.VIPStatsJSON](t)(c.VIPStats(ctx, name)); s.Packets != 10 || s.LRUHits != 9 {
		t.Errorf("VIP stats: %+v", s)
	}
	if s := must[apiv1.TrafficJSON](t)(c.RealStats(ctx, name, "2001:db8::10")); s.Bytes != 600 {
		t.Errorf("real stats: %+v", s)
	}
	if s := must[apiv1.StatsJSON](t)(c.Stats(ctx)); s.Global.Counters["tx"] != 10 || len(s.VIPs) != 2 {
		t.Errorf("stats: %+v", s)
	}
	// 10.0.0.1, .2 and .3 left the VIP above: still listed, as removed
	if s := must[apiv1.VIPStatsJSON](t)(c.VIPStats(ctx, name)); len(s.Reals) != 4 || s.Reals[2].Address != "10.0.0.3" || !s.Reals[2].Removed || s.Reals[3].Removed {
		t.Errorf("VIP stats reals: %+v", s.Reals)
	}
	if err := c.ResetVIPStats(ctx, name); err != nil {
		t.Fatal(err)
	}
	if s := must[apiv1.VIPStatsJSON](t)(c.VIPStats(ctx, name)); s.Packets != 0 || len(s.Reals) != 1 || s.Reals[0].Packets != 0 {
		t.Errorf("VIP stats after reset: %+v", s)
	}
	f.dp.Usage = datapath.TableUsage{Entries: 5, Capacity: 10, CPUs: 1}
	if ft := must[apiv1.FlowTablesJSON](t)(c.FlowTables(ctx)); ft.Entries != 5 || ft.Capacity != 10 || ft.CPUs != 1 || ft.PerCPUCapacity != 10 {
		t.Errorf("flow tables: %+v", ft)
	}
	if ring := must[apiv1.RingJSON](t)(c.Ring(ctx, name)); ring.Size != 1021 || len(ring.Reals) != 1 || ring.Reals[0].Slots != 1021 {
		t.Errorf("ring: %+v", ring)
	}
	f.dp.FlowList = append(f.dp.FlowList, datapath.Flow{
		Key:  datapath.FlowKey{Client: netip.MustParseAddrPort("198.51.100.1:1234"), Dest: netip.AddrPortFrom(key.Addr, 80), Proto: lb.TCP},
		Real: f.dp.RealMap[netip.MustParseAddr("2001:db8::10")], VIPNum: f.dp.VIPMap[key].Num, VIPGen: f.dp.VIPMap[key].Gen, Packets: 1, Bytes: 60,
	})
	page := must[apiv1.FlowPageJSON](t)(c.Flows(ctx, client.FlowQuery{VIP: name, Client: "198.51.100.0/24", Sort: "last_seen", Limit: 5}))
	if len(page.Flows) != 1 || page.Flows[0].Client != "198.51.100.1:1234" || page.NextCursor != "" {
		t.Errorf("flows: %+v", page)
	}
	if st := must[apiv1.StatusJSON](t)(c.Status(ctx)); st.Version != "test" || st.VIPs != 2 {
		t.Errorf("status: %+v", st)
	}
	delete(f.dp.VIPMap, key) // drift
	if d := must[[]apiv1.DriftJSON](t)(c.Reconcile(ctx)); len(d) == 0 || d[0].VIP != name {
		t.Errorf("reconcile: %+v", d)
	}
	if err := c.DeleteVIP(ctx, name); err != nil {
		t.Fatal(err)
	}
	exerciseBGP(t, c)
	exerciseTracerClient(t, ctx, c)
	exerciseApplyClient(t, ctx, c)

	doc, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			switch op.OperationID {
			case "getOpenAPI", "metrics":
				continue
			}
			if !f.called[op.OperationID] {
				t.Errorf("operation %s has no client method, or the test does not call it", op.OperationID)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, f.url)
	ctx := context.Background()

	_, err := c.CreateVIP(ctx, apiv1.VIPCreateJSON{Protocol: "tcp", Address: "192.0.2.1", Port: ptr(80), VIPSettingsJSON: apiv1.VIPSettingsJSON{RingSize: 1000}})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 422 || e.Field != "ring_size" || !strings.Contains(err.Error(), "one of the primes") || e.RolledBack != nil {
		t.Errorf("bad ring size: %#v", err)
	}
	if _, err := c.GetVIP(ctx, "tcp-192.0.2.1-80"); !client.IsNotFound(err) {
		t.Errorf("missing VIP: %v, want a 404", err)
	}

	f.dp.Fail = func(op string) error {
		if strings.HasPrefix(op, "SetRing") {
			return fakedp.ErrInjected
		}
		return nil
	}
	_, err = c.CreateVIP(ctx, apiv1.VIPCreateJSON{Protocol: "tcp", Address: "192.0.2.1", Port: ptr(80)})
	if !errors.As(err, &e) || e.Status != 500 || e.RolledBack == nil || !*e.RolledBack || !strings.Contains(e.Detail, "nothing was changed") {
		t.Errorf("failed apply: %#v", err)
	}
	if len(f.dp.VIPMap) != 0 {
		t.Errorf("rolled-back create left %v", f.dp.VIPMap)
	}

	f.ready = errors.New("datapath not attached")
	h, err := c.Ready(ctx)
	if !errors.As(err, &e) || e.Status != 503 || e.Detail != "datapath not attached" || h.Status != "unavailable" || h.Reason != "datapath not attached" {
		t.Errorf("not ready: %+v, %#v", h, err)
	}

	bad, err := client.New(f.url, client.Options{Token: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.ListVIPs(ctx); !errors.As(err, &e) || e.Status != 401 || !strings.Contains(err.Error(), "bearer token") {
		t.Errorf("wrong token: %#v", err)
	}
	if _, err := bad.Health(ctx); err != nil {
		t.Errorf("health needs no token, got %v", err)
	}

	// Not every failure is problem+json (a proxy in between).
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html>upstream down</html>"))
	}))
	defer proxy.Close()
	_, err = newClient(t, proxy.URL).ListVIPs(ctx)
	if !errors.As(err, &e) || e.Status != 502 || !strings.Contains(err.Error(), "502 Bad Gateway: <html>upstream down</html>") {
		t.Errorf("HTML error page: %#v", err)
	}
	// Nor is every success lbd's JSON.
	notLBD := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) }))
	defer notLBD.Close()
	if _, err := newClient(t, notLBD.URL).ListVIPs(ctx); err == nil || !strings.Contains(err.Error(), "an lbd daemon?") {
		t.Errorf("non-JSON answer: %v", err)
	}
}

func TestNewServerAddress(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":      "http://127.0.0.1:8080",
		"127.0.0.1:8080":             "http://127.0.0.1:8080",
		"https://lb1.example:8443/":  "https://lb1.example:8443",
		"http://[::1]:8080/lbd/?x=1": "http://[::1]:8080/lbd",
	} {
		c, err := client.New(in, client.Options{})
		if err != nil || c.Server() != want {
			t.Errorf("New(%q): %v, %v; want %s", in, c, err, want)
		}
	}
	for _, in := range []string{"", "ftp://host", "http://"} {
		if _, err := client.New(in, client.Options{}); err == nil {
			t.Errorf("New(%q) succeeded", in)
		}
	}
}

// Names are escaped once (not twice, "%252F"): a malformed name reaches
// the server as one path segment, and its answer says what is wrong. (The
// server's router hands the parameter over still escaped, "tcp%2F...".)
func TestPathEscaping(t *testing.T) {
	f := newFixture(t)
	_, err := newClient(t, f.url).GetVIP(context.Background(), "tcp/192.0.2.1:80")
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 422 || e.Field != "vip" || strings.Contains(e.Detail, "%25") {
		t.Errorf("GetVIP with a slash in the name: %#v", err)
	}
}

// exerciseApplyClient applies a set with and without If-Match, and
// changes a real on its entity tag.
func exerciseApplyClient(t *testing.T, ctx context.Context, c *client.Client) {
	t.Helper()
	vips, tag, err := c.ListVIPsTagged(ctx)
	if err != nil || tag == "" {
		t.Fatalf("list tagged: %v, tag %q", err, tag)
	}
	set := apiv1.ApplyJSON{VIPs: []apiv1.VIPCreateJSON{{Protocol: "tcp", Address: "192.0.2.50", Port: ptr(80), VIPSettingsJSON: apiv1.VIPSettingsJSON{Reals: []apiv1.RealJSON{{Address: "10.0.0.50"}}}}}}
	d, err := c.ApplyVIPs(ctx, set, true, tag)
	if err != nil || !d.DryRun || len(d.Added) != 1 || len(d.Removed) != len(vips) {
		t.Fatalf("dry run: %+v, %v", d, err)
	}
	if d, err = c.ApplyVIPs(ctx, set, false, tag); err != nil || d.DryRun || len(d.Added) != 1 || d.Fingerprint == "" {
		t.Fatalf("apply: %+v, %v", d, err)
	}
	if _, err := c.ApplyVIPs(ctx, apiv1.ApplyJSON{}, false, tag); !client.IsStale(err) {
		t.Fatalf("apply on a stale tag: %v, want 412", err)
	}
	r, rtag, err := c.GetRealTagged(ctx, "tcp-192.0.2.50-80", "10.0.0.50")
	if err != nil || rtag == "" || r.Address != "10.0.0.50" {
		t.Fatalf("get real tagged: %+v %q %v", r, rtag, err)
	}
	if _, err := c.PutRealIfMatch(ctx, "tcp-192.0.2.50-80", "10.0.0.50", apiv1.RealSettingsJSON{Weight: ptr(uint32(4))}, rtag); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutRealIfMatch(ctx, "tcp-192.0.2.50-80", "10.0.0.50", apiv1.RealSettingsJSON{Weight: ptr(uint32(5))}, rtag); !client.IsStale(err) {
		t.Fatalf("put real on a stale tag: %v, want 412", err)
	}
}
