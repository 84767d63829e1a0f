package fleet

import (
	"net/netip"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

func TestQuorumDown(t *testing.T) {
	a := "tcp-10.1.1.1-80/10.0.0.1"
	b := "tcp-10.1.1.1-80/10.0.0.2"
	ka := control.RealKey{VIP: lb.VIPKey{Addr: netip.MustParseAddr("10.1.1.1"), Port: 80, Proto: lb.TCP}, Addr: netip.MustParseAddr("10.0.0.1")}
	for _, tc := range []struct {
		name   string
		rs     []Report
		quorum int
		want   int
	}{
		{"one of three", []Report{{Down: []string{a}}, {}, {}}, 0, 0},
		{"two of three", []Report{{Down: []string{a}}, {Down: []string{a, b}}, {}}, 0, 1},
		{"repeated by one node counts once", []Report{{Down: []string{a, a}}, {}, {}}, 0, 0},
		{"stale not counted", []Report{{Down: []string{a}}, {Down: []string{a}, Stale: true}, {}}, 0, 0},
		{"stale not live: one of two live is no majority", []Report{{Down: []string{a}}, {Stale: true}, {}}, 0, 0},
		{"explicit quorum 1", []Report{{Down: []string{a}}, {}, {}}, 1, 1},
		{"all three", []Report{{Down: []string{a}}, {Down: []string{a}}, {Down: []string{a}}}, 0, 1},
	} {
		got := QuorumDown(tc.rs, tc.quorum)
		if len(got) != tc.want {
			t.Errorf("%s: %d down, want %d (%v)", tc.name, len(got), tc.want, got)
		}
		if tc.want == 1 && !got[ka] {
			t.Errorf("%s: %v lacks %v", tc.name, got, ka)
		}
	}
}

func TestAgreement(t *testing.T) {
	rs := []Report{{Node: "a", Revision: 5, Fingerprint: "x"}, {Node: "b", Revision: 5, Fingerprint: "x"}, {Node: "c", Revision: 4, Fingerprint: "y"}}
	st := Agreement("f", 5, rs)
	if st.Agree || len(st.Disagree) != 1 || st.Disagree[0] != "c: applied revision 4, fleet at 5" {
		t.Fatalf("%+v", st)
	}
	rs[2] = Report{Node: "c", Revision: 5, Fingerprint: "z"}
	if st = Agreement("f", 5, rs); st.Agree || st.Disagree[0] != "c: fingerprint z, fleet x" {
		t.Fatalf("%+v", st)
	}
	rs[2].Fingerprint = "x"
	if st = Agreement("f", 5, rs); !st.Agree {
		t.Fatalf("%+v", st)
	}
	if st = Agreement("f", 5, nil); st.Agree {
		t.Fatal("an empty fleet agrees")
	}
}

func TestSafety(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := Safety{StaleAfter: 3 * time.Second, WithdrawAfter: 10 * time.Second}
	v := View{Now: t0, LastContact: t0, Synced: true, Own: "x", Fleet: "x"}
	if s.Stale(v) || !s.Announce(v) {
		t.Fatal("fresh, agreeing node")
	}
	v.Synced = false
	if s.Announce(v) {
		t.Fatal("announces before its first sync")
	}
	v.Synced = true
	v.Now = t0.Add(4 * time.Second)
	if !s.Stale(v) || !s.Announce(v) {
		t.Fatal("stale but within the withdraw time: stale and announcing")
	}
	v.Now = t0.Add(11 * time.Second)
	if s.Announce(v) {
		t.Fatal("cut off past the withdraw time still announces")
	}
	v = View{Now: t0.Add(5 * time.Second), LastContact: t0.Add(5 * time.Second), Synced: true, Own: "x", Fleet: "y", DifferSince: t0}
	if !s.Announce(v) {
		t.Fatal("differing for 5s of 10 withdraws early")
	}
	v.Now, v.LastContact = t0.Add(11*time.Second), t0.Add(11*time.Second)
	if s.Announce(v) {
		t.Fatal("differing past the withdraw time still announces")
	}
	s.WithdrawAfter = 0
	if !s.Announce(v) {
		t.Fatal("withdraw off still withdraws")
	}
}
