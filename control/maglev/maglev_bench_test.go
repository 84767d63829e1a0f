package maglev

import (
	"fmt"
	"testing"
)

func benchSets() []struct {
	name string
	gen  func(n int) []Backend
} {
	return []struct {
		name string
		gen  func(n int) []Backend
	}{
		{"equal", func(n int) []Backend { return randBackends(newRand(1), n, one) }},
		{"random", func(n int) []Backend {
			r := newRand(2)
			return randBackends(r, n, func() uint32 { return 1 + uint32(r.IntN(1000)) })
		}},
		// One backend with 1000 times the weight of the others: a scheduler
		// that visits every backend every round spins here.
		{"skewed", func(n int) []Backend {
			bs := randBackends(newRand(3), n, one)
			bs[0].Weight = 1000
			return bs
		}},
	}
}

// BenchmarkBuild measures Build (which allocates the table and scratch).
func BenchmarkBuild(b *testing.B) {
	for _, m := range []uint64{65537, 655373} {
		for _, n := range []int{10, 100, 1000} {
			for _, s := range benchSets() {
				bs := s.gen(n)
				b.Run(fmt.Sprintf("M=%d/N=%d/%s", m, n, s.name), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if _, err := Build(bs, m); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkBuildInto measures the package-level BuildInto (caller's table,
// fresh scratch) and Builder.BuildInto (caller's table, reused scratch: no
// allocations).
func BenchmarkBuildInto(b *testing.B) {
	for _, m := range []uint64{65537, 655373} {
		for _, n := range []int{10, 100, 1000} {
			for _, s := range benchSets() {
				bs := s.gen(n)
				table := make([]uint32, m)
				b.Run(fmt.Sprintf("func/M=%d/N=%d/%s", m, n, s.name), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if err := BuildInto(table, bs); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.Run(fmt.Sprintf("Builder/M=%d/N=%d/%s", m, n, s.name), func(b *testing.B) {
					b.ReportAllocs()
					var bld Builder
					for b.Loop() {
						if err := bld.BuildInto(table, bs); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkPaper is the straightforward unweighted algorithm from the
// tests, for comparison.
func BenchmarkPaper(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		bs := randBackends(newRand(1), n, one)
		b.Run(fmt.Sprintf("M=65537/N=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				refPlain(bs, 65537)
			}
		})
	}
}
