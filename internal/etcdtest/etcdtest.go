// Package etcdtest starts a real etcd cluster from the etcd binary, as a
// user would, on loopback with random ports and temporary data
// directories, for tests of the fleet store. Each client can reach it
// through its own stoppable TCP proxies, to cut one client off.
package etcdtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// Binary is the etcd server binary the cluster runs.
var Binary = "etcd"

// Member is one etcd server process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	cmd       *exec.Cmd
	done      chan struct{}
	args      []string
	log       *os.File
}

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	Members []*Member
}

// Require fails the test (or skips it outside CI, and in the kernel
// matrix's guests) when the etcd binary is missing.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		if privtest.InVMGuest() {
			// The busybox guests of the kernel matrix have no etcd; these
			// tests need no particular kernel and run on the host (in CI:
			// required there).
			t.Skipf("kernel-matrix guest: %v; this test runs on the host", err)
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd binary not found (%v): scripts/install-deps.sh installs etcd-server", err)
		}
		t.Skipf("etcd binary not found (%v): apt-get install etcd-server", err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts an n-member cluster and waits until every member serves.
// It is stopped and its directories removed at the test's end.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	Require(t)
	c := &Cluster{t: t}
	base := t.TempDir()
	var initial []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			dir:       filepath.Join(base, fmt.Sprintf("m%d", i)),
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.args = []string{
			"--name", m.Name, "--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "lbd-test",
			// etcd's own heartbeat and election timeouts (100 ms, 1 s): a
			// test host shared by many processes stalls a member for
			// hundreds of milliseconds, and tighter timeouts turn those
			// stalls into elections. Pre-vote (the default from etcd 3.5,
			// off in Debian's 3.4): a member that restarts or was cut off
			// does not depose a working leader when it comes back.
			"--pre-vote",
		}
		c.start(m)
	}
	t.Cleanup(func() {
		c.stopAll()
		if t.Failed() {
			// What etcd said (slow disk, elections...) explains most
			// failures of a test that talks to it.
			for _, m := range c.Members {
				t.Logf("etcd %s log, last lines:\n%s", m.Name, tail(m.dir+".log"))
			}
		}
	})
	for _, m := range c.Members {
		c.waitHealthy(m, 20*time.Second)
	}
	return c
}

func (c *Cluster) start(m *Member) {
	c.t.Helper()
	log, err := os.OpenFile(m.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(Binary, m.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH=")
	if err := cmd.Start(); err != nil {
		log.Close()
		c.t.Fatalf("start etcd %s: %v", m.Name, err)
	}
	m.cmd, m.log, m.done = cmd, log, make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(m.done) }()
}

func (c *Cluster) waitHealthy(m *Member, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			c.t.Fatalf("etcd %s exited: %s", m.Name, tail(m.dir+".log"))
		default:
		}
		if healthy(m.ClientURL) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("etcd %s not healthy after %v: %s", m.Name, d, tail(m.dir+".log"))
}

func healthy(url string) bool {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(url + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(out), `"true"`)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var e []string
	for _, m := range c.Members {
		e = append(e, m.ClientURL)
	}
	return e
}

// Leader is the index of the member that is the cluster's leader now
// (bounded wait for one; fails the test if none is elected).
func (c *Cluster) Leader() int {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for i, m := range c.Members {
			if m.cmd == nil {
				continue
			}
			if id, lead, ok := status(m.ClientURL); ok && id == lead && lead != "" && lead != "0" {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("etcd: no leader after 20s")
	return -1
}

// status asks a member its id and its leader's (the JSON gateway of the
// Maintenance.Status call).
func status(url string) (id, leader string, ok bool) {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Post(url+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return "", "", false
	}
	defer resp.Body.Close()
	var st struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return "", "", false
	}
	return st.Header.MemberID, st.Leader, true
}

// Kill stops member i (SIGKILL), as a crash would.
func (c *Cluster) Kill(i int) {
	m := c.Members[i]
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Restart starts a killed member again with its data directory.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.Members[i]
	if m.cmd != nil {
		return
	}
	for j, a := range m.args {
		if a == "--initial-cluster-state" {
			m.args[j+1] = "existing"
		}
	}
	c.start(m)
	c.waitHealthy(m, 20*time.Second)
}

func (c *Cluster) stopAll() {
	for i := range c.Members {
		c.Kill(i)
	}
}

// Proxies are one stoppable TCP proxy per member: a client given their
// Endpoints reaches the cluster only while they are not cut.
type Proxies struct {
	mu      sync.Mutex
	cut     bool
	ls      []net.Listener
	targets []string
	conns   map[net.Conn]struct{}
	eps     []string
}

// Proxies starts proxies to every member, closed at the test's end.
func (c *Cluster) Proxies(t testing.TB) *Proxies {
	t.Helper()
	p := &Proxies{conns: map[net.Conn]struct{}{}}
	for _, m := range c.Members {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		target := strings.TrimPrefix(m.ClientURL, "http://")
		p.ls = append(p.ls, l)
		p.targets = append(p.targets, target)
		p.eps = append(p.eps, "http://"+l.Addr().String())
		go p.serve(l, target)
	}
	t.Cleanup(p.close)
	return p
}

// Endpoints are the proxies' client URLs.
func (p *Proxies) Endpoints() []string { return append([]string(nil), p.eps...) }

func (p *Proxies) serve(l net.Listener, target string) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.mu.Unlock()
		out, err := net.DialTimeout("tcp", target, time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(out, in)
		go pipe(in, out)
	}
}

// Cut drops every proxied connection and refuses new ones: the client is
// partitioned from etcd.
func (p *Proxies) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Heal lets connections through again.
func (p *Proxies) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

func (p *Proxies) close() {
	p.Cut()
	for _, l := range p.ls {
		l.Close()
	}
}
