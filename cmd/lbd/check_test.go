package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkRun runs `lbd serve --check` on a config file (and a state
// directory holding state, when given).
func checkRun(t *testing.T, yaml, state string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "lbd.yaml")
	yaml = strings.ReplaceAll(yaml, "STATE", dir)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if state != "" {
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(state), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"serve", "--check", "--config", conf})
	err := root.Execute()
	return out.String(), err
}

// TestServeCheck: --check accepts a good config (on lo, which every
// namespace has) and refuses each bad one with a message naming the
// setting, without starting anything.
func TestServeCheck(t *testing.T) {
	good := "interface: lo\nstate_dir: STATE\npin_dir: /sys/fs/bpf/lbd-check-none\n"
	out, err := checkRun(t, good, "")
	if err != nil || !strings.Contains(out, "check ok") || !strings.Contains(out, "no pins under /sys/fs/bpf/lbd-check-none") {
		t.Fatalf("good config: %v\n%s", err, out)
	}
	for name, tc := range map[string]struct{ yaml, state, want string }{
		"no interface":      {"state_dir: STATE\n", "", "no interface"},
		"missing interface": {"interface: lbdnosuch0\nstate_dir: STATE\n", "", "interface lbdnosuch0"},
		"unknown key":       {good + "max_flow: 3\n", "", "field max_flow not found"},
		"xdp mode":          {good + "xdp_mode: fast\n", "", "XDP mode \"fast\""},
		"listen":            {good + "listen: localhost\n", "", "listen address \"localhost\""},
		"fragment policy":   {good + "fragment_policy: keep\n", "", "fragment policy \"keep\""},
		"encap source":      {good + "encap_source_v4: 100::/64\n", "", "encap source v4"},
		"log level":         {good + "log_level: loud\n", "", "log level \"loud\""},
		"log format":        {good + "log_format: xml\n", "", "log format \"xml\""},
		"health":            {good + "health_max_concurrent: 0\n", "", "health max concurrent"},
		"tracer":            {good + "tracer: ebpf\n", "", "tracer \"ebpf\""},
		"bgp router id":     {good + "bgp: {asn: 65001, router_id: x, peers: [{address: 192.0.2.1, asn: 65002}]}\n", "", "BGP router id"},
		"bad yaml":          {good + "mtu: [\n", "", "config file"},
		"state file":        {good, `{"version": 99, "vips": []}`, "state file"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := checkRun(t, tc.yaml, tc.state)
			if err == nil {
				t.Fatalf("accepted:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			if strings.Contains(out, "check ok") {
				t.Errorf("printed check ok:\n%s", out)
			}
		})
	}
}
