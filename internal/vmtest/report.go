package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/bpf/features"
)

// Summary writes the package x column table and the wall time per column.
func Summary(w io.Writer, pkgs []TestPackage, cols []*Column) {
	fmt.Fprintf(w, "\n%-24s", "package")
	for _, c := range cols {
		fmt.Fprintf(w, " %-14s", c.Name)
	}
	fmt.Fprintln(w)
	for _, p := range pkgs {
		fmt.Fprintf(w, "%-24s", p.Name)
		for _, c := range cols {
			fmt.Fprintf(w, " %-14s", cell(c.Results[p.Name]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%-24s", "wall time")
	for _, c := range cols {
		fmt.Fprintf(w, " %-14s", fmt.Sprintf("%.1fs", c.Wall.Seconds()))
	}
	fmt.Fprintln(w)
	for _, c := range cols {
		fmt.Fprintf(w, "  %-6s %s", c.Name, c.Release)
		if c.Err != nil {
			fmt.Fprintf(w, "  ERROR: %v", c.Err)
		}
		fmt.Fprintln(w)
	}
}

func cell(r *PkgResult) string {
	switch {
	case r == nil:
		return "not run"
	case r.Exit != 0:
		return fmt.Sprintf("FAIL %.1fs", r.Seconds)
	default:
		return fmt.Sprintf("ok %.1fs", r.Seconds)
	}
}

// briefLine matches what says why a test failed: a t.Error/t.Fatal line
// (file.go:N: ...), a --- FAIL line, or a panic.
var briefLine = regexp.MustCompile(`^\s*(\S+\.go:\d+: |--- FAIL|panic: )`)

// briefMax caps the brief lines shown per failed binary.
const briefMax = 40

// ShowFailures prints, for every failed binary, its output without the
// lines of passing tests; for a VM that died, the tail of its console.
// It ends with the failure lines alone, so that a reader of the last
// lines (a CI summary) sees why, not only the daemon's logs.
func ShowFailures(w io.Writer, pkgs []TestPackage, cols []*Column) {
	var brief []string
	defer func() {
		if len(brief) > 0 {
			fmt.Fprintf(w, "\n----- why, in brief\n%s\n", strings.Join(brief, "\n"))
		}
	}()
	for _, c := range cols {
		for _, p := range pkgs {
			r := c.Results[p.Name]
			if r == nil || r.Exit == 0 {
				continue
			}
			fmt.Fprintf(w, "\n----- %s on %s (%s): exit %d, full output in %s\n", p.Name, c.Name, c.Release, r.Exit, r.Output)
			f, err := os.Open(r.Output)
			if err != nil {
				fmt.Fprintln(w, err)
				continue
			}
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			n := 0
			for sc.Scan() {
				l := sc.Text()
				t := strings.TrimSpace(l)
				if strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- PASS") || strings.HasPrefix(t, "--- SKIP") {
					continue
				}
				fmt.Fprintln(w, l)
				if briefLine.MatchString(l) {
					if n == 0 {
						brief = append(brief, fmt.Sprintf("%s on %s:", p.Name, c.Name))
					}
					if n++; n <= briefMax {
						brief = append(brief, l)
					}
				}
			}
			f.Close()
			if n > briefMax {
				brief = append(brief, fmt.Sprintf("    (%d more)", n-briefMax))
			}
		}
		if c.Err != nil && c.Console != "" {
			fmt.Fprintf(w, "\n----- %s (%s): %v; console tail:\n", c.Name, c.Release, c.Err)
			if data, err := os.ReadFile(c.Console); err == nil {
				lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
				if len(lines) > 60 {
					lines = lines[len(lines)-60:]
				}
				fmt.Fprintln(w, strings.Join(lines, "\n"))
			}
		}
	}
}

// FeatureTable renders the columns' bpf/features reports as a Markdown
// table (feature x kernel); columns without a report show "?".
func FeatureTable(cols []*Column) string {
	var reports []*features.Report
	var rows []features.Row
	for _, c := range cols {
		r, err := features.ReadJSON(c.Features)
		if err != nil {
			reports = append(reports, nil)
			continue
		}
		reports = append(reports, &r)
		if rows == nil {
			rows = r.Rows()
		}
	}
	if rows == nil {
		return "(no bpf/features report was written: did the features test run?)\n"
	}
	var b strings.Builder
	b.WriteString("| |")
	for _, c := range cols {
		fmt.Fprintf(&b, " %s |", c.Name)
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---|")
	}
	b.WriteString("\n| `uname -r` |")
	for _, c := range cols {
		fmt.Fprintf(&b, " %s |", c.Release)
	}
	b.WriteString("\n")
	var notes []string
	for i, row := range rows {
		fmt.Fprintf(&b, "| %s |", row.Name)
		for j, r := range reports {
			if r == nil {
				b.WriteString(" ? |")
				continue
			}
			got := r.Rows()[i]
			v := got.Value
			if got.Why != "" {
				notes = append(notes, fmt.Sprintf("%s on %s: `%s`", row.Name, cols[j].Name, got.Why))
				v += fmt.Sprintf(" [%d]", len(notes))
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		b.WriteString("\n")
	}
	if len(notes) > 0 {
		b.WriteString("\nWhy a feature is missing (the kernel's own error):\n\n")
		for i, n := range notes {
			fmt.Fprintf(&b, "%d. %s\n", i+1, n)
		}
	}
	return b.String()
}

// TestTable renders the package x column results as Markdown.
func TestTable(pkgs []TestPackage, cols []*Column) string {
	var b strings.Builder
	b.WriteString("| package |")
	for _, c := range cols {
		fmt.Fprintf(&b, " %s |", c.Name)
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, p := range pkgs {
		fmt.Fprintf(&b, "| %s |", p.ImportPath)
		for _, c := range cols {
			fmt.Fprintf(&b, " %s |", cell(c.Results[p.Name]))
		}
		b.WriteString("\n")
	}
	b.WriteString("| wall time (boot to poweroff) |")
	for _, c := range cols {
		fmt.Fprintf(&b, " %.0fs |", c.Wall.Seconds())
	}
	b.WriteString("\n")
	return b.String()
}

// RunInfo describes the machine and the run, for the generated page.
type RunInfo struct {
	Total     time.Duration
	CPUs      int
	LoadStart string // /proc/loadavg (1, 5, 15 min) when the run started
	LoadEnd   string
}

// LoadAvg returns the first three fields of /proc/loadavg: timings of a
// run on a shared machine mean little without them.
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// WriteDoc writes docs/kernels.md from a run.
func WriteDoc(path string, pkgs []TestPackage, cols []*Column, kernels []*Kernel, info RunInfo) error {
	var b strings.Builder
	b.WriteString(docHead)
	fmt.Fprintf(&b, "Generated by `make kernels-doc` on %s: %d CPUs, qemu TCG, whole run %.0f s\n"+
		"(fetch, build, host and every VM; load average %s at the start, %s at the end).\n\n",
		time.Now().UTC().Format("2006-01-02"), info.CPUs, info.Total.Seconds(), info.LoadStart, info.LoadEnd)
	b.WriteString("## Kernels\n\n| column | suite | package | version |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| host | (this machine) | | %s |\n", cols[0].Release)
	for _, k := range kernels {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", k.Spec.Name, k.Spec.Suite, k.Package.Name, k.Package.Version)
	}
	b.WriteString("\n## What each kernel has, and what lbd chooses (bpf/features)\n\n")
	b.WriteString("Rows with → are the mechanisms lbd uses on that kernel, as `features.Probe` derives them from the rows above; the packages that attach things (tc, the tracer, `lbd real setup`, the lab) make the same choice by trying, in the same order.\n\n")
	b.WriteString(FeatureTable(cols))
	b.WriteString("\n## Tests per kernel (seconds inside the guest, TCG)\n\n")
	b.WriteString(TestTable(pkgs, cols))
	b.WriteString(docTail)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

const docHead = `# Kernel support

lbd supports Linux 5.10 and later with BTF. Every package's tests run on
the host and, in qemu VMs, on stock Debian kernels: the newest kernel of
bullseye (5.10), bookworm (6.1), trixie (6.12) and trixie-backports (7.x).
The kernels are chosen in one place, ` + "`internal/vmtest/kernels.conf`" + `.
This page is generated from one such run; do not edit it by hand.

`

const docTail = `
## Running the matrix locally

As root on Debian (bookworm or later), after ` + "`bash scripts/install-deps.sh`" + `
(qemu-system-x86, busybox-static, xz-utils, zstd):

` + "```sh" + `
make test-kernels                          # host + every kernel; fails if any test fails anywhere
make test-kernels VMTEST_FLAGS='-kernels 5.10,6.1 -host=false'
make test-kernels VMTEST_FLAGS='-run TestProbe -v'   # one test, VM consoles shown
make kernels-doc                           # the same run, then rewrite this page
` + "```" + `

What it does (` + "`internal/vmtest`" + `, run by ` + "`go run ./internal/vmtest/matrix`" + `):

1. Resolves each suite's newest ` + "`linux-image-amd64`" + ` through apt with private
   state (the machine's configured mirror, read at run time), prints the
   versions, downloads the packages into the cache (` + "`$LBD_VMK`" + `, default
   ` + "`/var/cache/lbd-vmk`" + `; apt checks the signatures, and a cached .deb is
   reused only while its SHA256 matches the signed index), and unpacks them.
2. Builds an initramfs per kernel: static busybox, an ` + "`/init`" + ` script, and
   the modules the tests need, dependencies first (from each module's
   ` + "`.modinfo`" + `; the .debs ship no modules.dep).
3. Compiles every package that has tests (` + "`go list`" + `) into a static test
   binary (` + "`CGO_ENABLED=0 go test -c`" + `).
4. Runs them on the host, then boots each kernel (qemu, TCG: KVM is not
   usable on the CI machines) and runs them inside as root with
   ` + "`CI=true`" + `, from the package's directory (the repository is a
   read-only 9p share, results come back through a writable one).
5. Prints a package × kernel table; any failing binary, in any guest,
   fails the run and its output is shown. Logs stay in ` + "`$LBD_VMK/run/`" + `.

To add a kernel, add a ` + "`kernel`" + ` line to ` + "`kernels.conf`" + ` and a row to the
expectation table in ` + "`bpf/features/features_test.go`" + `.
`
