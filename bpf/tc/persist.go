package tc

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Persistence: `lbd real setup` is a command that exits, and the
// decapsulation must keep running after it. A clsact filter outlives the
// process by itself; a TCX link must be pinned (Attachment.Pin). The maps
// are pinned with Options.PinDir, so a later process changes the same VIP
// set. Teardown (and an idempotent setup) finds what runs on an interface
// by program name (Attached, DetachProgram), whichever mode attached it.

// Pin keeps a TCX attachment alive after this process exits, at path in
// bpffs. A clsact attachment needs no pin (the filter holds the program);
// Pin does nothing for it.
func (a *Attachment) Pin(path string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tcx == nil {
		return nil
	}
	if err := a.tcx.Pin(path); err != nil {
		return fmt.Errorf("pin tcx link of %s to %s: %w", a.Ifname, path, err)
	}
	return nil
}

// Release drops this process's hold on the attachment without detaching:
// a pinned TCX link or a clsact filter stays attached, and the Attachment
// can no longer Detach (use DetachProgram). An unpinned TCX link detaches
// here, as it would when the process exits.
func (a *Attachment) Release() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.detached {
		return nil
	}
	a.detached = true
	if a.tcx != nil {
		return a.tcx.Close()
	}
	a.nl.Close()
	return nil
}

// AttachedProgram is one program found on an interface.
type AttachedProgram struct {
	Mode Mode
	ID   ebpf.ProgramID
	Name string // the program's name in the kernel, e.g. "lbd_decap"

	linkID   link.ID            // tcx
	filter   *netlink.BpfFilter // clsact
	linkAttr netlink.Link
}

// Attached lists the programs on ifname (in the calling thread's network
// namespace) in the given direction, TCX and cls_bpf alike, in run order
// within each mode (TCX runs before cls_bpf).
func Attached(ifname string, dir Direction) ([]AttachedProgram, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("list tc programs: interface %s: %w", ifname, err)
	}
	var out []AttachedProgram
	at, parent := ebpf.AttachTCXIngress, uint32(netlink.HANDLE_MIN_INGRESS)
	if dir == Egress {
		at, parent = ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
	switch {
	case err == nil:
		for _, p := range res.Programs {
			lid, _ := p.LinkID()
			out = append(out, AttachedProgram{Mode: ModeTCX, ID: p.ID, Name: programName(p.ID), linkID: lid})
		}
	case errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL):
		// No TCX on this kernel (before 6.6 the query's attach type is
		// invalid): nothing can be attached that way.
	default:
		return nil, fmt.Errorf("list tcx programs on %s: %w", ifname, err)
	}
	fs, err := netlink.FilterList(l, parent)
	if err != nil {
		return nil, fmt.Errorf("list tc filters on %s: %w", ifname, err)
	}
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			id := ebpf.ProgramID(bf.Id)
			out = append(out, AttachedProgram{Mode: ModeClsact, ID: id, Name: programName(id), filter: bf, linkAttr: l})
		}
	}
	return out, nil
}

func programName(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ""
	}
	return info.Name
}

// DetachProgram removes every program called name (e.g. "lbd_decap") from
// ifname in the given direction, however it was attached, and returns how
// many it removed. A pinned TCX link is detached (the pin then holds a
// defunct link: remove the pin file too). The clsact qdisc stays.
func DetachProgram(ifname string, dir Direction, name string) (int, error) {
	progs, err := Attached(ifname, dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range progs {
		if p.Name != name {
			continue
		}
		switch p.Mode {
		case ModeTCX:
			l, err := link.NewFromID(p.linkID)
			if err != nil {
				return n, fmt.Errorf("open tcx link %d on %s: %w", p.linkID, ifname, err)
			}
			err = l.Detach()
			l.Close()
			if err != nil {
				return n, fmt.Errorf("detach tcx link %d from %s: %w", p.linkID, ifname, err)
			}
		case ModeClsact:
			if err := netlink.FilterDel(p.filter); err != nil {
				return n, fmt.Errorf("delete tc filter %s from %s: %w", p.filter.Name, ifname, err)
			}
		}
		n++
	}
	return n, nil
}
