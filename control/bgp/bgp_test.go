package bgp

import (
	"context"
	"errors"
	"fmt"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/fakedp"
)

// router is a second GoBGP instance in the test, standing for the
// node's router: it listens on 127.0.0.2 and accepts lbd's session.
type router struct {
	srv  *server.BgpServer
	port uint16
}

const (
	routerAS = 65000
	nodeAS   = 65101
)

// freePort returns a TCP port that was free on addr a moment ago.
func freePort(t *testing.T, addr string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		privtest.Unavailable(t, fmt.Sprintf("cannot listen on %s (loopback lacks it?): %v", addr, err))
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func startRouter(t *testing.T, nodes ...netip.Addr) *router {
	t.Helper()
	r := &router{srv: server.NewBgpServer(), port: freePort(t, "127.0.0.2")}
	go r.srv.Serve()
	err := r.srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: routerAS, RouterId: "10.255.0.1", ListenPort: int32(r.port), ListenAddresses: []string{"127.0.0.2"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.srv.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	for _, n := range nodes {
		err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: n.String(), PeerAsn: nodeAS},
			Transport: &api.Transport{PassiveMode: true},
			AfiSafis: []*api.AfiSafi{
				{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
				{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
			},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// routes returns the router's RIB as "prefix via next-hop [communities]".
func (r *router) routes(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, fam := range []bgppkt.Family{bgppkt.RF_IPv4_UC, bgppkt.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam}, func(prefix bgppkt.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				var nh netip.Addr
				var comms []string
				for _, a := range p.Attrs {
					switch a := a.(type) {
					case *bgppkt.PathAttributeNextHop:
						nh = a.Value
					case *bgppkt.PathAttributeMpReachNLRI:
						nh = a.Nexthop
					case *bgppkt.PathAttributeCommunities:
						for _, c := range a.Value {
							comms = append(comms, FormatCommunity(c))
						}
					}
				}
				s := prefix.String() + " via " + nh.String()
				if len(comms) > 0 {
					s += " [" + strings.Join(comms, " ") + "]"
				}
				out = append(out, s)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(out)
	return out
}

// waitRoutes waits until the router's RIB is exactly want and returns how
// long that took.
func (r *router) waitRoutes(t *testing.T, what string, want ...string) time.Duration {
	t.Helper()
	slices.Sort(want)
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for {
		got := r.routes(t)
		if slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: router has %q, want %q", what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type nopSaver struct{}

func (nopSaver) Save(map[lb.VIPKey]*control.VIP) error { return nil }

// switchProber fails the probes of the reals marked down.
type switchProber struct{ down sync.Map }

func (p *switchProber) Probe(_ context.Context, t health.Target, _ health.Spec) health.Result {
	_, down := p.down.Load(t.Real)
	return health.Result{OK: !down, Reason: "test", At: time.Now()}
}

func waitPeerUp(t *testing.T, s *Speaker) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		peers, err := s.Peers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) == 1 && peers[0].Established() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session never came up: %+v", peers)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAnnouncementsFollowTheControllerAndDrain peers lbd's speaker
// (127.0.0.1, dialling out only) with a router (a second GoBGP on
// 127.0.0.2) and checks the router's routes, exactly, after each change
// of VIPs, reals, health, drain, readiness, and after Close.
func TestAnnouncementsFollowTheControllerAndDrain(t *testing.T) {
	node := netip.MustParseAddr("127.0.0.1")
	rt := startRouter(t, node)

	var states sync.Map
	sp, err := Start(Config{
		ASN: nodeAS, RouterID: netip.MustParseAddr("10.255.0.11"),
		Peers:     []Peer{{Address: netip.MustParseAddr("127.0.0.2"), ASN: routerAS, Port: rt.port, LocalAddress: node}},
		NextHopV4: netip.MustParseAddr("198.18.0.11"), NextHopV6: netip.MustParseAddr("2001:db8:ff::11"),
		Communities:  []uint32{65101<<16 | 100},
		ConnectRetry: time.Second,
		OnPeerState:  func(a netip.Addr, s string) { states.Store(s, a) },
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close(context.Background())
	waitPeerUp(t, sp)
	// The callback comes from GoBGP's watcher, which may lag the peer
	// state a little (seen in the slow TCG guests).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := states.Load("established"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Error("OnPeerState never said established")
			break
		}
	}

	ctl := control.New(fakedp.New(), nopSaver{}, nil, nil)
	prober := &switchProber{}
	hctx, hcancel := context.WithCancel(context.Background())
	defer hcancel()
	ctl.StartHealth(hctx, prober, 4, nil)
	var notReady atomic.Pointer[error]
	dir := t.TempDir()
	ann, err := NewAnnouncer(ctl, sp, AnnouncerOptions{
		// No periodic resync: every change below must follow an event.
		Resync:    time.Hour,
		DrainFile: dir + "/drained",
		Ready: func() error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ann.Run(ctx)

	const (
		v4route = "192.0.2.1/32 via 198.18.0.11 [65101:100]"
		v6route = "2001:db8::1/128 via 2001:db8:ff::11 [65101:100]"
	)
	web := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	dns := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 53, Proto: lb.UDP}
	web6 := lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443, Proto: lb.TCP}
	r1, r2, r6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("2001:db8:1::1")
	active := func(a netip.Addr) control.Real { return control.Real{Addr: a, Weight: 1, State: lb.RealActive} }
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	must(ctl.CreateVIP(control.VIP{Key: web, RingSize: 1021}))
	rt.waitRoutes(t, "VIP without reals")
	must(ctl.SetReals(web, []control.Real{active(r1)}))
	rt.waitRoutes(t, "VIP with a real", v4route)
	must(ctl.CreateVIP(control.VIP{Key: dns, RingSize: 1021}))
	spec := health.Spec{Type: health.TCP, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 1}
	must(ctl.CreateVIP(control.VIP{Key: web6, RingSize: 1021, Health: spec, Reals: []control.Real{active(r6)}}))
	rt.waitRoutes(t, "second VIP on the same address, IPv6 VIP", v4route, v6route)

	_, _, err = ctl.PutReal(web, control.Real{Addr: r1, Weight: 1, State: lb.RealDraining})
	must(nil, err)
	rt.waitRoutes(t, "only real draining, other VIP at the address has none", v6route)
	must(ctl.SetReals(dns, []control.Real{active(r2)}))
	rt.waitRoutes(t, "the other VIP at the address gets a real", v4route, v6route)

	prober.down.Store(r6, true)
	rt.waitRoutes(t, "IPv6 VIP's only real fails its health check", v4route)
	prober.down.Delete(r6)
	rt.waitRoutes(t, "it recovers", v4route, v6route)

	start := time.Now()
	if err := ann.SetDrained(true); err != nil {
		t.Fatal(err)
	}
	rt.waitRoutes(t, "drained")
	t.Logf("drain: router had withdrawn both prefixes %v after the drain call", time.Since(start).Round(time.Microsecond))
	for _, p := range ann.Prefixes() {
		if p.Announced || p.Reason != ReasonDrained {
			t.Errorf("drained: %+v", p)
		}
	}
	// The drain state survives a restart of the announcer.
	again, err := NewAnnouncer(ctl, sp, AnnouncerOptions{DrainFile: dir + "/drained"})
	if err != nil || !again.Drained() {
		t.Errorf("a new announcer forgot the drain: %v %v", again.Drained(), err)
	}
	if err := ann.SetDrained(false); err != nil {
		t.Fatal(err)
	}
	rt.waitRoutes(t, "undrained", v4route, v6route)

	e := errors.New("reconcile failed")
	notReady.Store(&e)
	ann.Kick()
	rt.waitRoutes(t, "datapath not ready")
	notReady.Store(nil)
	ann.Kick()
	rt.waitRoutes(t, "datapath ready again", v4route, v6route)

	must(nil, ctl.DeleteVIP(web6))
	rt.waitRoutes(t, "IPv6 VIP deleted", v4route)

	got := ann.Prefixes()
	if len(got) != 1 || !got[0].Announced || got[0].Prefix.String() != "192.0.2.1/32" || !slices.Equal(got[0].VIPs, []string{"tcp-192.0.2.1-80", "udp-192.0.2.1-53"}) {
		t.Errorf("prefixes: %+v", got)
	}
	peers, err := sp.Peers(context.Background())
	if err != nil || len(peers) != 1 || peers[0].RoutesSent != 1 || peers[0].ASN != routerAS || peers[0].Since.IsZero() {
		t.Errorf("peers: %+v %v", peers, err)
	}

	ann.Shutdown()
	start = time.Now()
	if err := sp.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := rt.waitRoutes(t, "after Close")
	t.Logf("Close: returned after %v; router empty %v after it returned", time.Since(start).Round(time.Microsecond), d.Round(time.Microsecond))
	if err := sp.Announce(HostPrefix(web.Addr)); !errors.Is(err, ErrClosed) {
		t.Errorf("announce after close: %v", err)
	}
}

// TestCloseWithdrawsBeforeCease checks that Close sends withdrawals the
// router acts on before the session ends: the router's Adj-RIB-In for
// the node empties while the session is still established.
func TestCloseWithdrawsBeforeCease(t *testing.T) {
	node := netip.MustParseAddr("127.0.0.1")
	rt := startRouter(t, node)
	sp, err := Start(Config{
		ASN: nodeAS, RouterID: netip.MustParseAddr("10.255.0.11"),
		Peers:     []Peer{{Address: netip.MustParseAddr("127.0.0.2"), ASN: routerAS, Port: rt.port, LocalAddress: node}},
		NextHopV4: netip.MustParseAddr("198.18.0.11"), ConnectRetry: time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitPeerUp(t, sp)
	var withdrawnWhileUp atomic.Bool
	var sessionDown atomic.Bool
	err = rt.srv.WatchEvent(t.Context(), server.WatchEventMessageCallbacks{
		OnPathUpdate: func(paths []*apiutil.Path, _ time.Time) {
			for _, p := range paths {
				if p.Withdrawal && !sessionDown.Load() {
					withdrawnWhileUp.Store(true)
				}
			}
		},
		OnPeerUpdate: func(e *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if e.Type == apiutil.PEER_EVENT_STATE && e.Peer.State.SessionState != bgppkt.BGP_FSM_ESTABLISHED {
				sessionDown.Store(true)
			}
		},
	}, server.WatchUpdate(false, "", ""), server.WatchPeer())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := sp.Announce(netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/32", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	rt.waitRoutes(t, "announced", "192.0.2.1/32 via 198.18.0.11", "192.0.2.2/32 via 198.18.0.11", "192.0.2.3/32 via 198.18.0.11")
	if err := sp.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rt.waitRoutes(t, "closed")
	if !withdrawnWhileUp.Load() {
		t.Error("the router saw no withdrawal before the session went down")
	}
}

func TestConfigErrorsSayWhatToFix(t *testing.T) {
	ok := Config{ASN: 1, RouterID: netip.MustParseAddr("10.0.0.1"), Peers: []Peer{{Address: netip.MustParseAddr("10.0.0.2"), ASN: 2}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.ASN = 0 }, "--bgp-as"},
		{func(c *Config) { c.RouterID = netip.MustParseAddr("::1") }, "want an IPv4 address"},
		{func(c *Config) { c.Peers = nil }, "--bgp-peer"},
		{func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "listed twice"},
		{func(c *Config) { c.Peers[0].Passive = true }, "listen_port"},
		{func(c *Config) { c.HoldTime = time.Second }, "at least 3s"},
	} {
		c := ok
		c.Peers = slices.Clone(ok.Peers)
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error with %q, got %v", tc.want, err)
		}
	}
	for in, want := range map[string]uint32{"65000:100": 65000<<16 | 100, "no-export": 0xFFFFFF01} {
		if got, err := ParseCommunity(in); err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %#x, %v", in, got, err)
		}
	}
	for _, bad := range []string{"65536:1", "1", "a:b"} {
		if _, err := ParseCommunity(bad); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", bad)
		}
	}
}
