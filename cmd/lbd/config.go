package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control/bgp"
	"github.com/lbd-dev/lbd/control/fleet"
	"github.com/lbd-dev/lbd/hostaddr"
)

// serveConfig is lbd serve's configuration: a YAML file (--config) with
// flags on top (a flag given on the command line wins over the file).
type serveConfig struct {
	Interface string `yaml:"interface"`
	XDPMode   string `yaml:"xdp_mode"` // auto | native | generic
	// GatewayMAC is where encapsulated packets go; empty: the MAC of the
	// default route's gateway, from the neighbour table.
	GatewayMAC string `yaml:"gateway_mac"`
	Listen     string `yaml:"listen"`
	// MetricsListen is an optional read-only listener for /metrics
	// alone, without the token; it may bind a non-loopback address.
	MetricsListen string `yaml:"metrics_listen"`
	TokenFile     string `yaml:"token_file"`
	// TLSCertFile and TLSKeyFile serve the API over HTTPS (re-read on
	// SIGHUP); both or neither.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	StateDir    string `yaml:"state_dir"`
	PinDir      string `yaml:"pin_dir"`

	MaxVIPs  uint32 `yaml:"max_vips"`
	MaxReals uint32 `yaml:"max_reals"`
	MaxFlows uint32 `yaml:"max_flows"`

	MTU                 uint16        `yaml:"mtu"`
	EncapSourceV4       string        `yaml:"encap_source_v4"`
	EncapSourceV6       string        `yaml:"encap_source_v6"`
	GUESourceV4         string        `yaml:"gue_source_v4"`
	GUESourceV6         string        `yaml:"gue_source_v6"`
	GUEPort             uint16        `yaml:"gue_port"`
	FragmentPolicy      string        `yaml:"fragment_policy"`      // drop | pass
	UnbalanceablePolicy string        `yaml:"unbalanceable_policy"` // drop | pass
	UDPFlowTimeout      time.Duration `yaml:"udp_flow_timeout"`
	NewFlowRate         uint32        `yaml:"new_flow_rate"`
	// FlowSearchRate is accepted so that old configurations load; it
	// changes nothing (it bounded searches of the other CPUs' connection
	// tables, and the table is shared by all CPUs now).
	FlowSearchRate uint32 `yaml:"flow_search_rate"`

	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
	// HealthChecks runs the VIPs' health checks (each VIP says how).
	HealthChecks        bool   `yaml:"health_checks"`
	HealthMaxConcurrent int    `yaml:"health_max_concurrent"`
	LogLevel            string `yaml:"log_level"`  // debug | info | warn | error
	LogFormat           string `yaml:"log_format"` // text | json
	// Detach removes the XDP program and all pins when lbd exits (default:
	// keep forwarding, so that a restart is hitless).
	Detach bool `yaml:"detach"`
	// AllowPrivatePins starts lbd although its pins live in a bpf
	// filesystem private to its mount namespace (ip netns exec), where
	// they go away when lbd exits: see xdp.PinsOutliveMountNamespace.
	AllowPrivatePins bool `yaml:"allow_private_pins"`
	// BGP announces the VIPs to routers (control/bgp); off when empty.
	BGP bgp.Settings `yaml:"bgp"`
	// Fleet keeps the desired state in etcd, shared by many nodes
	// (control/fleet); off (the state file) by default.
	Fleet fleet.Settings `yaml:"fleet"`

	tracerConfig `yaml:",inline"`
	apiConfig    `yaml:",inline"`
}

