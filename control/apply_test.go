package control

import (
	"errors"
	"maps"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

var vipC = lb.VIPKey{Addr: vipA.Addr, Port: 443, Proto: lb.TCP}

// countWrites makes the fake count the datapath mutations.
func countWrites(dp *fakedp.Datapath) *int {
	n := new(int)
	dp.Fail = func(string) error { *n++; return nil }
	return n
}

func TestApplyDiffsAndIsIdempotent(t *testing.T) {
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, Reals: []Real{active(r1, 1), active(r2, 1)}})
	mustCreate(t, c, VIP{Key: vipB, Reals: []Real{active(r3, 1)}})
	want := []VIP{
		{Key: vipC, Flags: lb.VIPSticky, Reals: []Real{active(r1, 2)}},
		{Key: vipA, Reals: []Real{active(r2, 5), active(r3, 1)}, Description: "web"},
	}
	dry, err := c.Apply(want, true)
	if err != nil {
		t.Fatal(err)
	}
	if st.saves != 2 || len(c.VIPs()) != 2 || c.VIPs()[0].Key != vipA || len(c.VIPs()[0].Reals) != 2 || c.VIPs()[0].Reals[0].Addr != r1 {
		t.Fatal("a dry run changed the state")
	}
	d, err := c.Apply(want, false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d, dry) {
		t.Errorf("the dry run said %+v, the apply did %+v", dry, d)
	}
	if len(d.Added) != 1 || d.Added[0].Key != vipC || len(d.Removed) != 1 || d.Removed[0].Key != vipB || len(d.Changed) != 1 {
		t.Fatalf("diff %+v", d)
	}
	ch := d.Changed[0]
	if !reflect.DeepEqual(ch.Settings, []string{"description"}) ||
		len(ch.AddedReals) != 1 || ch.AddedReals[0].Addr != r3 ||
		len(ch.RemovedReals) != 1 || ch.RemovedReals[0].Addr != r1 ||
		len(ch.ChangedReals) != 1 || ch.ChangedReals[0].Old.Weight != 1 || ch.ChangedReals[0].New.Weight != 5 {
		t.Errorf("change %+v", ch)
	}
	checkInSync(t, c, dp)
	if len(st.saved) != 2 || st.saved[vipC] == nil || st.saved[vipB] != nil {
		t.Errorf("saved %v", st.saved)
	}
	// Again, in another order: nothing to do, nothing written.
	saves := st.saves
	writes := countWrites(dp)
	d, err = c.Apply([]VIP{want[1], want[0]}, false)
	if err != nil || !d.Empty() {
		t.Fatalf("second apply: %+v, %v", d, err)
	}
	if *writes != 0 || st.saves != saves {
		t.Errorf("an empty diff wrote %d datapath changes and %d saves", *writes, st.saves-saves)
	}
}

func TestApplyRefusesBadSetsWhole(t *testing.T) {
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, Reals: []Real{active(r1, 1)}})
	before, saves := snap(dp), st.saves
	for name, set := range map[string][]VIP{
		"twice":      {{Key: vipA}, {Key: vipA}},
		"bad weight": {{Key: vipB}, {Key: vipA, Reals: []Real{active(r1, MaxWeight+1)}}},
	} {
		_, err := c.Apply(set, false)
		var ie *InvalidError
		if !errors.As(err, &ie) {
			t.Errorf("%s: got %v, want an InvalidError", name, err)
		}
		sameSnap(t, before, snap(dp))
		if st.saves != saves {
			t.Errorf("%s: saved", name)
		}
	}
}

