#!/usr/bin/env bash
# Runs the benchmarks and writes docs/benchmarks.md. Needs root (the XDP
# rows use BPF_PROG_TEST_RUN). Numbers vary with the machine and its load:
# compare rows of one run, not runs of different days.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/benchmarks.md
xdp=$(mktemp) maglev=$(mktemp) ctl=$(mktemp) tracer=$(mktemp) ratios=$(mktemp) live=$(mktemp) livesec=$(mktemp) rest=$(mktemp)
kdir=$(mktemp -d)
trap 'rm -rf "$xdp" "$maglev" "$ctl" "$tracer" "$ratios" "$live" "$livesec" "$rest" "$kdir"' EXIT

# Katran, when a checkout is given (KATRAN_SRC; never part of lbd): built
# once into a temporary directory, measured live next to lbd serve and in
# test runs at equal table sizes; its ratios fill the XDP table's Katran
# column and docs/katran-comparison.md is rewritten from this same run.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no -- . ':!docs' 2>/dev/null)" ]; then commit="$commit (with uncommitted changes)"; fi
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
export LBD_BENCH_COMMIT=$commit
unset KATRAN_OBJ LBD_KATRAN_DESC
if [ -n "${KATRAN_SRC:-}" ]; then
  LBD_KATRAN_DESC=$(bash scripts/katran-build.sh "$kdir")
  export KATRAN_OBJ=$kdir/balancer.o LBD_KATRAN_DESC
  katran_note="Katran built from KATRAN_SRC and measured in this same run (docs/katran-comparison.md, rewritten by it)."
  live_note="Katran built from KATRAN_SRC ($LBD_KATRAN_DESC)."
else
  echo "bench: KATRAN_SRC not given: no Katran in this run, lbd's rows alone" >&2
  unset LBD_KATRAN_RATIOS
  katran_note="No Katran in this run (KATRAN_SRC not given): the Katran column is empty and the × floor ratios are facts only, not a verdict."
  live_note="No Katran in this run (KATRAN_SRC not given): lbd's rows and the floor alone."
fi

# Live traffic: lbd serve (bin/lbd, built by make build) and Katran on veth.
LBD_BIN=$PWD/bin/lbd LBD_LIVE_REPORT=$live go test -count=1 -tags 'lbdbench lbdkatran' -run TestLiveBench ./bpf/xdp/ >/dev/null
{
  echo "## Live traffic: lbd serve and Katran on veth"
  echo
  echo "Command: \`go test -count=1 -tags 'lbdbench lbdkatran' -run TestLiveBench -v ./bpf/xdp/\` (as root, part of"
  echo "\`make bench\`; KATRAN_OBJ names a Katran object built by scripts/katran-build.sh, LBD_BIN the lbd binary)."
  echo "$live_note"
  echo
  echo "lbd is \`lbd serve\` as users run it: the real binary with its flags (\`--interface --xdp-mode native"
  echo "--gateway-mac --listen --state-dir --token-file --pin-dir --detach\`, the default 1048576-entry table),"
  echo "in a network namespace the benchmark makes, the VIP and its 10 reals configured over the REST API."
  echo "Katran is attached the same way (native XDP, a BPF link) to a second veth pair in that namespace,"
  echo "provisioned through its maps as in the test-run comparison, at equal table size (per-CPU LRUs of"
  echo "524288 each on 2 CPUs). The floor is a trivial XDP_DROP program on a third pair. The sender, in a"
  echo "second namespace, writes 64-byte frames (60 + FCS: Ethernet, IPv4, TCP, no payload) with AF_PACKET"
  echo "(PACKET_QDISC_BYPASS, sendmmsg of 64) from CPU 1; each receiving end has threaded NAPI, its thread"
  echo "pinned to CPU 0. Established: ACKs cycling over 256 flows opened by a SYN and an ACK each. lbd"
  echo "records a TCP connection at its first packet after the SYN, Katran at the SYN (docs/operations.md,"
  echo "\"Insert on the second packet\"), so two new-flow rows: a SYN of a 5-tuple never sent before (lbd: a"
  echo "lookup and no insert; Katran: an insert), and handshakes, a SYN then its ACK for new 5-tuples, per"
  echo "packet (one insert per tuple in each). The same tuples go to lbd and Katran, fewer in all than a"
  echo "CPU's share of the table, so no insert evicts. Non-VIP: ACKs to another address (XDP_PASS into the"
  echo "namespace's stack, which drops them). Full tables: after 524288 ACKs of new tuples (CPU 0's share"
  echo "of each table; a miss that records the flow in both), handshakes of new tuples again, each insert"
  echo "evicting an entry (3 rounds). lbd, Katran and the floor alternate sample by sample, the order"
  echo "flipped each round; lbd / Katran is the median (and range) of the per-round ratios. Katran's own"
  echo "counters are checked at the end (XDP_TX, SYN and non-SYN LRU misses, exactly as sent; its flood"
  echo "guard, which stops inserts above 125000 new flows/s, reset before each sample and each 100000 of"
  echo "the fill, so every new flow is recorded, as in lbd)."
  echo
  echo "ns/packet is the kernel's own run_time_ns / run_cnt of the attached program over the sample, with"
  echo "run-time stats on through BPF_ENABLE_STATS (what kernel.bpf_stats_enabled=1 turns on, held by a file"
  echo "descriptor: the sysctl is not touched and the kernel stops counting when the benchmark exits). It"
  echo "includes the stats' own two clock reads, which is most of the floor's ns/packet. pps per NAPI core is"
  echo "the packets over the CPU time the NAPI thread used (its schedstat), and NAPI CPU ns per packet its"
  echo "inverse: the whole receive path of a packet on its core (veth ring, XDP, the XDP_TX to the peer, which"
  echo "drops it as the sender's end has no XDP program, or the stack for non-VIP). The floor's is the path"
  echo "itself: on veth it costs about that much per packet whatever the program does, so programs that"
  echo "differ by tens or hundreds of ns barely show in pps. pps wall is packets over the sending time,"
  echo "bounded by the one sender core."
  echo
  cat "$live"
} >"$livesec"

