package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

// The REST fuzz: requests generated from openapi.yaml, for every path and
// method, valid and mutated (wrong types, missing required fields, extra
// and miscased keys, duplicates, nulls, huge strings, boundary and
// out-of-range numbers, broken JSON, bad path and query parameters, no
// token), sent to a real Server backed by the fake datapath. Every answer
// must be one the document declares for the operation (a 2xx listed for
// it, a listed error, or a 4xx/5xx covered by its default problem answer)
// and match its schema; no answer may be a 5xx; refused requests leave
// the datapath in step with the desired state.
//
// It is bounded (restFuzzRounds requests per operation, a fixed seed) so
// that it runs in `make test`; LBD_REST_FUZZ_ROUNDS and
// LBD_REST_FUZZ_SEED change both for a longer hunt.

const restFuzzRounds = 100

func TestRESTFuzz(t *testing.T) {
	rounds, seed := restFuzzRounds, uint64(19)
	if v, err := strconv.Atoi(envOr("LBD_REST_FUZZ_ROUNDS", "")); err == nil && v > 0 {
		rounds = v
	}
	if v, err := strconv.ParseUint(envOr("LBD_REST_FUZZ_SEED", ""), 10, 64); err == nil {
		seed = v
	}
	doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	dp := fakedp.New()
	ctl := control.New(dp, nopSaver{}, nil, nil)
	srv, err := New(Options{Controller: ctl, Token: testToken, Build: buildinfo.Info{Version: "fuzz"}, StateFile: "/tmp/state.json", Tracer: &bufTracer{}, MaxEventStreams: 4,
		Datapath: func() map[string]any { return map[string]any{"interface": "eth0"} }})
	if err != nil {
		t.Fatal(err)
	}
	g := &reqGen{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	fixture := func() {
		// a few VIPs at most: each costs a ring to check
		for _, v := range ctl.VIPs() {
			if v.Key != fuzzVIP && len(ctl.VIPs()) > 3 {
				if err := ctl.DeleteVIP(v.Key); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := ctl.VIP(fuzzVIP); err != nil {
			if _, _, err := ctl.PutVIP(control.VIP{Key: fuzzVIP, RingSize: 1021, Reals: []control.Real{
				{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1}, {Addr: netip.MustParseAddr("10.0.0.2"), Weight: 2}}}); err != nil {
				t.Fatal(err)
			}
		}
	}

	type opRef struct {
		path, method string
		item         *openapi3.PathItem
		op           *openapi3.Operation
	}
	var ops []opRef
	for _, path := range slices.Sorted(maps.Keys(doc.Paths.Map())) {
		item := doc.Paths.Value(path)
		for _, method := range slices.Sorted(maps.Keys(item.Operations())) {
			ops = append(ops, opRef{path, method, item, item.GetOperation(method)})
		}
	}
	var total, fiveXX, undeclared, mismatched, accepted, broken int
	byStatus := map[int]int{}
	failures := 0
	report := func(format string, args ...any) {
		if failures++; failures <= 20 {
			t.Errorf(format, args...)
		}
	}
	for _, o := range ops {
		for round := range rounds {
			fixture()
			r := g.request(o.path, o.item, o.op, round)
			hr := httptest.NewRequest(o.method, r.target, bytes.NewReader(r.body))
			if r.body != nil {
				hr.Header.Set("Content-Type", "application/json")
			}
			if !r.noToken {
				hr.Header.Set("Authorization", "Bearer "+testToken)
			}
			if o.op.OperationID == "streamEvents" {
				// a stream ends with its client: this one is gone at once
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				hr = hr.WithContext(ctx)
			}
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, hr)
			total++
			if r.refuse {
				broken++
			}
			byStatus[w.Code]++
			what := fmt.Sprintf("%s %s [%s] %.200q", o.method, r.target, r.kind, r.body)
			if w.Code >= 500 {
				fiveXX++
				report("%s → %d %s", what, w.Code, w.Body)
			}
			if r.refuse && w.Code < 400 {
				accepted++
				report("%s → %d: a request the document does not allow was accepted: %s", what, w.Code, w.Body)
			}
			if !declared(o.op, w.Code) {
				undeclared++
				report("%s → %d, which %s does not declare: %s", what, w.Code, o.op.OperationID, w.Body)
				continue
			}
			in := &openapi3filter.RequestValidationInput{Request: hr,
				Route: &routers.Route{Spec: doc, Path: o.path, PathItem: o.item, Method: o.method, Operation: o.op}}
			rv := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: w.Code, Header: w.Header(),
				Options: &openapi3filter.Options{IncludeResponseStatus: true}}
			rv.SetBodyBytes(w.Body.Bytes())
			if err := openapi3filter.ValidateResponse(context.Background(), rv); err != nil {
				mismatched++
				report("%s → %d does not match the document: %v", what, w.Code, err)
			}
			if w.Code >= 400 && w.Code < 500 {
				if drifts, err := ctl.Reconcile(); err != nil || len(drifts) != 0 {
					report("%s → %d left the datapath out of step: %+v %v", what, w.Code, drifts, err)
				}
			}
		}
	}
	t.Logf("REST fuzz (seed %d): %d operations, %d requests (%d the document does not allow); 5xx: %d, undeclared statuses: %d, answers not matching the document: %d, disallowed requests accepted: %d",
		seed, len(ops), total, broken, fiveXX, undeclared, mismatched, accepted)
	t.Logf("statuses: %v", byStatus)
	if total < len(ops)*rounds {
		t.Errorf("only %d requests", total)
	}
}

var fuzzVIP = lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}

