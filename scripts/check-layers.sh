#!/usr/bin/env bash
# check-layers.sh: fail when a dependency runs against lbd's layers
# (api -> control -> bpf -> kernel, and lb/, the vocabulary, under all).
# Run by `make lint`. Each rule reads `go list -deps` (the packages a
# package links, tests aside), not only its own imports:
#
#   - lb/... imports nothing of the module outside lb/ (lb is the leaf
#     every layer uses; lb/datapath, the words control and bpf/xdp
#     share, uses lb only), and api/apiv1, the API's JSON bodies, lb only;
#   - control/... lists no api package (no HTTP in control) and no bpf/
#     package (control speaks to the datapath through its Datapath
#     interface, in lb/datapath's words; cmd/lbd loads the balancer);
#   - api and api/client list no bpf/ package;
#   - api/client (the REST client the CLI links) lists no control
#     package: it speaks the API's JSON (api/apiv1).
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
fail=0
bad() { echo "check-layers: $*" >&2; fail=1; }

# deps PKGS: the module's packages PKGS depend on (themselves included),
# one a line, without the module prefix; the script stops if go list fails.
deps() {
	local l
	l=$(go list -deps "$1") || { echo "check-layers: go list -deps $1 failed" >&2; exit 2; }
	sed -n "s#^$mod/##p" <<<"$l" | sort -u
}

# only PKGS ALLOWED: fail when PKGS depend on a module package that does
# not match the regular expression ALLOWED.
only() {
	local d out
	d=$(deps "$1") || exit 2
	if out=$(grep -Ev "$2" <<<"$d"); then
		bad "$1 must depend on nothing of the module but $2; it depends on: $(echo $out)"
	fi
}

# never PKGS FORBIDDEN WHY: fail when PKGS depend on a module package that
# matches the regular expression FORBIDDEN.
never() {
	local d out
	d=$(deps "$1") || exit 2
	if out=$(grep -E "$2" <<<"$d"); then
		bad "$1 depends on $(echo $out): $3"
	fi
}

only ./lb/... '^lb(/|$)'
only ./api/apiv1 '^(lb|api/apiv1)$'
never ./control/... '^api(/|$)' 'data flows api -> control, no HTTP in control'
never ./control/... '^bpf/' 'control speaks to the datapath through its Datapath interface (lb/datapath); cmd/lbd loads bpf/'
never ./api '^bpf/' 'api reaches the datapath only through control'
never ./api/client '^bpf/' 'the client speaks the API JSON (api/apiv1)'
never ./api/client '^control(/|$)' 'the client speaks the API JSON (api/apiv1), not control'
exit $fail
