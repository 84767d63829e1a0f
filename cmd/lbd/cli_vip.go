package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

func newVIPCommand(cfg *clientConfig) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vip",
		Short: "List, add, show, change and delete VIPs",
		Long:  "A VIP is written " + lb.VIPUsage + ".",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:     "list",
			Short:   "List the VIPs",
			Args:    cobra.NoArgs,
			Example: "  lbd vip list",
			RunE: cfg.run(func(s *session, _ []string) error {
				vips, err := s.api.ListVIPs(s.ctx)
				if err != nil {
					return err
				}
				return s.emit(apiv1.VIPListJSON{VIPs: vips}, func(w io.Writer) {
					row(w, "VIP", "NAME", "ENCAP", "RING", "FLAGS", "REALS")
					for _, v := range vips {
						row(w, vipDisplay(v), v.Name, v.Encap, v.RingSize, vipFlags(v), realsSummary(v.Reals))
					}
				})
			}),
		},
		newVIPAddCommand(cfg),
		&cobra.Command{
			Use:     "get VIP",
			Aliases: []string{"show"},
			Short:   "Show a VIP and its reals",
			Args:    cobra.ExactArgs(1),
			Example: "  lbd vip get tcp/192.0.2.1:80",
			RunE: cfg.run(func(s *session, args []string) error {
				name, err := vipName(args[0])
				if err != nil {
					return err
				}
				v, err := s.api.GetVIP(s.ctx, name)
				if err != nil {
					return err
				}
				return s.emitVIP(v)
			}),
		},
		newVIPSetCommand(cfg),
		&cobra.Command{
			Use:     "delete VIP",
			Aliases: []string{"rm", "remove"},
			Short:   "Delete a VIP (its flows stop being balanced at once)",
			Args:    cobra.ExactArgs(1),
			Example: "  lbd vip delete tcp/192.0.2.1:80",
			RunE: cfg.run(func(s *session, args []string) error {
				name, err := vipName(args[0])
				if err != nil {
					return err
				}
				if err := s.api.DeleteVIP(s.ctx, name); err != nil {
					return err
				}
				s.note("deleted VIP %s", args[0])
				return nil
			}),
		},
	)
	return cmd
}

// vipSettingFlags are the flags of vip add and vip set.
type vipSettingFlags struct {
	flags       map[lb.VIPFlags]*bool // a --flag each (lb.VIPFlagTable)
	disabled    bool
	encap       string
	ringSize    uint32
	health      apiv1.HealthCheckJSON
	downFlows   string
	allDown     string
	description string
}

// given returns the VIP flags given true and those given false.
func (f *vipSettingFlags) given(cmd *cobra.Command) (on, off lb.VIPFlags) {
	for _, d := range lb.VIPFlagTable {
		if p := f.flags[d.Flag]; p != nil && cmd.Flags().Changed(d.CLIName()) {
			if *p {
				on |= d.Flag
			} else {
				off |= d.Flag
			}
		}
	}
	return on, off
}

