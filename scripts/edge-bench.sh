#!/usr/bin/env bash
# Node loss behind ECMP: runs the edge test (cmd/lbd TestEdgeECMP: two
# lbd nodes behind a BIRD 2 router that spreads the VIP over them with
# layer-4 ECMP) RUNS times and prints a markdown section of what it
# measured. scripts/bench.sh adds it to docs/benchmarks.md. Needs root
# and bird2 (scripts/install-deps.sh). Usage: scripts/edge-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/lbd.test" ./cmd/lbd/
# after WORDS...: the duration just before " after" on the EDGE line that
# contains WORDS.
took() { grep -F "EDGE $1" "$tmp/out" | sed -n 's/.* \([0-9.]*[mµn]*s\) after.*/\1/p' | head -1; }
field() { grep -F "EDGE $1" "$tmp/out" | sed -n "s/.*$2.*/\\1/p" | head -1; }

echo "## Edge: node loss behind ECMP"
echo
echo "Command: \`scripts/edge-bench.sh $runs\` (as root; runs \`go test -run TestEdgeECMP -v ./cmd/lbd/\`"
echo "$runs times). Two lbd nodes (own links, own \`lbd serve\`) behind a router namespace running"
echo "BIRD $(bird --version 2>&1 | awk '{print $NF}') that peers with both over eBGP and installs the VIP as one ECMP route"
echo "(fib_multipath_hash_policy=1); 4 clients, 3 reals, the same VIP on both nodes. 60 long-lived"
echo "TCP connections are kept busy (ping/echo every 5 ms each) while node 0 is drained (\`POST"
echo "/api/v1/drain\`), and again while it is lost (its link set down on the router, then its lbd"
echo "killed with SIGKILL) under a load of short connections from every client. Route times are"
echo "from the action to the router's kernel FIB showing the change (polled every 2 ms)."
echo
echo "| run | drain: route withdrawn | undrain: back | loss: route withdrawn | conns through the lost node | established conns broken (drain / loss) | short conns during the loss: ok / failed (slowest) | node back: announced after link up + start |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for i in $(seq "$runs"); do
  if ! (cd cmd/lbd && "$tmp/lbd.test" -test.run '^TestEdgeECMP$' -test.v -test.count=1) >"$tmp/out" 2>&1; then
    tail -60 "$tmp/out" >&2
    echo "edge test failed (run $i)" >&2
    exit 1
  fi
  drainBroke=$(field "drain: busy" 'answered, \([0-9]*\) connections broke')
  killBroke=$(field "kill: busy" 'answered, \([0-9]*\) of [0-9]* connections broke')
  onA=$(field "kill: " 'kill: \([0-9]* of [0-9]*\) established connections go through node 0')
  ok=$(field "kill: busy" 'loss: \([0-9]*\) ok')
  failed=$(field "kill: busy" ' ok, \([0-9]*\) failed')
  slow=$(field "kill: busy" 'slowest \([0-9.]*[mµn]*s\)')
  echo "| $i | $(took 'drain: route') | $(took 'undrain') | $(took 'kill: route') | $onA | $drainBroke / $killBroke | $ok / $failed ($slow) | $(took 'back') |"
done
echo
echo "Packets sent to the lost node's link in the moment before its route went are lost and"
echo "retransmitted: a data segment after ~200 ms (TCP's minimum RTO), a SYN after 1 s (the"
echo "initial RTO). That is the \"slowest\" column; such a connection is late, not broken."
