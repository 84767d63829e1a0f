package kprobe

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The test binary re-executes itself as the "application" whose
// connections the tracer must report (LBD_TRACER_CHILD=1): a separate
// process with its own pid and comm, which works in the root network
// namespace and then in one it creates. It prints what it did as JSON.
func TestMain(m *testing.M) {
	if os.Getenv("LBD_TRACER_CHILD") == "1" {
		if err := childMain(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// flowRecord is one connection the workload made, as the child saw it.
type flowRecord struct {
	Proto    string // "tcp" or "udp"
	Client   string // addr:port
	Server   string
	Netns    uint32
	C2S, S2C int // payload bytes client -> server, server -> client
}

type workloadReport struct {
	PID   int
	Comm  string
	Flows []flowRecord
}

// Payload sizes: distinct, not multiples of each other, bigger than one
// segment for TCP.
const (
	tcpC2S = 70001
	tcpS2C = 12345
	udpC2S = 3 * 1000
	udpS2C = 2 * 777
)

func childMain() error {
	runtime.LockOSThread() // the netns switch below is per thread
	rep := workloadReport{PID: os.Getpid(), Comm: commOf(os.Args[0])}
	if err := workload(&rep); err != nil {
		return fmt.Errorf("root netns: %w", err)
	}
	if os.Getenv("LBD_TRACER_CHILD_NETNS") == "1" {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare netns: %w", err)
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("lo up: %w", err)
		}
		if err := workload(&rep); err != nil {
			return fmt.Errorf("new netns: %w", err)
		}
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

func commOf(arg0 string) string {
	b := arg0[strings.LastIndexByte(arg0, '/')+1:]
	if len(b) > 15 {
		b = b[:15]
	}
	return b
}

func threadNetns() uint32 {
	ino, _ := netnsInode(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	return ino
}

// workload makes one TCP connection and one UDP flow over IPv4 and IPv6
// loopback from the current thread's network namespace.
func workload(rep *workloadReport) error {
	ns := threadNetns()
	for _, addr := range []string{"127.0.0.1", "::1"} {
		f, err := tcpExchange(addr, tcpC2S, tcpS2C)
		if err != nil {
			return err
		}
		f.Netns = ns
		rep.Flows = append(rep.Flows, f)
		u, err := udpExchange(addr)
		if err != nil {
			return err
		}
		u.Netns = ns
		rep.Flows = append(rep.Flows, u)
	}
	return nil
}

// tcpExchange: connect, client sends c2s bytes, server reads them all and
// answers s2c bytes, client reads them all; client closes, then server.
func tcpExchange(addr string, c2s, s2c int) (flowRecord, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return flowRecord{}, err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		if _, err := io.CopyN(io.Discard, c, int64(c2s)); err != nil {
			done <- err
			return
		}
		if _, err := c.Write(make([]byte, s2c)); err != nil {
			done <- err
			return
		}
		// wait for the client's close before closing
		_, err = c.Read(make([]byte, 1))
		if err == io.EOF {
			err = nil
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return flowRecord{}, err
	}
	f := flowRecord{Proto: "tcp", Client: c.LocalAddr().String(), Server: ln.Addr().String(), C2S: c2s, S2C: s2c}
	if _, err := c.Write(make([]byte, c2s)); err != nil {
		return f, err
	}
	if _, err := io.ReadFull(c, make([]byte, s2c)); err != nil {
		return f, err
	}
	c.Close()
	return f, <-done
}

// udpExchange: two connected UDP sockets; 3 datagrams of 1000 bytes one
// way, 2 of 777 back.
func udpExchange(addr string) (flowRecord, error) {
	ip := net.ParseIP(addr)
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		return flowRecord{}, err
	}
	srvAddr := srv.LocalAddr().(*net.UDPAddr)
	cli, err := net.DialUDP("udp", &net.UDPAddr{IP: ip}, srvAddr)
	if err != nil {
		srv.Close()
		return flowRecord{}, err
	}
	defer cli.Close()
	// connect the server side too, so both sockets carry the full tuple
	cliAddr := cli.LocalAddr().(*net.UDPAddr)
	srv.Close()
	srvc, err := net.DialUDP("udp", srvAddr, cliAddr)
	if err != nil {
		return flowRecord{}, fmt.Errorf("rebind server %s: %w", srvAddr, err)
	}
	defer srvc.Close()
	f := flowRecord{Proto: "udp", Client: cliAddr.String(), Server: srvAddr.String(), C2S: udpC2S, S2C: udpS2C}
	buf := make([]byte, 2000)
	for i := 0; i < 3; i++ {
		if _, err := cli.Write(make([]byte, 1000)); err != nil {
			return f, err
		}
		if n, err := srvc.Read(buf); err != nil || n != 1000 {
			return f, fmt.Errorf("udp read %d: %v", n, err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := srvc.Write(make([]byte, 777)); err != nil {
			return f, err
		}
		if n, err := cli.Read(buf); err != nil || n != 777 {
			return f, fmt.Errorf("udp read %d: %v", n, err)
		}
	}
	return f, nil
}

// runChild runs the workload in a child process and returns its report.
func runChild(t *testing.T, withNetns bool) workloadReport {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "LBD_TRACER_CHILD=1")
	if withNetns {
		cmd.Env = append(cmd.Env, "LBD_TRACER_CHILD_NETNS=1")
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child workload: %v", err)
	}
	var rep workloadReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child report %q: %v", out, err)
	}
	return rep
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
