package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	"github.com/lbd-dev/lbd/bpf/tc"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/bgp"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/hostaddr"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/lb"
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

// runServe runs the daemon until ctx ends: it reads as the list of what
// the daemon starts, in order; the steps are below it.
// lv and load are for SIGHUP reloads (reload.go); load may be nil.
func runServe(ctx context.Context, cfg serveConfig, log *slog.Logger, lv *live, load func() (serveConfig, error)) (err error) {
	st, err := prepareServe(cfg, log) // all that can fail before anything is created
	if err != nil {
		return err
	}
	defer st.locks.release()
	// Listen before touching the datapath: a busy port is the likeliest
	// mistake and should change nothing.
	lns, err := openListeners(cfg, lv, log)
	if err != nil {
		return err
	}
	defer lns.close()
	dp, err := openDatapath(cfg, st, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, dp.close(cfg, log)) }()
	fl, err := openFleet(cfg, st.store, log)
	if err != nil {
		return err
	}
	defer fl.close()
	ctl := newController(cfg, st, fl.saver(st.store), dp, log)
	lv.ctl = ctl
	var ready readiness
	ready.set(errors.New("starting"))
	drifts, rerr := ctl.Reconcile()
	log.Info("reconciled desired state into the datapath", "vips", len(st.desired), "changed", len(drifts))
	if rerr != nil {
		log.Error("reconcile failed; serving anyway, the next reconcile retries", "err", rerr)
	}
	if err := dp.attach(cfg, log); err != nil {
		return err
	}
	ready.set(rerr)

	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	fl.start(bg, ctl, log) // before the health checks: with quorum health, probes only observe
	healthMode, stopHealth := startHealth(bg, cfg, st.gw, ctl, log)
	defer stopHealth()
	bgpNode, err := bgp.StartNode(bg, cfg.BGP, ctl, bgp.NodeOptions{Interface: cfg.Interface,
		DrainFile: filepath.Join(cfg.StateDir, "drained"), Ready: fl.hold(ready.err), Logger: log})
	if err != nil {
		return err
	}
	defer bgpNode.Close()
	fl.setBGP(bgpNode)
	tracer, stopTracer, err := startTracer(ctx, cfg.tracerConfig, log)
	if err != nil {
		return err
	}
	defer stopTracer()
	srv, err := api.New(api.Options{
		Controller: ctl, Token: st.token, Build: buildinfo.Get(), StateFile: st.store.Path(), Logger: log, Tracer: tracer,
		Datapath: func() map[string]any { return dp.info(cfg, healthMode, ctl) },
		BGP:      apiBGP(bgpNode), MaxEventStreams: cfg.MaxEventStreams, TrustedProxies: cfg.mustTrustedProxies(),
		UI: ui.Handler(), Ready: ready.err, Fleet: fl.api(),
	})
	if err != nil {
		return err
	}
	servers := lns.serve(srv, cfg, lv, log)
	// The watchdog is fed while the controller answers (its lock is free).
	notifyReady(bg, func() error { ctl.VIPs(); return nil }, log)
	go ctl.RunRates(bg, 5*time.Second)
	go reconcileLoop(bg, ctl, cfg.ReconcileInterval, lv.reconcile, ready.set, log)
	watchReload(bg, cfg, load, lv, log)

	select {
	case err := <-servers.served:
		return fmt.Errorf("API server: %w", err)
	case <-ctx.Done():
	}
	notifyStopping()
	bgpNode.Close() // withdraw first: the routers move traffic away while we still forward
	servers.shutdown(log)
	return nil
}

// readiness is why the daemon is not ready (nil: ready), for the API's
// readiness check and the BGP announcer.
type readiness struct{ p atomic.Pointer[error] }

func (r *readiness) set(e error) {
	if e == nil {
		r.p.Store(nil)
	} else {
		r.p.Store(&e)
	}
}

func (r *readiness) err() error {
	if p := r.p.Load(); p != nil {
		return *p
	}
	return nil
}

// serveState is what lbd serve reads and checks before it creates
// anything.
type serveState struct {
	locks    *daemonLocks
	token    string
	store    *control.Store
	desired  map[lb.VIPKey]*control.VIP
	gw       net.HardwareAddr
	dpConfig xdp.Config
}

