package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
)

// connectionFlags are the filters `lbd conns` and `lbd top` share.
func connectionFlags(cmd *cobra.Command, q *client.ConnectionQuery) {
	fl := cmd.Flags()
	fl.Uint32Var(&q.PID, "pid", 0, "only this process's connections")
	fl.Uint16Var(&q.Port, "port", 0, "only connections with this port at either end")
	fl.StringVar(&q.Address, "address", "", "only connections with this address at either end")
	fl.Uint32Var(&q.Netns, "netns", 0, "only this network namespace (inode, as in /proc/PID/ns/net)")
	fl.StringVar(&q.State, "state", "", "open, closed, or all (default)")
	fl.StringVar(&q.Protocol, "protocol", "", "tcp or udp (default both)")
}

func newConnsCommand(cfg *clientConfig) *cobra.Command {
	var (
		q      client.ConnectionQuery
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "conns",
		Short: "List the connections the tracer sees, most bytes first (or follow its events)",
		Args:  cobra.NoArgs,
		Example: "  lbd conns --state open --protocol tcp\n" +
			"  lbd conns --pid 1234 -o json\n" +
			"  lbd conns --follow --pid 1234",
	}
	connectionFlags(cmd, &q)
	cmd.Flags().IntVar(&q.Limit, "limit", 100, "connections shown, 1-10000")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print the tracer's events as they happen (connect, accept, close, ...) until interrupted")
	cmd.RunE = cfg.run(func(s *session, _ []string) error {
		if follow {
			return s.followEvents(q.PID)
		}
		list, err := s.api.Connections(s.ctx, q)
		if err != nil {
			return tracerAdvice(err)
		}
		return s.emit(list, func(w io.Writer) {
			connTable(w, list.Connections, nil, 0)
			if list.Total > len(list.Connections) {
				row(w)
				row(w, fmt.Sprintf("%d of %d connections shown: raise --limit or narrow the filters", len(list.Connections), list.Total))
			}
		})
	})
	return cmd
}

// tracerAdvice adds what to do to the daemon's "tracer not running".
func tracerAdvice(err error) error {
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status == 503 {
		return fmt.Errorf("%w (the daemon was started with --tracer off, or the tracer failed: see its log)", err)
	}
	return err
}

