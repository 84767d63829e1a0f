package kprobe

import (
	"fmt"
)

// Status describes a running tracer: how it is attached, where its
// offsets come from, and what it has counted.
type Status struct {
	Running      bool         `json:"running"`
	Kernel       string       `json:"kernel"`
	Mode         Mode         `json:"mode"`
	BTF          bool         `json:"btf"`
	OffsetSource OffsetSource `json:"offset_source"`
	Offsets      Offsets      `json:"offsets"`
	Guess        *GuessReport `json:"guess,omitempty"` // set when the offsets were guessed
	Buffer       string       `json:"buffer"`          // "ringbuf" or "perf"
	FdInstall    bool         `json:"fd_install"`      // AddFdInstallWatcher works
	SRTT         bool         `json:"srtt"`            // smoothed RTT reported (needs BTF)
	// AcceptBy says when an accepted connection is attributed to its
	// process: "kretprobe" (inet_csk_accept), "syscall" (accept exit) or
	// "first-use" (its first read, write or close; tracepoint mode).
	AcceptBy string   `json:"accept_by"`
	Attached []string `json:"attached"` // every hook, e.g. "kprobe tcp_v4_connect"
	// Events output by the kernel, by type name.
	Events map[string]uint64 `json:"events"`
	// Lost events by type name: the buffer was full (never silent).
	Lost map[string]uint64 `json:"lost"`
	// LostPerf counts samples the perf buffer dropped (type unknown).
	LostPerf uint64 `json:"lost_perf"`
	// MapFull counts connections or sockets not tracked for lack of room.
	StatsMapFull uint64 `json:"stats_map_full"`
	SocksMapFull uint64 `json:"socks_map_full"`
	Expired      uint64 `json:"expired"` // idle entries removed
	// CloseInferred counts TCP connections closed when their socket's
	// address came back as a new socket: the kernel never ran the
	// tracer for their close (not always counted in HookMisses).
	CloseInferred uint64 `json:"close_inferred"`
	// KprobeMissed sums the kernel's count of probe hits that did not
	// run the program (kretprobe instances exhausted, recursion), over
	// the kprobe links; absent where the kernel does not report it
	// (before 6.7) and in tracepoint mode.
	KprobeMissed *uint64 `json:"kprobe_missed,omitempty"`
	// HookMisses sums the runs of the tracer's programs the kernel skipped
	// because another BPF program was running on that CPU (e.g. a softirq
	// interrupting one): the state change or transfer they would have
	// seen is missing. Kernels count this from 6.7 on (0 before).
	HookMisses  uint64 `json:"hook_misses"`
	Connections int    `json:"connections"`
}

// Status returns the tracer's status; a stopped tracer reports Running false.
func (t *Tracer) Status() Status {
	t.mu.Lock()
	st := t.status
	st.Running = t.running
	st.LostPerf = t.lostPerf
	st.Expired = t.expired
	st.Attached = append([]string(nil), st.Attached...)
	running := t.running
	t.mu.Unlock()
	if !running {
		return st
	}
	st.Events = map[string]uint64{}
	st.Lost = map[string]uint64{}
	if c, err := t.counters(); err == nil {
		for _, typ := range kernelEventTypes {
			st.Events[typ.String()] = c[int(tracerLbdTraceCounterLBD_TC_EMITTED)+int(typ)]
			st.Lost[typ.String()] = c[int(typ)]
		}
		st.StatsMapFull = c[tracerLbdTraceCounterLBD_TC_STATS_FULL]
		st.SocksMapFull = c[tracerLbdTraceCounterLBD_TC_SOCKS_FULL]
		st.CloseInferred = c[tracerLbdTraceCounterLBD_TC_CLOSE_INFERRED]
	}
	if n, err := t.countConns(); err == nil {
		st.Connections = n
	}
	st.KprobeMissed = t.kprobeMissed()
	st.HookMisses = t.hookMisses()
	return st
}

func (t *Tracer) hookMisses() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n uint64
	for _, p := range t.progs {
		if st, err := p.Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	return n
}

func (t *Tracer) kprobeMissed() *uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var total uint64
	known := false
	for _, l := range t.links {
		info, err := l.Info()
		if err != nil || info.PerfEvent() == nil || info.PerfEvent().Kprobe() == nil {
			continue
		}
		known = true
		total += info.PerfEvent().Kprobe().Missed
	}
	if !known {
		return nil
	}
	return &total
}

// Lost returns the events lost so far by type (sum over CPUs).
func (t *Tracer) Lost() map[EventType]uint64 {
	m := map[EventType]uint64{}
	c, err := t.counters()
	if err != nil {
		return m
	}
	for _, typ := range kernelEventTypes {
		m[typ] = c[int(typ)]
	}
	return m
}

// Emitted returns the events output so far by type.
func (t *Tracer) Emitted() map[EventType]uint64 {
	m := map[EventType]uint64{}
	c, err := t.counters()
	if err != nil {
		return m
	}
	for _, typ := range kernelEventTypes {
		m[typ] = c[int(tracerLbdTraceCounterLBD_TC_EMITTED)+int(typ)]
	}
	return m
}

// counters sums the per-CPU trace_counters.
func (t *Tracer) counters() ([]uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.maps.TraceCounters
	if m == nil || !t.running {
		return nil, ErrNotRunning
	}
	out := make([]uint64, tracerLbdTraceCounterLBD_TC_MAX)
	for i := range out {
		var per []uint64
		if err := m.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read trace counter %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}
