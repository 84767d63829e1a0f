package main

import "github.com/spf13/cobra"

// addServeCommands adds the daemon's commands: serve, cleanup.
func addServeCommands(root *cobra.Command) {}
