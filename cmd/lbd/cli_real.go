package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

func newRealCommand(cfg *clientConfig) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "real",
		Short: "List and change the real servers of a VIP",
		Long: "A VIP is written " + lb.VIPUsage + ".\n" +
			"A real is an IPv4 or IPv6 address; where a weight can follow, write ADDR:WEIGHT or [IPv6]:WEIGHT.",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:     "list VIP",
			Short:   "List a VIP's reals",
			Args:    cobra.ExactArgs(1),
			Example: "  lbd real list tcp/192.0.2.1:80",
			RunE: cfg.run(func(s *session, args []string) error {
				name, err := vipName(args[0])
				if err != nil {
					return err
				}
				reals, err := s.api.ListReals(s.ctx, name)
				if err != nil {
					return err
				}
				return s.emit(apiv1.RealListJSON{Reals: reals}, func(w io.Writer) { realsTable(w, reals) })
			}),
		},
		newRealAddCommand(cfg),
		newRealSetCommand(cfg),
		&cobra.Command{
			Use:     "drain VIP ADDR",
			Short:   "Stop sending new flows to a real; its existing flows keep going to it",
			Args:    cobra.ExactArgs(2),
			Example: "  lbd real drain tcp/192.0.2.1:80 10.0.0.1",
			RunE: cfg.run(func(s *session, args []string) error {
				return s.changeReal(args[0], args[1], nil, new(string(control.RealDraining)))
			}),
		},
		&cobra.Command{
			Use:     "remove VIP ADDR",
			Aliases: []string{"rm", "delete"},
			Short:   "Remove a real (its flows of this VIP move to other reals; drain it first to let them finish)",
			Args:    cobra.ExactArgs(2),
			Example: "  lbd real remove tcp/192.0.2.1:80 10.0.0.1",
			RunE: cfg.run(func(s *session, args []string) error {
				name, err := vipName(args[0])
				if err != nil {
					return err
				}
				addr, err := parseRealAddr(args[1])
				if err != nil {
					return err
				}
				if err := s.api.DeleteReal(s.ctx, name, addr.String()); err != nil {
					return err
				}
				s.note("removed real %s from VIP %s", addr, args[0])
				return nil
			}),
		},
		newRealReplaceCommand(cfg),
	)
	cmd.AddCommand(newRealHostCommands(cfg)...) // real_setup.go: on the real itself
	return cmd
}

func newRealAddCommand(cfg *clientConfig) *cobra.Command {
	var weight uint32
	cmd := &cobra.Command{
		Use:     "add VIP ADDR",
		Short:   "Add a real to a VIP (active, weight 1 unless --weight)",
		Args:    cobra.ExactArgs(2),
		Example: "  lbd real add tcp/192.0.2.1:80 10.0.0.3 --weight 2",
	}
	cmd.Flags().Uint32Var(&weight, "weight", 1, "relative share of new flows; 0 = none")
	cmd.RunE = cfg.run(func(s *session, args []string) error {
		name, err := vipName(args[0])
		if err != nil {
			return err
		}
		addr, err := parseRealAddr(args[1])
		if err != nil {
			return err
		}
		r, created, err := s.api.PutReal(s.ctx, name, addr.String(), apiv1.RealSettingsJSON{Weight: &weight, State: string(control.RealActive)})
		if err != nil {
			return err
		}
		if !created {
			s.note("real %s was already in VIP %s: it is now active with weight %d", addr, args[0], weight)
		}
		return s.emit(r, func(w io.Writer) { realsTable(w, []apiv1.RealJSON{r}) })
	})
	return cmd
}

func newRealSetCommand(cfg *clientConfig) *cobra.Command {
	var weight uint32
	var state string
	cmd := &cobra.Command{
		Use:   "set VIP ADDR",
		Short: "Change a real's weight or state (only the flags given)",
		Args:  cobra.ExactArgs(2),
		Example: "  lbd real set tcp/192.0.2.1:80 10.0.0.1 --weight 5\n" +
			"  lbd real set tcp/192.0.2.1:80 10.0.0.1 --state active",
	}
	cmd.Flags().Uint32Var(&weight, "weight", 1, "relative share of new flows; 0 = none")
	cmd.Flags().StringVar(&state, "state", "", "active or draining (no new flows, existing flows kept)")
	cmd.RunE = cfg.run(func(s *session, args []string) error {
		var w *uint32
		var st *string
		if cmd.Flags().Changed("weight") {
			w = &weight
		}
		if cmd.Flags().Changed("state") {
			st = &state
		}
		if w == nil && st == nil {
			return fmt.Errorf("nothing to change: pass --weight or --state")
		}
		return s.changeReal(args[0], args[1], w, st)
	})
	return cmd
}

// changeReal sets some of an existing real's settings. The API's PUT
// replaces a real's settings as a whole, so the others are read first
// and sent back unchanged, with If-Match: the real's entity tag. If the
// real changed in between (412), it is read again and the change redone
// on what it is now, a few times.
func (s *session) changeReal(vipArg, addrArg string, weight *uint32, state *string) error {
	name, err := vipName(vipArg)
	if err != nil {
		return err
	}
	addr, err := parseRealAddr(addrArg)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		cur, tag, err := s.api.GetRealTagged(s.ctx, name, addr.String())
		if err != nil {
			return err
		}
		in := apiv1.RealSettingsJSON{Weight: cur.Weight, State: cur.State}
		if weight != nil {
			in.Weight = weight
		}
		if state != nil {
			in.State = *state
		}
		r, err := s.api.PutRealIfMatch(s.ctx, name, addr.String(), in, tag)
		if client.IsStale(err) && attempt < changeAttempts {
			continue // changed meanwhile: redo it on the new settings
		}
		if client.IsStale(err) {
			return fmt.Errorf("real %s of VIP %s kept changing while this change was made (%d attempts): try again: %w", addr, vipArg, attempt, err)
		}
		if err != nil {
			return err
		}
		return s.emit(r, func(w io.Writer) { realsTable(w, []apiv1.RealJSON{r}) })
	}
}

// changeAttempts bounds the read-modify-write rounds of a change that
// other writers keep overtaking.
const changeAttempts = 5

func newRealReplaceCommand(cfg *clientConfig) *cobra.Command {
	var none bool
	cmd := &cobra.Command{
		Use:   "replace VIP ADDR[:WEIGHT]...",
		Short: "Replace the whole set of a VIP's reals in one change",
		Args:  cobra.MinimumNArgs(1),
		Example: "  lbd real replace tcp/192.0.2.1:80 10.0.0.1 10.0.0.2:3 [2001:db8::10]:2\n" +
			"  lbd real replace tcp/192.0.2.1:80 --none",
	}
	cmd.Flags().BoolVar(&none, "none", false, "remove every real (give no ADDR)")
	cmd.RunE = cfg.run(func(s *session, args []string) error {
		name, err := vipName(args[0])
		if err != nil {
			return err
		}
		switch {
		case none && len(args) > 1:
			return fmt.Errorf("--none removes every real: give no ADDR with it")
		case !none && len(args) == 1:
			return fmt.Errorf("give the new reals as ADDR[:WEIGHT]... (or --none to remove every real)")
		}
		reals := []apiv1.RealJSON{}
		for _, a := range args[1:] {
			r, err := parseRealSpec(a)
			if err != nil {
				return err
			}
			reals = append(reals, r)
		}
		got, err := s.api.ReplaceReals(s.ctx, name, reals)
		if err != nil {
			return err
		}
		return s.emit(apiv1.RealListJSON{Reals: got}, func(w io.Writer) { realsTable(w, got) })
	})
	return cmd
}
