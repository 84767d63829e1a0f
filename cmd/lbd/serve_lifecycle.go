package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/bpf/xdp"
)

// What keeps two daemons apart, and what lbd serve leaves behind when it
// exits.

// daemonLocks are exclusive locks on what one daemon owns: its state
// directory, its pin directory (whose maps a second daemon would
// overwrite) and its interface. The kernel drops them when the process
// dies, even by kill -9.
type daemonLocks struct {
	state, pins, iface *xdp.Lock
}

// lockDaemon takes the locks of a daemon for cfg on interface ifc. The
// pin directory's is taken here if the directory exists (another daemon
// may be using it), else once it is made (preparePinDir).
func lockDaemon(cfg serveConfig, ifc xdp.Interface) (*daemonLocks, error) {
	ls := &daemonLocks{}
	var err error
	if ls.state, err = lockFile(filepath.Join(cfg.StateDir, "lbd.lock"), "with state directory "+cfg.StateDir); err != nil {
		return nil, err
	}
	if ls.pins, err = lockPinDirIfExists(cfg.PinDir); err != nil {
		ls.release()
		return nil, err
	}
	if ls.iface, err = xdp.LockInterface(ifc); err != nil {
		ls.release()
		return nil, err
	}
	return ls, nil
}

func (ls *daemonLocks) release() {
	ls.iface.Release()
	ls.pins.Release()
	ls.state.Release()
}

// lockFile takes an exclusive lock on path (a file inside what it
// protects, removed on release) and writes our pid into it; if another process holds
// it, the error names that process.
func lockFile(path, what string) (*xdp.Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	l, err := xdp.LockPath(path)
	if errors.Is(err, unix.EWOULDBLOCK) {
		data, _ := os.ReadFile(path)
		return nil, fmt.Errorf("another lbd (pid %s) is running %s", strings.TrimSpace(string(data)), what)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return l, nil
}

// lockPinDirIfExists locks the pin directory for lbd cleanup; one that
// does not exist has nothing to protect.
func lockPinDirIfExists(dir string) (*xdp.Lock, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return xdp.LockPinDir(dir)
}

// pinDir is what lbd serve knows of its pin directory.
type pinDir struct {
	// private: the pins live in a bpf filesystem that goes away with
	// this process's mount namespace (allowed by --allow-private-pins or
	// --detach).
	private bool
}

// preparePinDir mounts bpffs if needed, creates the pin directory and
// locks it (if lockDaemon has not), and refuses a directory whose pins
// would not outlive this process's mount namespace, unless told
// otherwise.
func preparePinDir(cfg serveConfig, locks *daemonLocks, log *slog.Logger) (pinDir, error) {
	var p pinDir
	if err := xdp.EnsureBPFFS(cfg.PinDir); err != nil {
		return p, err
	}
	if locks.pins == nil {
		lock, err := xdp.LockPinDir(cfg.PinDir)
		if err != nil {
			return p, err
		}
		locks.pins = lock
	}
	ok, why, err := xdp.PinsOutliveMountNamespace(cfg.PinDir)
	if err != nil {
		return p, err
	}
	if !ok {
		switch {
		case cfg.Detach:
			log.Info("the pins live only in this mount namespace; --detach removes them on exit anyway", "pin_dir", cfg.PinDir)
		case cfg.AllowPrivatePins:
			log.Warn("the pins will not outlive lbd: when it exits, the XDP program is detached and the connection table lost (--allow-private-pins)",
				"pin_dir", cfg.PinDir, "reason", why)
		default:
			return p, fmt.Errorf("pin directory %s would not outlive lbd: %s. "+
				"Run lbd in the network namespace with `nsenter --net=/run/netns/NAME lbd serve ...` (which keeps the machine's /sys/fs/bpf) instead of `ip netns exec`, "+
				"or pass --allow-private-pins to run anyway", cfg.PinDir, why)
		}
		p.private = true
	}
	return p, nil
}

// exitLine says what stays after lbd serve exits without --detach: att is
// this run's attachment (zero if it never attached).
func (p pinDir) exitLine(att xdp.Attachment) string {
	switch {
	case p.private:
		return "exited; the pins were private to this mount namespace: they go with it, and with them the XDP program and the connection table"
	case att.Interface == "":
		return "exited before attaching the XDP program; the pins stay for the next run, and a program an earlier run attached is unchanged"
	default:
		return "exited; the XDP program stays attached and keeps forwarding"
	}
}