func defaultServeConfig() serveConfig {
	l := xdp.DefaultLimits()
	c := xdp.DefaultConfig()
	return serveConfig{
		XDPMode: "auto", Listen: "127.0.0.1:8080",
		TokenFile: "/var/lib/lbd/token", StateDir: "/var/lib/lbd", PinDir: "/sys/fs/bpf/lbd",
		MaxVIPs: l.MaxVIPs, MaxReals: l.MaxReals, MaxFlows: l.MaxFlows,
		MTU: c.MTU, EncapSourceV4: c.EncapSourceV4.String(), EncapSourceV6: c.EncapSourceV6.String(),
		GUEPort: c.GUEPort, FragmentPolicy: c.FragmentPolicy.String(), UnbalanceablePolicy: c.UnbalanceablePolicy.String(),
		UDPFlowTimeout: c.UDPFlowTimeout, NewFlowRate: c.NewFlowRate, FlowSearchRate: 10000, ReconcileInterval: 30 * time.Second,
		HealthChecks: true, HealthMaxConcurrent: 64,
		LogLevel: "info", LogFormat: "text",
		BGP:          bgp.DefaultSettings(),
		Fleet:        fleet.DefaultSettings(),
		tracerConfig: defaultTracerConfig(),
		apiConfig:    defaultAPIConfig(),
	}
}

// bindFlags declares the flags, with the defaults as their defaults.
func (c *serveConfig) bindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Interface, "interface", c.Interface, "interface to attach the XDP balancer to (required)")
	fs.StringVar(&c.XDPMode, "xdp-mode", c.XDPMode, "XDP mode: auto (native, else generic with a warning), native or generic")
	fs.StringVar(&c.GatewayMAC, "gateway-mac", c.GatewayMAC, "MAC address encapsulated packets are sent to (default: the default route's gateway, from the neighbour table)")
	fs.StringVar(&c.Listen, "listen", c.Listen, "address of the REST API")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "also serve /metrics (read-only, no token) on this ip:port, e.g. 0.0.0.0:9100 for a remote Prometheus (default: off)")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", c.TLSCertFile, "serve the API over HTTPS with this PEM certificate (chain) file; re-read on SIGHUP")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", c.TLSKeyFile, "PEM private key of --tls-cert-file")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "bearer token file of the API (created with a random token if missing)")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory of the desired state file")
	fs.StringVar(&c.PinDir, "pin-dir", c.PinDir, "bpffs directory for the maps and the XDP link")
	fs.Uint32Var(&c.MaxVIPs, "max-vips", c.MaxVIPs, "VIP capacity (fixed while pins exist)")
	fs.Uint32Var(&c.MaxReals, "max-reals", c.MaxReals, "real capacity, counted per VIP: a real in two VIPs takes two (fixed while pins exist)")
	fs.Uint32Var(&c.MaxFlows, "max-flows", c.MaxFlows, "connection table entries (fixed while pins exist)")
	fs.Uint16Var(&c.MTU, "mtu", c.MTU, "largest packet (IP) the balancer sends after encapsulation")
	fs.StringVar(&c.EncapSourceV4, "encap-source-v4", c.EncapSourceV4, "prefix of the outer IPv4 source address of IP-in-IP packets (host bits from the flow hash)")
	fs.StringVar(&c.EncapSourceV6, "encap-source-v6", c.EncapSourceV6, "prefix of the outer IPv6 source address")
	fs.StringVar(&c.GUESourceV4, "gue-source-v4", c.GUESourceV4, "outer IPv4 source of GUE packets (this node's address)")
	fs.StringVar(&c.GUESourceV6, "gue-source-v6", c.GUESourceV6, "outer IPv6 source of GUE packets")
	fs.Uint16Var(&c.GUEPort, "gue-port", c.GUEPort, "UDP destination port of GUE packets")
	fs.StringVar(&c.FragmentPolicy, "fragment-policy", c.FragmentPolicy, "IP fragments to a VIP: drop or pass")
	fs.StringVar(&c.UnbalanceablePolicy, "unbalanceable-policy", c.UnbalanceablePolicy, "other traffic to a VIP address that cannot be balanced: drop or pass")
	fs.DurationVar(&c.UDPFlowTimeout, "udp-flow-timeout", c.UDPFlowTimeout, "idle time after which a UDP flow follows the ring again")
	fs.Uint32Var(&c.NewFlowRate, "new-flow-rate", c.NewFlowRate, "most new flows each CPU records in the connection table per second (0: no cap); above it new flows follow the ring unrecorded, so a flood of spoofed packets cannot churn the table faster")
	fs.Uint32Var(&c.FlowSearchRate, "flow-search-rate", c.FlowSearchRate, "accepted, changes nothing (the connection table is shared by all CPUs)")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", c.ReconcileInterval, "how often to check the datapath against the desired state (0: never)")
	fs.BoolVar(&c.HealthChecks, "health-checks", c.HealthChecks, "run the VIPs' health checks (through the tunnel to each real when the health-check encapsulation can be attached)")
	fs.IntVar(&c.HealthMaxConcurrent, "health-max-concurrent", c.HealthMaxConcurrent, "most health probes in flight at once")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.BoolVar(&c.Detach, "detach", c.Detach, "on exit, detach the XDP program and remove the pins (default: keep forwarding for a hitless restart)")
	fs.BoolVar(&c.AllowPrivatePins, "allow-private-pins", c.AllowPrivatePins, "start even if the pins would live only in this mount namespace (as under `ip netns exec`) and vanish, with the XDP program, when lbd exits (use `nsenter --net` instead)")
	c.BGP.BindFlags(fs)
	c.Fleet.BindFlags(fs)
	c.tracerConfig.bindFlags(fs)
	c.apiConfig.bindFlags(fs)
}

