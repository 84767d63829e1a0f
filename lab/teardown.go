// Teardown: lab down from the names alone, and what is left of a lab.

package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/bpf/xdp"
)

// Down tears the lab down: stops its processes, deletes its namespaces,
// interface, pins and state. It works from the names alone, so it also
// cleans up after a crash, and running it twice is harmless.
func (l *Lab) Down() error { return Down(l.Name, l.cmds) }

// Down tears down the lab called name (see Lab.Down). cmds are children
// the caller started, reaped after they are killed.
func Down(name string, cmds map[int]*exec.Cmd) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1 to 10 lowercase letters or digits", name)
	}
	p := prefix(name)
	var errs []error
	// 1. Processes: lbd serve and the real servers carry the prefix in an
	// argument (pin directory, --id), BIRD its configuration's path.
	// SIGTERM, then SIGKILL.
	pids := append(processes(p), processes(birdMarker(name))...)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	for range 100 {
		left := 0
		for _, pid := range pids {
			if alive(pid) && !isZombie(pid) {
				left++
			}
		}
		if left == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range pids {
		if alive(pid) && !isZombie(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for pid, c := range cmds {
		if c != nil {
			_ = c.Wait()
		}
		delete(cmds, pid)
	}
	// 2. lbd's interface (its router-side peer goes with it), then the
	// XDP pins and lock files lbd serve leaves for a hitless restart.
	for i := range MaxLBNodes {
		hostIf := hostIf(name, i)
		if link, err := netlink.LinkByName(hostIf); err == nil {
			if err := netlink.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", hostIf, err))
			}
		}
		pinDir := pinDir(name, i)
		if _, err := os.Stat(pinDir); err == nil {
			if err := xdp.Cleanup(pinDir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	xdp.RemoveStaleLocks() // those of the killed lbd serve
	// 3. Namespaces (with every link in them), the reals' pins, state.
	for _, ns := range listNetns(p) {
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	pins, _ := filepath.Glob("/sys/fs/bpf/" + p + "*")
	for _, d := range pins {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove pins %s: %w", d, err))
		}
	}
	if err := os.RemoveAll(Dir(name)); err != nil {
		errs = append(errs, err)
	}
	if left := Leftovers(name); len(left) > 0 {
		errs = append(errs, fmt.Errorf("lab %s is not down; left behind: %s", name, strings.Join(left, "; ")))
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the lab called name is still there: processes,
// namespaces (and their mounts, reachable or not), lbd's interfaces, pins
// and the state directory. Empty once the lab is down.
func Leftovers(name string) []string {
	p := prefix(name)
	var left []string
	if pids := append(processes(p), processes(birdMarker(name))...); len(pids) > 0 {
		var live []string
		for _, pid := range pids {
			if alive(pid) && !isZombie(pid) {
				live = append(live, strconv.Itoa(pid))
			}
		}
		if len(live) > 0 {
			left = append(left, "processes "+strings.Join(live, ", "))
		}
	}
	if ns := listNetns(p); len(ns) > 0 {
		left = append(left, "namespaces "+strings.Join(ns, ", "))
	}
	if m := netnsMounts(p); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, ", "))
	}
	var links []string
	for i := range MaxLBNodes {
		if _, err := netlink.LinkByName(hostIf(name, i)); err == nil {
			links = append(links, hostIf(name, i))
		}
	}
	if len(links) > 0 {
		left = append(left, "interfaces "+strings.Join(links, ", "))
	}
	if pins, _ := filepath.Glob("/sys/fs/bpf/" + p + "*"); len(pins) > 0 {
		left = append(left, "pins "+strings.Join(pins, ", "))
	}
	if _, err := os.Stat(Dir(name)); err == nil {
		left = append(left, "state "+Dir(name))
	}
	return left
}
