package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// TestPackage is one Go package with tests, compiled into a static binary.
type TestPackage struct {
	ImportPath string
	RelDir     string // directory relative to the module root (tests run there: testdata/)
	Name       string // binary name: RelDir with '/' -> '-', e.g. "bpf-xdp"
	Binary     string // path of <Name>.test
}

// privtestImport marks the tests that need a kernel: they use privtest.
const privtestImport = "github.com/lbd-dev/lbd/internal/privtest"

// ListTestPackages returns the packages under root whose tests need a
// kernel (they import internal/privtest), as `go list` sees them: new
// packages join the matrix without edits here. Pure Go packages are not
// the kernels' business; make test runs them on the host.
func ListTestPackages(root string) ([]TestPackage, error) {
	cmd := exec.Command("go", "list", "-f",
		`{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}} {{join .TestImports ","}},{{join .XTestImports ","}}{{end}}`, "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, stderr.String())
	}
	var pkgs []TestPackage
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 3 || !slices.Contains(strings.Split(fields[2], ","), privtestImport) {
			continue
		}
		ip, dir := fields[0], fields[1]
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return nil, err
		}
		pkgs = append(pkgs, TestPackage{ImportPath: ip, RelDir: rel, Name: strings.ReplaceAll(rel, "/", "-")})
	}
	return pkgs, nil
}

// BuildTests compiles each package's tests into binDir/<Name>.test with
// CGO_ENABLED=0, so the binaries need nothing from the guest but a kernel.
// Two compilations at a time (CI has two cores).
func BuildTests(root, binDir string, pkgs []TestPackage) error {
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
		sem  = make(chan struct{}, 2)
	)
	for i := range pkgs {
		p := &pkgs[i]
		p.Binary = filepath.Join(binDir, p.Name+".test")
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cmd := exec.Command("go", "test", "-c", "-o", p.Binary, "./"+p.RelDir)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("go test -c ./%s: %v\n%s", p.RelDir, err, out))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("compiling tests:\n%s", strings.Join(errs, "\n"))
	}
	return nil
}
