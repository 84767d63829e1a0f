package tc

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/bpf/features"
)

// attached lists what runs on an interface: TCX program IDs, cls_bpf
// filters' program IDs, and whether it has a clsact qdisc.
type attached struct {
	tcx, cls []ebpf.ProgramID
	clsact   bool
}

func listAttached(ns *testNS, ifname string, dir Direction) (attached, error) {
	var a attached
	err := ns.do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		at, parent := ebpf.AttachTCXIngress, uint32(netlink.HANDLE_MIN_INGRESS)
		if dir == Egress {
			at, parent = ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
		if err == nil {
			for _, p := range res.Programs {
				a.tcx = append(a.tcx, p.ID)
			}
		}
		qs, err := netlink.QdiscList(l)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Type() == "clsact" {
				a.clsact = true
			}
		}
		if !a.clsact {
			return nil
		}
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			return err
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok {
				return fmt.Errorf("unexpected filter %T", f)
			}
			if !bf.DirectAction {
				return fmt.Errorf("filter %s is not direct-action", bf.Name)
			}
			a.cls = append(a.cls, ebpf.ProgramID(bf.Id))
		}
		return nil
	})
	return a, err
}

func progID(t testing.TB, p *ebpf.Program) ebpf.ProgramID {
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program ID")
	}
	return id
}

// vethNS makes a namespace with a veth pair vA/vB, both up.
func vethNS(t testing.TB) *testNS {
	ns := newNetns(t, "att")
	ns.must(t, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vA"}, PeerName: "vB"}); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		if err := linkUp("vA"); err != nil {
			return err
		}
		return linkUp("vB")
	})
	return ns
}

func attachIn(ns *testNS, ifname string, p *ebpf.Program, opts AttachOptions) (*Attachment, error) {
	var a *Attachment
	err := ns.do(func() error {
		var err error
		a, err = Attach(ifname, p, opts)
		return err
	})
	return a, err
}

// TestAttach: each mode and direction attaches the program where the
// kernel's own listing shows it, and Detach leaves nothing behind.
func TestAttach(t *testing.T) {
	d := newTestDecap(t)
	id := progID(t, d.Program())
	haveTCX := features.KernelAtLeast(6, 6)
	for _, c := range []struct {
		name string
		opts AttachOptions
		want Mode
	}{
		{"auto ingress", AttachOptions{}, map[bool]Mode{true: ModeTCX, false: ModeClsact}[haveTCX]},
		{"clsact ingress", AttachOptions{Mode: ModeClsact}, ModeClsact},
		{"clsact egress", AttachOptions{Mode: ModeClsact, Direction: Egress}, ModeClsact},
		{"tcx egress", AttachOptions{Mode: ModeTCX, Direction: Egress}, ModeTCX},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.want == ModeTCX && !haveTCX {
				t.Skip("kernel < 6.6 has no tcx")
			}
			ns := vethNS(t)
			a, err := attachIn(ns, "vA", d.Program(), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("attached: %s", a)
			if a.Mode != c.want || a.Reason == "" || a.Direction != c.opts.Direction {
				t.Fatalf("attachment %s, want mode %s", a, c.want)
			}
			got, err := listAttached(ns, "vA", c.opts.Direction)
			if err != nil {
				t.Fatal(err)
			}
			switch a.Mode {
			case ModeTCX:
				if !slices.Equal(got.tcx, []ebpf.ProgramID{id}) || len(got.cls) != 0 || got.clsact {
					t.Fatalf("after tcx attach: %+v, want tcx program %d only", got, id)
				}
			case ModeClsact:
				if !slices.Equal(got.cls, []ebpf.ProgramID{id}) || len(got.tcx) != 0 {
					t.Fatalf("after clsact attach: %+v, want cls_bpf program %d only", got, id)
				}
			}
			other := Ingress
			if c.opts.Direction == Ingress {
				other = Egress
			}
			if o, err := listAttached(ns, "vA", other); err != nil || len(o.tcx)+len(o.cls) != 0 {
				t.Fatalf("%s has programs %+v (%v), want none", other, o, err)
			}
			if err := a.Detach(); err != nil {
				t.Fatal(err)
			}
			if err := a.Detach(); err != nil {
				t.Fatalf("second detach: %v", err)
			}
			got, err = listAttached(ns, "vA", c.opts.Direction)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.tcx) != 0 || len(got.cls) != 0 || got.clsact {
				t.Fatalf("after detach: %+v, want nothing", got)
			}
		})
	}
}

// TestAttachKeepsForeignClsact: a clsact qdisc and filters that were there
// before stay after Detach; a taken priority is an error, not a replacement.
func TestAttachKeepsForeignClsact(t *testing.T) {
	d := newTestDecap(t)
	id := progID(t, d.Program())
	ns := vethNS(t)
	ns.must(t, func() error {
		l, err := netlink.LinkByName("vA")
		if err != nil {
			return err
		}
		return netlink.QdiscAdd(clsact(l.Attrs().Index))
	})
	a, err := attachIn(ns, "vA", d.Program(), AttachOptions{Mode: ModeClsact, Priority: 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attachIn(ns, "vA", d.Program(), AttachOptions{Mode: ModeClsact, Priority: 7}); err == nil {
		t.Fatal("second attach at the same priority and handle succeeded")
	}
	b, err := attachIn(ns, "vA", d.Program(), AttachOptions{Mode: ModeClsact, Priority: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	got, err := listAttached(ns, "vA", Ingress)
	if err != nil {
		t.Fatal(err)
	}
	if !got.clsact || !slices.Equal(got.cls, []ebpf.ProgramID{id}) {
		t.Fatalf("after detaching one of two: %+v, want the other filter and the qdisc", got)
	}
	if err := b.Detach(); err != nil {
		t.Fatal(err)
	}
	got, err = listAttached(ns, "vA", Ingress)
	if err != nil {
		t.Fatal(err)
	}
	if !got.clsact || len(got.cls) != 0 {
		t.Fatalf("after detach: %+v, want the foreign clsact qdisc without filters", got)
	}
}

// TestAttachFallback: where the kernel has no TCX, the automatic mode
// attaches through clsact and says why.
func TestAttachFallback(t *testing.T) {
	d := newTestDecap(t)
	id := progID(t, d.Program())
	real := attachTCX
	attachTCX = func(link.TCXOptions) (link.Link, error) {
		return nil, fmt.Errorf("tcx: %w", ebpf.ErrNotSupported)
	}
	defer func() { attachTCX = real }()
	ns := vethNS(t)
	a, err := attachIn(ns, "vA", d.Program(), AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode != ModeClsact || !strings.Contains(a.Reason, "no tcx") {
		t.Fatalf("attachment %s, want clsact because the kernel has no tcx", a)
	}
	got, err := listAttached(ns, "vA", Ingress)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.cls, []ebpf.ProgramID{id}) || len(got.tcx) != 0 {
		t.Fatalf("after fallback attach: %+v, want cls_bpf program %d only", got, id)
	}
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	if got, err = listAttached(ns, "vA", Ingress); err != nil || got.clsact || len(got.cls) != 0 {
		t.Fatalf("after detach: %+v (%v), want nothing", got, err)
	}
}
