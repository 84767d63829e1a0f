package kprobe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Offset guessing, in the spirit of weaveworks tcptracer-bpf, without a
// kprobe.
//
// The hook (guess.bpf.c) is the sock:inet_sock_set_state tracepoint,
// which every supported kernel has and which hands over the socket
// pointer. The protocol between user space and the hook is one status map
// entry: user space arms it (state ARMED, its own thread's pid_tgid, what
// to capture), makes a connection from that thread, and the hook fills it
// at the connection's CLOSE -> SYN_SENT change (state CAPTURED). The
// capture is either the first LBD_GUESS_SNAP bytes of the socket, or the
// struct net behind a candidate pointer.
//
// The comparisons happen here: for each field, every offset in its search
// window (400 bytes into struct sock, as tcptracer-bpf) holding the value
// the field must have is a candidate; each new connection (new source
// port, IPv4 then IPv4-mapped IPv6, each field's known value) removes the
// candidates that no longer match. A field is found when exactly one
// candidate survives; the fields are settled in order (saddr, daddr,
// sport, dport, family, netns+ino, daddr_ipv6, saddr_ipv6), and after
// guessMaxRounds connections a field that is not unique fails the guess
// with an error naming it.
const (
	guessSockWindow = 400 // sock_common fields lie within this many bytes of struct sock
	guessMinRounds  = 3   // connections before any field may be declared found
	guessMaxRounds  = 20  // connections before giving up
	guessRetries    = 100 // captures that may fail (not armed in time, read error) before giving up
)

// GuessReport says how the guesser found the offsets.
type GuessReport struct {
	Connections int           `json:"connections"` // connections made
	Captures    int           `json:"captures"`    // successful captures
	Duration    time.Duration `json:"duration_ns"`
	IPv6        bool          `json:"ipv6"` // IPv6 offsets guessed (false: IPv6 unavailable)
}

// GuessError names the field the guesser could not pin down.
type GuessError struct {
	Field      string
	Candidates []int // offsets still possible (none: the value was never seen)
	Rounds     int
	Err        error // underlying failure, if any
}

func (e *GuessError) Unwrap() error { return e.Err }

func (e *GuessError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("guess offset of %s: %v", e.Field, e.Err)
	}
	if len(e.Candidates) == 0 {
		return fmt.Sprintf("guess offset of %s: expected value never found in the socket after %d connections (kernel layout unlike any known; run on a kernel with BTF)", e.Field, e.Rounds)
	}
	return fmt.Sprintf("guess offset of %s: %d candidate offsets %v remain after %d connections", e.Field, len(e.Candidates), e.Candidates, e.Rounds)
}

// GuessOffsets finds the socket field offsets by watching the kernel fill
// in connections this process makes to its own listener on 127.0.0.2 (and
// IPv4-mapped IPv6). It needs the loopback interface up in the current
// network namespace, and root.
func GuessOffsets() (Offsets, GuessReport, error) {
	start := time.Now()
	spec, err := loadGuess()
	if err != nil {
		return Offsets{}, GuessReport{}, fmt.Errorf("load guess program spec: %w", err)
	}
	var objs guessObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return Offsets{}, GuessReport{}, fmt.Errorf("load guess program: %w", err)
	}
	defer objs.Close()
	tp, err := link.Tracepoint("sock", "inet_sock_set_state", objs.GuessSetState, nil)
	if err != nil {
		return Offsets{}, GuessReport{}, fmt.Errorf("attach guess hook to sock:inet_sock_set_state: %w", err)
	}
	defer tp.Close()

	g := &guesser{status: objs.GuessMap}
	type result struct {
		o   Offsets
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The hook only captures this thread's connects.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		o, err := g.run()
		done <- result{o, err}
	}()
	r := <-done
	g.report.Duration = time.Since(start)
	return r.o, g.report, r.err
}

type guesser struct {
	status  *ebpf.Map
	pidTgid uint64
	report  GuessReport
	fails   int
	ln4     net.Listener
	port4   uint16
}

// candidates of one field: offsets still possible.
type candidates map[int]bool

func (c candidates) list() []int {
	var l []int
	for o, ok := range c {
		if ok {
			l = append(l, o)
		}
	}
	sort.Ints(l)
	return l
}

// narrow keeps the offsets (aligned to align, within window) where snap
// holds want; the first call (c empty, first true) seeds the set.
func narrow(c candidates, first bool, snap []byte, want []byte, align, window int) candidates {
	if first {
		c = candidates{}
		for o := 0; o+len(want) <= window && o+len(want) <= len(snap); o += align {
			if bytes.Equal(snap[o:o+len(want)], want) {
				c[o] = true
			}
		}
		return c
	}
	for o := range c {
		if o+len(want) > len(snap) || !bytes.Equal(snap[o:o+len(want)], want) {
			delete(c, o)
		}
	}
	return c
}

