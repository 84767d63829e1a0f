package xdp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// AttachMode is where in the receive path the XDP program runs.
type AttachMode int

// The attach modes.
const (
	// ModeAuto tries native and falls back to generic, saying why.
	ModeAuto AttachMode = iota
	// ModeNative runs the program in the driver (fast; the driver must support XDP).
	ModeNative
	// ModeGeneric runs it after the kernel built an skb (works on every interface, slower).
	ModeGeneric
)

func (m AttachMode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("mode-%d", int(m))
}

// ParseAttachMode accepts "auto", "native" and "generic".
func ParseAttachMode(s string) (AttachMode, error) {
	for _, m := range []AttachMode{ModeAuto, ModeNative, ModeGeneric} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("XDP mode %q: use auto, native or generic", s)
}

func (m AttachMode) flags() link.XDPAttachFlags {
	if m == ModeGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

// Attachment describes the balancer's program on an interface.
type Attachment struct {
	Interface string
	Ifindex   int
	Mode      AttachMode // the mode in use: ModeNative or ModeGeneric
	Reused    bool       // a link pinned by an earlier run was given the new program
	Fallback  string     // why native mode is not used, when ModeAuto fell back to generic
}

// attachment is a link the balancer holds.
type attachment struct {
	Attachment
	link link.Link
}

// Netlink's IFLA_XDP_ATTACHED values.
const (
	xdpAttachedNone   = 0
	xdpAttachedDriver = 1
	xdpAttachedSKB    = 2
	xdpAttachedMulti  = 4
)

// Attach runs the balancer on an interface through a bpf_link. With a pin
// directory the link is pinned there, so it outlives the process; if an
// earlier run left a pinned link on the interface, that link is updated to
// this balancer's program, an atomic replacement: no packet meets the
// interface without a program. An XDP program on the interface that is not
// lbd's is left alone and Attach fails. Attaching to an interface the
// balancer is already attached to returns the existing attachment.
func (b *Balancer) Attach(ifname string, mode AttachMode) (Attachment, error) {
	if mode != ModeAuto && mode != ModeNative && mode != ModeGeneric {
		return Attachment{}, fmt.Errorf("attach XDP to %s: unknown mode %d", ifname, int(mode))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Attachment{}, fmt.Errorf("attach XDP to %s: balancer is closed", ifname)
	}
	if a, ok := b.links[ifname]; ok {
		return a.Attachment, nil
	}
	dev, err := netlink.LinkByName(ifname)
	if err != nil {
		return Attachment{}, fmt.Errorf("attach XDP to %s: find interface: %w", ifname, err)
	}
	ifindex := dev.Attrs().Index
	onDev := dev.Attrs().Xdp

	pinPath := ""
	if b.pinDir != "" {
		pinPath = filepath.Join(b.pinDir, linksDir, ifname)
		a, err := b.reusePinnedLink(pinPath, ifname, ifindex, onDev, mode)
		if err != nil || a != nil {
			if a != nil {
				b.links[ifname] = a
				return a.Attachment, nil
			}
			return Attachment{}, err
		}
	}
	if onDev != nil && onDev.Attached {
		return Attachment{}, foreignProgram(ifname, onDev)
	}

	a := &attachment{Attachment: Attachment{Interface: ifname, Ifindex: ifindex}}
	try := []AttachMode{mode}
	if mode == ModeAuto {
		try = []AttachMode{ModeNative, ModeGeneric}
	}
	for _, m := range try {
		l, err := link.AttachXDP(link.XDPOptions{Program: b.objs.LbdBalancer, Interface: ifindex, Flags: m.flags()})
		if err == nil {
			a.link, a.Mode = l, m
			break
		}
		if mode == ModeAuto && m == ModeNative {
			a.Fallback = fmt.Sprintf("native XDP: %v", err)
			continue
		}
		return Attachment{}, fmt.Errorf("attach XDP to %s in %s mode: %w", ifname, m, err)
	}
	if pinPath != "" {
		if err := os.MkdirAll(filepath.Dir(pinPath), 0o700); err != nil {
			a.link.Close()
			return Attachment{}, fmt.Errorf("attach XDP to %s: %w", ifname, err)
		}
		if err := a.link.Pin(pinPath); err != nil {
			a.link.Close()
			return Attachment{}, fmt.Errorf("attach XDP to %s: pin link: %w", ifname, err)
		}
	}
	b.links[ifname] = a
	return a.Attachment, nil
}

// reusePinnedLink takes over the link an earlier run pinned at path, if
// it still holds the interface's XDP program: it returns nil, nil when
// there is none to take over (a stale pin is removed).
func (b *Balancer) reusePinnedLink(path, ifname string, ifindex int, onDev *netlink.LinkXdp, mode AttachMode) (*attachment, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("attach XDP to %s: open pinned link %s: %w (run `lbd cleanup` to remove it)", ifname, path, err)
	}
	// A link whose interface is gone reports ifindex 0.
	info, err := l.Info()
	live := err == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifindex
	if !live {
		// The interface went away (or was made again) since: the pin
		// holds nothing that carries traffic.
		if err := l.Unpin(); err != nil {
			l.Close()
			return nil, fmt.Errorf("attach XDP to %s: remove stale link pin %s: %w", ifname, path, err)
		}
		l.Close()
		return nil, nil
	}
	// The link's mode, as netlink shows it. With programs in both modes
	// (the other one is not lbd's) netlink names neither: assume the
	// requested mode, native for auto.
	cur := ModeNative
	switch {
	case onDev != nil && onDev.AttachMode == xdpAttachedSKB:
		cur = ModeGeneric
	case onDev != nil && onDev.AttachMode == xdpAttachedMulti && mode == ModeGeneric:
		cur = ModeGeneric
	}
	if mode != ModeAuto && mode != cur {
		l.Close()
		return nil, fmt.Errorf("attach XDP to %s in %s mode: lbd's pinned link there runs in %s mode and a link cannot change mode; use mode auto or %s, or detach lbd from %s first (packets pass without the balancer until it is attached again)", ifname, mode, cur, cur, ifname)
	}
	if err := l.Update(b.objs.LbdBalancer); err != nil {
		l.Close()
		return nil, fmt.Errorf("attach XDP to %s: replace the program of the pinned link: %w", ifname, err)
	}
	return &attachment{Attachment: Attachment{Interface: ifname, Ifindex: ifindex, Mode: cur, Reused: true}, link: l}, nil
}

