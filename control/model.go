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
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/control/maglev"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
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
	Key lb.VIPKey
	// Flags are the VIP's flag settings (lb.VIPFlagTable, the ones with
	// Setting true: sticky, no_lru, ...).
	Flags    lb.VIPFlags
	Encap    Encap
	RingSize uint32 // a prime from maglev.Sizes
	Reals    []Real // sorted by address, unique
	// Health says how to check the reals; health.None (the default)
	// checks nothing and every real counts as up.
	Health health.Spec
	// DownFlows is what happens to the connection table entries of a real
	// that goes down.
	DownFlows DownFlows
	// AllDown is what the VIP does when every real that should take
	// traffic is down.
	AllDown AllDown
	// Disabled takes the VIP out of service without removing it: it
	// keeps its datapath entry (number, flags), its counters and its
	// connection table entries, but its ring is built with no backends
	// (whatever AllDown says), so new flows are dropped and counted as
	// no-real. Flows already in the connection table keep their reals
	// until they end or age out, like IPVS quiescing (weight 0): disable
	// a VIP to drain it, then delete it. Enabling it again rebuilds the
	// ring it had (the same reals and weights give the same ring).
	// It changes nothing in what the node announces (Serving): withdrawing
	// would move the established flows to other nodes.
	Disabled bool
	// Description is free text for the operators (what the VIP serves,
	// who owns it): plain text, at most MaxDescriptionLen bytes of UTF-8
	// without control characters. It is metadata only: it never reaches
	// the datapath, and changing it alone leaves the ring as it is.
	Description string
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