func (g *guesser) run() (Offsets, error) {
	g.pidTgid = uint64(unix.Getpid())<<32 | uint64(unix.Gettid())
	ino, err := netnsInode(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return Offsets{}, err
	}
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		return Offsets{}, fmt.Errorf("guess: listen on 127.0.0.2 (is loopback up in this network namespace?): %w", err)
	}
	defer ln.Close()
	g.ln4 = ln
	g.port4 = uint16(ln.Addr().(*net.TCPAddr).Port)
	go drain(ln)

	var o Offsets
	// IPv4 fields from connections 127.0.0.1:random -> 127.0.0.2:port.
	sets := map[string]candidates{}
	for round := 0; ; round++ {
		snap, sport, err := g.capture4(whatSock, 0)
		if err != nil {
			return Offsets{}, &GuessError{Field: "saddr", Err: err}
		}
		first := round == 0
		sets["saddr"] = narrow(sets["saddr"], first, snap, []byte{127, 0, 0, 1}, 4, guessSockWindow)
		sets["daddr"] = narrow(sets["daddr"], first, snap, []byte{127, 0, 0, 2}, 4, guessSockWindow)
		sets["sport"] = narrow(sets["sport"], first, snap, binary.LittleEndian.AppendUint16(nil, sport), 2, guessSockWindow)
		sets["dport"] = narrow(sets["dport"], first, snap, binary.BigEndian.AppendUint16(nil, g.port4), 2, guessSockWindow)
		sets["family"] = narrow(sets["family"], first, snap, binary.LittleEndian.AppendUint16(nil, unix.AF_INET), 2, guessSockWindow)
		if round+1 >= guessMinRounds && len(sets["sport"]) == 1 && len(sets["dport"]) == 1 {
			break
		}
		if round+1 >= guessMaxRounds {
			for _, name := range []string{"sport", "dport"} {
				if l := sets[name].list(); len(l) != 1 {
					return Offsets{}, &GuessError{Field: name, Candidates: l, Rounds: round + 1}
				}
			}
		}
	}
	o.Sport = uint16(sets["sport"].list()[0])
	o.Dport = uint16(sets["dport"].list()[0])

	// netns: candidate pointers in the socket, each followed to a struct
	// net holding this thread's namespace inode.
	if err := g.guessNetns(&o, ino); err != nil {
		return Offsets{}, err
	}

	// IPv6 via IPv4-mapped addresses (routable without any IPv6 address):
	// ::ffff:127.0.0.1 -> ::ffff:127.0.0.2, so source and destination differ.
	d6 := candidates{}
	s6 := candidates{}
	fam := sets["family"]
	for round := 0; ; round++ {
		snap, err := g.capture6()
		if errors.Is(err, unix.EAFNOSUPPORT) {
			break
		}
		if err != nil {
			return Offsets{}, &GuessError{Field: "daddr_ipv6", Err: err}
		}
		first := round == 0
		want6 := netip.MustParseAddr("::ffff:127.0.0.2").As16()
		src6 := netip.MustParseAddr("::ffff:127.0.0.1").As16()
		d6 = narrow(d6, first, snap, want6[:], 4, guessSockWindow)
		s6 = narrow(s6, first, snap, src6[:], 4, guessSockWindow)
		fam = narrow(fam, false, snap, binary.LittleEndian.AppendUint16(nil, unix.AF_INET6), 2, guessSockWindow)
		if round+1 >= guessMinRounds && len(d6) == 1 && len(s6) == 1 && len(fam) == 1 {
			g.report.IPv6 = true
			break
		}
		if round+1 >= guessMaxRounds {
			for _, c := range []struct {
				name string
				c    candidates
			}{{"daddr_ipv6", d6}, {"saddr_ipv6", s6}, {"family", fam}} {
				if len(c.c) != 1 {
					return Offsets{}, &GuessError{Field: c.name, Candidates: c.c.list(), Rounds: round + 1}
				}
			}
		}
	}
	if g.report.IPv6 {
		o.DaddrIPv6 = uint16(d6.list()[0])
		o.SaddrIPv6 = uint16(s6.list()[0])
		// an IPv4 socket keeps its addresses IPv4-mapped in the IPv6
		// fields too: those copies are not the IPv4 fields
		for _, c := range []candidates{sets["saddr"], sets["daddr"]} {
			for off := range c {
				if inside(off, int(o.DaddrIPv6), 16) || inside(off, int(o.SaddrIPv6), 16) {
					delete(c, off)
				}
			}
		}
	}
	for _, f := range []struct {
		name string
		dst  *uint16
	}{{"saddr", &o.Saddr}, {"daddr", &o.Daddr}, {"family", &o.Family}} {
		c := sets[f.name]
		if f.name == "family" {
			c = fam
		}
		l := c.list()
		if len(l) == 0 {
			return Offsets{}, &GuessError{Field: f.name, Rounds: g.report.Connections}
		}
		// several left (no IPv6 to tell them apart): sock_common's copy
		// is the first one in struct sock
		*f.dst = uint16(l[0])
	}
	return o, nil
}

func inside(off, start, size int) bool { return off >= start && off < start+size }

