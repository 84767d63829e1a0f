package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/bgp"
)

// live is what a SIGHUP can change in a running daemon.
type live struct {
	level     *slog.LevelVar
	reconcile chan time.Duration // new reconcile interval for reconcileLoop
	ctl       *control.Controller
	tls       *certReloader // nil without TLS
}

// liveKeys are the settings a reload applies; every other difference
// needs a restart.
var liveKeys = map[string]bool{"log_level": true, "reconcile_interval": true, "health_max_concurrent": true}

// reloadTLS re-reads the API's certificate (same files; a renewed
// certificate in place). A bad pair keeps the running one.
func reloadTLS(lv *live, log *slog.Logger) {
	if lv.tls == nil {
		return
	}
	if err := lv.tls.load(); err != nil {
		log.Error("reload (SIGHUP): keeping the running TLS certificate", "err", err)
		return
	}
	log.Info("reloaded the API's TLS certificate", "cert_file", lv.tls.certFile)
}

// watchReload re-reads the configuration on every SIGHUP until ctx ends
// and applies what can change live. It never exits the daemon: a file
// that does not load or validate keeps the running configuration, and
// the log says why.
func watchReload(ctx context.Context, cur serveConfig, load func() (serveConfig, error), lv *live, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reloadTLS(lv, log)
				cur = reload(cur, load, lv, log)
			}
		}
	}()
}

// ignoreSIGHUP keeps an early SIGHUP (before watchReload) from killing
// the daemon.
func ignoreSIGHUP() { signal.Ignore(syscall.SIGHUP) }

func reload(cur serveConfig, load func() (serveConfig, error), lv *live, log *slog.Logger) serveConfig {
	if load == nil {
		log.Warn("reload (SIGHUP): no configuration source; nothing to do")
		return cur
	}
	next, err := load()
	if err != nil {
		log.Error("reload (SIGHUP) refused: keeping the running configuration", "err", err)
		return cur
	}
	var applied, restart []string
	for _, d := range configDiff(cur, next) {
		if liveKeys[d.key] {
			applied = append(applied, d.String())
		} else {
			restart = append(restart, d.String())
		}
	}
	if next.LogLevel != cur.LogLevel {
		var l slog.Level
		_ = l.UnmarshalText([]byte(next.LogLevel)) // validated
		lv.level.Set(l)
	}
	if next.ReconcileInterval != cur.ReconcileInterval && lv.reconcile != nil {
		lv.reconcile <- next.ReconcileInterval
	}
	if next.HealthMaxConcurrent != cur.HealthMaxConcurrent && lv.ctl != nil {
		lv.ctl.SetHealthMaxConcurrent(next.HealthMaxConcurrent)
	}
	// Keep the running values of what needs a restart, so that a later
	// reload compares against what really runs.
	applied2 := cur
	applied2.LogLevel, applied2.ReconcileInterval, applied2.HealthMaxConcurrent = next.LogLevel, next.ReconcileInterval, next.HealthMaxConcurrent
	log.Debug("configuration in force after the reload", "config", fmt.Sprintf("%+v", applied2))
	log.Info("reloaded configuration (SIGHUP)", "applied", strings.Join(applied, "; "), "needs_restart", strings.Join(restart, "; "))
	if len(restart) > 0 {
		log.Warn("reload (SIGHUP): some changes take effect only after a restart (systemctl restart lbd)", "settings", strings.Join(restart, "; "))
	}
	return applied2
}

type diff struct {
	key      string
	old, new any
}

func (d diff) String() string { return fmt.Sprintf("%s: %v -> %v", d.key, d.old, d.new) }

// configDiff lists the settings (by YAML key) that differ.
func configDiff(a, b serveConfig) []diff {
	var out []diff
	var walk func(prefix string, va, vb reflect.Value)
	walk = func(prefix string, va, vb reflect.Value) {
		t := va.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fa, fb := va.Field(i), vb.Field(i)
			if f.Type.Kind() == reflect.Struct && (opts == "inline" || f.Type == reflect.TypeFor[bgp.Settings]()) {
				p := prefix
				if opts != "inline" {
					p += name + "."
				}
				walk(p, fa, fb)
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			// %v, not Interface(): the tracer settings sit in an
			// unexported embedded struct.
			if sa, sb := fmt.Sprintf("%v", fa), fmt.Sprintf("%v", fb); sa != sb {
				out = append(out, diff{prefix + name, sa, sb})
			}
		}
	}
	walk("", reflect.ValueOf(a), reflect.ValueOf(b))
	return out
}
