// Command lbd is the lbd load balancer: `lbd serve` runs the daemon, and
// the other subcommands are thin clients of its REST API.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
		Version:       version,
	}
	addServeCommands(root)
	addClientCommands(root)
	addLabCommands(root) // lab.go: hidden, for make demo and the e2e tests
	return root
}
