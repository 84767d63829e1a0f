package tc

import (
	"net/netip"
	"testing"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// TestAttachHCTunnelReplacesLeftover: a second AttachHCTunnel on the
// same interface (a restarted lbd) removes the first one's program, so
// exactly one encapsulation runs on the egress; Close leaves none.
func TestAttachHCTunnelReplacesLeftover(t *testing.T) {
	privtest.Require(t)
	ns := vethNS(t)
	cfg := HCConfig{SourceV4: netip.MustParseAddr("10.0.0.1")}
	var first, second *HCTunnel
	names := func() (hc []AttachedProgram) {
		t.Helper()
		ns.must(t, func() error {
			all, err := Attached("vA", Egress)
			for _, p := range all {
				if p.Name == hcProgName {
					hc = append(hc, p)
				}
			}
			return err
		})
		return hc
	}
	ns.must(t, func() error {
		var err error
		first, err = AttachHCTunnel("vA", 16, cfg)
		return err
	})
	defer first.Close()
	if got := names(); len(got) != 1 || got[0].ID != progID(t, first.Program()) {
		t.Fatalf("after the first attach: %+v", got)
	}
	ns.must(t, func() error {
		var err error
		second, err = AttachHCTunnel("vA", 16, cfg)
		return err
	})
	if got := names(); len(got) != 1 || got[0].ID != progID(t, second.Program()) {
		t.Fatalf("after the second attach: want only the second program, got %+v", got)
	}
	ns.must(t, func() error { second.Close(); return nil })
	if got := names(); len(got) != 0 {
		t.Fatalf("after Close: %+v", got)
	}
}
