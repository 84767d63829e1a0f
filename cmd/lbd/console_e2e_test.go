package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/internal/browsertest"
	"github.com/lbd-dev/lbd/lab"
)

// consoleXSS is a VIP's description: text the user controls that the
// console shows. Rendered as HTML it would run script.
const consoleXSS = "lab web <img/src=x/onerror=window.__xss=1>"

// page drives the console in chromium.
type page struct {
	t   *testing.T
	b   *browsertest.Browser
	url string
}

func (p *page) run(what string, actions ...chromedp.Action) {
	p.t.Helper()
	if err := p.b.Run(30*time.Second, actions...); err != nil {
		p.t.Fatalf("%s: %v (page errors: %v)", what, err, p.b.Errors())
	}
}

// text is the text of the first element sel matches ("" if none).
func (p *page) text(sel string) string {
	p.t.Helper()
	var s string
	q, _ := json.Marshal(sel)
	p.run("read "+sel, chromedp.Evaluate(fmt.Sprintf(`(document.querySelector(%s) || {}).textContent || ""`, q), &s))
	return s
}

// waitText waits until sel's text satisfies ok.
func (p *page) waitText(sel string, within time.Duration, ok func(string) bool) string {
	p.t.Helper()
	var s string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if s = p.text(sel); ok(s) {
			return s
		}
	}
	p.t.Fatalf("%s: text %q after %v", sel, s, within)
	return s
}

func (p *page) wait(cond string) {
	p.t.Helper()
	if err := p.b.WaitFor(30*time.Second, cond); err != nil {
		p.t.Fatalf("%v (page errors: %v)", err, p.b.Errors())
	}
}

func (p *page) view(name string) {
	p.t.Helper()
	p.run("view "+name, chromedp.Navigate(p.url+"#"+name))
	p.wait(browsertest.Visible("#view-" + name))
}

