package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsListen: --metrics-listen serves /metrics without the token
// and nothing else; the API listener still wants the token for /metrics.
func TestMetricsListen(t *testing.T) {
	l := newDaemonLab(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := l.start("--metrics-listen", addr, "--tracer", "off")
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("http://" + addr + "/metrics"); code != 200 || !strings.Contains(body, "lbd_build_info{") || !strings.Contains(body, "process_start_time_seconds") {
		t.Errorf("metrics listener /metrics: %d\n%.500s", code, body)
	}
	for _, path := range []string{"/api/v1/status", "/api/v1/vips", "/healthz"} {
		if code, _ := get("http://" + addr + path); code != 404 {
			t.Errorf("metrics listener %s: %d, want 404", path, code)
		}
	}
	if resp, err := http.Post("http://"+addr+"/metrics", "text/plain", nil); err != nil || resp.StatusCode != 405 {
		t.Errorf("POST /metrics on the metrics listener: %v %v", resp.StatusCode, err)
	}
	if code, _ := get("http://" + l.listen + "/metrics"); code != 401 {
		t.Errorf("API /metrics without a token: %d, want 401", code)
	}
	stop(t, d)
}
