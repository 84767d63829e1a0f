package vmtest

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Kernel is one fetched and unpacked kernel of the matrix.
type Kernel struct {
	Spec    KernelSpec
	Release string    // uname -r, e.g. "6.1.0-50-amd64"
	Package Package   // the linux-image-<release> package
	Debs    []Package // every .deb unpacked for it, with its SHA256
	Dir     string    // <cache>/kernels/<release>
	Vmlinuz string
	Config  string // the kernel's build config (config-<release>)
	Modules string // directory holding kernel/ ... modules
}

// stampName records which .debs (by SHA256) an unpacked kernel came from.
const stampName = "SHA256SUMS"

// PrepareKernel resolves spec to the newest image of its suite, fetches the
// packages into cache/debs (verified against the signed index), and unpacks
// them into cache/kernels/<release> unless that tree already came from the
// same .debs.
func PrepareKernel(a *Apt, spec KernelSpec, cache string, logf func(string, ...any)) (*Kernel, error) {
	img, err := a.ResolveSuite(spec.Suite)
	if err != nil {
		return nil, err
	}
	release := strings.TrimPrefix(img.Name, "linux-image-")
	if !strings.HasPrefix(release, spec.Want) {
		return nil, fmt.Errorf("suite %s now has kernel %s, not %s*: update kernels.conf (and the expectations in bpf/features)", spec.Suite, release, spec.Want)
	}
	k := &Kernel{Spec: spec, Release: release, Package: img, Dir: filepath.Join(cache, "kernels", release)}
	debDir := filepath.Join(cache, "debs")
	pkgs := []Package{img}
	// Debian's 7.x images are split: linux-image-<release> is an empty meta
	// package depending on linux-binary (vmlinuz), linux-modules and
	// linux-base (config, System.map).
	if strings.Contains(img.Depends, "linux-binary-"+release) {
		for _, part := range []string{"linux-binary-", "linux-modules-", "linux-base-"} {
			p, err := a.show(part + release)
			if err != nil {
				return nil, err
			}
			pkgs = append(pkgs, p)
		}
	}
	var sums strings.Builder
	var debs []string
	for _, p := range pkgs {
		f, cached, err := a.Fetch(p, debDir)
		if err != nil {
			return nil, err
		}
		how := "downloaded"
		if cached {
			how = "cached"
		}
		logf("  %s %s: %s, sha256 %s", p.Name, p.Version, how, p.SHA256[:16])
		fmt.Fprintf(&sums, "%s  %s\n", p.SHA256, filepath.Base(f))
		debs = append(debs, f)
	}
	k.Debs = pkgs
	stamp := filepath.Join(k.Dir, stampName)
	if old, err := os.ReadFile(stamp); err != nil || string(old) != sums.String() {
		if err := os.RemoveAll(k.Dir); err != nil {
			return nil, err
		}
		root := filepath.Join(k.Dir, "root")
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, err
		}
		for _, f := range debs {
			if out, err := exec.Command("dpkg-deb", "-x", f, root).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("unpack %s: %w: %s", f, err, out)
			}
		}
		if err := os.WriteFile(stamp, []byte(sums.String()), 0o644); err != nil {
			return nil, err
		}
	}
	return k, k.locate()
}

// locate finds vmlinuz, config and the module directory in the unpacked
// tree: boot/vmlinuz-<r> and lib/modules/<r> up to 6.1, usr/lib/modules/<r>
// from 6.12, usr/lib/modules/<r>/{vmlinuz,config} for 7.x.
func (k *Kernel) locate() error {
	root := filepath.Join(k.Dir, "root")
	for _, d := range []string{"lib/modules/", "usr/lib/modules/"} {
		if st, err := os.Stat(filepath.Join(root, d, k.Release)); err == nil && st.IsDir() {
			k.Modules = filepath.Join(root, d, k.Release)
		}
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch d.Name() {
		case "vmlinuz-" + k.Release, "vmlinuz":
			k.Vmlinuz = p
		case "config-" + k.Release:
			k.Config = p
		case "config":
			if filepath.Base(filepath.Dir(p)) == k.Release {
				k.Config = p
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if k.Vmlinuz == "" || k.Modules == "" || k.Config == "" {
		return fmt.Errorf("kernel %s in %s: vmlinuz=%q modules=%q config=%q: package layout changed?", k.Release, root, k.Vmlinuz, k.Modules, k.Config)
	}
	return nil
}
