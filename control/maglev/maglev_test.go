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
// (Eisenbud et al. 2016), with the permutation computed by
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
		// Weights include 0 (draining); this one keeps the set non-empty.
		bs = append(bs, Backend{Name: "anchor", ID: 999999, Weight: 1})
		if got, want := mustBuild(t, bs, m), refWeighted(bs, m); !slices.Equal(got, want) {
			t.Fatalf("seed %d: M=%d N=%d: table differs from the reference", seed, m, n)
		}
	}
}

// Every size, with one weighted and one unweighted set, against the
// references.
func TestAllSizesMatchReference(t *testing.T) {
	for k, m := range Sizes {
		seed := uint64(3500 + k)
		r := newRand(seed)
		bs := randBackends(r, 1+r.IntN(100), func() uint32 { return 1 + uint32(r.IntN(100)) })
		if got, want := mustBuild(t, bs, m), refWeighted(bs, m); !slices.Equal(got, want) {
			t.Fatalf("seed %d: M=%d N=%d weighted: table differs from the reference", seed, m, len(bs))
		}
		bs = randBackends(r, 1+r.IntN(100), one)
		if got, want := mustBuild(t, bs, m), refPlain(bs, m); !slices.Equal(got, want) {
			t.Fatalf("seed %d: M=%d N=%d: table differs from the paper's algorithm", seed, m, len(bs))
		}
	}
}

// Test 2: with unequal weights each backend's slot count is its ideal share
// q = M*w/W rounded down or up (largest remainder), which is the best any
// table of M slots can do: the count is an integer.
//
// The requirement "within 1% (relative) of the weight share" therefore
// holds for every backend whose ideal share is at least 100 slots, and the
// test asserts that. It cannot hold for every backend of every random set,
// for this or any other table-based algorithm (Cilium's and Katran's
// included): with up to 100 weights drawn from 1..1000 the total is about
// 50000, so at M=65537 a backend of weight 1 deserves about 1.3 slots and
// gets 1 or 2, an error of at least 23%; in general a backend is off by more
// than 1% unless its ideal share q is within 0.01*q of an integer, which
// for q < 50 means it must be (nearly) a whole number of slots. With N=100,
// a weight below about 38 (q < 50) occurs in almost every set. Relative
// accuracy for small weights needs a larger M (655373 gives 10 times more
// slots per unit of weight), not another algorithm. The test logs how
// close the random sets come.
func TestWeightedBalance(t *testing.T) {
	for _, m := range []uint64{DefaultSize, 655373} {
		nsets := sets(50, 200)
		if m > DefaultSize {
			nsets = sets(5, 20)
		}
		var maxAbs, maxRel, maxRelBig float64
		var backends, within1pct int
		for s := range nsets {
			seed := uint64(4000 + s)
			r := newRand(seed)
			n := 1 + r.IntN(100)
			bs := randBackends(r, n, func() uint32 { return 1 + uint32(r.IntN(1000)) })
			special := true
			switch s {
			case 0: // extreme ratio: one heavy, the rest weight 1
				bs[0].Weight = 1000
				for i := 1; i < n; i++ {
					bs[i].Weight = 1
				}
			case 1: // more extreme: shares far below one slot
				bs = append(bs, Backend{Name: "heavy", ID: 5000, Weight: math.MaxUint32})
			default:
				special = false
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
				if q >= 100 && rel > 0.01 {
					t.Fatalf("seed %d: M=%d: %s weight %d: %d slots, ideal %.2f: relative error %.4f > 1%%",
						seed, m, b.Name, b.Weight, got, q, rel)
				}
				if special {
					continue
				}
				backends++
				if rel <= 0.01 {
					within1pct++
				}
				maxAbs = max(maxAbs, abs)
				maxRel = max(maxRel, rel)
				if q >= 100 {
					maxRelBig = max(maxRelBig, rel)
				}
			}
		}
		t.Logf("M=%d, %d random sets, N<=100, weights 1..1000: max |slots-ideal| %.3f slots; max relative error %.3f%% for ideal shares >= 100 slots, %.1f%% over all; %d of %d backends (%.1f%%) within 1%%",
			m, nsets-2, maxAbs, 100*maxRelBig, 100*maxRel, within1pct, backends, 100*float64(within1pct)/float64(backends))
	}
}

