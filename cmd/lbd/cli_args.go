package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/lb"
)

// vipName is the API's name of a VIP argument.
func vipName(s string) (string, error) {
	key, err := lb.ParseVIP(s)
	if err != nil {
		return "", err
	}
	return lb.VIPName(key), nil
}

// vipDisplay writes a VIP the way users type it: tcp/192.0.2.1:80.
func vipDisplay(v apiv1.VIPJSON) string {
	a, err := netip.ParseAddr(v.Address)
	if err != nil {
		return v.Name
	}
	return v.Protocol + "/" + netip.AddrPortFrom(a, v.Port).String()
}

// parseRealAddr reads a real's address (plain, or IPv6 in brackets).
func parseRealAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("real %q: not an IPv4 or IPv6 address", s)
	}
	return a, nil
}

// parseRealSpec reads "ADDR" or "ADDR:WEIGHT"; an IPv6 address with a
// weight goes in brackets ("[2001:db8::10]:3"), since "2001:db8::10:3"
// is itself an address.
func parseRealSpec(s string) (apiv1.RealJSON, error) {
	const usage = "want ADDR or ADDR:WEIGHT, e.g. 10.0.0.1:3 or [2001:db8::10]:3"
	if a, err := parseRealAddr(s); err == nil {
		return apiv1.RealJSON{Address: a.String()}, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return apiv1.RealJSON{}, fmt.Errorf("real %q: %s", s, usage)
	}
	host, ws := s[:i], s[i+1:]
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		return apiv1.RealJSON{}, fmt.Errorf("real %q: %s", s, usage)
	}
	a, err := parseRealAddr(host)
	if err != nil {
		return apiv1.RealJSON{}, fmt.Errorf("real %q: %s", s, usage)
	}
	w, err := strconv.ParseUint(ws, 10, 32)
	if err != nil {
		return apiv1.RealJSON{}, fmt.Errorf("real %q: weight %q must be a whole number from 0 to %d", s, ws, uint32(1<<32-1))
	}
	w32 := uint32(w)
	return apiv1.RealJSON{Address: a.String(), Weight: &w32}, nil
}
