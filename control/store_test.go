package control

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
	"net/netip"
)

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := s.Load()
	if err != nil || len(empty) != 0 {
		t.Fatalf("first start: %v %v", empty, err)
	}
	vips := map[lb.VIPKey]*VIP{
		vipA: {Key: vipA, Flags: lb.VIPSticky | lb.VIPNoFlowSearch, Encap: EncapGUE, RingSize: 1021, Reals: []Real{active(r1, 5), {Addr: r2, Weight: 0, State: lb.RealDraining}}},
		vipB: {Key: vipB, Flags: lb.VIPNoLRU, Encap: EncapIPIP, RingSize: 655373},
	}
	vips[vipA].Health = health.Spec{Type: health.HTTP, Path: "/healthz", Interval: 1500 * time.Millisecond, Rise: 4}
	vips[vipA].DownFlows, vips[vipA].AllDown = ResetFlows, DropAll
	for _, v := range vips {
		v.normalize()
	}
	if err := s.Save(vips); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got[vipA], vips[vipA]) || got[vipB].RingSize != 655373 || !got[vipB].Flags.Has(lb.VIPNoLRU) || len(got) != 2 {
		t.Errorf("round trip:\n got %+v\nwant %+v", got[vipA], vips[vipA])
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	info, _ := os.Stat(s.Path())
	if info.Mode().Perm()&0o077 != 0 {
		t.Errorf("state file mode %v: readable by others", info.Mode())
	}
}

func TestStoreRefusesBadFiles(t *testing.T) {
	for name, body := range map[string]string{
		"corrupt":     `{"version":1,"vips":[`,
		"version":     `{"version":2,"vips":[]}`,
		"invalid vip": `{"version":1,"vips":[{"protocol":"tcp","address":"192.0.2.1","port":80,"encap":"ipip","ring_size":12}]}`,
		"duplicate":   `{"version":1,"vips":[{"protocol":"tcp","address":"192.0.2.1","port":80,"encap":"ipip","ring_size":1021},{"protocol":"tcp","address":"192.0.2.1","port":80,"encap":"ipip","ring_size":1021}]}`,
		"proto":       `{"version":1,"vips":[{"protocol":"sctp","address":"192.0.2.1","port":80}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			s, _ := NewStore(dir)
			if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), s.Path()) {
				t.Fatalf("loaded a bad file, or the error does not name it: %v", err)
			}
		})
	}
}

// A state file written before the flag table (control/testdata, written
// by lbd of issue 18.1) loads with its flags, and is written back byte
// for byte: the format did not change.
func TestStoreLoadsOldFlags(t *testing.T) {
	old, err := os.ReadFile(filepath.Join("testdata", "state-v1-flags.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(), old, 0o600); err != nil {
		t.Fatal(err)
	}
	vips, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	portless := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.3"), Port: 0, Proto: lb.TCP}
	for k, want := range map[lb.VIPKey]lb.VIPFlags{
		vipA:     lb.VIPSticky | lb.VIPNoFlowSearch,
		vipB:     lb.VIPNoLRU,
		portless: lb.VIPSticky | lb.VIPNoLRU | lb.VIPNoFlowSearch,
	} {
		if v := vips[k]; v == nil || v.Flags != want {
			t.Errorf("VIP %s: %+v, want flags %s", k, v, want)
		}
	}
	if vips[vipA].Encap != EncapGUE || vips[vipA].DatapathFlags() != lb.VIPSticky|lb.VIPNoFlowSearch|lb.VIPGUE {
		t.Errorf("VIP %s: datapath flags %s", vipA, vips[vipA].DatapathFlags())
	}
	if err := s.Save(vips); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(s.Path()); string(now) != string(old) {
		t.Errorf("written back differently:\n%s\nwas\n%s", now, old)
	}
}

// TestStoreSaveStaged: when SaveStaged returns, the new state is in place
// (Load reads it) although the directory's fsync may still be running;
// wait reports that fsync, and asking again gives the same answer.
func TestStoreSaveStaged(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	vips := map[lb.VIPKey]*VIP{vipA: {Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1)}}}
	vips[vipA].normalize()
	wait, err := s.SaveStaged(vips)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || !reflect.DeepEqual(got[vipA], vips[vipA]) || len(got) != 1 {
		t.Fatalf("after SaveStaged, before wait: %+v %v", got[vipA], err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("wait again: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	// A state directory that is gone: refused before anything moves.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveStaged(vips); err == nil {
		t.Fatal("SaveStaged into a removed directory succeeded")
	}
}
