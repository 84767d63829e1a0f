package apiv1

import "time"

// TracerStatusJSON answers GET /api/v1/tracer: what the tracer runs and
// its counters.
type TracerStatusJSON struct {
	Running       bool              `json:"running"`
	Kernel        string            `json:"kernel"`
	Mode          string            `json:"mode"`          // kprobe or tracepoint
	BTF           bool              `json:"btf"`           // the kernel has BTF
	OffsetSource  string            `json:"offset_source"` // co-re or guessed
	Offsets       TracerOffsetsJSON `json:"offsets"`
	Guess         *TracerGuessJSON  `json:"guess,omitempty"`         // set when the offsets were guessed
	Buffer        string            `json:"buffer"`                  // "ringbuf" or "perf"
	FdInstall     bool              `json:"fd_install"`              // the fd_install watcher works
	SRTT          bool              `json:"srtt"`                    // smoothed RTT reported (needs BTF)
	AcceptBy      string            `json:"accept_by"`               // kretprobe, syscall or first-use
	Attached      []string          `json:"attached"`                // every hook, e.g. "kprobe tcp_v4_connect"
	Events        map[string]uint64 `json:"events"`                  // events output by the kernel, by type
	Lost          map[string]uint64 `json:"lost"`                    // events lost (buffer full), by type
	LostPerf      uint64            `json:"lost_perf"`               // samples the perf buffer dropped
	StatsMapFull  uint64            `json:"stats_map_full"`          // connections not tracked for lack of room
	SocksMapFull  uint64            `json:"socks_map_full"`          // sockets not tracked for lack of room
	Expired       uint64            `json:"expired"`                 // idle entries removed
	CloseInferred uint64            `json:"close_inferred"`          // TCP closes inferred from a reused address
	KprobeMissed  *uint64           `json:"kprobe_missed,omitempty"` // probe hits that did not run (6.7+, kprobe mode)
	HookMisses    uint64            `json:"hook_misses"`             // program runs skipped (another BPF program ran)
	Connections   int               `json:"connections"`
}

// TracerOffsetsJSON are the socket field offsets the tracer reads.
type TracerOffsetsJSON struct {
	Saddr     uint16 `json:"saddr"`
	Daddr     uint16 `json:"daddr"`
	Sport     uint16 `json:"sport"`
	Dport     uint16 `json:"dport"`
	Family    uint16 `json:"family"`
	Netns     uint16 `json:"netns"`
	Ino       uint16 `json:"ino"`
	DaddrIPv6 uint16 `json:"daddr_ipv6"`
	SaddrIPv6 uint16 `json:"saddr_ipv6"`
}

// TracerGuessJSON reports the guessing of the offsets.
type TracerGuessJSON struct {
	Connections int           `json:"connections"` // connections made
	Captures    int           `json:"captures"`    // successful captures
	Duration    time.Duration `json:"duration_ns"`
	IPv6        bool          `json:"ipv6"` // IPv6 offsets guessed
}

// ConnectionJSON is one traced connection.
type ConnectionJSON struct {
	Protocol    string    `json:"protocol"`
	Source      string    `json:"source"`      // address:port
	Destination string    `json:"destination"` // address:port
	Netns       uint32    `json:"netns"`
	PID         uint32    `json:"pid"`
	Comm        string    `json:"comm"`
	Direction   string    `json:"direction"`
	State       string    `json:"state"`
	BytesSent   uint64    `json:"bytes_sent"`
	BytesRecv   uint64    `json:"bytes_received"`
	Retransmits uint32    `json:"retransmits"`
	SRTTMicros  int64     `json:"srtt_us"`
	FirstSeen   time.Time `json:"first_seen,omitzero"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
}

// ConnectionListJSON answers GET /api/v1/connections.
type ConnectionListJSON struct {
	Connections []ConnectionJSON `json:"connections"`
	Total       int              `json:"total"` // matching connections before the limit
}

// EventJSON is one event of GET /api/v1/events.
type EventJSON struct {
	Type        string    `json:"type"`
	Time        time.Time `json:"time"`
	Monotonic   uint64    `json:"monotonic_ns"`
	CPU         uint32    `json:"cpu"`
	PID         uint32    `json:"pid"`
	TID         uint32    `json:"tid"`
	Comm        string    `json:"comm"`
	Protocol    string    `json:"protocol,omitempty"`
	Source      string    `json:"source,omitempty"`
	Destination string    `json:"destination,omitempty"`
	Netns       uint32    `json:"netns"`
	BytesSent   uint64    `json:"bytes_sent"`
	BytesRecv   uint64    `json:"bytes_received"`
	Retransmits uint32    `json:"retransmits"`
	SRTTMicros  int64     `json:"srtt_us"`
	FD          uint32    `json:"fd,omitempty"`
}

// ResumeJSON is the data of the "resumed" event that opens a stream
// asked for with Last-Event-ID: how many events are replayed, and
// whether some are missing (Complete false, Reason why).
type ResumeJSON struct {
	Replayed int    `json:"replayed"`
	Complete bool   `json:"complete"`
	Reason   string `json:"reason,omitempty"`
}
