package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

// TestEventsFollowsAcrossRestarts: `lbd events` prints lbd's events; when
// the API goes away and comes back it resumes after the last one it
// printed, so an event that happened meanwhile is printed once, in
// order; after a restart of the daemon (a new run) it says events may be
// missing and goes on with the new run's.
func TestEventsFollowsAcrossRestarts(t *testing.T) {
	for _, env := range []string{"LBD_TOKEN", "LBD_SERVER", "LBD_TOKEN_FILE"} {
		t.Setenv(env, "")
	}
	eventsRetry, eventsRetryMax = 20*time.Millisecond, 50*time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	newAPI := func() (*control.Controller, http.Handler) {
		ctl := control.New(fakedp.New(), nopSaver{}, nil, nil)
		srv, err := api.New(api.Options{Controller: ctl, Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		return ctl, srv
	}
	serve := func(h http.Handler) *http.Server {
		var ln net.Listener
		var err error
		for range 50 { // the port of the closed server may linger a moment
			if ln, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: h}
		go hs.Serve(ln)
		return hs
	}
	create := func(ctl *control.Controller, port uint16) {
		if _, err := ctl.CreateVIP(control.VIP{Key: lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.9"), Port: port, Proto: lb.TCP}}); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ctl, h := newAPI()
	hs := serve(h)
	defer func() { hs.Close() }()
	root := newRootCommand()
	var out, errOut syncBuffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"events", "-o", "json", "--server=http://" + addr, "--token-file=" + tokenFile})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("no %s; stdout:\n%s\nstderr:\n%s", what, out.String(), errOut.String())
	}
	// the stream starts asynchronously: events until one shows
	port := uint16(1)
	waitFor("first event", func() bool {
		create(ctl, port)
		port++
		time.Sleep(20 * time.Millisecond)
		return strings.Contains(out.String(), "tcp-192.0.2.9-")
	})
	// the API goes away; an event happens; it comes back (same run)
	hs.Close()
	create(ctl, 1000)
	hs = serve(h)
	waitFor("event missed while away", func() bool { return strings.Contains(out.String(), "tcp-192.0.2.9-1000") })
	create(ctl, 1001)
	waitFor("live event after the resume", func() bool { return strings.Contains(out.String(), "tcp-192.0.2.9-1001") })
	// the daemon restarts: a new controller, a new run
	hs.Close()
	ctl2, h2 := newAPI()
	create(ctl2, 2000)
	hs = serve(h2)
	waitFor("event of the new run", func() bool { return strings.Contains(out.String(), "tcp-192.0.2.9-2000") })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("lbd events: %v", err)
	}

	// every event once, in order, with its id
	var vips, ids []string
	dec := json.NewDecoder(strings.NewReader(out.String()))
	for dec.More() {
		var ev struct {
			ID  string `json:"id"`
			Seq uint64 `json:"seq"`
			VIP string `json:"vip"`
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		vips, ids = append(vips, ev.VIP), append(ids, ev.ID)
	}
	n := len(vips)
	if n < 4 || vips[n-3] != "tcp-192.0.2.9-1000" || vips[n-2] != "tcp-192.0.2.9-1001" || vips[n-1] != "tcp-192.0.2.9-2000" ||
		!strings.HasSuffix(ids[n-1], "-1") || strings.HasPrefix(ids[n-1], strings.Split(ids[0], "-")[0]+"-") {
		t.Errorf("events %v ids %v", vips, ids)
	}
	seen := map[string]bool{}
	for _, v := range vips {
		if seen[v] {
			t.Errorf("%s printed twice: %v", v, vips)
		}
		seen[v] = true
	}
	if e := errOut.String(); !strings.Contains(e, "reconnecting") || !strings.Contains(e, "resumed: 1 events happened meanwhile") ||
		!strings.Contains(e, "some events may be missing: the daemon restarted") {
		t.Errorf("stderr:\n%s", e)
	}
}
