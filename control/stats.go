package control

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// Traffic is a packet and byte count with its recent rate.
type Traffic struct {
	Packets       uint64
	Bytes         uint64
	PacketsPerSec float64
	BytesPerSec   float64
}

// VIPStats are one VIP's counters, with its reals': the reals' packets
// and bytes add up to the VIP's (removed reals included).
type VIPStats struct {
	Traffic
	LRUHits   uint64
	LRUMisses uint64
	Reals     []VIPRealStats // by address
}

// RealStats are one real's counters for one VIP (the datapath counts per
// VIP and real, like ipvsadm --stats): since the real joined the VIP or
// its counters were last reset, including earlier times it was in the
// VIP.
type RealStats struct {
	Traffic
	// Removed: the real is no longer in the VIP; these are its final
	// counters, kept until the VIP's counters are reset.
	Removed bool
}

// VIPRealStats is one real in a VIP's counters.
type VIPRealStats struct {
	Addr netip.Addr
	RealStats
}

// GlobalStats are the datapath's outcome and table counters by name
// (datapath.Stat names), with per-second rates.
type GlobalStats struct {
	Counters map[string]uint64
	Rates    map[string]float64
}

// GlobalStats reads the global counters.
func (c *Controller) GlobalStats() (GlobalStats, error) {
	g, err := c.dp.GlobalStats()
	if err != nil {
		return GlobalStats{}, fmt.Errorf("read global counters: %w", err)
	}
	out := GlobalStats{Counters: g.Map(), Rates: make(map[string]float64, len(g))}
	for name := range out.Counters {
		out.Rates[name] = c.rates.rate("global/" + name)
	}
	return out, nil
}

// VIPStats reads one VIP's counters and its reals'.
func (c *Controller) VIPStats(key lb.VIPKey) (VIPStats, error) {
	if _, err := c.VIP(key); err != nil {
		return VIPStats{}, err
	}
	s, err := c.dp.VIPStats(key)
	if err != nil {
		return VIPStats{}, fmt.Errorf("read counters of VIP %s: %w", lb.VIPName(key), err)
	}
	id := "vip/" + lb.VIPName(key)
	out := VIPStats{
		Traffic:   Traffic{Packets: s.Packets, Bytes: s.Bytes, PacketsPerSec: c.rates.rate(id + "/packets"), BytesPerSec: c.rates.rate(id + "/bytes")},
		LRUHits:   s.LRUHits,
		LRUMisses: s.LRUMisses,
	}
	pairs, err := c.pairCounters(key)
	if err != nil {
		return VIPStats{}, err
	}
	for _, p := range pairs {
		k := pairRateKey(key, p.Addr)
		p.PacketsPerSec, p.BytesPerSec = c.rates.rate(k+"/packets"), c.rates.rate(k+"/bytes")
		out.Reals = append(out.Reals, p)
	}
	return out, nil
}

// RealStats reads the counters of a real of a VIP, or of a real the VIP
// had (until its counters are reset).
func (c *Controller) RealStats(key lb.VIPKey, addr netip.Addr) (RealStats, error) {
	st, err := c.VIPStats(key)
	if err != nil {
		return RealStats{}, err
	}
	for _, r := range st.Reals {
		if r.Addr == addr {
			return r.RealStats, nil
		}
	}
	return RealStats{}, fmt.Errorf("real %s of VIP %s: %w", addr, lb.VIPName(key), ErrNotFound)
}

// pairCounters reads the counters of a VIP's reals (live index plus what
// earlier indices of the pair counted) and of the reals it had, sorted by
// address, without rates.
func (c *Controller) pairCounters(key lb.VIPKey) ([]VIPRealStats, error) {
	c.mu.Lock()
	v := c.vips[key]
	type pair struct {
		id      datapath.RealID
		removed datapath.RealStats
		gone    bool
	}
	pairs := map[netip.Addr]pair{}
	if v != nil {
		for _, r := range v.Reals {
			pairs[r.Addr] = pair{id: c.slots[RealKey{key, r.Addr}], removed: c.removed[RealKey{key, r.Addr}]}
		}
	}
	for pk, st := range c.removed {
		if _, current := pairs[pk.Addr]; pk.VIP == key && !current {
			pairs[pk.Addr] = pair{removed: st, gone: true}
		}
	}
	c.mu.Unlock()
	out := make([]VIPRealStats, 0, len(pairs))
	for addr, p := range pairs {
		st := p.removed
		if p.id != 0 {
			live, err := c.dp.RealStats(p.id)
			if err != nil {
				return nil, fmt.Errorf("read counters of real %s of VIP %s: %w", addr, lb.VIPName(key), err)
			}
			st.Packets += live.Packets
			st.Bytes += live.Bytes
		}
		out = append(out, VIPRealStats{Addr: addr, RealStats: RealStats{Traffic: Traffic{Packets: st.Packets, Bytes: st.Bytes}, Removed: p.gone}})
	}
	slices.SortFunc(out, func(a, b VIPRealStats) int { return a.Addr.Compare(b.Addr) })
	return out, nil
}

