#!/usr/bin/env bash
# check-layers.sh: fail when an import runs against lbd's layers
# (api -> control -> bpf -> kernel, and lb/, the vocabulary, under all).
# Run by `make lint`.
#
#   - lb imports nothing of the module (it is the leaf every layer uses);
#   - control does not depend on api (no HTTP in control);
#   - api reaches bpf/ only through control: no bpf/ package among api's
#     dependencies that control does not bring;
#   - api/client (the REST client the CLI links) imports neither control
#     nor a bpf/ package, and reaches them only through api.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
fail=0
bad() { echo "check-layers: $*" >&2; fail=1; }

deps() { go list -deps "$@" | grep "^$mod/" || true; }
imports() { go list -f '{{join .Imports "\n"}}' "$1" | grep "^$mod/" || true; }

if out=$(deps ./lb | grep -vx "$mod/lb"); [ -n "$out" ]; then
	bad "lb must import nothing of the module, it depends on: $out"
fi
if deps ./control/... | grep -qx "$mod/api"; then
	bad "control depends on api (data flows api -> control): $(go list -f '{{.ImportPath}}: {{join .Imports " "}}' ./control/... | grep "$mod/api" | cut -d: -f1 | tr '\n' ' ')"
fi
# Dependencies of $1 that $2 does not bring.
beyond() { comm -23 <(deps "$1" | sort) <(deps "$2" | sort); }
if out=$(beyond ./api ./control | grep "^$mod/bpf/"); [ -n "$out" ]; then
	bad "api depends on bpf/ other than through control: $out"
fi
for p in ./api ./api/client; do
	if out=$(imports "$p" | grep "^$mod/bpf/"); [ -n "$out" ]; then
		bad "$p imports $out"
	fi
done
if out=$(imports ./api/client | grep -x "$mod/control"); [ -n "$out" ]; then
	bad "api/client imports control: use api's JSON types"
fi
if out=$(beyond ./api/client ./api | grep -E "^$mod/(bpf/|control$)"); [ -n "$out" ]; then
	bad "api/client depends on $out other than through api"
fi
exit $fail
