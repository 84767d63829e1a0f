// Package kprobe is lbd's TCP/UDP connection tracer, a weaveworks
// tcptracer-bpf / DataDog tracer-bpf in the cilium/ebpf style: it reports
// TCP connect, accept and close (IPv4 and IPv6) with process, network
// namespace, addresses and ports, new UDP flows, and keeps per-connection
// byte, retransmit and RTT counters keyed by tuple + pid.
//
// It owns its BPF objects (tracer.bpf.c, guess.bpf.c) and nothing else:
// no HTTP, no daemon state. Callers get typed events through a callback
// or a channel, a snapshot of the connections, and Status.
//
// # Modes
//
// ModeKprobe attaches kprobes (tcp_v4/v6_connect, inet_csk_accept,
// tcp_close, tcp/udp(v6) sendmsg/recvmsg, fd_install) and, for
// retransmits, the tcp:tcp_retransmit_skb tracepoint.
// ModeTracepoint uses only tracepoints (sock:inet_sock_set_state,
// syscalls:sys_exit_accept(4), sock:sock_send_length/sock_recv_length,
// tcp:tcp_retransmit_skb) for kernels built without kprobes, such as
// lbd's CI host; it needs sock_send_length (Linux 6.4 and later). ModeAuto
// takes kprobes when the kernel has them. The fd_install watcher exists in
// kprobe mode only (no tracepoint sees fd_install): AddFdInstallWatcher
// returns ErrFdInstallUnavailable in tracepoint mode.
//
// # Offsets
//
// With kernel BTF, socket fields are read through CO-RE relocations.
// Without it (or with Options.Guess) they are read at offsets guessed at
// start-up (GuessOffsets), checked against BTF in the tests on every
// kernel of the matrix.
//
// # Nothing silently lost
//
// Events go through a ring buffer (perf buffer where the kernel has none,
// or with Options.PerfBuffer); an event that does not fit is counted per
// type (Status.Lost). Connection maps are plain hashes: a full map is
// counted too, and idle entries are expired (TCP 10 min, UDP 30 s by
// default) with an Expire event.
package kprobe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	lbdfeatures "github.com/lbd-dev/lbd/bpf/features"
)

// Mode is how the tracer attaches to the kernel.
type Mode string

const (
	ModeAuto       Mode = "auto"
	ModeKprobe     Mode = "kprobe"
	ModeTracepoint Mode = "tracepoint"
)

// OffsetSource says where the socket field offsets come from.
type OffsetSource string

const (
	OffsetsCORE    OffsetSource = "co-re"
	OffsetsGuessed OffsetSource = "guessed"
)

// Errors callers may test with errors.Is.
var (
	// ErrFdInstallUnavailable: the fd_install watcher needs kprobe mode.
	ErrFdInstallUnavailable = fmt.Errorf("fd_install watcher needs kprobe mode (no tracepoint sees fd_install): %w", ebpf.ErrNotSupported)
	ErrNotRunning           = errors.New("tracer not running")
)

// Options configure a Tracer. The zero value is usable.
type Options struct {
	Mode  Mode // default ModeAuto
	Guess bool // guess the offsets even when the kernel has BTF
	// OnEvent, if set, is called for every event from the reader
	// goroutine; a slow callback fills the buffer (and events are then
	// counted as lost in the kernel).
	OnEvent func(Event)
	// Events, if set, receives every event (blocking, as OnEvent): keep
	// draining it until Stop has returned.
	Events chan<- Event
	// MaxConnections sizes the connection maps (default 65536).
	MaxConnections uint32
	TCPIdle        time.Duration // default 10 min
	UDPIdle        time.Duration // default 30 s
	ExpireEvery    time.Duration // how often idle entries are looked for (default 5 s)
	RingBufferSize uint32        // bytes, a power of two (default 4 MiB)
	PerfBuffer     bool          // use the perf buffer even where a ring buffer exists
	PerfPages      int           // per-CPU perf buffer pages (default 256)
	// BatchDelay (ring buffer) is the longest an event waits in the ring
	// before user space reads it: the kernel writes events without
	// waking the reader, until a quarter of the ring is used or this much
	// time passed, saving a wakeup per event. Default 50ms; negative:
	// wake the reader for every event.
	BatchDelay time.Duration
	KeepClosed int // closed connections remembered for Connections (default 1024)
	Logger     *slog.Logger
	// AcceptSyscalls (tracepoint mode, needs BTF) attributes an accepted
	// connection at accept() through syscalls:sys_exit_accept(4), so
	// that ACCEPT carries the accept time. Off by default: while any
	// syscall tracepoint is attached, every syscall of every process
	// takes the kernel's slow path (a fixed cost per syscall, machine
	// wide). Without it, ACCEPT is emitted at the owner's first read,
	// write or close of the socket, with the right pid and comm.
	AcceptSyscalls bool
	// noBTF makes the loader behave as on a kernel without BTF (tests).
	noBTF bool
}

