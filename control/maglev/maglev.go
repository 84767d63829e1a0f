// Package maglev builds the per-VIP Maglev lookup tables ("rings") that the
// XDP datapath indexes with a flow hash.
//
// # Algorithm
//
// The table is populated with the algorithm from Eisenbud et al., "Maglev: A
// Fast and Reliable Software Network Load Balancer" (NSDI 2016), section
// "Consistent Hashing": every backend has a preference list (a permutation
// of the M slots)
//
//	permutation[j] = (offset + j*skip) mod M
//	offset = h1(Name) mod M
//	skip   = h2(Name) mod (M-1) + 1
//
// and backends take turns claiming their next preferred slot that is still
// empty until all M slots are full. Because M is prime and 1 <= skip < M,
// every preference list visits every slot, so a turn always finds a slot.
//
// # Weights
//
// Weights follow the idea of Katran's MaglevHashV2 and Cilium's pkg/maglev:
// a backend does not take a turn in every round, only when its accumulated
// weight allows it, so the heaviest backend takes a turn every round and a
// backend of half its weight every other round. This package makes two
// changes to that scheme, both about exactness and speed, not about the idea:
//
//  1. The number of turns, and so the number of slots, of every backend is
//     fixed before the table is filled: c_i is M*w_i/W rounded down or up
//     by the largest-remainder (Hamilton) method, so the c_i sum to exactly
//     M. Every turn claims exactly one slot, so backend i ends up with
//     exactly c_i slots, which is the closest any table of M slots can get
//     to the weight share: |c_i - M*w_i/W| < 1 slot. (So a backend whose
//     ideal share is below one slot, a weight below 1/M of the total, can
//     get 0 slots.) Schemes that stop when the table is full, mid-round,
//     can be off by more.
//  2. With R = max c_i rounds, backend i takes its k-th turn in round
//     floor(k*R/c_i) (Bresenham spacing; the heaviest backend plays every
//     round). Backends wait in a bucket queue keyed by the round of their
//     next turn, so a backend that is not allowed a turn costs nothing. A
//     naive loop that visits every backend every round costs N*R, which for
//     one heavy backend among many light ones approaches N*M.
//
// Within a round backends play first-in first-out: in the order in which
// they took their previous turn, and in Name order in round 0. With equal
// weights every backend plays every round in Name order, except that the
// last round is played only by the first M mod N backends, which is
// exactly the unweighted algorithm of the paper (the tests check this
// against a straightforward implementation of it).
//
// # Determinism
//
// Every node in a fleet builds its tables independently, and a flow must
// reach the same real whichever node it lands on. So the table is a pure
// function of the set of (Name, ID, Weight) and of M: the input is sorted by
// Name before anything else, so the order in which a caller lists backends
// (map iteration, API order) does not matter, and the permutations come
// from a hash that is fixed across processes, architectures and versions
// (FNV-1a 64 plus a finaliser, with the constant seeds offsetSeed and
// skipSeed; hash/maphash would be randomly seeded per process). Changing the hash, the seeds, the
// apportionment or the turn order changes the tables and breaks ring
// compatibility between nodes running different versions: TestGolden pins
// them.
//
// # Memory
//
// A table is M uint32s per VIP:
//
//	M        table
//	1021       4 KiB
//	65537    256 KiB  (DefaultSize)
//	655373   2.5 MiB
//
// Building also needs scratch space: M/8 bytes of bitmap, about 72 bytes
// per backend and 4 bytes per round (R, about M/N with equal weights, at
// most M). A Builder keeps it between builds.
//
// # Disruption
//
// Maglev favours balance over minimal disruption. When one of N equal
// backends is removed, its slots (1/N of the table) move, and so do some of
// the survivors' slots, which ideally would not. Measured by
// TestRemoveOneBackend (random names; mean and worst of 60 sets at M=65537
// and 12 at M=655373), the share of the survivors' slots that change owner:
//
//	          N=10           N=100          N=1000
//	M=65537   0.27% (0.63%)  0.58% (0.72%)  0.58% (0.64%)
//	M=655373  0.07% (0.15%)  0.14% (0.15%)  0.33% (0.35%)
//
// So in all about 1/N + 0.6% of the table moves at M=65537 (for N=1000:
// 0.68% against the ideal 0.1%), and 1/N + 0.35% at M=655373.
//
// # Speed
//
// On a 2-core AMD EPYC VM (BenchmarkBuild, 10 to 1000 backends, equal or
// random weights): 1.1 to 1.7 ms for M=65537 and 15 to 22 ms for M=655373,
// less when one backend dominates; the paper's algorithm written plainly
// (BenchmarkPaper, unweighted) takes 2 to 3 ms for M=65537. Nearly all the
// time goes into the population loop, which is inherently sequential:
// firstFree and claimTail explain what makes it fast.
package maglev