// Tests 3 and 4: removing one of N equal backends moves all its slots and
// few others; adding it back restores the table.
//
// An ideal consistent hash would move only the removed backend's slots
// (1/N of the table) and none of the survivors'. Maglev gives up some of
// that for balance: without the removed backend every survivor takes its
// turns earlier, and a slot it reaches first now may be one another
// survivor used to get. That churn grows with N/M. Measured with 60 random
// sets at M=65537 and 12 at M=655373 (survivor churn = share of the
// survivors' slots that changed owner; ideal 0):
//
//	M=65537:  N=10 mean 0.27% (max 0.63%), N=100 0.58% (0.72%), N=1000 0.58% (0.64%)
//	M=655373: N=10 mean 0.07% (max 0.15%), N=100 0.14% (0.15%), N=1000 0.33% (0.35%)
//
// so the slots that move in total are 1/N plus well under 1%: for N=1000 at
// M=65537, 0.68% of the table against the ideal 0.1%. The test asserts
// survivor churn <= 1.5% at M=65537 and <= 0.75% at M=655373, about twice
// the worst case seen, so that a change that makes the table markedly less
// stable (e.g. a turn order that shifts globally when one backend goes)
// fails, while the randomness of the sets does not.
func TestRemoveOneBackend(t *testing.T) {
	type cfg struct {
		m uint64
		n int
	}
	bound := map[uint64]float64{65537: 0.015, 655373: 0.0075}
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
			gone := r.IntN(c.n)
			churn, moved := removeOne(t, seed, bs, gone, c.m)
			sumChurn += churn
			maxChurn = max(maxChurn, churn)
			sumTotal += moved
			if churn > bound[c.m] {
				t.Errorf("seed %d: M=%d N=%d: %.3f%% of the survivors' slots changed owner, bound %.3f%%",
					seed, c.m, c.n, 100*churn, 100*bound[c.m])
			}
		}
		t.Logf("M=%-6d N=%-4d: survivor churn mean %.3f%% max %.3f%% (ideal 0); slots moved in all mean %.3f%% (ideal 1/N = %.3f%%); %d sets",
			c.m, c.n, 100*sumChurn/float64(trials), 100*maxChurn, 100*sumTotal/float64(trials), 100/float64(c.n), trials)
	}
}

// The same with random weights 1..1000 (not asserted beyond what
// removeOne checks: removing a heavy backend moves more, by design).
func TestRemoveOneWeightedBackend(t *testing.T) {
	for _, n := range []int{10, 100, 1000} {
		var sumChurn, maxChurn float64
		trials := sets(2, 6)
		for k := range trials {
			seed := uint64(5500 + 10*n + k)
			r := newRand(seed)
			bs := randBackends(r, n, func() uint32 { return 1 + uint32(r.IntN(1000)) })
			churn, _ := removeOne(t, seed, bs, r.IntN(n), DefaultSize)
			sumChurn += churn
			maxChurn = max(maxChurn, churn)
		}
		t.Logf("M=%d N=%-4d weights 1..1000: survivor churn mean %.3f%% max %.3f%%; %d sets",
			DefaultSize, n, 100*sumChurn/float64(trials), 100*maxChurn, trials)
	}
}