func (g *guesser) guessNetns(o *Offsets, ino uint32) error {
	snap, _, err := g.capture4(whatSock, 0)
	if err != nil {
		return &GuessError{Field: "netns", Err: err}
	}
	// kernel pointers on x86-64 live in the upper half
	var ptrs []int
	for off := 0; off+8 <= guessSockWindow; off += 8 {
		if binary.LittleEndian.Uint64(snap[off:]) >= 0xffff800000000000 {
			ptrs = append(ptrs, off)
		}
	}
	want := binary.LittleEndian.AppendUint32(nil, ino)
	type pair struct{ netns, ino int }
	var found []pair
	for _, p := range ptrs {
		var c candidates
		for round := 0; round < guessMinRounds; round++ {
			net, _, err := g.capture4(whatNetns, uint32(p))
			if err != nil {
				c = nil
				break
			}
			c = narrow(c, round == 0, net, want, 4, len(net))
			if len(c) == 0 {
				break
			}
		}
		for _, i := range c.list() {
			found = append(found, pair{p, i})
		}
	}
	if len(found) != 1 {
		var l []int
		for _, f := range found {
			l = append(l, f.netns)
		}
		return &GuessError{Field: "netns", Candidates: l, Rounds: g.report.Connections}
	}
	o.Netns, o.Ino = uint16(found[0].netns), uint16(found[0].ino)
	return nil
}

// arm prepares the status map for the next connect of this thread.
func (g *guesser) arm(what guessLbdGuessWhat, netnsOff uint32) error {
	s := guessGuessStatus{PidTgid: g.pidTgid, State: uint32(guessLbdGuessStateLBD_GUESS_ARMED), What: uint32(what), OffsetNetns: netnsOff}
	return g.status.Put(uint32(0), &s)
}

func (g *guesser) collect() ([]byte, error) {
	var s guessGuessStatus
	if err := g.status.Lookup(uint32(0), &s); err != nil {
		return nil, fmt.Errorf("read guess status: %w", err)
	}
	idle := guessGuessStatus{}
	_ = g.status.Put(uint32(0), &idle)
	if s.State != uint32(guessLbdGuessStateLBD_GUESS_CAPTURED) {
		return nil, errNotCaptured
	}
	if s.Err != 0 {
		return nil, fmt.Errorf("%w: %w", errReadFault, unix.Errno(-s.Err))
	}
	g.report.Captures++
	return s.Data[:], nil
}

var (
	errNotCaptured = errors.New("connect not captured")
	errReadFault   = errors.New("hook could not read kernel memory")
)

// retry runs one capture attempt until it succeeds or the retries are spent.
func (g *guesser) retry(attempt func() ([]byte, error)) ([]byte, error) {
	for {
		b, err := attempt()
		if err == nil {
			return b, nil
		}
		if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, errReadFault) {
			return nil, err
		}
		g.fails++
		if g.fails > guessRetries {
			return nil, fmt.Errorf("%d captures failed, last: %w", g.fails, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// capture4 connects 127.0.0.1:(kernel's choice) -> 127.0.0.2:port4 and
// returns what the hook captured and the source port.
func (g *guesser) capture4(what guessLbdGuessWhat, netnsOff uint32) ([]byte, uint16, error) {
	var sport uint16
	b, err := g.retry(func() ([]byte, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		// bind first so that the source port is in the socket before SYN_SENT
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return nil, fmt.Errorf("bind 127.0.0.1: %w", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return nil, err
		}
		sport = uint16(sa.(*unix.SockaddrInet4).Port)
		if err := g.arm(what, netnsOff); err != nil {
			return nil, err
		}
		g.report.Connections++
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}, Port: int(g.port4)}); err != nil {
			return nil, fmt.Errorf("connect 127.0.0.2:%d: %w", g.port4, err)
		}
		return g.collect()
	})
	return b, sport, err
}

// capture6 connects ::ffff:127.0.0.1 -> ::ffff:127.0.0.2 from an IPv6 socket.
func (g *guesser) capture6() ([]byte, error) {
	return g.retry(func() ([]byte, error) {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("socket AF_INET6: %w", err)
		}
		defer unix.Close(fd)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		src := netip.MustParseAddr("::ffff:127.0.0.1").As16()
		dst := netip.MustParseAddr("::ffff:127.0.0.2").As16()
		if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: src}); err != nil {
			return nil, fmt.Errorf("bind [::ffff:127.0.0.1]: %w", err)
		}
		if err := g.arm(whatSock, 0); err != nil {
			return nil, err
		}
		g.report.Connections++
		if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: dst, Port: int(g.port4)}); err != nil {
			return nil, fmt.Errorf("connect [::ffff:127.0.0.2]:%d: %w", g.port4, err)
		}
		return g.collect()
	})
}

const (
	whatSock  = guessLbdGuessWhatLBD_GUESS_SOCK
	whatNetns = guessLbdGuessWhatLBD_GUESS_NETNS
)

func drain(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func netnsInode(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return uint32(st.Ino), nil
}
