package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/lbd-dev/lbd/internal/buildinfo"
)

// addGenManCommand adds the hidden `lbd gen-man DIR`, which writes the man
// pages (lbd.1, lbd-serve.1, ...) from the commands' own help; make
// release packages them.
func addGenManCommand(root *cobra.Command) {
	root.AddCommand(&cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write lbd's man pages into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // reproducible pages: no generation date
			hdr := &doc.GenManHeader{Title: "LBD", Section: "1", Source: "lbd " + buildinfo.Get().Version, Manual: "lbd manual"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		},
	})
}
