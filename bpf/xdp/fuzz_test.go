package xdp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/internal/cenumtest"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/lb"
)

// FuzzBalancer feeds mutated frames through the program. Whatever comes
// in, the result is one of: PASS or DROP with the frame unchanged; TX of a
// well-formed encapsulation whose inner packet is the input's; TX of a
// well-formed ICMP echo reply to the input. Nothing else, ever.
//
//	go test -run x -fuzz FuzzBalancer ./bpf/xdp/   (as root)
func FuzzBalancer(f *testing.F) {
	l := newTestLB(f)
	seeds := []pkt{
		{src: "198.51.100.1", dst: "10.10.0.1", sport: 1, dport: 80, proto: lb.TCP, flags: "S"},
		{src: "198.51.100.1", dst: "10.10.0.1", sport: 1, dport: 53, proto: lb.UDP, payload: []byte("q")},
		{src: "198.51.100.1", dst: "10.10.0.2", sport: 1, dport: 443, proto: lb.UDP},
		{src: "198.51.100.1", dst: "10.10.0.3", sport: 1, dport: 443, proto: lb.TCP, flags: "A", vlan: true},
		{src: "2001:db8:1::1", dst: "2001:db8::10", sport: 1, dport: 80, proto: lb.TCP, flags: "S"},
		{src: "2001:db8:1::1", dst: "2001:db8::20", sport: 1, dport: 80, proto: lb.TCP, flags: "PA", payload: []byte("data")},
		{src: "2001:db8:1::1", dst: "2001:db8::30", sport: 1, dport: 443, proto: lb.UDP},
	}
	for _, s := range seeds {
		f.Add(s.frame(f))
	}
	f.Add(icmp4(f, "198.51.100.1", "10.10.0.1", layers.ICMPv4TypeEchoRequest, 0, []byte("ping")))
	f.Add(fragNeeded(f, "10.10.0.1", "198.51.100.1", 80, 1, lb.TCP))
	f.Add(packetTooBig(f, "2001:db8::10", "2001:db8:1::1", 80, 1, lb.TCP))

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 3000 {
			return // the kernel's test run wants at least an Ethernet header
		}
		act, out, err := l.Simulate(in)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkOutcome(in, act, out, l.cfg.GUEPort); err != nil {
			t.Fatalf("%v\n in: %x\nout: %x", err, in, out)
		}
	})
}

// checkOutcome says whether (act, out) is an allowed result for in.
func checkOutcome(in []byte, act Action, out []byte, guePort uint16) error {
	switch act {
	case ActionPass, ActionDrop:
		if !bytes.Equal(in, out) {
			return fmt.Errorf("%v changed the frame", act)
		}
		return nil
	case ActionTX:
		if len(out) == len(in) {
			return checkEchoReply(in, out)
		}
		return checkEncap(in, out, guePort)
	}
	return fmt.Errorf("action %v", act)
}

func checkEncap(in, out []byte, guePort uint16) error {
	l2 := packettest.L2Len(in)
	if len(out) < l2+20 || packettest.L2Len(out) != l2 {
		return fmt.Errorf("TX frame of %d bytes with a different L2 header", len(out))
	}
	ethType := binary.BigEndian.Uint16(out[l2-2:])
	outer := out[l2:]
	var olen, next int
	var totalLen int
	switch ethType {
	case uint16(layers.EthernetTypeIPv4):
		if outer[0] != 0x45 {
			return fmt.Errorf("outer IPv4 header byte 0 = %#x", outer[0])
		}
		if packettest.Checksum(outer[:20]) != 0 {
			return fmt.Errorf("outer IPv4 checksum is wrong")
		}
		olen, next, totalLen = 20, int(outer[9]), int(binary.BigEndian.Uint16(outer[2:]))
	case uint16(layers.EthernetTypeIPv6):
		if outer[0]>>4 != 6 || len(outer) < 40 {
			return fmt.Errorf("outer IPv6 header broken")
		}
		olen, next, totalLen = 40, int(outer[6]), 40+int(binary.BigEndian.Uint16(outer[4:]))
	default:
		return fmt.Errorf("TX with ethertype %#x", ethType)
	}
	if next == 17 {
		u := outer[olen : olen+8]
		if binary.BigEndian.Uint16(u[2:]) != guePort || int(binary.BigEndian.Uint16(u[4:])) != totalLen-olen {
			return fmt.Errorf("GUE header %x", u)
		}
		olen += 8
	} else if next != 4 && next != 41 {
		return fmt.Errorf("outer protocol %d", next)
	}
	inner := out[l2+olen:]
	if !bytes.Equal(inner, in[l2:]) {
		return fmt.Errorf("inner packet is not the input's")
	}
	if innerLen(in) != totalLen-olen {
		return fmt.Errorf("outer length %d does not cover the inner packet (%d)", totalLen, innerLen(in))
	}
	if (next == 4) != (in[l2]>>4 == 4) && next != 17 {
		return fmt.Errorf("outer protocol %d for an IPv%d packet", next, in[l2]>>4)
	}
	return nil
}

func checkEchoReply(in, out []byte) error {
	l2 := packettest.L2Len(in)
	if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) {
		return fmt.Errorf("echo reply MACs not swapped")
	}
	ip, oip := in[l2:], out[l2:]
	if ip[0]>>4 == 4 {
		hl := int(ip[0]&0xf) * 4
		if !bytes.Equal(oip[12:16], ip[16:20]) || !bytes.Equal(oip[16:20], ip[12:16]) {
			return fmt.Errorf("echo reply addresses not swapped")
		}
		// Checksums are updated incrementally: valid stays valid (and a
		// corrupt request gets a reply its sender will discard).
		if packettest.Checksum(ip[:hl]) == 0 && packettest.Checksum(oip[:hl]) != 0 {
			return fmt.Errorf("echo reply IPv4 checksum wrong")
		}
		if ip[9] != 1 || ip[hl] != 8 || oip[hl] != 0 {
			return fmt.Errorf("not an echo request turned into a reply")
		}
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if packettest.Checksum(ip[hl:tot]) == 0 && packettest.Checksum(oip[hl:tot]) != 0 {
			return fmt.Errorf("echo reply ICMP checksum wrong")
		}
		if !bytes.Equal(oip[hl+4:], ip[hl+4:]) {
			return fmt.Errorf("echo reply changed the echo body")
		}
		return nil
	}
	if !bytes.Equal(oip[8:24], ip[24:40]) || !bytes.Equal(oip[24:40], ip[8:24]) {
		return fmt.Errorf("echo reply IPv6 addresses not swapped")
	}
	if oip[7] != 64 {
		return fmt.Errorf("echo reply hop limit %d", oip[7])
	}
	return nil
}

// TestStatNamesMatchHeader keeps the Go counter list in the order of
// enum lbd_stat, which the datapath indexes by.
func TestStatNamesMatchHeader(t *testing.T) {
	cenumtest.CheckSequence(t, "../include/lbd_types.h", "lbd_stat", "LBD_STAT_", cenumtest.Stringers(NumStats), "LBD_STAT_MAX")
	if n := len(balancerGlobalCounters{}.Counters); n != int(NumStats) {
		t.Errorf("generated global_counters has %d counters, want %d", n, NumStats)
	}
}
