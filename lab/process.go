// Process supervision: the lab's long-running children (real servers, lbd
// serve on each node), started detached with their logs in the lab's
// directory, and stopped by signal.

package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StopReal kills real i's server.
func (l *Lab) StopReal(i int) error {
	r := &l.Reals[i]
	if r.Pid == 0 {
		return nil
	}
	pid := r.Pid
	r.Pid = 0
	if cmd := l.cmds[pid]; cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		delete(l.cmds, pid)
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 200 {
		if !alive(pid) || isZombie(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("real server %s (pid %d) still running 10 s after SIGKILL", r.Name, pid)
}

// command builds a command running the lbd binary with args.
func (l *Lab) command(args ...string) *exec.Cmd {
	cmd := exec.Command(l.Binary, args...)
	cmd.Env = append(os.Environ(), l.cfg.Env...)
	return cmd
}

// RunIn runs lbd with args in the named namespace and returns its
// standard output (and standard error on failure).
func (l *Lab) RunIn(ns string, args ...string) ([]byte, error) {
	cmd := l.command(args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := startIn(ns, cmd); err != nil {
		return nil, err
	}
	if err := cmd.Wait(); err != nil {
		return []byte(stdout.String() + stderr.String()), err
	}
	return []byte(stdout.String()), nil
}

// spawn starts a long-running lbd child in ns, detached from our session,
// its output appended to logName in the lab's directory.
func (l *Lab) spawn(ns, logName string, args ...string) (*exec.Cmd, error) {
	cmd := l.command(args...)
	return cmd, l.startLogged(ns, logName, cmd)
}

// startLogged starts cmd in ns, detached from our session, its output
// appended to logName in the lab's directory.
func (l *Lab) startLogged(ns, logName string, cmd *exec.Cmd) error {
	logf, err := os.OpenFile(filepath.Join(Dir(l.Name), logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := startIn(ns, cmd); err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	if l.cmds == nil {
		l.cmds = map[int]*exec.Cmd{}
	}
	l.cmds[cmd.Process.Pid] = cmd
	return nil
}

// StartReal starts real i's server (a re-executed lbd) and waits until it
// answers.
func (l *Lab) StartReal(i int) error {
	r := &l.Reals[i]
	cmd, err := l.spawn(r.Netns, r.Name+".log", "lab", "real-server", "--name", r.Name, "--id", prefix(l.Name)+r.Name)
	if err != nil {
		return err
	}
	r.Pid = cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := InNetns(r.Netns, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(r.Addr4.String(), strconv.Itoa(WhoPort)), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("real server %s does not answer after 10 s: %w (log: %s)", r.Name, err, filepath.Join(Dir(l.Name), r.Name+".log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartLBD starts `lbd serve` on the lab's host interface and waits until
// its API is ready.
func (l *Lab) StartLBD(extra ...string) error {
	return l.StartNode(0, extra...)
}

// StartNode starts lbd node i's `lbd serve` (with more than one node:
// announcing over BGP to the router) and waits until its API is ready.
func (l *Lab) StartNode(i int, extra ...string) error {
	n := &l.Nodes[i]
	args := []string{"serve", "--interface", n.HostIf, "--xdp-mode", "native", "--gateway-mac", n.GatewayMAC,
		"--listen", n.API, "--state-dir", n.StateDir, "--token-file", n.TokenFile, "--pin-dir", n.PinDir,
		"--max-vips", "16", "--max-reals", "64", "--max-flows", "65536"}
	if ap, err := netip.ParseAddrPort(n.API); err == nil && !ap.Addr().IsLoopback() {
		// a lab API on another address is the operator's choice (lbd
		// refuses plain HTTP off loopback without this)
		args = append(args, "--insecure-listen")
	}
	if l.multi() {
		// The nodes share a namespace: their speakers dial out and do
		// not listen (BIRD waits for them, passive).
		args = append(args, "--bgp-as", strconv.Itoa(NodeAS), "--bgp-peer", fmt.Sprintf("%s,%d", n.RouterAddr, RouterAS), "--bgp-listen-port", "0")
	}
	cmd, err := l.spawn("", n.Log, append(args, extra...)...)
	if err != nil {
		return err
	}
	n.Pid = cmd.Process.Pid
	if i == 0 {
		l.LBDPid = n.Pid
	}
	deadline := time.Now().Add(15 * time.Second)
	exited := make(chan struct{})
	go func() {
		// Reap it if it dies early, so that we notice.
		_, _ = cmd.Process.Wait()
		close(exited)
	}()
	l.cmds[cmd.Process.Pid] = nil // reaped by the goroutine above
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(Dir(l.Name), n.Log))
			return fmt.Errorf("lbd serve (node %d) exited at start:\n%s", i, tail(string(log), 20))
		default:
		}
		resp, err := httpGet("http://" + n.API + "/readyz")
		if err == nil && resp == 200 {
			l.logf("lbd serve (node %d): XDP on %s (gateway %s), API http://%s, token %s", i, n.HostIf, n.GatewayMAC, n.API, n.TokenFile)
			return l.save()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lbd serve (node %d) not ready after 15 s (log: %s)", i, filepath.Join(Dir(l.Name), n.Log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StopLBD sends sig to lbd serve (node 0) and waits (10 s) for it to exit.
func (l *Lab) StopLBD(sig syscall.Signal) error { return l.StopNode(0, sig) }

// StopNode sends sig to node i's lbd serve and waits (10 s) for it to exit.
func (l *Lab) StopNode(i int, sig syscall.Signal) error {
	n := &l.Nodes[i]
	if n.Pid == 0 {
		return nil
	}
	pid := n.Pid
	n.Pid = 0
	if i == 0 {
		l.LBDPid = 0
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return nil // gone already
	}
	for range 200 {
		if !alive(pid) || isZombie(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("lbd serve (pid %d) still running 10 s after %v", pid, sig)
}

// isZombie: pid has exited, every thread of it, and only waits to be
// reaped. The group leader shows state Z as soon as its own thread exits,
// while the process's other threads may still be exiting and still hold
// its open files, and so its locks: a restart right after kill -9 found
// lbd's state lock held (seen in the kernel-matrix guests, where exiting
// is slow). A thread is taken off the task list only after it has let go
// of the files, so the list must be down to the leader too.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i <= 0 || i+2 >= len(s) || s[i+2] != 'Z' {
		return false
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return err != nil || len(tasks) <= 1
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
