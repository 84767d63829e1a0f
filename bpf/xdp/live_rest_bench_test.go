//go:build lbdbench && lbdkatran

package xdp

// TestLiveRESTChange measures a change as an operator makes it against a
// running `lbd serve` (the real binary, as in TestLiveBench): PUT a new
// set of 100 reals for a VIP with a 65537-slot ring over the REST API,
// half of them new each time, and time
//
//   - the REST call to the new ring live in the kernel: a poller reads the
//     VIP's entry of the pinned vip_info map (lbd's own pin) in a loop
//     and notes the moment it changes (the flip of the live ring buffer is
//     one store to that entry, bpf/xdp/ring.go); each read is one syscall,
//     a microsecond or so;
//   - the REST call to its response.
//
// At the moment the ring goes live, the poller reads the state file: the
// new set must already be in it (lbd saves, with fsync, before anything
// in the datapath moves), so every change timed here was durable before
// it was live. A benchmark: it reports p50 and p99, it asserts no speed.
//
//	go test -count=1 -tags 'lbdbench lbdkatran' -run TestLiveRESTChange -v ./bpf/xdp/

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

func TestLiveRESTChange(t *testing.T) {
	privtest.Require(t)
	bin, err := filepath.Abs(envOr("LBD_BIN", "../../bin/lbd"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("LBD_BIN: %v (run make build first)", err)
	}
	changes := envInt(t, "LBD_REST_CHANGES", 300)

	l := newLiveLab(t)
	port := l.addPort("lbd", "r")
	l.startLBD(bin, port)

	vipInfo, err := ebpf.LoadPinnedMap(filepath.Join(l.pinDir, "vip_info"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("lbd's pinned vip_info: %v", err)
	}
	defer vipInfo.Close()
	read := func(num uint32) []byte {
		v := make([]byte, vipInfo.ValueSize())
		if err := vipInfo.Lookup(num, &v); err != nil {
			t.Fatalf("vip_info[%d]: %v", num, err)
		}
		return v
	}
	snapshot := func() [][]byte {
		var all [][]byte
		for n := range vipInfo.MaxEntries() {
			all = append(all, read(n))
		}
		return all
	}

	vip := lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 80, Proto: lb.TCP}
	sets := make([][]byte, 2)
	unique := make([]string, 2) // a real only set s has
	for s := range sets {
		var reals []string
		for i := range 100 {
			n := 50*s + i
			reals = append(reals, fmt.Sprintf(`{"address":"%s"}`, netip.AddrFrom4([4]byte{10, 1, byte(n >> 8), byte(n)})))
		}
		sets[s] = []byte(`{"reals":[` + strings.Join(reals, ",") + `]}`)
	}
	unique[0], unique[1] = `"10.1.0.0"`, `"10.1.0.149"`

	before := snapshot()
	l.call("POST", "/api/v1/vips", []byte(fmt.Sprintf(`{"protocol":"tcp","address":%q,"port":%d}`, vip.Addr, vip.Port)))
	path := "/api/v1/vips/" + lb.VIPName(vip) + "/reals"
	l.call("PUT", path, sets[1])
	after := snapshot()
	num := -1
	for n := range before {
		if !bytes.Equal(before[n], after[n]) {
			if num >= 0 {
				t.Fatalf("vip_info entries %d and %d both changed for one VIP", num, n)
			}
			num = n
		}
	}
	if num < 0 {
		t.Fatal("no vip_info entry changed when the VIP was made")
	}
	statePath := filepath.Join(l.stateDir, "state.json")

	live := make([]time.Duration, 0, changes)
	resp := make([]time.Duration, 0, changes)
	for i := range changes {
		s := i % 2
		prev := read(uint32(num))
		type seen struct {
			at      time.Time
			durable bool
			err     error
		}
		done := make(chan seen, 1)
		stop := make(chan struct{})
		go func() {
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					done <- seen{err: fmt.Errorf("the response came and the ring never changed")}
					return
				default:
				}
				v := make([]byte, vipInfo.ValueSize())
				if err := vipInfo.Lookup(uint32(num), &v); err != nil {
					done <- seen{err: err}
					return
				}
				if bytes.Equal(v, prev) {
					time.Sleep(pollEvery)
					continue
				}
				{
					at := time.Now()
					state, err := os.ReadFile(statePath)
					done <- seen{at: at, durable: err == nil && bytes.Contains(state, []byte(unique[s])), err: err}
					return
				}
			}
			done <- seen{err: fmt.Errorf("the ring did not change within 5 s")}
		}()
		t0 := time.Now()
		l.call("PUT", path, sets[s])
		r := time.Since(t0)
		var got seen
		select {
		case got = <-done:
		case <-time.After(100 * time.Millisecond):
			close(stop)
			got = <-done
		}
		if got.err != nil {
			t.Fatalf("change %d: %v", i, got.err)
		}
		if !got.durable {
			t.Fatalf("change %d: the ring went live before the state file had the new set", i)
		}
		live = append(live, got.at.Sub(t0))
		resp = append(resp, r)
	}
	pct := func(d []time.Duration, p float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	report := fmt.Sprintf("| changes | REST call → ring live p50 | p99 | max | REST call → response p50 | p99 | max |\n|---:|---:|---:|---:|---:|---:|---:|\n"+
		"| %d | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n",
		changes, pct(live, 0.5), pct(live, 0.99), pct(live, 1), pct(resp, 0.5), pct(resp, 0.99), pct(resp, 1))
	t.Log("\n" + report)
	if out := os.Getenv("LBD_REST_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// pollEvery spaces the poller's reads: a poller that spins takes a whole CPU
// from lbd serve on a 2-CPU host.
var pollEvery = 50 * time.Microsecond

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
