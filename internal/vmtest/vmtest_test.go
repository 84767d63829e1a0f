package vmtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestDefaultConfig(t *testing.T) {
	c, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"bullseye": "5.10.", "bookworm": "6.1.", "trixie": "6.12.", "trixie-backports": "7."}
	if len(c.Kernels) != len(want) {
		t.Fatalf("kernels.conf has %d kernels, want %d: %+v", len(c.Kernels), len(want), c.Kernels)
	}
	for _, k := range c.Kernels {
		if want[k.Suite] != k.Want {
			t.Errorf("%s: prefix %q, want %q", k.Suite, k.Want, want[k.Suite])
		}
	}
	for _, m := range []string{"veth", "ipvlan", "ipip", "ip6_tunnel", "fou", "sch_ingress", "cls_bpf", "9p", "9pnet_virtio"} {
		if !strings.Contains(" "+strings.Join(c.Modules, " ")+" ", " "+m+" ") {
			t.Errorf("module %s missing from kernels.conf", m)
		}
	}
	if err := c.Select([]string{"6.1", "trixie"}); err != nil || len(c.Kernels) != 2 || c.Kernels[1].Name != "6.12" {
		t.Errorf("Select: %v %+v", err, c.Kernels)
	}
	if err := c.Select([]string{"4.19"}); err == nil {
		t.Error("Select of an unknown kernel: no error")
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, in := range []string{"", "kernel 5.10 bullseye\n", "kernal 5.10 bullseye 5.10.\n", "modules veth\n"} {
		if _, err := ParseConfig(strings.NewReader(in)); err == nil {
			t.Errorf("ParseConfig(%q): no error", in)
		}
	}
}

