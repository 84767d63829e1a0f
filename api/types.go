package api

import (
	"net/netip"
	"time"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
)

// The JSON bodies of the API, as openapi.yaml describes them. Pointers
// mark optional input fields, so that "absent" and "zero" differ.

// RealJSON is a real in requests and answers.
type RealJSON struct {
	Address string  `json:"address"`
	Weight  *uint32 `json:"weight,omitempty"`
	State   string  `json:"state,omitempty"`
}

// RealSettingsJSON is the body of PUT .../reals/{addr}.
type RealSettingsJSON struct {
	Weight *uint32 `json:"weight,omitempty"`
	State  string  `json:"state,omitempty"`
}

// RealListJSON is a VIP's set of reals.
type RealListJSON struct {
	Reals []RealJSON `json:"reals"`
}

// VIPSettingsJSON is the body of PUT /vips/{vip}.
type VIPSettingsJSON struct {
	Sticky   bool       `json:"sticky,omitempty"`
	NoLRU    bool       `json:"no_lru,omitempty"`
	Encap    string     `json:"encap,omitempty"`
	RingSize uint32     `json:"ring_size,omitempty"`
	Reals    []RealJSON `json:"reals,omitempty"`
}

// VIPCreateJSON is the body of POST /vips.
type VIPCreateJSON struct {
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
	Port     *int   `json:"port"`
	VIPSettingsJSON
}

// VIPPatchJSON is the body of PATCH /vips/{vip}.
type VIPPatchJSON struct {
	Sticky   *bool   `json:"sticky,omitempty"`
	NoLRU    *bool   `json:"no_lru,omitempty"`
	Encap    *string `json:"encap,omitempty"`
	RingSize *uint32 `json:"ring_size,omitempty"`
}

// VIPJSON is a VIP in answers.
type VIPJSON struct {
	Name     string     `json:"name"`
	Protocol string     `json:"protocol"`
	Address  string     `json:"address"`
	Port     uint16     `json:"port"`
	Sticky   bool       `json:"sticky"`
	NoLRU    bool       `json:"no_lru"`
	Encap    string     `json:"encap"`
	RingSize uint32     `json:"ring_size"`
	Reals    []RealJSON `json:"reals"`
}

// VIPListJSON is the answer of GET /vips.
type VIPListJSON struct {
	VIPs []VIPJSON `json:"vips"`
}

// RingJSON summarises a ring.
type RingJSON struct {
	Size       int             `json:"size"`
	EmptySlots int             `json:"empty_slots"`
	Reals      []RingShareJSON `json:"reals"`
}

// RingShareJSON is one real's part of a ring.
type RingShareJSON struct {
	Address string  `json:"address"`
	Slots   int     `json:"slots"`
	Share   float64 `json:"share"`
}

// TrafficJSON is a packet/byte count with rates.
type TrafficJSON struct {
	Packets       uint64  `json:"packets"`
	Bytes         uint64  `json:"bytes"`
	PacketsPerSec float64 `json:"packets_per_second"`
	BytesPerSec   float64 `json:"bytes_per_second"`
}

// VIPStatsJSON are a VIP's counters.
type VIPStatsJSON struct {
	VIP string `json:"vip,omitempty"`
	TrafficJSON
	LRUHits   uint64 `json:"lru_hits"`
	LRUMisses uint64 `json:"lru_misses"`
}

// RealStatsJSON are a real's counters in the overview.
type RealStatsJSON struct {
	Address string `json:"address"`
	TrafficJSON
}

// GlobalStatsJSON are the datapath's global counters.
type GlobalStatsJSON struct {
	Counters map[string]uint64  `json:"counters"`
	Rates    map[string]float64 `json:"rates"`
}

// StatsJSON is the answer of GET /stats.
type StatsJSON struct {
	Global GlobalStatsJSON `json:"global"`
	VIPs   []VIPStatsJSON  `json:"vips"`
	Reals  []RealStatsJSON `json:"reals"`
}

// FlowJSON is one connection table entry.
type FlowJSON struct {
	VIP         string    `json:"vip"`
	Protocol    string    `json:"protocol"`
	Client      string    `json:"client"`
	Destination string    `json:"destination"`
	Real        string    `json:"real"`
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
}

// FlowPageJSON is one page of flows.
type FlowPageJSON struct {
	Flows      []FlowJSON `json:"flows"`
	NextCursor string     `json:"next_cursor,omitempty"`
	Scanned    int        `json:"scanned"`
}

// DriftsJSON is the answer of POST /reconcile.
type DriftsJSON struct {
	Drifts []control.Drift `json:"drifts"`
}

// StatusJSON is the answer of GET /status.
type StatusJSON struct {
	Version   string         `json:"version"`
	VIPs      int            `json:"vips"`
	StateFile string         `json:"state_file"`
	Datapath  map[string]any `json:"datapath"`
}

// HealthJSON answers /healthz and /readyz.
type HealthJSON struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// ProblemJSON is an error (RFC 9457 problem details).
type ProblemJSON struct {
	Type       string `json:"type,omitempty"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail"`
	Field      string `json:"field,omitempty"`
	RolledBack *bool  `json:"rolled_back,omitempty"`
}

func vipJSON(v *control.VIP) VIPJSON {
	out := VIPJSON{
		Name: control.VIPName(v.Key), Protocol: v.Key.Proto.String(), Address: v.Key.Addr.String(), Port: v.Key.Port,
		Sticky: v.Sticky, NoLRU: v.NoLRU, Encap: string(v.Encap), RingSize: v.RingSize, Reals: []RealJSON{},
	}
	for _, r := range v.Reals {
		out.Reals = append(out.Reals, realJSON(r))
	}
	return out
}

func realJSON(r control.Real) RealJSON {
	w := r.Weight
	return RealJSON{Address: r.Addr.String(), Weight: &w, State: string(r.State)}
}

// toReal turns input into a control.Real; weight defaults to 1, state to
// active.
func toReal(r RealJSON) (control.Real, error) {
	addr, err := netip.ParseAddr(r.Address)
	if err != nil {
		return control.Real{}, &control.InvalidError{Field: "address", Msg: "real address " + quote(r.Address) + ": not an IPv4 or IPv6 address"}
	}
	out := control.Real{Addr: addr, Weight: 1, State: control.RealState(r.State)}
	if r.Weight != nil {
		out.Weight = *r.Weight
	}
	return out, nil
}

func toReals(rs []RealJSON) ([]control.Real, error) {
	out := make([]control.Real, 0, len(rs))
	for _, r := range rs {
		real, err := toReal(r)
		if err != nil {
			return nil, err
		}
		out = append(out, real)
	}
	return out, nil
}

func (s VIPSettingsJSON) toVIP(key xdp.VIPKey) (control.VIP, error) {
	reals, err := toReals(s.Reals)
	if err != nil {
		return control.VIP{}, err
	}
	return control.VIP{Key: key, Sticky: s.Sticky, NoLRU: s.NoLRU, Encap: control.Encap(s.Encap), RingSize: s.RingSize, Reals: reals}, nil
}

func trafficJSON(t control.Traffic) TrafficJSON {
	return TrafficJSON{Packets: t.Packets, Bytes: t.Bytes, PacketsPerSec: t.PacketsPerSec, BytesPerSec: t.BytesPerSec}
}

func quote(s string) string { return "\"" + s + "\"" }
