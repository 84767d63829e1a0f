//go:build lbdbench && lbdkatran

package xdp

// TestLiveBench measures the balancers on live traffic: real 64-byte
// frames through veth pairs, the program's run time per packet from the
// kernel's own BPF stats (run_time_ns / run_cnt), and packets per second
// per core from the CPU time of the NAPI thread that runs the program.
//
//   - lbd is `lbd serve` as users run it: the real binary (LBD_BIN, built
//     by make build), its flags, its REST API, attached in native mode to
//     one end of a veth pair in a namespace this test makes.
//   - Katran (KATRAN_OBJ, built by scripts/katran-build.sh from a checkout
//     outside this repository; optional) is attached the same way to a
//     second pair, provisioned as katran_bench_test.go does, at lbd's
//     table size (1048576 flows in all: Katran's per-CPU LRUs split it).
//   - The floor is a trivial XDP_DROP program on a third pair: the cost
//     of the path itself (sender, veth, NAPI) with almost no program.
//
// Each pair's receiving end has threaded NAPI, its thread pinned to CPU 0;
// the sender (AF_PACKET, PACKET_QDISC_BYPASS, one frame per send) runs on
// CPU 1. The kinds of traffic: one established flow set (ACKs of flows
// opened before), new flows (a SYN of a 5-tuple never sent before, and
// handshakes: a SYN and its ACK; to each balancer the same tuples; fewer
// in all than a CPU's share of the table, so every insert finds a free
// entry), non-VIP, and handshakes again once the tables are full (every
// insert evicts). lbd and
// Katran alternate sample by sample, the order flipped each round; the
// ratio is per round (lbd over Katran), median and range over the rounds.
//
// A benchmark, not a test: it asserts that traffic went where it should
// (run counts, counters), never a speed.
//
//	go test -count=1 -tags 'lbdbench lbdkatran' -run TestLiveBench -v ./bpf/xdp/
//
// Run it under `flock /tmp/lbd-lab.lock` (make bench does): it is a lab of
// its own on a shared machine.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/nsexec"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

const (
	liveNAPICPU   = 0 // the CPU of the receiving NAPI threads
	liveSenderCPU = 1 // the sender's
)

// liveLab is the namespaces, veth pairs and lbd serve of one run.
type liveLab struct {
	t        *testing.T
	tag      string // unique per run: namespace and interface names
	lbNS     string // namespace of the balancers' ends
	txNS     string // namespace of the sender's ends
	lbHandle netns.NsHandle
	txHandle netns.NsHandle
	api      string // lbd serve's API, inside lbNS
	token    string
	pinDir   string
	stateDir string
	client   *http.Client
}

// livePort is one veth pair: the sender writes into tx, the program on rx
// runs in rx's NAPI thread.
type livePort struct {
	name     string // "lbd", "Katran", "floor"
	rx, tx   string
	txIndex  int
	txFD     int
	rxMAC    net.HardwareAddr
	txMAC    net.HardwareAddr
	prog     *ebpf.Program // the attached program (stats)
	napiTIDs []int
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLiveLab(t *testing.T) *liveLab {
	t.Helper()
	tag := fmt.Sprintf("%05d", os.Getpid()%100000)
	l := &liveLab{t: t, tag: tag, lbNS: "lbdlive" + tag + "lb", txNS: "lbdlive" + tag + "tx",
		pinDir: "/sys/fs/bpf/lbdlive" + tag}
	for _, ns := range []string{l.lbNS, l.txNS} {
		h, err := nsexec.NewNamed(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			h.Close()
			_ = exec.Command("ip", "netns", "del", ns).Run()
		})
		// No IPv6 on the ports: no router solicitations or MLD reports
		// among the frames the programs count.
		run(t, "nsenter", "--net=/run/netns/"+ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
		if ns == l.lbNS {
			l.lbHandle = h
		} else {
			l.txHandle = h
		}
	}
	return l
}

// addPort makes a veth pair rx (lbNS) – tx (txNS), both up.
func (l *liveLab) addPort(name, letter string) *livePort {
	t := l.t
	p := &livePort{name: name, rx: "L" + letter + l.tag, tx: "T" + letter + l.tag}
	run(t, "ip", "link", "add", p.rx, "netns", l.lbNS, "type", "veth", "peer", "name", p.tx, "netns", l.txNS)
	run(t, "ip", "-n", l.lbNS, "link", "set", p.rx, "up")
	run(t, "ip", "-n", l.txNS, "link", "set", p.tx, "up")
	run(t, "ip", "-n", l.lbNS, "link", "set", "lo", "up")
	for _, side := range []struct {
		ns   netns.NsHandle
		name string
		mac  *net.HardwareAddr
		idx  *int
	}{{l.lbHandle, p.rx, &p.rxMAC, nil}, {l.txHandle, p.tx, &p.txMAC, &p.txIndex}} {
		h, err := netlink.NewHandleAt(side.ns)
		if err != nil {
			t.Fatal(err)
		}
		lk, err := h.LinkByName(side.name)
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		*side.mac = lk.Attrs().HardwareAddr
		if side.idx != nil {
			*side.idx = lk.Attrs().Index
		}
	}
	// The sender's socket, opened in the sender's namespace, bound to tx.
	err := nsexec.Do(l.txHandle, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: p.txIndex}); err != nil {
			unix.Close(fd)
			return err
		}
		p.txFD = fd
		return nil
	})
	if err != nil {
		t.Fatalf("AF_PACKET socket on %s: %v", p.tx, err)
	}
	t.Cleanup(func() { unix.Close(p.txFD) })
	return p
}

