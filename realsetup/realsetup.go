// Package realsetup prepares a Linux real server for lbd's direct server
// return, checks one, and undoes it: what `lbd real setup|check|teardown`
// run, in the calling thread's network namespace.
//
// A real behind an IP-in-IP balancer needs four things, and Katran's most
// common complaint ("it doesn't forward") is one of them missing:
//
//  1. the VIP on a local interface (lo), so the decapsulated packet is
//     delivered and the reply leaves with the VIP as its source;
//  2. arp_ignore=1 and arp_announce=2, so the real never answers ARP for
//     the VIP (which would steal the VIP from the balancer) nor uses it as
//     an ARP source;
//  3. decapsulation: the kernel's own tunnels in collect_md ("external")
//     mode — ipip for an IPv4 outer header, ip6tnl for an IPv6 one — or,
//     on a kernel without those modules, lbd's TC decapsulation program
//     (bpf/tc), which also takes GUE;
//  4. a reverse-path filter that accepts what comes out of the tunnel:
//     the inner source is a client reached through the default route, not
//     through the tunnel device, so strict rp_filter drops it.
//
// What Setup changed is kept in a small state file, so that Teardown can
// put the sysctls back and remove exactly what Setup added.
package realsetup

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/bpf/tc"
)

// Decapsulation modes.
const (
	DecapAuto   = "auto"   // kernel tunnels if the kernel has them, else bpf
	DecapKernel = "kernel" // ipip + ip6tnl devices in collect_md mode
	DecapBPF    = "bpf"    // lbd's TC ingress program (bpf/tc)
)

// Names of the kernel tunnel devices Setup creates (Katran calls them
// ipip0 and ipip60).
const (
	IPIPDevice   = "lbdipip0"
	IP6TnlDevice = "lbdip6tnl0"
)

// Defaults of the options.
const (
	DefaultPinDir    = "/sys/fs/bpf/lbd-real"
	DefaultStateFile = "/var/lib/lbd/real-setup.json"
	decapProgName    = "lbd_decap"
)

// Options say what to set up.
type Options struct {
	VIPs []netip.Addr
	// Decap is DecapAuto, DecapKernel or DecapBPF.
	Decap string
	// Interface receives the tunnel packets (bpf mode); empty: the
	// interface of the default route.
	Interface string
	// GUEPort is the UDP port of GUE packets (bpf mode).
	GUEPort uint16
	// PinDir holds the bpf mode's maps and TCX link.
	PinDir string
	// StateFile records what Setup changed.
	StateFile string
}

func (o *Options) defaults() {
	if o.Decap == "" {
		o.Decap = DecapAuto
	}
	if o.PinDir == "" {
		o.PinDir = DefaultPinDir
	}
	if o.StateFile == "" {
		o.StateFile = DefaultStateFile
	}
	if o.GUEPort == 0 {
		o.GUEPort = tc.DefaultGUEPort
	}
}

// State is what Setup did, saved as JSON in Options.StateFile.
type State struct {
	VIPs      []netip.Addr `json:"vips"`
	Decap     string       `json:"decap"`               // kernel | bpf
	Interface string       `json:"interface,omitempty"` // bpf mode
	TCMode    string       `json:"tc_mode,omitempty"`   // tcx | clsact (bpf mode)
	PinDir    string       `json:"pin_dir,omitempty"`
	GUEPort   uint16       `json:"gue_port,omitempty"`
	// Sysctls holds the values Setup overwrote, to restore on teardown.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// Result says what Setup or Teardown did.
type Result struct {
	Decap   string   `json:"decap"`            // kernel | bpf
	Detail  string   `json:"detail"`           // e.g. "lbd_decap on eth0 ingress (tcx)"
	Reason  string   `json:"reason,omitempty"` // why this mode (auto)
	VIPs    []string `json:"vips"`
	Changes []string `json:"changes"`
}

func loadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read real setup state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("real setup state %s: %w (delete it if it is damaged)", path, err)
	}
	return &s, nil
}

func saveState(path string, s *State) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	data, _ := json.MarshalIndent(s, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write real setup state: %w", err)
	}
	return os.Rename(tmp, path)
}

