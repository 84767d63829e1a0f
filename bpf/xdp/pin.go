package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/lb"
)

// pinnedMaps are the maps that hold state a restart must keep. They are
// pinned by their names; everything else (the program, its read-only
// data) is made anew by each run.
var pinnedMaps = []string{
	balancerMapVips, balancerMapVipInfo, balancerMapVipAddrs,
	balancerMapReals, balancerMapRings, balancerMapConns,
	balancerMapConfig, balancerMapVipStats, balancerMapRealStats, balancerMapStats,
}

// linksDir is where, under the pin directory, XDP links are pinned: one
// file per interface, named after it.
const linksDir = "links"

// BPFFSRoot is where the kernel's bpf filesystem is normally mounted.
const BPFFSRoot = "/sys/fs/bpf"

// DefaultPinDir is where lbd pins its maps and links unless told otherwise.
const DefaultPinDir = BPFFSRoot + "/lbd"

// cleanupHint is what to do about pins this lbd cannot use.
const cleanupHint = "run `lbd cleanup` to remove the old pins (this drops the connection table and takes lbd off its interfaces), or start lbd with the same limits as the run that made them"

// openPinDirs are the pin directories Balancers of this process use: two
// Balancers sharing pins would each keep their own bookkeeping of the same
// maps and hand out the same VIP numbers and real indices.
var openPinDirs = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

func cleanPinDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("pin directory %s: %w", dir, err)
	}
	return abs, nil
}

// claimPinDir checks that dir is a directory on a bpf filesystem and marks
// it as used by this process.
func claimPinDir(dir string) (string, error) {
	dir, err := cleanPinDir(dir)
	if err != nil {
		return "", err
	}
	if err := checkBPFFS(dir); err != nil {
		return "", err
	}
	openPinDirs.Lock()
	defer openPinDirs.Unlock()
	if openPinDirs.m[dir] {
		return "", fmt.Errorf("pin directory %s is already used by another Balancer of this process: close it first", dir)
	}
	openPinDirs.m[dir] = true
	return dir, nil
}

func releasePinDir(dir string) {
	openPinDirs.Lock()
	defer openPinDirs.Unlock()
	delete(openPinDirs.m, dir)
}

func pinDirInUse(dir string) bool {
	openPinDirs.Lock()
	defer openPinDirs.Unlock()
	return openPinDirs.m[dir]
}

// checkBPFFS says whether dir exists and lies on a bpf filesystem.
func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("pin directory %s does not exist: create it on a bpf filesystem (EnsureBPFFS, or `lbd serve` does it)", dir)
		}
		return fmt.Errorf("pin directory %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("pin directory %s is not on a bpf filesystem: use a directory under %s (mount it with `mount -t bpf bpf %s` if it is not mounted)", dir, BPFFSRoot, BPFFSRoot)
	}
	return nil
}

// EnsureBPFFS mounts the bpf filesystem at BPFFSRoot if nothing is mounted
// there yet, and creates dir (which must then lie on a bpf filesystem).
func EnsureBPFFS(dir string) error {
	var st unix.Statfs_t
	err := unix.Statfs(BPFFSRoot, &st)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("check %s: %w", BPFFSRoot, err)
	}
	if err != nil || st.Type != unix.BPF_FS_MAGIC {
		if err := os.MkdirAll(BPFFSRoot, 0o755); err != nil {
			return fmt.Errorf("create %s to mount the bpf filesystem on: %w", BPFFSRoot, err)
		}
		if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount the bpf filesystem on %s (needs CAP_SYS_ADMIN; or run `mount -t bpf bpf %s`): %w", BPFFSRoot, BPFFSRoot, err)
		}
		slog.Info("mounted bpf filesystem", "path", BPFFSRoot)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	return checkBPFFS(dir)
}

