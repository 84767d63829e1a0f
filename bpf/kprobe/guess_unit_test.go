package kprobe

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestNarrowKeepsOnlyOffsetsThatAlwaysMatch(t *testing.T) {
	snap1 := []byte{0, 0, 7, 0, 7, 0, 0, 0, 7, 0}
	snap2 := []byte{0, 0, 7, 0, 9, 0, 0, 0, 7, 0}
	c := narrow(nil, true, snap1, []byte{7, 0}, 2, 8)
	if got := c.list(); !reflect.DeepEqual(got, []int{2, 4}) {
		t.Fatalf("seed within window 8: %v, want [2 4]", got)
	}
	c = narrow(c, false, snap2, []byte{7, 0}, 2, 8)
	if got := c.list(); !reflect.DeepEqual(got, []int{2}) {
		t.Fatalf("after a second snapshot: %v, want [2]", got)
	}
}

func TestGuessErrorNamesTheField(t *testing.T) {
	for _, c := range []struct {
		err  *GuessError
		want string
	}{
		{&GuessError{Field: "dport", Candidates: []int{12, 24}, Rounds: 20}, "guess offset of dport: 2 candidate offsets [12 24] remain after 20 connections"},
		{&GuessError{Field: "netns", Rounds: 23}, "guess offset of netns: expected value never found"},
		{&GuessError{Field: "saddr", Err: errors.New("connect 127.0.0.2:1: refused")}, "guess offset of saddr: connect 127.0.0.2:1: refused"},
	} {
		if got := c.err.Error(); !strings.HasPrefix(got, c.want) {
			t.Errorf("%q, want it to start with %q", got, c.want)
		}
	}
}
