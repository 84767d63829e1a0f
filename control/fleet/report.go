package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lbd-dev/lbd/control"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Report is what one node runs, as it tells the fleet.
type Report struct {
	Node string `json:"node"`
	// Revision is the etcd revision of the desired state it applied.
	Revision    int64  `json:"revision"`
	Fingerprint string `json:"fingerprint"`
	// BGP is its announcement state ("announced", "withdrawn", "off").
	BGP string `json:"bgp"`
	// Stale: the node has not heard from etcd for --fleet-stale-after.
	Stale bool `json:"stale"`
	// Down are the reals its own probes see down (VIP/ADDRESS).
	Down    []string  `json:"down"`
	Updated time.Time `json:"updated"`
}

// Reporter keeps this node's report in etcd under a lease: a node that
// dies or is cut off disappears from the fleet after the lease's TTL.
type Reporter struct {
	s     *Store
	mu    sync.Mutex
	lease clientv3.LeaseID
}

// NewReporter returns the store's reporter.
func (s *Store) NewReporter() *Reporter { return &Reporter{s: s} }

// Publish writes r (its Node and Updated are set here). A new lease is
// taken when the last one expired (after a partition).
func (p *Reporter) Publish(ctx context.Context, r Report) error {
	r.Node, r.Updated = p.s.cfg.Node, time.Now().UTC()
	if r.Down == nil {
		r.Down = []string{}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.s.cfg.RequestTimeout)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lease != 0 {
		if _, err := p.s.cli.KeepAliveOnce(ctx, p.lease); err != nil {
			p.lease = 0
		}
	}
	if p.lease == 0 {
		g, err := p.s.cli.Grant(ctx, int64((p.s.cfg.ReportTTL+time.Second-1)/time.Second))
		if err != nil {
			return fmt.Errorf("etcd lease for the node report: %w", err)
		}
		p.lease = g.ID
	}
	_, err = p.s.cli.Put(ctx, p.s.nodesPrefix()+p.s.cfg.Node, string(data), clientv3.WithLease(p.lease))
	if err != nil {
		return fmt.Errorf("write node report: %w", err)
	}
	return nil
}

// Reports reads every live node's report, sorted by node.
func (s *Store) Reports(ctx context.Context) ([]Report, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.nodesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read node reports: %w", err)
	}
	out := []Report{}
	for _, kv := range resp.Kvs {
		var r Report
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("node report %s is corrupt: %v", kv.Key, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// Status is the fleet as its nodes report it.
type Status struct {
	Fleet string `json:"fleet"`
	// Revision is the fleet's desired state revision in etcd.
	Revision int64    `json:"revision"`
	Nodes    []Report `json:"nodes"`
	// Agree: every node applied Revision and all fingerprints are equal.
	Agree bool `json:"agree"`
	// Disagree names the nodes that differ from the fleet (behind or
	// another fingerprint), with why.
	Disagree []string `json:"disagree"`
}

// FleetStatus reads the desired revision and the reports and tells
// whether the nodes agree.
func (s *Store) FleetStatus(ctx context.Context) (Status, error) {
	d, err := s.Get(ctx)
	if err != nil {
		return Status{}, err
	}
	rs, err := s.Reports(ctx)
	if err != nil {
		return Status{}, err
	}
	return Agreement(s.cfg.Fleet, d.Revision, rs), nil
}

// Agreement compares the reports with the fleet's revision: the fleet's
// fingerprint is the one reported by most nodes at that revision.
func Agreement(fleet string, rev int64, rs []Report) Status {
	st := Status{Fleet: fleet, Revision: rev, Nodes: rs, Disagree: []string{}}
	want := FleetFingerprint(rev, rs)
	for _, r := range rs {
		switch {
		case r.Revision != rev:
			st.Disagree = append(st.Disagree, fmt.Sprintf("%s: applied revision %d, fleet at %d", r.Node, r.Revision, rev))
		case r.Fingerprint != want:
			st.Disagree = append(st.Disagree, fmt.Sprintf("%s: fingerprint %s, fleet %s", r.Node, r.Fingerprint, want))
		}
	}
	st.Agree = len(rs) > 0 && len(st.Disagree) == 0
	return st
}

// FleetRevision is the newest revision a live (not stale) node reports
// it applied: the fleet's desired state as far as the reports tell.
func FleetRevision(rs []Report) int64 {
	var rev int64
	for _, r := range rs {
		if !r.Stale {
			rev = max(rev, r.Revision)
		}
	}
	return rev
}

// FleetFingerprint is the fingerprint most nodes at revision rev report
// (ties: the smallest, so every node picks the same); "" if none is at
// rev.
func FleetFingerprint(rev int64, rs []Report) string {
	n := map[string]int{}
	for _, r := range rs {
		if r.Revision == rev && !r.Stale {
			n[r.Fingerprint]++
		}
	}
	best, bn := "", 0
	for fp, c := range n {
		if c > bn || (c == bn && fp < best) {
			best, bn = fp, c
		}
	}
	return best
}

// HealthMode is how a node decides that a real is down.
type HealthMode string

const (
	// HealthQuorum: a real is down when a quorum of the live nodes see it
	// down, so every node builds the same ring.
	HealthQuorum HealthMode = "quorum"
	// HealthLocal: each node trusts its own probes (rings may differ
	// while probes disagree).
	HealthLocal HealthMode = "local"
)

// ParseHealthMode reads --fleet-health.
func ParseHealthMode(s string) (HealthMode, error) {
	switch HealthMode(s) {
	case HealthQuorum, HealthLocal:
		return HealthMode(s), nil
	}
	return "", fmt.Errorf("--fleet-health %q: want quorum or local", s)
}

// QuorumDown is the set of reals a quorum of the reporting nodes see
// down. quorum <= 0 means a majority of the reports (n/2+1). Stale
// nodes' observations are not counted, nor are they counted among the
// live nodes.
func QuorumDown(rs []Report, quorum int) map[control.RealKey]bool {
	live := 0
	votes := map[string]int{}
	for _, r := range rs {
		if r.Stale {
			continue
		}
		live++
		for _, d := range slices.Compact(slices.Sorted(slices.Values(r.Down))) {
			votes[d]++
		}
	}
	if quorum <= 0 {
		quorum = live/2 + 1
	}
	down := map[control.RealKey]bool{}
	for name, v := range votes {
		if v < quorum {
			continue
		}
		k, err := ParseRealName(name)
		if err != nil {
			continue
		}
		down[k] = true
	}
	return down
}

// DownNames names reals for Report.Down, sorted.
func DownNames(keys []control.RealKey) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, realName(k))
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Keys returns the report key prefix, for tools (etcdctl get --prefix).
func (s *Store) Keys() string { return strings.TrimSuffix(s.nodesPrefix(), "/") }
