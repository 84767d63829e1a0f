package xdp

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/nsexec"
	"github.com/lbd-dev/lbd/internal/privtest"
)

// TestPinDirLockFollowsTheDirectory: the pin directory's lock is on the
// directory, so a symlink to it or a bind mount of it is refused while
// the lock is held, and taken once it is released.
func TestPinDirLockFollowsTheDirectory(t *testing.T) {
	dir := testPinDir(t)
	l, err := LockPinDir(dir)
	if err != nil {
		t.Fatalf("lock %s: %v", dir, err)
	}
	link := filepath.Join(t.TempDir(), "pins")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	bind := dir + "-bind"
	if err := os.Mkdir(bind, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(bind) })
	if err := unix.Mount(dir, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s on %s: %v", dir, bind, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bind, unix.MNT_DETACH) })

	for _, other := range []string{dir, link, bind} {
		l2, err := LockPinDir(other)
		if err == nil {
			l2.Release()
			t.Fatalf("locked %s while %s is locked", other, dir)
		}
		if !strings.Contains(err.Error(), "another lbd") || !strings.Contains(err.Error(), other) {
			t.Errorf("lock %s: %v: want it to name another lbd and the directory", other, err)
		}
	}
	l.Release()
	l2, err := LockPinDir(link)
	if err != nil {
		t.Fatalf("lock %s after the lock was released: %v", link, err)
	}
	l2.Release()
}

// TestInterfaceLockPerNamespace: an interface's lock is keyed on its
// network namespace and index: lo of one namespace and lo of another are
// two interfaces, both lockable; the same lo twice is refused. The lock
// file goes with the lock, and a stale one nobody holds is removed.
func TestInterfaceLockPerNamespace(t *testing.T) {
	privtest.Require(t)
	lookupIn := func() Interface {
		t.Helper()
		ns, err := nsexec.New()
		if err != nil {
			t.Fatalf("create netns: %v", err)
		}
		t.Cleanup(func() { ns.Close() })
		var ifc Interface
		if err := nsexec.Do(ns, func() (err error) { ifc, err = LookupInterface("lo"); return err }); err != nil {
			t.Fatal(err)
		}
		return ifc
	}
	a, b := lookupIn(), lookupIn()
	if a.Name != b.Name || a.Index != b.Index || a.NetnsID == b.NetnsID {
		t.Fatalf("lo in two namespaces: %+v and %+v", a, b)
	}

	var r [4]byte
	_, _ = rand.Read(r[:])
	stale := filepath.Join(LockDir, "interface-lbdtest"+hex.EncodeToString(r[:])+".lock") // as lbd named them before
	if err := os.MkdirAll(LockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(stale) })

	la, err := LockInterface(a)
	if err != nil {
		t.Fatalf("lock lo of namespace A: %v", err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale lock file %s not removed: %v", stale, err)
	}
	lb, err := LockInterface(b)
	if err != nil {
		t.Fatalf("lock lo of namespace B while A's is held: %v", err)
	}
	if l, err := LockInterface(a); err == nil {
		l.Release()
		t.Fatal("locked lo of namespace A twice")
	} else if !strings.Contains(err.Error(), "another lbd") || !strings.Contains(err.Error(), "interface lo") {
		t.Errorf("second lock of lo of namespace A: %v", err)
	}
	path := la.remove
	la.Release()
	lb.Release()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("lock file %s left after release: %v", path, err)
	}
	la, err = LockInterface(a)
	if err != nil {
		t.Fatalf("lock lo of namespace A after release: %v", err)
	}
	la.Release()
}

// TestLookupInterfaceNamesWhatExists: a typo'd interface name gives an
// error that names it and lists the interfaces that exist.
func TestLookupInterfaceNamesWhatExists(t *testing.T) {
	_, err := LookupInterface("lbdnosuch0")
	if err == nil {
		t.Fatal("found interface lbdnosuch0")
	}
	if !strings.Contains(err.Error(), `"lbdnosuch0" does not exist`) || !strings.Contains(err.Error(), "lo") || !strings.Contains(err.Error(), "ip link show") {
		t.Errorf("error: %v", err)
	}
}
