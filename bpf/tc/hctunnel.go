package tc

import (
	"log/slog"
)

// HCTunnel is the health-check encapsulation attached to the egress of
// the LB node's interface: probes marked for a real leave through the
// same tunnel as its traffic. It is control.TunnelProbes.
type HCTunnel struct {
	*HCEncap
	Attachment *Attachment
}

// hcProgName is the program's name in the kernel, to find one a killed
// lbd left behind (clsact filters outlive their process).
const hcProgName = "lbd_hc_encap"

// AttachHCTunnel loads the health-check encapsulation with room for
// maxReals probe marks and attaches it to ifname's egress, first removing
// one an earlier lbd left there.
func AttachHCTunnel(ifname string, maxReals uint32, cfg HCConfig) (*HCTunnel, error) {
	hc, err := LoadHCEncap(maxReals, cfg)
	if err != nil {
		return nil, err
	}
	if n, err := DetachProgram(ifname, Egress, hcProgName); err == nil && n > 0 {
		slog.Info("removed a health-check encapsulation an earlier lbd left", "interface", ifname, "count", n)
	}
	att, err := Attach(ifname, hc.Program(), AttachOptions{Direction: Egress})
	if err != nil {
		hc.Close()
		return nil, err
	}
	return &HCTunnel{HCEncap: hc, Attachment: att}, nil
}

// Close detaches the program and releases it.
func (h *HCTunnel) Close() {
	if err := h.Attachment.Detach(); err != nil {
		slog.Warn("detach health-check encapsulation", "err", err)
	}
	h.HCEncap.Close()
}
