package api

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/health"
)

// The JSON bodies of the API, as openapi.yaml describes them. Pointers
// mark optional input fields, so that "absent" and "zero" differ. The
// bodies of a VIP set (ApplyJSON) also have YAML names, the same: that
// is the file of lbd apply and lbd export.

// RealJSON is a real in requests and answers.
type RealJSON struct {
	Address string  `json:"address" yaml:"address"`
	Weight  *uint32 `json:"weight,omitempty" yaml:"weight,omitempty"`
	State   string  `json:"state,omitempty" yaml:"state,omitempty"`
	// Health is set in answers when the VIP checks its reals (ignored in
	// requests).
	Health *RealHealthJSON `json:"health,omitempty" yaml:"-"`
}

// RealHealthJSON is what health checks know of a real.
type RealHealthJSON struct {
	State      string           `json:"state"` // up | down
	Reason     string           `json:"reason"`
	LastChange time.Time        `json:"last_change"`
	LastResult *ProbeResultJSON `json:"last_result,omitempty"` // absent until the first probe
	// Probes in a row that succeeded or failed (one is 0).
	SuccessesInARow int `json:"successes_in_a_row"`
	FailuresInARow  int `json:"failures_in_a_row"`
}

// ProbeResultJSON is one probe's outcome.
type ProbeResultJSON struct {
	OK         bool      `json:"ok"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
	DurationMS float64   `json:"duration_ms"`
}

// HealthCheckJSON is a VIP's health check.
type HealthCheckJSON struct {
	Type         string `json:"type" yaml:"type"`
	Port         uint16 `json:"port,omitempty" yaml:"port,omitempty"`
	Path         string `json:"path,omitempty" yaml:"path,omitempty"`
	ExpectStatus int    `json:"expect_status,omitempty" yaml:"expect_status,omitempty"`
	Interval     string `json:"interval,omitempty" yaml:"interval,omitempty"` // Go duration, e.g. "5s"
	Timeout      string `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	Rise         int    `json:"rise,omitempty" yaml:"rise,omitempty"`
	Fall         int    `json:"fall,omitempty" yaml:"fall,omitempty"`
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
	Sticky       bool             `json:"sticky,omitempty" yaml:"sticky,omitempty"`
	NoLRU        bool             `json:"no_lru,omitempty" yaml:"no_lru,omitempty"`
	NoFlowSearch bool             `json:"no_flow_search,omitempty" yaml:"no_flow_search,omitempty"`
	Encap        string           `json:"encap,omitempty" yaml:"encap,omitempty"`
	RingSize     uint32           `json:"ring_size,omitempty" yaml:"ring_size,omitempty"`
	Reals        []RealJSON       `json:"reals,omitempty" yaml:"reals,omitempty"`
	HealthCheck  *HealthCheckJSON `json:"health_check,omitempty" yaml:"health_check,omitempty"`
	DownFlows    string           `json:"down_flows,omitempty" yaml:"down_flows,omitempty"`
	AllDown      string           `json:"all_down,omitempty" yaml:"all_down,omitempty"`
	Disabled     bool             `json:"disabled,omitempty" yaml:"disabled,omitempty"`
	Description  string           `json:"description,omitempty" yaml:"description,omitempty"`
}

// VIPCreateJSON is the body of POST /vips.
type VIPCreateJSON struct {
	Protocol        string `json:"protocol" yaml:"protocol"`
	Address         string `json:"address" yaml:"address"`
	Port            *int   `json:"port" yaml:"port"`
	VIPSettingsJSON `yaml:",inline"`
}

// VIPPatchJSON is the body of PATCH /vips/{vip}.
type VIPPatchJSON struct {
	Sticky       *bool            `json:"sticky,omitempty"`
	NoLRU        *bool            `json:"no_lru,omitempty"`
	NoFlowSearch *bool            `json:"no_flow_search,omitempty"`
	Encap        *string          `json:"encap,omitempty"`
	RingSize     *uint32          `json:"ring_size,omitempty"`
	HealthCheck  *HealthCheckJSON `json:"health_check,omitempty"`
	DownFlows    *string          `json:"down_flows,omitempty"`
	AllDown      *string          `json:"all_down,omitempty"`
	Disabled     *bool            `json:"disabled,omitempty"`
	Description  *string          `json:"description,omitempty"`
}