import (
	"errors"
	"fmt"
	"math"
	mathbits "math/bits"
	"slices"
	"strings"
)

// Backend is one real server in a VIP's table.
type Backend struct {
	// Name is the backend's stable identity, e.g. the real's address
	// "10.0.0.1" or "2001:db8::1". It alone determines the backend's
	// permutation and its place in the build order, so it must be the same
	// on every node and unique within a VIP.
	Name string
	// ID is the value written into the backend's slots (the datapath's real
	// index). It is not interpreted; any value, 0 included, is allowed.
	ID uint32
	// Weight is the backend's relative share of slots. 0 means the backend
	// is not in the table (draining).
	Weight uint32
}

// DefaultSize is the table size used unless a VIP asks for another. At
// 256 KiB per VIP it suits up to several hundred reals (the paper
// recommends M > 100*N; see Disruption in the package documentation).
const DefaultSize = 65537

// Sizes lists the supported table sizes, ascending. All are prime, which
// the permutations need (any skip in 1..M-1 then visits every slot). The
// paper recommends M much larger than the number of backends (M > 100*N)
// to keep the balance and disruption good. Do not modify it; BuildInto
// rejects entries that are not primes in [3, 2^31).
var Sizes = []uint64{1021, 4099, 16381, 65537, 131071, 262139, 655373}

// Errors returned by Build and BuildInto, wrapped with details; test for
// them with errors.Is.
var (
	// ErrNoBackends means no backend has Weight > 0, so there is nothing to
	// put in the table. Callers usually remove the VIP's ring instead.
	ErrNoBackends = errors.New("maglev: no backend with weight > 0")
	// ErrInvalidSize means the table size is not one of Sizes.
	ErrInvalidSize = errors.New("maglev: unsupported table size")
	// ErrDuplicateName means two backends have the same Name.
	ErrDuplicateName = errors.New("maglev: duplicate backend name")
	// ErrWeightOverflow means the sum of the weights does not fit in 64
	// bits (or there are too many backends to index).
	ErrWeightOverflow = errors.New("maglev: total weight overflows")
)

// Seeds of the permutation hash: the first 128 fractional bits of pi, as in
// Blowfish's P-array, chosen only to be obviously not tuned. They are part
// of the table format: see TestGolden.
const (
	offsetSeed = 0x243f6a8885a308d3
	skipSeed   = 0x13198a2e03707344
)

// ValidSize reports whether m is one of Sizes.
func ValidSize(m uint64) bool {
	return slices.Contains(Sizes, m)
}

// Build returns a table of m slots, each holding the ID of one of the
// backends with Weight > 0; see the package documentation for how slots are
// assigned. The result depends only on the set of backends and m, not on
// their order in backends.
//
// It fails if m is not one of Sizes (ErrInvalidSize), if two backends share
// a Name (ErrDuplicateName), if no backend has Weight > 0 (ErrNoBackends) or
// if the weights overflow (ErrWeightOverflow).
func Build(backends []Backend, m uint64) ([]uint32, error) {
	if !ValidSize(m) {
		return nil, sizeError(m)
	}
	table := make([]uint32, m)
	var b Builder
	if err := b.BuildInto(table, backends); err != nil {
		return nil, err
	}
	return table, nil
}

// BuildInto is Build writing into table, whose length is the table size and
// must be one of Sizes. Every slot is overwritten; on error table is left
// unchanged. It allocates only scratch space (see Memory in the package
// documentation); use a Builder to reuse that too.
func BuildInto(table []uint32, backends []Backend) error {
	var b Builder
	return b.BuildInto(table, backends)
}

