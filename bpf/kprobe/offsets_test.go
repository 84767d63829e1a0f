package kprobe

import (
	"github.com/lbd-dev/lbd/internal/privtest"
	"os"
	"testing"
)

func TestKernelOffsets(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		privtest.Unavailable(t, "no kernel BTF (/sys/kernel/btf/vmlinux)")
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
