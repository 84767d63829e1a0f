package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/internal/privtest"
)

// The Grafana dashboard and the alert rules in deploy/ must use only
// metrics lbd exports: these tests compare them with a scrape of an API
// server that has every source of metrics (a VIP with health checks and
// traffic, BGP, the tracer, table limits).

var metricName = regexp.MustCompile(`\blbd_[a-z0-9_]+`)

// scrapedMetrics scrapes /metrics of a server with every metric source
// and returns the names of the samples.
func scrapedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	dp := fakedp.New()
	for i := range dp.Global {
		dp.Global[i] = uint64(i + 1) // every datapath counter non-zero
	}
	ctl := control.New(dp, nopSaver{}, nil, nil)
	bgp := &fakeBGP{st: apiv1.BGPStatusJSON{Enabled: true, Peers: []apiv1.BGPPeerJSON{{Address: "10.1.0.1", AS: 65000, State: "established"}},
		Prefixes: []apiv1.BGPPrefixJSON{{Prefix: "192.0.2.1/32", Announced: true}}}}
	srv, err := New(Options{Controller: ctl, Token: testToken, Registry: prometheus.NewRegistry(), BGP: bgp, Tracer: &fakeTracer{},
		Datapath: func() map[string]any {
			return map[string]any{"limits": map[string]uint32{"max_vips": 512, "max_reals": 4096, "max_flows": 1 << 20}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctl.StartHealth(ctx, downProber{}, 2, nil)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	do := func(method, path, body string) string {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b.String())
		}
		return b.String()
	}
	do("POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.1","port":80,"health_check":{"type":"tcp","interval":"100ms"},"reals":[{"address":"10.0.0.1"}]}`)
	var text string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if text = do("GET", "/metrics", ""); strings.Contains(text, "lbd_real_up{") {
			break
		}
	}
	names := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		names[name] = true
	}
	return names
}

func checkNames(t *testing.T, file string, names map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, n := range metricName.FindAllString(string(b), -1) {
		used[n] = true
	}
	if len(used) < 5 {
		t.Fatalf("%s uses only %d lbd metrics", file, len(used))
	}
	var missing []string
	for n := range used {
		if !names[n] && !strings.HasPrefix(n, "lbd_config_fingerprint") { // a placeholder, commented out
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("%s uses metrics lbd does not export: %v", file, missing)
	}
}

// TestGrafanaDashboard: deploy/grafana/lbd.json is a dashboard (valid
// JSON, panels with queries) whose every metric lbd exports.
func TestGrafanaDashboard(t *testing.T) {
	file := filepath.Join("..", "deploy", "grafana", "lbd.json")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if !metricName.MatchString(q.Expr) {
				t.Errorf("panel %q: query %q uses no lbd metric", p.Title, q.Expr)
			}
			queries++
		}
	}
	if dash.Title == "" || dash.UID == "" || queries < 20 {
		t.Errorf("title %q uid %q, %d queries", dash.Title, dash.UID, queries)
	}
	checkNames(t, file, scrapedMetrics(t))
}

// TestAlertRules: promtool checks deploy/prometheus/lbd-alerts.yml and
// runs its unit tests; the rules use only metrics lbd exports.
func TestAlertRules(t *testing.T) {
	dir := filepath.Join("..", "deploy", "prometheus")
	checkNames(t, filepath.Join(dir, "lbd-alerts.yml"), scrapedMetrics(t))
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if privtest.InVMGuest() {
			t.Skip("kernel-matrix guest: no promtool; the rules are checked on the host")
		}
		privtest.Unavailable(t, "promtool not installed (Debian package prometheus; scripts/install-deps.sh installs it)")
	}
	for _, args := range [][]string{{"check", "rules", "lbd-alerts.yml"}, {"test", "rules", "lbd-alerts.test.yml"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