// Builder builds tables like BuildInto but keeps its scratch space between
// calls, so that rebuilding tables of a similar shape does not allocate.
// The zero value is ready to use. A Builder must not be used by several
// goroutines at once; the tables it builds do not depend on what it built
// before.
type Builder struct {
	order   []int32  // indexes into the caller's backends, sorted by Name
	st      []state  // one per backend with Weight > 0, in Name order
	rank    []int32  // indexes into st, for the largest-remainder step
	buckets []int32  // per round: tail of a circular FIFO of st indexes, or -1
	used    []uint64 // bitmap of the slots filled so far
	free    []uint32 // the last free slots
}

// state is one backend during a build.
type state struct {
	id    uint32 // Backend.ID
	pos   uint32 // next slot of its permutation to try
	perm  perm   // its permutation's step
	count uint32 // number of turns (and slots) it gets
	round uint32 // round of its next turn
	acc   uint32 // k*R mod count, for the Bresenham spacing of its turns
	gap   uint32 // R / count
	rem   uint32 // R % count
	link  int32  // next st index in its round's circular FIFO
	inv   uint32 // skip^-1 mod M, or 0 until needed
	frac  uint64 // (M*weight) mod W: remainder for the largest-remainder step
}

// BuildInto is the package-level BuildInto, reusing b's scratch space.
func (b *Builder) BuildInto(table []uint32, backends []Backend) error {
	m := uint64(len(table))
	if !ValidSize(m) {
		return sizeError(m)
	}
	if !supported(m) {
		// Only if Sizes was modified: a composite m would leave some
		// permutations unable to reach every slot (and firstFree looping
		// forever), and m >= 2^31 would break the arithmetic below.
		return fmt.Errorf("%w: %d is in maglev.Sizes but is not a prime in [3, 2^31); Sizes must not be modified", ErrInvalidSize, m)
	}
	if uint64(len(backends)) > math.MaxInt32 {
		return fmt.Errorf("%w: %d backends are too many to index", ErrWeightOverflow, len(backends))
	}

	// Sort by Name so that the result does not depend on input order, and
	// detect duplicates (draining ones included: a duplicate is a
	// configuration error whatever its weight).
	order := slices.Grow(b.order[:0], len(backends))
	for i := range backends {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, func(x, y int32) int {
		return strings.Compare(backends[x].Name, backends[y].Name)
	})
	b.order = order
	for k := 1; k < len(order); k++ {
		if backends[order[k-1]].Name == backends[order[k]].Name {
			return fmt.Errorf("%w: %q is listed more than once; every backend of a VIP needs a unique Name",
				ErrDuplicateName, backends[order[k]].Name)
		}
	}

	// Total weight W of the backends in the table.
	var total uint64
	n := 0
	for _, x := range order {
		w := uint64(backends[x].Weight)
		if w == 0 {
			continue
		}
		var carry uint64
		total, carry = mathbits.Add64(total, w, 0)
		if carry != 0 {
			return fmt.Errorf("%w: the weights of %d backends sum to more than 2^64-1; scale them down", ErrWeightOverflow, len(backends))
		}
		n++
	}
	if n == 0 {
		if len(backends) == 0 {
			return fmt.Errorf("%w: the backend list is empty; add a backend, or remove the VIP's table", ErrNoBackends)
		}
		return fmt.Errorf("%w: all %d backends have weight 0 (draining); give one a weight, or remove the VIP's table",
			ErrNoBackends, len(backends))
	}

	// Per-backend permutation and slot count floor(M*w/W).
	st := slices.Grow(b.st[:0], n)[:n]
	b.st = st
	m32 := uint32(m)
	var assigned uint64
	j := 0
	for _, x := range order {
		be := &backends[x]
		if be.Weight == 0 {
			continue
		}
		hi, lo := mathbits.Mul64(m, uint64(be.Weight))
		c, frac := mathbits.Div64(hi, lo, total) // hi < total as M*w/W <= M
		assigned += c
		st[j] = state{
			id:    be.ID,
			pos:   uint32(hashName(offsetSeed, be.Name) % m),
			perm:  newPerm(uint32(hashName(skipSeed, be.Name)%(m-1)+1), m32),
			count: uint32(c),
			frac:  frac,
		}
		j++
	}

	// Largest remainder: the m-assigned (< n) slots left over go to the
	// backends with the largest remainders, ties to the first in Name
	// order. Now sum(count) == m exactly.
	if short := int(m - assigned); short > 0 {
		rank := slices.Grow(b.rank[:0], n)
		for i := range n {
			rank = append(rank, int32(i))
		}
		b.rank = rank
		slices.SortFunc(rank, func(x, y int32) int {
			if st[x].frac != st[y].frac {
				if st[x].frac > st[y].frac {
					return -1
				}
				return 1
			}
			return int(x - y)
		})
		for _, i := range rank[:short] {
			st[i].count++
		}
	}

	// R rounds; the heaviest backend plays in every one of them.
	var rounds uint32
	for i := range st {
		rounds = max(rounds, st[i].count)
	}
	buckets := slices.Grow(b.buckets[:0], int(rounds))[:rounds]
	b.buckets = buckets
	for r := range buckets {
		buckets[r] = -1
	}
	// push appends st index i to the FIFO of round r. Each FIFO is a
	// circular list identified by its tail, whose link is the head.
	push := func(r uint32, i int32) {
		t := buckets[r]
		if t < 0 {
			st[i].link = i
		} else {
			st[i].link = st[t].link
			st[t].link = i
		}
		buckets[r] = i
	}
	for i := range st {
		s := &st[i]
		if s.count == 0 {
			continue // share below half a slot and lost the remainder draw
		}
		s.gap = rounds / s.count
		s.rem = rounds % s.count
		push(0, int32(i))
	}

	f := filler{m: m32, left: m32, mu: math.MaxUint64 / m}
	f.used = slices.Grow(b.used[:0], int((m+63)/64))[:(m+63)/64]
	clear(f.used)
	if m%64 != 0 {
		f.used[m/64] = ^uint64(0) << (m % 64) // padding: never free
	}
	f.free = slices.Grow(b.free[:0], tailFree)
	if f.left <= tailFree {
		f.collectFree()
	}

	for r := range rounds {
		tail := buckets[r]
		if tail < 0 {
			continue
		}
		for i := st[tail].link; ; {
			s := &st[i]
			next := s.link // push below overwrites it
			table[f.claim(s)] = s.id
			// Next turn in round floor((k+1)*R/count), always > r.
			// Without a branch, which would be as unpredictable as the
			// weights: d = acc+rem-count; carry unless d < 0 (all values
			// are below 2^31, so the sign bit of d says so).
			d := s.acc + s.rem - s.count
			neg := uint32(int32(d) >> 31) // 0 or all ones (= -1)
			s.acc = d + s.count&neg
			s.round += s.gap + 1 + neg
			if s.round < rounds {
				push(s.round, i)
			}
			if i == tail {
				break
			}
			i = next
		}
	}
	b.used, b.free = f.used, f.free
	return nil
}