// VIPJSON is a VIP in answers.
type VIPJSON struct {
	Name         string          `json:"name"`
	Protocol     string          `json:"protocol"`
	Address      string          `json:"address"`
	Port         uint16          `json:"port"`
	Sticky       bool            `json:"sticky"`
	NoLRU        bool            `json:"no_lru"`
	NoFlowSearch bool            `json:"no_flow_search"`
	Encap        string          `json:"encap"`
	RingSize     uint32          `json:"ring_size"`
	Reals        []RealJSON      `json:"reals"`
	HealthCheck  HealthCheckJSON `json:"health_check"`
	DownFlows    string          `json:"down_flows"`
	AllDown      string          `json:"all_down"`
	Disabled     bool            `json:"disabled"`
	Description  string          `json:"description"` // "" when none
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
	// Reals are the VIP's reals' counters, removed reals included (until
	// the VIP's counters are reset): their packets and bytes add up to
	// the VIP's.
	Reals []RealStatsJSON `json:"reals,omitempty"`
}

// RealStatsJSON are a real's counters: of one VIP in a VIP's stats, summed
// over the VIPs in the overview.
type RealStatsJSON struct {
	Address string `json:"address"`
	TrafficJSON
	// Removed: no longer a real of the VIP (of any VIP, in the overview);
	// the counters are its final ones.
	Removed bool `json:"removed,omitempty"`
}

// FlowTablesJSON is the answer of GET /flow-tables: the fill of the
// connection table, one table shared by all CPUs.
type FlowTablesJSON struct {
	Entries  int `json:"entries"`
	Capacity int `json:"capacity"`
	// CPUs share the table. Each CPU's LRU lists have PerCPUCapacity
	// entries (capacity / cpus): a CPU that has made that many evicts its
	// least recently used entry for a new flow even while the table has
	// room. Entries cannot be counted per CPU.
	CPUs           int `json:"cpus"`
	PerCPUCapacity int `json:"per_cpu_capacity"`
	// ReadAt is when the table was counted (answers are cached for 30
	// s: counting reads every entry).
	ReadAt time.Time `json:"read_at"`
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
	Commit    string         `json:"commit"`
	BuildDate string         `json:"build_date"`
	VIPs      int            `json:"vips"`
	StateFile string         `json:"state_file"`
	Datapath  map[string]any `json:"datapath"`
	// ReconcileDrifts counts the VIPs reconciles found differing from the
	// desired state (and repaired) since the daemon started.
	ReconcileDrifts uint64 `json:"reconcile_drifts"`
	// Fingerprint names everything that decides where a packet goes
	// (control.Controller.Fingerprint); FingerprintShort is its first 12
	// hex digits.
	Fingerprint      string `json:"fingerprint"`
	FingerprintShort string `json:"fingerprint_short"`
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

// vipJSON renders a VIP; health, if not nil, gives its reals' health.
func vipJSON(v *control.VIP, health func(netip.Addr) *RealHealthJSON) VIPJSON {
	out := VIPJSON{
		Name: control.VIPName(v.Key), Protocol: v.Key.Proto.String(), Address: v.Key.Addr.String(), Port: v.Key.Port,
		Sticky: v.Sticky, NoLRU: v.NoLRU, NoFlowSearch: v.NoFlowSearch, Encap: string(v.Encap), RingSize: v.RingSize, Reals: []RealJSON{},
		HealthCheck: healthCheckJSON(v.Health), DownFlows: string(v.DownFlows), AllDown: string(v.AllDown), Disabled: v.Disabled, Description: v.Description,
	}
	for _, r := range v.Reals {
		rj := realJSON(r)
		if health != nil {
			rj.Health = health(r.Addr)
		}
		out.Reals = append(out.Reals, rj)
	}
	return out
}

func healthCheckJSON(s health.Spec) HealthCheckJSON {
	if s.Type == health.None || s.Type == "" {
		return HealthCheckJSON{Type: string(health.None)}
	}
	return HealthCheckJSON{Type: string(s.Type), Port: s.Port, Path: s.Path, ExpectStatus: s.ExpectStatus,
		Interval: s.Interval.String(), Timeout: s.Timeout.String(), Rise: s.Rise, Fall: s.Fall}
}

// toSpec turns input into a health check spec (defaults are the
// controller's).
func (h *HealthCheckJSON) toSpec() (health.Spec, error) {
	if h == nil {
		return health.Spec{}, nil
	}
	if h.Type == "" {
		return health.Spec{}, &control.InvalidError{Field: "health_check.type", Msg: `health_check needs a "type": none, tcp, http, https or udp`}
	}
	s := health.Spec{Type: health.Type(h.Type), Port: h.Port, Path: h.Path, ExpectStatus: h.ExpectStatus, Rise: h.Rise, Fall: h.Fall}
	for _, d := range []struct {
		in, field string
		out       *time.Duration
	}{{h.Interval, "interval", &s.Interval}, {h.Timeout, "timeout", &s.Timeout}} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil || v <= 0 {
			return s, &control.InvalidError{Field: "health_check." + d.field, Msg: fmt.Sprintf("health check %s %q: want a duration such as 5s or 500ms", d.field, d.in)}
		}
		*d.out = v
	}
	return s, nil
}