// loadServeConfig builds the configuration, in one place and in this
// order, each layer over the one before: defaults, the YAML file if
// given, LBD_* environment variables (LBD_LOG_LEVEL for --log-level: the
// flag's name in upper case with _ for -), then the flags set on the
// command line. It is a two-pass parse: fs was parsed into flagged; a
// second flag set with the same flags is bound to the result and given
// the environment's and then fs's values, so the list of settings lives
// only in bindFlags.
func loadServeConfig(path string, fs *pflag.FlagSet, flagged *serveConfig) (serveConfig, error) {
	return loadServeConfigEnv(path, fs, os.LookupEnv)
}

func loadServeConfigEnv(path string, fs *pflag.FlagSet, env func(string) (string, bool)) (serveConfig, error) {
	cfg := defaultServeConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	over := pflag.NewFlagSet("layers", pflag.ContinueOnError)
	cfg.bindFlags(over)
	var err error
	over.VisitAll(func(f *pflag.Flag) {
		name := "LBD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env(name); ok && err == nil && !fs.Changed(f.Name) {
			if serr := setFlag(f, []string{v}); serr != nil {
				err = fmt.Errorf("environment %s=%q: %w", name, v, serr)
			}
		}
	})
	if err != nil {
		return cfg, err
	}
	fs.Visit(func(src *pflag.Flag) {
		if dst := over.Lookup(src.Name); dst != nil && err == nil {
			vals := []string{src.Value.String()}
			if sv, ok := src.Value.(pflag.SliceValue); ok {
				vals = sv.GetSlice()
			}
			if serr := setFlag(dst, vals); serr != nil {
				err = fmt.Errorf("--%s: %w", src.Name, serr)
			}
		}
	})
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

// setFlag gives a flag its values: a list flag (--bgp-peer) is replaced
// whole (an environment variable holds one value), others take one.
func setFlag(f *pflag.Flag, vals []string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.Replace(vals)
	}
	return f.Value.Set(vals[0])
}