// tailFree is the number of free slots below which filler stops probing
// permutations and instead computes, for every free slot, how far down the
// backend's permutation it is. Probing costs about m/free probes per turn,
// the direct way about free multiplications; the threshold was tuned with
// BenchmarkBuild.
const tailFree = 128

// filler claims slots for turns.
type filler struct {
	used []uint64 // bitmap of claimed slots, while left > tailFree
	free []uint32 // free slots, once left <= tailFree
	left uint32   // number of free slots
	m    uint32
	mu   uint64 // floor((2^64-1)/m), for Barrett reduction mod m
}

// claim gives the turn to backend s: it claims the first free slot of s's
// permutation from s.pos on, returns it and moves s.pos past it.
func (f *filler) claim(s *state) uint32 {
	if f.left > tailFree {
		p, next := firstFree(f.used, s.pos, &s.perm)
		f.used[p>>6] |= 1 << (p & 63)
		s.pos = next
		if f.left--; f.left == tailFree {
			f.collectFree()
		}
		return p
	}
	return f.claimTail(s)
}

// collectFree lists the slots still free.
func (f *filler) collectFree() {
	for w, bits := range f.used {
		for free := ^bits; free != 0; free &= free - 1 {
			f.free = append(f.free, uint32(w*64+mathbits.TrailingZeros64(free)))
		}
	}
}

// claimTail is claim once few slots are free: the first free slot of the
// permutation p -> p+skip from s.pos is the free slot x with the fewest
// steps d from s.pos, where s.pos + d*skip = x (mod m), so d = (x-s.pos) *
// skip^-1 mod m. This gives the same slot as probing, only faster when the
// table is nearly full.
func (f *filler) claimTail(s *state) uint32 {
	if s.inv == 0 {
		s.inv = modInverse(s.perm.skip, f.m)
	}
	best := uint64(math.MaxUint64)
	for k, x := range f.free {
		diff := x - s.pos
		diff += f.m & uint32(int32(diff)>>31) // (x - pos) mod m
		best = min(best, f.mulMod(diff, s.inv)<<32|uint64(k))
	}
	k := uint32(best)
	p := f.free[k]
	last := len(f.free) - 1
	f.free[k] = f.free[last]
	f.free = f.free[:last]
	f.left--
	s.pos = s.perm.step(p)
	return p
}

