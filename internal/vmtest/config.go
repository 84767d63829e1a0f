// Package vmtest runs the project's test binaries inside qemu VMs booted
// with stock Debian kernels (the kernel matrix), and on the host, and turns
// the guests' results into one host result. It owns fetching and caching
// kernels (through apt, with the machine's configured Debian mirror),
// building the initramfs, booting qemu and collecting results; it knows
// nothing about what the tests check.
//
// Facts it relies on (verified on the CI machine, see
// /work/shared/docs/kernel-matrix.md): KVM is unusable there, so qemu runs
// with TCG; 9p shares work under TCG on all four kernels; Debian's 7.x
// images are split into linux-binary/linux-modules/linux-base packages.
package vmtest

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"strings"
)

//go:embed kernels.conf
var defaultConfig string

// KernelSpec names one kernel of the matrix: the newest linux-image-amd64
// of Suite, whose version must start with Want.
type KernelSpec struct {
	Name  string // short column name, e.g. "6.1"
	Suite string // Debian suite, e.g. "bookworm"
	Want  string // version prefix the resolved kernel must have, e.g. "6.1."
}

// Config is the parsed kernels.conf.
type Config struct {
	Kernels []KernelSpec
	Modules []string
}

// DefaultConfig returns the matrix from the embedded kernels.conf.
func DefaultConfig() (*Config, error) {
	return ParseConfig(strings.NewReader(defaultConfig))
}

// ParseConfig reads the kernels.conf format: "kernel NAME SUITE PREFIX" and
// "modules NAME..." lines, '#' comments.
func ParseConfig(r io.Reader) (*Config, error) {
	c := &Config{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "kernel":
			if len(f) != 4 {
				return nil, fmt.Errorf("kernels.conf line %d: want \"kernel NAME SUITE PREFIX\", got %q", n, sc.Text())
			}
			c.Kernels = append(c.Kernels, KernelSpec{Name: f[1], Suite: f[2], Want: f[3]})
		case "modules":
			c.Modules = append(c.Modules, f[1:]...)
		default:
			return nil, fmt.Errorf("kernels.conf line %d: unknown keyword %q (want kernel or modules)", n, f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(c.Kernels) == 0 {
		return nil, fmt.Errorf("kernels.conf lists no kernel")
	}
	return c, nil
}

// Select keeps only the kernels whose name is in names (all if empty).
func (c *Config) Select(names []string) error {
	if len(names) == 0 {
		return nil
	}
	var keep []KernelSpec
	for _, n := range names {
		found := false
		for _, k := range c.Kernels {
			if k.Name == n || k.Suite == n {
				keep = append(keep, k)
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no kernel %q in kernels.conf", n)
		}
	}
	c.Kernels = keep
	return nil
}
