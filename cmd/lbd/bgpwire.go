package main

import (
	"context"
	"time"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control/bgp"
)

// bgpAPI adapts the daemon's BGP node (control/bgp) to the API; control
// does not know the API's types, and the API (which the CLI's client
// links) does not link GoBGP.
type bgpAPI struct{ n *bgp.Node }

// apiBGP is n as the API sees it (a nil interface when BGP is off).
func apiBGP(n *bgp.Node) api.BGP {
	if n == nil {
		return nil
	}
	return bgpAPI{n}
}

// Status implements api.BGP.
func (b bgpAPI) Status(ctx context.Context) (apiv1.BGPStatusJSON, error) {
	s, err := b.n.Status(ctx)
	st := apiv1.BGPStatusJSON{Enabled: true, Drained: s.Drained, LocalAS: s.LocalAS, RouterID: s.RouterID.String(),
		Peers: []apiv1.BGPPeerJSON{}, Prefixes: []apiv1.BGPPrefixJSON{}}
	if err != nil {
		return st, err
	}
	for _, p := range s.Peers {
		j := apiv1.BGPPeerJSON{Address: p.Address.String(), AS: p.ASN, State: p.State, RoutesSent: p.RoutesSent, RoutesReceived: p.RoutesReceived, LastError: p.LastError}
		if !p.Since.IsZero() {
			j.EstablishedAt = p.Since.UTC().Format(time.RFC3339)
			j.UptimeSeconds = int64(time.Since(p.Since) / time.Second)
		}
		st.Peers = append(st.Peers, j)
	}
	for _, p := range s.Prefixes {
		j := apiv1.BGPPrefixJSON{Prefix: p.Prefix.String(), Announced: p.Announced, Reason: p.Reason, VIPs: p.VIPs}
		if !p.Since.IsZero() {
			j.Since = p.Since.UTC().Format(time.RFC3339Nano)
		}
		st.Prefixes = append(st.Prefixes, j)
	}
	return st, nil
}

// SetDrained implements api.BGP.
func (b bgpAPI) SetDrained(drained bool) error { return b.n.SetDrained(drained) }
