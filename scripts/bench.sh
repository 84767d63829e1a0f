#!/usr/bin/env bash
# Runs the benchmarks and writes docs/benchmarks.md. Needs root (the XDP
# rows use BPF_PROG_TEST_RUN). Numbers vary with the machine and its load:
# compare rows of one run, not runs of different days.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/benchmarks.md
xdp=$(mktemp) maglev=$(mktemp) ctl=$(mktemp) tracer=$(mktemp) ratios=$(mktemp)
trap 'rm -f "$xdp" "$maglev" "$ctl" "$tracer" "$ratios"' EXIT

# Katran, when a checkout is given (KATRAN_SRC; never part of lbd): built
# into a temporary directory and measured first, at equal table sizes;
# its ratios fill the XDP table's Katran column and it rewrites
# docs/katran-comparison.md from this same run.
if [ -n "${KATRAN_SRC:-}" ]; then
  LBD_KATRAN_RATIOS=$ratios bash scripts/katran-bench.sh >/dev/null
  export LBD_KATRAN_RATIOS=$ratios
  katran_note="Katran built from KATRAN_SRC and measured in this same run (docs/katran-comparison.md, rewritten by it)."
else
  unset LBD_KATRAN_RATIOS
  katran_note="No Katran in this run (KATRAN_SRC not given): the Katran column is empty and the × floor ratios are facts only, not a verdict."
fi

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
  echo "row that passed instead would fail the run). The × floor ratio is a fact, not a bar: the floor"
  echo "itself moves with the host (the repeat-loop XDP_DROP floor has been 5 ns and 27 ns on the same"
  echo "machine). The reference is Katran measured in the same run at equal table sizes (lbd's shared"
  echo "table of 1048576 entries, Katran's per-CPU LRUs of 524288 each on 2 CPUs): the last column is"
  echo "lbd / Katran, median of per-round ratios (min–max), from the one-packet rows of"
  echo "docs/katran-comparison.md (the repeat loop for non-VIP). A TCP SYN is not recorded in the table"
  echo "(one lookup, no insert); the connection's first packet after it records it (the \"first ACK\" row;"
  echo "docs/operations.md, \"Insert on the second packet\"). The two \"of which\" rows split a recording"
  echo "packet: lbd's own work (a VIP that skips the table) and the kernel's LRU insert alone."
  echo
  echo "$katran_note"
  echo
  cat "$xdp"
  echo
  echo "Katran is measured by the same harness, in one process with lbd: docs/katran-comparison.md"
  echo "(\`KATRAN_SRC=/path/to/katran make bench\`, or scripts/katran-bench.sh alone; Katran is built from your"
  echo "checkout by scripts/katran-build.sh, never shipped)."
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
  echo "over HTTP to the real API stack with real maps and a state file on disk (fsync'd), the controller"
  echo "reconciled first as lbd serve does. The state is saved (fsync'd) before anything in the datapath"
  echo "moves, the ring built meanwhile; live-p50/live-p99 are from the REST call to the new ring live in"
  echo "the kernel, p50/p99 to the response (which comes after the counters file is saved too)."
  echo "RingRebuildSwap: build a 65537-slot Maglev ring for 100 reals and swap it in."
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
