#!/usr/bin/env bash
# Throughput through lbd: iperf3 from a lab client to a real server,
# directly (client → router → real) and through the VIP (client → router
# → lbd's XDP program → router → real, the reply direct), in the same run,
# one TCP stream each. Prints a markdown section; scripts/bench.sh adds it
# to docs/benchmarks.md. Needs root, iperf3 and bin/lbd (make build).
# Usage: scripts/lab-bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
LBD=bin/lbd
NAME=bench
API=127.0.0.1:18089
command -v iperf3 >/dev/null || { echo "iperf3 is needed: apt-get install iperf3 (scripts/install-deps.sh)" >&2; exit 1; }
[ -x $LBD ] || { echo "build lbd first: make build" >&2; exit 1; }

srv=""
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; $LBD lab down --name $NAME >/dev/null 2>&1 || true; }
trap cleanup EXIT
$LBD lab down --name $NAME >/dev/null 2>&1 || true
$LBD lab up --name $NAME --clients 1 --reals 1 --api $API >/tmp/lbd-lab-bench.log
mode=$($LBD lab status --name $NAME | sed -n 's/^  reals \(attached by\|decapsulate with\): \([a-z]*\).*/\2/p' | paste -sd/)
curl -sS --fail-with-body -H "Authorization: Bearer $(cat /run/lbd-lab/$NAME/lbd/token)" -H 'Content-Type: application/json' \
  -X POST http://$API/api/v1/vips -d '{"protocol":"tcp","address":"10.200.0.1","port":5201,"reals":[{"address":"10.113.0.11"}]}' >/dev/null

ip netns exec lbdlab-$NAME-r1 iperf3 -s >/dev/null 2>&1 &
srv=$!
sleep 1
rate() { # Mbit/s received, from the iperf3 client's summary
  ip netns exec lbdlab-$NAME-c1 iperf3 -c "$1" -t "$secs" -f m | awk '/receiver/ {print $(NF-2)}'
}
direct=$(rate 10.113.0.11)
vip=$(rate 10.200.0.1)
ratio=$(awk -v a="$vip" -v b="$direct" 'BEGIN { printf "%.2f", a / b }')

echo "## Lab throughput: iperf3 through the VIP vs direct"
echo
echo "Command: \`scripts/lab-bench.sh $secs\` (as root; part of \`make bench\`). One TCP stream"
echo "for ${secs} s from a lab client, same run; lab mode (reals/decapsulation): $mode."
echo "The client's transmit checksum offload is off (as the lab requires), so both"
echo "paths send MTU-sized segments; veth pairs and namespaces on one machine, so"
echo "the absolute numbers say little, the ratio says what the XDP hop costs."
echo
echo "| path | Mbit/s |"
echo "|---|---|"
echo "| client → real (direct) | $direct |"
echo "| client → VIP → lbd (XDP, IP-in-IP) → real, reply direct | $vip |"
echo "| ratio VIP / direct | $ratio |"
