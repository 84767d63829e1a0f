package realsetup

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/bpf/tc"
)

// Finding is one piece of the set-up that Check looked at.
type Finding struct {
	What string `json:"what"`
	OK   bool   `json:"ok"`
	// Detail says what was found, and for a missing piece what to do.
	Detail string `json:"detail"`
}

// Check looks at each piece a real needs for the VIPs (every VIP Setup
// recorded if none is given) and reports each, so that a real that does
// not answer shows which piece is missing.
func Check(o Options) ([]Finding, error) {
	o.defaults()
	st, err := loadState(o.StateFile)
	if err != nil {
		return nil, err
	}
	vips := o.VIPs
	if len(vips) == 0 && st != nil {
		vips = st.VIPs
	}
	if len(vips) == 0 {
		return nil, fmt.Errorf("no VIP given and no record of a setup in %s: name the VIPs to check", o.StateFile)
	}
	var out []Finding
	add := func(ok bool, what, detail string, a ...any) {
		out = append(out, Finding{What: what, OK: ok, Detail: fmt.Sprintf(detail, a...)})
	}

	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	add(lo.Attrs().Flags&net.FlagUp != 0, "lo is up", "%s", ifElse(lo.Attrs().Flags&net.FlagUp != 0, "up", "lo is down: ip link set lo up"))
	for _, v := range vips {
		has, err := hasAddr(lo, v)
		if err != nil {
			return nil, err
		}
		add(has, "VIP "+v.String()+" on lo", "%s", ifElse(has, "present",
			fmt.Sprintf("missing: the real drops the decapsulated packets; ip addr add %s dev lo (or lbd real setup %s)", vipPrefix(v), v)))
	}

	for _, s := range []struct {
		key  string
		want int
		why  string
	}{
		{"net/ipv4/conf/all/arp_ignore", 1, "the real may answer ARP for the VIP and steal it from the balancer"},
		{"net/ipv4/conf/all/arp_announce", 2, "the real may use the VIP as the source of its ARP requests"},
	} {
		v, err := readSysctl(s.key)
		n, _ := strconv.Atoi(v)
		ok := err == nil && n >= s.want
		add(ok, "sysctl "+dotted(s.key)+" >= "+strconv.Itoa(s.want), "%s", ifElse(ok, "is "+v,
			fmt.Sprintf("is %q: %s; sysctl -w %s=%d", v, s.why, dotted(s.key), s.want)))
	}

	// Decapsulation: the kernel's tunnels or lbd's TC program.
	kernelOK, kernelDetail := checkKernelTunnels(vips)
	bpfOK, bpfDetail := checkBPF(o, st, vips)
	expect := ""
	if st != nil {
		expect = st.Decap
	}
	switch {
	case expect == DecapKernel || (expect == "" && kernelOK):
		add(kernelOK, "decapsulation (kernel tunnels)", "%s", kernelDetail)
		if kernelOK {
			out = append(out, checkTunnelRPFilter()...)
		}
	case expect == DecapBPF || (expect == "" && bpfOK):
		add(bpfOK, "decapsulation (lbd TC program)", "%s", bpfDetail)
	default:
		add(false, "decapsulation", "none: no %s/%s device in external mode (%s) and no lbd_decap TC program (%s); run lbd real setup",
			IPIPDevice, IP6TnlDevice, kernelDetail, bpfDetail)
	}
	return out, nil
}

func dotted(key string) string {
	b := []byte(key)
	for i, c := range b {
		if c == '/' {
			b[i] = '.'
		}
	}
	return string(b)
}