// declared reports whether op's document declares status: listed, or an
// error (4xx/5xx) covered by a default answer.
func declared(op *openapi3.Operation, status int) bool {
	if op.Responses.Status(status) != nil {
		return true
	}
	return status >= 400 && op.Responses.Default() != nil
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

// genReq is one generated request.
type genReq struct {
	target  string // path and query
	body    []byte // nil: none
	kind    string // what was done to it, for reports
	noToken bool
	// refuse: the document does not allow this request: it must get a
	// 4xx (strict JSON: a miscased, unknown or repeated key, a null,
	// a wrong JSON type, a missing required field, a huge string...)
	refuse bool
}

type reqGen struct{ rnd *rand.Rand }

func (g *reqGen) pick(n int) int { return g.rnd.IntN(n) }

func (g *reqGen) chance(p float64) bool { return g.rnd.Float64() < p }

// request builds the round'th request of an operation: round 0 is valid,
// the others valid or mutated in one place.
func (g *reqGen) request(path string, item *openapi3.PathItem, op *openapi3.Operation, round int) genReq {
	var r genReq
	mutate := round > 0 && g.chance(0.8)
	params := append(slices.Clone(item.Parameters), op.Parameters...)
	// what to break: a path or query parameter, the body, or (rarely)
	// the token
	dims := []int{3}
	for _, pr := range params {
		switch pr.Value.In {
		case "path":
			dims = append(dims, 0, 0, 0)
		case "query":
			dims = append(dims, 1, 1)
		}
	}
	if op.RequestBody != nil {
		dims = append(dims, 2, 2, 2, 2, 2, 2)
	}
	where := dims[g.pick(len(dims))]
	if len(dims) == 1 && !g.chance(0.2) {
		mutate = false // nothing to break but the token: mostly valid
	}
	target := path
	q := url.Values{}
	for _, pr := range params {
		p := pr.Value
		var s *openapi3.Schema
		if p.Schema != nil {
			s = p.Schema.Value
		}
		switch p.In {
		case "path":
			v := g.pathParam(p.Name)
			if mutate && where == 0 && g.chance(0.7) {
				v, r.kind = g.badString(), "bad path parameter "+p.Name
			}
			target = strings.ReplaceAll(target, "{"+p.Name+"}", url.PathEscape(v))
		case "query":
			if mutate && where == 1 && g.chance(0.5) {
				q.Set(p.Name, g.badQuery(s))
				r.kind = "bad query parameter " + p.Name
			} else if g.chance(0.4) {
				q.Set(p.Name, g.queryValue(s))
			}
		}
	}
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	r.target = target
	if op.RequestBody != nil && op.RequestBody.Value != nil {
		if mt := op.RequestBody.Value.Content.Get("application/json"); mt != nil && mt.Schema != nil {
			v := g.valid(mt.Schema.Value, "", 0)
			if mutate && where == 2 {
				r.body, r.kind, r.refuse = g.mutateBody(v, mt.Schema.Value)
			} else {
				r.body, _ = json.Marshal(v)
			}
		}
	}
	if mutate && where == 3 {
		// refused unless the operation needs no token (security: [])
		r.noToken, r.kind, r.refuse = true, "no token", op.Security == nil || len(*op.Security) > 0
	}
	if r.kind == "" {
		r.kind = "valid"
	}
	return r
}

var (
	fuzzVIPAddrs  = []string{"192.0.2.1", "192.0.2.2", "198.51.100.9", "2001:db8::1", "10.0.0.0"}
	fuzzRealAddrs = []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "172.16.5.4", "2001:db8:1::3"}
)

