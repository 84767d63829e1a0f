// Package browsertest runs Debian's chromium headless for tests of the
// web console, driven with chromedp, and collects what the page reports
// as errors: uncaught exceptions, console.error, and the browser's own
// error log (CSP violations, failed loads).
package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// Browser is one headless chromium with one tab.
type Browser struct {
	Ctx    context.Context
	mu     sync.Mutex
	errors []string
}

// New starts chromium (fresh profile, 1280×800), or skips the test when
// it is not installed (fails under CI=true). It is stopped when the test
// ends, failed or not.
func New(t *testing.T) *Browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if privtest.InVMGuest() {
			// The busybox guests of the kernel matrix have no browser;
			// the console needs no particular kernel: it is tested on
			// the host (in CI: required).
			t.Skip("kernel-matrix guest: no chromium; the browser tests run on the host")
		}
		privtest.Unavailable(t, "chromium not installed (Debian package chromium; scripts/install-deps.sh installs it)")
	}
	// A fresh profile, removed after chromium's processes are gone (they
	// may still write to it for a moment after the kill).
	profile, err := os.MkdirTemp("", "lbd-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // kills chromium
		// Its helper processes (network service, GPU, zygote) can outlive
		// it for a moment and write to the profile: wait for those of
		// this profile to go (killing them after 5 s), then remove it.
		for i := 0; i < 100; i++ {
			pids := profileProcesses(profile)
			if len(pids) == 0 {
				break
			}
			if i == 50 {
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := os.RemoveAll(profile); err != nil {
			t.Errorf("remove chromium profile: %v", err)
		}
	})
	b := &Browser{Ctx: ctx}
	chromedp.ListenTarget(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.add("exception: %s (%s:%d)", msg, d.URL, d.LineNumber)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.APITypeError || ev.Type == runtime.APITypeAssert {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.add("console.%s: %s", ev.Type, strings.Join(parts, " "))
			}
		case *log.EventEntryAdded:
			// An HTTP error answer (401, 503, a refused change) is the
			// API speaking, which the page handles; a load that failed
			// (connection refused, CSP) is an error.
			if ev.Entry.Level == log.LevelError && !(ev.Entry.Source == log.SourceNetwork && strings.Contains(ev.Entry.Text, "the server responded with a status of")) {
				b.add("log %s: %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		}
	})
	// The first Run starts chromium and ties it to its context: that must
	// be ctx itself (a derived context with a timeout would stop chromium
	// with it), so the timeout is a timer here.
	stop := time.AfterFunc(time.Minute, cancel)
	err = chromedp.Run(ctx, log.Enable(), runtime.Enable(), chromedp.EmulateViewport(1280, 800))
	if !stop.Stop() {
		t.Fatalf("chromium %s did not start within a minute", path)
	}
	if err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return b
}

func (b *Browser) add(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, fmt.Sprintf(format, args...))
}

// Errors returns the errors the page reported and forgets them.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.errors
	b.errors = nil
	return e
}

// Run runs actions with a timeout.
func (b *Browser) Run(timeout time.Duration, actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(b.Ctx, timeout)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}

// Click clicks the first element sel matches, in one step in the page:
// a page that re-renders (the console does every 2 s) cannot swap the
// node between finding and clicking it.
func Click(sel string) chromedp.Action {
	q, _ := json.Marshal(sel)
	var ok bool
	return chromedp.Evaluate(fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) throw new Error("nothing matches " + %s); e.click(); return true; })()`, q, q), &ok)
}

// Text reads the text of the first element sel matches ("" if none).
func Text(sel string, out *string) chromedp.Action {
	q, _ := json.Marshal(sel)
	return chromedp.Evaluate(fmt.Sprintf(`(document.querySelector(%s) || {}).textContent || ""`, q), out)
}

// WaitFor waits until the JavaScript expression cond is true.
func (b *Browser) WaitFor(timeout time.Duration, cond string) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		if err := b.Run(10*time.Second, chromedp.Evaluate("!!("+cond+")", &ok)); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not %s after %v", cond, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Visible is a WaitFor condition: an element matches sel and is shown.
func Visible(sel string) string {
	q, _ := json.Marshal(sel)
	return fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.getClientRects().length > 0; })()`, q)
}

// profileProcesses lists the processes whose command line names the
// profile directory: the chromium of one Browser and its helpers.
func profileProcesses(profile string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmdline), profile) {
			pids = append(pids, pid)
		}
	}
	return pids
}
