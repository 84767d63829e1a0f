package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/lbd-dev/lbd/api"
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
	return tr, func() { tr.Stop() }, nil
}
