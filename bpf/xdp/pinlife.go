package xdp

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// PinsOutliveMountNamespace says whether the pins in dir (a directory on
// a bpf filesystem) outlive this process's mount namespace. A bpf
// filesystem lives as long as one of its mounts does: one mounted in a
// private mount namespace — as `lbd serve` does when started under `ip
// netns exec`, which remounts /sys for the command — goes away, with
// every pin in it, when the last process of that namespace exits; the
// XDP program is then detached and the connection table lost. The pins
// outlive us if PID 1 (the machine's or the container's init) sees the
// same bpf filesystem, or if we share its mount namespace. When it cannot
// tell (no /proc/1 to read), it says yes: ok is true and why explains.
func PinsOutliveMountNamespace(dir string) (ok bool, why string, err error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false, "", fmt.Errorf("pin directory %s: %w", dir, err)
	}
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	pid1, err2 := os.Readlink("/proc/1/ns/mnt")
	if err1 == nil && err2 == nil && self == pid1 {
		return true, "same mount namespace as PID 1", nil
	}
	mounts, err := os.ReadFile("/proc/1/mountinfo")
	if err != nil {
		return true, "cannot read PID 1's mounts (" + err.Error() + "); assuming the pins persist", nil
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	for _, line := range strings.Split(string(mounts), "\n") {
		// "36 25 0:33 / /sys/fs/bpf rw,... shared:9 - bpf bpf rw": the
		// third field is the filesystem's device, the one after "-" its type.
		fs := strings.Fields(line)
		sep := -1
		for i, f := range fs {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fs) > 4 && sep > 0 && sep+1 < len(fs) && fs[2] == dev && fs[sep+1] == "bpf" {
			return true, "PID 1 sees the same bpf filesystem at " + fs[4], nil
		}
	}
	return false, fmt.Sprintf("the bpf filesystem of %s is mounted only in this process's private mount namespace (%s; PID 1's is %s), "+
		"as under `ip netns exec`, which remounts /sys: the pins, and with them the XDP program and the connection table, "+
		"go away when the last process of this mount namespace exits", dir, self, pid1), nil
}