// checkPins looks at the pins in dir before anything is loaded: none
// (fresh is true), all of them compatible with spec, or an error that
// names what does not fit. It changes nothing.
func checkPins(spec *ebpf.CollectionSpec, dir string, limits Limits) (fresh bool, err error) {
	var present, missing, bad []string
	for _, name := range pinnedMaps {
		path := filepath.Join(dir, name)
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			missing = append(missing, name)
			continue
		}
		present = append(present, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			return false, fmt.Errorf("open pinned map %s: %w (%s)", path, err, cleanupHint)
		}
		err = spec.Maps[name].Compatible(m)
		m.Close()
		if err != nil {
			// Compatible says e.g. "MaxEntries: 1024 changed to 2048": pinned, then wanted.
			diff := strings.TrimSuffix(err.Error(), ": "+ebpf.ErrMapIncompatible.Error())
			bad = append(bad, fmt.Sprintf("map %s: %s (pinned → wanted)", name, diff))
		}
	}
	switch {
	case len(bad) > 0:
		return false, fmt.Errorf("pins in %s do not fit this lbd (limits %d VIPs, %d reals, %d flows): %s: %w; %s",
			dir, limits.MaxVIPs, limits.MaxReals, limits.MaxFlows, strings.Join(bad, "; "), ebpf.ErrMapIncompatible, cleanupHint)
	case len(present) == 0:
		return true, nil
	case len(missing) > 0:
		return false, fmt.Errorf("pins in %s are incomplete: %s exist but %s do not (an lbd stopped while creating them, or one with another map layout made them): %w; %s",
			dir, strings.Join(present, ", "), strings.Join(missing, ", "), ebpf.ErrMapIncompatible, cleanupHint)
	}
	return false, nil
}

// removeMapPins removes the map pins in dir and says which it removed.
func removeMapPins(dir string) ([]string, error) {
	var removed []string
	var errs []error
	for _, name := range append(slices.Clip(pinnedMaps), legacyFlowsPin) {
		path := filepath.Join(dir, name)
		err := os.Remove(path)
		switch {
		case err == nil:
			removed = append(removed, path)
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, fmt.Errorf("remove pin %s: %w", path, err))
		}
	}
	return removed, errors.Join(errs...)
}

// Cleanup takes lbd off every interface it has a pinned XDP link on and
// removes every pin lbd made under pinDir, then pinDir itself: the state a
// restart would have kept (connection table, counters) is gone. A
// directory that does not exist is not an error, so Cleanup may be run
// again. Each removal is logged (log/slog); files lbd did not make are
// left in place and named in the error. A Balancer of this process must
// not be using pinDir, and no other lbd process should: one that runs
// keeps its links, and so its program on the interfaces, until it exits.
func Cleanup(pinDir string) error {
	dir, err := cleanPinDir(pinDir)
	if err != nil {
		return err
	}
	if pinDirInUse(dir) {
		return fmt.Errorf("cleanup %s: a Balancer of this process still uses it: close it first", dir)
	}
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		slog.Info("nothing to clean up", "pin_dir", dir)
		return nil
	}
	var errs []error
	ldir := filepath.Join(dir, linksDir)
	entries, err := os.ReadDir(ldir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list pinned links: %w", err))
	}
	for _, e := range entries {
		if err := removeLinkPin(filepath.Join(ldir, e.Name())); err != nil {
			errs = append(errs, err)
		} else {
			slog.Info("detached XDP program and removed its link pin", "ifname", e.Name(), "path", filepath.Join(ldir, e.Name()))
		}
	}
	if err := os.Remove(ldir); err == nil {
		slog.Info("removed directory", "path", ldir)
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", ldir, err))
	}
	removed, err := removeMapPins(dir)
	for _, p := range removed {
		slog.Info("removed map pin", "path", p)
	}
	if err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(dir); err == nil {
		slog.Info("removed directory", "path", dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		left, _ := os.ReadDir(dir)
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		errs = append(errs, fmt.Errorf("remove %s: %w (left: %s; lbd did not make these, remove them yourself)", dir, err, strings.Join(names, ", ")))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup %s: %w", dir, errors.Join(errs...))
	}
	return nil
}

// removeLinkPin unpins a pinned XDP link and drops it, which detaches its
// program. A pin that is no link is removed all the same.
func removeLinkPin(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove link pin %s: %w", path, err)
		}
		return nil
	}
	defer l.Close()
	detachLink(l)
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin link %s: %w", path, err)
	}
	return nil
}

// detachLink detaches a link from its hook now (BPF_LINK_DETACH, 5.9+).
// Unpinning and closing would too, but only once the last reference is
// gone, and the pin's reference goes with an RCU callback on some kernels
// (5.10): for a moment the program would still run.
func detachLink(l link.Link) {
	if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
		slog.Debug("detach XDP link", "err", err)
	}
}

