package xdp

import (
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// DefaultConfig returns the configuration a freshly loaded balancer has.
func DefaultConfig() Config {
	return Config{
		MTU:            1500,
		EncapSourceV4:  netip.MustParsePrefix("172.16.0.0/16"),
		EncapSourceV6:  netip.MustParsePrefix("100::/64"),
		GUEPort:        6080,
		UDPFlowTimeout: 30 * time.Second,
	}
}

// rawConfig is a configuration as the config map holds it.
func rawConfig(c Config) (balancerLbdConfig, error) {
	var r balancerLbdConfig
	switch len(c.GatewayMAC) {
	case 0:
	case 6:
		copy(r.GwMac[:], c.GatewayMAC)
	default:
		return r, fmt.Errorf("gateway MAC %s: must be a 6-byte Ethernet address", c.GatewayMAC)
	}
	if r.GwMac != [6]uint8{} {
		r.Flags |= balancerLbdConfigFlagLBD_CFG_F_GW_MAC
	}
	r.Mtu = c.MTU
	if c.NewFlowRate > 0 {
		r.NewFlowRate = c.NewFlowRate
		r.Flags |= balancerLbdConfigFlagLBD_CFG_F_NEW_FLOW_RATE
	}
	if c.FragmentPolicy == PolicyPass {
		r.Flags |= balancerLbdConfigFlagLBD_CFG_F_FRAG_PASS
	}
	if c.UnbalanceablePolicy == PolicyPass {
		r.Flags |= balancerLbdConfigFlagLBD_CFG_F_UNBALANCEABLE_PASS
	}
	if !c.EncapSourceV4.IsValid() || !c.EncapSourceV4.Addr().Is4() {
		return r, fmt.Errorf("IPv4 encapsulation source prefix %s: must be an IPv4 prefix such as 172.16.0.0/16", c.EncapSourceV4)
	}
	if !c.EncapSourceV6.IsValid() || !c.EncapSourceV6.Addr().Is6() || c.EncapSourceV6.Addr().Is4In6() {
		return r, fmt.Errorf("IPv6 encapsulation source prefix %s: must be an IPv6 prefix such as 100::/64", c.EncapSourceV6)
	}
	base4, mask4 := prefixWords(c.EncapSourceV4)
	r.EncapSrc4, r.EncapSrc4Mask = base4[0], mask4[0]
	r.EncapSrc6, r.EncapSrc6Mask = prefixWords(c.EncapSourceV6)
	if c.GUESourceV4.IsValid() {
		if !c.GUESourceV4.Is4() {
			return r, fmt.Errorf("GUE IPv4 source %s: not an IPv4 address", c.GUESourceV4)
		}
		w, _ := addrWords(c.GUESourceV4)
		r.GueSrc4 = w[0]
	}
	if c.GUESourceV6.IsValid() {
		if !c.GUESourceV6.Is6() || c.GUESourceV6.Is4In6() {
			return r, fmt.Errorf("GUE IPv6 source %s: not an IPv6 address", c.GUESourceV6)
		}
		r.GueSrc6, _ = addrWords(c.GUESourceV6)
	}
	if c.GUEPort == 0 {
		return r, fmt.Errorf("GUE port 0: set a UDP port (Katran and lbd use 6080)")
	}
	r.GuePort = htons(c.GUEPort)
	if c.UDPFlowTimeout < 0 || c.UDPFlowTimeout > 24*time.Hour {
		return r, fmt.Errorf("UDP flow timeout %s: must be between 0 and 24h", c.UDPFlowTimeout)
	}
	r.UdpTimeoutS = uint32((c.UDPFlowTimeout + time.Second - 1) / time.Second)
	return r, nil
}

// prefixWords returns the prefix's network address and the host-bit mask,
// both as datapath address words.
func prefixWords(p netip.Prefix) (base, mask [4]uint32) {
	p = p.Masked()
	base, _ = addrWords(p.Addr())
	var m [16]byte
	n := p.Addr().BitLen()
	for i := p.Bits(); i < n; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	var ma netip.Addr
	if n == 32 {
		ma = netip.AddrFrom4([4]byte(m[:4]))
	} else {
		ma = netip.AddrFrom16(m)
	}
	mask, _ = addrWords(ma)
	return base, mask
}

// SetConfig validates and installs a configuration.
func (b *Balancer) SetConfig(c Config) error {
	r, err := rawConfig(c)
	if err != nil {
		return err
	}
	r.Hz = b.hz
	if err := b.objs.Config.Update(uint32(0), &r, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write config map: %w", err)
	}
	return nil
}

// Config reads the installed configuration back from the datapath. After
// Open recovered a balancer from its pins this is the configuration the
// previous run left, which Open keeps.
func (b *Balancer) Config() (Config, error) {
	var r balancerLbdConfig
	if err := b.objs.Config.Lookup(uint32(0), &r); err != nil {
		return Config{}, fmt.Errorf("read config map: %w", err)
	}
	return configFromRaw(r)
}

// upgradeConfig rewrites a configuration pinned by an lbd that did not set
// LBD_CFG_F_GW_MAC (the datapath reads the flag, not the MAC, to decide
// whether there is a gateway), so a restart into this version keeps
// sending to the gateway.
func (b *Balancer) upgradeConfig() error {
	var r balancerLbdConfig
	if err := b.objs.Config.Lookup(uint32(0), &r); err != nil {
		return fmt.Errorf("read config map: %w", err)
	}
	if r.GwMac == [6]uint8{} || r.Flags&balancerLbdConfigFlagLBD_CFG_F_GW_MAC != 0 {
		return nil
	}
	r.Flags |= balancerLbdConfigFlagLBD_CFG_F_GW_MAC
	if err := b.objs.Config.Update(uint32(0), &r, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("upgrade config map: %w", err)
	}
	return nil
}

// configFromRaw is the inverse of rawConfig.
func configFromRaw(r balancerLbdConfig) (Config, error) {
	var c Config
	if r.GwMac != [6]uint8{} {
		c.GatewayMAC = net.HardwareAddr(append([]byte(nil), r.GwMac[:]...))
	}
	c.MTU = r.Mtu
	if r.Flags&balancerLbdConfigFlagLBD_CFG_F_NEW_FLOW_RATE != 0 {
		c.NewFlowRate = r.NewFlowRate
	}
	if r.Flags&balancerLbdConfigFlagLBD_CFG_F_FRAG_PASS != 0 {
		c.FragmentPolicy = PolicyPass
	}
	if r.Flags&balancerLbdConfigFlagLBD_CFG_F_UNBALANCEABLE_PASS != 0 {
		c.UnbalanceablePolicy = PolicyPass
	}
	var err error
	if c.EncapSourceV4, err = wordsPrefix([4]uint32{r.EncapSrc4}, [4]uint32{r.EncapSrc4Mask}, familyIPv4); err != nil {
		return Config{}, fmt.Errorf("config map: IPv4 encapsulation source: %w", err)
	}
	if c.EncapSourceV6, err = wordsPrefix(r.EncapSrc6, r.EncapSrc6Mask, familyIPv6); err != nil {
		return Config{}, fmt.Errorf("config map: IPv6 encapsulation source: %w", err)
	}
	if r.GueSrc4 != 0 {
		c.GUESourceV4, _ = wordsAddr([4]uint32{r.GueSrc4}, familyIPv4)
	}
	if r.GueSrc6 != [4]uint32{} {
		c.GUESourceV6, _ = wordsAddr(r.GueSrc6, familyIPv6)
	}
	c.GUEPort = ntohs(r.GuePort)
	c.UDPFlowTimeout = time.Duration(r.UdpTimeoutS) * time.Second
	return c, nil
}

// wordsPrefix is the inverse of prefixWords: the mask holds the host bits.
func wordsPrefix(base, mask [4]uint32, family uint32) (netip.Prefix, error) {
	a, err := wordsAddr(base, family)
	if err != nil {
		return netip.Prefix{}, err
	}
	host := 0
	for _, w := range mask {
		host += bits.OnesCount32(w)
	}
	p := netip.PrefixFrom(a, a.BitLen()-host)
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("base %s with %d host bits is not a prefix", a, host)
	}
	return p, nil
}
