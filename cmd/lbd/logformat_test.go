package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/bpf/xdp"
)

// TestJSONLogValues: JSON logs carry mode names and durations in seconds.
func TestJSONLogValues(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: jsonSeconds}))
	log.Info("x", "mode", xdp.ModeNative, "policy", xdp.PolicyPass, "took", 1500*time.Millisecond)
	for _, want := range []string{`"mode":"native"`, `"policy":"pass"`, `"took":1.5`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("%s lacks %s", buf.String(), want)
		}
	}
}

// TestLoggerIsDefault: packages that log through slog's default (the
// bpffs mount, lbd's very first line) use the daemon's format too.
func TestLoggerIsDefault(t *testing.T) {
	old := slog.Default()
	t.Cleanup(func() { slog.SetDefault(old) })
	cfg := defaultServeConfig()
	cfg.LogFormat = "json"
	newLogger(cfg, new(slog.LevelVar))
	if _, ok := slog.Default().Handler().(*slog.JSONHandler); !ok {
		t.Errorf("slog's default handler is %T, want the daemon's JSON handler", slog.Default().Handler())
	}
}