// recover rebuilds the bookkeeping from maps a previous run left: VIP
// numbers and generations from vips and vip_info, real indices from reals.
// It repairs what a run stopped in the middle of a change may have left:
// a vip_info entry without a VIP, a vip_addrs entry that no VIP needs.
func (b *Balancer) recover() error {
	if err := b.upgradeConfig(); err != nil {
		return err
	}
	metas := make([]balancerVipMeta, b.limits.MaxVIPs)
	for num := range metas {
		if err := b.objs.VipInfo.Lookup(uint32(num), &metas[num]); err != nil {
			return fmt.Errorf("recover: read vip_info[%d]: %w", num, err)
		}
		b.lastGen = max(b.lastGen, metas[num].Gen, metas[num].LastGen)
	}

	var rk balancerVipKey
	var num uint32
	it := b.objs.Vips.Iterate()
	for it.Next(&rk, &num) {
		addr, err := wordsAddr(rk.Addr, uint32(rk.Family))
		if err != nil {
			return fmt.Errorf("recover: vips map: %w (%s)", err, cleanupHint)
		}
		key := lb.VIPKey{Addr: addr, Port: ntohs(rk.Port), Proto: lb.Proto(rk.Proto)}
		if num >= b.limits.MaxVIPs || b.vipNums[num] {
			return fmt.Errorf("recover: VIP %s has number %d, which is out of range or taken by another VIP (%s)", key, num, cleanupHint)
		}
		m := metas[num]
		if m.Gen == 0 {
			return fmt.Errorf("recover: VIP %s (number %d) has no vip_info entry (%s)", key, num, cleanupHint)
		}
		b.vipNums[num] = true
		b.vips[key] = vipEntry{num: num, flags: lb.VIPFlags(m.Flags), ringSize: m.RingSize & ringSizeMask, buf: m.RingSize >> ringBufShift, gen: m.Gen}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("recover: read vips map: %w", err)
	}

	for n, m := range metas {
		if m.Gen == 0 || b.vipNums[n] {
			continue
		}
		// A VIP whose add or remove did not finish: its number is free.
		if err := b.objs.VipInfo.Update(uint32(n), freeMeta(max(m.Gen, m.LastGen)), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("recover: free vip_info[%d]: %w", n, err)
		}
		if err := b.dropRings(uint32(n)); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}

	var def balancerRealDef
	var idx uint32
	rit := b.objs.Reals.Iterate()
	for rit.Next(&idx, &def) {
		if def.Family == familyNone || idx == 0 || idx >= b.limits.MaxReals {
			continue
		}
		addr, err := wordsAddr(def.Addr, def.Family)
		if err != nil {
			return fmt.Errorf("recover: reals[%d]: %w (%s)", idx, err, cleanupHint)
		}
		b.realIDs[idx] = true
		b.slots[RealID(idx)] = addr
		if _, dup := b.reals[addr]; !dup {
			b.reals[addr] = RealID(idx)
		}
	}
	if err := rit.Err(); err != nil {
		return fmt.Errorf("recover: read reals map: %w", err)
	}

	// vip_addrs must say exactly what the VIPs need.
	var ak balancerAddrKey
	var flags balancerLbdAddrFlag
	var stale []balancerAddrKey
	ait := b.objs.VipAddrs.Iterate()
	for ait.Next(&ak, &flags) {
		stale = append(stale, ak)
	}
	if err := ait.Err(); err != nil {
		return fmt.Errorf("recover: read vip_addrs map: %w", err)
	}
	used := map[netip.Addr]bool{}
	for k := range b.vips {
		used[k.Addr] = true
	}
	for _, ak := range stale {
		if a, err := wordsAddr(ak.Addr, ak.Family); err == nil && used[a] {
			continue
		}
		if err := b.objs.VipAddrs.Delete(&ak); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("recover: delete stale vip_addrs entry: %w", err)
		}
	}
	addrs := make([]netip.Addr, 0, len(used))
	for a := range used {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		if err := b.syncAddr(a); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}

	// A run that stopped between creating the pins and writing the
	// configuration left it zeroed, which is never valid.
	var rc balancerLbdConfig
	if err := b.objs.Config.Lookup(uint32(0), &rc); err != nil {
		return fmt.Errorf("recover: read config map: %w", err)
	}
	if rc == (balancerLbdConfig{}) {
		return b.SetConfig(DefaultConfig())
	}
	return nil
}
