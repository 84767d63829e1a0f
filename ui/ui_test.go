package ui_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/browsertest"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/ui"
)

const token = "console-test-token"

// xssDescription is a VIP's description (text the user controls that
// the page shows) carrying markup that would run script if rendered as
// HTML.
const xssDescription = `shop front <img src=x onerror="window.__xss=1">`

type nopSaver struct{}

func (nopSaver) Save(map[lb.VIPKey]*control.VIP) error { return nil }

// failProber fails every probe of one real, with a reason that carries
// the check's path and markup, as an HTTP check's error could.
type failProber struct{ down netip.Addr }

func (p failProber) Probe(_ context.Context, t health.Target, s health.Spec) health.Result {
	if t.Real == p.down {
		return health.Result{OK: false, Reason: "GET " + s.Path + ": <b>503</b>", At: time.Now(), Duration: time.Millisecond}
	}
	return health.Result{OK: true, Reason: "200", At: time.Now(), Duration: time.Millisecond}
}

// failChanges makes every change of fakeLBD's datapath fail (the API
// then refuses with 500 and a problem, rolled back).
var failChanges atomic.Bool

// fakeLBD is the real API server and console over a fake datapath.
func fakeLBD(t *testing.T) (*httptest.Server, *control.Controller, *fakedp.Datapath) {
	dp := fakedp.New()
	dp.Fail = func(string) error {
		if failChanges.Load() {
			return fakedp.ErrInjected
		}
		return nil
	}
	ctl := control.New(dp, nopSaver{}, nil, nil)
	srv, err := api.New(api.Options{Controller: ctl, Token: token, Build: buildinfo.Info{Version: "test"}, UI: ui.Handler(),
		Datapath: func() map[string]any {
			return map[string]any{"interface": "eth0", "xdp_mode": "native", "limits": map[string]uint32{"max_vips": 512, "max_reals": 4096, "max_flows": 1 << 20}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ctl.StartHealth(ctx, failProber{down: netip.MustParseAddr("10.0.0.2")}, 2, nil)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts, ctl, dp
}

// TestHandlerHeaders: the console's files come with a CSP that forbids
// inline script, / and /ui redirect to /ui/, and they need no token.
func TestHandlerHeaders(t *testing.T) {
	ts, _, _ := fakeLBD(t)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/", "/ui"} {
		resp, err := c.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("GET %s: %d to %q", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/lib.js", "/ui/style.css"} {
		resp, err := http.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode != 200 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: %d, CSP %q", p, resp.StatusCode, csp)
		}
	}
	// the API still wants the token
	resp, err := http.Get(ts.URL + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status without token: %d", resp.StatusCode)
	}
}

// TestConsoleInBrowser: in chromium, the console logs in, shows every
// view without an error, renders user-controlled text as text (nothing
// runs), and refuses a bad action with the API's problem.
func TestConsoleInBrowser(t *testing.T) {
	ts, ctl, dp := fakeLBD(t)
	b := browsertest.New(t) // stopped first: its event stream ends before the server
	vip := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.10"), Port: 80, Proto: lb.TCP}
	if _, err := ctl.CreateVIP(control.VIP{Key: vip, RingSize: 1021, Description: xssDescription,
		Reals:  []control.Real{{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1}, {Addr: netip.MustParseAddr("10.0.0.2"), Weight: 2}},
		Health: health.Spec{Type: health.HTTP, Path: "/healthz?probe=lbd", ExpectStatus: 200, Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 1}}); err != nil {
		t.Fatal(err)
	}
	dp.VIPCounters[vip] = xdp.VIPStats{Packets: 123456, Bytes: 9876543}
	dp.FlowList = []xdp.Flow{{Key: xdp.FlowKey{Client: netip.MustParseAddrPort("198.51.100.7:40000"), Dest: netip.AddrPortFrom(vip.Addr, 80), Proto: lb.TCP},
		Real: dp.RealMap[netip.MustParseAddr("10.0.0.1")], VIPNum: dp.VIPMap[vip].Num, Packets: 10, Bytes: 1000, FirstSeen: time.Now().Add(-time.Minute), LastSeen: time.Now()}}

	shots := os.Getenv("LBD_CONSOLE_SHOTS") // a directory to keep the screenshots in
	if shots == "" {
		shots = t.TempDir()
	}
	shot := func(name string) {
		var png []byte
		if err := b.Run(20*time.Second, chromedp.Sleep(300*time.Millisecond), chromedp.CaptureScreenshot(&png)); err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, "fake-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := b.Run(30*time.Second,
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitVisible("#token", chromedp.ByQuery),
		chromedp.SendKeys("#token", token, chromedp.ByQuery),
		chromedp.Click(`#login-form button[type=submit]`, chromedp.ByQuery),
	)
	if err == nil {
		err = b.WaitFor(20*time.Second, browsertest.Visible(`#view-overview .card`))
	}
	if err != nil {
		t.Fatalf("log in: %v (page errors: %v)", err, b.Errors())
	}
	shot("overview")
	for _, view := range []string{"vips", "flows", "connections", "events", "api"} {
		if err := b.Run(20*time.Second, chromedp.Navigate(ts.URL+"/ui/#"+view), chromedp.WaitVisible("#view-"+view, chromedp.ByQuery)); err != nil {
			t.Fatalf("view %s: %v", view, err)
		}
		if view == "vips" {
			// wait for the down real's probe error
			if err := b.WaitFor(20*time.Second, browsertest.Visible(`tr[data-real="10.0.0.2"] .muted`)); err != nil {
				t.Fatalf("probe error not shown: %v", err)
			}
		}
		shot(view)
	}
	// Swagger UI, with the tab's token
	if err := b.Run(20*time.Second, chromedp.Navigate(ts.URL+"/ui/swagger/")); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(30*time.Second, browsertest.Visible(".swagger-ui .opblock")); err != nil {
		t.Fatalf("Swagger UI: %v (page errors: %v)", err, b.Errors())
	}
	var ops int
	if err := b.Run(10*time.Second, chromedp.Evaluate(`document.querySelectorAll(".swagger-ui .opblock").length`, &ops)); err != nil {
		t.Fatal(err)
	}
	if ops < 20 {
		t.Errorf("Swagger UI shows %d operations", ops)
	}
	shot("swagger")

	// the description's markup is shown as text: nothing runs, no <img>
	var xss bool
	var shown, page, probe string
	if err := b.Run(20*time.Second, chromedp.Navigate(ts.URL+"/ui/#vips")); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(20*time.Second, browsertest.Visible(`tr[data-real="10.0.0.2"] .muted`)); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(20*time.Second, browsertest.Visible(`.card.vip [data-field="description"]`)); err != nil {
		t.Fatalf("description not shown: %v (page errors: %v)", err, b.Errors())
	}
	if err := b.Run(20*time.Second,
		chromedp.Evaluate(`window.__xss === 1 || document.querySelectorAll("img").length > 0`, &xss),
		browsertest.Text(`.card.vip [data-field="description"]`, &shown),
		chromedp.Evaluate(`document.body.textContent`, &page),
		browsertest.Text(`tr[data-real="10.0.0.2"] .muted`, &probe)); err != nil {
		t.Fatal(err)
	}
	if xss || shown != xssDescription || !strings.Contains(page, xssDescription) {
		t.Errorf("markup ran or vanished: xss %v, description shown %q, page has it: %v", xss, shown, strings.Contains(page, xssDescription))
	}
	if !strings.Contains(probe, "<b>503</b>") {
		t.Errorf("probe error shown %q, want its markup as text", probe)
	}
	// an action the API refuses shows its problem
	var problem string
	if err := b.Run(20*time.Second,
		browsertest.Click(`tr[data-real="10.0.0.1"] button.weight`),
		chromedp.WaitVisible("#weight-input", chromedp.ByQuery),
		chromedp.SetValue("#weight-input", "-3", chromedp.ByQuery),
		chromedp.Click("#confirm-ok", chromedp.ByQuery),
		chromedp.WaitVisible("#confirm-error", chromedp.ByQuery),
		chromedp.Text("#confirm-error", &problem, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(problem, "400") && !strings.Contains(problem, "422") {
		t.Errorf("refused weight: %q", problem)
	}
	shot("refused")
	if err := b.Run(10*time.Second, browsertest.Click("#confirm-cancel")); err != nil {
		t.Fatal(err)
	}

	// disable the VIP, then enable it again: each asks first
	vipDisabled := func() bool {
		t.Helper()
		req, _ := http.NewRequest("GET", ts.URL+"/api/v1/vips/tcp-192.0.2.10-80", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v apiv1.VIPJSON
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET VIP: %d %v", resp.StatusCode, err)
		}
		return v.Disabled
	}
	for _, disable := range []bool{true, false} {
		label, badge := "Disable", `.card.vip [data-field="disabled"]`
		if !disable {
			label = "Enable"
		}
		var btn, title string
		if err := b.WaitFor(20*time.Second, `!document.querySelector("#confirm").open && (document.querySelector(".card.vip button.disable") || {}).textContent === "`+label+`"`); err != nil {
			var open bool
			var text string
			_ = b.Run(5*time.Second, chromedp.Evaluate(`document.querySelector("#confirm").open`, &open), browsertest.Text(".card.vip button.disable", &text))
			t.Fatalf("%s button: %v (dialog open %v, button %q)", label, err, open, text)
		}
		if err := b.Run(20*time.Second,
			browsertest.Text(".card.vip button.disable", &btn),
			browsertest.Click(".card.vip button.disable"),
			chromedp.WaitVisible("#confirm-ok", chromedp.ByQuery),
			chromedp.Text("#confirm-title", &title, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(title, label+" ") || vipDisabled() != !disable {
			t.Fatalf("%s: dialog %q, or the VIP changed before the confirmation", label, title)
		}
		if disable {
			shot("disable-confirm")
			// refused first: the dialog stays, with the API's problem
			failChanges.Store(true)
			var problem string
			if err := b.Run(20*time.Second,
				chromedp.Click("#confirm-ok", chromedp.ByQuery),
				chromedp.WaitVisible("#confirm-error", chromedp.ByQuery),
				chromedp.Text("#confirm-error", &problem, chromedp.ByQuery)); err != nil {
				t.Fatal(err)
			}
			failChanges.Store(false)
			if !strings.Contains(problem, "500") || !strings.Contains(problem, "injected failure") || strings.Contains(problem, "null") || vipDisabled() {
				t.Errorf("refused disable: problem %q, disabled %v", problem, vipDisabled())
			}
			shot("disable-refused")
			if err := b.WaitFor(10*time.Second, `!document.querySelector("#confirm-ok").disabled`); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Run(20*time.Second, chromedp.Click("#confirm-ok", chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitFor(20*time.Second, `!document.querySelector("#confirm").open`); err != nil {
			t.Fatalf("%s: dialog stays open: %v", label, err)
		}
		if got := vipDisabled(); got != disable {
			t.Fatalf("after %s the API reports disabled: %v", label, got)
		}
		if disable {
			if err := b.WaitFor(20*time.Second, browsertest.Visible(badge)); err != nil {
				t.Fatalf("no disabled badge: %v", err)
			}
			var text string
			if err := b.Run(10*time.Second, browsertest.Text(badge, &text)); err != nil || text != "disabled" {
				t.Fatalf("badge %q %v", text, err)
			}
			shot("disabled")
		} else if err := b.WaitFor(20*time.Second, `!document.querySelector(`+"`"+badge+"`"+`)`); err != nil {
			t.Fatalf("disabled badge stays: %v", err)
		}
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}
