package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAPIOnUnixSocket: listen: unix:PATH serves the API on a 0600 unix
// socket, and the CLI reaches it with --server unix:PATH.
func TestAPIOnUnixSocket(t *testing.T) {
	l := newDaemonLab(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := l.lbd("serve", "--interface", l.lbIf, "--xdp-mode", "native", "--gateway-mac", "02:00:00:00:00:99",
		"--listen", "unix:"+sock, "--state-dir", l.stateDir, "--token-file", filepath.Join(l.stateDir, "token"),
		"--pin-dir", l.pinDir, "--max-flows", "4096", "--max-vips", "16", "--max-reals", "64", "--tracer", "off")
	logs := &syncBuffer{}
	d.Stderr = logs
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.ProcessState == nil {
			_ = d.Process.Kill()
			_ = d.Wait()
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	var out bytes.Buffer
	for i := 0; ; i++ {
		root := newRootCommand()
		out.Reset()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs([]string{"--server", "unix:" + sock, "--token-file", filepath.Join(l.stateDir, "token"), "status", "-o", "json"})
		err := root.Execute()
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("lbd status over the unix socket: %v\n%s", err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out.String(), `"interface": "`+l.lbIf+`"`) {
		t.Errorf("status over the unix socket:\n%s", out.String())
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket %v: %v", fi.Mode(), err)
	}
	stop(t, d)
}
