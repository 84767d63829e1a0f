package kprobe

import (
	"context"
	"fmt"
	lbdfeatures "github.com/lbd-dev/lbd/bpf/features"
	"github.com/lbd-dev/lbd/internal/privtest"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// connectClose makes n connections to ln (both ends closed), one at a time.
func connectClose(b *testing.B, addr string, n int) {
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
}

func closingListener(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func benchRoot(b *testing.B) {
	if os.Geteuid() != 0 {
		privtest.Unavailable(b, "needs root")
	}
}

// BenchmarkConnectCloseOverhead measures the cost of tracing one TCP
// connect+close (4 events: connect, accept, close, close): b.N local
// connections without the tracer, then b.N with it, in the same run;
// metrics: ns per connection each way and their ratio.
func BenchmarkConnectCloseOverhead(b *testing.B) {
	benchRoot(b)
	for _, mode := range modesHereB(b) {
		b.Run(string(mode), func(b *testing.B) {
			ln := closingListener(b)
			addr := ln.Addr().String()
			connectClose(b, addr, 200) // warm up
			var delivered atomic.Uint64
			tr, err := New(Options{Mode: mode, OnEvent: func(Event) { delivered.Add(1) }})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			connectClose(b, addr, b.N)
			untraced := time.Since(start)
			b.StopTimer()
			if err := tr.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer tr.Stop()
			// BPF run time of the tracer's programs, from the kernel
			stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
			if err != nil {
				b.Fatalf("enable BPF run-time stats: %v", err)
			}
			before := tr.bpfRuntime()
			b.StartTimer()
			start = time.Now()
			connectClose(b, addr, b.N)
			traced := time.Since(start)
			b.StopTimer()
			bpfTime := tr.bpfRuntime() - before
			stats.Close()
			tr.Flush(10 * time.Second)
			b.ReportMetric(float64(untraced.Nanoseconds())/float64(b.N), "untraced-ns/conn")
			b.ReportMetric(float64(traced.Nanoseconds())/float64(b.N), "traced-ns/conn")
			b.ReportMetric(float64(traced)/float64(untraced), "ratio")
			b.ReportMetric(float64(bpfTime.Nanoseconds())/float64(b.N), "bpf-ns/conn")
			b.ReportMetric(float64(sum(tr.Lost())), "lost")
		})
	}
}

// BenchmarkEventRate drives events as fast as this machine can make
// loopback connections (2 x GOMAXPROCS connecting goroutines, 4 events
// per connection) and reports the rate delivered to user space and the
// events lost, with the default 4 MiB ring buffer and with a 64 KiB one
// (a quarter of it, 16 KiB, is then the wakeup threshold).
func BenchmarkEventRate(b *testing.B) {
	benchRoot(b)
	for _, mode := range modesHereB(b) {
		for _, ring := range []uint32{4 << 20, 64 << 10} {
			b.Run(fmt.Sprintf("%s/ring-%dKiB", mode, ring>>10), func(b *testing.B) {
				ln := closingListener(b)
				addr := ln.Addr().String()
				var delivered atomic.Uint64
				tr, err := New(Options{Mode: mode, RingBufferSize: ring, OnEvent: func(Event) { delivered.Add(1) }})
				if err != nil {
					b.Fatal(err)
				}
				if err := tr.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				defer tr.Stop()
				workers := 2 * runtime.GOMAXPROCS(0)
				per := max(b.N/workers, 1)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						connectClose(b, addr, per)
					}()
				}
				wg.Wait()
				ok := tr.Flush(30 * time.Second)
				elapsed := time.Since(start)
				b.StopTimer()
				if !ok {
					b.Errorf("events not all delivered")
				}
				b.ReportMetric(float64(delivered.Load())/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(sum(tr.Lost())), "lost")
			})
		}
	}
}

func modesHereB(b *testing.B) []Mode {
	var modes []Mode
	if lbdfeatures.HaveKprobes() {
		modes = append(modes, ModeKprobe)
	}
	if ensureTracefs() == nil && haveTracepoint("sock", "sock_send_length") {
		modes = append(modes, ModeTracepoint)
	}
	if len(modes) == 0 {
		b.Skip("no kprobes and no sock:sock_send_length")
	}
	return modes
}

// bpfRuntime sums the kernel's run-time counters of the loaded programs
// (counted only while BPF stats are enabled).
func (t *Tracer) bpfRuntime() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d time.Duration
	for _, p := range t.progs {
		if st, err := p.Stats(); err == nil {
			d += st.Runtime
		}
	}
	return d
}
