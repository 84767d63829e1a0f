package control

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

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

// SetVersion names the content of a whole desired state.
func SetVersion(vips map[xdp.VIPKey]*VIP) string {
	all := sortedVIPs(vips)
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

// IfVIP is a Precondition that the VIP exists and, if version is not "",
// has that version.
func IfVIP(key xdp.VIPKey, version string) Precondition {
	return func(vips map[xdp.VIPKey]*VIP) error {
		v, ok := vips[key]
		switch {
		case !ok:
			return fmt.Errorf("VIP %s does not exist (any more): %w", VIPName(key), ErrStale)
		case version != "" && v.Version() != version:
			return fmt.Errorf("VIP %s %w (version %s, not %s): read it again and redo the change", VIPName(key), ErrStale, v.Version(), version)
		}
		return nil
	}
}

// IfReal is a Precondition that the VIP has the real and, if version is
// not "", at that version.
func IfReal(key xdp.VIPKey, addr netip.Addr, version string) Precondition {
	return func(vips map[xdp.VIPKey]*VIP) error {
		var r Real
		ok := false
		if v := vips[key]; v != nil {
			r, ok = v.Real(addr)
		}
		switch {
		case !ok:
			return fmt.Errorf("real %s of VIP %s does not exist (any more): %w", addr, VIPName(key), ErrStale)
		case version != "" && r.Version() != version:
			return fmt.Errorf("real %s of VIP %s %w (version %s, not %s): read it again and redo the change", addr, VIPName(key), ErrStale, r.Version(), version)
		}
		return nil
	}
}

// IfSet is a Precondition that the whole desired state has the version.
func IfSet(version string) Precondition {
	return func(vips map[xdp.VIPKey]*VIP) error {
		if got := SetVersion(vips); got != version {
			return fmt.Errorf("the set of VIPs %w (version %s, not %s): read it again and redo the change", ErrStale, got, version)
		}
		return nil
	}
}

// SetVersion is the version of the controller's whole desired state.
func (c *Controller) SetVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return SetVersion(c.vips)
}