// attach attaches prog to rx in native mode (a BPF link, kept until the
// end of the test).
func (l *liveLab) attach(p *livePort, prog *ebpf.Program) {
	t := l.t
	err := nsexec.Do(l.lbHandle, func() error {
		ifc, err := net.InterfaceByName(p.rx)
		if err != nil {
			return err
		}
		lk, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		t.Cleanup(func() { lk.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("attach %s to %s: %v", p.name, p.rx, err)
	}
	p.prog = prog
}

// adoptAttached takes the program attached to rx (by lbd serve) for its
// stats.
func (l *liveLab) adoptAttached(p *livePort) {
	t := l.t
	h, err := netlink.NewHandleAt(l.lbHandle)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lk, err := h.LinkByName(p.rx)
	if err != nil {
		t.Fatal(err)
	}
	x := lk.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		t.Fatalf("%s: no XDP program on %s", p.name, p.rx)
	}
	if x.AttachMode != 1 { // XDP_ATTACHED_DRV
		t.Fatalf("%s: XDP on %s in mode %d, want native", p.name, p.rx, x.AttachMode)
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		t.Fatalf("%s: open program %d: %v", p.name, x.ProgId, err)
	}
	t.Cleanup(func() { prog.Close() })
	p.prog = prog
}

// threadedNAPI turns on threaded NAPI for the rx ends (their NAPI exists
// once XDP is attached) and pins the threads to CPU liveNAPICPU. The
// namespace's own sysfs is mounted in a private mount namespace (sysfs
// shows the devices of the namespace that mounts it).
func (l *liveLab) threadedNAPI(ports ...*livePort) {
	t := l.t
	var sh strings.Builder
	sh.WriteString("mount -t sysfs sysfs /sys")
	for _, p := range ports {
		fmt.Fprintf(&sh, " && echo 1 > /sys/class/net/%s/threaded", p.rx)
	}
	run(t, "nsenter", "--net=/run/netns/"+l.lbNS, "unshare", "-m", "--propagation", "private", "sh", "-c", sh.String())
	for _, p := range ports {
		p.napiTIDs = napiThreads(t, p.rx)
		var set unix.CPUSet
		set.Set(liveNAPICPU)
		for _, tid := range p.napiTIDs {
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				t.Fatalf("pin NAPI thread %d of %s to CPU %d: %v", tid, p.rx, liveNAPICPU, err)
			}
		}
	}
}

// napiThreads finds the kernel threads "napi/DEV-ID" of a device (the
// device names carry the run's tag, so they are ours).
func napiThreads(t *testing.T, dev string) []int {
	t.Helper()
	prefix := "napi/" + dev + "-"
	if len(prefix) > 15 {
		prefix = prefix[:15]
	}
	var tids []int
	for range 100 {
		ents, err := os.ReadDir("/proc")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err == nil && strings.HasPrefix(strings.TrimSpace(string(comm)), prefix) {
				tids = append(tids, pid)
			}
		}
		if len(tids) > 0 {
			return tids
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no NAPI thread %s* after threaded NAPI was turned on", prefix)
	return nil
}

// cpuTime is the CPU time the NAPI threads have used (schedstat).
func (p *livePort) cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var sum time.Duration
	for _, tid := range p.napiTIDs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", tid))
		if err != nil {
			t.Fatalf("NAPI thread %d: %v", tid, err)
		}
		f := strings.Fields(string(b))
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += time.Duration(ns)
	}
	return sum
}

