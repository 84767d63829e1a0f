package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/realsetup"
)

// newRealHostCommands are the `lbd real` commands that act on the real
// server itself (run them on the real, as root), not on the daemon:
// setup, check, teardown.
func newRealHostCommands(cfg *clientConfig) []*cobra.Command {
	var o realsetup.Options
	var decap string
	flags := func(c *cobra.Command, withDecap bool) {
		c.Flags().StringVar(&o.Interface, "interface", "", "interface the balancer's packets arrive on (TC decapsulation; default: the default route's)")
		c.Flags().StringVar(&o.PinDir, "pin-dir", realsetup.DefaultPinDir, "bpffs directory of the TC decapsulation's maps and link")
		c.Flags().StringVar(&o.StateFile, "state-file", realsetup.DefaultStateFile, "where setup records what it changed (teardown undoes that)")
		if withDecap {
			c.Flags().StringVar(&decap, "decap", realsetup.DecapAuto, "decapsulation: auto (kernel tunnels if the kernel has ipip/ip6tnl, else TC), kernel or bpf")
			c.Flags().Uint16Var(&o.GUEPort, "gue-port", 0, "UDP port of GUE packets (TC decapsulation; default 6080)")
		}
	}
	emit := func(cmd *cobra.Command, v any, table func(io.Writer)) error {
		if cfg.output == "json" {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	printResult := func(cmd *cobra.Command, r realsetup.Result) error {
		return emit(cmd, r, func(w io.Writer) {
			for _, c := range r.Changes {
				fmt.Fprintf(w, "changed: %s\n", c)
			}
			if len(r.Changes) == 0 {
				fmt.Fprintln(w, "nothing to change")
			}
			fmt.Fprintf(w, "decapsulation: %s: %s\n", r.Decap, r.Detail)
			if r.Reason != "" {
				fmt.Fprintf(w, "why: %s\n", r.Reason)
			}
			fmt.Fprintf(w, "VIPs: %v\n", r.VIPs)
		})
	}

	setup := &cobra.Command{
		Use:   "setup VIP-ADDRESS...",
		Short: "Prepare this machine as a real server for the VIPs (VIP on lo, ARP sysctls, decapsulation, rp_filter)",
		Long: `Prepare this Linux machine (this network namespace) to answer the
balancer's tunnelled packets for the VIPs directly to the clients:
the VIPs on lo, arp_ignore=1 and arp_announce=2, decapsulation by the
kernel's ipip/ip6tnl devices in external mode or, on a kernel without them,
by lbd's TC program (which also takes GUE), and a reverse-path filter that
lets the decapsulated packets in. Idempotent; lbd real teardown undoes it.`,
		Example: "  lbd real setup 192.0.2.1 2001:db8::1\n  lbd real setup 192.0.2.1 --decap bpf --interface eth0",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vips, err := parseVIPAddrs(args)
			if err != nil {
				return err
			}
			o.VIPs, o.Decap = vips, decap
			r, err := realsetup.Setup(o)
			if err != nil {
				return err
			}
			return printResult(cmd, r)
		},
	}
	flags(setup, true)

	check := &cobra.Command{
		Use:   "check [VIP-ADDRESS...]",
		Short: "Say which piece a real server misses for the VIPs (default: the VIPs setup recorded)",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			vips, err := parseVIPAddrs(args)
			if err != nil {
				return err
			}
			o.VIPs = vips
			fs, err := realsetup.Check(o)
			if err != nil {
				return err
			}
			bad := 0
			for _, f := range fs {
				if !f.OK {
					bad++
				}
			}
			if err := emit(cmd, fs, func(w io.Writer) {
				for _, f := range fs {
					fmt.Fprintf(w, "%s\t%s\t%s\n", ifElse(f.OK, "ok", "MISSING"), f.What, f.Detail)
				}
			}); err != nil {
				return err
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d checks failed: this real will not answer for the VIPs", bad, len(fs))
			}
			return nil
		},
	}
	flags(check, false)

	teardown := &cobra.Command{
		Use:   "teardown [VIP-ADDRESS...]",
		Short: "Undo lbd real setup for the VIPs (all of them if none given; the decapsulation goes with the last)",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			vips, err := parseVIPAddrs(args)
			if err != nil {
				return err
			}
			o.VIPs = vips
			r, err := realsetup.Teardown(o)
			if err != nil {
				return err
			}
			return printResult(cmd, r)
		},
	}
	flags(teardown, false)
	return []*cobra.Command{setup, check, teardown}
}

func ifElse(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

func parseVIPAddrs(args []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range args {
		v, err := netip.ParseAddr(a)
		if err != nil || v.Zone() != "" || v.IsUnspecified() || v.IsMulticast() {
			return nil, errors.New("VIP address " + fmt.Sprintf("%q", a) + ": want a unicast IPv4 or IPv6 address such as 192.0.2.1 (no port: the real takes every port)")
		}
		out = append(out, v.Unmap())
	}
	return out, nil
}
