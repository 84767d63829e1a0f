package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// cli runs an lbd client command against the lab's daemon.
func (l *daemonLab) cli(args ...string) (string, error) {
	l.t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--server", "http://"+l.listen, "--token-file", filepath.Join(l.stateDir, "token")))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func (l *daemonLab) cliOK(args ...string) string {
	l.t.Helper()
	out, err := l.cli(args...)
	if err != nil {
		l.t.Fatalf("lbd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestApplyExportAgainstServe: lbd apply, export, dry run and If-Match
// against a real `lbd serve` on XDP: the set survives a restart, a fresh
// daemon given the export exports the same and has the same
// fingerprint, and a stale write changes nothing.
func TestApplyExportAgainstServe(t *testing.T) {
	l := newDaemonLab(t)
	d := l.start("--tracer", "off")
	file := filepath.Join(t.TempDir(), "vips.yaml")
	// vipsYAML and the VIP the lab's client sends to.
	set := vipsYAML + "  - protocol: udp\n    address: 192.0.2.1\n    port: 53\n    reals:\n      - address: 10.0.0.5\n"
	if err := os.WriteFile(file, []byte(set), 0o600); err != nil {
		t.Fatal(err)
	}

	out := l.cliOK("apply", "-f", file, "--dry-run")
	if !strings.Contains(out, "+ vip tcp-192.0.2.1-80 (2 reals)") || !strings.Contains(out, "dry run, nothing changed: 3 added") {
		t.Errorf("dry run:\n%s", out)
	}
	var st apiv1.StatusJSON
	l.call("GET", "/api/v1/status", nil, 200, &st)
	if st.VIPs != 0 {
		t.Fatalf("a dry run created %d VIPs", st.VIPs)
	}
	empty := st.Fingerprint
	out = l.cliOK("apply", "-f", file)
	l.call("GET", "/api/v1/status", nil, 200, &st)
	if st.VIPs != 3 || st.Fingerprint == empty || !strings.Contains(out, "applied: 3 added, 0 removed, 0 changed; fingerprint "+st.FingerprintShort) {
		t.Fatalf("apply: %+v\n%s", st, out)
	}
	if !strings.Contains(l.cliOK("status"), st.FingerprintShort) {
		t.Error("lbd status does not show the fingerprint")
	}
	resp, metrics := l.request("GET", "/metrics", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(metrics, `lbd_config_fingerprint_info{fingerprint="`+st.Fingerprint+`"} 1`) {
		t.Error("metrics lack lbd_config_fingerprint_info with the status' fingerprint")
	}
	// The datapath has the VIPs: packets to the VIP are forwarded.
	before := l.vipPackets()
	l.send(portRange(40000, 40009)...)
	if got := l.vipPackets() - before; got != 10 {
		t.Errorf("VIP forwarded %d of 10 packets after apply", got)
	}

	exported := l.cliOK("export")
	expFile := filepath.Join(t.TempDir(), "export.yaml")
	if err := os.WriteFile(expFile, []byte(exported), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := l.cliOK("apply", "-f", expFile); !strings.Contains(out, "no change:") {
		t.Errorf("apply of the export:\n%s", out)
	}

	// Optimistic concurrency on the whole set and on a real.
	resp, _ = l.request("GET", "/api/v1/vips", "", nil)
	setTag := resp.Header.Get("ETag")
	resp, _ = l.request("GET", "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.1", "", nil)
	realTag := resp.Header.Get("ETag")
	l.cliOK("real", "set", "tcp/192.0.2.1:80", "10.0.0.2", "--weight", "4") // someone else's change
	resp, body := l.request("PUT", "/api/v1/vips", `{"vips":[]}`, http.Header{"If-Match": {setTag}})
	if resp.StatusCode != http.StatusPreconditionFailed || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("PUT /vips on a stale tag: %d %s", resp.StatusCode, body)
	}
	if fp := resp.Header.Get(apiv1.HeaderFingerprint); fp == "" {
		t.Error("a refused change has no Lbd-Fingerprint")
	}
	resp, body = l.request("PUT", "/api/v1/vips/tcp-192.0.2.1-80/reals/10.0.0.1", `{"weight":7}`, http.Header{"If-Match": {realTag}})
	if resp.StatusCode != 200 {
		t.Errorf("PUT of 10.0.0.1 on its own, still current tag: %d %s", resp.StatusCode, body)
	}
	l.call("GET", "/api/v1/status", nil, 200, &st)
	if st.VIPs != 3 || resp.Header.Get(apiv1.HeaderFingerprint) != st.Fingerprint {
		t.Errorf("after the stale set and the real change: %d VIPs, header fingerprint %q, status %q", st.VIPs, resp.Header.Get(apiv1.HeaderFingerprint), st.Fingerprint)
	}
	// Back to the file: the diff names exactly the two weights.
	out = l.cliOK("apply", "-f", expFile)
	if !strings.Contains(out, "~ real 10.0.0.1: weight 7 -> 1") || !strings.Contains(out, "~ real 10.0.0.2: weight 4 -> 3") || !strings.Contains(out, "0 added, 0 removed, 1 changed") {
		t.Errorf("apply back:\n%s", out)
	}
	l.call("GET", "/api/v1/status", nil, 200, &st)
	want := st.Fingerprint

	// sameSet checks that the daemon exports the file and has its fingerprint.
	sameSet := func(when string) {
		t.Helper()
		if got := l.cliOK("export"); got != exported {
			t.Errorf("export %s differs:\n%s\nwant:\n%s", when, got, exported)
		}
		l.call("GET", "/api/v1/status", nil, 200, &st)
		if st.Fingerprint != want {
			t.Errorf("fingerprint %s %s, want %s", when, st.Fingerprint, want)
		}
	}

	// A restart keeps the set (saved durably), fingerprint and all.
	stop(t, d)
	d = l.start("--tracer", "off")
	sameSet("after a restart")

	// A fresh daemon (no state, no pins) given the export.
	stop(t, d)
	if out, err := l.lbd("cleanup", "--pin-dir", l.pinDir).CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	l.stateDir = t.TempDir()
	d = l.start("--tracer", "off")
	l.call("GET", "/api/v1/status", nil, 200, &st)
	if st.VIPs != 0 {
		t.Fatalf("fresh daemon has %d VIPs", st.VIPs)
	}
	l.cliOK("apply", "-f", expFile)
	sameSet("of a fresh daemon after apply")
	stop(t, d)
}
