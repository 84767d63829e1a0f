package vmtest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// suites whose package lists the private apt state knows. Only "main".
var aptSuites = []string{"bullseye", "bookworm", "bookworm-backports", "trixie", "trixie-backports"}

// Apt is apt-get/apt-cache with private state under a cache directory: the
// machine's own lists and pkgcache stay untouched. The mirror is the one the
// machine already uses (read from /etc/apt at run time, never written into
// the project); only the suites differ.
type Apt struct {
	dir  string   // <cache>/apt
	opts []string // -o options pointing apt at dir
}

// NewApt prepares private apt state under cache/apt and writes its
// sources.list from the machine's configured Debian mirror.
func NewApt(cache string) (*Apt, error) {
	dir := filepath.Join(cache, "apt")
	for _, d := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	uri, err := debianMirror()
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, s := range aptSuites {
		fmt.Fprintf(&b, "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n", uri, s)
	}
	src := filepath.Join(dir, "sources.list")
	if err := os.WriteFile(src, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return &Apt{dir: dir, opts: []string{
		"-o", "Dir::Etc::sourcelist=" + src,
		"-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::State::Lists=" + filepath.Join(dir, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		// Debian images often set these to "" (no cache): then every
		// apt-cache call re-parses five suites' lists (~1.5 s each).
		"-o", "Dir::Cache::pkgcache=" + filepath.Join(dir, "cache", "pkgcache.bin"),
		"-o", "Dir::Cache::srcpkgcache=" + filepath.Join(dir, "cache", "srcpkgcache.bin"),
		// apt drops to _apt for downloads, which cannot write into our
		// cache directory; we run as root anyway.
		"-o", "APT::Sandbox::User=root",
	}}, nil
}

var sourceURI = regexp.MustCompile(`^(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(https?://\S+)`)

// debianMirror returns the first non-security Debian archive URI of the
// machine's apt configuration (one-line .list or deb822 .sources).
func debianMirror() (string, error) {
	files := []string{"/etc/apt/sources.list"}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			m := sourceURI.FindStringSubmatch(strings.TrimSpace(line))
			if m != nil && !strings.Contains(m[1], "security") {
				return m[1], nil
			}
		}
	}
	return "", fmt.Errorf("no Debian mirror in /etc/apt/sources.list{,.d}: the kernel matrix fetches its kernels through apt")
}

func (a *Apt) run(dir, tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(tool, append(append([]string{}, a.opts...), args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Update refreshes the private package lists (signatures checked by apt).
func (a *Apt) Update() error {
	_, err := a.run("", "apt-get", "-qq", "update")
	return err
}

// Package is one binary package version from the signed index.
type Package struct {
	Name, Version, SHA256 string
	Depends               string
}

// show returns the index stanza of name=version (or the candidate).
func (a *Apt) show(spec string) (Package, error) {
	out, err := a.run("", "apt-cache", "show", "--no-all-versions", spec)
	if err != nil {
		return Package{}, err
	}
	var p Package
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			if sc.Text() == "" && p.Name != "" {
				break // first stanza only
			}
			continue
		}
		switch k {
		case "Package":
			p.Name = v
		case "Version":
			p.Version = v
		case "SHA256":
			p.SHA256 = v
		case "Depends":
			p.Depends = v
		}
	}
	if p.Name == "" || p.SHA256 == "" {
		return p, fmt.Errorf("apt-cache show %s: no package stanza", spec)
	}
	return p, nil
}

var imageDep = regexp.MustCompile(`linux-image-[0-9][^ ,]*`)

// ResolveSuite returns the kernel image package that linux-image-amd64
// points at in suite (the newest kernel there).
func (a *Apt) ResolveSuite(suite string) (Package, error) {
	out, err := a.run("", "apt-cache", "madison", "linux-image-amd64")
	if err != nil {
		return Package{}, err
	}
	// " linux-image-amd64 | 6.1.176-1 | <mirror> bookworm/main amd64 Packages"
	var versions []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) == 3 && strings.Contains(f[2], " "+suite+"/main ") {
			versions = append(versions, strings.TrimSpace(f[1]))
		}
	}
	if len(versions) == 0 {
		return Package{}, fmt.Errorf("no linux-image-amd64 in suite %s (is %s in the private sources list?)", suite, suite)
	}
	meta, err := a.show("linux-image-amd64=" + versions[0]) // madison lists newest first
	if err != nil {
		return Package{}, err
	}
	img := imageDep.FindString(meta.Depends)
	if img == "" {
		return Package{}, fmt.Errorf("linux-image-amd64 %s depends on no linux-image-<version>: %q", versions[0], meta.Depends)
	}
	return a.show(img)
}

// Fetch makes sure dir holds the .deb of p, verified against the SHA256 of
// the signed index; a cached .deb that matches is reused, a mismatching one
// is downloaded again. Returns the .deb's path.
func (a *Apt) Fetch(p Package, dir string) (string, bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	glob := filepath.Join(dir, p.Name+"_*.deb")
	find := func() string {
		m, _ := filepath.Glob(glob)
		sort.Strings(m)
		for _, f := range m {
			if sum, err := fileSHA256(f); err == nil && sum == p.SHA256 {
				return f
			}
		}
		return ""
	}
	if f := find(); f != "" {
		return f, true, nil
	}
	old, _ := filepath.Glob(glob)
	for _, f := range old {
		os.Remove(f) // stale version or corrupted
	}
	if _, err := a.run(dir, "apt-get", "-qq", "download", p.Name+"="+p.Version); err != nil {
		return "", false, err
	}
	if f := find(); f != "" {
		return f, false, nil
	}
	return "", false, fmt.Errorf("downloaded %s %s but no file in %s has SHA256 %s", p.Name, p.Version, dir, p.SHA256)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
