package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	_ "embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed guest_init.sh
var guestInit []byte

// busyboxPath is Debian busybox-static's binary (the plain busybox package
// is dynamically linked and would find no libc in the guest).
const busyboxPath = "/bin/busybox"

// Initramfs is the guest's root: static busybox, /init, and the modules in
// load order. It holds no test binaries: those come over 9p.
type Initramfs struct {
	Path   string
	Loaded []string // modules, in load order
	Absent []string // wanted but neither a .ko nor built in
}

// BuildInitramfs writes <k.Dir>/initramfs.cpio.gz with the given modules
// and their dependencies (read from each module's .modinfo, since the
// .debs ship no modules.dep: depmod runs in postinst).
func BuildInitramfs(k *Kernel, modules []string) (*Initramfs, error) {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w (apt-get install busybox-static)", busyboxPath, err)
	}
	if f, err := elf.NewFile(bytes.NewReader(bb)); err != nil {
		return nil, fmt.Errorf("%s: %w", busyboxPath, err)
	} else if f.Section(".interp") != nil {
		return nil, fmt.Errorf("%s is dynamically linked: install busybox-static, not busybox", busyboxPath)
	}
	applets, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}

	index := map[string]string{} // module name (with _) -> file
	err = filepath.WalkDir(k.Modules, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if name, ok := moduleName(d.Name()); ok {
			index[name] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(k.Modules, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(data)) {
			if name, ok := moduleName(filepath.Base(l)); ok {
				builtin[name] = true
			}
		}
	}

	ir := &Initramfs{Path: filepath.Join(k.Dir, "initramfs.cpio.gz")}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	c := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "root", "src", "tests", "out", "lib", "lib/modules"} {
		c.Dir(d)
	}
	c.File("bin/busybox", 0o755, bb)
	for _, a := range strings.Fields(string(applets)) {
		// --list includes "busybox" itself: linking it would replace the
		// binary by a link to itself (then: "No working init found").
		if a != "busybox" {
			c.Symlink("bin/"+a, "busybox")
		}
	}
	c.File("init", 0o755, guestInit)

	seen := map[string]bool{}
	var load func(name string) error
	load = func(name string) error {
		name = strings.ReplaceAll(name, "-", "_")
		if seen[name] {
			return nil
		}
		seen[name] = true
		f, ok := index[name]
		if !ok {
			if !builtin[name] {
				ir.Absent = append(ir.Absent, name)
			}
			return nil
		}
		ko, err := readModule(f)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(ko)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, d := range deps {
			if err := load(d); err != nil {
				return err
			}
		}
		c.File("lib/modules/"+name+".ko", 0o644, ko)
		ir.Loaded = append(ir.Loaded, name)
		return nil
	}
	for _, m := range modules {
		if err := load(m); err != nil {
			return nil, err
		}
	}
	c.File("lib/modules/order", 0o644, []byte(strings.Join(ir.Loaded, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return ir, os.WriteFile(ir.Path, buf.Bytes(), 0o644)
}

// moduleName turns "ip6_tunnel.ko.xz" (or ip6-tunnel.ko) into "ip6_tunnel".
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if base, ok := strings.CutSuffix(file, ext); ok {
			return strings.ReplaceAll(base, "-", "_"), true
		}
	}
	return "", false
}

// readModule returns the module's ELF, decompressed: Debian's busybox
// insmod reads .ko.xz, but not every build does and none reads .ko.zst.
func readModule(path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".zst"):
		tool = "zstd"
	case strings.HasSuffix(path, ".gz"):
		tool = "gzip"
	default:
		return os.ReadFile(path)
	}
	out, err := exec.Command(tool, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w (apt-get install xz-utils zstd)", tool, path, err)
	}
	return out, nil
}

// moduleDepends reads "depends=a,b" from the module's .modinfo section.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Split(splitNUL)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "depends="); ok {
			if v == "" {
				return nil, nil
			}
			return strings.Split(v, ","), nil
		}
	}
	return nil, nil
}

func splitNUL(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