func (o *Options) defaults() {
	if o.Mode == "" {
		o.Mode = ModeAuto
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = 65536
	}
	if o.TCPIdle == 0 {
		o.TCPIdle = 10 * time.Minute
	}
	if o.UDPIdle == 0 {
		o.UDPIdle = 30 * time.Second
	}
	if o.ExpireEvery == 0 {
		o.ExpireEvery = 5 * time.Second
	}
	if o.RingBufferSize == 0 {
		o.RingBufferSize = 4 << 20
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = 50 * time.Millisecond
	}
	if o.PerfPages == 0 {
		o.PerfPages = 256
	}
	if o.KeepClosed == 0 {
		o.KeepClosed = 1024
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Tracer is a connection tracer. New prepares it, Start loads and attaches
// it, Stop detaches it. Safe for concurrent use.
type Tracer struct {
	opts Options

	mu         sync.Mutex
	running    bool
	status     Status
	maps       tracerMaps
	progs      map[string]*ebpf.Program // the chosen mode's programs
	links      []link.Link              // every attachment, kept referenced until Stop
	rb         *ringbuf.Reader
	pr         *perf.Reader
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	clock      clock
	closed     []Connection // recently closed (a ring once full)
	closedNext int          // next slot to overwrite in closed
	expired    uint64
	lostPerf   uint64
	// delivered counts kernel events handed to the user (Flush compares
	// it with the kernel's emitted counters)
	delivered atomic.Uint64
	subs      map[*subscriber]struct{}
	watchers  map[uint32]bool
}

// New checks the options and returns a stopped tracer.
func New(opts Options) (*Tracer, error) {
	opts.defaults()
	switch opts.Mode {
	case ModeAuto, ModeKprobe, ModeTracepoint:
	default:
		return nil, fmt.Errorf("tracer mode %q: want auto, kprobe or tracepoint", opts.Mode)
	}
	if opts.RingBufferSize&(opts.RingBufferSize-1) != 0 || int(opts.RingBufferSize) < os.Getpagesize() {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two, at least the page size (%d)", opts.RingBufferSize, os.Getpagesize())
	}
	return &Tracer{opts: opts, subs: map[*subscriber]struct{}{}, watchers: map[uint32]bool{}}, nil
}

// ensureTracefs mounts tracefs if nothing has (tracepoints need it).
func ensureTracefs() error {
	if _, err := os.Stat("/sys/kernel/tracing/events"); err == nil {
		return nil
	}
	if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mount tracefs on /sys/kernel/tracing (tracepoints need it): %w", err)
	}
	return nil
}

func haveTracepoint(group, name string) bool {
	for _, root := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(root + "/events/" + group + "/" + name); err == nil {
			return true
		}
	}
	return false
}

