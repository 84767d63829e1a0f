package control

import (
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/lb"
)

// TestDescription: a VIP's description is plain text (markup allowed),
// at most MaxDescriptionLen bytes of UTF-8 without control characters;
// it survives the state file, and changing it alone saves the state but
// leaves the datapath (flags and ring) alone.
func TestDescription(t *testing.T) {
	for _, tc := range []struct {
		d  string
		ok bool
	}{
		{"", true},
		{`web front end <img src=x onerror="alert(1)"> & "co"`, true},
		{"café — 東京", true},
		{strings.Repeat("x", MaxDescriptionLen), true},
		{strings.Repeat("é", MaxDescriptionLen/2), true},
		{strings.Repeat("x", MaxDescriptionLen+1), false},
		{strings.Repeat("é", MaxDescriptionLen/2) + "x", false},
		{"two\nlines", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"esc\x1b[31m", false},
		{"bad \xff utf-8", false},
	} {
		c, dp, st := newTestController(t)
		_, err := c.CreateVIP(VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1)}, Description: tc.d})
		if tc.ok {
			if err != nil {
				t.Errorf("description %q refused: %v", tc.d, err)
			} else if st.saved[vipA].Description != tc.d {
				t.Errorf("description %q saved as %q", tc.d, st.saved[vipA].Description)
			}
			continue
		}
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Field != "description" {
			t.Errorf("description %q: got %v, want an InvalidError on description", tc.d, err)
		}
		if len(dp.VIPMap) != 0 || st.saves != 0 {
			t.Errorf("description %q: refused, yet the datapath or state changed", tc.d)
		}
	}

	c, dp, st := newTestController(t)
	if _, err := c.CreateVIP(VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 2)}, Description: "first"}); err != nil {
		t.Fatal(err)
	}
	calls, saves := len(dp.Calls), st.saves
	d := "second <b>bold</b>"
	v, err := c.UpdateVIP(vipA, VIPUpdate{Description: &d})
	if err != nil || v.Description != d {
		t.Fatalf("update description: %+v %v", v, err)
	}
	if st.saves != saves+1 || st.saved[vipA].Description != d {
		t.Errorf("description change not saved: %d saves, saved %q", st.saves-saves, st.saved[vipA].Description)
	}
	if len(dp.Calls) != calls {
		t.Errorf("a description change touched the datapath: %v", dp.Calls[calls:])
	}
	// the same VIP with another description, through PutVIP
	cur, _ := c.VIP(vipA)
	cur.Description = "third"
	if _, _, err := c.PutVIP(*cur); err != nil {
		t.Fatal(err)
	}
	if len(dp.Calls) != calls {
		t.Errorf("a description change through PutVIP touched the datapath: %v", dp.Calls[calls:])
	}
	// with another change too, the datapath follows
	d = "fourth"
	if v, err = c.UpdateVIP(vipA, VIPUpdate{SetFlags: lb.VIPSticky, Description: &d}); err != nil || v.Description != d || !v.Flags.Has(lb.VIPSticky) {
		t.Fatalf("update description and sticky: %+v %v", v, err)
	}
	if !slices.ContainsFunc(dp.Calls[calls:], func(op string) bool { return strings.HasPrefix(op, "SetVIPFlags") }) {
		t.Errorf("sticky did not reach the datapath: %v", dp.Calls[calls:])
	}
	checkInSync(t, c, dp)
	if got, _ := c.VIP(vipA); got.Description != d {
		t.Errorf("description %q, want %q", got.Description, d)
	}

	// the state file: kept, and absent when empty (files of older lbds
	// have none and load)
	s, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vips := maps.Clone(st.saved)
	vipB2 := &VIP{Key: vipB}
	vipB2.normalize()
	vips[vipB] = vipB2
	if err := s.Save(vips); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(s.Path())
	if strings.Count(string(raw), `"description"`) != 1 {
		t.Errorf("state file:\n%s\nwant one description (none for the VIP without)", raw)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got[vipA].Description != d || got[vipB].Description != "" {
		t.Errorf("loaded descriptions %q and %q", got[vipA].Description, got[vipB].Description)
	}
}
