package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

const testToken = "cli-test-token"

type nopSaver struct{}

func (nopSaver) Save(map[lb.VIPKey]*control.VIP) error { return nil }

// daemon is the real API server over a fake datapath, on a loopback
// port, with a token file for the CLI.
type daemon struct {
	t         *testing.T
	dp        *fakedp.Datapath
	ctl       *control.Controller
	url       string
	tokenFile string
	ready     error
	// before, if set, sees each request before the server does.
	before func(r *http.Request)
}

func newDaemon(t *testing.T) *daemon {
	t.Helper()
	// The CLI reads these; keep the runner's environment out of the tests.
	for _, env := range []string{"LBD_TOKEN", "LBD_SERVER", "LBD_TOKEN_FILE"} {
		t.Setenv(env, "")
	}
	d := &daemon{t: t, dp: fakedp.New()}
	d.ctl = control.New(d.dp, nopSaver{}, nil, nil)
	srv, err := api.New(api.Options{
		Controller: d.ctl, Token: testToken, Build: buildinfo.Info{Version: "test", Commit: "c0ffee"}, StateFile: "/var/lib/lbd/state.json",
		Datapath: func() map[string]any {
			return map[string]any{"interface": "eth0", "mode": "native", "limits": map[string]any{"vips": 512}}
		},
		Ready: func() error { return d.ready },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.before != nil {
			d.before(r)
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	d.url = ts.URL
	d.tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(d.tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// run runs `lbd args...` against the daemon and returns what it printed.
// The connection flags come last, so args may be any command line.
func (d *daemon) run(args ...string) (stdout, stderr string, err error) {
	d.t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(slices.Clone(args), "--server="+d.url, "--token-file="+d.tokenFile))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// ok runs a command that must succeed and returns its stdout.
func (d *daemon) ok(args ...string) string {
	d.t.Helper()
	out, errOut, err := d.run(args...)
	if err != nil {
		d.t.Fatalf("lbd %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// fail runs a command that must fail and returns its error.
func (d *daemon) fail(args ...string) error {
	d.t.Helper()
	out, _, err := d.run(args...)
	if err == nil {
		d.t.Fatalf("lbd %s succeeded, want an error; stdout:\n%s", strings.Join(args, " "), out)
	}
	return err
}

// okJSON runs a command with -o json and decodes its output into v,
// which must be the whole output.
func (d *daemon) okJSON(v any, args ...string) {
	d.t.Helper()
	out := d.ok(append(args, "-o", "json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		d.t.Fatalf("lbd %s -o json: output is not the expected JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
	if dec.More() {
		d.t.Fatalf("lbd %s -o json: more than one JSON value:\n%s", strings.Join(args, " "), out)
	}
}

// hasRow reports whether some line of a table has exactly these cells
// (cells separated by runs of spaces; a cell may not contain two spaces).
func hasRow(out string, cells ...string) bool {
	for line := range strings.Lines(out) {
		var got []string
		for _, c := range strings.Split(strings.TrimSpace(line), "  ") {
			if c = strings.TrimSpace(c); c != "" {
				got = append(got, c)
			}
		}
		if slices.Equal(got, cells) {
			return true
		}
	}
	return false
}

func wantRow(t *testing.T, out string, cells ...string) {
	t.Helper()
	if !hasRow(out, cells...) {
		t.Errorf("no row %q in:\n%s", cells, out)
	}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

var (
	vip4 = lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	vip6 = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::1"), Port: 53, Proto: lb.UDP}
	r1   = netip.MustParseAddr("10.0.0.1")
	r2   = netip.MustParseAddr("10.0.0.2")
	r3   = netip.MustParseAddr("10.0.0.3")
)

// ringCounts counts the datapath ring's slots per real address.
func ringCounts(t *testing.T, dp *fakedp.Datapath, key lb.VIPKey) map[netip.Addr]int {
	t.Helper()
	byID := map[xdp.RealID]netip.Addr{}
	for a, id := range dp.RealMap {
		byID[id] = a
	}
	out := map[netip.Addr]int{}
	for _, id := range dp.Rings[key] {
		if id != 0 {
			out[byID[xdp.RealID(id)]]++
		}
	}
	return out
}

func desiredReal(t *testing.T, ctl *control.Controller, key lb.VIPKey, addr netip.Addr) (control.Real, bool) {
	t.Helper()
	v, err := ctl.VIP(key)
	if err != nil {
		t.Fatal(err)
	}
	return v.Real(addr)
}

func TestVIPCommands(t *testing.T) {
	d := newDaemon(t)

	out := d.ok("vip", "add", "tcp/192.0.2.1:80", "--ring-size", "1021", "--real", "10.0.0.1", "--real", "10.0.0.2:3")
	wantRow(t, out, "VIP", "tcp/192.0.2.1:80")
	wantRow(t, out, "NAME", "tcp-192.0.2.1-80")
	wantRow(t, out, "RING SIZE", "1021")
	wantRow(t, out, "10.0.0.1", "1", "active")
	wantRow(t, out, "10.0.0.2", "3", "active")
	v, ok := d.dp.VIPMap[vip4]
	if !ok {
		t.Fatalf("VIP %s not in the datapath: %v", vip4, d.dp.VIPMap)
	}
	if v.Flags != 0 {
		t.Errorf("flags %v, want none", v.Flags)
	}
	if got := ringCounts(t, d.dp, vip4); len(d.dp.Rings[vip4]) != 1021 || got[r1]+got[r2] != 1021 || got[r2] < 2*got[r1] {
		t.Errorf("ring: %d slots, %v; want 1021 slots, 10.0.0.2 about 3x 10.0.0.1", len(d.dp.Rings[vip4]), got)
	}

	// IPv6 in both spellings, with GUE and a weighted IPv6 real.
	d.ok("vip", "add", "udp/[2001:db8::1]:53", "--encap", "gue", "--ring-size", "4099", "--sticky", "--no-flow-search", "--real", "[2001:db8::10]:2")
	if f := d.dp.VIPMap[vip6].Flags; f != lb.VIPGUE|lb.VIPSticky|lb.VIPNoFlowSearch {
		t.Errorf("IPv6 VIP flags %v, want GUE|sticky|no-search", f)
	}
	out = d.ok("vip", "get", "udp-2001:db8::1-53")
	wantRow(t, out, "VIP", "udp/[2001:db8::1]:53")
	wantRow(t, out, "ENCAP", "gue")
	wantRow(t, out, "NO FLOW SEARCH", "true")
	wantRow(t, out, "2001:db8::10", "2", "active")

	out = d.ok("vip", "list")
	wantRow(t, out, "VIP", "NAME", "ENCAP", "RING", "FLAGS", "REALS")
	wantRow(t, out, "tcp/192.0.2.1:80", "tcp-192.0.2.1-80", "ipip", "1021", "-", "2 (2 active)")
	wantRow(t, out, "udp/[2001:db8::1]:53", "udp-2001:db8::1-53", "gue", "4099", "sticky,no-flow-search", "1 (1 active)")

	var list apiv1.VIPListJSON
	d.okJSON(&list, "vip", "list")
	if len(list.VIPs) != 2 || list.VIPs[0].Name != "tcp-192.0.2.1-80" || len(list.VIPs[0].Reals) != 2 {
		t.Errorf("vip list -o json: %+v", list)
	}

	// set changes only the flags given.
	out = d.ok("vip", "set", "tcp/192.0.2.1:80", "--no-lru")
	wantRow(t, out, "NO LRU", "true")
	if f := d.dp.VIPMap[vip4].Flags; f != lb.VIPNoLRU {
		t.Errorf("after set --no-lru: flags %v, want no-lru only", f)
	}
	var got apiv1.VIPJSON
	d.okJSON(&got, "vip", "set", "tcp/192.0.2.1:80", "--no-lru=false", "--sticky")
	if got.Flags != lb.VIPSticky || got.RingSize != 1021 || got.Encap != "ipip" || len(got.Reals) != 2 {
		t.Errorf("after set --no-lru=false --sticky: %+v", got)
	}
	if f := d.dp.VIPMap[vip4].Flags; f != lb.VIPSticky {
		t.Errorf("datapath flags %v, want sticky only", f)
	}
	wantErr(t, d.fail("vip", "set", "tcp/192.0.2.1:80"), "nothing to change")

	// the description: set, shown, kept by other changes, removed
	wantRow(t, d.ok("vip", "show", "tcp/192.0.2.1:80"), "DESCRIPTION", "-")
	desc := `shop front <img src=x onerror="alert(1)">`
	out = d.ok("vip", "set", "tcp/192.0.2.1:80", "--description", desc)
	wantRow(t, out, "DESCRIPTION", desc)
	d.ok("vip", "set", "tcp/192.0.2.1:80", "--sticky")
	wantRow(t, d.ok("vip", "show", "tcp/192.0.2.1:80"), "DESCRIPTION", desc)
	if v, _ := d.ctl.VIP(vip4); v.Description != desc {
		t.Errorf("desired description %q, want %q", v.Description, desc)
	}
	wantErr(t, d.fail("vip", "set", "tcp/192.0.2.1:80", "--description", strings.Repeat("x", 257)), "description of 257 bytes")
	wantErr(t, d.fail("vip", "set", "tcp/192.0.2.1:80", "--description", "a\nb"), "control character")
	wantRow(t, d.ok("vip", "set", "tcp/192.0.2.1:80", "--description", ""), "DESCRIPTION", "-")
	out = d.ok("vip", "add", "tcp/192.0.2.5:80", "--ring-size", "1021", "--description", "added with one")
	wantRow(t, out, "DESCRIPTION", "added with one")
	d.ok("vip", "delete", "tcp/192.0.2.5:80")
	// disable: the VIP stays, with an empty ring, flagged in list and get
	wantRow(t, d.ok("vip", "get", "tcp/192.0.2.1:80"), "DISABLED", "false")
	full := slices.Clone(d.dp.Rings[vip4])
	out = d.ok("vip", "set", "tcp/192.0.2.1:80", "--disabled")
	wantRow(t, out, "DISABLED", "true")
	if v, _ := d.ctl.VIP(vip4); !v.Disabled || len(v.Reals) != 2 || !slices.Equal(d.dp.Rings[vip4], []uint32{0}) {
		t.Errorf("after set --disabled: %+v, ring of %d slots", v, len(d.dp.Rings[vip4]))
	}
	wantRow(t, d.ok("vip", "list"), "tcp/192.0.2.1:80", "tcp-192.0.2.1-80", "ipip", "1021", "disabled,sticky", "2 (2 active)")
	d.okJSON(&got, "vip", "set", "tcp/192.0.2.1:80", "--disabled=false")
	if got.Disabled || !got.Flags.Has(lb.VIPSticky) || !slices.Equal(d.dp.Rings[vip4], full) {
		t.Errorf("after set --disabled=false: %+v, ring restored %v", got, slices.Equal(d.dp.Rings[vip4], full))
	}
	wantRow(t, d.ok("vip", "list"), "tcp/192.0.2.1:80", "tcp-192.0.2.1-80", "ipip", "1021", "sticky", "2 (2 active)")
	d.ok("vip", "set", "udp/[2001:db8::1]:53", "--no-flow-search=false")
	if f := d.dp.VIPMap[vip6].Flags; f != lb.VIPGUE|lb.VIPSticky {
		t.Errorf("after set --no-flow-search=false: flags %v, want GUE|sticky", f)
	}

	// The server's detail reaches the user, and the CLI keeps it typed.
	err := d.fail("vip", "set", "tcp/192.0.2.1:80", "--ring-size", "1000")
	wantErr(t, err, "ring size 1000", "one of the primes")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Field != "ring_size" {
		t.Errorf("error %#v, want *client.Error 422 on ring_size", err)
	}
	if d.dp.VIPMap[vip4].RingSize != 1021 {
		t.Errorf("a refused change changed the ring size to %d", d.dp.VIPMap[vip4].RingSize)
	}
	wantErr(t, d.fail("vip", "add", "tcp/192.0.2.1:80"), "already exists", "lbd vip set")
	wantErr(t, d.fail("vip", "add", "tcp/192.0.2.9:80", "--encap", "vxlan"), `encapsulation "vxlan"`)
	wantErr(t, d.fail("vip", "get", "tcp/192.0.2.9:80"), "not found")
	wantErr(t, d.fail("vip", "add", "tcp/192.0.2.9"), "no port")
	wantErr(t, d.fail("vip", "add", "tcp/192.0.2.9:80", "--real", "10.0.0.1:x"), "--real", "weight")
	if len(d.dp.VIPMap) != 2 {
		t.Errorf("failed adds left VIPs behind: %v", d.dp.VIPMap)
	}

	out = d.ok("vip", "delete", "udp/[2001:db8::1]:53")
	if !strings.Contains(out, "deleted VIP udp/[2001:db8::1]:53") {
		t.Errorf("delete printed %q", out)
	}
	if _, ok := d.dp.VIPMap[vip6]; ok {
		t.Error("deleted VIP is still in the datapath")
	}
	if out := d.ok("vip", "delete", "tcp-192.0.2.1-80", "-o", "json"); out != "" {
		t.Errorf("delete -o json printed %q, want nothing", out)
	}
	if len(d.dp.VIPMap) != 0 {
		t.Errorf("VIPs left: %v", d.dp.VIPMap)
	}
}

func TestRealCommands(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.1:80", "--ring-size", "1021", "--real", "10.0.0.1")

	out := d.ok("real", "add", "tcp/192.0.2.1:80", "10.0.0.2", "--weight", "3")
	wantRow(t, out, "10.0.0.2", "3", "active")
	if got := ringCounts(t, d.dp, vip4); got[r2] < 2*got[r1] || got[r1] == 0 {
		t.Errorf("ring after adding 10.0.0.2 with weight 3: %v", got)
	}

	// set and drain change only what they name.
	d.ok("real", "set", "tcp/192.0.2.1:80", "10.0.0.2", "--weight", "5")
	d.ok("real", "drain", "tcp/192.0.2.1:80", "10.0.0.2")
	if r, _ := desiredReal(t, d.ctl, vip4, r2); r.Weight != 5 || r.State != control.RealDraining {
		t.Errorf("after set --weight 5 and drain: %+v, want weight 5 draining", r)
	}
	if got := ringCounts(t, d.dp, vip4); got[r2] != 0 || got[r1] != 1021 {
		t.Errorf("ring with 10.0.0.2 draining: %v, want every slot on 10.0.0.1", got)
	}
	if _, ok := d.dp.RealMap[r2]; !ok {
		t.Error("a draining real must stay defined in the datapath")
	}
	out = d.ok("real", "list", "tcp/192.0.2.1:80")
	wantRow(t, out, "REAL", "WEIGHT", "STATE")
	wantRow(t, out, "10.0.0.1", "1", "active")
	wantRow(t, out, "10.0.0.2", "5", "draining")

	var r apiv1.RealJSON
	d.okJSON(&r, "real", "set", "tcp/192.0.2.1:80", "10.0.0.2", "--state", "active")
	if r.Address != "10.0.0.2" || r.Weight == nil || *r.Weight != 5 || r.State != "active" {
		t.Errorf("after set --state active: %+v, want weight 5 active", r)
	}
	wantErr(t, d.fail("real", "set", "tcp/192.0.2.1:80", "10.0.0.2", "--state", "sleeping"), `state "sleeping"`)
	wantErr(t, d.fail("real", "set", "tcp/192.0.2.1:80", "10.0.0.2"), "nothing to change")
	wantErr(t, d.fail("real", "drain", "tcp/192.0.2.1:80", "10.0.0.9"), "not found")
	wantErr(t, d.fail("real", "add", "tcp/192.0.2.1:80", "127.0.0.1"), "a loopback address is this node itself")
	wantErr(t, d.fail("real", "add", "tcp/192.0.2.1:80", "nonsense"), "not an IPv4 or IPv6 address")

	out = d.ok("real", "remove", "tcp/192.0.2.1:80", "10.0.0.1")
	if !strings.Contains(out, "removed real 10.0.0.1") {
		t.Errorf("remove printed %q", out)
	}
	if _, ok := desiredReal(t, d.ctl, vip4, r1); ok {
		t.Error("removed real is still in the desired state")
	}
	if _, ok := d.dp.RealMap[r1]; ok {
		t.Error("a real no VIP uses must be undefined in the datapath")
	}

	var list apiv1.RealListJSON
	d.okJSON(&list, "real", "replace", "tcp/192.0.2.1:80", "10.0.0.1:2", "10.0.0.3", "[2001:db8::10]:4")
	if len(list.Reals) != 3 {
		t.Fatalf("replace -o json: %+v", list)
	}
	if _, ok := desiredReal(t, d.ctl, vip4, r2); ok {
		t.Error("replace kept 10.0.0.2")
	}
	if r, _ := desiredReal(t, d.ctl, vip4, r1); r.Weight != 2 {
		t.Errorf("10.0.0.1 after replace: %+v, want weight 2", r)
	}
	if got := ringCounts(t, d.dp, vip4); got[r3] == 0 || got[netip.MustParseAddr("2001:db8::10")] == 0 {
		t.Errorf("ring after replace: %v", got)
	}
	wantErr(t, d.fail("real", "replace", "tcp/192.0.2.1:80"), "--none")
	d.ok("real", "replace", "tcp/192.0.2.1:80", "--none")
	if v, _ := d.ctl.VIP(vip4); len(v.Reals) != 0 {
		t.Errorf("after replace --none: %v", v.Reals)
	}
}

func TestRingAndStats(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.1:80", "--ring-size", "1021", "--real", "10.0.0.1", "--real", "10.0.0.2:3")
	counts := ringCounts(t, d.dp, vip4)

	var ring apiv1.RingJSON
	d.okJSON(&ring, "ring", "tcp/192.0.2.1:80")
	if ring.Size != 1021 || ring.EmptySlots != 0 || len(ring.Reals) != 2 {
		t.Fatalf("ring -o json: %+v", ring)
	}
	for _, r := range ring.Reals {
		if r.Slots != counts[netip.MustParseAddr(r.Address)] {
			t.Errorf("ring says %s has %d slots, the datapath %d", r.Address, r.Slots, counts[netip.MustParseAddr(r.Address)])
		}
	}
	out := d.ok("ring", "tcp/192.0.2.1:80")
	wantRow(t, out, "10.0.0.1", itoa(counts[r1]), percent(counts[r1], 1021))
	wantRow(t, out, "10.0.0.2", itoa(counts[r2]), percent(counts[r2], 1021))
	wantRow(t, out, "TOTAL", "1021", "100.00%")

	d.dp.Global[xdp.StatTX] = 1500
	d.dp.Global[xdp.StatDropNoReal] = 7
	d.dp.VIPCounters[vip4] = xdp.VIPStats{Packets: 1500, Bytes: 90000, LRUHits: 1400, LRUMisses: 100}
	d.dp.RealCounters[d.dp.RealMap[r1]] = xdp.RealStats{Packets: 400, Bytes: 24000}
	d.dp.RealCounters[d.dp.RealMap[r2]] = xdp.RealStats{Packets: 1100, Bytes: 66000}

	out = d.ok("stats")
	wantRow(t, out, "tx", "1500", "0.0")
	wantRow(t, out, "drop_no_real", "7", "0.0")
	if strings.Contains(out, "drop_fragment") {
		t.Errorf("stats shows a zero counter:\n%s", out)
	}
	wantRow(t, out, "tcp/192.0.2.1:80", "1500", "90000", "0.0", "0.0", "1400", "100")
	wantRow(t, out, "10.0.0.1", "400", "24000", "0.0", "0.0")
	wantRow(t, out, "10.0.0.2", "1100", "66000", "0.0", "0.0")
	var st apiv1.StatsJSON
	d.okJSON(&st, "stats")
	if st.Global.Counters["tx"] != 1500 || len(st.VIPs) != 1 || st.VIPs[0].LRUHits != 1400 || len(st.Reals) != 2 {
		t.Errorf("stats -o json: %+v", st)
	}

	out = d.ok("stats", "tcp/192.0.2.1:80")
	wantRow(t, out, "tcp/192.0.2.1:80", "1500", "90000", "0.0", "0.0", "1400", "100")
	wantRow(t, out, "10.0.0.2", "1100", "66000", "0.0", "0.0", "current")
	wantRow(t, out, "TOTAL", "1500", "90000")
	var vs apiv1.VIPStatsJSON
	d.okJSON(&vs, "stats", "tcp-192.0.2.1-80")
	if vs.VIP != "tcp-192.0.2.1-80" || vs.Packets != 1500 || len(vs.Reals) != 2 || vs.Reals[0].Packets != 400 {
		t.Errorf("stats VIP -o json: %+v", vs)
	}
	// a removed real stays, as removed, until the VIP's counters are reset
	d.ok("real", "remove", "tcp/192.0.2.1:80", "10.0.0.2")
	out = d.ok("stats", "tcp/192.0.2.1:80")
	wantRow(t, out, "10.0.0.2", "1100", "66000", "0.0", "0.0", "removed")
	wantRow(t, out, "TOTAL", "1500", "90000")
	out = d.ok("stats")
	wantRow(t, out, "10.0.0.2 (removed)", "1100", "66000", "0.0", "0.0")
	d.ok("stats", "reset", "tcp/192.0.2.1:80")
	d.okJSON(&vs, "stats", "tcp-192.0.2.1-80")
	if vs.Packets != 0 || len(vs.Reals) != 1 || vs.Reals[0].Address != "10.0.0.1" || vs.Reals[0].Packets != 0 {
		t.Errorf("stats VIP after reset: %+v", vs)
	}
	wantErr(t, d.fail("stats", "reset", "tcp/192.0.2.9:80"), "not found")
	wantErr(t, d.fail("stats", "tcp/192.0.2.9:80"), "not found")
}

func itoa(n int) string { return strconv.Itoa(n) }

func percent(n, of int) string { return fmt.Sprintf("%.2f%%", 100*float64(n)/float64(of)) }

// addFlows puts n flows of vip4 into the fake connection table: client
// 198.51.100.(i%4):(10000+i), bytes 100*i, to 10.0.0.1 or 10.0.0.2.
func addFlows(t *testing.T, d *daemon, n int) {
	t.Helper()
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		real := d.dp.RealMap[r1]
		if i%2 == 1 {
			real = d.dp.RealMap[r2]
		}
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 4)}), uint16(10000+i))
		d.dp.FlowList = append(d.dp.FlowList, xdp.Flow{
			Key:  xdp.FlowKey{Client: client, Dest: netip.AddrPortFrom(vip4.Addr, vip4.Port), Proto: vip4.Proto},
			Real: real, VIPNum: d.dp.VIPMap[vip4].Num, VIPGen: d.dp.VIPMap[vip4].Gen, Packets: uint64(i + 1), Bytes: uint64(100 * i),
			FirstSeen: base, LastSeen: base.Add(time.Duration(i) * time.Second),
		})
	}
}

func TestFlows(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.1:80", "--ring-size", "1021", "--real", "10.0.0.1", "--real", "10.0.0.2")
	addFlows(t, d, 25)

	// One page: the largest flows first, and a hint about the rest.
	out, errOut, err := d.run("flows", "--limit", "10")
	if err != nil {
		t.Fatal(err)
	}
	wantRow(t, out, "VIP", "CLIENT", "REAL", "PACKETS", "BYTES", "FIRST SEEN", "LAST SEEN")
	wantRow(t, out, "tcp/192.0.2.1:80", "198.51.100.0:10024", "10.0.0.1", "25", "2400", "2025-01-02T03:04:05Z", "2025-01-02T03:04:29Z")
	if n := strings.Count(out, "198.51.100."); n != 10 {
		t.Errorf("--limit 10 printed %d flows:\n%s", n, out)
	}
	if !strings.Contains(errOut, "more flows: pass --all, or --cursor ") {
		t.Errorf("no hint about the next page on stderr: %q", errOut)
	}
	var page apiv1.FlowPageJSON
	d.okJSON(&page, "flows", "--limit", "10")
	if len(page.Flows) != 10 || page.NextCursor == "" || page.Flows[0].Bytes != 2400 {
		t.Fatalf("first page: %d flows, cursor %q", len(page.Flows), page.NextCursor)
	}
	var next apiv1.FlowPageJSON
	d.okJSON(&next, "flows", "--limit", "10", "--cursor", page.NextCursor)
	if len(next.Flows) != 10 || next.Flows[0].Bytes != 1400 {
		t.Errorf("--cursor page starts with %+v, want the 11th largest (1400 bytes)", next.Flows[0])
	}

	// --all follows the cursors: every flow exactly once, in order.
	var all apiv1.FlowPageJSON
	d.okJSON(&all, "flows", "--limit", "7", "--all")
	if len(all.Flows) != 25 || all.NextCursor != "" {
		t.Fatalf("--all: %d flows, cursor %q; want 25 and none", len(all.Flows), all.NextCursor)
	}
	seen := map[string]bool{}
	for i, f := range all.Flows {
		if seen[f.Client] {
			t.Errorf("flow %s listed twice", f.Client)
		}
		seen[f.Client] = true
		if i > 0 && f.Bytes > all.Flows[i-1].Bytes {
			t.Errorf("flow %d (%d bytes) after one with %d bytes: not sorted", i, f.Bytes, all.Flows[i-1].Bytes)
		}
	}
	out, errOut, err = d.run("flows", "--limit", "7", "--all")
	if err != nil || strings.Count(out, "198.51.100.") != 25 || errOut != "" {
		t.Errorf("--all table: err %v, %d rows, stderr %q", err, strings.Count(out, "198.51.100."), errOut)
	}

	// A flow that gets packets while --all reads the pages comes again on
	// a later page (among the changed ones); --all lists it once, with
	// its newer counters.
	pages := 0
	d.dp.BeforeFlows = func() {
		if pages++; pages == 2 {
			// The smallest (not on the first page) and the largest (on it).
			for _, f := range []*xdp.Flow{&d.dp.FlowList[0], &d.dp.FlowList[24]} {
				f.Packets, f.Bytes, f.LastSeen = 1000, f.Bytes+1_000_000, f.LastSeen.Add(time.Hour)
			}
		}
	}
	var moving apiv1.FlowPageJSON
	d.okJSON(&moving, "flows", "--limit", "7", "--all")
	d.dp.BeforeFlows = nil
	got := map[string]int{}
	for _, f := range moving.Flows {
		got[f.Client]++
		if f.Packets == 1000 && f.Bytes < 1_000_000 || f.Packets != 1000 && f.Bytes >= 1_000_000 {
			t.Errorf("flow %s listed with mixed counters: %d packets, %d bytes", f.Client, f.Packets, f.Bytes)
		}
	}
	for _, c := range []string{"198.51.100.0:10000", "198.51.100.0:10024"} {
		if got[c] != 1 {
			t.Errorf("--all while flows change: %s listed %d times, want once", c, got[c])
		}
	}
	if len(moving.Flows) != 25 || moving.Flows[0].Client != "198.51.100.0:10024" || moving.Flows[0].Packets != 1000 {
		t.Errorf("--all while flows change: %d flows, first %+v; want 25, the largest first with its newer counters", len(moving.Flows), moving.Flows[0])
	}

	// Filters are passed on.
	var filtered apiv1.FlowPageJSON
	d.okJSON(&filtered, "flows", "--vip", "tcp/192.0.2.1:80", "--real", "10.0.0.2", "--client", "198.51.100.1/32", "--sort", "last_seen", "--all", "--limit", "2")
	for _, f := range filtered.Flows {
		if f.Real != "10.0.0.2" || !strings.HasPrefix(f.Client, "198.51.100.1:") {
			t.Errorf("filtered listing has %+v", f)
		}
	}
	if len(filtered.Flows) != 6 { // i%2==1 and i%4==1: 1, 5, 9, 13, 17, 21
		t.Errorf("filtered listing has %d flows, want 6", len(filtered.Flows))
	}
	wantErr(t, d.fail("flows", "--client", "not-a-prefix"), "client", "198.51.100.0/24")
	wantErr(t, d.fail("flows", "--vip", "192.0.2.1"), "--vip")
}

func TestAuthentication(t *testing.T) {
	d := newDaemon(t)
	missing := filepath.Join(t.TempDir(), "nope")
	root := newRootCommand()
	root.SetArgs([]string{"vip", "list", "--server=" + d.url, "--token-file=" + missing})
	root.SetOut(new(bytes.Buffer))
	err := root.Execute()
	if err == nil {
		t.Fatal("vip list with a missing token file succeeded")
	}
	wantErr(t, err, "read token file "+missing, "no such file or directory", "pass --token-file or set LBD_TOKEN")

	if err := os.WriteFile(d.tokenFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = d.fail("vip", "list")
	wantErr(t, err, "refused the token from token file "+d.tokenFile, "missing or wrong bearer token")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("error %#v, want a *client.Error 401", err)
	}

	// LBD_TOKEN, the token itself, wins over the (wrong) file.
	t.Setenv("LBD_TOKEN", testToken)
	d.ok("vip", "list")
	t.Setenv("LBD_TOKEN", "also-wrong")
	wantErr(t, d.fail("vip", "list"), "refused the token from LBD_TOKEN")

	if err := os.WriteFile(d.tokenFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LBD_TOKEN", "")
	wantErr(t, d.fail("vip", "list"), "is empty")
}

func TestUnreachableAndSlowDaemon(t *testing.T) {
	d := newDaemon(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	root := newRootCommand()
	root.SetArgs([]string{"status", "--server=" + closed, "--token-file=" + d.tokenFile})
	root.SetOut(new(bytes.Buffer))
	err = root.Execute()
	if err == nil {
		t.Fatal("status against a closed port succeeded")
	}
	wantErr(t, err, "cannot reach lbd at "+closed, "is `lbd serve` running?")
	var ue *client.UnreachableError
	if !errors.As(err, &ue) {
		t.Errorf("error %#v, want *client.UnreachableError", err)
	}

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	root = newRootCommand()
	root.SetArgs([]string{"status", "--server=" + slow.URL, "--token-file=" + d.tokenFile, "--timeout=200ms"})
	root.SetOut(new(bytes.Buffer))
	start := time.Now()
	err = root.Execute()
	if err == nil {
		t.Fatal("status against a daemon that never answers succeeded")
	}
	wantErr(t, err, "did not answer", "within 200ms", "--timeout")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("--timeout 200ms took %v", d)
	}

	wantErr(t, d.fail("vip", "list", "-o", "yaml"), `output format "yaml"`, "table or json")
}

func TestStatusAndReconcile(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.1:80", "--ring-size", "1021", "--real", "10.0.0.1")

	out := d.ok("status")
	wantRow(t, out, "VERSION", "test")
	wantRow(t, out, "READY", "ok")
	wantRow(t, out, "VIPS", "1")
	wantRow(t, out, "STATE FILE", "/var/lib/lbd/state.json")
	wantRow(t, out, "DATAPATH interface", "eth0")
	wantRow(t, out, "DATAPATH limits", `{"vips":512}`)
	d.ready = errors.New("XDP program not attached yet")
	out = d.ok("status")
	wantRow(t, out, "READY", "unavailable: XDP program not attached yet")
	var st apiv1.StatusJSON
	d.okJSON(&st, "status")
	if st.Version != "test" || st.VIPs != 1 || st.Datapath["mode"] != "native" {
		t.Errorf("status -o json: %+v", st)
	}

	out = d.ok("reconcile")
	if !strings.Contains(out, "in sync") {
		t.Errorf("reconcile of a datapath in sync printed %q", out)
	}
	// Drift: someone emptied the ring and added a VIP behind lbd's back.
	clear(d.dp.Rings[vip4])
	stray := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.99"), Port: 443, Proto: lb.TCP}
	if err := d.dp.AddVIP(stray, 0); err != nil {
		t.Fatal(err)
	}
	out = d.ok("reconcile")
	wantRow(t, out, "VIP", "MAP", "REPAIRED", "ERROR")
	if !strings.Contains(out, "tcp/192.0.2.1:80") || !strings.Contains(out, "tcp/192.0.2.99:443") {
		t.Errorf("reconcile does not name both drifted VIPs:\n%s", out)
	}
	if _, ok := d.dp.VIPMap[stray]; ok {
		t.Error("reconcile left the stray VIP in the datapath")
	}
	if got := ringCounts(t, d.dp, vip4); got[r1] != 1021 {
		t.Errorf("reconcile did not repair the ring: %v", got)
	}
	var drifts apiv1.DriftsJSON
	d.okJSON(&drifts, "reconcile")
	if drifts.Drifts == nil || len(drifts.Drifts) != 0 {
		t.Errorf("reconcile -o json when in sync: %+v, want an empty list", drifts)
	}
}

func TestParseVIP(t *testing.T) {
	for _, c := range []struct {
		in   string
		want lb.VIPKey
	}{
		{"tcp/192.0.2.1:80", vip4},
		{"TCP/192.0.2.1:80", vip4},
		{"tcp-192.0.2.1-80", vip4},
		{"udp/[2001:db8::1]:53", vip6},
		{"udp-2001:db8::1-53", vip6},
		{"tcp/192.0.2.1:0", lb.VIPKey{Addr: vip4.Addr, Proto: lb.TCP}},
		{"tcp-192.0.2.1-0", lb.VIPKey{Addr: vip4.Addr, Proto: lb.TCP}},
		{" udp/[2001:db8::1]:53 ", vip6},
	} {
		got, err := lb.ParseVIP(c.in)
		if err != nil || got != c.want {
			t.Errorf("lb.ParseVIP(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"192.0.2.1:80", "want PROTO/ADDR:PORT"},
		{"tcp/192.0.2.1", "no port: add one, e.g. tcp/192.0.2.1:80"},
		{"udp/2001:db8::1", "no port: add one, e.g. udp/[2001:db8::1]:80"},
		{"udp/[2001:db8::1]", "no port"},
		{"sctp/192.0.2.1:80", "use tcp or udp"},
		{"tcp/192.0.2.1:70000", "want PROTO/ADDR:PORT"},
		{"tcp/example.com:80", "want PROTO/ADDR:PORT"},
		{"tcp-192.0.2.1", "want PROTO/ADDR:PORT"},
		{"tcp-192.0.2.1-http", "want PROTO/ADDR:PORT"},
		{"", "want PROTO/ADDR:PORT"},
	} {
		_, err := lb.ParseVIP(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("lb.ParseVIP(%q) error %v, want one containing %q", c.in, err, c.want)
		}
	}
}

func TestParseRealSpec(t *testing.T) {
	w := func(n uint32) *uint32 { return &n }
	for _, c := range []struct {
		in   string
		want apiv1.RealJSON
	}{
		{"10.0.0.1", apiv1.RealJSON{Address: "10.0.0.1"}},
		{"10.0.0.1:3", apiv1.RealJSON{Address: "10.0.0.1", Weight: w(3)}},
		{"10.0.0.1:0", apiv1.RealJSON{Address: "10.0.0.1", Weight: w(0)}},
		{"2001:db8::10", apiv1.RealJSON{Address: "2001:db8::10"}},
		{"2001:db8::10:3", apiv1.RealJSON{Address: "2001:db8::10:3"}}, // an address: brackets give a weight
		{"[2001:db8::10]", apiv1.RealJSON{Address: "2001:db8::10"}},
		{"[2001:db8::10]:3", apiv1.RealJSON{Address: "2001:db8::10", Weight: w(3)}},
	} {
		got, err := parseRealSpec(c.in)
		if err != nil || got.Address != c.want.Address || (got.Weight == nil) != (c.want.Weight == nil) ||
			got.Weight != nil && *got.Weight != *c.want.Weight {
			t.Errorf("parseRealSpec(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "host:3", "10.0.0.1:-1", "10.0.0.1:4294967296", "10.0.0.1:x", "[2001:db8::10]:", "10.0.0.1:3:4"} {
		if _, err := parseRealSpec(in); err == nil {
			t.Errorf("parseRealSpec(%q) succeeded", in)
		}
	}
}

func TestVIPHealthFlags(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.9:80", "--health", "http", "--health-path", "/healthz", "--health-interval", "2s",
		"--down-flows", "reset", "--real", "10.0.0.1")
	key := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.9"), Port: 80, Proto: lb.TCP}
	v, err := d.ctl.VIP(key)
	if err != nil {
		t.Fatal(err)
	}
	if v.Health.Type != "http" || v.Health.Path != "/healthz" || v.Health.Interval != 2*time.Second || v.DownFlows != control.ResetFlows {
		t.Errorf("health spec %+v, down flows %s", v.Health, v.DownFlows)
	}
	out := d.ok("vip", "get", "tcp/192.0.2.9:80")
	if !strings.Contains(out, "http every 2s (rise 2, fall 3); down real's flows: reset; all down: serve-all") {
		t.Errorf("vip get:\n%s", out)
	}
	d.ok("vip", "set", "tcp/192.0.2.9:80", "--health", "none", "--all-down", "drop")
	if v, _ := d.ctl.VIP(key); v.Health.Type != "none" || v.AllDown != control.DropAll {
		t.Errorf("after set: %+v %s", v.Health, v.AllDown)
	}
	wantErr(t, d.fail("vip", "set", "tcp/192.0.2.9:80", "--health-fall", "2"), "give --health TYPE too")
	wantErr(t, d.fail("vip", "set", "tcp/192.0.2.9:80", "--health", "tcp", "--health-interval", "soon"), "want a duration")
}

// TestRealsTableShowsProbes: with health checks, each real's row shows
// its state with the probes in a row that count toward a change, and the
// time and outcome (the error of a failed one) of its latest probe.
func TestRealsTableShowsProbes(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	w := uint32(1)
	reals := []apiv1.RealJSON{
		{Address: "10.0.0.1", Weight: &w, State: "active", Health: &apiv1.RealHealthJSON{State: "up", Reason: "not checked yet", LastChange: at}},
		{Address: "10.0.0.2", Weight: &w, State: "active", Health: &apiv1.RealHealthJSON{State: "up", Reason: "no change since the check started", LastChange: at,
			SuccessesInARow: 3, LastResult: &apiv1.ProbeResultJSON{OK: true, Reason: "connected", At: at.Add(time.Second)}}},
		{Address: "10.0.0.3", Weight: &w, State: "active", Health: &apiv1.RealHealthJSON{State: "up", Reason: "no change since the check started", LastChange: at,
			FailuresInARow: 2, LastResult: &apiv1.ProbeResultJSON{Reason: "connect: connection refused", At: at.Add(2 * time.Second)}}},
		{Address: "10.0.0.4", Weight: &w, State: "active", Health: &apiv1.RealHealthJSON{State: "down", Reason: "3 failures in a row: connect: connection refused", LastChange: at,
			SuccessesInARow: 1, LastResult: &apiv1.ProbeResultJSON{OK: true, Reason: "connected", At: at.Add(3 * time.Second)}}},
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0) // as the CLI's output
	realsTable(tw, reals)
	tw.Flush()
	out := b.String()
	wantRow(t, out, "REAL", "WEIGHT", "STATE", "HEALTH", "SINCE", "WHY", "LAST PROBE")
	wantRow(t, out, "10.0.0.1", "1", "active", "up", "03:04:05", "not checked yet", "none yet")
	wantRow(t, out, "10.0.0.2", "1", "active", "up", "03:04:05", "no change since the check started", "03:04:06 ok")
	wantRow(t, out, "10.0.0.3", "1", "active", "up (2 failed)", "03:04:05", "no change since the check started", "03:04:07 failed: connect: connection refused")
	wantRow(t, out, "10.0.0.4", "1", "active", "down (1 ok)", "03:04:05", "3 failures in a row: connect: connection refused", "03:04:08 ok")
}