// prepareServe checks the interface (a typo must fail before anything is
// created), takes the daemon's locks, and reads the token, the desired
// state and the gateway.
func prepareServe(cfg serveConfig, log *slog.Logger) (st serveState, err error) {
	ifc, err := xdp.LookupInterface(cfg.Interface)
	if err != nil {
		return st, err
	}
	if st.locks, err = lockDaemon(cfg, ifc); err != nil {
		return st, err
	}
	defer func() {
		if err != nil {
			st.locks.release()
		}
	}()
	if st.token, err = loadOrCreateToken(cfg.TokenFile, log); err != nil {
		return st, err
	}
	if st.store, err = control.NewStore(cfg.StateDir); err != nil {
		return st, err
	}
	if st.desired, err = st.store.Load(); err != nil {
		return st, err
	}
	if st.gw, err = gatewayMAC(cfg); err != nil {
		return st, err
	}
	st.dpConfig, err = cfg.datapathConfig(st.gw)
	return st, err
}

// listeners are the API's and the metrics' sockets, open before the
// datapath is touched.
type listeners struct {
	raw, api, metrics net.Listener // raw: the API's socket under TLS
}

func openListeners(cfg serveConfig, lv *live, log *slog.Logger) (*listeners, error) {
	raw, err := listenAPI(cfg.Listen) // metrics_listen.go: ip:port or unix:PATH
	if err != nil {
		return nil, fmt.Errorf("listen for the API on %s: %w", cfg.Listen, err)
	}
	l := &listeners{raw: raw}
	cfg.warnInsecureListen(cfg.Listen, cfg.TLSCertFile != "", log)
	if l.api, lv.tls, err = listenTLS(raw, cfg); err != nil { // tls.go
		l.close()
		return nil, err
	}
	if l.metrics, err = listenMetrics(cfg); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func (l *listeners) close() {
	closeListener(l.metrics)
	l.raw.Close()
}

// httpServers are the API's and the metrics' HTTP servers.
type httpServers struct {
	api, metrics *http.Server
	served       chan error // the API server's end
}

// serve starts serving the API (and /metrics on its own listener).
func (l *listeners) serve(srv *api.Server, cfg serveConfig, lv *live, log *slog.Logger) *httpServers {
	s := &httpServers{served: make(chan error, 1),
		api: &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second}}
	go func() { s.served <- s.api.Serve(l.api) }()
	log.Info("API listening", "address", l.api.Addr().String(), "tls", lv.tls != nil, "token_file", cfg.TokenFile)
	s.metrics = serveMetrics(l.metrics, srv, log)
	return s
}

// shutdown drains the API's requests (10 s at most).
func (s *httpServers) shutdown(log *slog.Logger) {
	log.Info("shutting down: draining API requests")
	ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	if s.metrics != nil {
		_ = s.metrics.Shutdown(ctx)
	}
	if err := s.api.Shutdown(ctx); err != nil {
		log.Warn("API shutdown", "err", err)
	}
}

// datapath is the XDP balancer as lbd serve runs it.
type datapath struct {
	b    *xdp.Balancer
	pins pinDir
	att  xdp.Attachment // zero until attach
}

// openDatapath opens (or takes over) the pinned balancer and configures it.
func openDatapath(cfg serveConfig, st serveState, log *slog.Logger) (*datapath, error) {
	pins, err := preparePinDir(cfg, st.locks, log)
	if err != nil {
		return nil, err
	}
	b, err := xdp.Open(xdp.Options{Limits: cfg.limits(), PinDir: cfg.PinDir})
	if err != nil {
		return nil, err
	}
	d := &datapath{b: b, pins: pins}
	log.Info("datapath opened", "pin_dir", cfg.PinDir, "recovered", b.Recovered(), "limits", fmt.Sprintf("%+v", cfg.limits()))
	if err := b.SetConfig(st.dpConfig); err != nil {
		return d, errors.Join(err, d.close(cfg, log))
	}
	return d, nil
}

// attach attaches the balancer to the interface (after the first
// reconcile, so that it forwards by the desired state from its first
// packet).
func (d *datapath) attach(cfg serveConfig, log *slog.Logger) (err error) {
	mode, _ := xdp.ParseAttachMode(cfg.XDPMode)
	if d.att, err = d.b.Attach(cfg.Interface, mode); err != nil {
		return err
	}
	if d.att.Fallback != "" {
		log.Warn("native XDP unavailable, running in generic mode (slower)", "interface", d.att.Interface, "reason", d.att.Fallback)
	}
	log.Info("XDP balancer attached", "interface", d.att.Interface, "mode", d.att.Mode, "took_over_pinned_link", d.att.Reused)
	return nil
}

