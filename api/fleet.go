package api

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control/fleet"
)

// Fleet is the node's fleet (lbd serve --store etcd).
type Fleet interface {
	// Status is the fleet as this node sees it; cached is true when etcd
	// did not answer and the status is the last one read.
	Status(ctx context.Context) (st fleet.Status, cached bool, err error)
	// Node is this node's name.
	Node() string
	// Stale tells whether etcd has not answered this node for
	// --fleet-stale-after.
	Stale() bool
}

func (s *Server) getFleet(c echo.Context) error {
	out := apiv1.FleetStatusJSON{Disagree: []string{}, Nodes: []apiv1.FleetNodeJSON{}}
	if s.opts.Fleet == nil {
		return reply(c, http.StatusOK, out)
	}
	st, cached, err := s.opts.Fleet.Status(c.Request().Context())
	if err != nil {
		return problem(http.StatusServiceUnavailable, "etcd does not answer and this node has read no fleet status yet: "+err.Error())
	}
	out.Enabled, out.Fleet, out.Node, out.Revision, out.Agree, out.Cached = true, st.Fleet, s.opts.Fleet.Node(), st.Revision, st.Agree, cached
	out.Stale = s.opts.Fleet.Stale()
	out.Disagree = append(out.Disagree, st.Disagree...)
	for _, r := range st.Nodes {
		out.Nodes = append(out.Nodes, apiv1.FleetNodeJSON{Node: r.Node, Revision: r.Revision, Fingerprint: r.Fingerprint, BGP: r.BGP,
			Stale: r.Stale, Down: append([]string{}, r.Down...), Updated: r.Updated.UTC().Format(time.RFC3339Nano)})
	}
	return reply(c, http.StatusOK, out)
}
