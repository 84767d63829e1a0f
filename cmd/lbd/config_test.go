package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func parseServe(t *testing.T, yaml string, args ...string) (serveConfig, error) {
	t.Helper()
	path := ""
	if yaml != "" {
		path = filepath.Join(t.TempDir(), "lbd.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	flagged := defaultServeConfig()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	flagged.bindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return loadServeConfig(path, fs, &flagged)
}

func TestConfigFileThenFlags(t *testing.T) {
	cfg, err := parseServe(t, "interface: eth1\nlisten: 127.0.0.1:9000\nmax_flows: 1000\nfragment_policy: pass\n",
		"--listen", "127.0.0.1:9100", "--max-vips", "7")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Interface != "eth1" || cfg.Listen != "127.0.0.1:9100" || cfg.MaxFlows != 1000 || cfg.MaxVIPs != 7 || cfg.FragmentPolicy != "pass" {
		t.Errorf("file, then flags that were set: %+v", cfg)
	}
	if cfg.MaxReals != defaultServeConfig().MaxReals || cfg.PinDir != "/sys/fs/bpf/lbd" {
		t.Errorf("defaults lost: %+v", cfg)
	}
}

func TestConfigErrorsSayWhatToFix(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml string
		args []string
		want string
	}{
		"no interface":   {"", nil, "pass --interface"},
		"unknown key":    {"interface: eth0\nmax_flow: 3\n", nil, "field max_flow not found"},
		"bad mode":       {"", []string{"--interface", "eth0", "--xdp-mode", "fast"}, "use auto, native or generic"},
		"bad listen":     {"", []string{"--interface", "eth0", "--listen", "localhost"}, "want ip:port"},
		"bad policy":     {"", []string{"--interface", "eth0", "--fragment-policy", "keep"}, "use drop or pass"},
		"bad encap src":  {"", []string{"--interface", "eth0", "--encap-source-v4", "100::/64"}, "want an IPv4 prefix"},
		"bad log format": {"", []string{"--interface", "eth0", "--log-format", "xml"}, "use text or json"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseServe(t, tc.yaml, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestGatewayMACFlag(t *testing.T) {
	mac, err := gatewayMAC(serveConfig{GatewayMAC: "02:00:00:00:00:01"})
	if err != nil || mac.String() != "02:00:00:00:00:01" {
		t.Errorf("%v %v", mac, err)
	}
	if _, err := gatewayMAC(serveConfig{GatewayMAC: "02:00"}); err == nil || !strings.Contains(err.Error(), "want an Ethernet address") {
		t.Errorf("bad MAC: %v", err)
	}
}

// TestConfigPrecedence: flags > LBD_* environment > file > defaults, for
// scalars and list flags alike.
func TestConfigPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lbd.yaml")
	if err := os.WriteFile(path, []byte("interface: eth1\nlog_level: warn\nmtu: 1400\nlisten: 127.0.0.1:9000\nreconcile_interval: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LBD_LOG_LEVEL": "error", "LBD_MTU": "1300", "LBD_RECONCILE_INTERVAL": "5s",
		"LBD_BGP_PEER": "192.0.2.9,65009", "LBD_HEALTH_CHECKS": "false"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	flagged := defaultServeConfig()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	flagged.bindFlags(fs)
	if err := fs.Parse([]string{"--mtu", "1200", "--bgp-as", "65001", "--bgp-router-id", "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadServeConfigEnv(path, fs, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MTU != 1200 || cfg.LogLevel != "error" || cfg.ReconcileInterval != 5*time.Second || cfg.HealthChecks ||
		cfg.Listen != "127.0.0.1:9000" || cfg.Interface != "eth1" || cfg.MaxVIPs != defaultServeConfig().MaxVIPs ||
		cfg.BGP.ASN != 65001 || len(cfg.BGP.PeerFlags()) != 1 || cfg.BGP.PeerFlags()[0] != "192.0.2.9,65009" {
		t.Errorf("precedence: %+v", cfg)
	}
	env["LBD_MTU"] = "big"
	fs = pflag.NewFlagSet("serve", pflag.ContinueOnError)
	flagged.bindFlags(fs)
	if _, err := loadServeConfigEnv(path, fs, lookup); err == nil || !strings.Contains(err.Error(), `LBD_MTU="big"`) {
		t.Errorf("bad environment value: %v", err)
	}
}

// TestNewFlowRateConfig: --new-flow-rate (new_flow_rate in the file)
// reaches the datapath's configuration; the default is no cap, and the
// retired flow_search_rate is still accepted and changes nothing.
func TestNewFlowRateConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lbd.yaml")
	if err := os.WriteFile(path, []byte("interface: eth1\nnew_flow_rate: 20000\nflow_search_rate: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want uint32
	}{
		{nil, 20000},
		{[]string{"--new-flow-rate", "7"}, 7},
	} {
		c := defaultServeConfig()
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		c.bindFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadServeConfigEnv(path, fs, func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		d, err := cfg.datapathConfig(nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.NewFlowRate != tc.want {
			t.Errorf("%v: datapath new flow rate %d, want %d", tc.args, d.NewFlowRate, tc.want)
		}
	}
	d, err := defaultServeConfig().datapathConfig(nil)
	if err != nil || d.NewFlowRate != 0 {
		t.Errorf("default: new flow rate %d (%v), want 0 (no cap)", d.NewFlowRate, err)
	}
}
