package cenumtest

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseSource(t *testing.T) {
	src := `
/* enum other { A = 9 }; in a comment is not read */
enum lbd_x {
	LBD_X_A = 0,        /* first, = 5 in a comment */
	LBD_X_B,            // second
	LBD_X_C = 0x10u,
	LBD_X_D,
	LBD_X_E = 1 << 3,
	LBD_X_F = (1U << 4) | LBD_X_E,
	LBD_X_MAX
};
enum lbd_y { LBD_Y_ONE = 1 };`
	got, err := ParseSource(src, "lbd_x")
	if err != nil {
		t.Fatal(err)
	}
	want := []Member{
		{"LBD_X_A", 0}, {"LBD_X_B", 1}, {"LBD_X_C", 16}, {"LBD_X_D", 17},
		{"LBD_X_E", 8}, {"LBD_X_F", 24}, {"LBD_X_MAX", 25},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if n := Names(got, "LBD_X_", "LBD_X_MAX"); !slices.Equal(n, []string{"a", "b", "c", "d", "e", "f"}) {
		t.Errorf("Names = %v", n)
	}
	y, err := ParseSource(src, "lbd_y")
	if err != nil || !slices.Equal(y, []Member{{"LBD_Y_ONE", 1}}) {
		t.Errorf("lbd_y = %v, %v", y, err)
	}
}

func TestParseSourceErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{`enum a { A = 1 };`, "enum lbd not found"},
		{`enum lbd { };`, "no members"},
		{`enum lbd { A = B };`, "member A: B is not an earlier member"},
		{`enum lbd { A = 1 + 2 };`, "member A: value \"1 + 2\": cannot read"},
		{`enum lbd { A = (1 << 2 };`, "missing )"},
		{`enum lbd { A, A };`, "member A listed twice"},
		{`enum lbd { 3A };`, "not a member name"},
		{`enum lbd { A = 1 << 70 };`, "shift by 70"},
	} {
		_, err := ParseSource(c.src, "lbd")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", c.src, err, c.want)
		}
	}
}

// TestCheckSequence: a matching list passes, and each kind of mismatch
// is reported; CheckSequence reads the header.
func TestCheckSequence(t *testing.T) {
	ms, err := ParseSource("enum s { S_A, S_B, S_GAP = 5, S_MAX };", "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		names []string
		skip  []string
		fails []string
	}{
		{[]string{"a", "b", "gap"}, []string{"S_MAX"}, []string{"S_GAP = 5, Go indexes it as 2"}},
		{[]string{"a", "b"}, []string{"S_GAP", "S_MAX"}, nil},
		{[]string{"a", "c"}, []string{"S_GAP", "S_MAX"}, []string{`header S_B ("b"), Go "c"`}},
		{[]string{"a"}, []string{"S_GAP", "S_MAX"}, []string{"has 2 members, Go has 1 names"}},
	} {
		errs := sequenceErrors(ms, "s", "S_", c.names, c.skip)
		if len(errs) != len(c.fails) {
			t.Errorf("%v skip %v: errors %q, want %d", c.names, c.skip, errs, len(c.fails))
			continue
		}
		for i, f := range c.fails {
			if !strings.Contains(errs[i], f) {
				t.Errorf("%v: error %q, want it to say %q", c.names, errs[i], f)
			}
		}
	}
	path := t.TempDir() + "/h.h"
	if err := os.WriteFile(path, []byte("enum s { S_A, S_B, S_MAX };"), 0o644); err != nil {
		t.Fatal(err)
	}
	CheckSequence(t, path, "s", "S_", []string{"a", "b"}, "S_MAX")
}

type color int

func (c color) String() string { return [...]string{"red", "green", "blue"}[c] }

func TestStringers(t *testing.T) {
	if got := Stringers(color(3)); !slices.Equal(got, []string{"red", "green", "blue"}) {
		t.Errorf("Stringers = %v", got)
	}
}
