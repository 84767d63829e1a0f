package bgp

import (
	"bufio"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary a BGP speaker process (see TestMain)
// that announces one prefix to the router port it names, then waits to
// be killed.
const childEnv = "LBD_BGP_TEST_CHILD_ROUTER_PORT"

func TestMain(m *testing.M) {
	if port := os.Getenv(childEnv); port != "" {
		runChild(port)
		return
	}
	os.Exit(m.Run())
}

func runChild(port string) {
	p, err := strconv.Atoi(port)
	if err != nil {
		panic(err)
	}
	sp, err := Start(Config{
		ASN: nodeAS, RouterID: netip.MustParseAddr("10.255.0.12"),
		Peers:     []Peer{{Address: netip.MustParseAddr("127.0.0.2"), ASN: routerAS, Port: uint16(p), LocalAddress: netip.MustParseAddr("127.0.0.1")}},
		NextHopV4: netip.MustParseAddr("198.18.0.12"), ConnectRetry: time.Second,
	}, nil)
	if err != nil {
		panic(err)
	}
	if err := sp.Announce(netip.MustParsePrefix("192.0.2.1/32")); err != nil {
		panic(err)
	}
	os.Stdout.WriteString("announced\n")
	time.Sleep(time.Minute) // killed long before
	os.Exit(3)
}

// TestWithdrawnWhenKilled kills (SIGKILL) a process holding a session: the
// kernel closes its socket, the router drops the session and its routes
// at once, without waiting for the hold time.
func TestWithdrawnWhenKilled(t *testing.T) {
	rt := startRouter(t, netip.MustParseAddr("127.0.0.1"))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(int(rt.port)))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "announced" {
		t.Fatalf("child: %q %v", line, err)
	}
	rt.waitRoutes(t, "child announced", "192.0.2.1/32 via 198.18.0.12")
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rt.waitRoutes(t, "child killed")
	took := time.Since(start)
	t.Logf("kill -9: router withdrew the route %v after the signal (hold time %v not needed)", took.Round(time.Microsecond), DefaultHoldTime)
	if took > DefaultHoldTime/2 {
		t.Errorf("withdrawal took %v: the router waited for the hold time instead of seeing the session close", took)
	}
}
