package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/etcdtest"
	"github.com/lbd-dev/lbd/lb"
)

func vip(i int) *control.VIP {
	return &control.VIP{
		Key:   lb.VIPKey{Addr: netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), Port: 80, Proto: lb.TCP},
		Reals: []control.Real{{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1}, {Addr: netip.MustParseAddr("10.0.0.2"), Weight: 2}},
	}
}

func open(t *testing.T, eps []string, node string) *Store {
	t.Helper()
	s, err := Open(Config{Endpoints: eps, Fleet: "t", Node: node, DialTimeout: time.Second, ReportTTL: 2 * time.Second, ConflictRetry: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// watcher records what Watch applies.
type watcher struct {
	mu      sync.Mutex
	last    Desired
	contact time.Time
	ch      chan int64
}

func watch(t *testing.T, s *Store) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{ch: make(chan int64, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, func(d Desired) {
			w.mu.Lock()
			w.last = d
			w.mu.Unlock()
			w.ch <- d.Revision
		}, func(at time.Time) {
			w.mu.Lock()
			w.contact = at
			w.mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *watcher) state() (Desired, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, w.contact
}

// waitRev waits until w applied revision rev (bounded), and returns its state.
func (w *watcher) waitRev(t *testing.T, rev int64) Desired {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		if d, _ := w.state(); d.Revision >= rev {
			return d
		}
		select {
		case <-w.ch:
		case <-deadline:
			d, _ := w.state()
			t.Fatalf("watcher at revision %d, want %d", d.Revision, rev)
		}
	}
}

func encode(t *testing.T, v map[lb.VIPKey]*control.VIP) string {
	t.Helper()
	b, err := control.EncodeState(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func addVIP(i int) func(map[lb.VIPKey]*control.VIP) (map[lb.VIPKey]*control.VIP, error) {
	return func(cur map[lb.VIPKey]*control.VIP) (map[lb.VIPKey]*control.VIP, error) {
		next := maps.Clone(cur)
		v := vip(i)
		next[v.Key] = v
		return next, nil
	}
}

func TestFleetStore(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var stores []*Store
	var proxies []*etcdtest.Proxies
	var ws []*watcher
	for i := range 3 {
		p := c.Proxies(t)
		s := open(t, p.Endpoints(), fmt.Sprintf("n%d", i))
		proxies, stores, ws = append(proxies, p), append(stores, s), append(ws, watch(t, s))
	}
	ctx := context.Background()

	t.Run("converge", func(t *testing.T) {
		d, err := stores[0].Update(ctx, 0, addVIP(1))
		if err != nil {
			t.Fatal(err)
		}
		want, err := stores[1].Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want.Revision != d.Revision || len(want.VIPs) != 1 {
			t.Fatalf("read back revision %d with %d VIPs, wrote revision %d with 1", want.Revision, len(want.VIPs), d.Revision)
		}
		for i, w := range ws {
			got := w.waitRev(t, d.Revision)
			if encode(t, got.VIPs) != encode(t, want.VIPs) {
				t.Errorf("node %d applied\n%s\nwant\n%s", i, encode(t, got.VIPs), encode(t, want.VIPs))
			}
		}
	})

	t.Run("concurrent writers lose nothing", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 30)
		for n := range 3 {
			wg.Go(func() {
				for j := range 10 {
					if _, err := stores[n].Update(ctx, 0, addVIP(100+n*10+j)); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		d, err := stores[2].Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.VIPs) != 31 {
			t.Fatalf("%d VIPs after 30 concurrent adds to 1, want 31", len(d.VIPs))
		}
		for _, w := range ws {
			if got := w.waitRev(t, d.Revision); len(got.VIPs) != 31 {
				t.Fatalf("watcher has %d VIPs, want 31", len(got.VIPs))
			}
		}
	})

	t.Run("if-match", func(t *testing.T) {
		d, err := stores[0].Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stores[1].Update(ctx, 0, addVIP(2)); err != nil {
			t.Fatal(err)
		}
		_, err = stores[0].Update(ctx, d.Revision, addVIP(3))
		if !errors.Is(err, ErrStale) {
			t.Fatalf("write at an old revision: %v, want ErrStale", err)
		}
		after, _ := stores[0].Get(ctx)
		if _, ok := after.VIPs[vip(3).Key]; ok {
			t.Fatal("a refused write reached etcd")
		}
		if _, err := stores[0].Update(ctx, after.Revision, addVIP(3)); err != nil {
			t.Fatalf("write at the current revision: %v", err)
		}
	})

	t.Run("bad change refused whole", func(t *testing.T) {
		before, _ := stores[0].Get(ctx)
		_, err := stores[0].Update(ctx, 0, func(map[lb.VIPKey]*control.VIP) (map[lb.VIPKey]*control.VIP, error) {
			return nil, errors.New("no")
		})
		if err == nil {
			t.Fatal("a failing change was written")
		}
		after, _ := stores[0].Get(ctx)
		if after.Revision != before.Revision {
			t.Fatalf("revision moved %d -> %d", before.Revision, after.Revision)
		}
	})

	t.Run("partition and heal", func(t *testing.T) {
		proxies[2].Cut()
		cutAt := time.Now()
		if _, err := stores[2].Get(ctx); err == nil {
			t.Fatal("a cut-off node still reads etcd")
		}
		d, err := stores[0].Update(ctx, 0, addVIP(4))
		if err != nil {
			t.Fatal(err)
		}
		ws[1].waitRev(t, d.Revision)
		if got, contact := ws[2].state(); got.Revision >= d.Revision || contact.After(cutAt.Add(time.Second)) {
			t.Fatalf("cut-off node applied revision %d (contact %v after cut), want older than %d and no contact", got.Revision, contact.Sub(cutAt), d.Revision)
		}
		proxies[2].Heal()
		healed := time.Now()
		got := ws[2].waitRev(t, d.Revision)
		t.Logf("caught up %v after heal", time.Since(healed))
		if _, ok := got.VIPs[vip(4).Key]; !ok {
			t.Fatal("healed node lacks the change made while it was cut off")
		}
	})

	t.Run("the etcd leader dies", func(t *testing.T) {
		// The leader: the write waits out an election (up to two
		// election timeouts), longer than one request may take.
		lead := c.Leader()
		c.Kill(lead)
		defer c.Restart(lead)
		start := time.Now()
		d, err := stores[1].Update(ctx, 0, addVIP(5))
		if err != nil {
			t.Fatalf("write with 2 of 3 members, the leader killed: %v", err)
		}
		t.Logf("write through an election took %v", time.Since(start))
		for _, w := range ws {
			w.waitRev(t, d.Revision)
		}
	})

	t.Run("reports", func(t *testing.T) {
		d, _ := stores[0].Get(ctx)
		var reps []*Reporter
		for i, s := range stores {
			r := s.NewReporter()
			reps = append(reps, r)
			if err := r.Publish(ctx, Report{Revision: d.Revision, Fingerprint: "fp1", BGP: "announced", Down: []string{fmt.Sprintf("tcp-10.100.0.1-80/10.0.0.%d", i)}}); err != nil {
				t.Fatal(err)
			}
		}
		st, err := stores[1].FleetStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Agree || len(st.Nodes) != 3 || st.Revision != d.Revision {
			t.Fatalf("status %+v, want 3 agreeing nodes at %d", st, d.Revision)
		}
		if err := reps[2].Publish(ctx, Report{Revision: d.Revision, Fingerprint: "fp2"}); err != nil {
			t.Fatal(err)
		}
		st, _ = stores[0].FleetStatus(ctx)
		if st.Agree || len(st.Disagree) != 1 {
			t.Fatalf("status %+v, want n2 disagreeing", st)
		}
		// A node that stops reporting leaves after its lease (TTL 2s).
		deadline := time.Now().Add(15 * time.Second)
		for {
			rs, err := stores[0].Reports(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d reports remain after their leases", len(rs))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}
