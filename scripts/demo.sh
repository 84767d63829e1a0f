#!/usr/bin/env bash
# make demo: on a fresh Debian machine (as root), install what is missing,
# build lbd, bring up the lab (clients, a router, lbd with XDP, real
# servers in network namespaces), configure a VIP through the REST API
# with curl as a user would, send traffic from the clients, and show who
# answered and what lbd counted. The lab stays up to explore; make
# demo-down removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "install what is missing (scripts/install-deps.sh)"
bash scripts/install-deps.sh

step "build bin/lbd"
make -s build
LBD=bin/lbd
NAME=demo
API=http://127.0.0.1:8080
VIP=10.200.0.1

step "bring up the lab (an earlier demo lab is removed first)"
$LBD lab down --name $NAME >/dev/null
$LBD lab up --name $NAME --clients 2 --reals 3 --api 127.0.0.1:8080

TOKEN_FILE=/run/lbd-lab/$NAME/lbd/token
AUTH="Authorization: Bearer $(cat $TOKEN_FILE)"
api() { curl -sS --fail-with-body -H "$AUTH" -H 'Content-Type: application/json' "$@"; echo; }

step "configure VIP tcp/$VIP:80 with three reals, weights 1:2:3 (REST API, curl)"
echo "curl -X POST $API/api/v1/vips -d '{\"protocol\":\"tcp\",\"address\":\"$VIP\",\"port\":80,\"reals\":[...]}'"
api -X POST $API/api/v1/vips -d '{"protocol":"tcp","address":"'$VIP'","port":80,"reals":[
  {"address":"10.113.0.11","weight":1},{"address":"10.113.0.12","weight":2},{"address":"10.113.0.13","weight":3}]}'
# The lab's reals also answer on port 7 (TCP name+echo, UDP) and IPv6.
api -X POST $API/api/v1/vips -d '{"protocol":"udp","address":"'$VIP'","port":7,"reals":[
  {"address":"10.113.0.11"},{"address":"10.113.0.12"},{"address":"10.113.0.13"}]}' >/dev/null
api -X POST $API/api/v1/vips -d '{"protocol":"tcp","address":"fd00:200::1","port":80,"reals":[
  {"address":"fd00:113::11"},{"address":"fd00:113::12"},{"address":"fd00:113::13"}]}' >/dev/null

N=150
step "$((2 * N)) HTTP requests (curl, one connection each) from the two clients to http://$VIP/"
for c in 1 2; do
  for _ in $(seq $N); do ip netns exec lbdlab-$NAME-c$c curl -s --max-time 3 http://$VIP/ || echo failed; done &
done | sort | uniq -c | awk '{printf "  %-6s answered %4d requests (%.1f%%)\n", $2, $1, 100*$1/'$((2 * N))'}'
wait

step "UDP flows and IPv6, from the lab's Go client (lbd lab traffic)"
$LBD lab traffic --name $NAME --udp --per-client 20 --datagrams 5
ip netns exec lbdlab-$NAME-c1 curl -s --max-time 3 'http://[fd00:200::1]/' | sed 's/^/  IPv6 VIP answered by /'

step "what lbd counted (GET $API/api/v1/vips/tcp-$VIP-80/stats, then lbd stats)"
api $API/api/v1/vips/tcp-$VIP-80/stats
LBD_TOKEN_FILE=$TOKEN_FILE $LBD stats

cat <<MSG

The lab is running: lbd serve (XDP on lbl$NAME), clients lbdlab-$NAME-c1..c2, reals lbdlab-$NAME-r1..r3.
Explore it:
  export LBD_TOKEN_FILE=$TOKEN_FILE
  $LBD stats;  $LBD flows --vip tcp/$VIP:80;  $LBD ring tcp/$VIP:80;  $LBD real list tcp/$VIP:80
  ip netns exec lbdlab-$NAME-c1 curl http://$VIP/        # answered by a real, directly (DSR)
  $LBD real drain tcp/$VIP:80 10.113.0.13                 # then curl again: r3 gets no new connections
  $LBD lab status --name $NAME
Web console:   http://127.0.0.1:8080/ui/   (log in with the token: cat $TOKEN_FILE)
  from another machine: ssh -L 8080:127.0.0.1:8080 <this machine>, then open the same URL
  lbd events (LBD_TOKEN_FILE as above) follows the same event stream in the terminal
Tear it down:  make demo-down
MSG
