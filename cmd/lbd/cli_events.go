package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
)

// eventsRetry is the wait before `lbd events` reconnects to a daemon that
// went away (it doubles up to eventsRetryMax).
var eventsRetry, eventsRetryMax = 500 * time.Millisecond, 5 * time.Second

func newEventsCommand(cfg *clientConfig) *cobra.Command {
	var source, since string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Follow lbd's events (health changes, config changes, BGP) as they happen, across restarts of the daemon",
		Long: `Print lbd's events as they happen: real_health (a real went up or down),
vip_changed (a VIP or its reals changed), bgp_* (announcements, sessions,
node drain); with --source all or tracer, the connection tracer's too.

When the daemon goes away (restart, crash), lbd events reconnects and
resumes after the last event it printed (SSE Last-Event-ID): the daemon
replays what it kept since then, and lbd events says when some may be
missing (the daemon restarted, or kept no more). --since ID starts after
an event id printed earlier (-o json prints ids).`,
		Args:    cobra.NoArgs,
		Example: "  lbd events\n  lbd events -o json\n  lbd events --source all",
		RunE: cfg.run(func(s *session, _ []string) error {
			switch source {
			case "lbd", "all", "tracer":
			default:
				return fmt.Errorf("--source %q: use lbd, all or tracer", source)
			}
			return s.followLBDEvents(source, since)
		}),
	}
	cmd.Flags().StringVar(&source, "source", "lbd", "which events: lbd (the daemon's own), tracer (the connection tracer's) or all")
	cmd.Flags().StringVar(&since, "since", "", "resume after this event id (as printed by -o json)")
	return cmd
}

func (s *session) followLBDEvents(source, lastID string) error {
	wait := eventsRetry
	for {
		var err error
		lastID, err = s.api.StreamEvents(s.ctx, source, lastID, func(m client.Message) error {
			wait = eventsRetry // the daemon is back
			return s.printMessage(m)
		})
		if s.ctx.Err() != nil {
			return nil
		}
		var ae *client.Error
		if errors.As(err, &ae) {
			return tracerAdvice(err) // the daemon refused: retrying will not help
		}
		if err == nil && source == "tracer" {
			return nil // the tracer stopped
		}
		fmt.Fprintf(s.errOut, "lbd: %v; reconnecting in %v\n", err, wait)
		select {
		case <-s.ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, eventsRetryMax)
	}
}

func (s *session) printMessage(m client.Message) error {
	switch {
	case m.Resumed != nil:
		if !m.Resumed.Complete {
			fmt.Fprintf(s.errOut, "lbd: resumed, some events may be missing: %s\n", m.Resumed.Reason)
		} else if m.Resumed.Replayed > 0 {
			fmt.Fprintf(s.errOut, "lbd: resumed: %d events happened meanwhile\n", m.Resumed.Replayed)
		}
		return nil
	case m.Dropped != 0:
		fmt.Fprintf(s.errOut, "lbd: %d tracer events missed (this terminal fell behind)\n", m.Dropped)
		return nil
	case m.Tracer != nil:
		if s.json {
			return s.emit(m.Tracer, nil)
		}
		e := m.Tracer
		_, err := fmt.Fprintf(s.out, "%s tracer       %s %s pid %d %s ⇄ %s\n", e.Time.Local().Format("15:04:05.000"), e.Type, e.Comm, e.PID, e.Source, e.Destination)
		return err
	}
	e := m.LBD
	if s.json {
		return s.emit(struct {
			ID string `json:"id"`
			apiv1.LBDEventJSON
		}{m.ID, *e}, nil)
	}
	line := fmt.Sprintf("%s %-12s %s", e.Time.Local().Format("15:04:05.000"), e.Type, e.VIP)
	if e.Real != "" {
		line += " real " + e.Real
	}
	if e.State != "" {
		line += " " + e.State
	}
	if e.Reason != "" {
		line += ": " + e.Reason
	}
	if e.FlowsRemoved != 0 {
		line += fmt.Sprintf(" (%d flows removed)", e.FlowsRemoved)
	}
	_, err := fmt.Fprintln(s.out, line)
	return err
}
