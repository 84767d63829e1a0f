#!/usr/bin/env bash
# Measures Facebook Katran's XDP balancer next to lbd's, in one process and
# one harness (BPF_PROG_TEST_RUN, bpf/xdp/katran_bench_test.go).
#
# KATRAN'S SOURCE IS NOT PART OF LBD. Nothing of Katran is copied into this
# repository: this script compiles Katran's balancer from a checkout you
# provide (KATRAN_SRC, a checkout of github.com/facebookincubator/katran,
# GPL-2.0) into a temporary directory, and the test loads that object and
# speaks its map ABI with Go structs of its own. The object is deleted when
# the script exits.
#
#   sudo KATRAN_SRC=/path/to/katran scripts/katran-bench.sh
#
# Optional: KATRAN_DEFINES, CLANG, LLC (see scripts/katran-build.sh),
# LBD_KATRAN_REPORT (a file to write the table to), LBD_KATRAN_RATIOS (a
# file for the lbd/Katran ratios at equal sizes, "path<TAB>median<TAB>min<TAB>max"),
# OUT (default docs/katran-comparison.md), KATRAN_OBJ and LBD_KATRAN_DESC
# (an object already built by katran-build.sh, and its description line:
# no build then), LBD_LIVE_SECTION (a file with the live-traffic rows of
# TestLiveBench, appended). Extra arguments go to `go test`.
set -euo pipefail

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${KATRAN_OBJ:-}" ]; then
  obj=$KATRAN_OBJ
  desc=${LBD_KATRAN_DESC:-Katran object $KATRAN_OBJ}
else
  desc=$(bash "$here/katran-build.sh" "$tmp")
  obj=$tmp/balancer.o
  echo "katran-bench: built $desc" >&2
fi

cd "$(dirname "$0")/.."
report=$tmp/report.md
KATRAN_OBJ=$obj LBD_KATRAN_REPORT=$report \
  LBD_KATRAN_DESC="$desc" \
  go test -count=1 -tags 'lbdbench lbdkatran' -run TestKatranSideBySide -v ./bpf/xdp/ "$@"

# The table goes to docs/katran-comparison.md (or OUT), with how it was made.
out=${OUT:-docs/katran-comparison.md}
{
  echo "# lbd and Katran, side by side"
  echo
  echo "Written by \`scripts/katran-bench.sh\` on $(date -u +%Y-%m-%d), lbd commit ${LBD_BENCH_COMMIT:-$(git rev-parse --short HEAD)} (load average $(cut -d' ' -f1-3 /proc/loadavg) when written). Katran is not part of lbd: the"
  echo "script builds Katran's balancer from a checkout you give it (KATRAN_SRC) and"
  echo "bpf/xdp/katran_bench_test.go provisions it through its own maps, as Katran's control plane"
  echo "would (gateway MAC, one VIP, three reals, a 65537-slot ring, per-CPU LRU maps of the size"
  echo "named in each row). Both balancers run in one process, one packet per BPF_PROG_TEST_RUN"
  echo "(and, where the frame is not changed by the program, a repeat loop),"
  echo "pinned to one CPU, interleaved over rounds; every round checks each row's return code and"
  echo "counters (Katran's too: its LRU-miss, TX and fallback counters, and that its flood guard"
  echo "never tripped, so every new flow was inserted)."
  echo
  echo "lbd records a TCP connection at its first packet after the SYN, Katran at the SYN"
  echo "(docs/operations.md, \"Insert on the second packet\"): \"new flow\" is a SYN of a new 5-tuple"
  echo "(lbd: a table lookup, no insert; Katran: an LRU insert), \"handshake\" a SYN and then its ACK"
  echo "back to back, new 5-tuples, which is where lbd's insert went: compare both."
  echo
  echo "Command: \`KATRAN_SRC=/path/to/katran scripts/katran-bench.sh\` (as root), or \`KATRAN_SRC=/path/to/katran make bench\`,"
  echo "which also writes docs/benchmarks.md from the same run."
  if [ -n "${LBD_LIVE_SECTION:-}" ]; then
    echo
    echo "Two methods, one run: the test runs below (BPF_PROG_TEST_RUN, one packet per call: each call starts"
    echo "cold), and, at the end, live traffic through veth with \`lbd serve\` as users run it (the kernel's"
    echo "run_time_ns / run_cnt of the attached programs). The test runs inflate lbd's lead on established"
    echo "flows; read both."
  fi
  echo
  cat "$report"
  if [ -n "${LBD_LIVE_SECTION:-}" ]; then
    echo
    cat "$LBD_LIVE_SECTION"
  fi
} >"$out"
echo "wrote $out" >&2
