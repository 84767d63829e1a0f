package main

import (
	"errors"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// newFleetCommand is `lbd fleet status`.
func newFleetCommand(cfg *clientConfig) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "The fleet of lbd nodes sharing one desired state through etcd (lbd serve --store etcd)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show every node of the fleet, what it runs, and whether they agree",
		Long: `Every node of the fleet reports the revision of the fleet's desired state
it applied, its fingerprint, its BGP state and the reals its own probes
see down. The fleet agrees when every node applied the fleet's revision
and all fingerprints are equal. Exits non-zero when they do not.`,
		Args:    cobra.NoArgs,
		Example: "  lbd fleet status\n  lbd fleet status -o json",
		RunE: cfg.run(func(s *session, _ []string) error {
			st, err := s.api.Fleet(s.ctx)
			if err != nil {
				return err
			}
			if err := s.emit(st, func(w io.Writer) { fleetTable(w, st) }); err != nil {
				return err
			}
			if st.Enabled && !st.Agree {
				return errors.New("the fleet's nodes do not agree: " + strings.Join(st.Disagree, "; "))
			}
			return nil
		}),
	})
	return cmd
}

func fleetTable(w io.Writer, st apiv1.FleetStatusJSON) {
	if !st.Enabled {
		row(w, "this node is not in a fleet: its desired state is its state file (lbd serve --store etcd makes a fleet)")
		return
	}
	agree := "yes"
	if !st.Agree {
		agree = "NO"
	}
	cached := ""
	if st.Stale {
		cached = " (this node is STALE: cut off from etcd, forwarding with its last applied state)"
	} else if st.Cached {
		cached = " (etcd does not answer: last status read)"
	}
	row(w, "FLEET", st.Fleet, "REVISION", st.Revision, "AGREE", agree+cached)
	row(w)
	row(w, "NODE", "REVISION", "FINGERPRINT", "BGP", "STALE", "SEES DOWN", "UPDATED")
	for _, n := range st.Nodes {
		name := n.Node
		if n.Node == st.Node {
			name += " (this)"
		}
		stale := "no"
		if n.Stale {
			stale = "yes"
		}
		down := strings.Join(n.Down, ",")
		if down == "" {
			down = "-"
		}
		row(w, name, n.Revision, apiv1.ShortFingerprint(n.Fingerprint), n.BGP, stale, down, n.Updated)
	}
	for _, d := range st.Disagree {
		row(w, "disagrees: "+d)
	}
}
