package xdp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The locks that keep two lbd daemons apart are keyed on what they
// protect, not on the names they were given: the pin directory's inode
// (a symlink or a bind mount of it is the same directory) and the
// interface's index within its network namespace (the same name in
// another namespace is another interface).

// LockDir holds the interface lock files. It is on tmpfs, so a reboot
// (which also empties bpffs) forgets them; each is removed when its
// holder lets go, and one left by a killed holder is removed by the next
// lbd that starts.
const LockDir = "/run/lbd"

// Lock is an exclusive flock(2) held by this process. The kernel drops it
// when the process dies, even by kill -9.
type Lock struct {
	f      *os.File
	remove string // a lock file to remove on Release ("" for the pin directory)
}

// Release lets go of the lock and removes its lock file, if it has one.
// A nil Lock is fine.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	if l.remove != "" {
		// Removed while held: whoever opened it meanwhile sees, after
		// taking the lock, that the name no longer leads to it, and
		// starts over (see LockPath).
		_ = os.Remove(l.remove)
	}
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// LockPinDir takes the lock on the pin directory dir itself (flock on the
// directory: bpffs holds no regular files), so that a second lbd given
// another path to the same directory — a symlink, a bind mount — is
// refused too. dir must exist. what describes the holder for the error
// ("lbd serve", "lbd cleanup").
func LockPinDir(dir string) (*Lock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin directory to lock it: %w", err)
	}
	if err := flockWait(f); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another lbd (%s) is running with pin directory %s%s", holder(f), dir, sameDirNote(dir))
		}
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return &Lock{f: f}, nil
}

// sameDirNote names what dir really is when it is a symlink.
func sameDirNote(dir string) string {
	if real, err := filepath.EvalSymlinks(dir); err == nil && filepath.Clean(real) != filepath.Clean(dir) {
		return " (which is " + real + ")"
	}
	return ""
}

// Interface is a network interface of this process's network namespace.
type Interface struct {
	Name    string
	Index   int
	NetnsID uint64 // the network namespace's inode number
}

// LookupInterface finds the interface called name in this network
// namespace. Its error names the interface and lists those that exist.
func LookupInterface(name string) (Interface, error) {
	if name == "" {
		return Interface{}, errors.New("no interface given: name the one lbd attaches to with --interface (list them with `ip link show`)")
	}
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		var names []string
		if all, lerr := net.Interfaces(); lerr == nil {
			for _, i := range all {
				names = append(names, i.Name)
			}
		}
		slices.Sort(names)
		return Interface{}, fmt.Errorf("interface %q does not exist in this network namespace (it has: %s; list them with `ip link show`)", name, strings.Join(names, ", "))
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return Interface{}, fmt.Errorf("identify this network namespace: %w", err)
	}
	return Interface{Name: ifc.Name, Index: ifc.Index, NetnsID: st.Ino}, nil
}

// LockInterface takes the lock on ifc: a lock file in LockDir named after
// its network namespace and index. Stale lock files in LockDir (left by a
// killed lbd, or named the old way, after the interface's name) are
// removed first.
func LockInterface(ifc Interface) (*Lock, error) {
	if err := os.MkdirAll(LockDir, 0o700); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	RemoveStaleLocks()
	path := filepath.Join(LockDir, fmt.Sprintf("interface-netns%d-if%d.lock", ifc.NetnsID, ifc.Index))
	l, err := LockPath(path)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("another lbd (%s) is running on interface %s (index %d in this network namespace)", holderOfPath(path), ifc.Name, ifc.Index)
	}
	if err != nil {
		return nil, fmt.Errorf("lock interface %s: %w", ifc.Name, err)
	}
	return l, nil
}

// LockPath creates (or opens) the lock file path, takes its lock and
// writes our pid into it; Release removes it. A file removed by its last
// holder between our open and our lock is no longer the lock: then it
// starts over. A live holder gives an error that wraps EWOULDBLOCK.
func LockPath(path string) (*Lock, error) {
	for range 100 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open lock file: %w", err)
		}
		if err := flockWait(f); err != nil {
			f.Close()
			return nil, err
		}
		if !samePath(f, path) {
			f.Close()
			continue
		}
		_ = f.Truncate(0)
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		return &Lock{f: f, remove: path}, nil
	}
	return nil, fmt.Errorf("lock file %s keeps being replaced", path)
}

// samePath reports whether path still names the file f has open.
func samePath(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// RemoveStaleLocks removes the lock files in LockDir that no process
// holds. A lock file lbd takes is removed by its holder as it lets go;
// these were left by a killed lbd or by one that named them differently.
func RemoveStaleLocks() {
	ents, _ := os.ReadDir(LockDir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		path := filepath.Join(LockDir, e.Name())
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && samePath(f, path) {
			_ = os.Remove(path)
		}
		f.Close() // lets go of the lock
	}
}

// flockWait takes an exclusive lock on f without blocking on a live
// holder. A holder that was just killed may take a moment to let go (a
// process shows as gone, or a zombie, before its last thread has closed
// its files): such a holder is waited for, up to 30 s (a killed lbd
// whose tracer armed kprobes takes seconds to exit under qemu's TCG:
// seen on 6.12 in the kernel matrix). A live holder is never waited for.
func flockWait(f *os.File) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil || !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		pids := lockHolders(f)
		if len(pids) == 0 || !allExiting(pids) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockHolders lists the pids that hold a flock on f's inode, from
// /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF").
func lockHolders(f *os.File) []int {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return nil
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	var pids []int
	for _, line := range strings.Split(string(data), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 6 || fs[1] != "FLOCK" || fs[5] != id {
			continue
		}
		if pid, err := strconv.Atoi(fs[4]); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

func holder(f *os.File) string {
	pids := lockHolders(f)
	if len(pids) == 0 {
		return "pid unknown"
	}
	return "pid " + strconv.Itoa(pids[0])
}

func holderOfPath(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "pid unknown"
	}
	defer f.Close()
	return holder(f)
}

func allExiting(pids []int) bool {
	for _, pid := range pids {
		if !exiting(pid) {
			return false
		}
	}
	return true
}

// exiting reports whether process pid is gone, a zombie, exiting
// (PF_EXITING in its stat flags: a killed process that is still tearing
// down, e.g. unregistering kprobes) or has a SIGKILL pending: its locks
// are about to be released.
func exiting(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	// "pid (comm) S ppid pgrp session tty tpgid flags ...": the state
	// follows the last ')', the flags are the seventh field after it.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
		return true
	}
	const pfExiting = 0x4
	if len(f) > 6 {
		if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfExiting != 0 {
			return true
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(status), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok || (name != "ShdPnd" && name != "SigPnd") {
			continue
		}
		if mask, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64); err == nil && mask&(1<<(9-1)) != 0 {
			return true // SIGKILL pending
		}
	}
	return false
}
