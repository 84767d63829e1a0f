package kprobe

import (
	"testing"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// TestGuessEqualsBTF is the test of the guesser: on a kernel with BTF,
// every guessed offset equals the one BTF gives.
func TestGuessEqualsBTF(t *testing.T) {
	privtest.Require(t)
	want, err := KernelOffsets()
	if err != nil {
		privtest.Unavailable(t, "kernel BTF: "+err.Error())
	}
	got, rep, err := GuessOffsets()
	if err != nil {
		t.Fatalf("guess: %v", err)
	}
	t.Logf("guessed %s in %v (%d connections, %d captures, ipv6=%v)", got, rep.Duration, rep.Connections, rep.Captures, rep.IPv6)
	gf, wf := got.Fields(), want.Fields()
	for _, f := range offsetFields {
		if gf[f.name] != wf[f.name] {
			t.Errorf("%s: guessed %d, BTF says %d (%s)", f.name, gf[f.name], wf[f.name], f.path)
		}
	}
	if !rep.IPv6 {
		t.Errorf("IPv6 offsets not guessed")
	}
}