// mulMod returns a*b mod m for a, b < m < 2^31 (Barrett reduction: no
// division).
func (f *filler) mulMod(a, b uint32) uint64 {
	x := uint64(a) * uint64(b)
	q, _ := mathbits.Mul64(x, f.mu) // x/m or x/m - 1
	r := x - q*uint64(f.m)          // < 2m
	d := r - uint64(f.m)
	return d + uint64(f.m)&uint64(int64(d)>>63)
}

// modInverse returns a^-1 mod m for a prime m and 0 < a < m (extended
// Euclid).
func modInverse(a, m uint32) uint32 {
	t, newT := int64(0), int64(1)
	r, newR := int64(m), int64(a)
	for newR != 0 {
		q := r / newR
		t, newT = newT, t-q*newT
		r, newR = newR, r-q*newR
	}
	if t < 0 {
		t += int64(m)
	}
	return uint32(t)
}

// firstFree returns the first slot not marked in used among p, p+skip,
// p+2*skip, ... (mod m), and the slot after it in that sequence. s holds
// skip and its derived constants.
//
// This loop is where a build spends its time: 6 to 12 probes per slot on
// average, most of them near the end when the table is nearly full (until
// claimTail takes over). The probes are
// independent loads from a small bitmap, so what limits them is the chain
// of additions mod m that produces p; the loop therefore follows two
// interleaved chains, p and p+skip, each stepping by 2*skip, which halves
// that chain. The wrap-around is done with a mask, not a branch, because it
// happens with probability skip/m, which no branch predictor can guess.
func firstFree(used []uint64, p uint32, s *perm) (slot, next uint32) {
	for {
		q := s.step(p)
		if used[p>>6]&(1<<(p&63)) == 0 {
			return p, q
		}
		if used[q>>6]&(1<<(q&63)) == 0 {
			return q, s.step(q)
		}
		p = s.step2(p)
	}
}

// perm is a permutation of 0..m-1, p -> p+skip mod m, for m < 2^31.
type perm struct {
	skip, back   uint32 // skip and m-skip
	skip2, back2 uint32 // 2*skip mod m and m minus that
}

func newPerm(skip, m uint32) perm {
	skip2 := skip + skip
	if skip2 >= m {
		skip2 -= m
	}
	return perm{skip, m - skip, skip2, m - skip2}
}

// step returns p+skip mod m: d = p+skip-m, plus m if d is negative (m < 2^31,
// so the sign bit of d says so).
func (s *perm) step(p uint32) uint32 {
	d := p - s.back
	return d + (s.back+s.skip)&uint32(int32(d)>>31)
}

// step2 returns p+2*skip mod m.
func (s *perm) step2(p uint32) uint32 {
	d := p - s.back2
	return d + (s.back2+s.skip2)&uint32(int32(d)>>31)
}

// hashName is the permutation hash: FNV-1a 64 over name starting from the
// FNV offset basis xor seed, then MurmurHash3's fmix64 finaliser, because
// FNV alone barely mixes the last bytes into the high bits and our names
// (addresses) differ mostly in their last bytes.
func hashName(seed uint64, name string) uint64 {
	const (
		fnvOffset = 14695981039346656037
		fnvPrime  = 1099511628211
	)
	h := uint64(fnvOffset) ^ seed
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= fnvPrime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// supported reports whether m is a prime in [3, 2^31), by trial division
// (at most about 23000 divisions; 400 for the largest default size).
func supported(m uint64) bool {
	if m < 3 || m >= 1<<31 || m%2 == 0 {
		return false
	}
	m32 := uint32(m)
	for d := uint32(3); d*d <= m32; d += 2 {
		if m32%d == 0 {
			return false
		}
	}
	return true
}

func sizeError(m uint64) error {
	return fmt.Errorf("%w: %d slots; the table size must be one of the primes %v (maglev.Sizes)", ErrInvalidSize, m, Sizes)
}
