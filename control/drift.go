package control

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// SetDatapathConfig gives the controller the datapath configuration it
// should hold (the one the daemon installed at start): Reconcile then
// repairs the config map too. Without a call the config map is not
// checked.
func (c *Controller) SetDatapathConfig(cfg datapath.Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dpConfig = &cfg
}

// mapDrift collects the differences found in one kernel map.
type mapDrift struct {
	drifts []Drift
}

func (m *mapDrift) add(mapName, vip, format string, args ...any) {
	for i := range m.drifts {
		if m.drifts[i].Map == mapName && m.drifts[i].VIP == vip {
			m.drifts[i].Changes = append(m.drifts[i].Changes, fmt.Sprintf(format, args...))
			return
		}
	}
	m.drifts = append(m.drifts, Drift{VIP: vip, Map: mapName, Changes: []string{fmt.Sprintf(format, args...)}})
}

func (m *mapDrift) fail(mapName, vip string, err error) {
	if err == nil {
		return
	}
	for i := range m.drifts {
		if m.drifts[i].Map == mapName && m.drifts[i].VIP == vip && m.drifts[i].Error == "" {
			m.drifts[i].Error = err.Error()
			return
		}
	}
	m.drifts = append(m.drifts, Drift{VIP: vip, Map: mapName, Error: err.Error()})
}

