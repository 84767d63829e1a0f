package maglev

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// The property tests draw random backend sets from math/rand/v2 PCG
// generators with fixed seeds, one seed per set, and print the seed of a
// failing set so that it can be reproduced with newRand(seed).

func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x6c62642d6d61676c)) // "lbd-magl"
}

// randBackends returns n backends with unique random IPv4 or IPv6 names,
// IDs 1..n in random order, and weights from weight.
func randBackends(r *rand.Rand, n int, weight func() uint32) []Backend {
	seen := make(map[string]bool, n)
	bs := make([]Backend, 0, n)
	ids := r.Perm(n)
	for len(bs) < n {
		var a netip.Addr
		if r.IntN(4) == 0 {
			var b [16]byte
			copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8})
			for i := 8; i < 16; i++ {
				b[i] = byte(r.IntN(256))
			}
			a = netip.AddrFrom16(b)
		} else {
			a = netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		}
		name := a.String()
		if seen[name] {
			continue
		}
		seen[name] = true
		bs = append(bs, Backend{Name: name, ID: uint32(ids[len(bs)]) + 1, Weight: weight()})
	}
	return bs
}

func one() uint32 { return 1 }

func counts(table []uint32) map[uint32]int {
	c := make(map[uint32]int)
	for _, id := range table {
		c[id]++
	}
	return c
}

func mustBuild(t testing.TB, bs []Backend, m uint64) []uint32 {
	t.Helper()
	table, err := Build(bs, m)
	if err != nil {
		t.Fatalf("Build(%d backends, %d): %v", len(bs), m, err)
	}
	return table
}

func shuffled(r *rand.Rand, bs []Backend) []Backend {
	c := slices.Clone(bs)
	r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	return c
}