// healthChanged reports whether any health-check flag was given.
func healthChanged(cmd *cobra.Command) bool {
	for _, n := range []string{"health", "health-port", "health-path", "health-status", "health-interval", "health-timeout", "health-rise", "health-fall"} {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

func (f *vipSettingFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.flags = map[lb.VIPFlags]*bool{}
	for _, d := range lb.VIPFlagTable {
		if d.Setting {
			f.flags[d.Flag] = fl.Bool(d.CLIName(), false, d.Doc)
		}
	}
	fl.StringVar(&f.encap, "encap", "", "how packets reach the reals: ipip (default) or gue")
	fl.Uint32Var(&f.ringSize, "ring-size", 0, "Maglev ring size, a prime: 1021, 4099, 16381, 65537 (default), 131071, 262139 or 655373")
	fl.StringVar(&f.health.Type, "health", "", "health check of the reals: none (default), tcp, http, https or udp")
	fl.Uint16Var(&f.health.Port, "health-port", 0, "port to check (default: the VIP's)")
	fl.StringVar(&f.health.Path, "health-path", "", "HTTP(S) path to GET (default /)")
	fl.IntVar(&f.health.ExpectStatus, "health-status", 0, "HTTP(S) status a healthy real answers (default 200)")
	fl.StringVar(&f.health.Interval, "health-interval", "", "time between probes of a real (default 5s)")
	fl.StringVar(&f.health.Timeout, "health-timeout", "", "time a probe may take (default 2s)")
	fl.IntVar(&f.health.Rise, "health-rise", 0, "successes in a row for a down real to come back (default 2)")
	fl.IntVar(&f.health.Fall, "health-fall", 0, "failures in a row for a real to go down (default 3)")
	fl.StringVar(&f.downFlows, "down-flows", "", "flows of a real that goes down: keep (default) or reset")
	fl.StringVar(&f.allDown, "all-down", "", "when every real is down: serve-all (default, fail open) or drop")
	fl.BoolVar(&f.disabled, "disabled", false, "take the VIP out of service, keeping it: new flows are dropped, established flows keep their reals; --disabled=false serves again")
	fl.StringVar(&f.description, "description", "", "free `TEXT` about the VIP (what it serves, who owns it), shown as plain text: at most 256 bytes, one line; \"\" removes it")
}

func newVIPAddCommand(cfg *clientConfig) *cobra.Command {
	var f vipSettingFlags
	var reals []string
	cmd := &cobra.Command{
		Use:   "add VIP",
		Short: "Create a VIP, optionally with its reals",
		Args:  cobra.ExactArgs(1),
		Example: "  lbd vip add tcp/192.0.2.1:80 --real 10.0.0.1 --real 10.0.0.2:3\n" +
			"  lbd vip add udp/[2001:db8::1]:53 --encap gue --ring-size 4099 --real [2001:db8::10]:2",
	}
	f.register(cmd)
	cmd.Flags().StringArrayVar(&reals, "real", nil, "a real as ADDR or ADDR:WEIGHT ([IPv6]:WEIGHT); repeat for more")
	cmd.RunE = cfg.run(func(s *session, args []string) error {
		key, err := lb.ParseVIP(args[0])
		if err != nil {
			return err
		}
		in := apiv1.VIPCreateJSON{Protocol: key.Proto.String(), Address: key.Addr.String(), Port: new(int(key.Port))}
		in.Flags, _ = f.given(cmd)
		in.Encap, in.RingSize = f.encap, f.ringSize
		in.DownFlows, in.AllDown, in.Disabled, in.Description = f.downFlows, f.allDown, f.disabled, f.description
		if healthChanged(cmd) {
			if f.health.Type == "" {
				f.health.Type = "tcp"
			}
			in.HealthCheck = &f.health
		}
		for _, r := range reals {
			rj, err := parseRealSpec(r)
			if err != nil {
				return fmt.Errorf("--real: %w", err)
			}
			in.Reals = append(in.Reals, rj)
		}
		v, err := s.api.CreateVIP(s.ctx, in)
		var ae *client.Error
		if errors.As(err, &ae) && ae.Status == http.StatusConflict {
			return fmt.Errorf("%w (change it with `lbd vip set` and `lbd real`)", err)
		}
		if err != nil {
			return err
		}
		return s.emitVIP(v)
	})
	return cmd
}

func newVIPSetCommand(cfg *clientConfig) *cobra.Command {
	var f vipSettingFlags
	cmd := &cobra.Command{
		Use:   "set VIP",
		Short: "Change some settings of a VIP (only the flags given); its reals stay",
		Args:  cobra.ExactArgs(1),
		Example: "  lbd vip set tcp/192.0.2.1:80 --sticky\n" +
			"  lbd vip set tcp/192.0.2.1:80 --sticky=false --ring-size 131071\n" +
			"  lbd vip set tcp/192.0.2.1:80 --description 'shop front, team web'\n" +
			"  lbd vip set tcp/192.0.2.1:80 --disabled        # new flows dropped, established ones kept\n" +
			"  lbd vip set tcp/192.0.2.1:80 --disabled=false  # serve again",
	}
	f.register(cmd)
	cmd.RunE = cfg.run(func(s *session, args []string) error {
		name, err := vipName(args[0])
		if err != nil {
			return err
		}
		var p apiv1.VIPPatchJSON
		changed := cmd.Flags().Changed
		p.SetFlags, p.ClearFlags = f.given(cmd)
		if changed("encap") {
			p.Encap = &f.encap
		}
		if changed("ring-size") {
			p.RingSize = &f.ringSize
		}
		if healthChanged(cmd) {
			if f.health.Type == "" {
				return fmt.Errorf("--health-* flags replace the whole health check: give --health TYPE too")
			}
			p.HealthCheck = &f.health
		}
		if changed("down-flows") {
			p.DownFlows = &f.downFlows
		}
		if changed("all-down") {
			p.AllDown = &f.allDown
		}
		if changed("disabled") {
			p.Disabled = &f.disabled
		}
		if changed("description") {
			p.Description = &f.description
		}
		if p == (apiv1.VIPPatchJSON{}) {
			var flags []string
			for _, d := range lb.VIPFlagTable {
				if d.Setting {
					flags = append(flags, "--"+d.CLIName())
				}
			}
			return fmt.Errorf("nothing to change: pass %s, --encap, --ring-size, --health..., --down-flows, --all-down, --disabled or --description", strings.Join(flags, ", "))
		}
		v, err := s.api.PatchVIP(s.ctx, name, p)
		if err != nil {
			return err
		}
		return s.emitVIP(v)
	})
	return cmd
}

// emitVIP prints one VIP: its settings, then its reals.
func (s *session) emitVIP(v apiv1.VIPJSON) error {
	return s.emit(v, func(w io.Writer) {
		row(w, "VIP", vipDisplay(v))
		row(w, "NAME", v.Name)
		desc := v.Description
		if desc == "" {
			desc = "-"
		}
		row(w, "DESCRIPTION", desc)
		row(w, "ENCAP", v.Encap)
		row(w, "RING SIZE", v.RingSize)
		for _, d := range lb.VIPFlagTable {
			if d.Setting {
				row(w, d.Label(), v.Flags.Has(d.Flag))
			}
		}
		row(w, "DISABLED", v.Disabled)
		hc := v.HealthCheck.Type
		if hc != "" && hc != "none" {
			hc = fmt.Sprintf("%s every %s (rise %d, fall %d); down real's flows: %s; all down: %s", hc, v.HealthCheck.Interval, v.HealthCheck.Rise, v.HealthCheck.Fall, v.DownFlows, v.AllDown)
		}
		row(w, "HEALTH CHECK", hc)
		row(w, "REALS", realsSummary(v.Reals))
		if len(v.Reals) > 0 {
			row(w)
			realsTable(w, v.Reals)
		}
	})
}

// realsTable lists reals; when the VIP checks its reals, with their
// health and why.
func realsTable(w io.Writer, reals []apiv1.RealJSON) {
	checked := false
	for _, r := range reals {
		checked = checked || r.Health != nil
	}
	if !checked {
		row(w, "REAL", "WEIGHT", "STATE")
		for _, r := range reals {
			row(w, r.Address, weightOf(r), r.State)
		}
		return
	}
	row(w, "REAL", "WEIGHT", "STATE", "HEALTH", "SINCE", "WHY", "LAST PROBE")
	for _, r := range reals {
		health, since, why, last := "-", "-", "-", "-"
		if h := r.Health; h != nil {
			health, since, why, last = healthState(h), h.LastChange.Local().Format("15:04:05"), h.Reason, lastProbe(h.LastResult)
		}
		row(w, r.Address, weightOf(r), r.State, health, since, why, last)
	}
}

// healthState is a real's state, with the probes in a row that would
// change it if there are any: "up (2 failed)", "down (1 ok)".
func healthState(h *apiv1.RealHealthJSON) string {
	switch {
	case h.State == "up" && h.FailuresInARow > 0:
		return fmt.Sprintf("%s (%d failed)", h.State, h.FailuresInARow)
	case h.State == "down" && h.SuccessesInARow > 0:
		return fmt.Sprintf("%s (%d ok)", h.State, h.SuccessesInARow)
	}
	return h.State
}

// lastProbe is the time and outcome of the latest probe: "15:04:05 ok",
// "15:04:05 failed: connect: connection refused", "none yet".
func lastProbe(r *apiv1.ProbeResultJSON) string {
	if r == nil {
		return "none yet"
	}
	at := r.At.Local().Format("15:04:05")
	if r.OK {
		return at + " ok"
	}
	return at + " failed: " + r.Reason
}

func weightOf(r apiv1.RealJSON) string {
	if r.Weight == nil {
		return "1"
	}
	return fmt.Sprint(*r.Weight)
}

// realsSummary is "3 (2 active)": how many reals, and how many take new
// flows.
func realsSummary(reals []apiv1.RealJSON) string {
	active := 0
	for _, r := range reals {
		if (r.State == "" || r.State == string(control.RealActive)) && (r.Weight == nil || *r.Weight > 0) {
			active++
		}
	}
	return fmt.Sprintf("%d (%d active)", len(reals), active)
}

func vipFlags(v apiv1.VIPJSON) string {
	var f []string
	if v.Disabled {
		f = append(f, "disabled")
	}
	if v.Flags != 0 {
		f = append(f, v.Flags.String())
	}
	if len(f) == 0 {
		return "-"
	}
	return strings.Join(f, ",")
}

// keyDisplay writes a VIP name from the API the way users type VIPs;
// names it cannot parse are returned as they are.
func keyDisplay(name string) string {
	if name == "" {
		return "-"
	}
	k, err := lb.ParseVIPName(name)
	if err != nil {
		return name
	}
	return k.String()
}