func (s *session) followEvents(pid uint32) error {
	err := s.api.Events(s.ctx, pid, func(m client.StreamEvent) error {
		if m.Event == nil {
			fmt.Fprintf(s.errOut, "lbd: %d events missed (this terminal fell behind)\n", m.Dropped)
			return nil
		}
		if s.json {
			return s.emit(m.Event, nil)
		}
		e := m.Event
		line := fmt.Sprintf("%s cpu#%-2d %-10s %-7d %-15s", e.Time.Local().Format("15:04:05.000000"), e.CPU, e.Type, e.PID, e.Comm)
		if e.Type == "fd_install" {
			line += fmt.Sprintf(" fd %d", e.FD)
		} else {
			line += fmt.Sprintf(" [%s] %s ⇄ %s netns %d", strings.ToUpper(e.Protocol), e.Source, e.Destination, e.Netns)
			if e.Type == "close" || e.Type == "expire" || strings.HasPrefix(e.Type, "udp_") {
				line += fmt.Sprintf(" sent %s recv %s", humanBytes(e.BytesSent), humanBytes(e.BytesRecv))
			}
		}
		_, err := fmt.Fprintln(s.out, line)
		return err
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return tracerAdvice(err)
}

func connKey(c apiv1.ConnectionJSON) string {
	return c.Protocol + " " + c.Source + " " + c.Destination + " " + fmt.Sprint(c.PID, " ", c.Netns)
}

// connTable prints connections as nettop does: "[TCP] pid comm src ⇄
// dst" with bytes each way; with rates (top), the bytes per second since
// the previous refresh.
func connTable(w io.Writer, conns []apiv1.ConnectionJSON, rates map[string][2]float64, limit int) {
	header := []any{"PROTO", "PID", "COMM", "SOURCE ⇄ DESTINATION", "STATE", "SENT", "RECEIVED", "RETRANS", "SRTT"}
	if rates != nil {
		header = append(header, "SENT/S", "RECV/S")
	}
	row(w, header...)
	for i, c := range conns {
		if limit > 0 && i == limit {
			break
		}
		srtt := "-"
		if c.SRTTMicros > 0 {
			srtt = (time.Duration(c.SRTTMicros) * time.Microsecond).String()
		}
		cells := []any{"[" + strings.ToUpper(c.Protocol) + "]", c.PID, c.Comm, c.Source + " ⇄ " + c.Destination, c.State,
			humanBytes(c.BytesSent), humanBytes(c.BytesRecv), c.Retransmits, srtt}
		if rates != nil {
			r := rates[connKey(c)]
			cells = append(cells, humanBytes(uint64(r[0]))+"/s", humanBytes(uint64(r[1]))+"/s")
		}
		row(w, cells...)
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, exp := float64(n), 0
	for v >= unit && exp < 5 {
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", v, "KMGTP"[exp-1])
}

func newTopCommand(cfg *clientConfig) *cobra.Command {
	var (
		q          client.ConnectionQuery
		interval   time.Duration
		sortBy     string
		rows       int
		iterations int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view of the traced connections, like nettop, refreshed every few seconds",
		Args:  cobra.NoArgs,
		Example: "  lbd top\n" +
			"  lbd top --sort rate --protocol tcp --interval 1s\n" +
			"  lbd top --pid 1234 --iterations 1",
	}
	connectionFlags(cmd, &q)
	fl := cmd.Flags()
	fl.DurationVar(&interval, "interval", 2*time.Second, "time between refreshes")
	fl.StringVar(&sortBy, "sort", "bytes", "order: bytes (sent+received), sent, received, rate (bytes/s since the last refresh), retrans, pid")
	fl.IntVar(&rows, "rows", 25, "connections shown")
	fl.IntVar(&iterations, "iterations", 0, "refreshes before exiting (0: until interrupted)")
	cmd.RunE = cfg.run(func(s *session, _ []string) error {
		switch sortBy {
		case "bytes", "sent", "received", "rate", "retrans", "pid":
		default:
			return fmt.Errorf("--sort %q: use bytes, sent, received, rate, retrans or pid", sortBy)
		}
		if interval < 100*time.Millisecond {
			return fmt.Errorf("--interval %v: at least 100ms", interval)
		}
		q.Limit = 10000 // rates need every connection, not only the top rows
		prev := map[string][2]uint64{}
		var prevAt time.Time
		for i := 0; iterations == 0 || i < iterations; i++ {
			if i > 0 {
				select {
				case <-s.ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
			list, err := s.api.Connections(s.ctx, q)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return nil
				}
				return tracerAdvice(err)
			}
			st, err := s.api.Tracer(s.ctx)
			if err != nil {
				return tracerAdvice(err)
			}
			now := time.Now()
			rates := map[string][2]float64{}
			cur := map[string][2]uint64{}
			for _, c := range list.Connections {
				k := connKey(c)
				cur[k] = [2]uint64{c.BytesSent, c.BytesRecv}
				if p, ok := prev[k]; ok && !prevAt.IsZero() {
					secs := now.Sub(prevAt).Seconds()
					rates[k] = [2]float64{float64(c.BytesSent-min(p[0], c.BytesSent)) / secs, float64(c.BytesRecv-min(p[1], c.BytesRecv)) / secs}
				}
			}
			prev, prevAt = cur, now
			sortConnections(list.Connections, sortBy, rates)
			if s.json {
				if err := s.emit(list, nil); err != nil {
					return err
				}
				continue
			}
			if iterations != 1 {
				fmt.Fprint(s.out, "\033[H\033[2J") // home, clear screen
			}
			var lost uint64
			for _, n := range st.Lost {
				lost += n
			}
			fmt.Fprintf(s.out, "lbd top — %s — tracer %s mode, %s offsets, %d connections, %d events lost, %d hook runs missed — sorted by %s, every %v\n\n",
				now.Format("15:04:05"), st.Mode, st.OffsetSource, list.Total, lost+st.LostPerf, st.HookMisses, sortBy, interval)
			if err := s.emit(nil, func(w io.Writer) { connTable(w, list.Connections, rates, rows) }); err != nil {
				return err
			}
		}
		return nil
	})
	return cmd
}

func sortConnections(conns []apiv1.ConnectionJSON, by string, rates map[string][2]float64) {
	key := func(c apiv1.ConnectionJSON) float64 {
		switch by {
		case "sent":
			return float64(c.BytesSent)
		case "received":
			return float64(c.BytesRecv)
		case "rate":
			r := rates[connKey(c)]
			return r[0] + r[1]
		case "retrans":
			return float64(c.Retransmits)
		case "pid":
			return -float64(c.PID) // ascending
		}
		return float64(c.BytesSent + c.BytesRecv)
	}
	slices.SortStableFunc(conns, func(a, b apiv1.ConnectionJSON) int {
		ka, kb := key(a), key(b)
		switch {
		case ka > kb:
			return -1
		case ka < kb:
			return 1
		}
		return strings.Compare(a.Source, b.Source)
	})
}
