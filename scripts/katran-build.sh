#!/usr/bin/env bash
# Builds Facebook Katran's XDP balancer from a checkout you provide
# (KATRAN_SRC, github.com/facebookincubator/katran, GPL-2.0) into the
# directory given as $1, as balancer.o, and prints one line describing the
# build. KATRAN'S SOURCE IS NOT PART OF LBD: nothing of it is copied into
# this repository; scripts/katran-bench.sh and scripts/bench.sh call this
# with a temporary directory they delete.
#
#   KATRAN_SRC=/path/to/katran scripts/katran-build.sh DIR
#
# Optional: KATRAN_DEFINES (extra -D flags; empty = Katran's default
# open-source build, as build_bpf_modules_opensource.sh with no -d), CLANG,
# LLC (default clang-19, llc-19), KATRAN_COMMIT (the commit, for a
# checkout without .git).
#
# The compile mirrors katran/lib/Makefile-bpf: clang's front end for the
# host target to LLVM IR (-O2 -g -D__KERNEL__ -DDEBUG, its -Wno flags), then
# llc -march=bpf. (`clang -target bpf` on balancer.bpf.c fails on Debian
# with "'gnu/stubs-32.h' file not found", as Katran includes glibc's
# <string.h>; Katran's own build never targets bpf in the front end.)
set -euo pipefail

: "${KATRAN_SRC:?set KATRAN_SRC to a checkout of github.com/facebookincubator/katran (not part of lbd)}"
dir=${1:?usage: katran-build.sh OUTPUT_DIR}
CLANG=${CLANG:-clang-19}
LLC=${LLC:-llc-19}
KATRAN_DEFINES=${KATRAN_DEFINES:-}

src=$KATRAN_SRC/katran/lib/bpf/balancer.bpf.c
if [ ! -f "$src" ]; then
  # Older checkouts call it balancer_kern.c.
  src=$KATRAN_SRC/katran/lib/bpf/balancer_kern.c
fi
if [ ! -f "$src" ]; then
  echo "katran-build: no katran/lib/bpf/balancer.bpf.c (or balancer_kern.c) under KATRAN_SRC=$KATRAN_SRC" >&2
  exit 1
fi

# A checkout without .git (an export) can name its commit in KATRAN_COMMIT.
commit=${KATRAN_COMMIT:-$(git -C "$KATRAN_SRC" rev-parse HEAD 2>/dev/null || cat "$KATRAN_SRC/KATRAN_COMMIT" 2>/dev/null || echo unknown)}
# shellcheck disable=SC2086 # KATRAN_DEFINES is a list of flags
"$CLANG" -I"$KATRAN_SRC" -I"$KATRAN_SRC/katran/lib/linux_includes" \
  $KATRAN_DEFINES -DDEBUG -D__KERNEL__ \
  -Wno-unused-value -Wno-pointer-sign -Wno-compare-distinct-pointer-types \
  -O2 -emit-llvm -c -g "$src" -o "$dir/balancer.bc"
"$LLC" -march=bpf -filetype=obj -o "$dir/balancer.o" "$dir/balancer.bc"
echo "Katran $commit, $(basename "$src"), defines: ${KATRAN_DEFINES:-none (open-source default)}, $CLANG -O2 -emit-llvm | $LLC -march=bpf"
