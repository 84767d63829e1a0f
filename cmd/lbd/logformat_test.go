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
