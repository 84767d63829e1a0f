package control

import (
	"net/netip"
	"slices"

	"github.com/lbd-dev/lbd/lb"
)

// SetSharedHealth makes the rings follow a health decision shared by
// many nodes (a fleet's quorum): this node's probes still run, but their
// results are only its observations (LocalDown); which reals are down
// is set by SetSharedDown. Call it before StartHealth.
func (c *Controller) SetSharedHealth(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shared = on
	c.localDown = map[RealKey]bool{}
}

// LocalDown are the reals this node's own probes see down (with shared
// health), sorted.
func (c *Controller) LocalDown() []RealKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []RealKey
	for k := range c.localDown {
		if v, ok := c.vips[k.VIP]; ok {
			if _, ok := v.Real(k.Addr); ok {
				out = append(out, k)
			}
		}
	}
	slices.SortFunc(out, func(a, b RealKey) int {
		if n := a.VIP.Addr.Compare(b.VIP.Addr); n != 0 {
			return n
		}
		if a.VIP.Port != b.VIP.Port {
			return int(a.VIP.Port) - int(b.VIP.Port)
		}
		if a.VIP.Proto != b.VIP.Proto {
			return int(a.VIP.Proto) - int(b.VIP.Proto)
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}

// SetSharedDown makes down the set of reals the rings leave out (with
// shared health and health checks running): every VIP whose set changes
// gets its ring rebuilt. It returns the VIPs changed.
func (c *Controller) SetSharedDown(down map[RealKey]bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health
	if h == nil || !c.shared {
		return 0
	}
	want := map[lb.VIPKey]map[netip.Addr]bool{}
	for k := range down {
		v, ok := c.vips[k.VIP]
		if !ok {
			continue
		}
		if _, ok := v.Real(k.Addr); !ok {
			continue
		}
		if want[k.VIP] == nil {
			want[k.VIP] = map[netip.Addr]bool{}
		}
		want[k.VIP][k.Addr] = true
	}
	changed := 0
	for key, v := range c.vips {
		if sameSet(h.down[key], want[key]) {
			continue
		}
		old := h.down[key]
		if want[key] == nil {
			delete(h.down, key)
		} else {
			h.down[key] = want[key]
		}
		changes, err := c.converge(key, v, false)
		if err != nil {
			c.log.Error("the fleet's health changed, but the ring could not follow; the next reconcile retries", "vip", lb.VIPName(key), "err", err)
		} else {
			c.log.Warn("the fleet's health changed the ring", "vip", lb.VIPName(key), "down", len(want[key]), "changes", changes)
		}
		for a := range want[key] {
			if !old[a] {
				removed := 0
				if v.DownFlows == ResetFlows {
					removed = c.resetFlows(key, a)
				}
				c.publish(Event{Type: "real_health", VIP: lb.VIPName(key), Real: a.String(), State: "down", Reason: "a quorum of the fleet sees it down", FlowsRemoved: removed})
			}
		}
		for a := range old {
			if !want[key][a] {
				c.publish(Event{Type: "real_health", VIP: lb.VIPName(key), Real: a.String(), State: "up", Reason: "no quorum of the fleet sees it down"})
			}
		}
		changed++
	}
	return changed
}

func sameSet(a, b map[netip.Addr]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