// removeOne removes bs[gone], checks that none of its slots remain and that
// adding it back (in another order) restores the table, and returns the
// share of the survivors' slots that changed owner and the share of all
// slots that did.
func removeOne(t *testing.T, seed uint64, bs []Backend, gone int, m uint64) (churn, moved float64) {
	t.Helper()
	before := mustBuild(t, bs, m)
	rest := slices.Delete(slices.Clone(bs), gone, gone+1)
	after := mustBuild(t, rest, m)
	goneID := bs[gone].ID
	var survivorSlots, churned, changed int
	for j := range before {
		if after[j] == goneID {
			t.Fatalf("seed %d: removed backend %s still in slot %d", seed, bs[gone].Name, j)
		}
		if before[j] != after[j] {
			changed++
		}
		if before[j] == goneID {
			continue
		}
		survivorSlots++
		if before[j] != after[j] {
			churned++
		}
	}
	// Test 4: adding it back, in any order, restores the table.
	again := mustBuild(t, shuffled(newRand(seed), append(rest, bs[gone])), m)
	if !slices.Equal(before, again) {
		t.Fatalf("seed %d: M=%d N=%d: adding %s back did not restore the table", seed, m, len(bs), bs[gone].Name)
	}
	return float64(churned) / float64(survivorSlots), float64(changed) / float64(m)
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

// More backends than slots: each slot goes to a different backend, the
// first M in the paper's order.
func TestMoreBackendsThanSlots(t *testing.T) {
	const m = 1021
	bs := randBackends(newRand(8000), 1500, one)
	table := mustBuild(t, bs, m)
	if !slices.Equal(table, refPlain(bs, m)) || !slices.Equal(table, refWeighted(bs, m)) {
		t.Fatal("table differs from the references")
	}
	c := counts(table)
	if len(c) != m {
		t.Fatalf("%d distinct backends in %d slots", len(c), m)
	}
}

// Sizes is a variable; entries BuildInto cannot handle are rejected rather
// than looping forever (a composite M leaves some permutations short).
func TestModifiedSizes(t *testing.T) {
	saved := Sizes
	defer func() { Sizes = saved }()
	Sizes = append(slices.Clone(saved), 2, 65535)
	for _, m := range []int{2, 65535} {
		err := BuildInto(make([]uint32, m), []Backend{{"a", 1, 1}, {"b", 2, 1}})
		if !errors.Is(err, ErrInvalidSize) {
			t.Errorf("M=%d: %v, want ErrInvalidSize", m, err)
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

func TestModArithmetic(t *testing.T) {
	r := newRand(9000)
	for _, m := range Sizes {
		f := filler{m: uint32(m), mu: math.MaxUint64 / m}
		vals := []uint32{0, 1, 2, uint32(m) / 2, uint32(m) - 2, uint32(m) - 1}
		for range 200 {
			vals = append(vals, uint32(r.Uint64N(m)))
		}
		for _, a := range vals {
			for _, b := range vals[:20] {
				if got, want := f.mulMod(a, b), uint64(a)*uint64(b)%m; got != want {
					t.Fatalf("mulMod(%d, %d) mod %d = %d, want %d", a, b, m, got, want)
				}
			}
			if a == 0 {
				continue
			}
			if inv := modInverse(a, uint32(m)); uint64(a)*uint64(inv)%m != 1 {
				t.Fatalf("modInverse(%d, %d) = %d", a, m, inv)
			}
			p := newPerm(a, uint32(m))
			for _, x := range vals[:20] {
				if got, want := p.step(x), (uint64(x)+uint64(a))%m; uint64(got) != want {
					t.Fatalf("step(%d) with skip %d mod %d = %d, want %d", x, a, m, got, want)
				}
				if got, want := p.step2(x), (uint64(x)+2*uint64(a))%m; uint64(got) != want {
					t.Fatalf("step2(%d) with skip %d mod %d = %d, want %d", x, a, m, got, want)
				}
			}
		}
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
// updating the constants). The expected values were cross-checked with an
// independent implementation of the documented algorithm in Python.
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
		wantHead   = "[2 2 3 3 3 2 1 3 3 3 2 2 1 3 3 2 2 3 1 1 1 1 1 3 3 3 3 3 2 3 3 1]"
	)
	if gotCounts != wantCounts {
		t.Errorf("slot counts %s, want %s", gotCounts, wantCounts)
	}
	if gotHead != wantHead {
		t.Errorf("first 32 slots\n%s\nwant\n%s", gotHead, wantHead)
	}
	h := []uint64{hashName(offsetSeed, "10.0.0.1"), hashName(skipSeed, "10.0.0.1")}
	if got, want := fmt.Sprintf("%#x", h), "[0x10d61380d6a4e071 0x7cae1a956f2c947e]"; got != want {
		t.Errorf("hashName(10.0.0.1) = %s, want %s", got, want)
	}
}
