package lb

import (
	"net/netip"
	"testing"
)

func TestVIPNames(t *testing.T) {
	vipB := VIPKey{Addr: netip.MustParseAddr("2001:db8::1"), Port: 53, Proto: UDP}
	for _, k := range []VIPKey{{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: TCP}, vipB, {Addr: netip.MustParseAddr("::ffff:1.2.3.4").Unmap(), Port: 0, Proto: UDP}} {
		name := VIPName(k)
		got, err := ParseVIPName(name)
		if err != nil || got != k {
			t.Errorf("%s: parsed %v, %v", name, got, err)
		}
	}
	if VIPName(vipB) != "udp-2001:db8::1-53" {
		t.Errorf("name %s", VIPName(vipB))
	}
	for _, bad := range []string{"", "tcp", "tcp-1.2.3.4", "sctp-1.2.3.4-80", "tcp-1.2.3-80", "tcp-1.2.3.4-65536", "tcp-1.2.3.4-x"} {
		if _, err := ParseVIPName(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseVIP(t *testing.T) {
	for s, want := range map[string]VIPKey{
		"tcp/192.0.2.1:80":     {Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: TCP},
		"udp/[2001:db8::1]:53": {Addr: netip.MustParseAddr("2001:db8::1"), Port: 53, Proto: UDP},
		"tcp-192.0.2.1-0":      {Addr: netip.MustParseAddr("192.0.2.1"), Port: 0, Proto: TCP},
	} {
		got, err := ParseVIP(s)
		if err != nil || got != want {
			t.Errorf("%q: %v %v", s, got, err)
		}
		if back, err := ParseVIP(got.String()); err != nil || back != want {
			t.Errorf("%q: String %q does not parse back: %v", s, got.String(), err)
		}
	}
	for _, bad := range []string{"", "tcp/192.0.2.1", "sctp/192.0.2.1:80", "192.0.2.1:80", "tcp-bad"} {
		if _, err := ParseVIP(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
