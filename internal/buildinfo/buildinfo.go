// Package buildinfo says which lbd this is: the version, commit and build
// date stamped at build time by the Makefile with
//
//	-ldflags "-X github.com/lbd-dev/lbd/internal/buildinfo.version=v1.2.3 \
//	          -X github.com/lbd-dev/lbd/internal/buildinfo.commit=abc123 \
//	          -X github.com/lbd-dev/lbd/internal/buildinfo.date=2026-12-04T15:30:00Z"
//
// A plain `go build` from a git checkout has no such flags; the commit and
// date then come from the VCS stamp Go writes into every binary
// (debug.ReadBuildInfo's vcs.revision and vcs.time).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
)

// Set with -ldflags -X; empty when not stamped.
var (
	version string
	commit  string
	date    string
)

// Info is the identity of this binary.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Date    string `json:"build_date"`
	// Modified: built from a checkout with uncommitted changes (known
	// only from the VCS stamp).
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
}

var (
	once sync.Once
	info Info
)

// Get returns the build's identity: the stamped values, else the VCS
// stamp, else "dev" and "unknown".
func Get() Info {
	once.Do(func() { info = resolve(version, commit, date, debug.ReadBuildInfo) })
	return info
}

func resolve(v, c, d string, read func() (*debug.BuildInfo, bool)) Info {
	i := Info{Version: v, Commit: c, Date: d, GoVersion: runtime.Version()}
	if bi, ok := read(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.time":
				if i.Date == "" {
					i.Date = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true" && c == ""
			}
		}
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version // go install github.com/lbd-dev/lbd/cmd/lbd@v1.2.3
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.Date == "" {
		i.Date = "unknown"
	}
	return i
}

// String is the one-line form `lbd version` prints.
func (i Info) String() string {
	c := i.Commit
	if i.Modified {
		c += "-dirty"
	}
	return fmt.Sprintf("%s (commit %s, built %s, %s)", i.Version, c, i.Date, i.GoVersion)
}
