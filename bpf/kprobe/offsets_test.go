package kprobe

import (
	"os"
	"testing"
)

func TestKernelOffsets(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("no kernel BTF")
	}
	o, err := KernelOffsets()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BTF offsets: %s", o)
	if o.Daddr != 0 || o.Saddr != 4 || o.Dport != 12 || o.Sport != 14 {
		t.Errorf("sock_common's first fields moved: %s", o)
	}
}
