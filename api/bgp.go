package api

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// BGP is the daemon's BGP announcement of its VIPs, as the API sees it
// (the daemon adapts control/bgp to it; nil when BGP is not configured).
type BGP interface {
	// Status returns the sessions, the VIP addresses and the drain state.
	Status(ctx context.Context) (apiv1.BGPStatusJSON, error)
	// SetDrained withdraws every VIP (true) or announces again what the
	// node can serve (false); the datapath keeps forwarding either way.
	SetDrained(drained bool) error
}

func (s *Server) routeBGP(g *echo.Group) error {
	g.GET("/bgp", s.getBGP)
	g.POST("/drain", s.drain)
	g.DELETE("/drain", s.undrain)
	return s.opts.Registry.Register(&bgpCollector{bgp: s.opts.BGP})
}

func (s *Server) bgpStatus(c echo.Context) (apiv1.BGPStatusJSON, error) {
	if s.opts.BGP == nil {
		return apiv1.BGPStatusJSON{Peers: []apiv1.BGPPeerJSON{}, Prefixes: []apiv1.BGPPrefixJSON{}}, nil
	}
	return s.opts.BGP.Status(c.Request().Context())
}

func (s *Server) getBGP(c echo.Context) error {
	st, err := s.bgpStatus(c)
	if err != nil {
		return err
	}
	return reply(c, http.StatusOK, st)
}

func (s *Server) setDrained(c echo.Context, drained bool) error {
	if s.opts.BGP == nil {
		return problem(http.StatusConflict, "BGP is not configured on this node, so it announces no VIP and there is nothing to drain: configure the bgp section (or --bgp-as, --bgp-router-id, --bgp-peer) to announce VIPs")
	}
	if err := s.opts.BGP.SetDrained(drained); err != nil {
		return err
	}
	return s.getBGP(c)
}

func (s *Server) drain(c echo.Context) error   { return s.setDrained(c, true) }
func (s *Server) undrain(c echo.Context) error { return s.setDrained(c, false) }

var (
	descBGPSessionUp = prometheus.NewDesc("lbd_bgp_session_up", "BGP session with a peer: 1 established, 0 not.", []string{"peer"}, nil)
	descBGPAnnounced = prometheus.NewDesc("lbd_bgp_announced_prefixes", "VIP addresses announced over BGP.", nil, nil)
	descDrained      = prometheus.NewDesc("lbd_drained", "1 while the node is drained (lbd drain): no VIP is announced.", nil, nil)
	descBGPError     = prometheus.NewDesc("lbd_bgp_scrape_errors_total", "Failed reads of the BGP state during this scrape.", nil, nil)
)

// bgpCollector reads the BGP state at scrape time. Without BGP it says
// nothing is announced and the node is not drained.
type bgpCollector struct{ bgp BGP }

func (b *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBGPSessionUp, descBGPAnnounced, descDrained, descBGPError} {
		ch <- d
	}
}

func (b *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	var st apiv1.BGPStatusJSON
	if b.bgp != nil {
		var err error
		if st, err = b.bgp.Status(context.Background()); err != nil {
			ch <- prometheus.NewInvalidMetric(descBGPError, err)
			return
		}
	}
	announced, drained := 0, 0
	for _, p := range st.Prefixes {
		if p.Announced {
			announced++
		}
	}
	if st.Drained {
		drained = 1
	}
	for _, p := range st.Peers {
		up := 0.0
		if p.State == "established" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBGPSessionUp, prometheus.GaugeValue, up, p.Address)
	}
	ch <- prometheus.MustNewConstMetric(descBGPAnnounced, prometheus.GaugeValue, float64(announced))
	ch <- prometheus.MustNewConstMetric(descDrained, prometheus.GaugeValue, float64(drained))
}
