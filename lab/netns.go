package lab

import (
	"errors"
	"fmt"
	"github.com/lbd-dev/lbd/internal/nsexec"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace helpers on netlink and syscalls alone: no iproute2, ethtool or
// shell, so that the lab also runs in the kernel-matrix VMs' busybox
// guests.

const netnsDir = nsexec.NetnsDir

// createNetns makes a named network namespace (a bind mount under
// /run/netns, as `ip netns add` does, so users can `ip netns exec` into
// it) with lo up and IPv6 duplicate address detection off.
func createNetns(name string) error {
	h, err := nsexec.NewNamed(name)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := nsexec.Do(h, prepareNetns); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

func prepareNetns() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	for _, k := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
		_ = writeSysctl(k, "0") // no IPv6 at all is fine too
	}
	return nil
}

// deleteNetns removes a named namespace (unmounts and removes its name);
// a missing one is not an error, one that cannot be removed is.
func deleteNetns(name string) error {
	path := filepath.Join(netnsDir, name)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: unmount %s: %w", name, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("delete netns %s: %s is still mounted out of reach, under a later bind mount of %s (made without it being a shared mount first; see `grep %s /proc/self/mountinfo`): %w",
				name, path, netnsDir, path, err)
		}
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// netnsMounts lists the mount points under /run/netns whose names start
// with prefix, reachable or not.
func netnsMounts(prefix string) []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		fs := strings.Fields(line)
		if len(fs) > 4 && strings.HasPrefix(fs[4], filepath.Join(netnsDir, prefix)) {
			out = append(out, fs[4])
		}
	}
	return out
}

// listNetns lists the named namespaces whose names start with prefix.
func listNetns(prefix string) []string {
	ents, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// InNetns runs f on an OS thread switched into the named namespace.
// Sockets and netlink handles that f opens stay in the namespace after it
// returns, so a connection dialled in f can be used from anywhere.
func InNetns(name string, f func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	if err := nsexec.Do(h, f); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

// startIn starts cmd inside the named namespace ("" = the caller's): the
// child is forked from a thread switched into it, so it starts there.
func startIn(name string, cmd *exec.Cmd) error {
	if name == "" {
		return cmd.Start()
	}
	return InNetns(name, cmd.Start)
}

func writeSysctl(key, val string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), val, err)
	}
	return nil
}

// txChecksumOff turns off transmit checksum offload on ifname (ethtool -K
// IF tx off, through the SIOCETHTOOL ioctl). veth leaves TCP/UDP
// checksums to "hardware" (CHECKSUM_PARTIAL); a frame that then crosses
// a native XDP program loses that state and reaches the real with an
// incomplete checksum. With offload off the client writes full checksums,
// as it would on a real NIC.
func txChecksumOff(ifname string) error {
	const ethtoolSTXCSUM = 0x17
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	val := struct{ cmd, data uint32 }{cmd: ethtoolSTXCSUM, data: 0}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("turn off tx checksum offload on %s (ethtool -K %s tx off): %w", ifname, ifname, errno)
	}
	runtime.KeepAlive(&val)
	return nil
}

// attachXDPPass attaches a program that passes every frame to ifname
// (native mode, through netlink, so it stays without a process). veth
// delivers what the other end sends with XDP_TX only to a peer that has
// an XDP program; without one the frames vanish.
func attachXDPPass(ifname string) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("remove memlock rlimit: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lbdlab_pass", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load XDP pass program: %w", err)
	}
	defer prog.Close() // the attachment holds it
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, prog.FD(), nl.XDP_FLAGS_DRV_MODE); err != nil {
		return fmt.Errorf("attach XDP pass program to %s: %w", ifname, err)
	}
	return nil
}

// processes lists the pids whose command line has an argument containing
// marker: the lab's children, found even when its state file is lost.
func processes(marker string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	self := os.Getpid()
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if strings.Contains(a, marker) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }
