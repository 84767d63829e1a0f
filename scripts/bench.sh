#!/usr/bin/env bash
# Runs the benchmarks and writes docs/benchmarks.md. Needs root (the XDP
# rows use BPF_PROG_TEST_RUN). Numbers vary with the machine and its load:
# compare rows of one run, not runs of different days.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/benchmarks.md
xdp=$(mktemp) maglev=$(mktemp) ctl=$(mktemp) tracer=$(mktemp)
trap 'rm -f "$xdp" "$maglev" "$ctl" "$tracer"' EXIT

LBD_BENCH_REPORT=$xdp go test -count=1 -tags lbdbench -run TestBenchReport ./bpf/xdp/ >/dev/null
go test -run '^$' -bench 'BenchmarkBuild' -benchmem -count=1 ./control/maglev/ | grep -E '^Benchmark' >"$maglev"
go test -run '^$' -bench 'BenchmarkReplaceReals100' -benchtime 300x -count=1 ./api/ | grep -E '^Benchmark' >"$ctl"
go test -run '^$' -bench 'BenchmarkRingRebuildSwap65537' -benchtime 200x -count=1 ./control/ | grep -E '^Benchmark' >>"$ctl"
go test -run '^$' -bench . -benchtime 5000x -count=1 ./bpf/kprobe/ | grep -E '^Benchmark' >"$tracer"

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) ($(uname -r), $(nproc) CPUs, $(go version | awk '{print $3}'))."
  echo
  echo "## XDP datapath: ns per packet"
  echo
  echo "Command: \`go test -count=1 -tags lbdbench -run TestBenchReport -v ./bpf/xdp/\` (as root)."
  echo
  echo "The kernel's BPF_PROG_TEST_RUN timer, all rows in one run, interleaved over rounds;"
  echo "median and spread over the rounds. The run is pinned to one CPU (an XDP receive queue is"
  echo "served by one CPU; per-CPU counters and LRU lists stay put). The benchmark VIPs have rings of"
  echo "the default 65537 slots, so a new flow's slot is as cold as in production. Repeat rows run"
  echo "20000 times on one frame; TX rows run through a wrapper (bench.bpf.c) that strips the"
  echo "encapsulation after each run, so every repetition sees the same input (checked: the frame"
  echo "comes back byte for byte). New flows run one packet per test run, each a new 5-tuple, with"
  echo "all frames built before the timed runs, against a floor measured the same way (XDP_DROP on"
  echo "the same kind of frames). Every row is checked against the program's own counters (a TX"
  echo "row that passed instead would fail the run). \"bar\" is the ratio to its floor we aim to"
  echo "stay under. The two \"of which\" rows split a new flow: lbd's own work (a VIP that skips the"
  echo "table) and the kernel's LRU insert alone (a program that does nothing else)."
  echo
  cat "$xdp"
  echo
  echo "Katran measured by the same harness, in the same process: docs/katran-comparison.md"
  echo "(\`KATRAN_SRC=/path/to/katran scripts/katran-bench.sh\`; Katran is built from your checkout, not shipped)."
  echo
  echo "## Maglev table build"
  echo
  echo "Command: \`go test -run '^\$' -bench BenchmarkBuild -benchmem ./control/maglev/\`"
  echo
  echo '```'
  cat "$maglev"
  echo '```'
  echo
  echo "## Control plane: changes"
  echo
  echo "Commands: \`go test -run '^\$' -bench BenchmarkReplaceReals100 -benchtime 300x ./api/\` and"
  echo "\`go test -run '^\$' -bench BenchmarkRingRebuildSwap65537 -benchtime 200x ./control/\` (as root)."
  echo
  echo "ReplaceReals100: PUT a new set of 100 reals (half of them new) for a VIP with a 65537-slot ring,"
  echo "over HTTP to the real API stack with real maps and a state file on disk (fsync'd); each request"
  echo "returns once the new ring is in the kernel and the state is saved, so p50/p99 are \"request to"
  echo "maps updated\". RingRebuildSwap: build a 65537-slot Maglev ring for 100 reals and swap it in."
  echo "A ring is written into the VIP's idle ring buffer (memory-mapped) and made live with one store to"
  echo "vip_info; no change waits for an RCU grace period (swapping inner maps of an array-of-maps did:"
  echo "4-15 ms here). What is left: the Maglev build, the state file's fsync, HTTP."
  echo
  echo '```'
  cat "$ctl"
  echo '```'
  echo
  echo "## Connection tracer"
  echo
  echo "Command: \`go test -run '^\$' -bench . -benchtime 5000x ./bpf/kprobe/\` (as root; the mode this kernel gets:"
  echo "tracepoint on the CI host). ConnectCloseOverhead: loopback connect+close without and with the tracer,"
  echo "same run (\`ratio\`), and the tracer's BPF run time per connection from the kernel's own stats."
  echo "EventRate: connections as fast as 2 x GOMAXPROCS goroutines make them; events delivered and lost"
  echo "(lost events are counted, never silent). docs/tracer.md explains the rows."
  echo
  echo '```'
  cat "$tracer"
  echo '```'
  echo
  bash scripts/lab-bench.sh
  echo
  bash scripts/edge-bench.sh 3
} >"$out"
echo "wrote $out"
