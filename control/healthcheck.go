package control

import (
	"context"
	"net/netip"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// TunnelProbes is the health-check encapsulation on the LB node (bpf/tc
// HCEncap): packets with a given socket mark are encapsulated to a given
// real, so a probe of the VIP reaches that real through the same tunnel
// as client traffic.
type TunnelProbes interface {
	SetReal(mark uint32, real netip.Addr) error
	RemoveReal(mark uint32) error
}

// ProbeMarkBase is the first socket mark of tunnel probes: a real's mark
// is ProbeMarkBase plus its datapath index.
const ProbeMarkBase = 0x4c400000

// healthState is the controller's side of health checking.
type healthState struct {
	checker *health.Checker
	tunnel  TunnelProbes
	marks   map[uint32]netip.Addr // what the tunnel map holds
	// down holds the reals that failed their checks, per VIP. A real
	// absent here is up (or not checked).
	down map[lb.VIPKey]map[netip.Addr]bool
}

// StartHealth starts checking the reals of every VIP that has a health
// check, with at most maxConcurrent probes at once, until ctx ends. With
// a tunnel, probes go to the VIP through it; without, to the reals'
// own addresses.
func (c *Controller) StartHealth(ctx context.Context, prober health.Prober, maxConcurrent int, tunnel TunnelProbes) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.health = &healthState{tunnel: tunnel, marks: map[uint32]netip.Addr{}, down: map[lb.VIPKey]map[netip.Addr]bool{}}
	c.health.checker = health.NewChecker(ctx, prober, maxConcurrent, c.healthChanged)
	c.syncHealth()
}

// SetHealthMaxConcurrent changes the bound on health probes in flight
// (a live reload); false when health checks are not running.
func (c *Controller) SetHealthMaxConcurrent(n int) bool {
	c.mu.Lock()
	h := c.health
	c.mu.Unlock()
	if h == nil {
		return false
	}
	h.checker.SetMaxConcurrent(n)
	return true
}

// HealthMaxConcurrent is the bound on health probes in flight (0: health
// checks are not running).
func (c *Controller) HealthMaxConcurrent() int {
	c.mu.Lock()
	h := c.health
	c.mu.Unlock()
	if h == nil {
		return 0
	}
	return h.checker.MaxConcurrent()
}

// isDown reports whether a real of a VIP failed its checks.
func (c *Controller) isDown(key lb.VIPKey, addr netip.Addr) bool {
	return c.health != nil && c.health.down[key][addr]
}

// RealHealth returns the health of a real of a VIP, and false when it is
// not checked.
func (c *Controller) RealHealth(key lb.VIPKey, addr netip.Addr) (health.Status, bool) {
	c.mu.Lock()
	h := c.health
	c.mu.Unlock()
	if h == nil {
		return health.Status{}, false
	}
	return h.checker.Status(health.Key{VIP: lb.VIPName(key), Real: addr})
}