func (c serveConfig) validate() error {
	if c.Interface == "" {
		return errors.New("no interface: pass --interface (or interface: in the config file)")
	}
	if _, err := xdp.ParseAttachMode(c.XDPMode); err != nil {
		return err
	}
	if path, ok := strings.CutPrefix(c.Listen, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("listen address %q: a unix socket needs an absolute path, e.g. unix:/run/lbd/api.sock", c.Listen)
		}
	} else if _, err := netip.ParseAddrPort(c.Listen); err != nil {
		return fmt.Errorf("listen address %q: want ip:port, e.g. 127.0.0.1:8080, or unix:/run/lbd/api.sock", c.Listen)
	}
	if c.MetricsListen != "" {
		if _, err := netip.ParseAddrPort(c.MetricsListen); err != nil {
			return fmt.Errorf("metrics listen address %q: want ip:port, e.g. 0.0.0.0:9100", c.MetricsListen)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("tls_cert_file and tls_key_file (--tls-cert-file, --tls-key-file): set both or neither")
	}
	if c.TokenFile == "" || c.StateDir == "" || c.PinDir == "" {
		return errors.New("token file, state directory and pin directory must be set")
	}
	if _, err := c.datapathConfig(nil); err != nil {
		return err
	}
	if c.HealthMaxConcurrent < 1 {
		return fmt.Errorf("health max concurrent %d: must be at least 1", c.HealthMaxConcurrent)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("log level %q: use debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("log format %q: use text or json", c.LogFormat)
	}
	if err := c.BGP.Validate(); err != nil {
		return err
	}
	if err := c.Fleet.Validate(); err != nil {
		return err
	}
	if err := c.apiConfig.validate(c.Listen, c.TLSCertFile != ""); err != nil {
		return err
	}
	return c.tracerConfig.validate()
}

func (c serveConfig) limits() xdp.Limits {
	return xdp.Limits{MaxVIPs: c.MaxVIPs, MaxReals: c.MaxReals, MaxFlows: c.MaxFlows}
}

// datapathConfig turns the settings into the datapath's configuration,
// with gw as the gateway MAC (nil while validating).
func (c serveConfig) datapathConfig(gw net.HardwareAddr) (xdp.Config, error) {
	d := xdp.DefaultConfig()
	d.GatewayMAC = gw
	d.MTU = c.MTU
	d.GUEPort = c.GUEPort
	d.UDPFlowTimeout = c.UDPFlowTimeout
	d.NewFlowRate = c.NewFlowRate
	var err error
	if d.EncapSourceV4, err = netip.ParsePrefix(c.EncapSourceV4); err != nil || !d.EncapSourceV4.Addr().Is4() {
		return d, fmt.Errorf("encap source v4 %q: want an IPv4 prefix such as 172.16.0.0/16", c.EncapSourceV4)
	}
	if d.EncapSourceV6, err = netip.ParsePrefix(c.EncapSourceV6); err != nil || !d.EncapSourceV6.Addr().Is6() {
		return d, fmt.Errorf("encap source v6 %q: want an IPv6 prefix such as 100::/64", c.EncapSourceV6)
	}
	if c.GUESourceV4 != "" {
		if d.GUESourceV4, err = netip.ParseAddr(c.GUESourceV4); err != nil || !d.GUESourceV4.Is4() {
			return d, fmt.Errorf("GUE source v4 %q: want an IPv4 address", c.GUESourceV4)
		}
	}
	if c.GUESourceV6 != "" {
		if d.GUESourceV6, err = netip.ParseAddr(c.GUESourceV6); err != nil || !d.GUESourceV6.Is6() {
			return d, fmt.Errorf("GUE source v6 %q: want an IPv6 address", c.GUESourceV6)
		}
	}
	if d.FragmentPolicy, err = parsePolicy("fragment policy", c.FragmentPolicy); err != nil {
		return d, err
	}
	if d.UnbalanceablePolicy, err = parsePolicy("unbalanceable policy", c.UnbalanceablePolicy); err != nil {
		return d, err
	}
	return d, nil
}

func parsePolicy(what, s string) (xdp.Policy, error) {
	switch s {
	case "drop":
		return xdp.PolicyDrop, nil
	case "pass":
		return xdp.PolicyPass, nil
	}
	return 0, fmt.Errorf("%s %q: use drop or pass", what, s)
}

// gatewayMAC is the configured gateway MAC or, if none is configured, the
// default route's gateway's (hostaddr.GatewayMAC): where Katran-style
// XDP_TX sends encapsulated packets.
func gatewayMAC(cfg serveConfig) (net.HardwareAddr, error) {
	if cfg.GatewayMAC != "" {
		mac, err := net.ParseMAC(cfg.GatewayMAC)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("gateway MAC %q: want an Ethernet address such as 02:00:00:00:00:01", cfg.GatewayMAC)
		}
		return mac, nil
	}
	mac, err := hostaddr.GatewayMAC()
	switch {
	case errors.Is(err, hostaddr.ErrNoDefaultRoute):
		return nil, fmt.Errorf("%w: pass --gateway-mac", err)
	case errors.Is(err, hostaddr.ErrNoNeighbour):
		return nil, fmt.Errorf("%w or pass --gateway-mac", err)
	}
	return mac, err
}
