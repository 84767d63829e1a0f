package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/bpf/kprobe"
	"github.com/lbd-dev/lbd/lb"
)

// The API's tracer status is the tracer's, byte for byte: every field
// set, the JSON of both must be equal (a field added to kprobe.Status
// and not to apiv1.TracerStatusJSON fails here).
func TestTracerStatusJSONIsTheTracers(t *testing.T) {
	missed := uint64(9)
	st := kprobe.Status{
		Running: true, Kernel: "6.18.0", Mode: kprobe.ModeTracepoint, BTF: true, OffsetSource: kprobe.OffsetsGuessed,
		Offsets: kprobe.Offsets{Saddr: 1, Daddr: 2, Sport: 3, Dport: 4, Family: 5, Netns: 6, Ino: 7, DaddrIPv6: 8, SaddrIPv6: 9},
		Guess:   &kprobe.GuessReport{Connections: 23, Captures: 21, Duration: 5 * time.Millisecond, IPv6: true},
		Buffer:  "ringbuf", FdInstall: true, SRTT: true, AcceptBy: "first-use", Attached: []string{"tracepoint sock:inet_sock_set_state"},
		Events: map[string]uint64{"connect": 3}, Lost: map[string]uint64{"connect": 1}, LostPerf: 2, StatsMapFull: 3,
		SocksMapFull: 4, Expired: 5, CloseInferred: 6, KprobeMissed: &missed, HookMisses: 7, Connections: 8,
	}
	want, _ := json.Marshal(st)
	got, _ := json.Marshal(tracerStatusJSON(st))
	if !bytes.Equal(got, want) {
		t.Errorf("API tracer status\n%s\nwant the tracer's\n%s", got, want)
	}
	var fields map[string]any
	if err := json.Unmarshal(want, &fields); err != nil || len(fields) != 22 {
		t.Errorf("kprobe.Status has %d JSON fields, this test sets 22: set the new ones (%v)", len(fields), err)
	}
}

func TestEventJSON(t *testing.T) {
	tuple := kprobe.Tuple{Proto: lb.TCP, Src: netip.MustParseAddrPort("127.0.0.1:40000"), Dst: netip.MustParseAddrPort("[::1]:80"), Netns: 4026531840, PID: 42}
	ev := kprobe.Event{Type: kprobe.EventClose, Time: time.Unix(1700000001, 0).UTC(), Monotonic: 6, CPU: 1, TID: 43, Comm: "curl", Tuple: tuple,
		BytesSent: 1000, BytesRecv: 7, Retransmits: 2, SRTT: 33 * time.Microsecond}
	got, _ := json.Marshal(eventJSON(ev))
	want := `{"type":"close","time":"2023-11-14T22:13:21Z","monotonic_ns":6,"cpu":1,"pid":42,"tid":43,"comm":"curl","protocol":"tcp","source":"127.0.0.1:40000","destination":"[::1]:80","netns":4026531840,"bytes_sent":1000,"bytes_received":7,"retransmits":2,"srtt_us":33}`
	if string(got) != want {
		t.Errorf("event\n%s\nwant\n%s", got, want)
	}
	fd := kprobe.Event{Type: kprobe.EventFdInstall, TID: 42, Comm: "nginx", FD: 7, Tuple: tuple}
	if got := eventJSON(fd); got.Protocol != "" || got.Source != "" || got.FD != 7 {
		t.Errorf("fd_install event carries a connection: %+v", got)
	}
	c := kprobe.Connection{Tuple: tuple, Comm: "curl", Direction: kprobe.DirectionOutgoing, State: kprobe.StateOpen, BytesSent: 5, SRTT: 33 * time.Microsecond}
	if got := connectionJSON(c); got.Protocol != "tcp" || got.Source != "127.0.0.1:40000" || got.Destination != "[::1]:80" || got.PID != 42 || got.SRTTMicros != 33 || got.State != "open" {
		t.Errorf("connection %+v", got)
	}
}