// startLBD runs `lbd serve` in lbNS on p.rx, as a user would (native XDP,
// the gateway being the sender's end), and waits for its API.
func (l *liveLab) startLBD(bin string, p *livePort) {
	t := l.t
	dir := t.TempDir()
	l.api = "127.0.0.1:18480"
	l.stateDir = filepath.Join(dir, "state")
	tokenFile := filepath.Join(dir, "token")
	logPath := filepath.Join(dir, "lbd.log")
	if p := os.Getenv("LBD_LIVE_SERVE_LOG"); p != "" {
		logPath = p // kept after the run
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+l.lbNS, bin, "serve",
		"--interface", p.rx, "--xdp-mode", "native", "--gateway-mac", p.txMAC.String(),
		"--listen", l.api, "--state-dir", l.stateDir, "--token-file", tokenFile,
		"--pin-dir", l.pinDir, "--detach")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = exec.Command(bin, "cleanup", "--pin-dir", l.pinDir).Run()
		_ = os.RemoveAll(l.pinDir)
	})
	l.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := nsexec.Do(l.lbHandle, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("lbd serve exited at start:\n%s", b)
		default:
		}
		if resp, err := l.client.Get("http://" + l.api + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("lbd serve not ready after 20 s:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	l.token = strings.TrimSpace(string(tok))
}

// call makes a REST call to lbd serve and returns the body.
func (l *liveLab) call(method, path string, body []byte) []byte {
	t := l.t
	req, err := http.NewRequest(method, "http://"+l.api+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+l.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

// liveSample is one measurement of one port with one kind of traffic.
type liveSample struct {
	sent    int
	runs    uint64        // run_cnt delta
	runTime time.Duration // run_time_ns delta
	cpu     time.Duration // NAPI threads' CPU time delta
	wall    time.Duration // from the first send to the last frame handed to the veth
	// senderCPU is the sending thread's CPU time (syscalls, skb, veth xmit).
	senderCPU time.Duration
}

func (s liveSample) senderNs() float64 { return float64(s.senderCPU.Nanoseconds()) / float64(s.runs) }

// threadCPU is the calling thread's CPU time so far (schedstat).
func threadCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/thread-self/schedstat")
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
	return time.Duration(ns), err
}

func (s liveSample) nsPerRun() float64 { return float64(s.runTime.Nanoseconds()) / float64(s.runs) }
func (s liveSample) pathNs() float64   { return float64(s.cpu.Nanoseconds()) / float64(s.runs) }
func (s liveSample) ppsWall() float64  { return float64(s.runs) / s.wall.Seconds() }

// send writes the frames into p.tx from a thread pinned to the sender's
// CPU, then waits until the receiving side has run the program on what
// it got, and returns the deltas.
func (p *livePort) send(t *testing.T, frames [][]byte) liveSample {
	t.Helper()
	st0, err := p.prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	cpu0 := p.cpuTime(t)
	start := time.Now()
	errc := make(chan error, 1)
	var senderCPU time.Duration
	go func() {
		runtime.LockOSThread() // a thread of its own, dropped afterwards
		var set unix.CPUSet
		set.Set(liveSenderCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- err
			return
		}
		c0, err := threadCPU()
		if err != nil {
			errc <- err
			return
		}
		if err := sendBatches(p.txFD, frames); err != nil {
			errc <- err
			return
		}
		c1, err := threadCPU()
		senderCPU = c1 - c0
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("send on %s: %v", p.tx, err)
	}
	sending := time.Since(start)
	// Drained: the run count stops moving (bounded).
	var st *ebpf.ProgramStats
	last := uint64(0)
	for range 100 {
		time.Sleep(5 * time.Millisecond)
		if st, err = p.prog.Stats(); err != nil {
			t.Fatal(err)
		}
		if st.RunCount == last {
			break
		}
		last = st.RunCount
	}
	s := liveSample{sent: len(frames), runs: st.RunCount - st0.RunCount, runTime: st.Runtime - st0.Runtime,
		cpu: p.cpuTime(t) - cpu0, wall: sending, senderCPU: senderCPU}
	if s.runs == 0 || s.runs > uint64(len(frames)) {
		t.Fatalf("%s: the program ran %d times for %d frames sent", p.name, s.runs, len(frames))
	}
	return s
}

// mmsghdr is struct mmsghdr (x/sys/unix has no sendmmsg).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// sendBatches writes the frames with sendmmsg, 64 a call: the sender
// must outrun the receiving NAPI thread, so that it polls full batches
// and its CPU time per packet is the path's cost, not a wake-up's.
// Frames the veth cannot queue (its ring full) are dropped there, not
// retried: what reached the program is counted by the program's stats.
func sendBatches(fd int, frames [][]byte) error {
	const batch = 64
	iov := make([]unix.Iovec, len(frames))
	msgs := make([]mmsghdr, len(frames))
	for i, f := range frames {
		iov[i].Base = &f[0]
		iov[i].SetLen(len(f))
		msgs[i].hdr.Iov = &iov[i]
		msgs[i].hdr.SetIovlen(1)
	}
	for off := 0; off < len(msgs); {
		n := min(batch, len(msgs)-off)
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[off])), uintptr(n), 0, 0, 0)
		switch {
		case errno == unix.ENOBUFS || errno == unix.EAGAIN || errno == unix.EINTR:
			continue
		case errno != 0:
			return fmt.Errorf("sendmmsg: %w", errno)
		}
		off += int(r)
	}
	runtime.KeepAlive(frames)
	runtime.KeepAlive(iov)
	return nil
}

