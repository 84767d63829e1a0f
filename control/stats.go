package control

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/lbd-dev/lbd/bpf/xdp"
)

// Traffic is a packet and byte count with its recent rate.
type Traffic struct {
	Packets       uint64
	Bytes         uint64
	PacketsPerSec float64
	BytesPerSec   float64
}

// VIPStats are one VIP's counters.
type VIPStats struct {
	Traffic
	LRUHits   uint64
	LRUMisses uint64
}

// RealStats are one real's counters, summed over every VIP that uses it
// (the datapath counts per real).
type RealStats struct {
	Traffic
}

// GlobalStats are the datapath's outcome and table counters by name
// (xdp.Stat names), with per-second rates.
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

// VIPStats reads one VIP's counters.
func (c *Controller) VIPStats(key xdp.VIPKey) (VIPStats, error) {
	if _, err := c.VIP(key); err != nil {
		return VIPStats{}, err
	}
	s, err := c.dp.VIPStats(key)
	if err != nil {
		return VIPStats{}, fmt.Errorf("read counters of VIP %s: %w", VIPName(key), err)
	}
	id := "vip/" + VIPName(key)
	return VIPStats{
		Traffic:   Traffic{Packets: s.Packets, Bytes: s.Bytes, PacketsPerSec: c.rates.rate(id + "/packets"), BytesPerSec: c.rates.rate(id + "/bytes")},
		LRUHits:   s.LRUHits,
		LRUMisses: s.LRUMisses,
	}, nil
}

// RealStats reads the counters of a real of a VIP.
func (c *Controller) RealStats(key xdp.VIPKey, addr netip.Addr) (RealStats, error) {
	v, err := c.VIP(key)
	if err != nil {
		return RealStats{}, err
	}
	if _, ok := v.Real(addr); !ok {
		return RealStats{}, fmt.Errorf("real %s of VIP %s: %w", addr, VIPName(key), ErrNotFound)
	}
	return c.realStats(addr)
}

func (c *Controller) realStats(addr netip.Addr) (RealStats, error) {
	id, ok := c.dp.Reals()[addr]
	if !ok {
		return RealStats{}, nil // desired but not (yet) in the datapath: no traffic
	}
	s, err := c.dp.RealStats(id)
	if err != nil {
		return RealStats{}, fmt.Errorf("read counters of real %s: %w", addr, err)
	}
	k := "real/" + addr.String()
	return RealStats{Traffic{Packets: s.Packets, Bytes: s.Bytes, PacketsPerSec: c.rates.rate(k + "/packets"), BytesPerSec: c.rates.rate(k + "/bytes")}}, nil
}

// AllStats is every counter at once (for metrics and the stats overview).
type AllStats struct {
	Global GlobalStats
	VIPs   map[xdp.VIPKey]VIPStats
	Reals  map[netip.Addr]RealStats
}

// AllStats reads every counter of the desired VIPs and their reals.
func (c *Controller) AllStats() (AllStats, error) {
	g, err := c.GlobalStats()
	if err != nil {
		return AllStats{}, err
	}
	out := AllStats{Global: g, VIPs: make(map[xdp.VIPKey]VIPStats), Reals: make(map[netip.Addr]RealStats)}
	for _, v := range c.VIPs() {
		s, err := c.VIPStats(v.Key)
		if err != nil {
			return AllStats{}, err
		}
		out.VIPs[v.Key] = s
		for _, r := range v.Reals {
			if _, done := out.Reals[r.Addr]; done {
				continue
			}
			rs, err := c.realStats(r.Addr)
			if err != nil {
				return AllStats{}, err
			}
			out.Reals[r.Addr] = rs
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
	for s := xdp.StatTX; s < xdp.NumStats; s++ { // zeros too: a rate needs its baseline
		values["global/"+s.String()] = g[s]
	}
	for _, v := range c.VIPs() {
		s, err := c.dp.VIPStats(v.Key)
		if err != nil {
			continue // removed meanwhile
		}
		id := "vip/" + VIPName(v.Key)
		values[id+"/packets"], values[id+"/bytes"] = s.Packets, s.Bytes
	}
	for addr, id := range c.dp.Reals() {
		s, err := c.dp.RealStats(id)
		if err != nil {
			continue
		}
		k := "real/" + addr.String()
		values[k+"/packets"], values[k+"/bytes"] = s.Packets, s.Bytes
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
