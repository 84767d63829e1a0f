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
# Optional: KATRAN_DEFINES (extra -D flags; empty = Katran's default
# open-source build, as build_bpf_modules_opensource.sh with no -d), CLANG,
# LLC (default clang-19, llc-19), LBD_KATRAN_REPORT (a file to write the
# table to). Extra arguments go to `go test`.
#
# The compile mirrors katran/lib/Makefile-bpf: clang's front end for the
# host target to LLVM IR (-O2 -g -D__KERNEL__ -DDEBUG, its -Wno flags), then
# llc -march=bpf. (`clang -target bpf` on balancer.bpf.c fails on Debian
# with "'gnu/stubs-32.h' file not found", as Katran includes glibc's
# <string.h>; Katran's own build never targets bpf in the front end.)
set -euo pipefail

: "${KATRAN_SRC:?set KATRAN_SRC to a checkout of github.com/facebookincubator/katran (not part of lbd)}"
CLANG=${CLANG:-clang-19}
LLC=${LLC:-llc-19}
KATRAN_DEFINES=${KATRAN_DEFINES:-}

src=$KATRAN_SRC/katran/lib/bpf/balancer.bpf.c
if [ ! -f "$src" ]; then
  # Older checkouts call it balancer_kern.c.
  src=$KATRAN_SRC/katran/lib/bpf/balancer_kern.c
fi
if [ ! -f "$src" ]; then
  echo "katran-bench: no katran/lib/bpf/balancer.bpf.c (or balancer_kern.c) under KATRAN_SRC=$KATRAN_SRC" >&2
  exit 1
fi

commit=$(git -C "$KATRAN_SRC" rev-parse HEAD 2>/dev/null || cat "$KATRAN_SRC/KATRAN_COMMIT" 2>/dev/null || echo unknown)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# shellcheck disable=SC2086 # KATRAN_DEFINES is a list of flags
"$CLANG" -I"$KATRAN_SRC" -I"$KATRAN_SRC/katran/lib/linux_includes" \
  $KATRAN_DEFINES -DDEBUG -D__KERNEL__ \
  -Wno-unused-value -Wno-pointer-sign -Wno-compare-distinct-pointer-types \
  -O2 -emit-llvm -c -g "$src" -o "$tmp/balancer.bc"
"$LLC" -march=bpf -filetype=obj -o "$tmp/balancer.o" "$tmp/balancer.bc"
echo "katran-bench: built Katran $commit ($(basename "$src"), defines: ${KATRAN_DEFINES:-none}) with $("$CLANG" --version | head -1)" >&2

cd "$(dirname "$0")/.."
report=$tmp/report.md
KATRAN_OBJ=$tmp/balancer.o LBD_KATRAN_REPORT=$report \
  LBD_KATRAN_DESC="Katran $commit, $(basename "$src"), defines: ${KATRAN_DEFINES:-none (open-source default)}, $CLANG -O2 -emit-llvm | $LLC -march=bpf" \
  go test -count=1 -tags 'lbdbench lbdkatran' -run TestKatranSideBySide -v ./bpf/xdp/ "$@"

# The table goes to docs/katran-comparison.md (or OUT), with how it was made.
out=${OUT:-docs/katran-comparison.md}
{
  echo "# lbd and Katran, side by side"
  echo
  echo "Written by \`scripts/katran-bench.sh\` on $(date -u +%Y-%m-%d). Katran is not part of lbd: the"
  echo "script builds Katran's balancer from a checkout you give it (KATRAN_SRC) and"
  echo "bpf/xdp/katran_bench_test.go provisions it through its own maps, as Katran's control plane"
  echo "would (gateway MAC, one VIP, three reals, a 65537-slot ring, per-CPU LRU maps of the size"
  echo "named in each row). Both balancers run in one process, one packet per BPF_PROG_TEST_RUN,"
  echo "pinned to one CPU, interleaved over rounds; every round checks each row's return code and"
  echo "counters (Katran's too: its LRU-miss, TX and fallback counters, and that its flood guard"
  echo "never tripped, so every new flow was inserted)."
  echo
  echo "Command: \`KATRAN_SRC=/path/to/katran scripts/katran-bench.sh\` (as root)."
  echo
  cat "$report"
} >"$out"
echo "wrote $out" >&2