// refPlain is the unweighted population algorithm written as in the paper
// (Eisenbud et al. 2016, Pseudocode 1), with the permutation computed by
// multiplication and %, for backends sorted by Name. The weighted algorithm
// must reduce to it when all weights are equal.
func refPlain(bs []Backend, m uint64) []uint32 {
	bs = slices.Clone(bs)
	slices.SortFunc(bs, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
	n := len(bs)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	for i, b := range bs {
		offset[i] = hashName(offsetSeed, b.Name) % m
		skip[i] = hashName(skipSeed, b.Name)%(m-1) + 1
	}
	next := make([]uint64, n)
	entry := make([]int, m)
	for i := range entry {
		entry[i] = -1
	}
	filled := uint64(0)
	for {
		for i := range n {
			c := (offset[i] + next[i]*skip[i]) % m
			for entry[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			entry[c] = i
			next[i]++
			filled++
			if filled == m {
				table := make([]uint32, m)
				for j, e := range entry {
					table[j] = bs[e].ID
				}
				return table
			}
		}
	}
}

// refWeighted is a slow, literal implementation of the documented weighted
// scheme: largest-remainder slot counts, k-th turn of backend i in round
// floor(k*R/c_i), and within a round first the backend whose previous turn
// was earliest (Name order in round 0). It visits every backend in every
// round, which is what Builder avoids.
func refWeighted(bs []Backend, m uint64) []uint32 {
	var act []Backend
	for _, b := range bs {
		if b.Weight > 0 {
			act = append(act, b)
		}
	}
	slices.SortFunc(act, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
	n := len(act)
	var total uint64
	for _, b := range act {
		total += uint64(b.Weight)
	}
	cnt := make([]uint64, n)
	rem := make([]uint64, n)
	sum := uint64(0)
	for i, b := range act {
		cnt[i] = m * uint64(b.Weight) / total
		rem[i] = m * uint64(b.Weight) % total
		sum += cnt[i]
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case rem[a] > rem[b]:
			return -1
		case rem[a] < rem[b]:
			return 1
		}
		return 0
	})
	for _, i := range idx[:m-sum] {
		cnt[i]++
	}
	rounds := slices.Max(cnt)
	turns := make([]uint64, n)  // turns taken so far
	lastSeq := make([]int64, n) // global sequence number of the previous turn
	pos := make([]uint64, n)    // next index into the permutation
	for i := range lastSeq {
		lastSeq[i] = int64(i) - int64(n)
	}
	entry := make([]int, m)
	for i := range entry {
		entry[i] = -1
	}
	seq := int64(0)
	for r := uint64(0); r < rounds; r++ {
		var now []int
		for i := range n {
			if turns[i] < cnt[i] && turns[i]*rounds/cnt[i] == r {
				now = append(now, i)
			}
		}
		slices.SortFunc(now, func(a, b int) int { return int(lastSeq[a] - lastSeq[b]) })
		for _, i := range now {
			off := hashName(offsetSeed, act[i].Name) % m
			sk := hashName(skipSeed, act[i].Name)%(m-1) + 1
			c := (off + pos[i]*sk) % m
			for entry[c] >= 0 {
				pos[i]++
				c = (off + pos[i]*sk) % m
			}
			entry[c] = i
			pos[i]++
			turns[i]++
			lastSeq[i] = seq
			seq++
		}
	}
	table := make([]uint32, m)
	for j, e := range entry {
		if e < 0 {
			panic("refWeighted: slot left empty")
		}
		table[j] = act[e].ID
	}
	return table
}

func sets(short, long int) int {
	if testing.Short() {
		return short
	}
	return long
}

// Test 1: with equal weights every backend holds floor(M/N) or ceil(M/N)
// slots.
func TestEqualWeightsBalance(t *testing.T) {
	const m = DefaultSize
	for s := range sets(20, 100) {
		seed := uint64(1000 + s)
		r := newRand(seed)
		n := 1 + r.IntN(1000)
		bs := randBackends(r, n, one)
		c := counts(mustBuild(t, bs, m))
		lo, hi := m/n, (m+n-1)/n
		if len(c) != n {
			t.Fatalf("seed %d: N=%d but %d backends in the table", seed, n, len(c))
		}
		for _, b := range bs {
			if got := c[b.ID]; got != lo && got != hi {
				t.Fatalf("seed %d: N=%d: %s has %d slots, want %d or %d", seed, n, b.Name, got, lo, hi)
			}
		}
	}
}

// With equal weights the table is exactly the paper's unweighted table.
func TestEqualWeightsMatchPaper(t *testing.T) {
	for s := range sets(10, 30) {
		seed := uint64(2000 + s)
		r := newRand(seed)
		m := Sizes[r.IntN(4)] // up to 65537: refPlain is slow
		n := 1 + r.IntN(300)
		w := 1 + uint32(r.IntN(1000))
		bs := randBackends(r, n, func() uint32 { return w })
		if got, want := mustBuild(t, bs, m), refPlain(bs, m); !slices.Equal(got, want) {
			t.Fatalf("seed %d: M=%d N=%d: table differs from the paper's algorithm", seed, m, n)
		}
	}
}

// The bucket-queue scheduler builds the same table as a literal
// implementation of the documented scheme.
func TestWeightedMatchesReference(t *testing.T) {
	for s := range sets(20, 60) {
		seed := uint64(3000 + s)
		r := newRand(seed)
		m := Sizes[r.IntN(4)]
		n := 1 + r.IntN(200)
		maxW := []uint32{1, 3, 1000, 1 << 20}[r.IntN(4)]
		bs := randBackends(r, n, func() uint32 { return uint32(r.IntN(int(maxW) + 1)) })
		if r.IntN(2) == 0 {
			bs[0].Weight = 1 + maxW*50 // one heavy backend
		}
		if s == 0 {
			bs[0].Weight = 0 // ensure ErrNoBackends cannot happen below
		}
		bs = append(bs, Backend{Name: "anchor", ID: 999999, Weight: 1})
		if got, want := mustBuild(t, bs, m), refWeighted(bs, m); !slices.Equal(got, want) {
			t.Fatalf("seed %d: M=%d N=%d: table differs from the reference", seed, m, n)
		}
	}
}

// Test 2: with unequal weights each backend's slot count is its ideal share
// M*w/W rounded down or up, which is the best any table of M slots can do.
//
// The requirement "within 1% (relative) of the weight share" holds for every
// backend whose ideal share is at least 100 slots, and the test asserts
// that. It cannot hold for all backends of all sets, for any table-based
// algorithm: with 100 weights drawn from 1..1000 the total is about 50000,
// so at M=65537 a backend of weight 1 deserves about 1.3 slots and gets 1 or
// 2 (an error of 23% or more), and any backend with an ideal share q < 50
// slots is off by more than 1% unless q happens to be within 0.01*q of an
// integer. With N=100 such a weight (below about 38) occurs in almost every
// set. Relative accuracy for small weights needs a larger M (655373 gives 10
// times more slots per unit of weight), not another algorithm.
func TestWeightedBalance(t *testing.T) {
	for _, m := range []uint64{DefaultSize, 655373} {
		nsets := sets(50, 200)
		if m > DefaultSize {
			nsets = sets(5, 20)
		}
		var maxRel, maxRelBig, maxAbs float64
		for s := range nsets {
			seed := uint64(4000 + s)
			r := newRand(seed)
			n := 1 + r.IntN(100)
			bs := randBackends(r, n, func() uint32 { return 1 + uint32(r.IntN(1000)) })
			switch s {
			case 0: // extreme ratio: one heavy, the rest weight 1
				bs[0].Weight = 1000
				for i := 1; i < n; i++ {
					bs[i].Weight = 1
				}
			case 1:
				bs = append(bs, Backend{Name: "heavy", ID: 5000, Weight: math.MaxUint32})
			}
			c := counts(mustBuild(t, bs, m))
			var total uint64
			for _, b := range bs {
				total += uint64(b.Weight)
			}
			for _, b := range bs {
				q := float64(m) * float64(b.Weight) / float64(total)
				lo := m * uint64(b.Weight) / total // floor(q), exact
				hi := lo
				if m*uint64(b.Weight)%total != 0 {
					hi++
				}
				got := uint64(c[b.ID])
				if got != lo && got != hi {
					t.Fatalf("seed %d: M=%d N=%d: %s weight %d has %d slots, want %d or %d (ideal %.3f)",
						seed, m, len(bs), b.Name, b.Weight, got, lo, hi, q)
				}
				abs := math.Abs(float64(got) - q)
				rel := abs / q
				maxAbs = max(maxAbs, abs)
				maxRel = max(maxRel, rel)
				if q >= 100 {
					maxRelBig = max(maxRelBig, rel)
					if rel > 0.01 {
						t.Fatalf("seed %d: M=%d: %s weight %d: %d slots, ideal %.2f: relative error %.4f > 1%%",
							seed, m, b.Name, b.Weight, got, q, rel)
					}
				}
			}
		}
		t.Logf("M=%d, %d sets, N<=100, weights 1..1000: max |slots-ideal| %.3f slots; max relative error %.4f%% for shares >= 100 slots, %.1f%% over all backends",
			m, nsets, maxAbs, 100*maxRelBig, 100*maxRel)
	}
}

// Tests 3 and 4: removing one of N equal backends moves all its slots and
// few others; adding it back restores the table.
//
// Bound: an ideal consistent hash would move only the removed backend's
// slots (1/N of the table) and none of the survivors'. Maglev trades some
// of that for balance: when a backend disappears the others claim slots
// earlier in their turn order, and every slot a survivor claims out of its
// old order can displace another survivor. The paper (section 5.3, Figure
// 12) reports that this stays small as long as M is large compared with N.
// Measured here (mean over random sets): survivor churn 0.7%/1.4%/2.4% for
// N=10/100/1000 at M=65537 and 0.2%/0.5%/1.1% at M=655373. The asserted
// bound, survivor churn <= 2% + 1000*N/M (5% for N=1000 at M=65537), is
// about twice the measured worst case, so a regression that makes Maglev
// markedly less stable (e.g. a turn order that changes globally when one
// backend goes) fails.
func TestRemoveOneBackend(t *testing.T) {
	type cfg struct {
		m uint64
		n int
	}
	cfgs := []cfg{{65537, 10}, {65537, 100}, {65537, 1000}, {655373, 10}, {655373, 100}, {655373, 1000}}
	for ci, c := range cfgs {
		trials := sets(3, 10)
		if c.m > DefaultSize {
			trials = sets(1, 3)
		}
		var sumChurn, maxChurn, sumTotal float64
		for k := range trials {
			seed := uint64(5000 + 100*ci + k)
			r := newRand(seed)
			bs := randBackends(r, c.n, one)
			before := mustBuild(t, bs, c.m)
			gone := r.IntN(c.n)
			rest := slices.Delete(slices.Clone(bs), gone, gone+1)
			after := mustBuild(t, rest, c.m)

			goneID := bs[gone].ID
			var survivorSlots, churned, moved int
			for j := range before {
				if after[j] == goneID {
					t.Fatalf("seed %d: removed backend %s still in slot %d", seed, bs[gone].Name, j)
				}
				if before[j] != after[j] {
					moved++
				}
				if before[j] == goneID {
					continue
				}
				survivorSlots++
				if before[j] != after[j] {
					churned++
				}
			}
			churn := float64(churned) / float64(survivorSlots)
			sumChurn += churn
			maxChurn = max(maxChurn, churn)
			sumTotal += float64(moved) / float64(c.m)
			bound := 0.02 + 1000*float64(c.n)/float64(c.m)
			if churn > bound {
				t.Errorf("seed %d: M=%d N=%d: %.3f%% of the survivors' slots changed owner, bound %.3f%%",
					seed, c.m, c.n, 100*churn, 100*bound)
			}

			// Test 4: adding it back, in any order, restores the table.
			again := mustBuild(t, shuffled(r, append(rest, bs[gone])), c.m)
			if !slices.Equal(before, again) {
				t.Fatalf("seed %d: M=%d N=%d: adding %s back did not restore the table", seed, c.m, c.n, bs[gone].Name)
			}
		}
		t.Logf("M=%-6d N=%-4d: survivor churn mean %.3f%% max %.3f%% (ideal 0); total slots moved mean %.3f%% (ideal 1/N = %.3f%%); %d sets",
			c.m, c.n, 100*sumChurn/float64(trials), 100*maxChurn, 100*sumTotal/float64(trials), 100/float64(c.n), trials)
	}
}

// Test 5: the input order does not matter, and neither do draining backends.
func TestOrderAndZeroWeights(t *testing.T) {
	for s := range sets(10, 30) {
		seed := uint64(6000 + s)
		r := newRand(seed)
		m := Sizes[r.IntN(len(Sizes)-1)] // skip the largest to stay quick
		n := 1 + r.IntN(300)
		bs := randBackends(r, n, func() uint32 { return uint32(r.IntN(5)) })
		bs[r.IntN(n)].Weight = 1 + uint32(r.IntN(5))
		table := mustBuild(t, bs, m)
		if got := mustBuild(t, shuffled(r, bs), m); !slices.Equal(table, got) {
			t.Fatalf("seed %d: M=%d N=%d: shuffled input gives another table", seed, m, n)
		}
		var live []Backend
		in := counts(table)
		for _, b := range bs {
			if b.Weight == 0 {
				if in[b.ID] != 0 {
					t.Fatalf("seed %d: %s has weight 0 but %d slots", seed, b.Name, in[b.ID])
				}
				continue
			}
			live = append(live, b)
		}
		if got := mustBuild(t, live, m); !slices.Equal(table, got) {
			t.Fatalf("seed %d: dropping the weight-0 backends changed the table", seed)
		}
	}
}

func TestBuilderReuse(t *testing.T) {
	var b Builder
	for s := range sets(10, 40) {
		seed := uint64(7000 + s)
		r := newRand(seed)
		m := Sizes[r.IntN(len(Sizes)-1)]
		n := 1 + r.IntN([]int{3, 50, 1000}[s%3])
		bs := randBackends(r, n, func() uint32 { return 1 + uint32(r.IntN(1000)) })
		table := make([]uint32, m)
		for i := range table {
			table[i] = 0xdeadbeef // BuildInto must overwrite every slot
		}
		if err := b.BuildInto(table, bs); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if want := mustBuild(t, bs, m); !slices.Equal(table, want) {
			t.Fatalf("seed %d: M=%d N=%d: reused Builder gives another table than Build", seed, m, n)
		}
	}
}

func TestIDsAreOpaque(t *testing.T) {
	bs := []Backend{{"a", 0, 1}, {"b", math.MaxUint32, 1}}
	c := counts(mustBuild(t, bs, 1021))
	if c[0] != 511 || c[math.MaxUint32] != 510 {
		t.Fatalf("counts %v, want 511 slots of ID 0 and 510 of ID 0xffffffff", c)
	}
}

func TestErrors(t *testing.T) {
	ok := []Backend{{"10.0.0.1", 1, 1}}
	for _, m := range []uint64{0, 1, 2, 1000, 65536, 65539, 1 << 40} {
		if _, err := Build(ok, m); !errors.Is(err, ErrInvalidSize) {
			t.Errorf("Build(M=%d) = %v, want ErrInvalidSize", m, err)
		}
		if ValidSize(m) {
			t.Errorf("ValidSize(%d) = true", m)
		}
	}
	if err := BuildInto(make([]uint32, 1000), ok); !errors.Is(err, ErrInvalidSize) {
		t.Errorf("BuildInto(len 1000) = %v, want ErrInvalidSize", err)
	}
	for _, m := range Sizes {
		if !ValidSize(m) {
			t.Errorf("ValidSize(%d) = false", m)
		}
	}

	dup := []Backend{{"10.0.0.1", 1, 1}, {"10.0.0.2", 2, 1}, {"10.0.0.1", 3, 0}}
	_, err := Build(dup, DefaultSize)
	if !errors.Is(err, ErrDuplicateName) || !strings.Contains(err.Error(), `"10.0.0.1"`) {
		t.Errorf("duplicate names: %v, want ErrDuplicateName naming 10.0.0.1", err)
	}

	for _, bs := range [][]Backend{nil, {}, {{"10.0.0.1", 1, 0}, {"10.0.0.2", 2, 0}}} {
		if _, err := Build(bs, DefaultSize); !errors.Is(err, ErrNoBackends) {
			t.Errorf("Build(%v) = %v, want ErrNoBackends", bs, err)
		}
	}

	// The table is left alone on error.
	table := []uint32{7}
	table = slices.Repeat(table, 1021)
	if err := BuildInto(table, dup); err == nil || slices.ContainsFunc(table, func(v uint32) bool { return v != 7 }) {
		t.Errorf("BuildInto with an error: err %v, table modified", err)
	}

	// Weights this large cannot overflow the uint64 sum, but they must not
	// overflow anything else either.
	big := []Backend{{"a", 1, math.MaxUint32}, {"b", 2, math.MaxUint32}, {"c", 3, 1}}
	c := counts(mustBuild(t, big, DefaultSize))
	if c[1]+c[2] != DefaultSize || c[3] != 0 {
		t.Errorf("huge weights: counts %v", c)
	}
}

func TestSizesArePrime(t *testing.T) {
	if !slices.IsSorted(Sizes) {
		t.Errorf("Sizes not ascending: %v", Sizes)
	}
	for _, need := range []uint64{DefaultSize, 65537, 655373} {
		if !slices.Contains(Sizes, need) {
			t.Errorf("Sizes lacks %d", need)
		}
	}
	for _, m := range Sizes {
		if m < 3 {
			t.Errorf("size %d too small", m)
			continue
		}
		for d := uint64(2); d*d <= m; d++ {
			if m%d == 0 {
				t.Errorf("size %d is not prime: divisible by %d", m, d)
				break
			}
		}
	}
}

// Test 6: the golden table. Every node of a fleet builds its rings
// independently and a flow must map to the same real on all of them, also
// while nodes run different versions during a rollout. Any change to the
// hash, its seeds, the apportionment or the turn order changes the rings,
// so it must show up here: if this test fails, the change breaks ring
// compatibility between versions and must be treated as such (not fixed by
// updating the constants).
func TestGolden(t *testing.T) {
	bs := []Backend{
		{Name: "10.0.0.1", ID: 1, Weight: 1},
		{Name: "10.0.0.2", ID: 2, Weight: 1},
		{Name: "10.0.0.3", ID: 3, Weight: 2},
	}
	table := mustBuild(t, bs, DefaultSize)
	c := counts(table)
	gotCounts := fmt.Sprint(c[1], c[2], c[3])
	gotHead := fmt.Sprint(table[:32])
	const (
		wantCounts = "16384 16384 32769"
		wantHead   = "GOLDEN"
	)
	if gotCounts != wantCounts {
		t.Errorf("slot counts %s, want %s", gotCounts, wantCounts)
	}
	if gotHead != wantHead {
		t.Errorf("first 32 slots\n%s\nwant\n%s", gotHead, wantHead)
	}
	h := []uint64{hashName(offsetSeed, "10.0.0.1"), hashName(skipSeed, "10.0.0.1")}
	if got, want := fmt.Sprintf("%#x", h), "HASH"; got != want {
		t.Errorf("hashName(10.0.0.1) = %s, want %s", got, want)
	}
}