func (g *reqGen) pathParam(name string) string {
	switch name {
	case "vip":
		if g.chance(0.6) {
			return lb.VIPName(fuzzVIP)
		}
		return []string{"tcp", "udp"}[g.pick(2)] + "-" + fuzzVIPAddrs[g.pick(len(fuzzVIPAddrs))] + "-" + strconv.Itoa([]int{0, 53, 80, 443}[g.pick(4)])
	case "addr":
		return fuzzRealAddrs[g.pick(len(fuzzRealAddrs))]
	}
	return "x"
}

// badString is a string that breaks some rule: empty, huge, odd bytes,
// a near miss of a VIP name or address.
func (g *reqGen) badString() string {
	return []string{
		"", " ", "tcp", "tcp-192.0.2.1", "tcp-192.0.2.1-99999", "tcp-192.0.2.1--1", "sctp-192.0.2.1-80",
		"tcp-192.0.2.256-80", "tcp-::ffff:1.2.3.4-80", "tcp-fe80::1%eth0-80", "tcp-127.0.0.1-80", "udp-255.255.255.255-53",
		"10.0.0", "::ffff:10.0.0.1", "fe80::1%25lo", "224.0.0.1", "0.0.0.0", "\x00", "%", "é", strings.Repeat("a", 5000),
		"tcp-192.0.2.1-80\r\nX: y", "../../etc/passwd",
	}[g.pick(22)]
}

func (g *reqGen) queryValue(s *openapi3.Schema) string {
	if s == nil {
		return "x"
	}
	if len(s.Enum) > 0 {
		return fmt.Sprint(s.Enum[g.pick(len(s.Enum))])
	}
	switch schemaType(s) {
	case "integer":
		lo, hi := 0.0, 1000.0
		if s.Min != nil {
			lo = *s.Min
		}
		if s.Max != nil {
			hi = min(*s.Max, lo+100000)
		}
		return strconv.FormatInt(int64(lo)+g.rnd.Int64N(int64(hi-lo)+1), 10)
	}
	return []string{lb.VIPName(fuzzVIP), "10.0.0.1", "198.51.100.0/24", "2001:db8::/32"}[g.pick(4)]
}

func (g *reqGen) badQuery(s *openapi3.Schema) string {
	out := []string{"", "-1", "0", "1.5", "1e3", "abc", "99999999999999999999", "true", strings.Repeat("9", 300), "10.0.0.1/99", "%zz"}
	if s != nil && s.Min != nil {
		out = append(out, strconv.FormatFloat(*s.Min-1, 'f', -1, 64))
	}
	if s != nil && s.Max != nil {
		out = append(out, strconv.FormatFloat(*s.Max+1, 'f', -1, 64))
	}
	return out[g.pick(len(out))]
}

// valid generates a value that fits s (name is the property's, for
// strings that must be addresses, paths or durations).
func (g *reqGen) valid(s *openapi3.Schema, name string, depth int) any {
	if s == nil {
		return "x"
	}
	if name == "ring_size" {
		// small rings keep the run fast; the other sizes are in the enum
		return []int{1021, 1021, 1021, 4099}[g.pick(4)]
	}
	if len(s.Enum) > 0 {
		return s.Enum[g.pick(len(s.Enum))]
	}
	switch schemaType(s) {
	case "object":
		out := map[string]any{}
		for _, k := range slices.Sorted(maps.Keys(s.Properties)) {
			p := s.Properties[k].Value
			if p == nil || p.ReadOnly {
				continue
			}
			if slices.Contains(s.Required, k) || k == "ring_size" || (depth < 3 && g.chance(0.4)) {
				out[k] = g.valid(p, k, depth+1)
			}
		}
		return out
	case "array":
		n := g.pick(4)
		if depth >= 3 {
			n = 0
		}
		out := make([]any, 0, n)
		for range n {
			var it *openapi3.Schema
			if s.Items != nil {
				it = s.Items.Value
			}
			out = append(out, g.valid(it, name, depth+1))
		}
		return out
	case "integer":
		lo, hi := 0.0, 100.0
		if s.Min != nil {
			lo = *s.Min
		}
		if s.Max != nil {
			hi = *s.Max
		}
		return int64(lo) + g.rnd.Int64N(int64(hi-lo)+1)
	case "number":
		return g.rnd.Float64() * 100
	case "boolean":
		return g.chance(0.5)
	}
	switch name {
	case "address":
		if g.chance(0.5) {
			return fuzzVIPAddrs[g.pick(len(fuzzVIPAddrs))]
		}
		return fuzzRealAddrs[g.pick(len(fuzzRealAddrs))]
	case "path":
		return []string{"/", "/healthz", "/a/b?c=d", "/%20"}[g.pick(4)]
	case "interval", "timeout":
		return []string{"1s", "500ms", "5s", "2m"}[g.pick(4)]
	}
	return "x"
}