// Setup prepares this host (this network namespace) for the VIPs.
// Running it again with the same VIPs changes nothing; with more VIPs it
// adds them.
func Setup(o Options) (Result, error) {
	o.defaults()
	if len(o.VIPs) == 0 {
		return Result{}, errors.New("no VIP given: name the VIPs this real serves, e.g. lbd real setup 192.0.2.1")
	}
	st, err := loadState(o.StateFile)
	if err != nil {
		return Result{}, err
	}
	if st == nil {
		st = &State{Sysctls: map[string]string{}}
	}
	if st.Sysctls == nil {
		st.Sysctls = map[string]string{}
	}
	res := Result{}
	note := func(f string, a ...any) { res.Changes = append(res.Changes, fmt.Sprintf(f, a...)) }

	// 1. VIPs on lo.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return res, fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(lo); err != nil {
			return res, fmt.Errorf("set lo up: %w", err)
		}
		note("set lo up")
	}
	for _, v := range o.VIPs {
		added, err := addVIP(lo, v)
		if err != nil {
			return res, err
		}
		if added {
			note("added %s to lo", vipPrefix(v))
		}
	}

	// 2. ARP: never answer for, nor announce, the VIP.
	for _, s := range [][2]string{{"net/ipv4/conf/all/arp_ignore", "1"}, {"net/ipv4/conf/all/arp_announce", "2"}} {
		if err := setSysctl(st, s[0], s[1], note); err != nil {
			return res, err
		}
	}

	// 3. Decapsulation.
	mode := o.Decap
	if st.Decap != "" && mode == DecapAuto {
		mode = st.Decap // keep what an earlier setup chose
	}
	switch mode {
	case DecapAuto:
		kerr := setupKernel(st, note)
		if kerr == nil {
			mode, res.Reason = DecapKernel, "the kernel has ipip and ip6tnl"
			break
		}
		if !isUnsupported(kerr) {
			return res, kerr
		}
		mode, res.Reason = DecapBPF, fmt.Sprintf("the kernel has no IP-in-IP tunnels (%v): using lbd's TC decapsulation", kerr)
		if err := setupBPF(o, st, note); err != nil {
			return res, err
		}
	case DecapKernel:
		if err := setupKernel(st, note); err != nil {
			if isUnsupported(err) {
				return res, fmt.Errorf("%w: this kernel has no ipip/ip6tnl (load the ipip and ip6_tunnel modules, or use --decap bpf)", err)
			}
			return res, err
		}
	case DecapBPF:
		if err := setupBPF(o, st, note); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("decap %q: use auto, kernel or bpf", o.Decap)
	}
	if st.Decap != "" && st.Decap != mode {
		return res, fmt.Errorf("this real is set up with %s decapsulation: run lbd real teardown first to switch to %s", st.Decap, mode)
	}
	st.Decap = mode

	// 4. Reverse path: tunnel devices must accept clients' sources.
	if mode == DecapKernel {
		for _, dev := range []string{IPIPDevice} {
			if err := setSysctl(st, "net/ipv4/conf/"+dev+"/rp_filter", "0", note); err != nil {
				return res, err
			}
		}
		// The effective value is max(all, device): a strict "all" wins.
		if v, _ := readSysctl("net/ipv4/conf/all/rp_filter"); v == "1" {
			if err := setSysctl(st, "net/ipv4/conf/all/rp_filter", "2", note); err != nil {
				return res, err
			}
		}
	}

	st.VIPs = mergeVIPs(st.VIPs, o.VIPs)
	if err := saveState(o.StateFile, st); err != nil {
		return res, err
	}
	res.Decap = st.Decap
	res.Detail = describe(st)
	for _, v := range st.VIPs {
		res.VIPs = append(res.VIPs, v.String())
	}
	return res, nil
}

func describe(st *State) string {
	if st.Decap == DecapKernel {
		return fmt.Sprintf("kernel tunnels %s (ipip) and %s (ip6tnl), collect_md", IPIPDevice, IP6TnlDevice)
	}
	return fmt.Sprintf("lbd_decap on %s ingress (%s), maps pinned in %s", st.Interface, st.TCMode, st.PinDir)
}

func mergeVIPs(a, b []netip.Addr) []netip.Addr {
	set := map[netip.Addr]bool{}
	for _, v := range append(append([]netip.Addr{}, a...), b...) {
		set[v.Unmap()] = true
	}
	out := make([]netip.Addr, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

func vipPrefix(v netip.Addr) netip.Prefix {
	v = v.Unmap()
	return netip.PrefixFrom(v, v.BitLen())
}

func nlAddr(v netip.Addr) *netlink.Addr {
	p := vipPrefix(v)
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if v.Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// addVIP puts v on lo unless it is there; it reports whether it added it.
func addVIP(lo netlink.Link, v netip.Addr) (bool, error) {
	has, err := hasAddr(lo, v)
	if err != nil {
		return false, err
	}
	if has {
		return false, nil
	}
	if err := netlink.AddrAdd(lo, nlAddr(v)); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add VIP %s to lo: %w", v, err)
	}
	return true, nil
}

func hasAddr(l netlink.Link, v netip.Addr) (bool, error) {
	fam := netlink.FAMILY_V4
	if v.Unmap().Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(l, fam)
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == v.Unmap() {
			return true, nil
		}
	}
	return false, nil
}

func sysctlPath(key string) string { return "/proc/sys/" + key }

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// setSysctl sets key to val, remembering the first value it overwrote.
func setSysctl(st *State, key, val string, note func(string, ...any)) error {
	cur, err := readSysctl(key)
	if err != nil {
		return fmt.Errorf("read sysctl %s: %w", strings.ReplaceAll(key, "/", "."), err)
	}
	if cur == val {
		return nil
	}
	if err := os.WriteFile(sysctlPath(key), []byte(val), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), val, err)
	}
	if _, ok := st.Sysctls[key]; !ok {
		st.Sysctls[key] = cur
	}
	note("sysctl %s: %s -> %s", strings.ReplaceAll(key, "/", "."), cur, val)
	return nil
}