// DatapathFlags are the datapath flags the VIP needs: its settings and
// what its encap asks.
func (v *VIP) DatapathFlags() lb.VIPFlags {
	f := v.Flags
	if v.Encap == EncapGUE {
		f |= lb.VIPGUE
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
func (v *VIP) Validate() error { return v.validate(true) }

// validate checks the VIP; usable says whether to refuse addresses that
// are well-formed but cannot work (a loopback VIP, a link-local real...).
// Loading a state file written by an older lbd skips that check, so that
// such a VIP does not keep the daemon from starting: it can be deleted,
// and any change to it is refused until its address is fixed.
func (v *VIP) validate(usable bool) error {
	a := v.Key.Addr
	if usable && a.IsValid() && a.Zone() == "" {
		if why := vipAddrProblem(a); why != "" {
			return invalid("address", "VIP address %s: %s", a, why)
		}
	}
	if err := v.Key.Validate(); err != nil {
		return invalid("vip", "%v", err)
	}
	if err := validDescription(v.Description); err != nil {
		return err
	}
	if usable {
		if err := validHealthPath(v.Health.Path); err != nil {
			return err
		}
	}
	if bad := v.Flags &^ lb.SettingVIPFlags; bad != 0 {
		return invalid("flags", "flags %s are not settings of a VIP", bad)
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
		if err := validateReal(r, usable); err != nil {
			return err
		}
		if i > 0 && v.Reals[i-1].Addr == r.Addr {
			return invalid("reals", "real %s is listed twice", r.Addr)
		}
	}
	return nil
}

// ipv4Broadcast is the limited broadcast address, 255.255.255.255.
var ipv4Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// thisNetwork is 0.0.0.0/8 ("this host on this network", RFC 1122): a
// source address only, never a destination.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// vipAddrProblem says why a (well-formed, unzoned) address cannot be a
// VIP, or "" when it can. A VIP is a host address (/32 or /128) that the
// routers send to this node: addresses they never forward, or that never
// arrive on the wire, cannot work. An IPv4 address ending in .0 or .255
// is not refused: lbd does not know the VIP's subnet (it is announced as
// a host route), and such addresses are ordinary hosts in a /23 or wider.
func vipAddrProblem(a netip.Addr) string {
	switch {
	case a.IsLoopback():
		return "a loopback address never arrives on the network interface: use an address the routers send to this node"
	case a == ipv4Broadcast:
		return "the limited broadcast address is never routed to one node: use a unicast address"
	case a.IsLinkLocalUnicast():
		return "a link-local address is not forwarded by routers (and fe80::/10 needs an interface zone): use a routable address"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "a multicast address cannot be balanced: use a unicast address"
	case a.IsUnspecified():
		return "the unspecified address is not a destination: use a unicast address"
	case a.Is4() && thisNetwork.Contains(a):
		return "0.0.0.0/8 means \"this network\" and is never a destination: use a unicast address"
	}
	return ""
}

// realAddrProblem says why an address cannot be a real, or "" when it
// can. Packets to a real leave encapsulated towards the gateway, so the
// real must be a unicast address a router forwards.
func realAddrProblem(a netip.Addr) string {
	switch {
	case a.IsLoopback():
		return "a loopback address is this node itself: use the real server's own address"
	case a == ipv4Broadcast:
		return "the limited broadcast address is not one server: use a unicast address"
	case a.IsLinkLocalUnicast():
		return "a link-local address is not forwarded by the gateway (and fe80::/10 needs an interface zone): use a routable address"
	case a.IsMulticast():
		return "a multicast address is not one server: use a unicast address"
	case a.IsUnspecified():
		return "the unspecified address is not a destination: use a unicast address"
	case a.Is4() && thisNetwork.Contains(a):
		return "0.0.0.0/8 means \"this network\" and is never a destination: use a unicast address"
	}
	return ""
}

// MaxDescriptionLen bounds a VIP's description, in bytes.
const MaxDescriptionLen = 256

// validDescription checks a VIP's description: valid UTF-8, at most
// MaxDescriptionLen bytes, no control characters (bytes below 0x20, and
// DEL). Markup characters are allowed: it is plain text, and whoever
// shows it must show it as text.
func validDescription(d string) error {
	if len(d) > MaxDescriptionLen {
		return invalid("description", "description of %d bytes: at most %d", len(d), MaxDescriptionLen)
	}
	if !utf8.ValidString(d) {
		return invalid("description", "description %q is not valid UTF-8", d)
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c < 0x20 || c == 0x7f {
			return invalid("description", "description %q: byte %d (%q) is a control character: use plain text on one line", d, i, c)
		}
	}
	return nil
}

// MaxHealthPathLen bounds a health check path.
const MaxHealthPathLen = 1024

// validHealthPath checks an HTTP(S) health check path: it must start
// with '/', be at most MaxHealthPathLen bytes, and hold only the
// characters RFC 3986 allows in a path and query (unreserved,
// sub-delims, ':', '@', '/', '?' and %XX escapes). Anything else (CR,
// LF, NUL, spaces, '#') would break the probe's request line.
func validHealthPath(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > MaxHealthPathLen {
		return invalid("health_check.path", "health check path of %d bytes: at most %d", len(p), MaxHealthPathLen)
	}
	if p[0] != '/' {
		return invalid("health_check.path", "health check path %q: must start with /", p)
	}
	for i := 0; i < len(p); i++ {
		ch := p[i]
		switch {
		case ch == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return invalid("health_check.path", "health check path %q: %% at byte %d must start an escape such as %%20", p, i)
			}
			i += 2
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9',
			strings.IndexByte("-._~!$&'()*+,;=:@/?", ch) >= 0:
		default:
			return invalid("health_check.path", "health check path %q: byte %d (%q) is not allowed in a URL path: escape it (e.g. a space as %%20)", p, i, ch)
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func validateReal(r Real, usable bool) error {
	a := r.Addr
	switch {
	case !a.IsValid():
		return invalid("address", "real address is missing")
	case a.Zone() != "":
		return invalid("address", "real address %s: zoned addresses are not supported", a)
	case a.Is4In6():
		return invalid("address", "real address %s: write IPv4-mapped addresses as plain IPv4 (%s)", a, a.Unmap())
	}
	if why := realAddrProblem(a); usable && why != "" {
		return invalid("address", "real address %s: %s", a, why)
	}
	if a.IsUnspecified() || a.IsMulticast() {
		return invalid("address", "real address %s: must be a unicast address", a)
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

// Errors callers map to answers: test with errors.Is / errors.As.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	// ErrNoSpace: the state file could not be saved for want of space
	// (ENOSPC, EDQUOT); the change was refused and nothing moved.
	ErrNoSpace = errors.New("the state directory is full")
	// ErrLimit: a datapath table is full (VIPs, reals, ring slots); the
	// change was refused. It is the datapath's own error (errors.Is
	// matches either name).
	ErrLimit = datapath.ErrLimit
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
