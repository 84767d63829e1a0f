package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/bpf/kprobe"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/internal/privtest"
)

// tracedDaemon is the real API server with a real tracer (root needed).
func tracedDaemon(t *testing.T) *daemon {
	t.Helper()
	privtest.Require(t)
	for _, env := range []string{"LBD_TOKEN", "LBD_SERVER", "LBD_TOKEN_FILE"} {
		t.Setenv(env, "")
	}
	tr, err := kprobe.New(kprobe.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		privtest.CheckNotSupported(t, "start tracer", err)
	}
	t.Cleanup(func() { tr.Stop() })
	d := &daemon{t: t, dp: fakedp.New()}
	d.ctl = control.New(d.dp, nopSaver{}, nil, nil)
	srv, err := api.New(api.Options{Controller: d.ctl, Token: testToken, Tracer: tracerSource{tr}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	d.url = ts.URL
	d.tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(d.tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// openConnection makes a TCP connection on loopback that moves up bytes
// one way and down the other, and stays open until the test ends.
func openConnection(t *testing.T, up, down int) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	t.Cleanup(func() { c.Close(); s.Close() })
	go s.Write(make([]byte, down))
	c.Write(make([]byte, up))
	io.ReadFull(s, make([]byte, up))
	io.ReadFull(c, make([]byte, down))
	return c, s
}

func TestConnsAndTopShowTracedConnections(t *testing.T) {
	d := tracedDaemon(t)
	c, _ := openConnection(t, 700, 300)
	port := strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port)
	pid := strconv.Itoa(os.Getpid())

	out := d.ok("conns", "--pid", pid, "--port", port, "--state", "open")
	want := "127.0.0.1:" + port + " ⇄ " + c.RemoteAddr().String()
	if !strings.Contains(out, "[TCP]") || !strings.Contains(out, want) || !strings.Contains(out, "700B") || !strings.Contains(out, "300B") {
		t.Errorf("lbd conns does not show %s with 700B sent, 300B received:\n%s", want, out)
	}

	var list apiv1.ConnectionListJSON
	if err := json.Unmarshal([]byte(d.ok("conns", "--pid", pid, "--port", port, "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, cj := range list.Connections {
		if cj.Source == "127.0.0.1:"+port {
			found = cj.BytesSent == 700 && cj.BytesRecv == 300 && cj.Direction == "outgoing" && cj.State == "open"
		}
	}
	if !found {
		t.Errorf("lbd conns -o json: client end with 700/300 bytes not in %+v", list)
	}

	top := d.ok("top", "--pid", pid, "--port", port, "--iterations", "2", "--interval", "200ms", "--sort", "sent")
	if !strings.Contains(top, "lbd top") || !strings.Contains(top, want) || !strings.Contains(top, "SENT/S") {
		t.Errorf("lbd top:\n%s", top)
	}
	if _, _, err := d.run("top", "--sort", "color"); err == nil || !strings.Contains(err.Error(), "--sort") {
		t.Errorf("lbd top --sort color: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConnsFollowPrintsEvents(t *testing.T) {
	d := tracedDaemon(t)
	root := newRootCommand()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"conns", "--follow", "--pid", strconv.Itoa(os.Getpid()), "--server=" + d.url, "--token-file=" + d.tokenFile})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	// connectShown: the stream printed the connect event of the client
	// end on port. A connection's accept and connect come from different
	// tracepoints (and may come on different CPUs), so the accept can be
	// printed first: wait for the connect itself.
	connectShown := func(port string) bool {
		return slices.ContainsFunc(strings.Split(out.String(), "\n"), func(l string) bool {
			return strings.Contains(l, " connect ") && strings.Contains(l, "[TCP] 127.0.0.1:"+port+" ⇄ ")
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	var port string
	shown := false
	for !shown && time.Now().Before(deadline) {
		// connections until the stream (started asynchronously) shows one
		c, _ := openConnection(t, 10, 10)
		port = strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port)
		for range 10 { // up to 1 s for this connection's event
			if shown = connectShown(port); shown {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("lbd conns --follow: %v", err)
	}
	if !shown {
		t.Errorf("no connect event for port %s within 10 s in:\n%s", port, out.String())
	}
}

func TestConnsWithoutTracerSaysWhy(t *testing.T) {
	d := newDaemon(t)
	_, _, err := d.run("conns")
	if err == nil || !strings.Contains(err.Error(), "tracer not running") || !strings.Contains(err.Error(), "--tracer") {
		t.Errorf("lbd conns without a tracer: %v", err)
	}
}