// syncHealth makes the running checks and the tunnel's marks match the
// desired state. c.mu is held.
func (c *Controller) syncHealth() {
	h := c.health
	if h == nil {
		return
	}
	want := map[health.Key]struct {
		Target health.Target
		Spec   health.Spec
	}{}
	marks := map[uint32]netip.Addr{}
	for key, v := range c.vips {
		if v.Health.Type == health.None {
			delete(h.down, key)
			continue
		}
		port := v.Key.Port
		if v.Health.Port != 0 {
			port = v.Health.Port
		}
		for _, r := range v.Reals {
			t := health.Target{VIP: lb.VIPName(key), Dest: netip.AddrPortFrom(key.Addr, port), Real: r.Addr}
			if h.tunnel != nil {
				if id, ok := c.slots[RealKey{key, r.Addr}]; ok {
					t.Mark = ProbeMarkBase + uint32(id)
					marks[t.Mark] = r.Addr
				}
			}
			want[health.Key{VIP: t.VIP, Real: r.Addr}] = struct {
				Target health.Target
				Spec   health.Spec
			}{t, v.Health}
		}
		// Forget the health of reals the VIP no longer has.
		for a := range h.down[key] {
			if _, ok := v.Real(a); !ok {
				delete(h.down[key], a)
			}
		}
	}
	for key := range h.down {
		if _, ok := c.vips[key]; !ok {
			delete(h.down, key)
		}
	}
	if h.tunnel != nil {
		for m, a := range marks {
			if h.marks[m] == a {
				continue
			}
			if err := h.tunnel.SetReal(m, a); err != nil {
				c.log.Error("health-check tunnel: set real", "real", a, "mark", m, "err", err)
				continue
			}
			h.marks[m] = a
		}
		for m := range h.marks {
			if _, ok := marks[m]; ok {
				continue
			}
			if err := h.tunnel.RemoveReal(m); err != nil {
				c.log.Warn("health-check tunnel: remove real", "mark", m, "err", err)
				continue
			}
			delete(h.marks, m)
		}
	}
	h.checker.Set(want)
}

// healthChanged applies a real's new health: the VIP's ring is rebuilt
// without (or with) it, and with the reset policy its flows leave the
// connection table.
func (c *Controller) healthChanged(ch health.Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key, err := lb.ParseVIPName(ch.Key.VIP)
	if err != nil || c.health == nil {
		return
	}
	v, ok := c.vips[key]
	if !ok {
		return
	}
	if _, ok := v.Real(ch.Key.Real); !ok {
		return
	}
	down := ch.Status.State == health.Down
	if c.shared {
		// The fleet decides: record the observation, change no ring.
		rk := RealKey{key, ch.Key.Real}
		if down {
			c.localDown[rk] = true
		} else {
			delete(c.localDown, rk)
		}
		c.publish(Event{Type: "real_health", VIP: ch.Key.VIP, Real: ch.Key.Real.String(), State: string(ch.Status.State),
			Reason: "observed here (the fleet's quorum decides the ring): " + ch.Status.Reason})
		return
	}
	if down {
		if c.health.down[key] == nil {
			c.health.down[key] = map[netip.Addr]bool{}
		}
		c.health.down[key][ch.Key.Real] = true
	} else {
		delete(c.health.down[key], ch.Key.Real)
	}
	changes, err := c.converge(key, v, false)
	log := c.log.With("vip", ch.Key.VIP, "real", ch.Key.Real, "state", ch.Status.State, "reason", ch.Status.Reason)
	if err != nil {
		log.Error("real changed health, but the ring could not follow; the next reconcile retries", "err", err)
	} else {
		log.Warn("real changed health", "changes", changes)
	}
	removed := 0
	if down && v.DownFlows == ResetFlows {
		removed = c.resetFlows(key, ch.Key.Real)
	}
	c.publish(Event{Type: "real_health", VIP: ch.Key.VIP, Real: ch.Key.Real.String(), State: string(ch.Status.State),
		Reason: ch.Status.Reason, FlowsRemoved: removed})
}

// resetFlows deletes a VIP's connection table entries that go to any of
// addrs (the indices of those pairs), in one pass over the table.
func (c *Controller) resetFlows(key lb.VIPKey, addrs ...netip.Addr) int {
	vip, err := c.dp.LookupVIP(key)
	if err != nil {
		return 0
	}
	ids := map[datapath.RealID]bool{}
	for _, a := range addrs {
		if id, ok := c.slots[RealKey{key, a}]; ok {
			ids[id] = true
		}
	}
	if len(ids) == 0 {
		return 0
	}
	n, err := c.dp.DeleteFlows(func(f datapath.Flow) bool { return f.VIPNum == vip.Num && ids[f.Real] })
	if err != nil {
		c.log.Error("reset flows", "vip", lb.VIPName(key), "reals", addrs, "err", err)
	}
	return n
}
