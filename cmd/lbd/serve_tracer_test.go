package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/bpf/features"
	"github.com/lbd-dev/lbd/bpf/kprobe"
)

// TestDaemonServesTracer runs `lbd serve` with the tracer and reads a
// connection this test makes through the daemon's REST API; with
// --tracer off the tracer endpoints answer 503.
func TestDaemonServesTracer(t *testing.T) {
	mode := "tracepoint"
	if features.HaveKprobes() {
		mode = "kprobe"
	}
	l := newDaemonLab(t)
	cmd := l.start("--tracer", mode)
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()

	var st kprobe.Status
	l.call("GET", "/api/v1/tracer", nil, 200, &st)
	if !st.Running || string(st.Mode) != mode || st.OffsetSource != kprobe.OffsetsCORE {
		t.Fatalf("tracer status %+v", st)
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 4321)); err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.TCPAddr).Port
	path := fmt.Sprintf("/api/v1/connections?pid=%d&port=%d&state=open", os.Getpid(), port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var list apiv1.ConnectionListJSON
		l.call("GET", path, nil, 200, &list)
		ok := false
		for _, cj := range list.Connections {
			if cj.Source == "127.0.0.1:"+strconv.Itoa(port) && cj.BytesSent == 4321 && cj.Direction == "outgoing" {
				ok = true
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon never reported 127.0.0.1:%d with 4321 bytes sent: %+v", port, list)
		}
		time.Sleep(100 * time.Millisecond)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	cmd = l.start("--tracer", "off")
	l.call("GET", "/api/v1/tracer", nil, 503, nil)
	l.call("GET", "/api/v1/connections", nil, 503, nil)
}