// isUnsupported says whether err means the kernel lacks a link type.
func isUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EAFNOSUPPORT) ||
		errors.Is(err, unix.EPROTONOSUPPORT)
}

// setupKernel creates the collect_md tunnel devices (idempotent). It
// creates both or neither.
func setupKernel(st *State, note func(string, ...any)) error {
	devs := []netlink.Link{
		&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: IPIPDevice}, FlowBased: true},
		&netlink.Ip6tnl{LinkAttrs: netlink.LinkAttrs{Name: IP6TnlDevice}, FlowBased: true},
	}
	var created []netlink.Link
	for _, d := range devs {
		l, err := netlink.LinkByName(d.Attrs().Name)
		if err == nil {
			if l.Type() != d.Type() {
				return fmt.Errorf("interface %s exists and is a %s, not %s: remove or rename it", d.Attrs().Name, l.Type(), d.Type())
			}
		} else {
			if err := netlink.LinkAdd(d); err != nil {
				for _, c := range created {
					_ = netlink.LinkDel(c)
				}
				return fmt.Errorf("create %s device %s: %w", d.Type(), d.Attrs().Name, err)
			}
			created = append(created, d)
			note("created %s device %s (external/collect_md)", d.Type(), d.Attrs().Name)
			if l, err = netlink.LinkByName(d.Attrs().Name); err != nil {
				return fmt.Errorf("find %s: %w", d.Attrs().Name, err)
			}
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := netlink.LinkSetUp(l); err != nil {
				return fmt.Errorf("set %s up: %w", d.Attrs().Name, err)
			}
			note("set %s up", d.Attrs().Name)
		}
	}
	return nil
}

// defaultRouteInterface is the interface of the IPv4 (else IPv6) default
// route: where the balancer's packets arrive on a typical real.
func defaultRouteInterface() (string, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam)
		if err != nil {
			return "", fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if r.LinkIndex > 0 {
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err == nil {
					return l.Attrs().Name, nil
				}
			}
		}
	}
	return "", errors.New("no default route to find the interface tunnel packets arrive on: pass --interface")
}

func linkPin(pinDir, ifname string) string { return filepath.Join(pinDir, "link-"+ifname) }

// setupBPF loads lbd's decapsulation program with pinned maps, adds the
// VIPs and attaches it (once) to the interface.
func setupBPF(o Options, st *State, note func(string, ...any)) error {
	ifname := o.Interface
	if ifname == "" {
		ifname = st.Interface
	}
	if ifname == "" {
		var err error
		if ifname, err = defaultRouteInterface(); err != nil {
			return err
		}
	}
	if st.Interface != "" && st.Interface != ifname {
		return fmt.Errorf("decapsulation is set up on %s: run lbd real teardown first to move it to %s", st.Interface, ifname)
	}
	d, err := tc.LoadDecap(tc.Options{MaxVIPs: 1024, GUEPort: o.GUEPort, PinDir: o.PinDir})
	if err != nil {
		return err
	}
	defer d.Close()
	have, err := d.VIPs()
	if err != nil {
		return err
	}
	for _, v := range o.VIPs {
		if !containsAddr(have, v) {
			if err := d.AddVIP(v); err != nil {
				return err
			}
			note("added %s to the decapsulation program's VIPs", v)
		}
	}
	progs, err := tc.Attached(ifname, tc.Ingress)
	if err != nil {
		return err
	}
	attached := false
	for _, p := range progs {
		if p.Name == decapProgName {
			attached = true
			st.TCMode = string(p.Mode)
		}
	}
	if !attached {
		// A pin left by a link that is no longer attached (someone detached
		// the program) would stop the new link from being pinned.
		if err := os.Remove(linkPin(o.PinDir, ifname)); err == nil {
			note("removed the pin of a detached lbd_decap link")
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale link pin: %w", err)
		}
		a, err := tc.Attach(ifname, d.Program(), tc.AttachOptions{Direction: tc.Ingress})
		if err != nil {
			return err
		}
		if err := a.Pin(linkPin(o.PinDir, ifname)); err != nil {
			_ = a.Detach()
			return err
		}
		if err := a.Release(); err != nil {
			return err
		}
		st.TCMode = string(a.Mode)
		note("attached lbd_decap to %s ingress (%s: %s)", ifname, a.Mode, a.Reason)
	}
	st.Interface, st.PinDir, st.GUEPort = ifname, o.PinDir, o.GUEPort
	return nil
}