// liveFrame is a 64-byte frame on the wire (60 here, the FCS is the
// NIC's): Ethernet, IPv4, TCP without payload, padded.
func liveFrame(t *testing.T, dst net.HardwareAddr, src, dstIP netip.Addr, sport, dport uint16, flags string) []byte {
	f := packettest.Packet{Src: src, Dst: dstIP, SPort: sport, DPort: dport, Proto: unix.IPPROTO_TCP, Flags: flags,
		DstMAC: dst, SrcMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}}.Frame(t)
	if len(f) < 60 {
		f = append(f, make([]byte, 60-len(f))...)
	}
	return f
}

// liveRow gathers one path's samples for the three ports.
type liveRow struct {
	kind    string
	samples map[string][]liveSample // port name -> one per round
}

func TestLiveBench(t *testing.T) {
	privtest.Require(t)
	if runtime.NumCPU() < 2 {
		t.Fatalf("the live benchmark needs 2 CPUs (NAPI on one, the sender on the other), this host has %d", runtime.NumCPU())
	}
	bin := os.Getenv("LBD_BIN")
	if bin == "" {
		bin = "../../bin/lbd"
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("LBD_BIN: %v (run make build first)", err)
	}
	katranObj := os.Getenv("KATRAN_OBJ")
	rounds := envInt(t, "LBD_LIVE_ROUNDS", 9)
	perSample := envInt(t, "LBD_LIVE_PACKETS", 36000)
	const nEstablished = 256

	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF run-time stats: %v", err)
	}
	defer stats.Close() // the kernel counts again as before when the last holder closes

	l := newLiveLab(t)
	lbdPort := l.addPort("lbd", "l")
	floorPort := l.addPort("floor", "f")
	ports := []*livePort{lbdPort}
	var katranPort *livePort

	vip := lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 80, Proto: lb.TCP}
	var realAddrs []netip.Addr
	var realsJSON []string
	for i := range 10 {
		a := netip.AddrFrom4([4]byte{10, 0, 1, byte(1 + i)})
		realAddrs = append(realAddrs, a)
		realsJSON = append(realsJSON, fmt.Sprintf(`{"address":%q}`, a))
	}

	// lbd serve, as users run it, configured over its REST API.
	l.startLBD(bin, lbdPort)
	l.call("POST", "/api/v1/vips", []byte(fmt.Sprintf(`{"protocol":"tcp","address":%q,"port":%d}`, vip.Addr, vip.Port)))
	l.call("PUT", "/api/v1/vips/"+lb.VIPName(vip)+"/reals", []byte(`{"reals":[`+strings.Join(realsJSON, ",")+`]}`))
	l.adoptAttached(lbdPort)

	// The floor: XDP_DROP and nothing else.
	floorProg, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "live_floor", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpDrop), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { floorProg.Close() })
	l.attach(floorPort, floorProg)

	var k *katranLB
	if katranObj != "" {
		katranPort = l.addPort("Katran", "k")
		k = loadKatran(t, katranObj, realAddrs, vip)
		k.addLRUs(t, "1M", 1<<20) // lbd's table size, split per CPU as KatranLb does
		k.use(t, "1M")
		// The gateway is the sender's end, as for lbd.
		var mac katranCtlValue
		copy(mac[:], katranPort.txMAC)
		if err := k.coll.Maps["ctl_array"].Put(uint32(0), mac); err != nil {
			t.Fatal(err)
		}
		l.attach(katranPort, k.prog)
		ports = append(ports, katranPort)
	} else {
		t.Log("KATRAN_OBJ not set: lbd's rows alone (no Katran in this run)")
	}
	ports = append(ports, floorPort)
	l.threadedNAPI(ports...)

	// The frames. Established: nEstablished flows, opened by a SYN each.
	frameFor := func(p *livePort, src netip.Addr, sport uint16, dst netip.Addr, flags string) []byte {
		return liveFrame(t, p.rxMAC, src, dst, sport, 80, flags)
	}
	perPort := func(build func(p *livePort) [][]byte) map[string][][]byte {
		m := map[string][][]byte{}
		for _, p := range ports {
			m[p.name] = build(p)
		}
		return m
	}
	estSYNs := perPort(func(p *livePort) [][]byte {
		var fs [][]byte
		for i := range nEstablished {
			fs = append(fs, frameFor(p, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(20000+i), vip.Addr, "S"))
		}
		return fs
	})
	estACKs := perPort(func(p *livePort) [][]byte {
		fs := make([][]byte, 0, perSample)
		for i := range perSample {
			j := i % nEstablished
			fs = append(fs, frameFor(p, netip.AddrFrom4([4]byte{198, 51, 100, byte(j)}), uint16(20000+j), vip.Addr, "A"))
		}
		return fs
	})
	nonVIP := perPort(func(p *livePort) [][]byte {
		fs := make([][]byte, 0, perSample)
		for i := range perSample {
			j := i % nEstablished
			fs = append(fs, frameFor(p, netip.AddrFrom4([4]byte{198, 51, 100, byte(j)}), uint16(20000+j), netip.MustParseAddr("10.99.0.1"), "A"))
		}
		return fs
	})
	// New flows: tuple n is the same for every port. Tuples are never
	// reused: the SYN rows take [0, rounds*perSample), the handshake rows
	// the next rounds*perSample/2, then the fill, then the full-table rows.
	tupleFrame := func(p *livePort, n int, flags string) []byte {
		src := netip.AddrFrom4([4]byte{198, 18 + byte(n>>24), byte(n >> 16), byte(n >> 8)})
		return frameFor(p, src, uint16(1024+n&0xff), vip.Addr, flags)
	}
	synsOf := func(p *livePort, first, n int) [][]byte {
		fs := make([][]byte, 0, n)
		for i := range n {
			fs = append(fs, tupleFrame(p, first+i, "S"))
		}
		return fs
	}
	// handshakesOf: a SYN and then its ACK, n tuples (2n frames).
	handshakesOf := func(p *livePort, first, n int) [][]byte {
		fs := make([][]byte, 0, 2*n)
		for i := range n {
			fs = append(fs, tupleFrame(p, first+i, "S"), tupleFrame(p, first+i, "A"))
		}
		return fs
	}
	half := perSample / 2
	if inserts := rounds * (perSample + half); inserts*runtime.NumCPU() > 1<<20 {
		t.Fatalf("%d rounds x %d new flows would fill a CPU's share of the tables: lower LBD_LIVE_ROUNDS or LBD_LIVE_PACKETS", rounds, perSample+half)
	}

	// Warm up: open the established flows (a SYN, then ACKs: lbd records
	// a connection at its first packet after the SYN), one burst each.
	for _, p := range ports {
		p.send(t, estSYNs[p.name])
		p.send(t, estACKs[p.name][:perSample/10])
	}

	const (
		rowEstablished = iota
		rowSYN
		rowHandshake
		rowNonVIP
		rowFull
	)
	rows := []*liveRow{
		rowEstablished: {kind: "established (ACK of one of 256 open flows)", samples: map[string][]liveSample{}},
		rowSYN:         {kind: "new flow: SYN of a new 5-tuple (lbd: lookup, no insert; Katran: insert), free table entries", samples: map[string][]liveSample{}},
		rowHandshake:   {kind: "handshake: SYN then its ACK, new 5-tuples, per packet (one insert per tuple in both), free table entries", samples: map[string][]liveSample{}},
		rowNonVIP:      {kind: "non-VIP (XDP_PASS to the stack)", samples: map[string][]liveSample{}},
	}
	var kBefore map[uint32]katranLBStats
	if k != nil {
		kBefore = map[uint32]katranLBStats{}
		for _, idx := range []uint32{katranStatXDPTX, katranStatLRUMiss} {
			kBefore[idx] = k.stat(t, idx)
		}
	}
	// What Katran must have counted: every VIP packet TX, every SYN of a
	// new tuple a SYN miss, every ACK of a new tuple without a SYN (the
	// fill) a non-SYN miss.
	var wantTX, wantSYNMiss, wantOtherMiss uint64
	katranSend := func(p *livePort, frames [][]byte, tx, synMiss, otherMiss int) liveSample {
		if k != nil && p == katranPort {
			k.resetFloodGuard(t) // every new flow inserted, as in lbd (Katran stops inserting above 125000/s)
		}
		st := p.send(t, frames)
		if p == katranPort {
			if st.runs != uint64(len(frames)) {
				t.Fatalf("Katran: %d of %d frames reached the program: its counters cannot be checked", st.runs, len(frames))
			}
			wantTX += uint64(tx)
			wantSYNMiss += uint64(synMiss)
			wantOtherMiss += uint64(otherMiss)
		}
		return st
	}
	start := time.Now()
	for round := range rounds {
		order := slices.Clone(ports)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for ri, row := range rows {
			for _, p := range order {
				var st liveSample
				switch ri {
				case rowEstablished:
					st = katranSend(p, estACKs[p.name], perSample, 0, 0)
				case rowSYN:
					st = katranSend(p, synsOf(p, round*perSample, perSample), perSample, perSample, 0)
				case rowHandshake:
					st = katranSend(p, handshakesOf(p, rounds*perSample+round*half, half), 2*half, half, 0)
				case rowNonVIP:
					st = katranSend(p, nonVIP[p.name], 0, 0, 0)
				}
				row.samples[p.name] = append(row.samples[p.name], st)
			}
		}
	}
	// Full tables: fill each balancer's table on the NAPI CPU (its share,
	// 1048576 / CPUs) with ACKs of tuples never sent before (a miss that
	// records the flow in both, in chunks below Katran's flood guard),
	// then handshakes of new tuples again, each insert now evicting.
	fullRows := envInt(t, "LBD_LIVE_FULL_ROUNDS", 3)
	if fullRows > 0 {
		full := &liveRow{kind: "handshake as above, full tables: every insert evicts", samples: map[string][]liveSample{}}
		fill := (1 << 20) / runtime.NumCPU()
		base := rounds * (perSample + half)
		const chunk = 100000
		for _, p := range ports {
			if p == floorPort {
				continue
			}
			for off := 0; off < fill; off += chunk {
				n := min(chunk, fill-off)
				frames := make([][]byte, 0, n)
				for i := range n {
					frames = append(frames, tupleFrame(p, base+off+i, "A"))
				}
				katranSend(p, frames, n, 0, n)
			}
		}
		base += fill
		for round := range fullRows {
			order := slices.Clone(ports)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, p := range order {
				st := katranSend(p, handshakesOf(p, base+round*half, half), 2*half, half, 0)
				full.samples[p.name] = append(full.samples[p.name], st)
			}
		}
		rows = append(rows, full)
	}
	elapsed := time.Since(start)
	if k != nil { // Katran's own counters: it did what the rows say
		tx := k.stat(t, katranStatXDPTX).V1 - kBefore[katranStatXDPTX].V1
		miss := k.stat(t, katranStatLRUMiss)
		synMiss, otherMiss := miss.V1-kBefore[katranStatLRUMiss].V1, miss.V2-kBefore[katranStatLRUMiss].V2
		if tx != wantTX || synMiss != wantSYNMiss || otherMiss != wantOtherMiss {
			t.Fatalf("Katran: XDP_TX grew by %d (want %d), SYN LRU misses by %d (want %d), non-SYN misses by %d (want %d)",
				tx, wantTX, synMiss, wantSYNMiss, otherMiss, wantOtherMiss)
		}
	}
	lbdCounters := l.lbdCounters()

	report := liveReport(rows, ports, rounds, perSample, elapsed, katranObj != "", lbdCounters)
	t.Log("\n" + report)
	if out := os.Getenv("LBD_LIVE_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// lbdCounters reads lbd's global counters from its metrics (the
// balancer's own), for the report's check line.
func (l *liveLab) lbdCounters() string {
	b := l.call("GET", "/metrics", nil)
	var keep []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "lbd_datapath_packets_total") && !strings.HasSuffix(line, " 0") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "; ")
}

