package tc

import "fmt"

// Stat names one counter of the decapsulation program (enum lbd_decap_stat
// in bpf/include/lbd_decap.h, same order: TestStatNamesMatchHeader keeps
// them in step). Every packet the program sees is counted in exactly one.
type Stat int

// The counters. "6in4" is an inner IPv6 packet in an outer IPv4 header.
const (
	StatIPIP4in4 Stat = iota
	StatIPIP6in4
	StatIPIP4in6
	StatIPIP6in6
	StatGUE4in4
	StatGUE6in4
	StatGUE4in6
	StatGUE6in6
	StatPassNotTunnel
	StatPassNotVIP
	StatPassFragment
	StatDropMalformed
	StatDropFailed
	NumStats
)

var statNames = [NumStats]string{
	"ipip_4in4", "ipip_6in4", "ipip_4in6", "ipip_6in6",
	"gue_4in4", "gue_6in4", "gue_4in6", "gue_6in6",
	"pass_not_tunnel", "pass_not_vip", "pass_fragment", "drop_malformed", "drop_failed",
}

// String is the counter's name in APIs and metrics, e.g. "ipip_6in4".
func (s Stat) String() string {
	if s < 0 || s >= NumStats {
		return fmt.Sprintf("stat-%d", int(s))
	}
	return statNames[s]
}

// IsDecap says whether the counter counts decapsulated packets.
func (s Stat) IsDecap() bool { return s >= StatIPIP4in4 && s <= StatGUE6in6 }

// Stats are the counters summed over CPUs.
type Stats [NumStats]uint64

// Decapsulated is the number of packets decapsulated, all kinds together.
func (s Stats) Decapsulated() uint64 {
	var n uint64
	for i := StatIPIP4in4; i <= StatGUE6in6; i++ {
		n += s[i]
	}
	return n
}

// Map returns the non-zero counters by name.
func (s Stats) Map() map[string]uint64 {
	m := make(map[string]uint64)
	for i := Stat(0); i < NumStats; i++ {
		if s[i] != 0 {
			m[i.String()] = s[i]
		}
	}
	return m
}

// Stats reads the counters.
func (d *Decap) Stats() (Stats, error) {
	var per []decapDecapCounters
	if err := d.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("read decap stats: %w", err)
	}
	var s Stats
	for _, c := range per {
		for i := range s {
			s[i] += c.Counters[i]
		}
	}
	return s, nil
}
