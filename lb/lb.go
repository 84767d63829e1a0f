// Package lb is lbd's vocabulary: the words every layer shares (a VIP's
// key, its protocol, the text forms of a VIP, a real's address and state,
// the way the datapath stores an address, the VIP flags). It is a leaf: it
// imports nothing of the module, so api, control and bpf can all use it
// without an arrow running back up the layers (scripts/check-layers.sh
// checks this).
package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Proto is an L4 protocol a VIP balances or a traced connection uses.
type Proto uint8

// The protocols.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProto accepts "tcp" and "udp".
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("protocol %q: use tcp or udp", s)
}

// VIPKey names a VIP: address, port and protocol. Port 0 is a port-less
// VIP: it takes every port of the address for the protocol that no VIP
// with an exact port takes.
type VIPKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

// Validate says what is wrong with a key, if anything.
func (k VIPKey) Validate() error {
	if err := CheckAddr("VIP", k.Addr); err != nil {
		return err
	}
	if k.Proto != TCP && k.Proto != UDP {
		return fmt.Errorf("VIP %s: protocol must be tcp or udp", k)
	}
	return nil
}

// Compare orders VIPs for listings: address, then protocol, then port.
func (k VIPKey) Compare(o VIPKey) int {
	return cmp.Or(k.Addr.Compare(o.Addr), cmp.Compare(k.Proto, o.Proto), cmp.Compare(k.Port, o.Port))
}

// CheckAddr rejects what cannot be a VIP or real address; what names the
// address in the error ("VIP", "real").
func CheckAddr(what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s address is missing", what)
	case a.Zone() != "":
		return fmt.Errorf("%s address %s: zoned addresses are not supported", what, a)
	case a.Is4In6():
		return fmt.Errorf("%s address %s: write IPv4-mapped addresses as plain IPv4 (%s)", what, a, a.Unmap())
	case a.IsUnspecified() || a.IsMulticast():
		return fmt.Errorf("%s address %s: must be a unicast address", what, a)
	}
	return nil
}

// A VIP has two text forms, defined here side by side:
//
//   - the CLI form, String and ParseVIP: "tcp/192.0.2.1:80",
//     "udp/[2001:db8::1]:53", the way users type an address and port;
//   - the name, VIPName and ParseVIPName: "tcp-192.0.2.1-80",
//     "udp-2001:db8::1-53", which needs no escaping in a URL path (the
//     API's /api/v1/vips/{name}, the counters' ids, the state file).
//
// Port 0 is a port-less VIP in both.

// VIPUsage is how a VIP is written, for help and errors.
const VIPUsage = "PROTO/ADDR:PORT, e.g. tcp/192.0.2.1:80 or udp/[2001:db8::1]:53 (port 0 = every port), or the API's name tcp-192.0.2.1-80"

// String is the CLI form: tcp/192.0.2.1:80.
func (k VIPKey) String() string {
	return fmt.Sprintf("%s/%s", k.Proto, netip.AddrPortFrom(k.Addr, k.Port))
}

// ParseVIP reads the CLI form, and the name form too. The port is
// required (0 names a port-less VIP) so that a forgotten port does not
// quietly make a VIP that takes every port.
func ParseVIP(s string) (VIPKey, error) {
	s = strings.TrimSpace(s)
	proto, rest, slash := strings.Cut(s, "/")
	if !slash {
		if strings.Contains(s, "-") {
			key, err := ParseVIPName(s)
			if err != nil {
				return VIPKey{}, fmt.Errorf("VIP %q: want %s", s, VIPUsage)
			}
			return key, nil
		}
		return VIPKey{}, fmt.Errorf("VIP %q: want %s", s, VIPUsage)
	}
	p, err := ParseProto(proto)
	if err != nil {
		return VIPKey{}, fmt.Errorf("VIP %q: %w", s, err)
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil {
		if a, aerr := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")); aerr == nil {
			return VIPKey{}, fmt.Errorf("VIP %q: no port: add one, e.g. %s/%s (port 0 = every port)", s, p, netip.AddrPortFrom(a, 80))
		}
		return VIPKey{}, fmt.Errorf("VIP %q: want %s", s, VIPUsage)
	}
	return VIPKey{Addr: ap.Addr(), Port: ap.Port(), Proto: p}, nil
}

// VIPName is the URL-safe name of a VIP: protocol, address and port
// joined by dashes, e.g. "tcp-192.0.2.1-80" or "udp-2001:db8::1-53".
func VIPName(k VIPKey) string {
	return k.Proto.String() + "-" + k.Addr.String() + "-" + strconv.Itoa(int(k.Port))
}

// ParseVIPName parses VIPName's form.
func ParseVIPName(s string) (VIPKey, error) {
	first := strings.IndexByte(s, '-')
	last := strings.LastIndexByte(s, '-')
	if first < 0 || first == last {
		return VIPKey{}, fmt.Errorf("VIP name %q: want protocol-address-port, e.g. tcp-192.0.2.1-80", s)
	}
	proto, err := ParseProto(s[:first])
	if err != nil {
		return VIPKey{}, fmt.Errorf("VIP name %q: %v", s, err)
	}
	addr, err := netip.ParseAddr(s[first+1 : last])
	if err != nil {
		return VIPKey{}, fmt.Errorf("VIP name %q: bad address: %v", s, err)
	}
	port, err := strconv.ParseUint(s[last+1:], 10, 16)
	if err != nil {
		return VIPKey{}, fmt.Errorf("VIP name %q: port must be 0-65535", s)
	}
	return VIPKey{Addr: addr, Port: uint16(port), Proto: proto}, nil
}

// RealState says whether a real takes new flows.
type RealState string

// The states of a real.
const (
	// RealActive takes new flows in proportion to its weight.
	RealActive RealState = "active"
	// RealDraining takes no new flows; flows already in the connection
	// table keep going to it.
	RealDraining RealState = "draining"
)
