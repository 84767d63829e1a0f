package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

const testToken = "s3cret-token"

type nopSaver struct{}

func (nopSaver) Save(map[lb.VIPKey]*control.VIP) error { return nil }

// harness sends requests to a Server backed by a fake datapath, and checks
// every request and answer against the OpenAPI document.
type harness struct {
	t      testing.TB
	srv    *Server
	dp     *fakedp.Datapath
	ctl    *control.Controller
	doc    *openapi3.T
	router routers.Router
	called map[string]bool // operation IDs exercised
	ready  error
	// answered is the header of the last answer.
	answered http.Header
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dp: fakedp.New(), doc: doc, router: router, called: map[string]bool{}}
	h.ctl = control.New(h.dp, nopSaver{}, nil, nil)
	h.srv, err = New(Options{
		Controller: h.ctl, Token: testToken, Build: buildinfo.Info{Version: "test", Commit: "c0ffee"}, StateFile: "/tmp/state.json",
		Datapath: func() map[string]any { return map[string]any{"interface": "eth0", "mode": "native"} },
		Ready:    func() error { return h.ready },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type req struct {
	method, path string
	body         any    // marshalled as JSON unless a string
	token        string // default testToken; "-" for none
	contentType  string // default application/json
	invalid      bool   // the request breaks the document on purpose: don't validate it
	header       http.Header
}

// do sends r and returns the status and body, after validating the answer
// (and, unless r.invalid, the request) against the document.
func (h *harness) do(r req) (int, []byte) {
	h.t.Helper()
	var body []byte
	switch b := r.body.(type) {
	case nil:
	case string:
		body = []byte(b)
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	hr := httptest.NewRequest(r.method, r.path, bytes.NewReader(body))
	if body != nil {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	for k, vs := range r.header {
		hr.Header[k] = vs
	}
	switch r.token {
	case "":
		hr.Header.Set("Authorization", "Bearer "+testToken)
	case "-":
	default:
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}

	route, params, err := h.router.FindRoute(hr)
	if err != nil {
		h.t.Fatalf("%s %s: not in the OpenAPI document: %v", r.method, r.path, err)
	}
	h.called[route.Operation.OperationID] = true
	in := &openapi3filter.RequestValidationInput{
		Request: hr, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	if !r.invalid {
		vr := hr.Clone(context.Background())
		vr.Body = io.NopCloser(bytes.NewReader(body))
		in.Request = vr
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			h.t.Fatalf("%s %s: request does not match the document: %v", r.method, r.path, err)
		}
		in.Request = hr
	}

	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, hr)
	out := w.Body.Bytes()
	h.answered = w.Header()
	rv := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: w.Code, Header: w.Header(),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	rv.SetBodyBytes(out)
	if err := openapi3filter.ValidateResponse(context.Background(), rv); err != nil {
		h.t.Fatalf("%s %s → %d %s: answer does not match the document: %v", r.method, r.path, w.Code, out, err)
	}
	return w.Code, out
}

// expect sends r, checks the status and decodes the answer into v.
func (h *harness) expect(r req, status int, v any) {
	h.t.Helper()
	got, body := h.do(r)
	if got != status {
		h.t.Fatalf("%s %s: status %d, want %d: %s", r.method, r.path, got, status, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			h.t.Fatalf("%s %s: decode %s: %v", r.method, r.path, body, err)
		}
	}
}

func u32(v uint32) *uint32 { return &v }

// TestEveryOperation walks an operator's session through every operation
// of the document, each request and answer validated against it.
func TestEveryOperation(t *testing.T) {
	h := newHarness(t)
	var vip apiv1.VIPJSON
	h.expect(req{method: "POST", path: "/api/v1/vips", body: map[string]any{
		"protocol": "tcp", "address": "192.0.2.1", "port": 80, "ring_size": 1021,
		"reals": []map[string]any{{"address": "10.0.0.1"}, {"address": "10.0.0.2", "weight": 3}},
	}}, http.StatusCreated, &vip)
	if vip.Name != "tcp-192.0.2.1-80" || len(vip.Reals) != 2 || *vip.Reals[1].Weight != 3 || vip.Reals[0].State != "active" || vip.Encap != "ipip" {
		t.Fatalf("created %+v", vip)
	}
	h.expect(req{method: "PUT", path: "/api/v1/vips/udp-2001:db8::1-53", body: apiv1.VIPSettingsJSON{Flags: lb.VIPNoLRU, RingSize: 4099, Reals: []apiv1.RealJSON{{Address: "2001:db8:1::1"}}}}, http.StatusCreated, &vip)
	h.expect(req{method: "PUT", path: "/api/v1/vips/udp-2001:db8::1-53", body: apiv1.VIPSettingsJSON{Flags: lb.VIPSticky, RingSize: 4099}}, http.StatusOK, &vip)
	if !vip.Flags.Has(lb.VIPSticky) || vip.Flags.Has(lb.VIPNoLRU) || len(vip.Reals) != 0 {
		t.Errorf("PUT did not replace the whole VIP: %+v", vip)
	}

	var list apiv1.VIPListJSON
	h.expect(req{method: "GET", path: "/api/v1/vips"}, http.StatusOK, &list)
	if len(list.VIPs) != 2 || list.VIPs[0].Name != "tcp-192.0.2.1-80" {
		t.Errorf("list %+v", list)
	}
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80"}, http.StatusOK, &vip)
	gue := "gue"
	h.expect(req{method: "PATCH", path: "/api/v1/vips/tcp-192.0.2.1-80", body: apiv1.VIPPatchJSON{Encap: &gue}}, http.StatusOK, &vip)
	if vip.Encap != "gue" || len(vip.Reals) != 2 {
		t.Errorf("patch %+v", vip)
	}
	if h.dp.VIPMap[lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}].Flags != lb.VIPGUE {
		t.Error("patch did not reach the datapath")
	}

	var reals apiv1.RealListJSON
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals", body: apiv1.RealListJSON{Reals: []apiv1.RealJSON{{Address: "10.0.0.3", Weight: u32(2)}, {Address: "10.0.0.1"}}}}, http.StatusOK, &reals)
	if len(reals.Reals) != 2 || reals.Reals[0].Address != "10.0.0.1" {
		t.Errorf("replace reals %+v", reals)
	}
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/reals"}, http.StatusOK, &reals)
	var real apiv1.RealJSON
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.4", body: apiv1.RealSettingsJSON{Weight: u32(1)}}, http.StatusCreated, &real)
	h.expect(req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.4", body: apiv1.RealSettingsJSON{State: "draining"}}, http.StatusOK, &real)
	if real.State != "draining" || *real.Weight != 1 {
		t.Errorf("drain %+v", real)
	}
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.4"}, http.StatusOK, &real)

	var ring apiv1.RingJSON
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/ring"}, http.StatusOK, &ring)
	if ring.Size != 1021 || len(ring.Reals) != 3 || ring.EmptySlots != 0 {
		t.Fatalf("ring %+v", ring)
	}
	for _, s := range ring.Reals {
		want := map[string][2]int{"10.0.0.1": {340, 341}, "10.0.0.3": {680, 681}, "10.0.0.4": {0, 0}}[s.Address]
		if s.Slots < want[0] || s.Slots > want[1] {
			t.Errorf("real %s holds %d slots, want %v (weights 1:2, draining 0)", s.Address, s.Slots, want)
		}
	}

	key := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	h.dp.VIPCounters[key] = datapath.VIPStats{Packets: 10, Bytes: 1500, LRUHits: 9, LRUMisses: 1}
	h.dp.RealCounters[h.dp.RealMap[netip.MustParseAddr("10.0.0.1")]] = datapath.RealStats{Packets: 4, Bytes: 600}
	h.dp.Global[datapath.StatTX] = 10
	var vs apiv1.VIPStatsJSON
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/stats"}, http.StatusOK, &vs)
	if vs.Packets != 10 || vs.LRUHits != 9 {
		t.Errorf("VIP stats %+v", vs)
	}
	var rs apiv1.TrafficJSON
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.1/stats"}, http.StatusOK, &rs)
	if rs.Packets != 4 || rs.Bytes != 600 {
		t.Errorf("real stats %+v", rs)
	}
	var st apiv1.StatsJSON
	h.expect(req{method: "GET", path: "/api/v1/stats"}, http.StatusOK, &st)
	// 10.0.0.2 and 2001:db8:1::1 were removed above: listed as removed
	if st.Global.Counters["tx"] != 10 || len(st.VIPs) != 2 || len(st.Reals) != 5 || !st.Reals[1].Removed || st.Reals[0].Removed {
		t.Errorf("stats %+v", st)
	}
	if r := st.VIPs[0].Reals; len(r) != 4 || r[0].Packets != 4 || !r[1].Removed {
		t.Errorf("reals of VIP %s: %+v", st.VIPs[0].VIP, r)
	}
	h.expect(req{method: "POST", path: "/api/v1/vips/tcp-192.0.2.1-80/stats/reset"}, http.StatusNoContent, nil)
	h.expect(req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-80/stats"}, http.StatusOK, &vs)
	if vs.Packets != 0 || len(vs.Reals) != 3 || vs.Reals[0].Packets != 0 {
		t.Errorf("VIP stats after reset %+v", vs)
	}
	h.expect(req{method: "POST", path: "/api/v1/vips/tcp-192.0.2.9-80/stats/reset"}, http.StatusNotFound, nil)
	h.dp.VIPCounters[key] = datapath.VIPStats{Packets: 10, Bytes: 1500, LRUHits: 9, LRUMisses: 1} // for the metrics below
	h.dp.RealCounters[h.dp.RealMap[netip.MustParseAddr("10.0.0.1")]] = datapath.RealStats{Packets: 4, Bytes: 600}
	h.dp.Usage = datapath.TableUsage{Entries: 7, Capacity: 200, CPUs: 2}
	var ft apiv1.FlowTablesJSON
	h.expect(req{method: "GET", path: "/api/v1/flow-tables"}, http.StatusOK, &ft)
	if ft.Entries != 7 || ft.Capacity != 200 || ft.CPUs != 2 || ft.PerCPUCapacity != 100 {
		t.Errorf("flow tables %+v", ft)
	}

	now := time.Now()
	h.dp.FlowList = append(h.dp.FlowList, datapath.Flow{
		Key:  datapath.FlowKey{Client: netip.MustParseAddrPort("198.51.100.7:40000"), Dest: netip.MustParseAddrPort("192.0.2.1:80"), Proto: lb.TCP},
		Real: h.dp.RealMap[netip.MustParseAddr("10.0.0.3")], VIPNum: h.dp.VIPMap[key].Num, VIPGen: h.dp.VIPMap[key].Gen, Packets: 3, Bytes: 180, FirstSeen: now, LastSeen: now,
	})
	var fp apiv1.FlowPageJSON
	h.expect(req{method: "GET", path: "/api/v1/flows?vip=tcp-192.0.2.1-80&client=198.51.100.0/24&sort=last_seen&limit=10"}, http.StatusOK, &fp)
	if len(fp.Flows) != 1 || fp.Flows[0].Real != "10.0.0.3" || fp.Flows[0].VIP != "tcp-192.0.2.1-80" || fp.NextCursor != "" {
		t.Errorf("flows %+v", fp)
	}

	var status apiv1.StatusJSON
	h.expect(req{method: "GET", path: "/api/v1/status"}, http.StatusOK, &status)
	if status.VIPs != 2 || status.Datapath["mode"] != "native" || status.Version != "test" || status.Commit != "c0ffee" {
		t.Errorf("status %+v", status)
	}
	var drifts apiv1.DriftsJSON
	h.expect(req{method: "POST", path: "/api/v1/reconcile"}, http.StatusOK, &drifts)
	if len(drifts.Drifts) != 0 {
		t.Errorf("in sync, yet drifts %+v", drifts)
	}
	var doc map[string]any
	h.expect(req{method: "GET", path: "/api/v1/openapi.json"}, http.StatusOK, &doc)
	if doc["openapi"] != "3.0.3" {
		t.Errorf("served document %v", doc["openapi"])
	}
	var health apiv1.HealthJSON
	h.expect(req{method: "GET", path: "/healthz", token: "-"}, http.StatusOK, &health)
	h.expect(req{method: "GET", path: "/readyz", token: "-"}, http.StatusOK, &health)
	h.ready = errors.New("XDP program not attached")
	h.expect(req{method: "GET", path: "/readyz", token: "-"}, http.StatusServiceUnavailable, &health)
	if health.Reason != "XDP program not attached" {
		t.Errorf("readyz %+v", health)
	}
	code, metrics := h.do(req{method: "GET", path: "/metrics"})
	for _, want := range []string{
		`lbd_vip_packets_total{vip="tcp-192.0.2.1-80"} 10`,
		`lbd_real_bytes_total{real="10.0.0.1"} 600`,
		`lbd_vip_real_packets_total{real="10.0.0.1",vip="tcp-192.0.2.1-80"} 4`,
		`lbd_vip_real_packets_total{real="10.0.0.3",vip="tcp-192.0.2.1-80"} 0`,
		"lbd_flow_table_entries 7\n",
		"lbd_flow_table_capacity 200\n",
		`lbd_datapath_packets_total{counter="tx"} 10`,
		`lbd_api_requests_total{code="201",method="POST",route="/api/v1/vips"} 1`,
		`lbd_api_request_duration_seconds_count{method="GET",route="/api/v1/vips/:vip"} 1`,
		`lbd_build_info{build_date="",commit="c0ffee",goversion="",version="test"} 1`,
	} {
		if code != 200 || !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	h.expect(req{method: "DELETE", path: "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.4"}, http.StatusNoContent, nil)
	h.expect(req{method: "DELETE", path: "/api/v1/vips/tcp-192.0.2.1-80"}, http.StatusNoContent, nil)
	if len(h.dp.VIPMap) != 1 {
		t.Errorf("datapath VIPs after delete: %d", len(h.dp.VIPMap))
	}

	exerciseBGPDisabled(t, h)
	exerciseFleetDisabled(t, h)
	exerciseApply(t, h)

	exerciseTracer(h)
	for path, item := range h.doc.Paths.Map() {
		for method, op := range item.Operations() {
			if !h.called[op.OperationID] {
				t.Errorf("%s %s (%s) is never exercised", method, path, op.OperationID)
			}
		}
	}
}

func TestAuthentication(t *testing.T) {
	h := newHarness(t)
	for _, r := range []req{
		{method: "GET", path: "/api/v1/vips", token: "-"},
		{method: "GET", path: "/api/v1/vips", token: "wrong"},
		{method: "GET", path: "/api/v1/vips", token: testToken + "x"},
		{method: "GET", path: "/metrics", token: "-"},
		{method: "GET", path: "/api/v1/openapi.json", token: "-"},
	} {
		r.invalid = true
		code, body := h.do(r)
		var p apiv1.ProblemJSON
		_ = json.Unmarshal(body, &p)
		if code != http.StatusUnauthorized || p.Status != 401 || !strings.Contains(p.Detail, "bearer token") {
			t.Errorf("%s %s token %q: %d %s", r.method, r.path, r.token, code, body)
		}
	}
	if _, err := New(Options{Controller: h.ctl, Token: " "}); err == nil {
		t.Error("server without a token was built")
	}
}

func TestBadInputIsRefusedWithAReason(t *testing.T) {
	h := newHarness(t)
	h.expect(req{method: "POST", path: "/api/v1/vips", body: apiv1.VIPCreateJSON{Protocol: "tcp", Address: "192.0.2.1", Port: new(int)}}, http.StatusCreated, nil)
	cases := []struct {
		name   string
		r      req
		status int
		detail string
		field  string
	}{
		{"unknown field", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.2","port":80,"weight":1}`}, 400, `unknown field "weight"`, "weight"},
		{"malformed JSON", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":`}, 400, "body is not valid", ""},
		{"trailing data", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.2","port":80} {}`}, 400, "after the JSON value", ""},
		{"wrong type", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.2","port":"80"}`}, 400, `field "port" must be an integer, not a string`, "port"},
		{"content type", req{method: "POST", path: "/api/v1/vips", body: `{}`, contentType: "text/plain"}, 415, "application/json", ""},
		{"too large", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"` + strings.Repeat("1", DefaultBodyLimit) + `"}`}, 413, "larger than the limit", ""},
		{"missing port", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.2"}`}, 422, "port is required", "port"},
		{"bad protocol", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"sctp","address":"192.0.2.2","port":1}`}, 422, "use tcp or udp", "protocol"},
		{"bad address", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2","port":1}`}, 422, "not an IPv4 or IPv6", "address"},
		{"ring size", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.2","port":1,"ring_size":1000}`}, 422, "one of the primes", "ring_size"},
		{"duplicate", req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.1","port":0}`}, 409, "already exists", ""},
		{"bad VIP name", req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-99999"}, 422, "port must be", "vip"},
		{"no VIP", req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.9-80"}, 404, "not found", ""},
		{"no real", req{method: "DELETE", path: "/api/v1/vips/tcp-192.0.2.1-0/reals/10.0.0.9"}, 404, "not found", ""},
		{"bad real", req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-0/reals/10.0.0", body: `{}`}, 422, "not an IPv4", "addr"},
		{"bad state", req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-0/reals/10.0.0.1", body: `{"state":"up"}`}, 422, `use "active" or "draining"`, "state"},
		{"reals missing", req{method: "PUT", path: "/api/v1/vips/tcp-192.0.2.1-0/reals", body: `{}`}, 422, `"reals" is required`, "reals"},
		{"limit", req{method: "GET", path: "/api/v1/flows?limit=5000"}, 422, "between 1 and 1000", "limit"},
		{"cursor", req{method: "GET", path: "/api/v1/flows?cursor=zzz"}, 422, "start again", "cursor"},
		{"client", req{method: "GET", path: "/api/v1/flows?client=nope"}, 422, "prefix", "client"},
		{"no route", req{method: "GET", path: "/api/v1/vips/tcp-192.0.2.1-0/nope"}, 404, "no such path", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.invalid = true
			h.t = t
			code, body := h.doUnrouted(tc.r)
			var p apiv1.ProblemJSON
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("answer is not a problem: %s", body)
			}
			if code != tc.status || p.Status != tc.status || !strings.Contains(p.Detail, tc.detail) || p.Field != tc.field {
				t.Errorf("got %d %+v; want %d with %q (field %q)", code, p, tc.status, tc.detail, tc.field)
			}
		})
	}
	if n := len(h.ctl.VIPs()); n != 1 {
		t.Errorf("bad input changed the state: %d VIPs", n)
	}
}

// doUnrouted is do for requests the document cannot route (bad paths):
// the answer is still checked to be a problem document.
func (h *harness) doUnrouted(r req) (int, []byte) {
	h.t.Helper()
	hr := httptest.NewRequest(r.method, r.path, nil)
	if _, _, err := h.router.FindRoute(hr); err == nil {
		return h.do(r)
	}
	body := []byte(nil)
	if s, ok := r.body.(string); ok {
		body = []byte(s)
	}
	hr = httptest.NewRequest(r.method, r.path, bytes.NewReader(body))
	hr.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, hr)
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		h.t.Errorf("content type %q", ct)
	}
	return w.Code, w.Body.Bytes()
}

func TestFailedChangeSaysWhetherRolledBack(t *testing.T) {
	h := newHarness(t)
	h.dp.Fail = func(op string) error {
		if strings.HasPrefix(op, "SetRing") {
			return fakedp.ErrInjected
		}
		return nil
	}
	code, body := h.do(req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.1","port":80,"reals":[{"address":"10.0.0.1"}]}`})
	var p apiv1.ProblemJSON
	_ = json.Unmarshal(body, &p)
	if code != 500 || p.RolledBack == nil || !*p.RolledBack || !strings.Contains(p.Detail, "nothing was changed") {
		t.Fatalf("%d %s", code, body)
	}
	if len(h.dp.VIPMap) != 0 || len(h.ctl.VIPs()) != 0 {
		t.Error("failed create left state behind")
	}
	h.dp.Fail = nil
	h.dp.MaxVIPs = 0
	code, body = h.do(req{method: "POST", path: "/api/v1/vips", body: `{"protocol":"tcp","address":"192.0.2.1","port":80}`})
	if code != http.StatusInsufficientStorage || !strings.Contains(string(body), "limit") {
		t.Errorf("over the VIP limit: %d %s", code, body)
	}
}