func TestApplyFailureRollsBackEverything(t *testing.T) {
	for _, fail := range []string{"RemoveVIP", "AddVIP", "SetRing", "AddReal"} {
		t.Run(fail, func(t *testing.T) {
			c, dp, st := newTestController(t)
			mustCreate(t, c, VIP{Key: vipA, Reals: []Real{active(r1, 1), active(r2, 1)}})
			mustCreate(t, c, VIP{Key: vipB, Reals: []Real{active(r3, 1)}})
			before, stateBefore, savedBefore := snap(dp), c.VIPs(), maps.Clone(st.saved)
			fpBefore := c.Fingerprint()
			// Removal of B first, then A changed, then C added: the
			// failure comes after some VIPs were already converged.
			armed := true
			dp.Fail = func(op string) error {
				if armed && strings.HasPrefix(op, fail) {
					armed = false
					return fakedp.ErrInjected
				}
				return nil
			}
			_, err := c.Apply([]VIP{
				{Key: vipA, Reals: []Real{active(r2, 3), active(r3, 1)}},
				{Key: vipC, Reals: []Real{active(r1, 1)}},
			}, false)
			var ae *ApplyError
			if !errors.As(err, &ae) || !ae.RolledBack || !errors.Is(err, fakedp.ErrInjected) {
				t.Fatalf("got %v, want a rolled-back ApplyError", err)
			}
			sameSnap(t, before, snap(dp))
			if !maps.EqualFunc(st.saved, savedBefore, func(a, b *VIP) bool { return reflect.DeepEqual(a, b) }) {
				t.Errorf("the saved state kept the failed change")
			}
			if !reflect.DeepEqual(c.VIPs(), stateBefore) || c.Fingerprint() != fpBefore {
				t.Error("desired state changed")
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	set := []VIP{
		{Key: vipA, Reals: []Real{active(r1, 1), active(r2, 2)}},
		{Key: vipB, Flags: lb.VIPSticky, Reals: []Real{active(r3, 1)}},
	}
	c1, _, _ := newTestController(t)
	if _, err := c1.Apply(set, false); err != nil {
		t.Fatal(err)
	}
	// The same set, VIPs and reals in other orders, through single changes.
	c2, _, _ := newTestController(t)
	mustCreate(t, c2, VIP{Key: vipB, Flags: lb.VIPSticky, Reals: []Real{active(r3, 1)}})
	mustCreate(t, c2, VIP{Key: vipA, Reals: []Real{active(r2, 2)}})
	if _, _, err := c2.PutReal(vipA, active(r1, 1)); err != nil {
		t.Fatal(err)
	}
	fp := c1.Fingerprint()
	if len(fp) != 64 || c2.Fingerprint() != fp {
		t.Fatalf("same inputs, fingerprints %s and %s", fp, c2.Fingerprint())
	}
	desc := "web"
	if _, err := c2.UpdateVIP(vipA, VIPUpdate{Description: &desc}); err != nil {
		t.Fatal(err)
	}
	if c2.Fingerprint() != fp {
		t.Error("a description changed the fingerprint")
	}
	seen := map[string]string{fp: "start"}
	yes, size := true, uint32(1021)
	for name, change := range map[string]func(c *Controller) error{
		"weight": func(c *Controller) error { _, _, err := c.PutReal(vipA, active(r1, 3)); return err },
		"draining": func(c *Controller) error {
			_, _, err := c.PutReal(vipA, Real{Addr: r1, Weight: 1, State: lb.RealDraining})
			return err
		},
		"real added":   func(c *Controller) error { _, _, err := c.PutReal(vipB, active(r1, 1)); return err },
		"real removed": func(c *Controller) error { _, err := c.DeleteReal(vipA, r2); return err },
		"flag":         func(c *Controller) error { _, err := c.UpdateVIP(vipA, VIPUpdate{SetFlags: lb.VIPNoLRU}); return err },
		"ring size":    func(c *Controller) error { _, err := c.UpdateVIP(vipA, VIPUpdate{RingSize: &size}); return err },
		"disabled":     func(c *Controller) error { _, err := c.UpdateVIP(vipA, VIPUpdate{Disabled: &yes}); return err },
		"VIP removed":  func(c *Controller) error { return c.DeleteVIP(vipB) },
	} {
		c, _, _ := newTestController(t)
		if _, err := c.Apply(set, false); err != nil {
			t.Fatal(err)
		}
		if err := change(c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := c.Fingerprint()
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: same fingerprint as %s", name, prev)
		}
		seen[got] = name
	}
}

func TestPreconditionsRefuseStaleChanges(t *testing.T) {
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, Reals: []Real{active(r1, 1), active(r2, 1)}})
	read, _ := c.VIP(vipA)
	setRead := c.SetVersion()
	r1Read, _ := read.Real(r1)
	// Someone else changes r2's weight meanwhile.
	if _, _, err := c.PutReal(vipA, active(r2, 7)); err != nil {
		t.Fatal(err)
	}
	after, _ := c.VIP(vipA)
	if after.Version() == read.Version() || c.SetVersion() == setRead {
		t.Fatal("a weight change kept the versions")
	}
	before, saves := snap(dp), st.saves
	for name, err := range map[string]error{
		"VIP":   func() error { _, _, err := c.PutReal(vipA, active(r1, 3), IfVIP(vipA, read.Version())); return err }(),
		"set":   func() error { _, err := c.Apply(nil, false, IfSet(setRead)); return err }(),
		"gone":  c.DeleteVIP(vipA, IfVIP(vipB)),
		"real3": func() error { _, err := c.DeleteReal(vipA, r1, IfReal(vipA, r3)); return err }(),
	} {
		if !errors.Is(err, ErrStale) {
			t.Errorf("%s: got %v, want ErrStale", name, err)
		}
	}
	sameSnap(t, before, snap(dp))
	if st.saves != saves {
		t.Error("a stale change was saved")
	}
	// r1 itself did not change: a precondition on it passes.
	if _, _, err := c.PutReal(vipA, active(r1, 3), IfReal(vipA, r1, r1Read.Version())); err != nil {
		t.Fatal(err)
	}
	cur, _ := c.VIP(vipA)
	if _, err := c.Apply([]VIP{*cur}, false, IfVIP(vipA, cur.Version()), IfSet(c.SetVersion())); err != nil {
		t.Fatal(err)
	}
}

func TestApplyUnsavableTouchesNothing(t *testing.T) {
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, Reals: []Real{active(r1, 1)}})
	before, fp := snap(dp), c.Fingerprint()
	st.err = errors.New("no space left on device")
	writes := countWrites(dp)
	_, err := c.Apply([]VIP{{Key: vipB, Reals: []Real{active(r3, 1)}}}, false)
	var ae *ApplyError
	if !errors.As(err, &ae) || !ae.RolledBack || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("got %v, want a rolled-back ApplyError", err)
	}
	if *writes != 0 {
		t.Errorf("%d datapath writes for a change that could not be saved", *writes)
	}
	sameSnap(t, before, snap(dp))
	if c.Fingerprint() != fp || len(c.VIPs()) != 1 {
		t.Error("desired state changed")
	}
}

