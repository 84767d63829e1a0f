// Package nsexec runs code inside a network namespace, and makes
// namespaces without leaving the caller in them. Go schedules goroutines
// on many threads and a namespace belongs to a thread, so the code runs on
// a locked OS thread that is switched in and back; a thread that cannot
// be switched back is left locked, and Go discards it with its goroutine.
// Sockets and netlink handles opened inside stay in the namespace.
package nsexec

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are mounted.
const NetnsDir = "/run/netns"

// Do runs f on an OS thread switched into ns and returns its error.
func Do(ns netns.NsHandle, f func() error) error {
	return onThread(func(orig netns.NsHandle) error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return f()
	})
}

// New makes an anonymous network namespace and returns a handle to it
// (it lives while a handle or a process holds it).
func New() (netns.NsHandle, error) {
	var h netns.NsHandle
	err := onThread(func(netns.NsHandle) error {
		var err error
		h, err = netns.New() // creates and enters it
		return err
	})
	return h, err
}

// NewNamed makes a named network namespace (bound under /run/netns, as
// `ip netns add` does, /run/netns made a shared mount point first) and
// returns a handle to it.
func NewNamed(name string) (netns.NsHandle, error) {
	if err := ShareNetnsDir(); err != nil {
		return netns.None(), err
	}
	var h netns.NsHandle
	err := onThread(func(netns.NsHandle) error {
		var err error
		h, err = netns.NewNamed(name) // creates and enters it
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		return nil
	})
	return h, err
}

// onThread runs f on a locked thread and puts the thread back into its
// original namespace afterwards, whatever f did to it.
func onThread(f func(orig netns.NsHandle) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current netns: %w", err)
			return // locked: discarded
		}
		defer orig.Close()
		ferr := f(orig)
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns: %w", err))
			return // locked: discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ShareNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does before it mounts a namespace there: if it is none yet, it is bind
// mounted onto itself first. Namespaces mounted on a plain directory
// would be hidden for good by the next `ip netns add`, which does this
// bind mount over them: they could no longer be entered or deleted.
func ShareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", NetnsDir, err)
	}
	// One of us at a time, so that two callers do not stack two bind
	// mounts (the lock is on the directory, which the bind mount shows
	// again).
	d, err := os.Open(NetnsDir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", NetnsDir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)
	err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s onto itself: %w", NetnsDir, err)
		}
		err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", NetnsDir, err)
	}
	return nil
}
