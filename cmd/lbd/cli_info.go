package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
)

// maxAllFlows bounds `lbd flows --all`: a connection table can hold
// millions of entries, more than a terminal (or this process's memory)
// should take; narrow the query to see the rest.
const maxAllFlows = 100_000

func newStatsCommand(cfg *clientConfig) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats [VIP]",
		Short: "Show counters and rates: global, per VIP and per real, or one VIP's",
		Long: "Show counters and rates. With a VIP: its counters and each of its reals', removed reals\n" +
			"included (until `lbd stats reset VIP`): the reals' packets and bytes add up to the VIP's.",
		Args: cobra.MaximumNArgs(1),
		Example: "  lbd stats\n" +
			"  lbd stats tcp/192.0.2.1:80",
		RunE: cfg.run(func(s *session, args []string) error {
			if len(args) == 1 {
				return s.vipStats(args[0])
			}
			st, err := s.api.Stats(s.ctx)
			if err != nil {
				return err
			}
			tables, tablesErr := s.api.FlowTables(s.ctx)
			return s.emit(st, func(w io.Writer) {
				names := slices.Sorted(maps.Keys(st.Global.Counters))
				names = slices.DeleteFunc(names, func(n string) bool { return st.Global.Counters[n] == 0 })
				if len(names) == 0 {
					row(w, "global counters are all zero: no packet has reached the balancer yet")
				} else {
					row(w, "COUNTER", "VALUE", "PER SECOND")
					for _, n := range names {
						row(w, n, st.Global.Counters[n], rate(st.Global.Rates[n]))
					}
				}
				row(w)
				row(w, "VIP", "PACKETS", "BYTES", "PKT/S", "BYTES/S", "LRU HITS", "LRU MISSES")
				for _, v := range st.VIPs {
					row(w, keyDisplay(v.VIP), v.Packets, v.Bytes, rate(v.PacketsPerSec), rate(v.BytesPerSec), v.LRUHits, v.LRUMisses)
				}
				row(w)
				row(w, "REAL", "PACKETS", "BYTES", "PKT/S", "BYTES/S")
				for _, r := range st.Reals {
					addr := r.Address
					if r.Removed {
						addr += " (removed)"
					}
					row(w, addr, r.Packets, r.Bytes, rate(r.PacketsPerSec), rate(r.BytesPerSec))
				}
				row(w, "(a real's counters here are summed over its VIPs: lbd stats VIP shows them per VIP)")
				row(w)
				if tablesErr != nil {
					row(w, "connection table: "+tablesErr.Error())
					return
				}
				row(w, "CONNECTION TABLE", "ENTRIES", "CAPACITY", "USED", "PER CPU")
				row(w, "shared by "+strconv.Itoa(tables.CPUs)+" CPUs", tables.Entries, tables.Capacity, used(tables.Entries, tables.Capacity), tables.PerCPUCapacity)
			})
		}),
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "reset VIP",
		Short:   "Zero a VIP's counters and its reals', and forget the reals it no longer has",
		Args:    cobra.ExactArgs(1),
		Example: "  lbd stats reset tcp/192.0.2.1:80",
		RunE: cfg.run(func(s *session, args []string) error {
			name, err := vipName(args[0])
			if err != nil {
				return err
			}
			if err := s.api.ResetVIPStats(s.ctx, name); err != nil {
				return err
			}
			return s.emit(map[string]string{"reset": name}, func(w io.Writer) {
				row(w, "counters of "+keyDisplay(name)+" and its reals reset")
			})
		}),
	})
	return cmd
}

func used(n, of int) string {
	if of == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 1, 64) + "%"
}

