package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/lab"
)

// addLabCommands adds `lbd lab`, hidden: the traffic lab of `make demo`
// and of the end-to-end tests (package lab). It lives in the lbd binary
// because the lab re-executes lbd anyway — for `lbd serve`, `lbd real
// setup` and the real servers — so one binary is all a machine (or a VM
// guest without a Go toolchain) needs.
func addLabCommands(root *cobra.Command) {
	cmd := &cobra.Command{
		Use:    "lab",
		Short:  "A traffic lab in network namespaces: clients, a router, lbd, real servers (for demos and tests)",
		Hidden: true,
	}
	var name string
	cmd.PersistentFlags().StringVar(&name, "name", "demo", "lab name (1-10 lowercase letters or digits)")

	cfg := lab.Config{}
	up := &cobra.Command{
		Use:   "up",
		Short: "Build the lab, set up the reals and start lbd serve",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg.Name, cfg.Log = name, c.OutOrStdout()
			l, err := lab.Up(cfg)
			if err != nil {
				return err
			}
			printLab(c.OutOrStdout(), l)
			return nil
		},
	}
	up.Flags().IntVar(&cfg.Clients, "clients", 2, "client namespaces")
	up.Flags().IntVar(&cfg.Reals, "reals", 3, "real server namespaces")
	up.Flags().StringVar(&cfg.RealLink, "real-link", lab.LinkAuto, "how reals attach to the node: auto (ipvlan, else macvlan, else veth), ipvlan, macvlan or veth")
	up.Flags().StringVar(&cfg.Decap, "decap", "auto", "reals' decapsulation (lbd real setup --decap): auto, kernel or bpf")
	up.Flags().StringVar(&cfg.API, "api", "127.0.0.1:8080", "address of lbd serve's REST API")
	up.Flags().BoolVar(&cfg.NoLBD, "no-lbd", false, "do not start lbd serve")
	up.Flags().IntVar(&cfg.LBNodes, "lb-nodes", 1, "lbd nodes; more than 1: the router runs BIRD 2 and spreads the VIP over the nodes that announce it over BGP (ECMP)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Tear the lab down (also after a crash; running it twice is harmless)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := lab.Down(name, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "lab %s is down\n", name)
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's modes, namespaces and addresses",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(name)
			if err != nil {
				return err
			}
			printLab(c.OutOrStdout(), l)
			return nil
		},
	}

	var perClient, datagrams int
	var udp bool
	var vip string
	traffic := &cobra.Command{
		Use:   "traffic",
		Short: "Send connections (or UDP flows) from every client to the VIP and count who answered",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := lab.Load(name)
			if err != nil {
				return err
			}
			addr, err := netip.ParseAddr(vip)
			if err != nil {
				return fmt.Errorf("--vip %q: %w", vip, err)
			}
			var counts lab.Counts
			what := fmt.Sprintf("%d TCP connections", perClient*len(l.Clients))
			if udp {
				what = fmt.Sprintf("%d UDP flows of %d datagrams", perClient*len(l.Clients), datagrams)
				counts, err = l.UDPFlows(addr, perClient, datagrams, 64)
			} else {
				counts, err = l.ShortTCP(addr, perClient)
			}
			fmt.Fprintf(c.OutOrStdout(), "%s from %d clients to %s port %d, answered by: %s\n", what, len(l.Clients), addr, lab.WhoPort, counts)
			return err
		},
	}
	traffic.Flags().IntVar(&perClient, "per-client", 100, "connections (or UDP flows) per client")
	traffic.Flags().IntVar(&datagrams, "datagrams", 5, "datagrams per UDP flow")
	traffic.Flags().BoolVar(&udp, "udp", false, "UDP flows instead of TCP connections")
	traffic.Flags().StringVar(&vip, "vip", lab.VIP4.String(), "address to send to")

	var realName, id string
	realServer := &cobra.Command{
		Use:    "real-server",
		Short:  "Run a lab real's server (HTTP on 80, name+echo on TCP/UDP 7) in this namespace",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return lab.ServeReal(ctx, realName)
		},
	}
	realServer.Flags().StringVar(&realName, "name", "", "the name the server answers with")
	realServer.Flags().StringVar(&id, "id", "", "an identifier in the command line, by which lbd lab down finds the process")

	cmd.AddCommand(up, down, status, traffic, realServer)
	root.AddCommand(cmd)
}

func printLab(w io.Writer, l *lab.Lab) {
	fmt.Fprintf(w, "lab %s:\n", l.Name)
	fmt.Fprintf(w, "  reals attached by: %s (%s)\n", l.RealLink, l.LinkReason)
	fmt.Fprintf(w, "  reals decapsulate with: %s (%s)\n", l.Decap, l.DecapInfo)
	fmt.Fprintf(w, "  VIPs: %s, %s; reals:", lab.VIP4, lab.VIP6)
	for _, r := range l.Reals {
		fmt.Fprintf(w, " %s=%s/%s", r.Name, r.Addr4, r.Addr6)
	}
	fmt.Fprintf(w, "\n  clients:")
	for _, c := range l.Clients {
		fmt.Fprintf(w, " %s=%s (netns %s)", c.Name, c.Addr4, c.Netns)
	}
	fmt.Fprintln(w)
	for _, n := range l.Nodes {
		state := "not running"
		if n.Pid != 0 {
			if _, err := os.FindProcess(n.Pid); err == nil && syscall.Kill(n.Pid, 0) == nil {
				state = fmt.Sprintf("pid %d", n.Pid)
			}
		}
		node := ""
		if len(l.Nodes) > 1 {
			node = fmt.Sprintf(" (node %d, %s, BGP peer %s)", n.Index, n.Addr, n.RouterAddr)
		}
		fmt.Fprintf(w, "  lbd serve%s: %s, XDP on %s, API http://%s, token file %s\n", node, state, n.HostIf, n.API, n.TokenFile)
	}
	if l.BirdSocket != "" {
		fmt.Fprintf(w, "  router: BIRD pid %d (ip netns exec %s birdc -s %s show route)\n", l.BirdPid, l.Router.Netns, l.BirdSocket)
	}
}
