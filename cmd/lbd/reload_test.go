package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
)

// TestSIGHUPReload: a SIGHUP re-reads the config file; the log level and
// the health probe bound change live, the datapath stays as it was (same
// XDP link, same connection table and counters), a setting that needs a
// restart is named, a broken file is refused with the running config
// kept, and the daemon never exits.
func TestSIGHUPReload(t *testing.T) {
	l := newDaemonLab(t)
	conf := filepath.Join(t.TempDir(), "lbd.yaml")
	write := func(s string) {
		if err := os.WriteFile(conf, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_level: info\nhealth_max_concurrent: 64\nreconcile_interval: 30s\n")
	d := l.start("--config", conf, "--tracer", "off")

	l.call("POST", "/api/v1/vips", map[string]any{"protocol": "udp", "address": "192.0.2.1", "port": 53, "ring_size": 1021,
		"reals": []map[string]any{{"address": "10.0.0.1"}, {"address": "10.0.0.2"}}}, 201, nil)
	l.send(portRange(42001, 42005)...)
	linkID := func() link.ID {
		lk, err := link.LoadPinnedLink(filepath.Join(l.pinDir, "links", l.lbIf), nil)
		if err != nil {
			t.Fatalf("pinned XDP link: %v", err)
		}
		defer lk.Close()
		info, err := lk.Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	var status struct{ Datapath map[string]any }
	hmc := func() any {
		l.call("GET", "/api/v1/status", nil, 200, &status)
		return status.Datapath["health_max_concurrent"]
	}
	idBefore, flowsBefore, pktsBefore := linkID(), l.flows(), l.vipPackets()
	if len(flowsBefore) != 5 || pktsBefore != 5 || hmc() != float64(64) {
		t.Fatalf("before: flows %v packets %d health_max_concurrent %v", flowsBefore, pktsBefore, status.Datapath["health_max_concurrent"])
	}
	if strings.Contains(l.logs.String(), `"level":"DEBUG"`) {
		t.Fatal("debug lines at log_level info")
	}

	waitLog := func(what string) {
		t.Helper()
		for i := 0; !strings.Contains(l.logs.String(), what); i++ {
			if i == 100 {
				t.Fatalf("no %q in the log after 10 s:\n%s", what, l.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	write("log_level: debug\nhealth_max_concurrent: 8\nreconcile_interval: 5s\nmtu: 1400\n")
	if err := d.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(`"msg":"reloaded configuration (SIGHUP)"`)
	logs := l.logs.String()
	for _, want := range []string{`"level":"DEBUG","msg":"configuration in force after the reload"`, "log_level: info -> debug",
		"health_max_concurrent: 64 -> 8", "reconcile_interval: 30s -> 5s", `"needs_restart":"mtu: 1500 -> 1400"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if got := hmc(); got != float64(8) {
		t.Errorf("health_max_concurrent after the reload: %v, want 8", got)
	}
	if id := linkID(); id != idBefore {
		t.Errorf("XDP link %d became %d", idBefore, id)
	}
	if f, p := l.flows(), l.vipPackets(); len(f) != 5 || p != 5 {
		t.Errorf("datapath changed by the reload: flows %v packets %d", f, p)
	} else {
		for c, r := range flowsBefore {
			if f[c] != r {
				t.Errorf("flow %s moved from %s to %s", c, r, f[c])
			}
		}
	}

	// A broken file is refused; the running config stays.
	write("log_level: loud\nhealth_max_concurrent: 2\n")
	if err := d.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(`reload (SIGHUP) refused: keeping the running configuration`)
	if !strings.Contains(l.logs.String(), "log level") && !strings.Contains(l.logs.String(), "loud") {
		t.Errorf("the refusal does not say what is wrong:\n%s", l.logs.String())
	}
	if got := hmc(); got != float64(8) {
		t.Errorf("health_max_concurrent after a refused reload: %v, want 8", got)
	}
	l.send(42006)
	if p := l.vipPackets(); p != 6 || linkID() != idBefore {
		t.Errorf("after the refused reload: packets %d (want 6), link %d (want %d)", p, linkID(), idBefore)
	}
	if d.ProcessState != nil {
		t.Fatal("the daemon exited")
	}
	stop(t, d)
	// --log-format json: every line is JSON, the first one included.
	for i, line := range strings.Split(strings.TrimSpace(l.logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line %d is not JSON: %s", i+1, line)
		}
	}
}
