package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/ui"
)

// addServeCommands adds the daemon's commands: serve and cleanup.
func addServeCommands(root *cobra.Command) {
	flagged := defaultServeConfig()
	var configPath string
	var check bool
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: attach the XDP balancer, reconcile the saved state, serve the REST API",
		Long: `Run the lbd daemon on one interface.

The maps and the XDP attachment are pinned under --pin-dir, so stopping
lbd (even with kill -9) leaves packets flowing and the connection table
intact; the next lbd serve takes them over. --detach (or lbd cleanup)
removes everything instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ignoreSIGHUP() // reload.go: SIGHUP reloads, never kills
			load := func() (serveConfig, error) { return loadServeConfig(configPath, cmd.Flags(), &flagged) }
			cfg, err := load()
			if check {
				if err != nil {
					fmt.Fprintln(cmd.OutOrStdout(), "config: FAILED")
					return err
				}
				return runCheck(cfg, cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			lv := &live{level: new(slog.LevelVar), reconcile: make(chan time.Duration, 1)}
			return runServe(ctx, cfg, newLogger(cfg, lv.level), lv, load)
		},
	}
	serve.Flags().StringVar(&configPath, "config", "", "YAML configuration file (flags given on the command line win)")
	serve.Flags().BoolVar(&check, "check", false, "check the configuration, the state file and the interface, print what lbd serve would do, and exit (non-zero on any problem); changes nothing")
	flagged.bindFlags(serve.Flags())
	root.AddCommand(serve)

	var pinDir string
	cleanup := &cobra.Command{
		Use:   "cleanup",
		Short: "Detach the XDP balancer and remove its pinned maps (the connection table is lost; the state file stays)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lock, err := lockPinDirIfExists(pinDir)
			if err != nil {
				return fmt.Errorf("%w: stop it before cleaning up", err)
			}
			defer lock.Release()
			if err := xdp.Cleanup(pinDir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed lbd's XDP attachments and pins under %s\n", pinDir)
			return nil
		},
	}
	cleanup.Flags().StringVar(&pinDir, "pin-dir", xdp.DefaultPinDir, "bpffs directory of the maps and links")
	root.AddCommand(cleanup)
}

// newLogger makes the daemon's logger at cfg's level, held in level so
// that a reload can change it.
func newLogger(cfg serveConfig, level *slog.LevelVar) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		l = slog.LevelInfo
	}
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	if cfg.LogFormat == "json" {
		opts.ReplaceAttr = jsonSeconds
		log = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	} else {
		log = slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	// Packages that log through slog's default (bpffs mount, cleanup)
	// write in the same format from the first line.
	slog.SetDefault(log)
	return log
}

// jsonSeconds writes durations as seconds (a float), as log readers
// expect, instead of slog's integer nanoseconds.
func jsonSeconds(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.Float64(a.Key, a.Value.Duration().Seconds())
	}
	return a
}

// runServe runs the daemon until ctx ends.
// lv and load are for SIGHUP reloads (reload.go); load may be nil.
func runServe(ctx context.Context, cfg serveConfig, log *slog.Logger, lv *live, load func() (serveConfig, error)) (err error) {
	// The interface first: a typo must fail before anything is created.
	ifc, err := xdp.LookupInterface(cfg.Interface)
	if err != nil {
		return err
	}
	locks, err := lockDaemon(cfg, ifc)
	if err != nil {
		return err
	}
	defer locks.release()

	token, err := loadOrCreateToken(cfg.TokenFile, log)
	if err != nil {
		return err
	}
	store, err := control.NewStore(cfg.StateDir)
	if err != nil {
		return err
	}
	desired, err := store.Load()
	if err != nil {
		return err
	}
	gw, err := gatewayMAC(cfg)
	if err != nil {
		return err
	}
	dpConfig, err := cfg.datapathConfig(gw)
	if err != nil {
		return err
	}
	mode, _ := xdp.ParseAttachMode(cfg.XDPMode)
	// Listen before touching the datapath: a busy port is the likeliest
	// mistake and should change nothing.
	ln, err := listenAPI(cfg.Listen) // metrics_listen.go: ip:port or unix:PATH
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	cfg.warnInsecureListen(cfg.Listen, cfg.TLSCertFile != "", log)
	if ln, lv.tls, err = listenTLS(ln, cfg); err != nil { // tls.go
		return err
	}
	metricsLn, err := listenMetrics(cfg)
	if err != nil {
		return err
	}
	defer closeListener(metricsLn)

	pins, err := preparePinDir(cfg, locks, log)
	if err != nil {
		return err
	}
	b, err := xdp.Open(xdp.Options{Limits: cfg.limits(), PinDir: cfg.PinDir})
	if err != nil {
		return err
	}
	var att xdp.Attachment
	defer func() {
		if cfg.Detach {
			if derr := b.Detach(cfg.Interface); derr != nil {
				log.Warn("detach", "err", derr)
			}
			b.Close()
			if cerr := xdp.Cleanup(cfg.PinDir); cerr != nil {
				err = errors.Join(err, cerr)
			}
			log.Info("detached and removed the pins", "pin_dir", cfg.PinDir)
			return
		}
		b.Close()
		log.Info(pins.exitLine(att), "interface", cfg.Interface, "pin_dir", cfg.PinDir)
	}()
	log.Info("datapath opened", "pin_dir", cfg.PinDir, "recovered", b.Recovered(), "limits", fmt.Sprintf("%+v", cfg.limits()))
	if err := b.SetConfig(dpConfig); err != nil {
		return err
	}

	ctl := control.New(b, store, desired, log)
	ctl.SetDatapathConfig(dpConfig)
	lv.ctl = ctl
	ctl.SetGUESources(dpConfig.GUESourceV4.IsValid(), dpConfig.GUESourceV6.IsValid())
	var notReady atomic.Pointer[error]
	setReady := func(e error) {
		if e == nil {
			notReady.Store(nil)
		} else {
			notReady.Store(&e)
		}
	}
	setReady(errors.New("starting"))
	if b.Recovered() {
		// The pinned counters went on: take back whose each real index
		// is, and the removed reals' totals, so that VIPs' totals still
		// add up. With a fresh datapath both start anew.
		saved, err := store.LoadCounters()
		if err != nil {
			log.Warn("counters file unreadable: removed reals' totals are lost", "err", err)
		} else {
			ctl.RestoreCounters(saved)
		}
	}
	drifts, rerr := ctl.Reconcile()
	log.Info("reconciled desired state into the datapath", "vips", len(desired), "changed", len(drifts))
	if rerr != nil {
		log.Error("reconcile failed; serving anyway, the next reconcile retries", "err", rerr)
	}
	att, err = b.Attach(cfg.Interface, mode)
	if err != nil {
		return err
	}
	if att.Fallback != "" {
		log.Warn("native XDP unavailable, running in generic mode (slower)", "interface", att.Interface, "reason", att.Fallback)
	}
	log.Info("XDP balancer attached", "interface", att.Interface, "mode", att.Mode, "took_over_pinned_link", att.Reused)
	setReady(rerr)

	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	healthMode := "off"
	if cfg.HealthChecks {
		var tunnel control.TunnelProbes
		hc, err := startHCTunnel(cfg, gw)
		if err != nil {
			healthMode = "direct (no tunnel: " + err.Error() + ")"
			log.Warn("health checks probe the reals' own addresses: the health-check tunnel is unavailable", "reason", err)
		} else {
			defer hc.close()
			tunnel = hc
			healthMode = "tunnel (" + hc.att.String() + ")"
		}
		ctl.StartHealth(bg, health.NetProber{}, cfg.HealthMaxConcurrent, tunnel)
		log.Info("health checks running", "mode", healthMode)
	}
	bgpNode, err := startBGP(bg, cfg, ctl, &notReady, log)
	if err != nil {
		return err
	}
	defer bgpNode.close()

	tracer, stopTracer, err := startTracer(ctx, cfg.tracerConfig, log)
	if err != nil {
		return err
	}
	defer stopTracer()
	srv, err := api.New(api.Options{
		Controller: ctl, Token: token, Build: buildinfo.Get(), StateFile: store.Path(), Logger: log, Tracer: tracer,
		Datapath: func() map[string]any {
			return map[string]any{
				"interface": att.Interface, "xdp_mode": att.Mode.String(), "fallback": att.Fallback,
				"pin_dir": cfg.PinDir, "recovered": b.Recovered(), "took_over_link": att.Reused,
				"limits":        map[string]uint32{"max_vips": cfg.MaxVIPs, "max_reals": cfg.MaxReals, "max_flows": cfg.MaxFlows},
				"health_checks": healthMode, "health_max_concurrent": ctl.HealthMaxConcurrent(),
			}
		},
		BGP: bgpNode.apiBGP(), MaxEventStreams: cfg.MaxEventStreams, TrustedProxies: cfg.mustTrustedProxies(),
		UI: ui.Handler(),
		Ready: func() error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second}
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()
	log.Info("API listening", "address", ln.Addr().String(), "tls", lv.tls != nil, "token_file", cfg.TokenFile)
	metricsSrv := serveMetrics(metricsLn, srv, log)
	// The watchdog is fed while the controller answers (its lock is free).
	notifyReady(bg, func() error { ctl.VIPs(); return nil }, log)

	go ctl.RunRates(bg, 5*time.Second)
	go reconcileLoop(bg, ctl, cfg.ReconcileInterval, lv.reconcile, setReady, log)
	watchReload(bg, cfg, load, lv, log)

	select {
	case err := <-served:
		return fmt.Errorf("API server: %w", err)
	case <-ctx.Done():
	}
	notifyStopping()
	bgpNode.close() // withdraw first: the routers move traffic away while we still forward
	log.Info("shutting down: draining API requests")
	shutdownCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shutdownCtx)
	}
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		log.Warn("API shutdown", "err", err)
	}
	return nil
}

// reconcileLoop repairs drift between the datapath and the desired state
// every interval (0: never), which a reload may change.
func reconcileLoop(ctx context.Context, ctl *control.Controller, every time.Duration, changes <-chan time.Duration, setReady func(error), log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	reset := func() {
		t.Stop()
		if every > 0 {
			t.Reset(every)
		}
	}
	reset()
	for {
		select {
		case <-ctx.Done():
			return
		case every = <-changes:
			reset()
		case <-t.C:
			drifts, err := ctl.Reconcile()
			if len(drifts) > 0 {
				log.Warn("repaired drift", "vips", len(drifts))
			}
			setReady(err)
		}
	}
}

// loadOrCreateToken reads the API token, creating a random one (readable
// by root only) on first start.
func loadOrCreateToken(path string, log *slog.Logger) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", fmt.Errorf("create token directory: %w", err)
		}
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		token := hex.EncodeToString(raw)
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write token file: %w", err)
		}
		log.Info("created API token", "token_file", path)
		return token, nil
	}
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("token file %s is empty: put a token in it or delete it to have one generated", path)
	}
	if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
		log.Warn("token file is readable by other users: chmod 600 it", "token_file", path, "mode", info.Mode().Perm().String())
	}
	return token, nil
}
