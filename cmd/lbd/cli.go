package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/internal/buildinfo"
)

// Defaults of the client flags; LBD_SERVER and LBD_TOKEN_FILE override
// them, LBD_TOKEN (the token itself) overrides the token file.
const (
	defaultServer    = "http://127.0.0.1:8080"
	defaultTokenFile = "/var/lib/lbd/token"
)

// clientConfig holds the root's persistent client flags. It lives in the
// closures of the commands, not in globals, so each newRootCommand is
// independent (tests build many).
type clientConfig struct {
	server    string
	tokenFile string
	timeout   time.Duration
	output    string
	caFile    string
}

// addClientCommands adds the API client commands: vip, real, stats,
// ring, flows, status, reconcile, and the flags they share.
func addClientCommands(root *cobra.Command) {
	cfg := &clientConfig{}
	pf := root.PersistentFlags()
	pf.StringVar(&cfg.server, "server", envOr("LBD_SERVER", defaultServer), "URL of the lbd daemon's API (env LBD_SERVER)")
	pf.StringVar(&cfg.tokenFile, "token-file", envOr("LBD_TOKEN_FILE", defaultTokenFile), "file holding the API token (env LBD_TOKEN_FILE; env LBD_TOKEN, the token itself, wins)")
	pf.StringVar(&cfg.caFile, "ca-file", os.Getenv("LBD_CA_FILE"), "PEM certificates to trust for an https --server, e.g. the daemon's self-signed tls_cert_file (env LBD_CA_FILE)")
	pf.DurationVar(&cfg.timeout, "timeout", client.DefaultTimeout, "how long to wait for each answer of the daemon")
	pf.StringVarP(&cfg.output, "output", "o", "table", "output format: table or json (the server's JSON)")

	root.AddCommand(
		newVIPCommand(cfg),
		newRealCommand(cfg),
		newStatsCommand(cfg),
		newRingCommand(cfg),
		newFlowsCommand(cfg),
		newStatusCommand(cfg),
		newReconcileCommand(cfg),
		newBGPCommand(cfg),
		newFleetCommand(cfg),
		newDrainCommand(cfg),
		newConnsCommand(cfg),
		newTopCommand(cfg),
		newEventsCommand(cfg),
		newApplyCommand(cfg),
		newExportCommand(cfg),
	)
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

// session is what one client command works with.
type session struct {
	ctx    context.Context
	api    *client.Client
	out    io.Writer // stdout: tables or JSON
	errOut io.Writer // stderr: hints that are not the answer
	json   bool
}

// token is LBD_TOKEN if set, else the token file's content.
func (cfg *clientConfig) token() (string, error) {
	if t := strings.TrimSpace(os.Getenv("LBD_TOKEN")); t != "" {
		return t, nil
	}
	b, err := os.ReadFile(cfg.tokenFile)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in the message
		}
		return "", fmt.Errorf("read token file %s: %w: pass --token-file or set LBD_TOKEN", cfg.tokenFile, err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty: pass --token-file with the daemon's token file or set LBD_TOKEN", cfg.tokenFile)
	}
	return t, nil
}

// run makes a cobra RunE out of fn: it checks the flags, builds the
// client, and turns a refused token into advice.
func (cfg *clientConfig) run(fn func(s *session, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		var asJSON bool
		switch cfg.output {
		case "table", "":
		case "json":
			asJSON = true
		default:
			return fmt.Errorf("output format %q: use table or json", cfg.output)
		}
		token, err := cfg.token()
		if err != nil {
			return err
		}
		timeout := cfg.timeout
		if timeout <= 0 {
			timeout = -1 // no limit
		}
		c, err := client.New(cfg.server, client.Options{Token: token, Timeout: timeout, CAFile: cfg.caFile, UserAgent: "lbd/" + buildinfo.Get().Version})
		if err != nil {
			return fmt.Errorf("--server: %w", err)
		}
		s := &session{ctx: cmd.Context(), api: c, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(), json: asJSON}
		err = fn(s, args)
		var ae *client.Error
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			src := "token file " + cfg.tokenFile
			if os.Getenv("LBD_TOKEN") != "" {
				src = "LBD_TOKEN"
			}
			return fmt.Errorf("lbd at %s refused the token from %s: pass --token-file with the daemon's token file or set LBD_TOKEN (server said: %w)", c.Server(), src, err)
		}
		return err
	}
}

// emit prints v as indented JSON with -o json, else calls table with a
// tabwriter that is flushed afterwards.
func (s *session) emit(v any, table func(w io.Writer)) error {
	if s.json {
		enc := json.NewEncoder(s.out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// note prints a line for people in table mode (nothing with -o json, so
// that the output stays one JSON document).
func (s *session) note(format string, args ...any) {
	if !s.json {
		fmt.Fprintf(s.out, format+"\n", args...)
	}
}

// row writes tab-separated cells as one table line.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}
