package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestPlainListenNeedsConsent: the API listens in plain HTTP on loopback
// as before; on any other address only with --insecure-listen.
func TestPlainListenNeedsConsent(t *testing.T) {
	for _, tc := range []struct {
		yaml   string
		args   []string
		refuse bool
	}{
		{"", []string{"--interface", "eth0"}, false},
		{"", []string{"--interface", "eth0", "--listen", "127.0.0.1:9000"}, false},
		{"", []string{"--interface", "eth0", "--listen", "127.3.4.5:9000"}, false},
		{"", []string{"--interface", "eth0", "--listen", "[::1]:9000"}, false},
		{"", []string{"--interface", "eth0", "--listen", "0.0.0.0:8080"}, true},
		{"", []string{"--interface", "eth0", "--listen", "[::]:8080"}, true},
		{"", []string{"--interface", "eth0", "--listen", "192.0.2.10:8080"}, true},
		{"", []string{"--interface", "eth0", "--listen", "[::ffff:10.0.0.1]:8080"}, true},
		{"", []string{"--interface", "eth0", "--listen", "0.0.0.0:8080", "--insecure-listen"}, false},
		{"interface: eth0\nlisten: 0.0.0.0:8080\n", nil, true},
		{"interface: eth0\nlisten: 0.0.0.0:8080\ninsecure_listen: true\n", nil, false},
	} {
		t.Run(strings.Join(tc.args, " ")+tc.yaml, func(t *testing.T) {
			_, err := parseServe(t, tc.yaml, tc.args...)
			switch {
			case tc.refuse && (err == nil || !strings.Contains(err.Error(), "not a loopback address") || !strings.Contains(err.Error(), "--insecure-listen")):
				t.Errorf("got %v, want a refusal naming --insecure-listen", err)
			case !tc.refuse && err != nil:
				t.Errorf("refused: %v", err)
			}
		})
	}
}

func TestAPIFlags(t *testing.T) {
	cfg, err := parseServe(t, "interface: eth0\ntrusted_proxies: [10.0.0.0/8]\n", "--trusted-proxy", "192.0.2.1", "--trusted-proxy", "2001:db8::/32", "--max-event-streams", "5")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/32")}
	if got := cfg.mustTrustedProxies(); !slices.Equal(got, want) || cfg.MaxEventStreams != 5 {
		t.Errorf("proxies %v, streams %d", got, cfg.MaxEventStreams)
	}
	if cfg, _ := parseServe(t, "interface: eth0\n"); cfg.MaxEventStreams != 64 || len(cfg.TrustedProxies) != 0 {
		t.Errorf("defaults: %+v", cfg.apiConfig)
	}
	for _, args := range [][]string{{"--trusted-proxy", "proxy.example"}, {"--max-event-streams", "0"}} {
		if _, err := parseServe(t, "", append([]string{"--interface", "eth0"}, args...)...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
