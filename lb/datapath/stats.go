package datapath

import "fmt"

// Stat names one global counter (enum lbd_stat in lbd_types.h, same order:
// TestStatNamesMatchHeader keeps them in step).
type Stat int

// The global counters. Every packet ends in exactly one of the action
// counters (StatTX through StatDropEncapFail); the rest are detail.
const (
	StatTX Stat = iota
	StatICMPEchoReply
	StatPassNonIP
	StatPassNonVIP
	StatPassNoVIPPort
	StatPassFragment
	StatDropFragment
	StatPassUnbalanceable
	StatDropUnbalanceable
	StatDropMalformedL2
	StatDropMalformedL3
	StatDropMalformedL4
	StatDropNoReal
	StatDropTooBig
	StatDropEncapFail
	StatLRUHit
	StatLRUMiss
	StatLRUMissNonSYN
	StatLRUInsertFail
	StatICMPTooBig
	StatLRURemoteHit
	StatLRUInsertCapped
	NumStats
)

var statNames = [NumStats]string{
	"tx", "icmp_echo_reply", "pass_non_ip", "pass_non_vip", "pass_no_vip_port",
	"pass_fragment", "drop_fragment", "pass_unbalanceable", "drop_unbalanceable",
	"drop_malformed_l2", "drop_malformed_l3", "drop_malformed_l4", "drop_no_real",
	"drop_too_big", "drop_encap_fail", "lru_hit", "lru_miss", "lru_miss_non_syn",
	"lru_insert_fail", "icmp_too_big", "lru_remote_hit", "lru_insert_capped",
}

// String is the counter's name in APIs and metrics, e.g. "drop_malformed_l3".
func (s Stat) String() string {
	if s < 0 || s >= NumStats {
		return fmt.Sprintf("stat-%d", int(s))
	}
	return statNames[s]
}

// IsAction says whether the counter is one of the per-packet outcomes.
func (s Stat) IsAction() bool { return s >= StatTX && s <= StatDropEncapFail }

// GlobalStats are the global counters summed over CPUs.
type GlobalStats [NumStats]uint64

// Packets is the number of packets the balancer has seen (the sum of the action counters).
func (g GlobalStats) Packets() uint64 {
	var n uint64
	for s := StatTX; s < NumStats; s++ {
		if s.IsAction() {
			n += g[s]
		}
	}
	return n
}

// Map returns the non-zero counters by name.
func (g GlobalStats) Map() map[string]uint64 {
	m := make(map[string]uint64)
	for s := StatTX; s < NumStats; s++ {
		if g[s] != 0 {
			m[s.String()] = g[s]
		}
	}
	return m
}

// VIPStats are a VIP's counters summed over CPUs. Bytes are IP bytes
// (header and payload) of the packets as clients sent them.
type VIPStats struct {
	Packets, Bytes     uint64
	LRUHits, LRUMisses uint64
}

// RealStats are a real index's counters summed over CPUs: of one (VIP,
// real) pair for an index from AddRealSlot, of every VIP that uses it for
// one from AddReal.
type RealStats struct {
	Packets, Bytes uint64
}
