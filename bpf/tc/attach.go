package tc

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Direction is the side of an interface a TC program runs on.
type Direction int

// The directions.
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Mode is how a program is attached.
type Mode string

// The modes. ModeAuto picks TCX where the kernel has it, clsact otherwise.
const (
	ModeAuto   Mode = ""
	ModeTCX    Mode = "tcx"    // a bpf_link of type TCX (kernel >= 6.6)
	ModeClsact Mode = "clsact" // a cls_bpf filter (direct-action) on a clsact qdisc, through netlink
)

// AttachOptions tune Attach; the zero value attaches at ingress, by
// probing, as the last TCX program or at cls_bpf priority 1, handle 1.
type AttachOptions struct {
	Direction Direction
	// Mode forces a mode; ModeAuto probes (TCX first, clsact if the kernel
	// has no TCX).
	Mode Mode
	// First runs the program before the TCX programs already attached
	// (else after them). No effect for clsact: use Priority.
	First bool
	// Priority and Handle of the cls_bpf filter (clsact only); 0 means 1.
	// Another filter at the same priority and handle makes Attach fail.
	Priority uint16
	Handle   uint32
}

// Attachment is a program attached to an interface. It holds what keeps
// the attachment alive (the TCX link) and what is needed to remove exactly
// what Attach added. Keep it referenced while the program should run.
type Attachment struct {
	Ifname    string
	Ifindex   int
	Direction Direction
	Mode      Mode
	// Reason says why Mode was chosen, for logs and the API.
	Reason string

	mu           sync.Mutex
	tcx          link.Link
	nl           *netlink.Handle // bound to the netns the filter was added in
	filter       *netlink.BpfFilter
	progID       ebpf.ProgramID
	createdQdisc bool
	detached     bool
}

// Attach attaches prog (a SchedCLS program) to ifname in the network
// namespace of the calling thread (lock the OS thread around a netns
// switch). With ModeAuto it tries TCX and falls back to clsact when the
// kernel does not support TCX; the Attachment says which was used and why.
func Attach(ifname string, prog *ebpf.Program, opts AttachOptions) (*Attachment, error) {
	if prog == nil {
		return nil, fmt.Errorf("attach tc program to %s: no program", ifname)
	}
	iface, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("attach tc program: interface %s: %w", ifname, err)
	}
	a := &Attachment{Ifname: ifname, Ifindex: iface.Attrs().Index, Direction: opts.Direction}
	switch opts.Mode {
	case ModeTCX:
		a.Reason = "tcx requested"
		if err := a.attachTCX(prog, opts); err != nil {
			return nil, err
		}
	case ModeClsact:
		a.Reason = "clsact requested"
		if err := a.attachClsact(prog, opts); err != nil {
			return nil, err
		}
	case ModeAuto:
		err := a.attachTCX(prog, opts)
		if err == nil {
			a.Reason = "kernel supports tcx"
			break
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, err
		}
		if cerr := a.attachClsact(prog, opts); cerr != nil {
			return nil, fmt.Errorf("%w (after tcx: %v)", cerr, err)
		}
		a.Reason = fmt.Sprintf("kernel has no tcx (needs >= 6.6): %v", err)
	default:
		return nil, fmt.Errorf("attach tc program to %s: unknown mode %q (use tcx or clsact, or leave empty)", ifname, opts.Mode)
	}
	return a, nil
}

// attachTCX is link.AttachTCX; tests replace it to take the fallback path
// on a kernel that has TCX.
var attachTCX = link.AttachTCX

func (a *Attachment) attachTCX(prog *ebpf.Program, opts AttachOptions) error {
	at := ebpf.AttachTCXIngress
	if a.Direction == Egress {
		at = ebpf.AttachTCXEgress
	}
	o := link.TCXOptions{Interface: a.Ifindex, Program: prog, Attach: at}
	if opts.First {
		o.Anchor = link.Head()
	}
	l, err := attachTCX(o)
	if err != nil {
		return fmt.Errorf("attach tcx %s to %s: %w", a.Direction, a.Ifname, err)
	}
	a.tcx, a.Mode = l, ModeTCX
	return nil
}

