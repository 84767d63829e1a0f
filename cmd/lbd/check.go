package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/bpf/features"
	"github.com/lbd-dev/lbd/control"
)

// runCheck is `lbd serve --check`: the configuration has loaded and
// validated already; it checks the state file and what the kernel and
// the interface offer, prints what lbd serve would do, and changes
// nothing. Any problem is an error (exit status 1), like haproxy -c.
func runCheck(cfg serveConfig, out io.Writer) error {
	var errs []error
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	say("config: ok (interface %s, API %s, pins %s, state %s)", cfg.Interface, cfg.Listen, cfg.PinDir, cfg.StateDir)

	// The state file, read only (NewStore would create the directory).
	state := filepath.Join(cfg.StateDir, control.StateFileName)
	if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
		say("state: %s does not exist yet: lbd starts with no VIPs", state)
	} else if store, err := control.NewStore(cfg.StateDir); err != nil {
		errs = append(errs, err)
	} else if vips, err := store.Load(); err != nil {
		errs = append(errs, fmt.Errorf("state file: %w", err))
	} else {
		say("state: %s: %d VIPs to reconcile into the datapath", state, len(vips))
	}

	say("kernel: %s", features.KernelRelease())

	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		errs = append(errs, fmt.Errorf("interface %s: %w (interface: in the config, or --interface)", cfg.Interface, err))
	} else {
		xdpState := "no XDP program"
		if x := link.Attrs().Xdp; x != nil && x.Attached {
			xdpState = fmt.Sprintf("an XDP program (id %d) is attached", x.ProgId)
		}
		say("interface: %s (%s, %s); %s", cfg.Interface, link.Type(), link.Attrs().OperState, xdpState)
	}
	if _, err := os.Stat(filepath.Join(cfg.PinDir, "links", cfg.Interface)); err == nil {
		say("datapath: pins under %s: lbd takes over the pinned XDP link and the connection table (hitless restart)", cfg.PinDir)
	} else {
		say("datapath: no pins under %s: lbd creates the maps and attaches XDP (mode %s)", cfg.PinDir, cfg.XDPMode)
	}
	// TC: tcx from 6.6, else clsact (bpf/features decides at start).
	tc := "clsact"
	if features.KernelAtLeast(6, 6) {
		tc = "tcx"
	}
	say("tc: health-check encapsulation via %s", tc)
	tracer := cfg.Tracer
	if tracer == "auto" {
		if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
			tracer = "tracepoint (CO-RE, the kernel has BTF)"
		} else {
			tracer = "kprobe or tracepoint with guessed offsets (no BTF)"
		}
	}
	say("tracer: %s", tracer)
	if cfg.BGP.ASN != 0 {
		say("bgp: AS %d, %d peers, listening on port %d", cfg.BGP.ASN, len(cfg.BGP.Peers)+len(cfg.BGP.PeerFlags()), cfg.BGP.ListenPort)
	} else {
		say("bgp: off")
	}
	if err := errors.Join(errs...); err != nil {
		say("check FAILED")
		return err
	}
	say("check ok")
	return nil
}