// close leaves the balancer forwarding for the next lbd serve, or with
// --detach removes it and its pins.
func (d *datapath) close(cfg serveConfig, log *slog.Logger) error {
	if !cfg.Detach {
		d.b.Close()
		log.Info(d.pins.exitLine(d.att), "interface", cfg.Interface, "pin_dir", cfg.PinDir)
		return nil
	}
	if derr := d.b.Detach(cfg.Interface); derr != nil {
		log.Warn("detach", "err", derr)
	}
	d.b.Close()
	err := xdp.Cleanup(cfg.PinDir)
	log.Info("detached and removed the pins", "pin_dir", cfg.PinDir)
	return err
}

// info is the datapath as GET /api/v1/status shows it.
func (d *datapath) info(cfg serveConfig, healthMode string, ctl *control.Controller) map[string]any {
	return map[string]any{
		"interface": d.att.Interface, "xdp_mode": d.att.Mode.String(), "fallback": d.att.Fallback,
		"pin_dir": cfg.PinDir, "recovered": d.b.Recovered(), "took_over_link": d.att.Reused,
		"limits":        map[string]uint32{"max_vips": cfg.MaxVIPs, "max_reals": cfg.MaxReals, "max_flows": cfg.MaxFlows},
		"health_checks": healthMode, "health_max_concurrent": ctl.HealthMaxConcurrent(),
	}
}

// newController makes the controller over the opened datapath.
func newController(cfg serveConfig, st serveState, saver control.Saver, dp *datapath, log *slog.Logger) *control.Controller {
	ctl := control.New(dp.b, saver, st.desired, log)
	ctl.SetDatapathConfig(st.dpConfig)
	ctl.SetGUESources(st.dpConfig.GUESourceV4.IsValid(), st.dpConfig.GUESourceV6.IsValid())
	if dp.b.Recovered() {
		// The pinned counters went on: take back whose each real index
		// is, and the removed reals' totals, so that VIPs' totals still
		// add up. With a fresh datapath both start anew.
		saved, err := st.store.LoadCounters()
		if err != nil {
			log.Warn("counters file unreadable: removed reals' totals are lost", "err", err)
		} else {
			ctl.RestoreCounters(saved)
		}
	}
	return ctl
}

// startHealth runs the VIPs' health checks when configured, through the
// health-check tunnel when it can be attached (directly otherwise). It
// returns the mode for the status and what stops the tunnel.
func startHealth(ctx context.Context, cfg serveConfig, gw net.HardwareAddr, ctl *control.Controller, log *slog.Logger) (mode string, stop func()) {
	if !cfg.HealthChecks {
		return "off", func() {}
	}
	var tunnel control.TunnelProbes
	stop = func() {}
	hc, err := attachHCTunnel(cfg, gw)
	if err != nil {
		mode = "direct (no tunnel: " + err.Error() + ")"
		log.Warn("health checks probe the reals' own addresses: the health-check tunnel is unavailable", "reason", err)
	} else {
		tunnel, stop = hc, hc.Close
		mode = "tunnel (" + hc.Attachment.String() + ")"
	}
	ctl.StartHealth(ctx, health.NetProber{}, cfg.HealthMaxConcurrent, tunnel)
	log.Info("health checks running", "mode", mode)
	return mode, stop
}

// attachHCTunnel attaches the health-check encapsulation to the
// interface's egress, with this node's addresses as outer sources.
func attachHCTunnel(cfg serveConfig, gw net.HardwareAddr) (*tc.HCTunnel, error) {
	src4, src6, err := hostaddr.Of(cfg.Interface)
	if err != nil {
		return nil, err
	}
	if !src4.IsValid() && !src6.IsValid() {
		return nil, fmt.Errorf("%s has no address to send health-check tunnels from", cfg.Interface)
	}
	return tc.AttachHCTunnel(cfg.Interface, cfg.MaxReals, tc.HCConfig{SourceV4: src4, SourceV6: src6, GatewayMAC: gw})
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
