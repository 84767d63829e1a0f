package features

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// trivial loads "return ret" as a program of type t.
func trivial(t ebpf.ProgramType, attach ebpf.AttachType, ret int32) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       t,
		AttachType: attach,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, ret),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load %s program: %w", t, err)
	}
	return p, nil
}

// kprobeTarget is what lbd's tracer probes first; present in every kernel.
const kprobeTarget = "tcp_v4_connect"

// probeKprobe attaches a kprobe to tcp_v4_connect. Kernels built without
// CONFIG_KPROBES have neither the kprobe PMU nor tracefs kprobe_events.
func probeKprobe() error {
	if ok, err := inKallsyms(kprobeTarget); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%s: %w", kprobeTarget, errNoSymbol)
	}
	p, err := trivial(ebpf.Kprobe, ebpf.AttachNone, 0)
	if err != nil {
		return err
	}
	defer p.Close()
	l, err := link.Kprobe(kprobeTarget, p, nil)
	if err != nil {
		return fmt.Errorf("kprobe %s: %w", kprobeTarget, err)
	}
	return l.Close()
}

func inKallsyms(sym string) (bool, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffff81a2b3c0 T tcp_v4_connect"
		if name, ok := strings.CutPrefix(sc.Text()[strings.LastIndexByte(sc.Text(), ' ')+1:], sym); ok && name == "" {
			return true, nil
		}
	}
	return false, sc.Err()
}

// probeTracepoint attaches to sock:inet_sock_set_state (the tracer's
// fallback). Needs tracefs (or debugfs) mounted.
func probeTracepoint() error {
	p, err := trivial(ebpf.TracePoint, ebpf.AttachNone, 0)
	if err != nil {
		return err
	}
	defer p.Close()
	l, err := link.Tracepoint("sock", "inet_sock_set_state", p, nil)
	if err != nil {
		return fmt.Errorf("tracepoint sock:inet_sock_set_state: %w", err)
	}
	return l.Close()
}

// inThrowawayNetns runs fn on a thread moved into a new, empty network
// namespace. The thread stays locked and dies with the goroutine, so the
// namespace (and every link fn created in it) goes away with it and no
// other goroutine ever runs there.
func inThrowawayNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("create a network namespace for the link probes: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// probeLinks checks the link-level features on a veth pair in a throwaway
// namespace. Creating a link makes the kernel load its module when it has
// one (request_module), so this also covers "module exists".
func probeLinks(r *Report) error {
	return inThrowawayNetns(func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lbdprobe0"}, PeerName: "lbdprobe1"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth pair for the link probes: %w", err)
		}
		a, err := netlink.LinkByName("lbdprobe0")
		if err != nil {
			return err
		}
		b, err := netlink.LinkByName("lbdprobe1")
		if err != nil {
			return err
		}
		for _, n := range []string{"lbdprobe0", "lbdprobe1"} {
			if l, err := netlink.LinkByName(n); err == nil {
				netlink.LinkSetUp(l)
			}
		}
		ifindex := a.Attrs().Index

		r.XDPNativeVeth = checkErr(probeXDPNative(ifindex))
		r.TCX = checkErr(probeTCX(ifindex))
		r.Clsact = checkErr(probeClsact(ifindex))
		r.IPVLAN = checkErr(netlink.LinkAdd(&netlink.IPVlan{
			LinkAttrs: netlink.LinkAttrs{Name: "lbdipvl0", ParentIndex: ifindex}, Mode: netlink.IPVLAN_MODE_L2}))
		// On the peer: a device that carries ipvlan ports refuses macvlan
		// ones (EBUSY).
		r.Macvlan = checkErr(netlink.LinkAdd(&netlink.Macvlan{
			LinkAttrs: netlink.LinkAttrs{Name: "lbdmacvl0", ParentIndex: b.Attrs().Index}, Mode: netlink.MACVLAN_MODE_BRIDGE}))
		r.IPIP = checkErr(netlink.LinkAdd(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: "lbdipip0"}, FlowBased: true}))
		r.IP6Tnl = checkErr(netlink.LinkAdd(&netlink.Ip6tnl{LinkAttrs: netlink.LinkAttrs{Name: "lbdip6tnl0"}, FlowBased: true}))
		r.FOU = checkErr(fouAddGUE(6080))
		return nil
	})
}

func probeXDPNative(ifindex int) error {
	p, err := trivial(ebpf.XDP, ebpf.AttachXDP, 2 /* XDP_PASS */)
	if err != nil {
		return err
	}
	defer p.Close()
	l, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("attach XDP in driver mode to veth: %w", err)
	}
	return l.Close()
}

func probeTCX(ifindex int) error {
	p, err := trivial(ebpf.SchedCLS, ebpf.AttachTCXIngress, 0 /* TCX_NEXT */)
	if err != nil {
		return err
	}
	defer p.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: p, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attach TCX ingress to veth: %w", err)
	}
	return l.Close()
}

func probeClsact(ifindex int) error {
	err := netlink.QdiscAdd(&netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}})
	if err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	p, err := trivial(ebpf.SchedCLS, ebpf.AttachNone, 0 /* TC_ACT_OK */)
	if err != nil {
		return err
	}
	defer p.Close()
	err = netlink.FilterAdd(&netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{
		LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1,
		Protocol: unix.ETH_P_ALL, Priority: 1}, Fd: p.FD(), Name: "lbdprobe", DirectAction: true})
	if err != nil {
		return fmt.Errorf("add cls_bpf direct-action filter: %w", err)
	}
	return nil
}

// fouAddGUE opens a GUE receive port. It is netlink.FouAdd without the
// FOU_ATTR_IPPROTO=0 attribute that vishvananda/netlink v1.3.1 always
// sends, which kernels >= 6.1 reject for GUE with ERANGE.
func fouAddGUE(port uint16) error {
	fam, err := netlink.FouFamilyId()
	if err != nil {
		return fmt.Errorf("fou generic netlink family: %w", err)
	}
	req := nl.NewNetlinkRequest(fam, unix.NLM_F_ACK)
	raw := []byte{netlink.FOU_CMD_ADD, 1 /* genl version */, 0, 0}
	for _, a := range []*nl.RtAttr{
		nl.NewRtAttr(netlink.FOU_ATTR_PORT, binary.BigEndian.AppendUint16(nil, port)),
		nl.NewRtAttr(netlink.FOU_ATTR_TYPE, []byte{netlink.FOU_ENCAP_GUE}),
		nl.NewRtAttr(netlink.FOU_ATTR_AF, []byte{unix.AF_INET}),
	} {
		raw = append(raw, a.Serialize()...)
	}
	req.AddRawData(raw)
	if _, err := req.Execute(unix.NETLINK_GENERIC, 0); err != nil {
		return fmt.Errorf("add GUE port %d: %w", port, err)
	}
	return nil
}