// foreignProgram is the error for an XDP program lbd did not attach.
func foreignProgram(ifname string, x *netlink.LinkXdp) error {
	what := "an XDP program"
	if x.ProgId != 0 {
		what = fmt.Sprintf("an XDP program (id %d)", x.ProgId)
		if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
			if info, err := p.Info(); err == nil && info.Name != "" {
				what = fmt.Sprintf("an XDP program (id %d, name %s)", x.ProgId, info.Name)
			}
			p.Close()
		}
	}
	off := "xdp off"
	if x.AttachMode == xdpAttachedSKB {
		off = "xdpgeneric off"
	}
	return fmt.Errorf("attach XDP to %s: interface %s already has %s that lbd did not attach: detach it first (ip link set dev %s %s)", ifname, ifname, what, ifname, off)
}

// Detach takes the balancer off an interface: the link it attached (or
// that an earlier run pinned) is unpinned and closed, which removes the
// program. It fails with ErrNotFound if lbd has no link there.
func (b *Balancer) Detach(ifname string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	pinPath := ""
	if b.pinDir != "" {
		pinPath = filepath.Join(b.pinDir, linksDir, ifname)
	}
	if a, ok := b.links[ifname]; ok {
		delete(b.links, ifname)
		detachLink(a.link)
		if pinPath != "" {
			if err := a.link.Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
				a.link.Close()
				return fmt.Errorf("detach XDP from %s: unpin link: %w", ifname, err)
			}
		}
		if err := a.link.Close(); err != nil {
			return fmt.Errorf("detach XDP from %s: %w", ifname, err)
		}
		return nil
	}
	if pinPath != "" {
		if _, err := os.Lstat(pinPath); err == nil {
			if err := removeLinkPin(pinPath); err != nil {
				return fmt.Errorf("detach XDP from %s: %w", ifname, err)
			}
			return nil
		}
	}
	return fmt.Errorf("detach XDP from %s: lbd has no XDP link there: %w", ifname, ErrNotFound)
}

// Attachments lists the interfaces the balancer holds links on.
func (b *Balancer) Attachments() []Attachment {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Attachment, 0, len(b.links))
	for _, a := range b.links {
		out = append(out, a.Attachment)
	}
	return out
}
