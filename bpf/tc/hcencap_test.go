package tc

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/internal/cenumtest"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
)

var gwMAC = []byte{0x02, 0, 0, 0, 0, 0xfe}

const (
	markReal4 = 7
	markReal6 = 8
)

func newTestHC(t testing.TB) *HCEncap {
	t.Helper()
	privtest.Require(t)
	h, err := LoadHCEncap(16, HCConfig{
		SourceV4: netip.MustParseAddr("192.0.2.10"),
		SourceV6: netip.MustParseAddr("2001:db8:ffff::10"),
	})
	privtest.CheckNotSupported(t, "load health-check encap", err)
	t.Cleanup(func() { h.Close() })
	if err := h.SetReal(markReal4, netip.MustParseAddr("10.0.1.1")); err != nil {
		t.Fatal(err)
	}
	if err := h.SetReal(markReal6, netip.MustParseAddr("fd00::1:1")); err != nil {
		t.Fatal(err)
	}
	return h
}

// probeFrame is a probe as the LB node's stack hands it to the egress:
// the node's MAC, the MAC of the VIP's next hop.
func probeFrame(t testing.TB, inner []byte) []byte {
	return packettest.Serialize(t, true, &layers.Ethernet{SrcMAC: packettest.LBMAC, DstMAC: packettest.RealMAC, EthernetType: packettest.IPEtherType(inner)}, gopacket.Payload(inner))
}

func runHC(t *testing.T, h *HCEncap, in []byte, mark uint32, want Verdict, wantOut []byte, wantStats map[HCStat]uint64) []byte {
	t.Helper()
	counters := func() ([]uint64, error) { s, err := h.Stats(); return s[:], err }
	return packettest.ExpectRun(t, counters, func() (Verdict, []byte, error) { return h.Simulate(in, mark) }, in, want, wantOut, wantStats)
}

// TestHCEncapFixtures: a marked probe leaves encapsulated towards its real
// exactly as the balancer would send a client's packet (outer TOS/traffic
// class copied, TTL 64, no DF, IPv6 flow label 0), and the real's
// decapsulation gives the probe back byte for byte.
func TestHCEncapFixtures(t *testing.T) {
	h := newTestHC(t)
	d := newTestDecap(t)
	probe4 := clientPacket(t, "192.0.2.10", "10.10.0.1", 41000, 80, true, "")
	probe4tos := mut(probe4, func(b []byte) { b[1] = 0xb8; packettest.FixIPv4Checksum(b, 0) })
	probe6 := clientPacket(t, "2001:db8:ffff::10", "2001:db8::10", 41000, 80, true, "")
	probe6udp := clientPacket(t, "2001:db8:ffff::10", "2001:db8::10", 41000, 53, false, "health?")
	for _, c := range []struct {
		name  string
		inner []byte
		mark  uint32
		gw    bool
		tun   tunnel
		stat  HCStat
		dstat Stat
	}{
		{"ipv4 probe", probe4, markReal4, false, tunnel{src: "192.0.2.10", dst: "10.0.1.1"}, HCStatEncap4in4, StatIPIP4in4},
		{"ipv4 probe with tos", probe4tos, markReal4, false, tunnel{src: "192.0.2.10", dst: "10.0.1.1", tos: 0xb8}, HCStatEncap4in4, StatIPIP4in4},
		{"ipv4 probe via gateway", probe4, markReal4, true, tunnel{src: "192.0.2.10", dst: "10.0.1.1"}, HCStatEncap4in4, StatIPIP4in4},
		{"ipv6 probe", probe6, markReal6, false, tunnel{src: "2001:db8:ffff::10", dst: "fd00::1:1"}, HCStatEncap6in6, StatIPIP6in6},
		{"ipv6 udp probe via gateway", probe6udp, markReal6, true, tunnel{src: "2001:db8:ffff::10", dst: "fd00::1:1"}, HCStatEncap6in6, StatIPIP6in6},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := HCConfig{SourceV4: netip.MustParseAddr("192.0.2.10"), SourceV6: netip.MustParseAddr("2001:db8:ffff::10")}
			if c.gw {
				cfg.GatewayMAC = gwMAC
			}
			if err := h.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			in := probeFrame(t, c.inner)
			want := encapFrame(t, c.inner, c.tun)
			if c.gw {
				copy(want[0:6], gwMAC)
			}
			// A short probe frame carries Ethernet padding; it stays behind the packet.
			want = append(want, in[14+len(c.inner):]...)
			out := runHC(t, h, in, c.mark, VerdictOK, want, map[HCStat]uint64{c.stat: 1})
			back := append(append([]byte(nil), out[:12]...), in[12:]...)
			run(t, d, out, VerdictOK, back, one(c.dstat))
		})
	}
	if err := h.SetConfig(HCConfig{SourceV4: netip.MustParseAddr("192.0.2.10"), SourceV6: netip.MustParseAddr("2001:db8:ffff::10")}); err != nil {
		t.Fatal(err)
	}

	t.Run("unmarked", func(t *testing.T) {
		runHC(t, h, probeFrame(t, probe4), 0, VerdictNext, nil, map[HCStat]uint64{HCStatPassUnmarked: 1})
	})
	t.Run("mark of no real", func(t *testing.T) {
		runHC(t, h, probeFrame(t, probe4), 99, VerdictNext, nil, map[HCStat]uint64{HCStatPassUnmarked: 1})
	})
	t.Run("ipv4 probe for an ipv6 real", func(t *testing.T) {
		runHC(t, h, probeFrame(t, probe4), markReal6, VerdictShot, nil, map[HCStat]uint64{HCStatDropFamily: 1})
	})
	t.Run("ipv6 probe for an ipv4 real", func(t *testing.T) {
		runHC(t, h, probeFrame(t, probe6), markReal4, VerdictShot, nil, map[HCStat]uint64{HCStatDropFamily: 1})
	})
	t.Run("real removed", func(t *testing.T) {
		if err := h.RemoveReal(markReal4); err != nil {
			t.Fatal(err)
		}
		runHC(t, h, probeFrame(t, probe4), markReal4, VerdictNext, nil, map[HCStat]uint64{HCStatPassUnmarked: 1})
		if err := h.RemoveReal(markReal4); err == nil {
			t.Error("removing an absent mark succeeded")
		}
	})
	if err := h.SetReal(0, netip.MustParseAddr("10.0.1.1")); err == nil {
		t.Error("mark 0 was accepted")
	}
}

// TestHCStatNamesMatchHeader keeps the Go counter list in the order of
// enum lbd_hc_stat.
func TestHCStatNamesMatchHeader(t *testing.T) {
	cenumtest.CheckSequence(t, "../include/lbd_hcencap.h", "lbd_hc_stat", "LBD_HC_", cenumtest.Stringers(NumHCStats), "LBD_HC_STAT_MAX")
	if n := len(hcencapHcCounters{}.Counters); n != int(NumHCStats) {
		t.Errorf("generated hc_counters has %d counters, want %d", n, NumHCStats)
	}
}
