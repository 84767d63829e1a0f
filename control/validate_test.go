package control

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
)

// TestAddressesThatCannotWork: VIPs and reals at addresses that cannot
// work are refused with the field and the reason; ordinary addresses,
// including an IPv4 address ending in .0 (a host of a /23 or wider
// network), are taken.
func TestAddressesThatCannotWork(t *testing.T) {
	cases := []struct {
		vip, real string
		why       string // "" = accepted
	}{
		{"192.0.2.1", "10.0.0.1", ""},
		{"10.0.0.0", "10.0.1.0", ""},
		{"192.0.2.255", "10.0.0.255", ""},
		{"2001:db8::1", "2001:db8:1::3", ""},
		// VIPs
		{"127.0.0.1", "10.0.0.1", "loopback"},
		{"127.255.0.9", "10.0.0.1", "loopback"},
		{"::1", "2001:db8:1::3", "loopback"},
		{"255.255.255.255", "10.0.0.1", "broadcast"},
		{"169.254.0.1", "10.0.0.1", "link-local"},
		{"169.254.255.254", "10.0.0.1", "link-local"},
		{"fe80::1", "2001:db8:1::3", "link-local"},
		{"febf::1", "2001:db8:1::3", "link-local"},
		{"224.0.0.1", "10.0.0.1", "multicast"},
		{"ff02::1", "2001:db8:1::3", "multicast"},
		{"0.0.0.0", "10.0.0.1", "unicast"},
		{"::", "2001:db8:1::3", "unicast"},
		{"0.1.2.3", "10.0.0.1", "this network"},
		// reals
		{"192.0.2.1", "255.255.255.255", "broadcast"},
		{"192.0.2.1", "169.254.1.1", "link-local"},
		{"2001:db8::1", "fe80::1", "link-local"},
		{"192.0.2.1", "239.1.1.1", "multicast"},
		{"2001:db8::1", "ff05::2", "multicast"},
		{"192.0.2.1", "0.0.0.0", "unicast"},
		{"2001:db8::1", "::", "unicast"},
		{"192.0.2.1", "127.0.0.1", "loopback"},
		{"2001:db8::1", "::1", "loopback"},
		{"192.0.2.1", "0.0.0.7", "this network"},
	}
	for _, tc := range cases {
		t.Run(tc.vip+"/"+tc.real, func(t *testing.T) {
			c, dp, _ := newTestController(t)
			key := lb.VIPKey{Addr: netip.MustParseAddr(tc.vip), Port: 80, Proto: lb.TCP}
			_, err := c.CreateVIP(VIP{Key: key, Reals: []Real{active(netip.MustParseAddr(tc.real), 1)}})
			if tc.why == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Field != "address" || !strings.Contains(inv.Msg, tc.why) {
				t.Fatalf("got %v, want an InvalidError on address saying %q", err, tc.why)
			}
			bad := tc.real
			if !strings.Contains(inv.Msg, "real address") {
				bad = tc.vip
			}
			if !strings.Contains(inv.Msg, bad) || !strings.Contains(inv.Msg, ": use ") {
				t.Errorf("the error does not name the address and what to use: %q", inv.Msg)
			}
			if len(dp.Calls) != 0 || len(c.VIPs()) != 0 {
				t.Errorf("refused VIP reached the datapath: %v", dp.Calls)
			}
			// adding the real alone is refused the same way
			if strings.Contains(inv.Msg, "real address") {
				if _, err := c.CreateVIP(VIP{Key: key}); err != nil {
					t.Fatal(err)
				}
				_, _, err := c.PutReal(key, active(netip.MustParseAddr(tc.real), 1))
				if !errors.As(err, &inv) || inv.Field != "address" || !strings.Contains(inv.Msg, tc.why) {
					t.Errorf("PutReal: %v", err)
				}
			}
		})
	}
}

// TestHealthCheckPaths: a health check path must be a URL path.
func TestHealthCheckPaths(t *testing.T) {
	cases := []struct {
		path string
		why  string // "" = accepted
	}{
		{"/", ""},
		{"/healthz", ""},
		{"/a/b-c_d.e~f/%20x?ready=1&full", ""},
		{"/user@host:8080/!$&'()*+,;=", ""},
		{"/" + strings.Repeat("a", MaxHealthPathLen-1), ""},
		{"/x\r\nHost: evil", `byte 2 ('\r')`},
		{"/x\x00", `byte 2 ('\x00')`},
		{"/a b", `byte 2 (' ')`},
		{"/a#frag", `byte 2 ('#')`},
		{"/caf\u00e9", `byte 4`},
		{"/%zz", "escape"},
		{"/%2", "escape"},
		{"health", "must start with /"},
		{"/" + strings.Repeat("a", 100<<10), "at most 1024"},
	}
	for _, tc := range cases {
		name := tc.path
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			c, dp, _ := newTestController(t)
			_, err := c.CreateVIP(VIP{Key: vipA, Health: health.Spec{Type: health.HTTP, Path: tc.path}})
			if tc.why == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Field != "health_check.path" || !strings.Contains(inv.Msg, tc.why) {
				t.Fatalf("got %v, want an InvalidError on health_check.path saying %q", err, tc.why)
			}
			if len(dp.Calls) != 0 {
				t.Errorf("refused VIP reached the datapath: %v", dp.Calls)
			}
		})
	}
}

// TestCreateExistingValidatesFirst: creating a VIP that exists with a bad
// body says what is wrong with the body, not that it exists.
func TestCreateExistingValidatesFirst(t *testing.T) {
	c, _, _ := newTestController(t)
	if _, err := c.CreateVIP(VIP{Key: vipA}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateVIP(VIP{Key: vipA, RingSize: 1000})
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Field != "ring_size" {
		t.Fatalf("got %v, want the ring size refused", err)
	}
	if _, err := c.CreateVIP(VIP{Key: vipA}); !errors.Is(err, ErrConflict) {
		t.Fatalf("got %v, want ErrConflict", err)
	}
}

// TestOldStateWithUnusableAddressLoads: a state file written before the
// address checks still loads (the daemon starts, the VIP can be deleted).
func TestOldStateWithUnusableAddressLoads(t *testing.T) {
	dir := t.TempDir()
	st, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	loop := lb.VIPKey{Addr: netip.MustParseAddr("127.0.0.1"), Port: 80, Proto: lb.TCP}
	if err := st.Save(map[lb.VIPKey]*VIP{loop: {Key: loop, Encap: EncapIPIP, RingSize: 1021, Reals: []Real{active(netip.MustParseAddr("169.254.1.1"), 1)},
		DownFlows: KeepFlows, AllDown: ServeAll, Health: health.Spec{}.Defaults()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir)); err != nil {
		t.Fatal(err)
	}
	vips, err := st.Load()
	if err != nil || len(vips) != 1 {
		t.Fatalf("load: %v %v", vips, err)
	}
}