func pairRateKey(key lb.VIPKey, addr netip.Addr) string {
	return "real/" + lb.VIPName(key) + "/" + addr.String()
}

// ResetStats zeroes a VIP's counters and its reals', and forgets the
// reals it no longer has. Packets in flight while it runs may be counted
// for the VIP but not yet for a real (or the other way round).
func (c *Controller) ResetStats(key lb.VIPKey) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vips[key]
	if !ok {
		return notFound(key)
	}
	if err := c.dp.ResetVIPStats(key); err != nil {
		return fmt.Errorf("reset counters of VIP %s: %w", lb.VIPName(key), err)
	}
	for _, r := range v.Reals {
		if id, ok := c.slots[RealKey{key, r.Addr}]; ok {
			if err := c.dp.ResetRealStats(id); err != nil {
				return fmt.Errorf("reset counters of real %s of VIP %s: %w", r.Addr, lb.VIPName(key), err)
			}
		}
	}
	for pk := range c.removed {
		if pk.VIP == key {
			delete(c.removed, pk)
		}
	}
	c.saveCounters()
	c.log.Info("reset counters", "vip", lb.VIPName(key))
	return nil
}

// AllStats is every counter at once (for metrics and the stats overview).
type AllStats struct {
	Global GlobalStats
	VIPs   map[lb.VIPKey]VIPStats
	// Reals are the reals' counters summed over the VIPs that have (or
	// had) them, by address.
	Reals map[netip.Addr]RealStats
}

// AllStats reads every counter of the desired VIPs and their reals.
func (c *Controller) AllStats() (AllStats, error) {
	g, err := c.GlobalStats()
	if err != nil {
		return AllStats{}, err
	}
	out := AllStats{Global: g, VIPs: make(map[lb.VIPKey]VIPStats), Reals: make(map[netip.Addr]RealStats)}
	for _, v := range c.VIPs() {
		s, err := c.VIPStats(v.Key)
		if err != nil {
			return AllStats{}, err
		}
		out.VIPs[v.Key] = s
		for _, r := range s.Reals {
			sum, seen := out.Reals[r.Addr]
			sum.Packets += r.Packets
			sum.Bytes += r.Bytes
			sum.PacketsPerSec += r.PacketsPerSec
			sum.BytesPerSec += r.BytesPerSec
			sum.Removed = r.Removed && (!seen || sum.Removed)
			out.Reals[r.Addr] = sum
		}
	}
	return out, nil
}

// SampleRates takes one sample of every counter for the rates. Run calls
// it periodically; tests call it directly.
func (c *Controller) SampleRates(now time.Time) error {
	g, err := c.dp.GlobalStats()
	if err != nil {
		return err
	}
	values := make(map[string]uint64)
	for s := datapath.StatTX; s < datapath.NumStats; s++ { // zeros too: a rate needs its baseline
		values["global/"+s.String()] = g[s]
	}
	for _, v := range c.VIPs() {
		s, err := c.dp.VIPStats(v.Key)
		if err != nil {
			continue // removed meanwhile
		}
		id := "vip/" + lb.VIPName(v.Key)
		values[id+"/packets"], values[id+"/bytes"] = s.Packets, s.Bytes
	}
	for _, v := range c.VIPs() {
		pairs, err := c.pairCounters(v.Key)
		if err != nil {
			continue
		}
		for _, p := range pairs {
			k := pairRateKey(v.Key, p.Addr)
			values[k+"/packets"], values[k+"/bytes"] = p.Packets, p.Bytes
		}
	}
	c.rates.sample(now, values)
	return nil
}

// RunRates samples the counters every interval until ctx ends.
func (c *Controller) RunRates(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	_ = c.SampleRates(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := c.SampleRates(now); err != nil {
				c.log.Warn("sample counters", "err", err)
			}
		}
	}
}

// rateTracker keeps the last two samples of each counter; a rate is the
// difference between them over their time apart. A counter absent from
// the earlier sample started from zero since (every series lbd counts
// starts at zero: counters are cleared when a VIP or real is defined).
type rateTracker struct {
	mu          sync.Mutex
	prev, cur   map[string]uint64
	prevT, curT time.Time
}

func newRateTracker() *rateTracker { return &rateTracker{} }

