package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/api"
)

// listenAPI opens the API's socket: ip:port, or unix:PATH for a unix
// socket (mode 0600: only root reaches it, and no token crosses a
// network). A stale socket file from a killed daemon is replaced; the
// daemon locks already guarantee no other lbd serves it.
func listenAPI(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// listenMetrics opens the --metrics-listen socket (nil when off), before
// the datapath is touched, like the API's.
func listenMetrics(cfg serveConfig) (net.Listener, error) {
	if cfg.MetricsListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsListen, err)
	}
	return ln, nil
}

func closeListener(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

// serveMetrics serves /metrics alone, read-only and without the token, on
// ln (nothing when ln is nil).
func serveMetrics(ln net.Listener, srv *api.Server, log *slog.Logger) *http.Server {
	if ln == nil {
		return nil
	}
	hs := &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening (read-only, no token)", "address", ln.Addr().String())
	return hs
}