// benchSet is n VIPs of 10 reals each, ring size 1021.
func benchSet(n int) []VIP {
	set := make([]VIP, n)
	for i := range set {
		key := lb.VIPKey{Addr: netip.AddrFrom4([4]byte{192, 0, byte(2 + i/250), byte(1 + i%250)}), Port: 80, Proto: lb.TCP}
		reals := make([]Real, 10)
		for j := range reals {
			reals[j] = active(netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), byte(1 + j)}), uint32(1+j%3))
		}
		set[i] = VIP{Key: key, RingSize: 1021, Reals: reals}
	}
	return set
}

// BenchmarkFingerprint100VIPs: the cost of /status, the metric and every
// change's Lbd-Fingerprint header, for 100 VIPs of 10 reals.
func BenchmarkFingerprint100VIPs(b *testing.B) {
	dp, st := fakedp.New(), &memStore{}
	c := New(dp, st, nil, nil)
	if _, err := c.Apply(benchSet(100), false); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		_ = c.Fingerprint()
	}
}

// BenchmarkApplyUnchanged100VIPs: lbd apply of a 100-VIP file the node
// already has (validation and the diff; nothing written).
func BenchmarkApplyUnchanged100VIPs(b *testing.B) {
	dp, st := fakedp.New(), &memStore{}
	c := New(dp, st, nil, nil)
	set := benchSet(100)
	if _, err := c.Apply(set, false); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if d, err := c.Apply(set, false); err != nil || !d.Empty() {
			b.Fatal(d, err)
		}
	}
}