func (r *rateTracker) sample(now time.Time, values map[string]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prev, r.prevT = r.cur, r.curT
	r.cur, r.curT = values, now
}

func (r *rateTracker) rate(key string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.prev == nil {
		return 0
	}
	dt := r.curT.Sub(r.prevT).Seconds()
	a := r.prev[key] // absent: the series began since, from zero
	b, ok := r.cur[key]
	if dt <= 0 || !ok || b < a { // gone, or counters reset
		return 0
	}
	return float64(b-a) / dt
}

// TableUsage is the fill of the connection table (one table shared by
// all CPUs), as counted at ReadAt.
type TableUsage struct {
	datapath.TableUsage
	ReadAt time.Time
}

// usageMaxAge is how long a count of the connection table is reused:
// counting reads every entry (0.36-0.39 s for a full table of 1M entries
// on the 2-CPU test host: BenchmarkFlowTableUsage), which a scrape every
// few seconds must not repeat. Once per 30 s is at most 1.3% of a CPU.
const usageMaxAge = 30 * time.Second

// FlowTableUsage counts the entries of the connection table, or returns
// the count made less than usageMaxAge ago.
func (c *Controller) FlowTableUsage() (TableUsage, error) {
	c.usageMu.Lock()
	defer c.usageMu.Unlock()
	if !c.usage.ReadAt.IsZero() && time.Since(c.usage.ReadAt) < usageMaxAge {
		return c.usage, nil
	}
	u, err := c.dp.FlowTableUsage()
	if err != nil {
		return TableUsage{}, fmt.Errorf("count connection table entries: %w", err)
	}
	c.usage = TableUsage{TableUsage: u, ReadAt: time.Now()}
	return c.usage, nil
}

// countersSaver is a Saver that also keeps the counters file (*Store).
type countersSaver interface {
	SaveCounters(Counters) error
}

// counters is what the counters file holds now. c.mu is held.
func (c *Controller) counters() Counters {
	out := Counters{Version: stateVersion, Pairs: []PairRecord{}, Removed: []RemovedRecord{}}
	for pk, id := range c.slots {
		out.Pairs = append(out.Pairs, PairRecord{VIP: lb.VIPName(pk.VIP), Real: pk.Addr, Index: uint32(id)})
	}
	for pk, st := range c.removed {
		out.Removed = append(out.Removed, RemovedRecord{VIP: lb.VIPName(pk.VIP), Real: pk.Addr, Packets: st.Packets, Bytes: st.Bytes})
	}
	slices.SortFunc(out.Pairs, func(a, b PairRecord) int { return cmp.Or(strings.Compare(a.VIP, b.VIP), a.Real.Compare(b.Real)) })
	slices.SortFunc(out.Removed, func(a, b RemovedRecord) int { return cmp.Or(strings.Compare(a.VIP, b.VIP), a.Real.Compare(b.Real)) })
	return out
}

// saveCounters writes the counters file if the store keeps one. A failure
// is logged: forwarding does not depend on it, only the attribution of
// counters after a restart. c.mu is held.
func (c *Controller) saveCounters() {
	cs, ok := c.store.(countersSaver)
	if !ok {
		return
	}
	now := c.counters()
	if c.countersSaved && slices.Equal(now.Pairs, c.lastCounters.Pairs) && slices.Equal(now.Removed, c.lastCounters.Removed) {
		return // a reconcile that changed nothing writes nothing
	}
	if err := cs.SaveCounters(now); err != nil {
		c.log.Error("save counters file; removed reals' totals would be lost on restart", "err", err)
		return
	}
	c.lastCounters, c.countersSaved = now, true
}

// RestoreCounters takes back, after a restart, which real index each
// (VIP, real) pair had and the final counters of removed reals. Call it
// before the first Reconcile, and only when the datapath was recovered
// from pins (its counters went on): with a fresh datapath the VIPs'
// counters start at zero, and old removed totals would no longer add up.
// Pairs whose index no longer holds their address are dropped.
func (c *Controller) RestoreCounters(saved Counters) {
	c.mu.Lock()
	defer c.mu.Unlock()
	live := c.dp.RealSlots()
	for _, p := range saved.Pairs {
		key, err := lb.ParseVIPName(p.VIP)
		if err != nil || live[datapath.RealID(p.Index)] != p.Real {
			continue
		}
		c.slots[RealKey{key, p.Real}] = datapath.RealID(p.Index)
	}
	for _, r := range saved.Removed {
		key, err := lb.ParseVIPName(r.VIP)
		if err != nil {
			continue
		}
		if _, ok := c.vips[key]; !ok {
			continue
		}
		c.removed[RealKey{key, r.Real}] = datapath.RealStats{Packets: r.Packets, Bytes: r.Bytes}
	}
}
