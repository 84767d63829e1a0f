package xdp

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/lb"
)

// Literal fixtures, as Katran writes its own: one client frame and the
// exact frame the balancer must send for it, byte for byte, so that a
// reader sees a real packet. The other fixtures derive the expected frame
// from a model (packets_test.go); these were checked by hand (every
// checksum verifies, each field is annotated) and pin the model too: the
// test checks that the model builds the same two frames.
//
// The balancer is the fixtures' (newTestLB): IP-in-IP sources from
// 172.16.0.0/16 and 100::/64, GUE sources 192.0.2.100 and
// 2001:db8:ffff::100, GUE port 6080, gateway MAC 02:00:00:00:00:fe, and
// rings of 13 slots cycling through the VIP's reals. Each flow below
// hashes to slot 4, the second real (10.0.1.2 or fd00::1:2).
var literalFixtures = []struct {
	name    string
	vip     lb.VIPKey
	p       pkt // the client packet, for the model
	in, out []string
}{
	{
		name: "ipv4 tcp syn -> ipip",
		vip:  vipTCP,
		p:    pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "S"},
		in: []string{
			"020000000002 020000000001 0800",                  // Ethernet: to the LB, from the client, IPv4
			"4500 0028 0007 4000 3d06 098a c6336401 0a0a0001", // IPv4: 40 bytes, ID 7, DF, TTL 61, TCP, 198.51.100.1 -> 10.10.0.1
			"7a69 0050 000003e8 00000000 5002 ffff fd01 0000", // TCP: 31337 -> 80, seq 1000, SYN, window 65535
			"000000000000", // Ethernet padding to 60 bytes
		},
		out: []string{
			"0200000000fe 020000000002 0800", // Ethernet: to the gateway, from the LB, IPv4
			// outer IPv4: 60 bytes, TTL 64, protocol 4 (IP-in-IP),
			// 172.16.238.33 (host bits from the flow hash 0x21ee72dc) -> 10.0.1.2
			"4500 003c 0000 0000 4004 d58a ac10ee21 0a000102",
			"4500 0028 0007 4000 3d06 098a c6336401 0a0a0001", // the client's packet, unchanged
			"7a69 0050 000003e8 00000000 5002 ffff fd01 0000",
			"000000000000", // the padding, carried
		},
	},
	{
		name: "ipv4 udp -> gue over ipv4",
		vip:  vipGUE,
		p:    pkt{src: "198.51.100.1", dst: "10.10.0.2", sport: 5000, dport: 443, proto: lb.UDP, payload: []byte("quic")},
		in: []string{
			"020000000002 020000000001 0800",
			"4500 0020 0007 4000 3d11 0986 c6336401 0a0a0002", // IPv4: 32 bytes, UDP, 198.51.100.1 -> 10.10.0.2
			"1388 01bb 000c db79 71756963",                    // UDP: 5000 -> 443, 12 bytes, payload "quic"
			"0000000000000000000000000000",                    // Ethernet padding to 60 bytes
		},
		out: []string{
			"0200000000fe 020000000002 0800",
			"4500 003c 0000 0000 4011 ad4b c0000264 0a000102", // outer IPv4: 60 bytes, TTL 64, UDP, 192.0.2.100 -> 10.0.1.2
			// UDP: source 0xc000 | hash 0x9407a723 & 0x3fff, to the GUE
			// port 6080, 40 bytes, no checksum; GUE variant 1: the inner
			// IP packet follows at once
			"e723 17c0 0028 0000",
			"4500 0020 0007 4000 3d11 0986 c6336401 0a0a0002",
			"1388 01bb 000c db79 71756963",
			"0000000000000000000000000000",
		},
	},
	{
		name: "ipv6 tcp syn -> ip6ip6",
		vip:  vip6,
		p:    pkt{src: "2001:db8:1::1", dst: "2001:db8::10", sport: 31337, dport: 80, proto: lb.TCP, flags: "S"},
		in: []string{
			"020000000002 020000000001 86dd",
			// IPv6: 20 bytes of payload, TCP, hop limit 61,
			// 2001:db8:1::1 -> 2001:db8::10
			"60000000 0014 06 3d 20010db8000100000000000000000001 20010db8000000000000000000000010",
			"7a69 0050 000003e8 00000000 5002 ffff d5bd 0000", // TCP: 31337 -> 80, seq 1000, SYN
		},
		out: []string{
			"0200000000fe 020000000002 86dd",
			// outer IPv6: flow label 0xbca2 (hash 0x71d0bca2 & 0xfffff),
			// 60 bytes of payload, next header 41 (IPv6), hop limit 64,
			// 100::a2bc:d071:a2bc:d071 (host bits from the hash) -> fd00::1:2
			"6000bca2 003c 29 40 0100000000000000a2bcd071a2bcd071 fd000000000000000000000000010002",
			"60000000 0014 06 3d 20010db8000100000000000000000001 20010db8000000000000000000000010",
			"7a69 0050 000003e8 00000000 5002 ffff d5bd 0000",
		},
	},
}

// TestLiteralFixtures runs each literal frame through the program
// (BPF_PROG_TEST_RUN) and wants the literal output, byte for byte, and
// checks that the model's builders produce the same two frames.
func TestLiteralFixtures(t *testing.T) {
	l := newTestLB(t)
	for _, c := range literalFixtures {
		t.Run(c.name, func(t *testing.T) {
			in, want := hexLines(t, c.in), hexLines(t, c.out)
			l.run(t, in, ActionTX, want, txNew)

			if m := c.p.frame(t); !bytes.Equal(m, in) {
				t.Errorf("the model's client frame differs from the literal\nmodel:   %x\nliteral: %x", m, in)
			}
			k := c.p.flowKey()
			if m := l.expectEncap(t, in, c.vip, k, l.ringReal(t, c.vip, k)); !bytes.Equal(m, want) {
				t.Errorf("the model's expected frame differs from the literal\nmodel:   %x\nliteral: %x", m, want)
			}
		})
	}
}

// hexLines decodes hex written in groups, spaces ignored.
func hexLines(t *testing.T, lines []string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(lines, ""), " ", ""))
	if err != nil {
		t.Fatalf("fixture hex: %v", err)
	}
	return b
}