// kpps turns a cell of ns per packet into thousands of packets per second.
func kpps(ns string) string {
	v, err := strconv.ParseFloat(ns, 64)
	if err != nil {
		return ns
	}
	return fmt.Sprintf("%.0f k", 1e6/v)
}

func liveReport(rows []*liveRow, ports []*livePort, rounds, perSample int, elapsed time.Duration, katran bool, lbdCounters string) string {
	var b strings.Builder
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	fmt.Fprintf(&b, "Kernel %s, %d CPUs, %s. %d rounds; each sample %d frames of 64 bytes (60 + FCS) per port; "+
		"NAPI threads on CPU %d, sender on CPU %d; %v of sending in all.\n\n",
		unix.ByteSliceToString(uts.Release[:]), runtime.NumCPU(), runtime.Version(), rounds, perSample,
		liveNAPICPU, liveSenderCPU, elapsed.Round(100*time.Millisecond))
	if !katran {
		b.WriteString("No Katran in this run (KATRAN_SRC not given): lbd's rows and the floor alone.\n\n")
	}
	med := func(ss []liveSample, f func(liveSample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		return median(v)
	}
	b.WriteString("| path | lbd ns/packet (BPF stats) | Katran ns/packet | lbd / Katran (median of per-round pairs, min–max) | floor ns/packet | pps per NAPI core: lbd / Katran / floor | NAPI CPU ns per packet: lbd / Katran / floor | sender CPU ns per packet: lbd / Katran / floor | pps wall: lbd / Katran / floor |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	cell := func(row *liveRow, name string, f func(liveSample) float64, format string) string {
		ss := row.samples[name]
		if len(ss) == 0 {
			return "—"
		}
		return fmt.Sprintf(format, med(ss, f))
	}
	for _, row := range rows {
		ratio := "—"
		if ks := row.samples["Katran"]; len(ks) > 0 {
			ls := row.samples["lbd"]
			r := make([]float64, len(ls))
			for i := range ls {
				r[i] = ls[i].nsPerRun() / ks[i].nsPerRun()
			}
			ratio = fmt.Sprintf("%.2f (%.2f–%.2f)", median(r), slices.Min(r), slices.Max(r))
		}
		pps := func(name string) string { // the inverse of the median NAPI CPU time per packet
			return cell(row, name, liveSample.pathNs, "%.0f")
		}
		wall := func(name string) string {
			return cell(row, name, func(s liveSample) float64 { return s.ppsWall() / 1e3 }, "%.0f k")
		}
		path := func(name string) string { return cell(row, name, liveSample.pathNs, "%.0f") }
		sender := func(name string) string { return cell(row, name, liveSample.senderNs, "%.0f") }
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s / %s / %s | %s / %s / %s | %s / %s / %s | %s / %s / %s |\n", row.kind,
			cell(row, "lbd", liveSample.nsPerRun, "%.1f"), cell(row, "Katran", liveSample.nsPerRun, "%.1f"), ratio,
			cell(row, "floor", liveSample.nsPerRun, "%.1f"),
			kpps(pps("lbd")), kpps(pps("Katran")), kpps(pps("floor")), path("lbd"), path("Katran"), path("floor"),
			sender("lbd"), sender("Katran"), sender("floor"), wall("lbd"), wall("Katran"), wall("floor"))
	}
	var recv []string
	for _, p := range ports {
		var sent, runs uint64
		for _, row := range rows {
			for _, s := range row.samples[p.name] {
				sent += uint64(s.sent)
				runs += s.runs
			}
		}
		recv = append(recv, fmt.Sprintf("%s %d of %d", p.name, runs, sent))
	}
	fmt.Fprintf(&b, "\nFrames that reached the program (the rest the veth dropped, its ring full): %s. lbd's counters at the end: %s.\n",
		strings.Join(recv, ", "), lbdCounters)
	return b.String()
}
