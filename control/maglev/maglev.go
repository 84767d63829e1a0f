// Package maglev builds the per-VIP Maglev lookup tables ("rings") that the
// XDP datapath indexes with a flow hash.
//
// # Algorithm
//
// The table is populated with the algorithm from Eisenbud et al., "Maglev: A
// Fast and Reliable Software Network Load Balancer" (NSDI 2016), section
// 3.4: every backend has a preference list (a permutation of the M slots)
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
// Weights work the way Katran's MaglevHashV2 and Cilium's pkg/maglev do: a
// backend does not take a turn in every round, only when its accumulated
// weight allows it, so the heaviest backend takes a turn every round and a
// backend of half its weight every other round. This package makes two
// changes to that scheme, both about exactness and speed, not about the idea:
//
//  1. The number of turns, and so the number of slots, of every backend is
//     fixed before the table is filled: c_i is M*w_i/W rounded down or up
//     by the largest-remainder (Hamilton) method, so the c_i sum to exactly
//     M. Every turn claims exactly one slot, so backend i ends up with
//     exactly c_i slots, which is the closest any table of M slots can get
//     to the weight share: |c_i - M*w_i/W| < 1 slot. (A backend whose ideal
//     share is below one slot can therefore get 0 slots; at M=65537 that
//     needs a weight below about 1/65537 of the total.)
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
// (FNV-1a 64 plus a finaliser, with the constant seeds below; hash/maphash
// would be randomly seeded per process). Changing the hash, the seeds, the
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
// Building also needs M/8 bytes of bitmap, about 48 bytes per backend and
// 4 bytes per round (at most 4*M); a Builder keeps these between builds.
//
// # Disruption
//
// Maglev favours balance over minimal disruption. Measured by
// TestRemoveOneBackend (random backend names, equal weights; "survivor
// churn" is the share of the slots held by surviving backends that moved to
// another survivor, ideal 0; the removed backend's own slots, about 1/N of
// the table, always move):
//
//	M=65537:   N=10  0.74%   N=100  1.4%   N=1000  2.4%
//	M=655373:  N=10  0.23%   N=100  0.47%  N=1000  1.1%
//
// (mean over the random sets; see the test log for the worst case.)
package maglev

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
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

// DefaultSize is the table size used unless a VIP asks for another: with
// up to a few hundred reals per VIP it keeps each real's share within a
// slot of its weight and the disruption on a change small, at 256 KiB per
// VIP.
const DefaultSize = 65537

// Sizes lists the supported table sizes, ascending. All are prime, which
// the permutations need (any skip in 1..M-1 then visits every slot). The
// paper recommends M much larger than the number of backends (M > 100*N)
// to keep the balance and disruption good.
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
// unchanged. It allocates only scratch space proportional to the number of
// backends and M/32; use a Builder to reuse that too.
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
}

// state is one backend during a build.
type state struct {
	id    uint32 // Backend.ID
	pos   uint32 // next slot of its permutation to try
	perm  perm   // its permutation's step
	count uint32 // number of turns (and slots) it gets
	round uint32 // round of its next turn
	err   uint32 // k*R mod count, for the Bresenham spacing of its turns
	gap   uint32 // R / count
	rem   uint32 // R % count
	link  int32  // next st index in its round's circular FIFO
	frac  uint64 // (M*weight) mod W: remainder for the largest-remainder step
}

// BuildInto is the package-level BuildInto, reusing b's scratch space.
func (b *Builder) BuildInto(table []uint32, backends []Backend) error {
	m := uint64(len(table))
	if !ValidSize(m) {
		return sizeError(m)
	}
	if m > math.MaxUint32 || uint64(len(backends)) > math.MaxInt32 {
		// Unreachable with the sizes above and any realistic input; it
		// keeps the uint32/int32 arithmetic below honest.
		return fmt.Errorf("%w: %d backends, %d slots: too many to index", ErrWeightOverflow, len(backends), m)
	}

	// Sort by Name so that the result does not depend on input order, and
	// detect duplicates (draining ones included: a duplicate is a
	// configuration error whatever its weight).
	order := b.order[:0]
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
		total, carry = bits.Add64(total, w, 0)
		if carry != 0 {
			return fmt.Errorf("%w: the weights of %d backends sum to more than 2^64-1; scale them down", ErrWeightOverflow, len(backends))
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%w (%d backends given, all with weight 0 or none at all); add a backend or give one a weight",
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
		hi, lo := bits.Mul64(m, uint64(be.Weight))
		c, frac := bits.Div64(hi, lo, total) // hi < total as M*w/W <= M
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
		rank := b.rank[:0]
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

	used := slices.Grow(b.used[:0], int((m+63)/64))[:(m+63)/64]
	b.used = used
	clear(used)

	for r := range rounds {
		tail := buckets[r]
		if tail < 0 {
			continue
		}
		for i := st[tail].link; ; {
			s := &st[i]
			next := s.link // push below overwrites it
			// One turn: claim the first empty slot in the permutation.
			p, nextPos := firstFree(used, s.pos, &s.perm)
			used[p>>6] |= 1 << (p & 63)
			table[p] = s.id
			s.pos = nextPos
			// Next turn in round floor((k+1)*R/count), always > r.
			s.round += s.gap
			s.err += s.rem
			if s.err >= s.count {
				s.err -= s.count
				s.round++
			}
			if s.round < rounds {
				push(s.round, i)
			}
			if i == tail {
				break
			}
			i = next
		}
	}
	return nil
}

// firstFree returns the first slot not marked in used among p, p+skip,
// p+2*skip, ... (mod m), and the slot after it in that sequence. s holds
// skip and its derived constants.
//
// This loop is where a build spends its time: about 6 to 12 probes per
// slot, mostly near the end when the table is nearly full. The probes are
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

func sizeError(m uint64) error {
	return fmt.Errorf("%w: %d slots; the table size must be one of the primes %v (maglev.Sizes)", ErrInvalidSize, m, Sizes)
}