func (a *Attachment) parent() uint32 {
	if a.Direction == Egress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

func (a *Attachment) attachClsact(prog *ebpf.Program, opts AttachOptions) error {
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("attach clsact to %s: program info: %w", a.Ifname, err)
	}
	id, ok := info.ID()
	if !ok {
		return fmt.Errorf("attach clsact to %s: kernel does not report program IDs", a.Ifname)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE) // route only: xfrm/netfilter may be absent
	if err != nil {
		return fmt.Errorf("attach clsact to %s: netlink: %w", a.Ifname, err)
	}
	iface, err := h.LinkByIndex(a.Ifindex)
	if err != nil {
		h.Close()
		return fmt.Errorf("attach clsact to %s: %w", a.Ifname, err)
	}
	created, err := ensureClsact(h, iface)
	if err != nil {
		h.Close()
		return fmt.Errorf("attach clsact to %s: %w", a.Ifname, err)
	}
	prio, handle := opts.Priority, opts.Handle
	if prio == 0 {
		prio = 1
	}
	if handle == 0 {
		handle = 1
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: a.Ifindex,
			Parent:    a.parent(),
			Handle:    handle,
			Priority:  prio,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         "lbd-" + info.Name,
		DirectAction: true,
	}
	if err := h.FilterAdd(f); err != nil {
		if created {
			_ = h.QdiscDel(clsact(a.Ifindex))
		}
		h.Close()
		hint := ""
		if errors.Is(err, unix.EEXIST) {
			hint = " (a filter with this priority and handle exists: detach it or choose another Priority)"
		}
		return fmt.Errorf("attach clsact %s filter to %s: %w%s", a.Direction, a.Ifname, err, hint)
	}
	a.nl, a.filter, a.progID, a.createdQdisc, a.Mode = h, f, id, created, ModeClsact
	return nil
}

func clsact(ifindex int) *netlink.Clsact {
	return &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
}

// ensureClsact adds a clsact qdisc unless the interface has one, and says
// whether it added it.
func ensureClsact(h *netlink.Handle, iface netlink.Link) (bool, error) {
	qs, err := h.QdiscList(iface)
	if err != nil {
		return false, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return false, nil
		}
		if q.Type() == "ingress" {
			return false, fmt.Errorf("interface has an ingress qdisc; replace it by clsact (tc qdisc del dev %s ingress) first", iface.Attrs().Name)
		}
	}
	if err := h.QdiscAdd(clsact(iface.Attrs().Index)); err != nil {
		return false, fmt.Errorf("add clsact qdisc: %w", err)
	}
	return true, nil
}

// Detach removes what Attach added: the TCX link; or the cls_bpf filter,
// and the clsact qdisc if Attach created it and no filter is left on it.
// A filter that was replaced by another program is left alone (error).
// Detaching twice is a no-op.
func (a *Attachment) Detach() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.detached {
		return nil
	}
	if a.tcx != nil {
		if err := a.tcx.Close(); err != nil {
			return fmt.Errorf("detach tcx from %s: %w", a.Ifname, err)
		}
		a.detached = true
		return nil
	}
	if err := a.detachClsact(); err != nil {
		return fmt.Errorf("detach clsact filter from %s: %w", a.Ifname, err)
	}
	a.nl.Close()
	a.detached = true
	return nil
}

func (a *Attachment) detachClsact() error {
	iface, err := a.nl.LinkByIndex(a.Ifindex)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil // the interface is gone, and everything on it
		}
		return err
	}
	fs, err := a.nl.FilterList(iface, a.parent())
	if err != nil {
		return fmt.Errorf("list filters: %w", err)
	}
	for _, f := range fs {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || bf.Handle != a.filter.Handle || bf.Priority != a.filter.Priority {
			continue
		}
		if ebpf.ProgramID(bf.Id) != a.progID {
			return fmt.Errorf("filter priority %d handle %#x now runs program %d, not ours (%d): left in place",
				bf.Priority, bf.Handle, bf.Id, a.progID)
		}
		if err := a.nl.FilterDel(a.filter); err != nil {
			return fmt.Errorf("delete filter: %w", err)
		}
	}
	if !a.createdQdisc {
		return nil
	}
	for _, p := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		rest, err := a.nl.FilterList(iface, p)
		if err != nil {
			return fmt.Errorf("list filters: %w", err)
		}
		if len(rest) > 0 {
			return nil // someone else uses the qdisc now
		}
	}
	if err := a.nl.QdiscDel(clsact(a.Ifindex)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc: %w", err)
	}
	return nil
}

// String describes the attachment for logs, e.g. "eth0 ingress via tcx (kernel supports tcx)".
func (a *Attachment) String() string {
	return fmt.Sprintf("%s %s via %s (%s)", a.Ifname, a.Direction, a.Mode, a.Reason)
}