func containsAddr(list []netip.Addr, v netip.Addr) bool {
	for _, a := range list {
		if a.Unmap() == v.Unmap() {
			return true
		}
	}
	return false
}

// Teardown removes the given VIPs (every VIP Setup added if none is
// given). When no VIP is left, it also removes the decapsulation and puts
// the sysctls back. Running it again changes nothing.
func Teardown(o Options) (Result, error) {
	o.defaults()
	res := Result{}
	note := func(f string, a ...any) { res.Changes = append(res.Changes, fmt.Sprintf(f, a...)) }
	st, err := loadState(o.StateFile)
	if err != nil {
		return res, err
	}
	if st == nil {
		st = &State{Sysctls: map[string]string{}}
		// No record: remove what the arguments name, and lbd's own devices
		// and program if present (e.g. after the state file was lost).
	}
	remove := o.VIPs
	if len(remove) == 0 {
		remove = st.VIPs
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return res, fmt.Errorf("find lo: %w", err)
	}
	for _, v := range remove {
		has, err := hasAddr(lo, v)
		if err != nil {
			return res, err
		}
		if has {
			if err := netlink.AddrDel(lo, nlAddr(v)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return res, fmt.Errorf("remove VIP %s from lo: %w", v, err)
			}
			note("removed %s from lo", vipPrefix(v))
		}
	}
	var left []netip.Addr
	for _, v := range st.VIPs {
		if !containsAddr(remove, v) {
			left = append(left, v)
		}
	}
	pinDir := st.PinDir
	if pinDir == "" {
		pinDir = o.PinDir
	}
	if len(left) > 0 {
		// Other VIPs stay: only take these out of the decap program.
		if st.Decap == DecapBPF {
			d, err := tc.LoadDecap(tc.Options{MaxVIPs: 1024, GUEPort: st.GUEPort, PinDir: pinDir})
			if err != nil {
				return res, err
			}
			for _, v := range remove {
				if err := d.RemoveVIP(v); err == nil {
					note("removed %s from the decapsulation program's VIPs", v)
				}
			}
			d.Close()
		}
		st.VIPs = left
		if err := saveState(o.StateFile, st); err != nil {
			return res, err
		}
		res.Decap, res.Detail = st.Decap, describe(st)
		for _, v := range left {
			res.VIPs = append(res.VIPs, v.String())
		}
		return res, nil
	}

	// Nothing left: remove the decapsulation, whichever is there.
	for _, name := range []string{IPIPDevice, IP6TnlDevice} {
		if l, err := netlink.LinkByName(name); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				return res, fmt.Errorf("delete %s: %w", name, err)
			}
			note("deleted %s", name)
		}
	}
	ifaces := []string{}
	if st.Interface != "" {
		ifaces = append(ifaces, st.Interface)
	} else if o.Interface != "" {
		ifaces = append(ifaces, o.Interface)
	}
	for _, ifname := range ifaces {
		n, err := tc.DetachProgram(ifname, tc.Ingress, decapProgName)
		if err != nil && !isNoLink(err) {
			return res, err
		}
		if n > 0 {
			note("detached lbd_decap from %s", ifname)
		}
	}
	if _, err := os.Stat(pinDir); err == nil {
		if err := os.RemoveAll(pinDir); err != nil {
			return res, fmt.Errorf("remove pins %s: %w", pinDir, err)
		}
		note("removed pins %s", pinDir)
	}
	keys := make([]string, 0, len(st.Sysctls))
	for k := range st.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := os.Stat(sysctlPath(k)); err != nil {
			continue // a device's key, gone with the device
		}
		if err := os.WriteFile(sysctlPath(k), []byte(st.Sysctls[k]), 0o644); err != nil {
			return res, fmt.Errorf("restore sysctl %s: %w", k, err)
		}
		note("restored sysctl %s=%s", strings.ReplaceAll(k, "/", "."), st.Sysctls[k])
	}
	if err := os.Remove(o.StateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("remove state file: %w", err)
	}
	res.Decap = "none"
	res.Detail = "nothing of lbd's is left on this real"
	return res, nil
}

func isNoLink(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || strings.Contains(err.Error(), "Link not found")
}