// mutateBody breaks a valid body in one place.
func (g *reqGen) mutateBody(v any, s *openapi3.Schema) ([]byte, string, bool) {
	obj, _ := v.(map[string]any)
	keys := slices.Sorted(maps.Keys(s.Properties))
	key := ""
	if len(keys) > 0 {
		key = keys[g.pick(len(keys))]
	}
	switch g.pick(14) {
	case 0:
		return []byte(`{"` + key + `":`), "truncated JSON", true
	case 1:
		return []byte(`[]`), "array body", true
	case 2:
		return []byte(`null`), "null body", true
	case 3:
		return []byte(``), "empty body", true
	case 4:
		b, _ := json.Marshal(obj)
		return append(b, `{}`...), "trailing data", true
	case 5:
		obj["no_such_field"] = 1
		return mustJSON(obj), "extra key", true
	case 6:
		if key != "" {
			obj[strings.ToUpper(key)] = obj[key]
			delete(obj, key)
		}
		return mustJSON(obj), "miscased key " + key, key != ""
	case 7:
		b := mustJSON(obj)
		switch {
		case key != "" && len(b) > 2:
			b = append([]byte(`{"`+key+`":null,`), b[1:]...)
			if string(b[len(b)-2:]) == ",}" {
				b = append(b[:len(b)-2], '}')
			}
		case key != "":
			// an empty body: "{}" alone would be a valid one
			b = []byte(`{"` + key + `":null,"` + key + `":null}`)
		}
		return b, "duplicate key " + key, key != ""
	case 8:
		if len(s.Required) > 0 {
			k := s.Required[g.pick(len(s.Required))]
			delete(obj, k)
			return mustJSON(obj), "missing required " + k, true
		}
		fallthrough
	case 9:
		obj[key] = nil
		return mustJSON(obj), "null " + key, true
	case 10:
		obj[key] = strings.Repeat("\u00e9x", 60000)
		return mustJSON(obj), "huge string " + key, true
	case 11:
		bad := []any{"1", 1.5, true, []any{}, map[string]any{}, -1, 1e300, int64(1) << 62, "\x00\r\n"}
		val := bad[g.pick(len(bad))]
		obj[key] = val
		want := ""
		if ps := s.Properties[key]; ps != nil {
			want = schemaType(ps.Value)
		}
		return mustJSON(obj), fmt.Sprintf("wrong type %s=%v", key, val), want != "" && !jsonFits(val, want)
	case 12:
		nums := []string{"-1", "0", "65536", "4294967296", "1e3", "1.0", "-0", "18446744073709551616", "1000001", "655373"}
		n := nums[g.pick(len(nums))]
		delete(obj, key)
		b := mustJSON(obj)
		if key != "" {
			b = append([]byte(`{"`+key+`":`+n+sepIf(len(obj) > 0)), b[1:]...)
		}
		return b, "boundary number " + key + "=" + n, false
	default:
		if ps := s.Properties[key]; ps != nil && ps.Value != nil && schemaType(ps.Value) == "object" {
			inner := g.valid(ps.Value, key, 1).(map[string]any)
			delete(inner, "type")
			obj[key] = inner
			return mustJSON(obj), "nested object without its type: " + key, slices.Contains(ps.Value.Required, "type")
		}
		obj[key] = map[string]any{"deep": []any{[]any{[]any{map[string]any{}}}}}
		return mustJSON(obj), "object for " + key, true
	}
}

// jsonFits reports whether a Go value marshals to the JSON type want.
func jsonFits(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return want == "string"
	case bool:
		return want == "boolean"
	case []any:
		return want == "array"
	case map[string]any:
		return want == "object"
	case float64:
		return want == "number" || want == "integer" && x == float64(int64(x)) && !strings.ContainsAny(strconv.FormatFloat(x, 'g', -1, 64), ".e")
	case int, int64:
		return want == "number" || want == "integer"
	}
	return false
}

func sepIf(b bool) string {
	if b {
		return ","
	}
	return ""
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