func healthJSON(st health.Status) *RealHealthJSON {
	out := &RealHealthJSON{State: string(st.State), Reason: st.Reason, LastChange: st.LastChange.UTC(),
		SuccessesInARow: st.Successes, FailuresInARow: st.Failures}
	if !st.LastResult.At.IsZero() {
		r := st.LastResult
		out.LastResult = &ProbeResultJSON{OK: r.OK, Reason: r.Reason, At: r.At.UTC(), DurationMS: float64(r.Duration.Microseconds()) / 1000}
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

// toVIP reads a VIP, address and all.
func (in VIPCreateJSON) toVIP() (control.VIP, error) {
	proto, err := xdp.ParseProto(in.Protocol)
	if err != nil {
		return control.VIP{}, &control.InvalidError{Field: "protocol", Msg: err.Error()}
	}
	addr, err := netip.ParseAddr(in.Address)
	if err != nil {
		return control.VIP{}, &control.InvalidError{Field: "address", Msg: fmt.Sprintf("VIP address %q: not an IPv4 or IPv6 address", in.Address)}
	}
	if in.Port == nil || *in.Port < 0 || *in.Port > 65535 {
		return control.VIP{}, &control.InvalidError{Field: "port", Msg: "port is required: 1-65535, or 0 for a port-less VIP"}
	}
	return in.VIPSettingsJSON.toVIP(xdp.VIPKey{Addr: addr, Port: uint16(*in.Port), Proto: proto})
}

func (s VIPSettingsJSON) toVIP(key xdp.VIPKey) (control.VIP, error) {
	reals, err := toReals(s.Reals)
	if err != nil {
		return control.VIP{}, err
	}
	spec, err := s.HealthCheck.toSpec()
	if err != nil {
		return control.VIP{}, err
	}
	return control.VIP{Key: key, Sticky: s.Sticky, NoLRU: s.NoLRU, NoFlowSearch: s.NoFlowSearch, Encap: control.Encap(s.Encap), RingSize: s.RingSize, Reals: reals,
		Health: spec, DownFlows: control.DownFlows(s.DownFlows), AllDown: control.AllDown(s.AllDown), Disabled: s.Disabled, Description: s.Description}, nil
}

func trafficJSON(t control.Traffic) TrafficJSON {
	return TrafficJSON{Packets: t.Packets, Bytes: t.Bytes, PacketsPerSec: t.PacketsPerSec, BytesPerSec: t.BytesPerSec}
}

func quote(s string) string { return "\"" + s + "\"" }
