// Package control is lbd's control plane without HTTP: the desired state
// (VIPs, their reals, weights and flags), its validation, its persistence,
// and the reconciliation that makes the datapath's maps match it.
//
// Every change is a transaction: it is validated, written to the state
// file (durably: fsync), and only then applied to the datapath, so a
// change that cannot be saved (a full disk: ErrNoSpace) is refused before
// anything moves. If applying fails, the datapath is put back as it was
// (a removed VIP under its old number and generation, so its counters and
// flows stay), the old state is saved again, and the caller learns which
// (ApplyError). A restart reads
// the state file and converges the (possibly pinned, still forwarding)
// datapath to it; the same convergence, run periodically, detects and
// repairs drift.
package control

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/control/maglev"
)

// Encap is how packets reach a VIP's reals.
type Encap string

// The encapsulations a VIP can use.
const (
	EncapIPIP Encap = "ipip" // IP-in-IP (protocol 4 or 41), the default
	EncapGUE  Encap = "gue"  // GUE variant 1 over UDP
)

// RealState says whether a real takes new flows.
type RealState string

// The states of a real.
const (
	// RealActive takes new flows in proportion to its weight.
	RealActive RealState = "active"
	// RealDraining takes no new flows; flows already in the connection
	// table keep going to it.
	RealDraining RealState = "draining"
)

// Real is one real server of a VIP.
type Real struct {
	Addr netip.Addr
	// Weight is a relative share of the VIP's new flows: reals with
	// weights 1 and 3 get a quarter and three quarters. 0 takes no new
	// flows, like draining.
	Weight uint32
	State  RealState
}

// MaxWeight is the largest weight a real may have. Weights are relative,
// so this bound costs nothing, and it keeps the sum of a VIP's weights far
// from any overflow.
const MaxWeight = 1_000_000

// Eligible reports whether the real takes new flows.
func (r Real) Eligible() bool { return r.Weight > 0 && r.State == RealActive }

// VIP is the desired state of one VIP.
type VIP struct {
	Key xdp.VIPKey
	// Sticky hashes the client address only, so that all of a client's
	// flows go to the same real.
	Sticky bool
	// NoLRU keeps the VIP's flows out of the connection table: every
	// packet follows the current ring.
	NoLRU bool
	// NoFlowSearch keeps a miss in one CPU's connection table from
	// searching the other CPUs' tables: a new flow costs less (a UDP
	// one above all: it has no SYN to mark it new), and a flow whose
	// packets change CPU follows the current ring, as in Katran.
	NoFlowSearch bool
	Encap        Encap
	RingSize     uint32 // a prime from maglev.Sizes
	Reals        []Real // sorted by address, unique
	// Health says how to check the reals; health.None (the default)
	// checks nothing and every real counts as up.
	Health health.Spec
	// DownFlows is what happens to the connection table entries of a real
	// that goes down.
	DownFlows DownFlows
	// AllDown is what the VIP does when every real that should take
	// traffic is down.
	AllDown AllDown
}

// DownFlows is a VIP's policy for the established flows of a real that
// fails its health checks.
type DownFlows string

// The policies for a down real's flows.
const (
	// KeepFlows leaves them: established connections stay with the real
	// (it may be down only for new work, e.g. a failing health endpoint),
	// and only new flows avoid it. The default.
	KeepFlows DownFlows = "keep"
	// ResetFlows deletes them from the connection table: their next
	// packets follow the ring to a healthy real (which resets TCP).
	ResetFlows DownFlows = "reset"
)

// AllDown is a VIP's policy when no real is up.
type AllDown string

// The policies when every real is down.
const (
	// ServeAll ignores health while no real is up: the ring holds all the
	// reals that would take traffic (fail open; a broken health check
	// then does not take the service down). The default.
	ServeAll AllDown = "serve-all"
	// DropAll empties the ring: new flows are dropped until a real is up.
	DropAll AllDown = "drop"
)

// Flags are the datapath flags the VIP needs.
func (v *VIP) Flags() xdp.VIPFlags {
	var f xdp.VIPFlags
	if v.Sticky {
		f |= xdp.VIPSticky
	}
	if v.NoLRU {
		f |= xdp.VIPNoLRU
	}
	if v.Encap == EncapGUE {
		f |= xdp.VIPGUE
	}
	if v.NoFlowSearch {
		f |= xdp.VIPNoSearch
	}
	return f
}

// Real returns the VIP's real with the given address.
func (v *VIP) Real(addr netip.Addr) (Real, bool) {
	i, ok := slices.BinarySearchFunc(v.Reals, addr, func(r Real, a netip.Addr) int { return r.Addr.Compare(a) })
	if !ok {
		return Real{}, false
	}
	return v.Reals[i], true
}

// Clone returns a deep copy.
func (v *VIP) Clone() *VIP {
	if v == nil {
		return nil
	}
	c := *v
	c.Reals = slices.Clone(v.Reals)
	return &c
}

// normalize fills defaults and sorts the reals.
func (v *VIP) normalize() {
	if v.Encap == "" {
		v.Encap = EncapIPIP
	}
	if v.RingSize == 0 {
		v.RingSize = maglev.DefaultSize
	}
	v.Health = v.Health.Defaults()
	if v.DownFlows == "" {
		v.DownFlows = KeepFlows
	}
	if v.AllDown == "" {
		v.AllDown = ServeAll
	}
	for i := range v.Reals {
		if v.Reals[i].State == "" {
			v.Reals[i].State = RealActive
		}
	}
	slices.SortFunc(v.Reals, func(a, b Real) int { return a.Addr.Compare(b.Addr) })
}