// Start guesses offsets if needed, loads and attaches the programs and
// starts reading events. ctx bounds the tracer's life: when it ends the
// tracer stops as if Stop were called.
func (t *Tracer) Start(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.running {
		return errors.New("tracer already started")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := ensureTracefs(); err != nil {
		return err
	}
	st := Status{Kernel: lbdfeatures.KernelRelease()}

	mode := t.opts.Mode
	if mode == ModeAuto {
		mode = ModeTracepoint
		if lbdfeatures.HaveKprobes() {
			mode = ModeKprobe
		}
	}
	if mode == ModeKprobe && !lbdfeatures.HaveKprobes() {
		return fmt.Errorf("kprobe mode: this kernel has no kprobes (CONFIG_KPROBES off): use --tracer tracepoint: %w", ebpf.ErrNotSupported)
	}
	if mode == ModeTracepoint && !haveTracepoint("sock", "sock_send_length") {
		return fmt.Errorf("tracepoint mode needs the sock:sock_send_length tracepoint (Linux 6.4+): use --tracer kprobe: %w", ebpf.ErrNotSupported)
	}
	st.Mode = mode

	haveBTF := !t.opts.noBTF && haveKernelBTF()
	st.BTF = haveBTF
	if haveBTF && !t.opts.Guess {
		st.OffsetSource = OffsetsCORE
		if o, err := KernelOffsets(); err == nil {
			st.Offsets = o
		}
	} else {
		o, rep, err := GuessOffsets()
		if err != nil {
			return fmt.Errorf("tracer offsets: %w", err)
		}
		st.OffsetSource = OffsetsGuessed
		st.Offsets = o
		st.Guess = &rep
		t.opts.Logger.Info("tracer offsets guessed", "offsets", o.String(), "connections", rep.Connections, "duration", rep.Duration)
	}
	st.SRTT = haveBTF

	spec, err := loadTracer()
	if err != nil {
		return fmt.Errorf("load tracer spec: %w", err)
	}
	usePerf := t.opts.PerfBuffer || features.HaveMapType(ebpf.RingBuf) != nil
	st.Buffer = "ringbuf"
	if usePerf {
		st.Buffer = "perf"
		// the ring buffer map stays referenced by dead code: make it a
		// map every kernel has
		rb := spec.Maps["events_rb"]
		rb.Type, rb.KeySize, rb.ValueSize, rb.MaxEntries = ebpf.Array, 4, 4, 1
	} else {
		spec.Maps["events_rb"].MaxEntries = t.opts.RingBufferSize
	}
	spec.Maps["conns"].MaxEntries = t.opts.MaxConnections
	spec.Maps["socks"].MaxEntries = t.opts.MaxConnections
	for name, v := range map[string]any{
		"use_offsets": b2u8(st.OffsetSource == OffsetsGuessed),
		"have_btf":    b2u8(haveBTF),
		"use_perf":    b2u8(usePerf),
		"wakeup_bytes": func() uint64 {
			if t.opts.BatchDelay < 0 {
				return 0
			}
			return uint64(t.opts.RingBufferSize / 4)
		}(),
		"off": st.Offsets.bpf(),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	// load only the programs of the chosen mode
	want := tracepointPrograms
	if mode == ModeKprobe {
		want = kprobePrograms
	}
	for name := range spec.Programs {
		if !want[name] {
			delete(spec.Programs, name)
		}
	}
	opts := &ebpf.CollectionOptions{}
	if !haveBTF {
		// no kernel BTF: CO-RE reads are dead code (have_btf = 0); give
		// the loader an empty target so that it poisons them instead of
		// failing to find vmlinux
		var b btf.Builder
		raw, err := b.Marshal(nil, nil)
		if err != nil {
			return fmt.Errorf("empty BTF: %w", err)
		}
		empty, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("empty BTF: %w", err)
		}
		opts.Programs.KernelTypes = empty
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, *opts)
	if err != nil {
		return fmt.Errorf("load tracer (%s mode, %s offsets): %w", mode, st.OffsetSource, err)
	}
	t.maps = tracerMaps{}
	if err := coll.Assign(&t.maps); err != nil {
		coll.Close()
		return fmt.Errorf("assign tracer maps: %w", err)
	}
	t.progs = coll.Programs
	coll.Programs = nil
	coll.Close() // what is left: .bss

	if err := t.attach(mode, haveBTF, &st); err != nil {
		t.closeLocked()
		return err
	}
	if usePerf {
		t.pr, err = perf.NewReader(t.maps.EventsPb, t.opts.PerfPages*os.Getpagesize())
	} else {
		t.rb, err = ringbuf.NewReader(t.maps.EventsRb)
	}
	if err != nil {
		t.closeLocked()
		return fmt.Errorf("open %s reader: %w", st.Buffer, err)
	}
	t.clock = newClock()
	t.status = st
	t.running = true
	rctx, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	t.wg.Add(2)
	go t.read()
	go t.expireLoop(rctx)
	go func() { <-rctx.Done(); t.Stop() }()
	t.opts.Logger.Info("tracer started", "mode", mode, "offsets", st.OffsetSource, "buffer", st.Buffer, "fd_install", st.FdInstall)
	return nil
}

var tracepointPrograms = map[string]bool{
	"tp_inet_sock_set_state": true, "tp_sys_exit_accept": true, "tp_sys_exit_accept4": true,
	"tp_sock_send_length": true, "tp_sock_recv_length": true, "tp_tcp_retransmit_skb": true,
}

var kprobePrograms = map[string]bool{
	"kp_tcp_v4_connect": true, "krp_tcp_v4_connect": true, "kp_tcp_v6_connect": true, "krp_tcp_v6_connect": true,
	"krp_inet_csk_accept": true, "kp_tcp_close": true, "kp_sendmsg": true, "kp_recvmsg": true,
	"krp_tcp_sendmsg": true, "krp_tcp_recvmsg": true, "krp_udp_sendmsg": true, "krp_udp_recvmsg": true,
	"tp_tcp_retransmit_skb": true, "kp_fd_install": true,
}

func (t *Tracer) attach(mode Mode, haveBTF bool, st *Status) error {
	p := tracerPrograms{}
	for name, prog := range t.progs {
		switch name {
		case "tp_inet_sock_set_state":
			p.TpInetSockSetState = prog
		case "tp_sock_send_length":
			p.TpSockSendLength = prog
		case "tp_sock_recv_length":
			p.TpSockRecvLength = prog
		case "tp_tcp_retransmit_skb":
			p.TpTcpRetransmitSkb = prog
		case "tp_sys_exit_accept4":
			p.TpSysExitAccept4 = prog
		case "tp_sys_exit_accept":
			p.TpSysExitAccept = prog
		case "kp_tcp_v4_connect":
			p.KpTcpV4Connect = prog
		case "krp_tcp_v4_connect":
			p.KrpTcpV4Connect = prog
		case "kp_tcp_v6_connect":
			p.KpTcpV6Connect = prog
		case "krp_tcp_v6_connect":
			p.KrpTcpV6Connect = prog
		case "krp_inet_csk_accept":
			p.KrpInetCskAccept = prog
		case "kp_tcp_close":
			p.KpTcpClose = prog
		case "kp_sendmsg":
			p.KpSendmsg = prog
		case "kp_recvmsg":
			p.KpRecvmsg = prog
		case "krp_tcp_sendmsg":
			p.KrpTcpSendmsg = prog
		case "krp_tcp_recvmsg":
			p.KrpTcpRecvmsg = prog
		case "krp_udp_sendmsg":
			p.KrpUdpSendmsg = prog
		case "krp_udp_recvmsg":
			p.KrpUdpRecvmsg = prog
		case "kp_fd_install":
			p.KpFdInstall = prog
		}
	}
	add := func(what string, l link.Link, err error) error {
		if err != nil {
			return fmt.Errorf("attach %s: %w", what, err)
		}
		t.links = append(t.links, l)
		st.Attached = append(st.Attached, what)
		return nil
	}
	if mode == ModeTracepoint {
		for _, a := range []struct {
			group, name string
			prog        *ebpf.Program
		}{
			{"sock", "inet_sock_set_state", p.TpInetSockSetState},
			{"sock", "sock_send_length", p.TpSockSendLength},
			{"sock", "sock_recv_length", p.TpSockRecvLength},
			{"tcp", "tcp_retransmit_skb", p.TpTcpRetransmitSkb},
		} {
			l, err := link.Tracepoint(a.group, a.name, a.prog, nil)
			if err := add("tracepoint "+a.group+":"+a.name, l, err); err != nil {
				return err
			}
		}
		st.AcceptBy = "first-use"
		if haveBTF && t.opts.AcceptSyscalls {
			st.AcceptBy = "syscall"
			// who accepted a connection, at accept(); otherwise the first
			// process that reads, writes or closes it
			for _, a := range []struct {
				name string
				prog *ebpf.Program
			}{{"sys_exit_accept4", p.TpSysExitAccept4}, {"sys_exit_accept", p.TpSysExitAccept}} {
				if !haveTracepoint("syscalls", a.name) {
					continue
				}
				l, err := link.Tracepoint("syscalls", a.name, a.prog, nil)
				if err := add("tracepoint syscalls:"+a.name, l, err); err != nil {
					return err
				}
			}
		}
		return nil
	}
	kp := func(fn string, prog *ebpf.Program) error {
		l, err := link.Kprobe(fn, prog, nil)
		return add("kprobe "+fn, l, err)
	}
	krp := func(fn string, prog *ebpf.Program) error {
		l, err := link.Kretprobe(fn, prog, nil)
		return add("kretprobe "+fn, l, err)
	}
	steps := []func() error{
		func() error { return kp("tcp_v4_connect", p.KpTcpV4Connect) },
		func() error { return krp("tcp_v4_connect", p.KrpTcpV4Connect) },
		func() error { return kp("tcp_v6_connect", p.KpTcpV6Connect) },
		func() error { return krp("tcp_v6_connect", p.KrpTcpV6Connect) },
		func() error { return krp("inet_csk_accept", p.KrpInetCskAccept) },
		func() error { return kp("tcp_close", p.KpTcpClose) },
		func() error { return kp("tcp_sendmsg", p.KpSendmsg) },
		func() error { return krp("tcp_sendmsg", p.KrpTcpSendmsg) },
		func() error { return kp("tcp_recvmsg", p.KpRecvmsg) },
		func() error { return krp("tcp_recvmsg", p.KrpTcpRecvmsg) },
		func() error { return kp("udp_sendmsg", p.KpSendmsg) },
		func() error { return krp("udp_sendmsg", p.KrpUdpSendmsg) },
		func() error { return kp("udp_recvmsg", p.KpRecvmsg) },
		func() error { return krp("udp_recvmsg", p.KrpUdpRecvmsg) },
		func() error { return kp("udpv6_sendmsg", p.KpSendmsg) },
		func() error { return krp("udpv6_sendmsg", p.KrpUdpSendmsg) },
		func() error { return kp("udpv6_recvmsg", p.KpRecvmsg) },
		func() error { return krp("udpv6_recvmsg", p.KrpUdpRecvmsg) },
		// retransmits: the tracepoint, even here (successful ones only,
		// from timers too; see tracer.bpf.c)
		func() error {
			l, err := link.Tracepoint("tcp", "tcp_retransmit_skb", p.TpTcpRetransmitSkb, nil)
			return add("tracepoint tcp:tcp_retransmit_skb", l, err)
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	st.AcceptBy = "kretprobe"
	if err := kp("fd_install", p.KpFdInstall); err != nil {
		t.opts.Logger.Warn("fd_install watcher unavailable", "err", err)
	} else {
		st.FdInstall = true
	}
	return nil
}

// Stop detaches the programs and stops the readers. Events already read
// have been delivered when Stop returns. Stop on a stopped tracer is a
// no-op.
func (t *Tracer) Stop() error {
	t.mu.Lock()
	if !t.running {
		t.mu.Unlock()
		return nil
	}
	t.running = false
	t.cancel()
	for _, l := range t.links {
		l.Close()
	}
	t.links = nil
	if t.rb != nil {
		t.rb.Close()
	}
	if t.pr != nil {
		t.pr.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	t.mu.Lock()
	t.closeLocked()
	for s := range t.subs {
		s.close()
		delete(t.subs, s)
	}
	t.mu.Unlock()
	return nil
}

func (t *Tracer) closeLocked() {
	for _, l := range t.links {
		l.Close()
	}
	t.links = nil
	t.maps.Close()
	t.maps = tracerMaps{}
	for _, p := range t.progs {
		p.Close()
	}
	t.progs = nil
	t.rb, t.pr = nil, nil
}

// Flush waits (up to timeout) until every event the kernel has output so
// far has been delivered, and reports whether it got there.
func (t *Tracer) Flush(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		t.mu.Lock()
		running := t.running
		t.mu.Unlock()
		if !running {
			return false
		}
		c, err := t.counters()
		if err != nil {
			return false
		}
		var emitted uint64
		for _, typ := range kernelEventTypes {
			emitted += c[int(tracerLbdTraceCounterLBD_TC_EMITTED)+int(typ)]
		}
		if t.delivered.Load() >= emitted {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (t *Tracer) read() {
	defer t.wg.Done()
	var rec ringbuf.Record
	for {
		var raw []byte
		if t.rb != nil {
			if t.opts.BatchDelay > 0 {
				t.rb.SetDeadline(time.Now().Add(t.opts.BatchDelay))
			}
			if err := t.rb.ReadInto(&rec); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrFlushed) {
					continue
				}
				return
			}
			raw = rec.RawSample
		} else {
			r, err := t.pr.Read()
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, perf.ErrFlushed) {
					continue
				}
				return
			}
			if r.LostSamples > 0 {
				t.mu.Lock()
				t.lostPerf += r.LostSamples
				t.mu.Unlock()
				continue
			}
			raw = r.RawSample
		}
		ev, ok := decodeEvent(raw, t.clock)
		if !ok {
			continue
		}
		t.deliver(ev)
		t.delivered.Add(1)
	}
}

func (t *Tracer) deliver(ev Event) {
	if ev.Type == EventClose || ev.Type == EventExpire {
		t.mu.Lock()
		// a ring of the last KeepClosed: no copying per event
		if len(t.closed) < t.opts.KeepClosed {
			t.closed = append(t.closed, connectionOf(ev))
		} else {
			t.closed[t.closedNext] = connectionOf(ev)
			t.closedNext = (t.closedNext + 1) % len(t.closed)
		}
		t.mu.Unlock()
	}
	if t.opts.OnEvent != nil {
		t.opts.OnEvent(ev)
	}
	if t.opts.Events != nil {
		t.opts.Events <- ev
	}
	t.publish(ev)
}

func b2u8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
