// Command lbd is the lbd load balancer: `lbd serve` runs the daemon, and
// the other subcommands are thin clients of its REST API.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/internal/buildinfo"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lbd:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "lbd",
		Short:         "lbd: an XDP L4 load balancer (Maglev, IP-in-IP/GUE, DSR)",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Get().String(),
	}
	root.SetVersionTemplate("lbd {{.Version}}\n")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print lbd's version, commit and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "lbd %s\n", buildinfo.Get())
			return err
		},
	})
	addServeCommands(root)
	addClientCommands(root)
	addLabCommands(root) // lab.go: hidden, for make demo and the e2e tests
	addGenManCommand(root)
	return root
}
