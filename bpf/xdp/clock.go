package xdp

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The datapath keeps time in jiffies (see lbd_now in balancer.bpf.c).

// kernelTick returns the kernel's tick, 1/HZ: the resolution of the
// coarse clocks is exactly one tick (TICK_NSEC).
func kernelTick() (time.Duration, uint32, error) {
	var ts unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 0, 0, fmt.Errorf("read the kernel tick (clock_getres): %w", err)
	}
	tick := time.Duration(ts.Nano())
	if tick <= 0 || tick > time.Second {
		return 0, 0, fmt.Errorf("kernel tick of %v makes no sense", tick)
	}
	return tick, uint32(math.Round(float64(time.Second) / float64(tick))), nil
}

// tickClock converts the datapath's jiffies to wall time: it holds a
// jiffies reading and the wall time it was taken at.
type tickClock struct {
	wall time.Time
	tick uint64
	per  time.Duration
}

// clock reads the datapath's clock now, by a test run of lbd_clock.
func (b *Balancer) clock() (tickClock, error) {
	in := make([]byte, 64) // XDP test runs want at least an Ethernet header
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in))}
	if _, err := b.objs.LbdClock.Run(opts); err != nil {
		return tickClock{}, fmt.Errorf("read the datapath clock: %w", err)
	}
	return tickClock{
		wall: time.Now(),
		tick: binary.NativeEndian.Uint64(opts.DataOut),
		per:  b.tick,
	}, nil
}

// at is the wall time of a jiffies value the datapath kept in 32 bits,
// to within a tick. The value is taken as at most 2^31 ticks old (24 days
// at HZ=1000), which the connection table's idle entries never are.
func (c tickClock) at(j uint32) time.Time {
	return c.wall.Add(-time.Duration(int32(uint32(c.tick)-j)) * c.per)
}