// repairMaps compares what the kernel maps hold (vips, vip_info,
// vip_addrs, vip_filter, reals, config) with what the installed VIPs and
// reals need, and rewrites what differs from the datapath's bookkeeping:
// a repaired VIP keeps its number and generation, so its counters and
// connection table entries stay its own. Rings are compared afterwards,
// by converge. The caller holds c.mu.
func (c *Controller) repairMaps() ([]Drift, error) {
	ms, err := c.dp.ReadMaps()
	if err != nil {
		return nil, fmt.Errorf("read the datapath's maps: %w", err)
	}
	var d mapDrift
	installed := map[lb.VIPKey]datapath.VIP{}
	for _, v := range c.dp.VIPs() {
		installed[v.Key] = v
	}
	keys := slices.SortedFunc(maps.Keys(installed), lb.VIPKey.Compare)

	// vips and vip_info: one repair rewrites both (and the VIP's
	// vip_addrs entry and filter bit).
	repair := map[lb.VIPKey]bool{}
	nums := map[uint32]bool{}
	for _, k := range keys {
		v := installed[k]
		nums[v.Num] = true
		name := lb.VIPName(k)
		switch num, ok := ms.VIPs[k]; {
		case !ok:
			d.add(datapath.MapVIPs, name, "entry missing: rewrote it (number %d)", v.Num)
			repair[k] = true
		case num != v.Num:
			d.add(datapath.MapVIPs, name, "entry points to number %d: rewrote it (number %d)", num, v.Num)
			repair[k] = true
		}
		want := datapath.VIPInfo{Flags: v.Flags, RingSize: v.RingSize, Buf: v.Buf, Gen: v.Gen}
		if have, ok := ms.VIPInfo[v.Num]; !ok {
			d.add(datapath.MapVIPInfo, name, "entry %d cleared: rewrote it (generation %d, flags %#x, ring %d)", v.Num, v.Gen, uint32(v.Flags), v.RingSize)
			repair[k] = true
		} else if have != want {
			d.add(datapath.MapVIPInfo, name, "entry %d held %+v: rewrote it to %+v", v.Num, have, want)
			repair[k] = true
		}
	}
	for _, k := range keys {
		if repair[k] {
			d.fail(datapath.MapVIPs, lb.VIPName(k), c.dp.RepairVIP(k))
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(ms.VIPs), lb.VIPKey.Compare) {
		if _, ok := installed[k]; ok {
			continue
		}
		d.add(datapath.MapVIPs, lb.VIPName(k), "stray entry (number %d) that lbd did not make: deleted it", ms.VIPs[k])
		d.fail(datapath.MapVIPs, lb.VIPName(k), c.dp.ClearVIPEntry(k))
	}
	if len(ms.BadVIPs) > 0 {
		d.add(datapath.MapVIPs, "", "%d entries with an unknown address family: deleted them", len(ms.BadVIPs))
		d.fail(datapath.MapVIPs, "", c.dp.ClearVIPEntry(lb.VIPKey{}))
	}
	for _, n := range slices.Sorted(maps.Keys(ms.VIPInfo)) {
		if nums[n] {
			continue
		}
		d.add(datapath.MapVIPInfo, "", "entry %d of no VIP held %+v: freed it", n, ms.VIPInfo[n])
		d.fail(datapath.MapVIPInfo, "", c.dp.ClearVIPInfo(n))
	}

	// vip_addrs and vip_filter: what the VIP keys need.
	addrs := map[netip.Addr]bool{}
	for _, k := range keys {
		addrs[k.Addr] = true
	}
	syncAddrs := false
	for _, a := range slices.SortedFunc(maps.Keys(addrs), netip.Addr.Compare) {
		want := datapath.AddrFlagsOf(a, keys)
		switch have, ok := ms.VIPAddrs[a]; {
		case !ok:
			d.add(datapath.MapVIPAddrs, "", "entry of %s missing: rewrote it", a)
			syncAddrs = true
		case have != want:
			d.add(datapath.MapVIPAddrs, "", "entry of %s held flags %#x, want %#x: rewrote it", a, uint32(have), uint32(want))
			syncAddrs = true
		}
	}
	for _, a := range slices.SortedFunc(maps.Keys(ms.VIPAddrs), netip.Addr.Compare) {
		if !addrs[a] {
			d.add(datapath.MapVIPAddrs, "", "stray entry of %s, which no VIP has: deleted it", a)
			syncAddrs = true
		}
	}
	wantFilter := c.dp.FilterOf(slices.Collect(maps.Keys(addrs)))
	if !slices.Equal(wantFilter, ms.Filter) {
		n := 0
		for i := range max(len(wantFilter), len(ms.Filter)) {
			var w, h uint64
			if i < len(wantFilter) {
				w = wantFilter[i]
			}
			if i < len(ms.Filter) {
				h = ms.Filter[i]
			}
			if w != h {
				n++
			}
		}
		d.add(datapath.MapVIPFilter, "", "%d words differ from the VIP addresses' bits: rewrote the bitmap", n)
		syncAddrs = true
	}
	if syncAddrs {
		err := c.dp.SyncAddrs()
		d.fail(datapath.MapVIPAddrs, "", err)
	}

	// reals: every defined index holds its address, nothing else is
	// defined. Each (VIP, real) pair has an index of its own (c.slots),
	// so an address may be at several indices: the check is per index.
	// The indices are the datapath's bookkeeping, a superset of the
	// pairs' (after a restart it has every index recovered from the pins:
	// until the first reconcile ends a pair may adopt one of them, and
	// collectReals undefines those no pair has, deleting their
	// connection table entries). So an index no pair owns is not cleared
	// here but kept right until it is collected; only an index the
	// datapath never defined is stray.
	defined := c.dp.RealSlots()
	owner := make(map[datapath.RealID]RealKey, len(c.slots))
	for pk, id := range c.slots {
		owner[id] = pk
	}
	for _, id := range slices.Sorted(maps.Keys(defined)) {
		a := defined[id]
		of := ""
		if pk, ok := owner[id]; ok && pk.Addr == a {
			of = " of VIP " + lb.VIPName(pk.VIP)
		}
		switch have, ok := ms.Reals[id]; {
		case !ok:
			d.add(datapath.MapReals, "", "entry %d of real %s%s cleared: rewrote it", id, a, of)
		case have != a:
			d.add(datapath.MapReals, "", "entry %d held %s instead of real %s%s: rewrote it", id, have, a, of)
		default:
			continue
		}
		d.fail(datapath.MapReals, "", c.dp.RepairRealSlot(id))
	}
	stray := slices.Collect(maps.Keys(ms.Reals))
	stray = append(stray, ms.BadReals...)
	slices.Sort(stray)
	for _, id := range stray {
		if _, ok := defined[id]; ok {
			continue
		}
		if a, ok := ms.Reals[id]; ok {
			d.add(datapath.MapReals, "", "stray entry %d (%s) that lbd did not define: cleared it", id, a)
		} else {
			d.add(datapath.MapReals, "", "entry %d holds no valid address: cleared it", id)
		}
		d.fail(datapath.MapReals, "", c.dp.ClearReal(id))
	}

	// config: the configuration the daemon installed.
	if want := c.dpConfig; want != nil && (ms.ConfigErr != nil || !sameConfig(*want, ms.Config)) {
		if ms.ConfigErr != nil {
			d.add(datapath.MapConfig, "", "holds no valid configuration (%v): rewrote it", ms.ConfigErr)
		} else {
			d.add(datapath.MapConfig, "", "held %s: rewrote it to %s", configString(ms.Config), configString(*want))
		}
		d.fail(datapath.MapConfig, "", c.dp.SetConfig(*want))
	}
	return d.drifts, nil
}

// sameConfig compares configurations as the config map holds them (UDP
// timeouts in whole seconds).
func sameConfig(a, b datapath.Config) bool {
	return configString(a) == configString(b)
}

// changeMap names the map a change of converge's went to.
func changeMap(change string) string {
	switch {
	case strings.HasPrefix(change, "replaced ring"):
		return datapath.MapRings
	case strings.HasPrefix(change, "defined real"):
		return datapath.MapReals
	case strings.HasPrefix(change, "set flags"):
		return datapath.MapVIPInfo
	}
	return datapath.MapVIPs
}

func configString(c datapath.Config) string {
	return fmt.Sprintf("{gateway_mac:%s mtu:%d fragments:%s unbalanceable:%s encap_v4:%s encap_v6:%s gue_v4:%s gue_v6:%s gue_port:%d udp_timeout:%s new_flow_rate:%d}",
		c.GatewayMAC, c.MTU, c.FragmentPolicy, c.UnbalanceablePolicy, c.EncapSourceV4, c.EncapSourceV6, c.GUESourceV4, c.GUESourceV6, c.GUEPort,
		(c.UDPFlowTimeout+time.Second-1)/time.Second*time.Second, c.NewFlowRate)
}
