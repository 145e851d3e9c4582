#!/usr/bin/env bash
# `make run`: the product on loopback, in the foreground. Two sipedge
# instances of one site on their own servers (host-a, host-b; the first
# starts the embedded Redis, the second shares it), three confnodes on
# servers media-1..3. Callers: configs/demo/caller.xml (sipp, sends RTP by
# echoing the conference's). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
SIP_A=${SIP_A:-5060}
SIP_B=${SIP_B:-5062}
ADMIN_A=${ADMIN_A:-127.0.0.1:9060}
ADMIN_B=${ADMIN_B:-127.0.0.1:9062}
NODE_PORT=${NODE_PORT:-5071} # confnodes on NODE_PORT, +1, +2
BIN=${BIN:-./bin}
# Short conference timers so the seed scenarios show in a minute; sipedge's
# own defaults are longer (README, Configuration).
# EXTRA_ARGS are added to both instances' flags (e.g. "--log-level debug").
DEMO_ARGS="--guests-only-timeout 5s --last-participant-timeout 1m --drain-timeout 60s --slow-start 10s ${EXTRA_ARGS:-}"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# shellcheck disable=SC2086
"$BIN/sipedge" --name sipedge-a --site demo --server host-a --listen 127.0.0.1:$SIP_A --admin $ADMIN_A \
  --media-ports 30000-34999 --log-format console --probe-interval 1s $DEMO_ARGS &
pids+=($!)

redis=""
for _ in $(seq 1 50); do
  redis=$(curl -fsS "http://$ADMIN_A/api/status" 2>/dev/null | sed -n 's/.*"redis": *"\([^"]*\)".*/\1/p' | head -1) || true
  [ -n "$redis" ] && break
  sleep 0.2
done
[ -n "$redis" ] || { echo "sipedge-a did not come up (see its log above)" >&2; exit 1; }

# shellcheck disable=SC2086
"$BIN/sipedge" --name sipedge-b --site demo --server host-b --listen 127.0.0.1:$SIP_B --admin $ADMIN_B \
  --redis "$redis" --media-ports 35000-39999 --log-format console --probe-interval 1s $DEMO_ARGS &
pids+=($!)

for i in 1 2 3; do
  proxy=127.0.0.1:$SIP_A
  [ "$i" = 2 ] && proxy=127.0.0.1:$SIP_B
  "$BIN/confnode" --name confnode-$i --server media-$i --site demo --listen 127.0.0.1:$((NODE_PORT + i - 1)) \
    --redis "$redis" --proxy "$proxy" --log-format console &
  pids+=($!)
done
for admin in $ADMIN_A $ADMIN_B; do
  for _ in $(seq 1 50); do curl -fsS "http://$admin/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
done

ctl="$BIN/sipedgectl --redis $redis"
cat <<MSG

  sipedge is up. Instances (site demo):
    sipedge-a  SIP 127.0.0.1:$SIP_A  admin http://$ADMIN_A  (server host-a)
    sipedge-b  SIP 127.0.0.1:$SIP_B  admin http://$ADMIN_B  (server host-b)
  Media nodes confnode-1..3 on 127.0.0.1:$NODE_PORT-$((NODE_PORT + 2)); Redis (embedded) $redis

  Two callers with RTP in conference "demo" (hold 30 s):
    sipp -sf configs/demo/caller.xml -s demo -key from alice -rtp_echo -mp 40000 -m 1 127.0.0.1:$SIP_A
    sipp -sf configs/demo/caller.xml -s demo -key from bob -rtp_echo -mp 40100 -m 1 127.0.0.1:$SIP_B
  See them:
    $ctl status
    $ctl conf show demo        # participants, present yes, packets
    open http://$ADMIN_A/      # live page
  The README ("Demo walkthrough") takes you through maintenance, deservice
  (503 + Retry-After), forced maintenance, drain deadline, guests-only,
  backstop and keep-alive with commands to copy.

  Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
