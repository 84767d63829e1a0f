package control

import (
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
)

// Serving reports whether this node can take new flows of a VIP: the VIP
// exists and has a real that takes new flows (active, weight > 0) and is
// not down by its health checks. It is what decides whether the node
// announces the VIP to its routers (control/bgp): a node whose reals are
// all down withdraws, so that the routers send the VIP's clients to nodes
// that can serve them. (The VIP's AllDown policy only says what the
// datapath does with the packets that still arrive.)
func (c *Controller) Serving(key lb.VIPKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serving(key)
}

// ServingVIPs is Serving for every desired VIP, read at one instant.
func (c *Controller) ServingVIPs() map[lb.VIPKey]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[lb.VIPKey]bool, len(c.vips))
	for k := range c.vips {
		out[k] = c.serving(k)
	}
	return out
}

// serving is Serving with c.mu held.
func (c *Controller) serving(key lb.VIPKey) bool {
	v, ok := c.vips[key]
	if !ok {
		return false
	}
	for _, r := range v.Reals {
		if !r.Eligible() {
			continue
		}
		if v.Health.Type != health.None && c.isDown(key, r.Addr) {
			continue
		}
		return true
	}
	return false
}
