package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/pflag"

	"errors"
	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/bpf/kprobe"
)

// tracerConfig is the connection tracer's part of lbd serve's
// configuration (inlined into serveConfig, so YAML keys sit at the top
// level: tracer, tracer_guess).
type tracerConfig struct {
	// Tracer is auto (kprobes if the kernel has them, else tracepoints;
	// if neither works lbd runs without the tracer and says why), off,
	// kprobe or tracepoint (then a tracer that cannot start stops lbd).
	Tracer string `yaml:"tracer"`
	// TracerGuess guesses the socket field offsets even when the kernel
	// has BTF (the tracer's fallback for kernels without BTF).
	TracerGuess bool `yaml:"tracer_guess"`
}

func defaultTracerConfig() tracerConfig { return tracerConfig{Tracer: "auto"} }

func (c *tracerConfig) bindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Tracer, "tracer", c.Tracer, "TCP/UDP connection tracer: auto, off, kprobe or tracepoint")
	fs.BoolVar(&c.TracerGuess, "tracer-guess", c.TracerGuess, "guess the kernel's socket field offsets even when it has BTF")
}

func (c tracerConfig) validate() error {
	switch c.Tracer {
	case "auto", "off", "kprobe", "tracepoint":
		return nil
	}
	return fmt.Errorf("tracer %q: use auto, off, kprobe or tracepoint", c.Tracer)
}

// startTracer starts the connection tracer as configured. It returns nil
// (and no error) when the tracer is off, or in auto mode when it cannot
// run here: the API then answers "tracer not running". stop is never nil.
func startTracer(ctx context.Context, c tracerConfig, log *slog.Logger) (api.TracerSource, func(), error) {
	nop := func() {}
	if c.Tracer == "off" {
		log.Info("connection tracer off")
		return nil, nop, nil
	}
	tr, err := kprobe.New(kprobe.Options{Mode: kprobe.Mode(c.Tracer), Guess: c.TracerGuess, Logger: log.With("component", "tracer")})
	if err != nil {
		return nil, nop, err
	}
	if err := tr.Start(ctx); err != nil {
		if c.Tracer == "auto" {
			log.Warn("connection tracer not started; serving without it", "err", err)
			return nil, nop, nil
		}
		return nil, nop, fmt.Errorf("start the connection tracer (--tracer %s): %w", c.Tracer, err)
	}
	st := tr.Status()
	log.Info("connection tracer running", "mode", st.Mode, "offsets", st.OffsetSource, "buffer", st.Buffer, "fd_install", st.FdInstall)
	return tracerSource{tr}, func() { tr.Stop() }, nil
}

// tracerSource is the kprobe tracer in the API's terms (api.TracerSource):
// the API does not import bpf/kprobe, this wiring converts.
type tracerSource struct{ tr *kprobe.Tracer }

func (s tracerSource) Status() apiv1.TracerStatusJSON { return tracerStatusJSON(s.tr.Status()) }

func (s tracerSource) Connections(f api.ConnectionFilter) ([]apiv1.ConnectionJSON, error) {
	conns, err := s.tr.Connections(kprobe.Filter(f))
	if errors.Is(err, kprobe.ErrNotRunning) {
		return nil, fmt.Errorf("%w: %w", api.ErrTracerNotRunning, err)
	}
	out := make([]apiv1.ConnectionJSON, len(conns))
	for i, c := range conns {
		out[i] = connectionJSON(c)
	}
	return out, err
}

func (s tracerSource) Subscribe(ctx context.Context, buffer int) (api.TracerSubscription, error) {
	sub, err := s.tr.Subscribe(ctx, buffer)
	if err != nil {
		if errors.Is(err, kprobe.ErrNotRunning) {
			err = fmt.Errorf("%w: %w", api.ErrTracerNotRunning, err)
		}
		return nil, err
	}
	return newEventSub(ctx, sub), nil
}

// eventSub converts a subscription's events as they are read: its
// channel is unbuffered, so a slow reader still fills the tracer's buffer
// and is counted in Dropped, as without the conversion.
type eventSub struct {
	sub *kprobe.Subscription
	c   chan apiv1.EventJSON
}

func newEventSub(ctx context.Context, sub *kprobe.Subscription) *eventSub {
	s := &eventSub{sub: sub, c: make(chan apiv1.EventJSON)}
	go func() {
		defer close(s.c)
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-sub.C:
				if !ok {
					return
				}
				select {
				case s.c <- eventJSON(ev):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return s
}

func (s *eventSub) Events() <-chan apiv1.EventJSON { return s.c }
func (s *eventSub) Dropped() uint64                { return s.sub.Dropped() }

func connectionJSON(c kprobe.Connection) apiv1.ConnectionJSON {
	return apiv1.ConnectionJSON{
		Protocol: c.Proto.String(), Source: c.Src.String(), Destination: c.Dst.String(),
		Netns: c.Netns, PID: c.PID, Comm: c.Comm, Direction: c.Direction, State: c.State,
		BytesSent: c.BytesSent, BytesRecv: c.BytesRecv, Retransmits: c.Retransmits,
		SRTTMicros: c.SRTT.Microseconds(), FirstSeen: c.FirstSeen, LastSeen: c.LastSeen,
	}
}

// eventJSON converts a tracer event.
func eventJSON(ev kprobe.Event) apiv1.EventJSON {
	e := apiv1.EventJSON{
		Type: ev.Type.String(), Time: ev.Time, Monotonic: ev.Monotonic, CPU: ev.CPU, PID: ev.PID, TID: ev.TID,
		Comm: ev.Comm, Netns: ev.Netns, BytesSent: ev.BytesSent, BytesRecv: ev.BytesRecv,
		Retransmits: ev.Retransmits, SRTTMicros: ev.SRTT.Microseconds(), FD: ev.FD,
	}
	if ev.Type != kprobe.EventFdInstall {
		e.Protocol, e.Source, e.Destination = ev.Proto.String(), ev.Src.String(), ev.Dst.String()
	}
	return e
}

func tracerStatusJSON(st kprobe.Status) apiv1.TracerStatusJSON {
	out := apiv1.TracerStatusJSON{
		Running: st.Running, Kernel: st.Kernel, Mode: string(st.Mode), BTF: st.BTF, OffsetSource: string(st.OffsetSource),
		Offsets: apiv1.TracerOffsetsJSON(st.Offsets), Buffer: st.Buffer, FdInstall: st.FdInstall, SRTT: st.SRTT,
		AcceptBy: st.AcceptBy, Attached: st.Attached, Events: st.Events, Lost: st.Lost, LostPerf: st.LostPerf,
		StatsMapFull: st.StatsMapFull, SocksMapFull: st.SocksMapFull, Expired: st.Expired, CloseInferred: st.CloseInferred,
		KprobeMissed: st.KprobeMissed, HookMisses: st.HookMisses, Connections: st.Connections,
	}
	if st.Guess != nil {
		g := apiv1.TracerGuessJSON(*st.Guess)
		out.Guess = &g
	}
	return out
}