func (p *page) screenshot(dir, name string) {
	p.t.Helper()
	var png []byte
	p.run("screenshot", chromedp.Sleep(500*time.Millisecond), chromedp.CaptureScreenshot(&png))
	if err := os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// digits keeps the digits of a number as the page prints it.
func digits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

// TestConsoleLab: the web console in chromium against a real lbd in a
// namespace lab with traffic. The page's numbers equal the API's; a
// drain done in the page reaches the API and the datapath (no new flow
// to the real) and shows in the event list; the page keeps working
// across a kill -9 and restart of lbd; user-controlled text runs
// nothing; the page reports no error. It logs the page weight and load
// time, and saves a screenshot of each view (in $LBD_CONSOLE_SHOTS if
// set, e.g. docs/img).
func TestConsoleLab(t *testing.T) {
	b := browsertest.New(t) // first: without chromium, no lab for nothing
	e := newE2E(t)
	shots := os.Getenv("LBD_CONSOLE_SHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if !filepath.IsAbs(shots) {
		shots = filepath.Join("..", "..", shots) // relative to the repository
	}
	tok, err := os.ReadFile(e.lab.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	p := &page{t: t, b: b, url: "http://" + e.lab.API + "/ui/"}

	vip := e.setVIP(t, "tcp", lab.VIP4, "r1", "r2", "r3")
	r1 := e.realAddr("r1", lab.VIP4)
	// a second VIP whose description carries markup
	one := uint32(1)
	xssVIP := fmt.Sprintf("tcp-%s-8080", lab.VIP4)
	if _, _, err := e.api.PutVIP(e.ctx, xssVIP, apiv1.VIPSettingsJSON{Reals: []apiv1.RealJSON{{Address: e.realAddr("r4", lab.VIP4), Weight: &one}},
		HealthCheck: &apiv1.HealthCheckJSON{Type: "http", Port: lab.HTTPPort, Path: "/", Interval: "1s"}, Description: consoleXSS}); err != nil {
		t.Fatalf("VIP with the markup: %v", err)
	}
	if _, err := e.lab.ShortTCP(lab.VIP4, 50); err != nil {
		t.Fatal(err)
	}
	conns := e.openConns(t, 3) // long-lived flows for the flow and connection views
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	// Load and log in; measure the page.
	start := time.Now()
	p.run("open the console", chromedp.Navigate("http://"+e.lab.API+"/"), chromedp.WaitVisible("#token", chromedp.ByQuery))
	loaded := time.Since(start)
	var perf struct {
		Transfer, Decoded, Load float64
		Files                   int
	}
	p.run("measure", chromedp.Evaluate(`(() => {
		const nav = performance.getEntriesByType("navigation")[0];
		const res = performance.getEntriesByType("resource");
		const all = [nav, ...res];
		return {Transfer: all.reduce((a, e) => a + e.transferSize, 0), Decoded: all.reduce((a, e) => a + e.decodedBodySize, 0),
			Load: nav.loadEventEnd - nav.startTime, Files: all.length};
	})()`, &perf))
	t.Logf("page weight: %.1f KB transferred (%.1f KB decoded) in %d files; load event after %.0f ms (navigation to login form visible: %v)",
		perf.Transfer/1024, perf.Decoded/1024, perf.Files, perf.Load, loaded.Round(time.Millisecond))
	p.screenshot(shots, "login")
	start = time.Now()
	p.run("log in", chromedp.SendKeys("#token", strings.TrimSpace(string(tok)), chromedp.ByQuery),
		chromedp.Click(`#login-form button[type=submit]`, chromedp.ByQuery))
	p.wait(browsertest.Visible("#view-overview .card"))
	t.Logf("log in to the overview with data: %v", time.Since(start).Round(time.Millisecond))
	var inStorage, inURL bool
	p.run("token storage", chromedp.Evaluate(`sessionStorage.getItem("lbd-token") !== null && localStorage.length === 0`, &inStorage),
		chromedp.Evaluate(`location.href.includes(sessionStorage.getItem("lbd-token"))`, &inURL))
	if !inStorage || inURL {
		t.Errorf("token in sessionStorage only: %v, in the URL: %v", inStorage, inURL)
	}

	// The numbers on the page equal the API's (traffic has stopped but
	// for the idle long-lived connections: the counters stand still).
	e.settle(t)
	p.view("vips")
	card := fmt.Sprintf(`[data-vip=%q] `, vip)
	compare := func() string {
		st := e.vipStats(t, vip)
		flows, err := e.api.Flows(e.ctx, client.FlowQuery{VIP: vip, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		ring, err := e.api.Ring(e.ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		var diffs []string
		if got := digits(p.text(card + `[data-field=packets]`)); got != strconv.FormatUint(st.Packets, 10) {
			diffs = append(diffs, fmt.Sprintf("packets page %s API %d", got, st.Packets))
		}
		if got := digits(p.text(card + `[data-field=flows]`)); got != strconv.Itoa(len(flows.Flows)) {
			diffs = append(diffs, fmt.Sprintf("flows page %s API %d", got, len(flows.Flows)))
		}
		for _, r := range ring.Reals {
			want := fmt.Sprintf("%.1f%%", r.Share*100)
			if got := p.text(card + fmt.Sprintf(`tr[data-real=%q] [data-field=share]`, r.Address)); got != want {
				diffs = append(diffs, fmt.Sprintf("share of %s page %s API %s", r.Address, got, want))
			}
		}
		return strings.Join(diffs, "; ")
	}
	var diff string
	for range 5 { // the page refreshes every 2 s: the next refresh has the same numbers
		if diff = compare(); diff == "" {
			break
		}
		time.Sleep(2500 * time.Millisecond)
	}
	if diff != "" {
		t.Errorf("page and API differ: %s", diff)
	}
	st, err := e.api.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.view("overview")
	if got := p.waitText("#ov-vips", 5*time.Second, func(s string) bool { return s != "" }); got != strconv.Itoa(st.VIPs) {
		t.Errorf("overview VIPs %s, API %d", got, st.VIPs)
	}
	if got := p.text("#ov-drifts"); got != strconv.FormatUint(st.ReconcileDrifts, 10) {
		t.Errorf("overview drifts %s, API %d", got, st.ReconcileDrifts)
	}
	p.screenshot(shots, "overview")

	// user-controlled text is text (with traffic flowing meanwhile, for
	// the charts of the screenshot: a bounded loop, stopped before the
	// drain counts connections)
	stopTraffic := make(chan struct{})
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		for i := 0; i < 200; i++ { // at most about a minute
			select {
			case <-stopTraffic:
				return
			default:
			}
			_, _ = e.lab.ShortTCP(lab.VIP4, 10)
		}
	}()
	p.view("vips")
	time.Sleep(12 * time.Second) // a few refreshes of the charts
	p.waitText(fmt.Sprintf(`[data-vip=%q] [data-field="description"]`, xssVIP), 10*time.Second, func(s string) bool { return s == consoleXSS })
	var xss bool
	var pageText string
	p.run("xss", chromedp.Evaluate(`window.__xss === 1 || document.querySelectorAll("img").length > 0`, &xss),
		chromedp.Evaluate(`document.body.textContent`, &pageText))
	if xss {
		t.Error("the description's markup ran")
	}
	if !strings.Contains(pageText, consoleXSS) {
		t.Errorf("the page's text does not show the description %q literally", consoleXSS)
	}
	p.screenshot(shots, "vips")
	close(stopTraffic)
	<-trafficDone

	// Drain r1 in the page.
	p.run("drain r1", browsertest.Click(card+fmt.Sprintf(`tr[data-real=%q] button.drain`, r1)),
		chromedp.WaitVisible("#confirm-ok", chromedp.ByQuery))
	p.screenshot(shots, "confirm")
	p.run("confirm", chromedp.Click("#confirm-ok", chromedp.ByQuery), chromedp.WaitNotVisible("#confirm", chromedp.ByQuery))
	real, err := e.api.GetReal(e.ctx, vip, r1)
	if err != nil || real.State != "draining" {
		t.Fatalf("after the drain in the page, the API says %+v (%v)", real, err)
	}
	counts, err := e.lab.ShortTCP(lab.VIP4, 30)
	if err != nil {
		t.Fatal(err)
	}
	if counts["r1"] != 0 || counts.Total() != 30*len(e.lab.Clients) {
		t.Errorf("new connections after the drain: %s (want none on r1)", counts)
	}
	t.Logf("new connections after draining r1 in the page: %s", counts)
	p.waitText(card+fmt.Sprintf(`tr[data-real=%q] [data-field=state]`, r1), 5*time.Second, func(s string) bool { return s == "draining" })
	p.view("events")
	p.waitText(`#events-table tbody tr[data-type=vip_changed]`, 10*time.Second, func(s string) bool { return strings.Contains(s, vip) })
	p.screenshot(shots, "events")
	p.view("flows")
	p.waitText("#flows-info", 10*time.Second, func(s string) bool { return strings.Contains(s, "flows") && !strings.HasPrefix(s, "0 of") })
	p.screenshot(shots, "flows")
	p.view("connections")
	time.Sleep(2500 * time.Millisecond) // two polls: rates
	p.screenshot(shots, "connections")
	p.view("api")
	p.waitText("#view-api h2", 10*time.Second, func(s string) bool { return s != "" })
	p.screenshot(shots, "api")
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}

	// kill -9 and restart lbd: the page says so, then goes on.
	p.view("vips")
	if err := e.lab.StopLBD(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.waitText("#link", 10*time.Second, func(s string) bool { return strings.Contains(s, "unreachable") })
	if err := e.lab.StartLBD(); err != nil {
		t.Fatal(err)
	}
	p.waitText("#link", 15*time.Second, func(s string) bool { return strings.HasPrefix(s, "live") })
	// Failed loads while lbd was down are expected; nothing else is.
	for _, err := range b.Errors() {
		if !strings.Contains(err, "net::ERR_") && !strings.Contains(err, "Failed to fetch") {
			t.Errorf("page error across the restart: %s", err)
		}
	}
	// undrain in the page, against the restarted daemon
	p.waitText(card+fmt.Sprintf(`tr[data-real=%q] [data-field=state]`, r1), 5*time.Second, func(s string) bool { return s == "draining" })
	p.run("undrain r1", browsertest.Click(card+fmt.Sprintf(`tr[data-real=%q] button.drain`, r1)),
		chromedp.WaitVisible("#confirm-ok", chromedp.ByQuery), chromedp.Click("#confirm-ok", chromedp.ByQuery),
		chromedp.WaitNotVisible("#confirm", chromedp.ByQuery))
	if real, err := e.api.GetReal(e.ctx, vip, r1); err != nil || real.State != "active" {
		t.Fatalf("after the undrain in the page, the API says %+v (%v)", real, err)
	}
	counts, err = e.lab.ShortTCP(lab.VIP4, 30)
	if err != nil {
		t.Fatal(err)
	}
	if counts["r1"] == 0 {
		t.Errorf("no new connection on r1 after the undrain: %s", counts)
	}
	// the event stream reconnected to the new daemon and shows its events
	p.view("events")
	p.waitText("#events-table tbody", 15*time.Second, func(s string) bool {
		return strings.Contains(s, "the daemon restarted")
	})
	var undrains int
	p.run("count events", chromedp.Evaluate(`document.querySelectorAll("#events-table tbody tr[data-type=vip_changed]").length`, &undrains))
	if undrains < 2 {
		t.Errorf("%d vip_changed events in the list, want the drain and the undrain", undrains)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page reported errors after the restart:\n%s", strings.Join(errs, "\n"))
	}
}
