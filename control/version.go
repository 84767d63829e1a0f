package control

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/lbd-dev/lbd/bpf/xdp"
)

// ErrStale is a change refused because what it was based on changed
// since it was read (a Precondition failed).
var ErrStale = errors.New("changed since it was read")

// A Precondition is checked with the desired state (which it must not
// change) at the start of a change, under the same lock as the change:
// a non-nil result refuses the change before anything moves. It is how
// optimistic concurrency is built: read a version, change only if it is
// still the same.
type Precondition func(vips map[xdp.VIPKey]*VIP) error

// checkPreconditions runs the preconditions of a change. c.mu is held.
func (c *Controller) checkPreconditions(conds []Precondition) error {
	for _, p := range conds {
		if err := p(c.vips); err != nil {
			return err
		}
	}
	return nil
}

// Version names the content of a VIP's desired state (every setting, its
// description and its reals): it changes when any of them does.
func (v *VIP) Version() string { return version(v) }

// Version names the content of a real (address, weight and state).
func (r Real) Version() string { return version(r) }

// SetVersion names the content of a whole desired state (in any order).
func SetVersion(vips []*VIP) string {
	all := slices.Clone(vips)
	slices.SortFunc(all, func(a, b *VIP) int { return compareKeys(a.Key, b.Key) })
	versions := make([]string, len(all))
	for i, v := range all {
		versions[i] = v.Version()
	}
	return version(versions)
}

func version(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain data: unreachable
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:10])
}

// IfVIP is a Precondition that the VIP exists and, if versions are
// given, has one of them.
func IfVIP(key xdp.VIPKey, versions ...string) Precondition {
	return func(vips map[xdp.VIPKey]*VIP) error {
		v, ok := vips[key]
		if !ok {
			return fmt.Errorf("VIP %s does not exist (any more): %w", VIPName(key), ErrStale)
		}
		if !anyOf(v.Version(), versions) {
			return fmt.Errorf("VIP %s %w (it is at version %s): read it again and redo the change", VIPName(key), ErrStale, v.Version())
		}
		return nil
	}
}

// IfReal is a Precondition that the VIP has the real and, if versions
// are given, at one of them.
func IfReal(key xdp.VIPKey, addr netip.Addr, versions ...string) Precondition {
	return func(vips map[xdp.VIPKey]*VIP) error {
		var r Real
		ok := false
		if v := vips[key]; v != nil {
			r, ok = v.Real(addr)
		}
		if !ok {
			return fmt.Errorf("real %s of VIP %s does not exist (any more): %w", addr, VIPName(key), ErrStale)
		}
		if !anyOf(r.Version(), versions) {
			return fmt.Errorf("real %s of VIP %s %w (it is at version %s): read it again and redo the change", addr, VIPName(key), ErrStale, r.Version())
		}
		return nil
	}
}

// IfSet is a Precondition that the whole desired state has one of the
// versions (none given: any).
func IfSet(versions ...string) Precondition {
	return func(vips map[xdp.VIPKey]*VIP) error {
		if got := SetVersion(slices.Collect(maps.Values(vips))); !anyOf(got, versions) {
			return fmt.Errorf("the set of VIPs %w (it is at version %s): read it again and redo the change", ErrStale, got)
		}
		return nil
	}
}

// anyOf reports whether v is one of versions, or versions is empty.
func anyOf(v string, versions []string) bool {
	return len(versions) == 0 || slices.Contains(versions, v)
}

// SetVersion is the version of the controller's whole desired state.
func (c *Controller) SetVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return SetVersion(sortedVIPs(c.vips))
}