// Validate says what is wrong with a VIP, as an *InvalidError.
func (v *VIP) Validate() error {
	if err := v.Key.Validate(); err != nil {
		return invalid("vip", "%v", err)
	}
	switch v.Encap {
	case EncapIPIP, EncapGUE:
	default:
		return invalid("encap", "encapsulation %q: use %q or %q", v.Encap, EncapIPIP, EncapGUE)
	}
	if !maglev.ValidSize(uint64(v.RingSize)) {
		return invalid("ring_size", "ring size %d: use one of the primes %v", v.RingSize, maglev.Sizes)
	}
	if len(v.Reals) > int(v.RingSize) {
		return invalid("reals", "%d reals do not fit a ring of %d slots: choose a larger ring_size", len(v.Reals), v.RingSize)
	}
	if err := v.Health.Validate(v.Key.Port); err != nil {
		return invalid("health_check", "%v", err)
	}
	switch v.DownFlows {
	case KeepFlows, ResetFlows:
	default:
		return invalid("down_flows", "down_flows %q: use %q or %q", v.DownFlows, KeepFlows, ResetFlows)
	}
	switch v.AllDown {
	case ServeAll, DropAll:
	default:
		return invalid("all_down", "all_down %q: use %q or %q", v.AllDown, ServeAll, DropAll)
	}
	for i, r := range v.Reals {
		if err := validateReal(r); err != nil {
			return err
		}
		if i > 0 && v.Reals[i-1].Addr == r.Addr {
			return invalid("reals", "real %s is listed twice", r.Addr)
		}
	}
	return nil
}

func validateReal(r Real) error {
	a := r.Addr
	switch {
	case !a.IsValid():
		return invalid("address", "real address is missing")
	case a.Zone() != "":
		return invalid("address", "real address %s: zoned addresses are not supported", a)
	case a.Is4In6():
		return invalid("address", "real address %s: write IPv4-mapped addresses as plain IPv4 (%s)", a, a.Unmap())
	case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
		return invalid("address", "real address %s: must be a unicast, non-loopback address", a)
	}
	if r.Weight > MaxWeight {
		return invalid("weight", "real %s: weight %d is out of range: use 0 to %d (weights are relative: 1 and 3 give a quarter and three quarters)", a, r.Weight, MaxWeight)
	}
	switch r.State {
	case RealActive, RealDraining:
	default:
		return invalid("state", "real %s: state %q: use %q or %q", a, r.State, RealActive, RealDraining)
	}
	return nil
}

// VIPName is the URL-safe name of a VIP: protocol, address and port joined
// by dashes, e.g. "tcp-192.0.2.1-80" or "udp-2001:db8::1-53". Port 0 is
// a port-less VIP ("tcp-192.0.2.1-0").
func VIPName(k xdp.VIPKey) string {
	return k.Proto.String() + "-" + k.Addr.String() + "-" + strconv.Itoa(int(k.Port))
}

// ParseVIPName parses VIPName's form.
func ParseVIPName(s string) (xdp.VIPKey, error) {
	first := strings.IndexByte(s, '-')
	last := strings.LastIndexByte(s, '-')
	if first < 0 || first == last {
		return xdp.VIPKey{}, invalid("vip", "VIP name %q: want protocol-address-port, e.g. tcp-192.0.2.1-80", s)
	}
	proto, err := xdp.ParseProto(s[:first])
	if err != nil {
		return xdp.VIPKey{}, invalid("vip", "VIP name %q: %v", s, err)
	}
	addr, err := netip.ParseAddr(s[first+1 : last])
	if err != nil {
		return xdp.VIPKey{}, invalid("vip", "VIP name %q: bad address: %v", s, err)
	}
	port, err := strconv.ParseUint(s[last+1:], 10, 16)
	if err != nil {
		return xdp.VIPKey{}, invalid("vip", "VIP name %q: port must be 0-65535", s)
	}
	return xdp.VIPKey{Addr: addr, Port: uint16(port), Proto: proto}, nil
}

// compareKeys orders VIPs for listings: address, then protocol, then port.
func compareKeys(a, b xdp.VIPKey) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
}

// Errors callers map to answers: test with errors.Is / errors.As.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	// ErrNoSpace: the state file could not be saved for want of space
	// (ENOSPC, EDQUOT); the change was refused and nothing moved.
	ErrNoSpace = errors.New("the state directory is full")
)

// InvalidError is input that cannot be accepted, with the field at fault
// and what to fix.
type InvalidError struct {
	Field string
	Msg   string
}

func (e *InvalidError) Error() string { return e.Msg }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ApplyError says that a change could not be applied to the datapath or
// saved, and whether everything was put back as it was.
type ApplyError struct {
	Op         string // what was being done, e.g. "create VIP tcp-192.0.2.1-80"
	Err        error  // why it failed
	RolledBack bool   // the datapath and state are as before the change
	// RollbackErr is set when putting things back failed too: the
	// datapath may differ from the state, which the next reconcile
	// repairs.
	RollbackErr error
}

func (e *ApplyError) Error() string {
	if e.RolledBack {
		return fmt.Sprintf("%s: %v (nothing was changed)", e.Op, e.Err)
	}
	return fmt.Sprintf("%s: %v; rolling back failed too (%v): the datapath will be repaired by the next reconcile", e.Op, e.Err, e.RollbackErr)
}

func (e *ApplyError) Unwrap() error { return e.Err }
