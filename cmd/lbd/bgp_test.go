package main

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/bgp"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

func TestBGPConfigFileThenFlags(t *testing.T) {
	cfg, err := parseServe(t, `interface: eth1
bgp:
  asn: 65101
  router_id: 10.255.0.11
  communities: ["65101:100", no-export]
  hold_time: 6s
  peers:
    - {address: 192.0.2.254, asn: 65000, password: s3cret, multihop: 2}
    - {address: "2001:db8::fe", asn: 65000, port: 1179, passive: true}
`)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := cfg.BGP.SpeakerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if sc.ASN != 65101 || sc.RouterID.String() != "10.255.0.11" || sc.ListenPort != 179 || sc.HoldTime != 6*time.Second ||
		len(sc.Communities) != 2 || len(sc.Peers) != 2 || sc.Peers[0].Password != "s3cret" || sc.Peers[0].Multihop != 2 || !sc.Peers[1].Passive || sc.Peers[1].Port != 1179 {
		t.Errorf("from the file: %+v", sc)
	}

	cfg, err = parseServe(t, "interface: eth1\nbgp:\n  asn: 1\n  peers: [{address: 192.0.2.1, asn: 2}]\n",
		"--bgp-as", "65102", "--bgp-peer", "198.51.100.1,65000", "--bgp-peer", "198.51.100.2,65001,pw,with,commas",
		"--bgp-listen-port", "0", "--bgp-next-hop", "198.51.100.11", "--bgp-next-hop", "2001:db8::11", "--bgp-router-id", "10.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	sc, err = cfg.BGP.SpeakerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if sc.ASN != 65102 || sc.ListenPort != 0 || len(sc.Peers) != 2 || sc.Peers[0].Address.String() != "198.51.100.1" ||
		sc.Peers[1].ASN != 65001 || sc.Peers[1].Password != "pw,with,commas" || sc.NextHopV4.String() != "198.51.100.11" || sc.NextHopV6.String() != "2001:db8::11" {
		t.Errorf("flags over the file: %+v", sc)
	}

	if cfg, err := parseServe(t, "", "--interface", "eth0"); err != nil || cfg.BGP.Enabled() {
		t.Errorf("BGP is on without configuration: %v", err)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--bgp-as", "65101"}, "no peers"},
		{[]string{"--bgp-peer", "192.0.2.1"}, "want ADDR,AS"},
		{[]string{"--bgp-peer", "192.0.2.1,x"}, "must be a number"},
		{[]string{"--bgp-peer", "192.0.2.1,65000"}, "no local AS"},
		{[]string{"--bgp-as", "1", "--bgp-peer", "192.0.2.1,2", "--bgp-next-hop", "nope"}, "want an IP address"},
		{[]string{"--bgp-as", "1", "--bgp-peer", "192.0.2.1,2", "--bgp-router-id", "2001:db8::1"}, "want an IPv4 address"},
	} {
		_, err := parseServe(t, "", append([]string{"--interface", "eth0"}, bad.args...)...)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: want an error with %q, got %v", bad.args, bad.want, err)
		}
	}
}

// TestBGPCommands runs lbd bgp and lbd drain against a real API server
// whose BGP is the daemon's own wiring (speaker and announcer), with a
// peer that never answers.
func TestBGPCommands(t *testing.T) {
	for _, env := range []string{"LBD_TOKEN", "LBD_SERVER", "LBD_TOKEN_FILE"} {
		t.Setenv(env, "")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	cfg := defaultServeConfig()
	cfg.Interface = "lo"
	cfg.StateDir = t.TempDir()
	cfg.BGP = bgp.Settings{ASN: 65101, RouterID: "10.255.0.11", NextHopV4: "198.18.0.11",
		Peers: []bgp.PeerSettings{{Address: "127.0.0.1", ASN: 65000, Port: uint16(deadPort)}}}

	ctl := control.New(fakedp.New(), nopSaver{}, nil, nil)
	key := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	if _, err := ctl.CreateVIP(control.VIP{Key: key, RingSize: 1021, Reals: []control.Real{{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1, State: control.RealActive}}}); err != nil {
		t.Fatal(err)
	}
	node, err := bgp.StartNode(context.Background(), cfg.BGP, ctl, bgp.NodeOptions{Interface: cfg.Interface,
		DrainFile: filepath.Join(cfg.StateDir, "drained"), Ready: func() error { return nil }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	srv, err := api.New(api.Options{Controller: ctl, Token: testToken, BGP: apiBGP(node)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	d := &daemon{t: t, url: ts.URL, tokenFile: filepath.Join(t.TempDir(), "token")}
	if err := os.WriteFile(d.tokenFile, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(5 * time.Second)
	var out string
	for {
		out = d.ok("bgp")
		if hasRow(out, "192.0.2.1/32", "yes", "tcp-192.0.2.1-80", "-") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantRow(t, out, "LOCAL AS", "65101", "ROUTER ID", "10.255.0.11", "DRAINED", "no")
	wantRow(t, out, "192.0.2.1/32", "yes", "tcp-192.0.2.1-80", "-")
	if !strings.Contains(out, "127.0.0.1") || !strings.Contains(out, "65000") {
		t.Errorf("no peer row:\n%s", out)
	}

	out = d.ok("drain")
	if !strings.Contains(out, "drained: every VIP address is withdrawn") {
		t.Errorf("drain said:\n%s", out)
	}
	wantRow(t, out, "192.0.2.1/32", "no", "tcp-192.0.2.1-80", "node is drained (lbd drain --undo announces again)")
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "drained")); err != nil {
		t.Errorf("drain state not saved: %v", err)
	}
	var st apiv1.BGPStatusJSON
	d.okJSON(&st, "drain", "--undo")
	if st.Drained || len(st.Prefixes) != 1 || !st.Prefixes[0].Announced || len(st.Peers) != 1 || st.Peers[0].State == "established" {
		t.Errorf("undrained: %+v", st)
	}
}
