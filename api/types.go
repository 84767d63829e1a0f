package api

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
)

// vipJSON renders a VIP; health, if not nil, gives its reals' health.
func vipJSON(v *control.VIP, health func(netip.Addr) *apiv1.RealHealthJSON) apiv1.VIPJSON {
	out := apiv1.VIPJSON{
		Name: lb.VIPName(v.Key), Protocol: v.Key.Proto.String(), Address: v.Key.Addr.String(), Port: v.Key.Port,
		Flags: v.Flags, Encap: string(v.Encap), RingSize: v.RingSize, Reals: []apiv1.RealJSON{},
		HealthCheck: healthCheckJSON(v.Health), DownFlows: string(v.DownFlows), AllDown: string(v.AllDown), Disabled: v.Disabled, Description: v.Description,
	}
	for _, r := range v.Reals {
		rj := realJSON(r)
		if health != nil {
			rj.Health = health(r.Addr)
		}
		out.Reals = append(out.Reals, rj)
	}
	return out
}

func healthCheckJSON(s health.Spec) apiv1.HealthCheckJSON {
	if s.Type == health.None || s.Type == "" {
		return apiv1.HealthCheckJSON{Type: string(health.None)}
	}
	return apiv1.HealthCheckJSON{Type: string(s.Type), Port: s.Port, Path: s.Path, ExpectStatus: s.ExpectStatus,
		Interval: s.Interval.String(), Timeout: s.Timeout.String(), Rise: s.Rise, Fall: s.Fall}
}

// healthSpec turns input into a health check spec (defaults are the
// controller's).
func healthSpec(h *apiv1.HealthCheckJSON) (health.Spec, error) {
	if h == nil {
		return health.Spec{}, nil
	}
	if h.Type == "" {
		return health.Spec{}, &control.InvalidError{Field: "health_check.type", Msg: `health_check needs a "type": none, tcp, http, https or udp`}
	}
	s := health.Spec{Type: health.Type(h.Type), Port: h.Port, Path: h.Path, ExpectStatus: h.ExpectStatus, Rise: h.Rise, Fall: h.Fall}
	for _, d := range []struct {
		in, field string
		out       *time.Duration
	}{{h.Interval, "interval", &s.Interval}, {h.Timeout, "timeout", &s.Timeout}} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil || v <= 0 {
			return s, &control.InvalidError{Field: "health_check." + d.field, Msg: fmt.Sprintf("health check %s %q: want a duration such as 5s or 500ms", d.field, d.in)}
		}
		*d.out = v
	}
	return s, nil
}

func healthJSON(st health.Status) *apiv1.RealHealthJSON {
	out := &apiv1.RealHealthJSON{State: string(st.State), Reason: st.Reason, LastChange: st.LastChange.UTC(),
		SuccessesInARow: st.Successes, FailuresInARow: st.Failures}
	if !st.LastResult.At.IsZero() {
		r := st.LastResult
		out.LastResult = &apiv1.ProbeResultJSON{OK: r.OK, Reason: r.Reason, At: r.At.UTC(), DurationMS: float64(r.Duration.Microseconds()) / 1000}
	}
	return out
}

func realJSON(r control.Real) apiv1.RealJSON {
	w := r.Weight
	return apiv1.RealJSON{Address: r.Addr.String(), Weight: &w, State: string(r.State)}
}

// toReal turns input into a control.Real; weight defaults to 1, state to
// active.
func toReal(r apiv1.RealJSON) (control.Real, error) {
	addr, err := netip.ParseAddr(r.Address)
	if err != nil {
		return control.Real{}, &control.InvalidError{Field: "address", Msg: "real address " + quote(r.Address) + ": not an IPv4 or IPv6 address"}
	}
	out := control.Real{Addr: addr, Weight: 1, State: control.RealState(r.State)}
	if r.Weight != nil {
		out.Weight = *r.Weight
	}
	return out, nil
}

func toReals(rs []apiv1.RealJSON) ([]control.Real, error) {
	out := make([]control.Real, 0, len(rs))
	for _, r := range rs {
		real, err := toReal(r)
		if err != nil {
			return nil, err
		}
		out = append(out, real)
	}
	return out, nil
}

// createdVIP reads a VIP, address and all.
func createdVIP(in apiv1.VIPCreateJSON) (control.VIP, error) {
	proto, err := lb.ParseProto(in.Protocol)
	if err != nil {
		return control.VIP{}, &control.InvalidError{Field: "protocol", Msg: err.Error()}
	}
	addr, err := netip.ParseAddr(in.Address)
	if err != nil {
		return control.VIP{}, &control.InvalidError{Field: "address", Msg: fmt.Sprintf("VIP address %q: not an IPv4 or IPv6 address", in.Address)}
	}
	if in.Port == nil || *in.Port < 0 || *in.Port > 65535 {
		return control.VIP{}, &control.InvalidError{Field: "port", Msg: "port is required: 1-65535, or 0 for a port-less VIP"}
	}
	return settingsVIP(in.VIPSettingsJSON, lb.VIPKey{Addr: addr, Port: uint16(*in.Port), Proto: proto})
}

// settingsVIP reads the settings of the VIP key.
func settingsVIP(s apiv1.VIPSettingsJSON, key lb.VIPKey) (control.VIP, error) {
	reals, err := toReals(s.Reals)
	if err != nil {
		return control.VIP{}, err
	}
	spec, err := healthSpec(s.HealthCheck)
	if err != nil {
		return control.VIP{}, err
	}
	return control.VIP{Key: key, Flags: s.Flags, Encap: control.Encap(s.Encap), RingSize: s.RingSize, Reals: reals,
		Health: spec, DownFlows: control.DownFlows(s.DownFlows), AllDown: control.AllDown(s.AllDown), Disabled: s.Disabled, Description: s.Description}, nil
}

func trafficJSON(t control.Traffic) apiv1.TrafficJSON {
	return apiv1.TrafficJSON{Packets: t.Packets, Bytes: t.Bytes, PacketsPerSec: t.PacketsPerSec, BytesPerSec: t.BytesPerSec}
}

func quote(s string) string { return "\"" + s + "\"" }