func (s *session) vipStats(arg string) error {
	name, err := vipName(arg)
	if err != nil {
		return err
	}
	st, err := s.api.VIPStats(s.ctx, name)
	if err != nil {
		return err
	}
	st.VIP = name
	return s.emit(st, func(w io.Writer) {
		row(w, "VIP", "PACKETS", "BYTES", "PKT/S", "BYTES/S", "LRU HITS", "LRU MISSES")
		row(w, keyDisplay(name), st.Packets, st.Bytes, rate(st.PacketsPerSec), rate(st.BytesPerSec), st.LRUHits, st.LRUMisses)
		row(w)
		row(w, "REAL", "PACKETS", "BYTES", "PKT/S", "BYTES/S", "STATE")
		var pk, by uint64
		for _, r := range st.Reals {
			state := "current"
			if r.Removed {
				state = "removed"
			}
			row(w, r.Address, r.Packets, r.Bytes, rate(r.PacketsPerSec), rate(r.BytesPerSec), state)
			pk, by = pk+r.Packets, by+r.Bytes
		}
		row(w, "TOTAL", pk, by)
	})
}

func rate(r float64) string { return strconv.FormatFloat(r, 'f', 1, 64) }

func newRingCommand(cfg *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:     "ring VIP",
		Short:   "Show a VIP's Maglev ring as the datapath has it: slots and share per real",
		Args:    cobra.ExactArgs(1),
		Example: "  lbd ring tcp/192.0.2.1:80",
		RunE: cfg.run(func(s *session, args []string) error {
			name, err := vipName(args[0])
			if err != nil {
				return err
			}
			ring, err := s.api.Ring(s.ctx, name)
			if err != nil {
				return err
			}
			return s.emit(ring, func(w io.Writer) {
				row(w, "REAL", "SLOTS", "SHARE")
				for _, r := range ring.Reals {
					row(w, r.Address, r.Slots, fmt.Sprintf("%.2f%%", 100*r.Share))
				}
				empty := 0.0
				if ring.Size > 0 {
					empty = float64(ring.EmptySlots) / float64(ring.Size)
				}
				row(w, "(empty)", ring.EmptySlots, fmt.Sprintf("%.2f%%", 100*empty))
				row(w, "TOTAL", ring.Size, "100.00%")
			})
		}),
	}
}

func newFlowsCommand(cfg *clientConfig) *cobra.Command {
	var q client.FlowQuery
	var vip string
	var all bool
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "List connection table entries, largest first",
		Args:  cobra.NoArgs,
		Example: "  lbd flows --vip tcp/192.0.2.1:80 --client 198.51.100.0/24 --sort last_seen --limit 20\n" +
			"  lbd flows --real 10.0.0.1 --all -o json",
	}
	fl := cmd.Flags()
	fl.StringVar(&vip, "vip", "", "only this VIP's flows")
	fl.StringVar(&q.Real, "real", "", "only flows to this real address")
	fl.StringVar(&q.Client, "client", "", "only clients with this address or in this prefix (CIDR)")
	fl.StringVar(&q.Sort, "sort", "bytes", "order, largest first: bytes or last_seen")
	fl.IntVar(&q.Limit, "limit", 100, "flows per page, 1-1000")
	fl.StringVar(&q.Cursor, "cursor", "", "start after this point (the cursor a previous listing printed)")
	fl.BoolVar(&all, "all", false, fmt.Sprintf("follow the pages to the end (at most %d flows)", maxAllFlows))
	cmd.RunE = cfg.run(func(s *session, _ []string) error {
		if vip != "" {
			name, err := vipName(vip)
			if err != nil {
				return fmt.Errorf("--vip: %w", err)
			}
			q.VIP = name
		}
		page, err := s.flows(q, all)
		if err != nil {
			return err
		}
		err = s.emit(page, func(w io.Writer) {
			row(w, "VIP", "CLIENT", "REAL", "PACKETS", "BYTES", "FIRST SEEN", "LAST SEEN")
			for _, f := range page.Flows {
				real := f.Real
				if real == "" {
					real = "-"
				}
				row(w, keyDisplay(f.VIP), f.Client, real, f.Packets, f.Bytes, f.FirstSeen.UTC().Format(time.RFC3339), f.LastSeen.UTC().Format(time.RFC3339))
			}
		})
		if err != nil {
			return err
		}
		if page.NextCursor != "" && !s.json {
			if all {
				fmt.Fprintf(s.errOut, "stopped after %d flows: narrow the listing (--vip, --real, --client) or continue with --cursor %s\n", len(page.Flows), page.NextCursor)
			} else {
				fmt.Fprintf(s.errOut, "more flows: pass --all, or --cursor %s for the next page\n", page.NextCursor)
			}
		}
		return nil
	})
	return cmd
}

