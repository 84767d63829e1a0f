package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestExampleConfig loads packaging/lbd.yaml, the commented default
// /etc/lbd/lbd.yaml the .deb installs: as shipped (all commented out) it
// is a valid file, and with every "# key: value" line uncommented it
// still loads and equals the defaults, so the file names only real keys
// and documents the current defaults.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../../packaging/lbd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseServe(t, string(data), "--interface", "eth0"); err != nil {
		t.Fatalf("as shipped: %v", err)
	}
	setting := regexp.MustCompile(`^# ( *[a-z0-9_]+:( |$))`)
	var lines []string
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if setting.MatchString(l) {
			l = strings.TrimPrefix(l, "# ")
			n++
		}
		lines = append(lines, l)
	}
	if n < 30 {
		t.Fatalf("only %d settings found in the example", n)
	}
	cfg, err := parseServe(t, strings.Join(lines, "\n"))
	if err != nil {
		t.Fatalf("uncommented: %v", err)
	}
	want := defaultServeConfig()
	want.Interface = "eth0"
	// %+v: an empty list in the file and a nil default print alike.
	if fmt.Sprintf("%+v", cfg) != fmt.Sprintf("%+v", want) {
		t.Errorf("the example's values differ from the defaults:\n got %+v\nwant %+v", cfg, want)
	}
}