if [ -n "${KATRAN_SRC:-}" ]; then
  LBD_KATRAN_RATIOS=$ratios LBD_LIVE_SECTION=$livesec bash scripts/katran-bench.sh >/dev/null
  export LBD_KATRAN_RATIOS=$ratios
fi

LBD_BENCH_REPORT=$xdp go test -count=1 -tags lbdbench -run TestBenchReport ./bpf/xdp/ >/dev/null
go test -run '^$' -bench 'BenchmarkBuild' -benchmem -count=1 ./control/maglev/ | grep -E '^Benchmark' >"$maglev"
go test -run '^$' -bench 'BenchmarkReplaceReals100' -benchtime 300x -count=1 ./api/ | grep -E '^Benchmark' >"$ctl"
go test -run '^$' -bench 'BenchmarkRingRebuildSwap65537' -benchtime 200x -count=1 ./control/ | grep -E '^Benchmark' >>"$ctl"
LBD_BIN=$PWD/bin/lbd LBD_REST_REPORT=$rest go test -count=1 -tags 'lbdbench lbdkatran' -run TestLiveRESTChange ./bpf/xdp/ >/dev/null
go test -run '^$' -bench . -benchtime 5000x -count=1 ./bpf/kprobe/ | grep -E '^Benchmark' >"$tracer"

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) ($(uname -r), $(nproc) CPUs, $(go version | awk '{print $3}')), commit $commit."
  echo "Command: \`flock /tmp/lbd-lab.lock env KATRAN_SRC=/path/to/katran make bench\` (as root). Load average of the"
  echo "shared host at the start of the run: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg). Absolute numbers"
  echo "move with the load (other jobs share the 2 CPUs): compare rows of one run, the ratios within it."
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
  sed 's/^## /### /' "$livesec"
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
  echo "reconciled first as lbd serve does. The new state file is written, fsync'd and renamed into place"
  echo "before anything in the datapath moves (a write or fsync error, a full disk, refuses the change), the"
  echo "ring built meanwhile; the directory's fsync (the rename's durability) runs while the ring goes live"
  echo "and the answer waits for it (control.Store.SaveStaged). live-p50/live-p99 are from the REST call to"
  echo "the new ring live in the kernel, p50/p99 to the response (which comes after the counters file is"
  echo "saved too)."
  echo "RingRebuildSwap: build a 65537-slot Maglev ring for 100 reals and swap it in."
  echo "A ring is written into the VIP's idle ring buffer (memory-mapped) and made live with one store to"
  echo "vip_info; no change waits for an RCU grace period (swapping inner maps of an array-of-maps did:"
  echo "4-15 ms here). What is left: the Maglev build, the state file's fsync, HTTP."
  echo
  echo '```'
  cat "$ctl"
  echo '```'
  echo
  echo "Against a running \`lbd serve\` (the binary, as in the live-traffic rows): \`go test -count=1 -tags 'lbdbench lbdkatran'"
  echo "-run TestLiveRESTChange -v ./bpf/xdp/\`. The same change (PUT 100 reals, half of them new, 65537-slot ring)"
  echo "300 times over the REST API; \"ring live\" is the moment lbd's pinned vip_info entry of the VIP changes (the"
  echo "flip to the new ring buffer is one store to it), seen by a poller reading it every 50 µs; at that moment"
  echo "the poller reads the state file, which must already hold the new set (checked for every change: the save"
  echo "came first). The response comes after the counters file is saved too."
  echo
  cat "$rest"
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