// readCPIO is an independent reader of the newc format, for the test.
func readCPIO(t *testing.T, data []byte) map[string][2]string {
	t.Helper()
	out := map[string][2]string{}
	pad := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		h := string(data[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, nameLen := field(1), field(6), field(11)
		name := string(data[off+110 : off+110+nameLen-1])
		off = pad(off + 110 + nameLen)
		body := string(data[off : off+size])
		off = pad(off + size)
		if name == "TRAILER!!!" {
			if off != len(data) {
				t.Errorf("%d bytes after the trailer", len(data)-off)
			}
			return out
		}
		out[name] = [2]string{strconv.FormatUint(uint64(mode), 8), body}
	}
}

func TestCPIO(t *testing.T) {
	var b bytes.Buffer
	c := &cpioWriter{w: &b}
	c.Dir("bin")
	c.File("bin/busybox", 0o755, []byte("12345"))
	c.Symlink("bin/sh", "busybox")
	c.File("init", 0o755, []byte("#!/bin/sh\n"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", b.Len())
	}
	got := readCPIO(t, b.Bytes())
	want := map[string][2]string{
		"bin":         {"40755", ""},
		"bin/busybox": {"100755", "12345"},
		"bin/sh":      {"120777", "busybox"},
		"init":        {"100755", "#!/bin/sh\n"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{"ip6_tunnel.ko.xz": "ip6_tunnel", "9pnet-virtio.ko": "9pnet_virtio", "fou.ko.zst": "fou"} {
		if got, ok := moduleName(in); !ok || got != want {
			t.Errorf("moduleName(%q) = %q, %v", in, got, ok)
		}
	}
	if _, ok := moduleName("modules.dep"); ok {
		t.Error("modules.dep taken for a module")
	}
}

func TestGuestScriptAndResults(t *testing.T) {
	o := RunOptions{Env: []string{"LBD_VMTEST_BREAK=it's"}, TestTimeout: 60e9, TestArgs: []string{"-test.run=X"}}
	s := guestScript(o, []TestPackage{{Name: "bpf-xdp", RelDir: "bpf/xdp"}, {Name: "root", RelDir: "."}})
	for _, want := range []string{
		`cd "/src/$2" && exec env 'CI=true' 'LBD_FEATURES_JSON=/out/features.json' 'LBD_VMTEST_GUEST=1' 'LBD_VMTEST_BREAK=it'\''s' "/tests/$1.test" '-test.v' '-test.count=1' '-test.timeout=1m0s' '-test.run=X'`,
		"run 'bpf-xdp' 'bpf/xdp'\n",
		"run 'root' '.'\n",
		"exit $rc\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("guest script lacks %q:\n%s", want, s)
		}
	}
	res := parseResults([]byte("noise\nVMTEST_RESULT bpf-xdp 0 3.50 7.25\nVMTEST_RESULT root 1 7.25 8.00\n"), "/o")
	if r := res["bpf-xdp"]; r == nil || r.Exit != 0 || r.Seconds != 3.75 || r.Output != "/o/bpf-xdp.out" {
		t.Errorf("bpf-xdp: %+v", r)
	}
	if r := res["root"]; r == nil || r.Exit != 1 {
		t.Errorf("root: %+v", r)
	}
}

func TestSourceURI(t *testing.T) {
	for in, want := range map[string]string{
		"URIs: http://mirror.example/debian":                                            "http://mirror.example/debian",
		"deb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian bookworm main": "https://mirror.example/debian",
		"deb http://mirror.example/debian bookworm main":                                "http://mirror.example/debian",
		"# deb http://mirror.example/debian bookworm main":                              "",
	} {
		got := ""
		if m := sourceURI.FindStringSubmatch(in); m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// TestShowFailuresEndsWithWhy: the output of a failed binary is shown
// without passing tests' lines, and ends with the failure lines alone,
// after the daemon's logs that follow them.
func TestShowFailuresEndsWithWhy(t *testing.T) {
	out := filepath.Join(t.TempDir(), "cmd-lbd.out")
	log := strings.Join([]string{
		"=== RUN   TestLabEndToEnd",
		"--- PASS: TestOther (0.10s)",
		"    lab_e2e_test.go:627: dial 10.0.0.1:80: connection refused",
		"2026/11/25 23:14:00 INFO removed map pin path=/sys/fs/bpf/x",
		"--- FAIL: TestLabEndToEnd (31.62s)",
		"    --- FAIL: TestLabEndToEnd/health (3.00s)",
		"FAIL",
	}, "\n")
	if err := os.WriteFile(out, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	pkgs := []TestPackage{{Name: "cmd-lbd"}, {Name: "api"}}
	cols := []*Column{{Name: "6.1", Release: "6.1.0-50-amd64", Results: map[string]*PkgResult{
		"cmd-lbd": {Exit: 1, Output: out}, "api": {Exit: 0},
	}}}
	var b strings.Builder
	ShowFailures(&b, pkgs, cols)
	got := b.String()
	if strings.Contains(got, "TestOther") || strings.Contains(got, "=== RUN") {
		t.Errorf("passing tests' lines shown:\n%s", got)
	}
	want := strings.Join([]string{
		"----- why, in brief",
		"cmd-lbd on 6.1:",
		"    lab_e2e_test.go:627: dial 10.0.0.1:80: connection refused",
		"--- FAIL: TestLabEndToEnd (31.62s)",
		"    --- FAIL: TestLabEndToEnd/health (3.00s)",
	}, "\n") + "\n"
	if !strings.HasSuffix(got, want) {
		t.Errorf("output does not end with the brief:\n%s\nwant suffix:\n%s", got, want)
	}
}

// TestInt3OopsWordings: the TCG int3 artefact is recognised as 6.x and
// 7.x word it and as 5.10 does; a trace line naming exc_int3 alone is not
// the oops line.
func TestInt3OopsWordings(t *testing.T) {
	for line, want := range map[string]bool{
		"[  322.555850] int3: 0000 [#1] SMP NOPTI":                   true,
		"[   41.102934] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI":     true,
		"[  322.555850]  ? exc_int3+0x114/0x130":                     false,
		"[  322.587580] Kernel panic - not syncing: Fatal exception": false,
	} {
		if got := tcgInt3Oops.MatchString(line); got != want {
			t.Errorf("%q: matched %v, want %v", line, got, want)
		}
	}
}