// flows reads one page, or with all every page up to maxAllFlows, as one
// page: NextCursor is set only if flows were left. A flow that had packets
// while the pages were read can come again on a later page (see
// control.Controller.Flows): it is listed once, where it came first, with
// the newer counters.
func (s *session) flows(q client.FlowQuery, all bool) (apiv1.FlowPageJSON, error) {
	page, err := s.api.Flows(s.ctx, q)
	if err != nil || !all {
		return page, err
	}
	type flowID struct{ proto, client, dest string }
	at := make(map[flowID]int, len(page.Flows))
	for i, f := range page.Flows {
		at[flowID{f.Protocol, f.Client, f.Destination}] = i
	}
	seen := map[string]bool{q.Cursor: true}
	for page.NextCursor != "" && len(page.Flows) < maxAllFlows {
		if seen[page.NextCursor] {
			return page, fmt.Errorf("the daemon returned cursor %q twice: stopping to avoid a loop", page.NextCursor)
		}
		seen[page.NextCursor] = true
		q.Cursor = page.NextCursor
		next, err := s.api.Flows(s.ctx, q)
		if err != nil {
			return page, err
		}
		for _, f := range next.Flows {
			id := flowID{f.Protocol, f.Client, f.Destination}
			if i, again := at[id]; again {
				page.Flows[i] = f
				continue
			}
			at[id] = len(page.Flows)
			page.Flows = append(page.Flows, f)
		}
		page.Scanned += next.Scanned
		page.NextCursor = next.NextCursor
	}
	return page, nil
}

func newStatusCommand(cfg *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show what the daemon runs and whether it is ready",
		Args:    cobra.NoArgs,
		Example: "  lbd status",
		RunE: cfg.run(func(s *session, _ []string) error {
			st, err := s.api.Status(s.ctx)
			if err != nil {
				return err
			}
			ready := "ok"
			if h, err := s.api.Ready(s.ctx); err != nil {
				ready = "unknown: " + err.Error()
				if h.Status != "" {
					ready = h.Status + ": " + h.Reason
				}
			}
			return s.emit(st, func(w io.Writer) {
				row(w, "VERSION", st.Version)
				row(w, "READY", ready)
				row(w, "VIPS", st.VIPs)
				row(w, "FINGERPRINT", st.FingerprintShort)
				row(w, "STATE FILE", st.StateFile)
				for _, k := range slices.Sorted(maps.Keys(st.Datapath)) {
					row(w, "DATAPATH "+k, plain(st.Datapath[k]))
				}
			})
		}),
	}
}

// plain writes a JSON value for a table cell: strings bare, the rest as
// compact JSON.
func plain(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func newReconcileCommand(cfg *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:     "reconcile",
		Short:   "Make the daemon compare the datapath with the desired state now and repair any difference",
		Args:    cobra.NoArgs,
		Example: "  lbd reconcile",
		RunE: cfg.run(func(s *session, _ []string) error {
			drifts, err := s.api.Reconcile(s.ctx)
			if err != nil {
				return err
			}
			if drifts == nil {
				drifts = []apiv1.DriftJSON{}
			}
			if len(drifts) == 0 {
				if s.json {
					return s.emit(apiv1.DriftsJSON{Drifts: drifts}, nil)
				}
				s.note("in sync: the datapath matched the desired state")
				return nil
			}
			return s.emit(apiv1.DriftsJSON{Drifts: drifts}, func(w io.Writer) {
				row(w, "VIP", "MAP", "REPAIRED", "ERROR")
				for _, d := range drifts {
					vip := keyDisplay(d.VIP)
					if d.VIP == "" {
						vip = "-"
					}
					m := d.Map
					if m == "" {
						m = "-"
					}
					errText := d.Error
					if errText == "" {
						errText = "-"
					}
					if len(d.Changes) == 0 {
						row(w, vip, m, "-", errText)
					}
					for _, c := range d.Changes {
						row(w, vip, m, c, errText)
					}
				}
			})
		}),
	}
}
