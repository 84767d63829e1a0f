// Package apiv1 holds the JSON bodies of lbd's REST API (/api/v1), as
// api/openapi.yaml describes them: what the server (package api) answers
// and reads, and what its client (api/client) and the CLI send and
// decode. It imports lb and nothing else of the module, so that the
// client links neither control nor bpf (scripts/check-layers.sh checks
// this); the server converts control's model to these types.
package apiv1

import (
	"encoding/json"
	"time"

	"github.com/lbd-dev/lbd/lb"
)

// Pointers mark optional input fields, so that "absent" and "zero" differ.
// The bodies of a VIP set (ApplyJSON) also have YAML names, the same: that
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
	// Flags are the flags set, a key each: "sticky": true (lb.VIPFlagTable).
	// YAML files (lbd apply, lbd export) carry them the same way: see
	// cmd/lbd's vipYAML.
	Flags       lb.VIPFlags      `json:"-" yaml:"-"`
	Encap       string           `json:"encap,omitempty" yaml:"encap,omitempty"`
	RingSize    uint32           `json:"ring_size,omitempty" yaml:"ring_size,omitempty"`
	Reals       []RealJSON       `json:"reals,omitempty" yaml:"reals,omitempty"`
	HealthCheck *HealthCheckJSON `json:"health_check,omitempty" yaml:"health_check,omitempty"`
	DownFlows   string           `json:"down_flows,omitempty" yaml:"down_flows,omitempty"`
	AllDown     string           `json:"all_down,omitempty" yaml:"all_down,omitempty"`
	Disabled    bool             `json:"disabled,omitempty" yaml:"disabled,omitempty"`
	Description string           `json:"description,omitempty" yaml:"description,omitempty"`
}

// VIPCreateJSON is the body of POST /vips.
type VIPCreateJSON struct {
	Protocol        string `json:"protocol" yaml:"protocol"`
	Address         string `json:"address" yaml:"address"`
	Port            *int   `json:"port" yaml:"port"`
	VIPSettingsJSON `yaml:",inline"`
}

// The VIP flags are keys of their own in the JSON ("sticky": true): see
// lb.MarshalFlags. The types that hold them marshal themselves.

// MarshalJSON writes the flags set.
func (s VIPSettingsJSON) MarshalJSON() ([]byte, error) {
	type plain VIPSettingsJSON
	return lb.MarshalFlags(plain(s), "", s.Flags, 0)
}

// UnmarshalJSON reads the flags set true.
func (s *VIPSettingsJSON) UnmarshalJSON(b []byte) error {
	type plain VIPSettingsJSON
	on, _, err := lb.UnmarshalFlags(b, (*plain)(s))
	s.Flags = on
	return err
}

// vipCreateHead is the part of VIPCreateJSON before its settings.
type vipCreateHead struct {
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
	Port     *int   `json:"port"`
}

// MarshalJSON writes the VIP's key, then its settings.
func (c VIPCreateJSON) MarshalJSON() ([]byte, error) {
	head, err := json.Marshal(vipCreateHead{c.Protocol, c.Address, c.Port})
	if err != nil {
		return nil, err
	}
	rest, err := c.VIPSettingsJSON.MarshalJSON()
	if err != nil {
		return nil, err
	}
	if len(rest) == 2 { // {}
		return head, nil
	}
	return append(append(head[:len(head)-1], ','), rest[1:]...), nil
}

// UnmarshalJSON reads the VIP's key and its settings.
func (c *VIPCreateJSON) UnmarshalJSON(b []byte) error {
	var h vipCreateHead
	if err := json.Unmarshal(b, &h); err != nil {
		return err
	}
	c.Protocol, c.Address, c.Port = h.Protocol, h.Address, h.Port
	return c.VIPSettingsJSON.UnmarshalJSON(b)
}

// VIPPatchJSON is the body of PATCH /vips/{vip}.
type VIPPatchJSON struct {
	// SetFlags are the flags given true, ClearFlags those given false
	// (a key each: "sticky": false); the others are left alone.
	SetFlags    lb.VIPFlags      `json:"-"`
	ClearFlags  lb.VIPFlags      `json:"-"`
	Encap       *string          `json:"encap,omitempty"`
	RingSize    *uint32          `json:"ring_size,omitempty"`
	HealthCheck *HealthCheckJSON `json:"health_check,omitempty"`
	DownFlows   *string          `json:"down_flows,omitempty"`
	AllDown     *string          `json:"all_down,omitempty"`
	Disabled    *bool            `json:"disabled,omitempty"`
	Description *string          `json:"description,omitempty"`
}

// MarshalJSON writes the flags given.
func (p VIPPatchJSON) MarshalJSON() ([]byte, error) {
	type plain VIPPatchJSON
	return lb.MarshalFlags(plain(p), "", p.SetFlags, p.ClearFlags)
}

// UnmarshalJSON reads the flags given.
func (p *VIPPatchJSON) UnmarshalJSON(b []byte) error {
	type plain VIPPatchJSON
	var err error
	p.SetFlags, p.ClearFlags, err = lb.UnmarshalFlags(b, (*plain)(p))
	return err
}

// VIPJSON is a VIP in answers.
type VIPJSON struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
	Port     uint16 `json:"port"`
	// Flags: every flag setting, a key each, after port: "sticky": true.
	Flags       lb.VIPFlags     `json:"-"`
	Encap       string          `json:"encap"`
	RingSize    uint32          `json:"ring_size"`
	Reals       []RealJSON      `json:"reals"`
	HealthCheck HealthCheckJSON `json:"health_check"`
	DownFlows   string          `json:"down_flows"`
	AllDown     string          `json:"all_down"`
	Disabled    bool            `json:"disabled"`
	Description string          `json:"description"` // "" when none
}

// MarshalJSON writes every flag setting, true or false.
func (v VIPJSON) MarshalJSON() ([]byte, error) {
	type plain VIPJSON
	return lb.MarshalFlags(plain(v), "port", v.Flags, lb.SettingVIPFlags&^v.Flags)
}

// UnmarshalJSON reads the flags.
func (v *VIPJSON) UnmarshalJSON(b []byte) error {
	type plain VIPJSON
	on, _, err := lb.UnmarshalFlags(b, (*plain)(v))
	v.Flags = on
	return err
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
	Drifts []DriftJSON `json:"drifts"`
}

// DriftJSON is one VIP a reconcile found differing (control.Drift).
type DriftJSON struct {
	VIP     string   `json:"vip"`
	Map     string   `json:"map,omitempty"` // the kernel map that differed
	Changes []string `json:"changes"`
	Error   string   `json:"error,omitempty"`
}

// LBDEventJSON is one of lbd's own events on /api/v1/events
// (control.Event): real_health, vip_changed, bgp_*.
type LBDEventJSON struct {
	Seq          uint64    `json:"seq"`
	Time         time.Time `json:"time"`
	Type         string    `json:"type"`
	VIP          string    `json:"vip,omitempty"`
	Real         string    `json:"real,omitempty"`
	State        string    `json:"state,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	FlowsRemoved int       `json:"flows_removed,omitempty"`
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
