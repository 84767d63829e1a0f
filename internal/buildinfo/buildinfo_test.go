package buildinfo

import (
	"runtime/debug"
	"testing"
)

func vcs(rev, time, modified string) func() (*debug.BuildInfo, bool) {
	return func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: time}, {Key: "vcs.modified", Value: modified},
		}}, true
	}
}

func TestResolve(t *testing.T) {
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, tc := range []struct {
		name       string
		v, c, d    string
		read       func() (*debug.BuildInfo, bool)
		want       Info
		wantString string
	}{
		{name: "stamped wins over vcs", v: "v1.0.0", c: "abc", d: "2026-12-04T00:00:00Z", read: vcs("def", "2026-01-01T00:00:00Z", "true"),
			want: Info{Version: "v1.0.0", Commit: "abc", Date: "2026-12-04T00:00:00Z"}},
		{name: "vcs fallback", read: vcs("def", "2026-01-01T00:00:00Z", "true"),
			want: Info{Version: "dev", Commit: "def", Date: "2026-01-01T00:00:00Z", Modified: true}},
		{name: "nothing", read: none, want: Info{Version: "dev", Commit: "unknown", Date: "unknown"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := resolve(tc.v, tc.c, tc.d, tc.read)
			got.GoVersion = ""
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