func ifElse(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

// checkKernelTunnels looks for up, collect_md ipip (IPv4 outer) and
// ip6tnl (IPv6 outer) devices, whatever their names.
func checkKernelTunnels(vips []netip.Addr) (bool, string) {
	links, err := netlink.LinkList()
	if err != nil {
		return false, "cannot list links: " + err.Error()
	}
	var ipip, ip6 string
	var problems []string
	for _, l := range links {
		up := l.Attrs().Flags&net.FlagUp != 0
		switch t := l.(type) {
		case *netlink.Iptun:
			if t.FlowBased {
				if up {
					ipip = t.Name
				} else {
					problems = append(problems, t.Name+" is down")
				}
			}
		case *netlink.Ip6tnl:
			if t.FlowBased {
				if up {
					ip6 = t.Name
				} else {
					problems = append(problems, t.Name+" is down")
				}
			}
		}
	}
	if ipip == "" {
		problems = append(problems, "no ipip device in external mode (IPv4 outer headers are not decapsulated)")
	}
	if ip6 == "" {
		problems = append(problems, "no ip6tnl device in external mode (IPv6 outer headers are not decapsulated)")
	}
	if len(problems) == 0 {
		return true, fmt.Sprintf("%s (ipip) and %s (ip6tnl) up in external mode", ipip, ip6)
	}
	return false, fmt.Sprint(problems)
}

// checkTunnelRPFilter: decapsulated packets come in on the tunnel device
// from clients routed elsewhere, so strict rp_filter (1) there drops them;
// the effective value is the larger of "all" and the device's.
func checkTunnelRPFilter() []Finding {
	var out []Finding
	links, _ := netlink.LinkList()
	all, _ := readSysctl("net/ipv4/conf/all/rp_filter")
	for _, l := range links {
		t, ok := l.(*netlink.Iptun)
		if !ok || !t.FlowBased {
			continue
		}
		dev, _ := readSysctl("net/ipv4/conf/" + t.Name + "/rp_filter")
		ok = all != "1" && dev != "1"
		out = append(out, Finding{What: "rp_filter on " + t.Name, OK: ok, Detail: ifElse(ok,
			fmt.Sprintf("all=%s %s=%s", all, t.Name, dev),
			fmt.Sprintf("all=%s %s=%s: strict reverse-path filtering drops decapsulated packets; sysctl -w net.ipv4.conf.%s.rp_filter=0 and net.ipv4.conf.all.rp_filter=2",
				all, t.Name, dev, t.Name))})
	}
	return out
}

// checkBPF looks for lbd_decap on the interface and for the VIPs in its
// pinned VIP map.
func checkBPF(o Options, st *State, vips []netip.Addr) (bool, string) {
	ifname := o.Interface
	pinDir := o.PinDir
	if st != nil && st.Interface != "" {
		ifname, pinDir = st.Interface, st.PinDir
	}
	if ifname == "" {
		var err error
		if ifname, err = defaultRouteInterface(); err != nil {
			return false, err.Error()
		}
	}
	progs, err := tc.Attached(ifname, tc.Ingress)
	if err != nil {
		return false, err.Error()
	}
	var mode tc.Mode
	for _, p := range progs {
		if p.Name == decapProgName {
			mode = p.Mode
		}
	}
	if mode == "" {
		return false, "lbd_decap is not attached to " + ifname + " ingress"
	}
	have, err := pinnedDecapVIPs(pinDir)
	if err != nil {
		return false, fmt.Sprintf("lbd_decap is attached to %s but its VIP map cannot be read: %v", ifname, err)
	}
	var missing []string
	for _, v := range vips {
		if !containsAddr(have, v) {
			missing = append(missing, v.String())
		}
	}
	if len(missing) > 0 {
		return false, fmt.Sprintf("lbd_decap on %s (%s) does not decapsulate for %v: lbd real setup %v", ifname, mode, missing, missing)
	}
	return true, fmt.Sprintf("lbd_decap on %s ingress (%s), VIPs in %s/decap_vips", ifname, mode, pinDir)
}

// pinnedDecapVIPs reads the VIPs of the pinned decap_vips map without
// loading anything (struct addr_key: four address words, then the family).
func pinnedDecapVIPs(pinDir string) ([]netip.Addr, error) {
	m, err := ebpf.LoadPinnedMap(pinDir+"/decap_vips", &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open %s/decap_vips: %w", pinDir, err)
	}
	defer m.Close()
	var (
		key [20]byte
		val uint8
		out []netip.Addr
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		switch binary.NativeEndian.Uint32(key[16:]) {
		case 4:
			out = append(out, netip.AddrFrom4([4]byte(key[:4])))
		case 6:
			out = append(out, netip.AddrFrom16([16]byte(key[:16])))
		}
	}
	return out, it.Err()
}
