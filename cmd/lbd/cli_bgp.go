package main

import (
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// newBGPCommand is `lbd bgp`: the BGP sessions and the VIP addresses.
func newBGPCommand(cfg *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:     "bgp",
		Short:   "Show the BGP sessions and which VIP addresses are announced (and why not)",
		Args:    cobra.NoArgs,
		Example: "  lbd bgp\n  lbd bgp -o json",
		RunE: cfg.run(func(s *session, _ []string) error {
			st, err := s.api.BGP(s.ctx)
			if err != nil {
				return err
			}
			return s.emit(st, func(w io.Writer) { bgpTables(w, st) })
		}),
	}
}

// newDrainCommand is `lbd drain [--undo]`.
func newDrainCommand(cfg *clientConfig) *cobra.Command {
	var undo bool
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Withdraw every VIP from the routers (the node keeps forwarding what still arrives); --undo announces them again",
		Long: `Drain the node: every VIP address is withdrawn from the BGP peers, so the
routers send new traffic to the other nodes, while this node keeps
forwarding whatever still reaches it. The drain survives a restart of lbd
until lbd drain --undo. Use it before maintenance or an upgrade; see
docs/edge.md.`,
		Args:    cobra.NoArgs,
		Example: "  lbd drain\n  lbd drain --undo",
		RunE: cfg.run(func(s *session, _ []string) error {
			op := s.api.Drain
			if undo {
				op = s.api.Undrain
			}
			st, err := op(s.ctx)
			if err != nil {
				return err
			}
			if undo {
				s.note("undrained: announcing every VIP address this node can serve")
			} else {
				s.note("drained: every VIP address is withdrawn; the node keeps forwarding established flows")
			}
			return s.emit(st, func(w io.Writer) { bgpTables(w, st) })
		}),
	}
	cmd.Flags().BoolVar(&undo, "undo", false, "announce the VIPs again")
	return cmd
}

// bgpTables prints the sessions, then the prefixes.
func bgpTables(w io.Writer, st apiv1.BGPStatusJSON) {
	if !st.Enabled {
		row(w, "BGP is not configured on this node: no VIP is announced")
		return
	}
	drained := "no"
	if st.Drained {
		drained = "yes (lbd drain --undo announces again)"
	}
	row(w, "LOCAL AS", st.LocalAS, "ROUTER ID", st.RouterID, "DRAINED", drained)
	row(w)
	row(w, "PEER", "AS", "STATE", "UPTIME", "SENT", "RECEIVED", "LAST ERROR")
	for _, p := range st.Peers {
		up := "-"
		if p.State == "established" {
			up = (time.Duration(p.UptimeSeconds) * time.Second).String()
		}
		row(w, p.Address, p.AS, p.State, up, p.RoutesSent, p.RoutesReceived, dash(p.LastError))
	}
	row(w)
	row(w, "PREFIX", "ANNOUNCED", "VIPS", "WHY NOT")
	for _, p := range st.Prefixes {
		ann := "no"
		if p.Announced {
			ann = "yes"
		}
		row(w, p.Prefix, ann, strings.Join(p.VIPs, ","), dash(p.Reason))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
