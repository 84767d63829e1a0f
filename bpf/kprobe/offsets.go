package kprobe

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// Offsets are the byte offsets of the socket fields the tracer reads. All
// are from the start of struct sock except Ino, which is from the start of
// struct net (the namespace behind the pointer at Netns).
type Offsets struct {
	Saddr     uint16 `json:"saddr"`      // sock_common.skc_rcv_saddr
	Daddr     uint16 `json:"daddr"`      // sock_common.skc_daddr
	Sport     uint16 `json:"sport"`      // sock_common.skc_num (host byte order)
	Dport     uint16 `json:"dport"`      // sock_common.skc_dport (network byte order)
	Family    uint16 `json:"family"`     // sock_common.skc_family
	Netns     uint16 `json:"netns"`      // sock_common.skc_net.net (pointer)
	Ino       uint16 `json:"ino"`        // net.ns.inum
	DaddrIPv6 uint16 `json:"daddr_ipv6"` // sock_common.skc_v6_daddr
	SaddrIPv6 uint16 `json:"saddr_ipv6"` // sock_common.skc_v6_rcv_saddr
}

// offsetField names one field of Offsets, for reports and errors.
type offsetField struct {
	name string
	get  func(*Offsets) *uint16
	path string // in the kernel's types: struct, then member path
}

var offsetFields = []offsetField{
	{"saddr", func(o *Offsets) *uint16 { return &o.Saddr }, "sock.__sk_common.skc_rcv_saddr"},
	{"daddr", func(o *Offsets) *uint16 { return &o.Daddr }, "sock.__sk_common.skc_daddr"},
	{"sport", func(o *Offsets) *uint16 { return &o.Sport }, "sock.__sk_common.skc_num"},
	{"dport", func(o *Offsets) *uint16 { return &o.Dport }, "sock.__sk_common.skc_dport"},
	{"family", func(o *Offsets) *uint16 { return &o.Family }, "sock.__sk_common.skc_family"},
	{"netns", func(o *Offsets) *uint16 { return &o.Netns }, "sock.__sk_common.skc_net.net"},
	{"ino", func(o *Offsets) *uint16 { return &o.Ino }, "net.ns.inum"},
	{"daddr_ipv6", func(o *Offsets) *uint16 { return &o.DaddrIPv6 }, "sock.__sk_common.skc_v6_daddr"},
	{"saddr_ipv6", func(o *Offsets) *uint16 { return &o.SaddrIPv6 }, "sock.__sk_common.skc_v6_rcv_saddr"},
}

// Fields returns the offsets by field name (the names Status and the
// errors of the guesser use).
func (o Offsets) Fields() map[string]uint16 {
	m := make(map[string]uint16, len(offsetFields))
	for _, f := range offsetFields {
		m[f.name] = *f.get(&o)
	}
	return m
}

func (o Offsets) String() string {
	var b strings.Builder
	for i, f := range offsetFields {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", f.name, *f.get(&o))
	}
	return b.String()
}

func (o Offsets) bpf() tracerLbdOffsets {
	return tracerLbdOffsets{
		Saddr: o.Saddr, Daddr: o.Daddr, Sport: o.Sport, Dport: o.Dport, Family: o.Family,
		Netns: o.Netns, Ino: o.Ino, DaddrIpv6: o.DaddrIPv6, SaddrIpv6: o.SaddrIPv6,
	}
}

// KernelOffsets computes the offsets from the kernel's BTF
// (/sys/kernel/btf/vmlinux), as CO-RE would. It is the reference the
// guesser is tested against.
func KernelOffsets() (Offsets, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return Offsets{}, fmt.Errorf("load kernel BTF: %w", err)
	}
	return BTFOffsets(spec)
}

// BTFOffsets computes the offsets from a kernel's BTF.
func BTFOffsets(spec *btf.Spec) (Offsets, error) {
	var o Offsets
	for _, f := range offsetFields {
		parts := strings.Split(f.path, ".")
		var st *btf.Struct
		if err := spec.TypeByName(parts[0], &st); err != nil {
			return Offsets{}, fmt.Errorf("%s: struct %s: %w", f.name, parts[0], err)
		}
		off, err := memberOffset(st, parts[1:])
		if err != nil {
			return Offsets{}, fmt.Errorf("%s: %s: %w", f.name, f.path, err)
		}
		*f.get(&o) = uint16(off)
	}
	return o, nil
}

// memberOffset follows a member path through a struct, descending into
// anonymous structs and unions as C does, and returns the byte offset.
func memberOffset(t btf.Type, path []string) (uint32, error) {
	var total uint32
	for _, name := range path {
		off, next, ok := findMember(t, name)
		if !ok {
			return 0, fmt.Errorf("member %q not found", name)
		}
		total += off
		t = next
	}
	return total, nil
}

func findMember(t btf.Type, name string) (uint32, btf.Type, bool) {
	var members []btf.Member
	switch c := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		members = c.Members
	case *btf.Union:
		members = c.Members
	default:
		return 0, nil, false
	}
	for _, m := range members {
		if m.Name == name {
			if m.Offset%8 != 0 {
				return 0, nil, false
			}
			return uint32(m.Offset / 8), m.Type, true
		}
		if m.Name == "" {
			if off, typ, ok := findMember(m.Type, name); ok {
				return uint32(m.Offset/8) + off, typ, true
			}
		}
	}
	return 0, nil, false
}

// haveKernelBTF reports whether the kernel describes its types in BTF.
func haveKernelBTF() bool {
	_, err := btf.LoadKernelSpec()
	return err == nil || !errors.Is(err, btf.ErrNotFound)
}
