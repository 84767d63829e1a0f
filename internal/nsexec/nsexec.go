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
	"runtime"

	"github.com/vishvananda/netns"
)

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
// `ip netns add` does) and returns a handle to it.
func NewNamed(name string) (netns.NsHandle, error) {
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
