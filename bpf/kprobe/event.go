package kprobe

import (
	"encoding/binary"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/lb"
)

// EventType says what happened.
type EventType uint32

// Event types. Connect, Accept, Close, UDPSend, UDPRecv and FdInstall come
// from the kernel; Expire is the tracer's own (an idle entry removed).
const (
	EventConnect   EventType = EventType(tracerLbdTraceEventTypeLBD_EV_CONNECT)
	EventAccept    EventType = EventType(tracerLbdTraceEventTypeLBD_EV_ACCEPT)
	EventClose     EventType = EventType(tracerLbdTraceEventTypeLBD_EV_CLOSE)
	EventUDPSend   EventType = EventType(tracerLbdTraceEventTypeLBD_EV_UDP_SEND)
	EventUDPRecv   EventType = EventType(tracerLbdTraceEventTypeLBD_EV_UDP_RECV)
	EventFdInstall EventType = EventType(tracerLbdTraceEventTypeLBD_EV_FD_INSTALL)
	EventExpire    EventType = 100
)

var eventNames = map[EventType]string{
	EventConnect: "connect", EventAccept: "accept", EventClose: "close",
	EventUDPSend: "udp_send", EventUDPRecv: "udp_recv", EventFdInstall: "fd_install",
	EventExpire: "expire",
}

// kernelEventTypes are the types the kernel side emits (and may lose).
var kernelEventTypes = []EventType{EventConnect, EventAccept, EventClose, EventUDPSend, EventUDPRecv, EventFdInstall}

func (t EventType) String() string {
	if n, ok := eventNames[t]; ok {
		return n
	}
	return "unknown"
}

// Tuple names a connection: addresses, ports, network namespace and the
// owning process. It is the key of the per-connection statistics.
type Tuple struct {
	Proto lb.Proto
	Src   netip.AddrPort
	Dst   netip.AddrPort
	Netns uint32 // inode of the network namespace
	PID   uint32 // process (thread group) id
}

// Event is one thing the tracer saw. For Close and Expire the counters
// are the connection's final numbers; for UDPSend/UDPRecv those of the
// flow's first datagram; for FdInstall only PID, TID, Comm and FD are set.
type Event struct {
	Type      EventType
	Time      time.Time // wall clock, converted from the kernel's monotonic clock
	Monotonic uint64    // bpf_ktime_get_ns(): orders events across CPUs
	CPU       uint32
	TID       uint32
	Comm      string
	Tuple
	BytesSent   uint64
	BytesRecv   uint64
	Retransmits uint32
	SRTT        time.Duration // 0 when unknown
	FD          uint32
}

func addrOf(family uint8, words [4]uint32) netip.Addr {
	var b [16]byte
	for i, w := range words {
		binary.LittleEndian.PutUint32(b[i*4:], w) // words hold network order bytes
	}
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func tupleOf(t *tracerConnTuple) Tuple {
	return Tuple{
		Proto: lb.Proto(t.Proto),
		Src:   netip.AddrPortFrom(addrOf(t.Family, t.Saddr), t.Sport),
		Dst:   netip.AddrPortFrom(addrOf(t.Family, t.Daddr), t.Dport),
		Netns: t.Netns,
		PID:   t.Pid,
	}
}

func commString(c [16]uint8) string {
	n := 0
	for n < len(c) && c[n] != 0 {
		n++
	}
	return string(c[:n])
}

// clock converts bpf_ktime_get_ns() (CLOCK_MONOTONIC) to wall time.
type clock struct{ wallMinusMono time.Duration }

func newClock() clock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return clock{time.Duration(time.Now().UnixNano() - ts.Nano())}
}

func (c clock) wall(mono uint64) time.Time { return time.Unix(0, int64(mono)+int64(c.wallMinusMono)) }

func monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

const traceEventSize = int(unsafe.Sizeof(tracerTraceEvent{}))

// decodeEvent reads a record of the ring or perf buffer.
func decodeEvent(raw []byte, c clock) (Event, bool) {
	if len(raw) < traceEventSize {
		return Event{}, false
	}
	var r tracerTraceEvent
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&r)), traceEventSize), raw)
	ev := Event{
		Type:        EventType(r.Type),
		Time:        c.wall(r.TsNs),
		Monotonic:   r.TsNs,
		CPU:         r.Cpu,
		TID:         r.Tid,
		Comm:        commString(r.Comm),
		BytesSent:   r.BytesSent,
		BytesRecv:   r.BytesRecv,
		Retransmits: r.Retrans,
		SRTT:        time.Duration(r.SrttUs) * time.Microsecond,
		FD:          r.Fd,
	}
	if ev.Type == EventFdInstall {
		ev.PID = r.Tuple.Pid
	} else {
		ev.Tuple = tupleOf(&r.Tuple)
	}
	return ev, true
}
