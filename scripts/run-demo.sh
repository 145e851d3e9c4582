#!/usr/bin/env bash
# `make run`: sipedge with its embedded Redis plus two demo confnodes, all on
# loopback, in the foreground. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
SIP_PORT=${SIP_PORT:-5060}
ADMIN=${ADMIN:-127.0.0.1:9060}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

./bin/sipedge --name demo --listen 127.0.0.1:$SIP_PORT --admin $ADMIN --log-format console \
  --probe-interval 1s &
pids+=($!)

redis=""
for _ in $(seq 1 50); do
  redis=$(curl -fsS "http://$ADMIN/api/status" 2>/dev/null | sed -n 's/.*"redis": *"\([^"]*\)".*/\1/p' | head -1) || true
  [ -n "$redis" ] && break
  sleep 0.2
done
[ -n "$redis" ] || { echo "sipedge did not come up (see its log above)" >&2; exit 1; }

./bin/confnode --name confnode-1 --listen 127.0.0.1:5071 --redis "$redis" --proxy 127.0.0.1:$SIP_PORT --log-format console &
pids+=($!)
./bin/confnode --name confnode-2 --listen 127.0.0.1:5072 --redis "$redis" --proxy 127.0.0.1:$SIP_PORT --log-format console &
pids+=($!)

cat <<MSG

  sipedge is up: SIP on 127.0.0.1:$SIP_PORT (UDP/TCP), admin on http://$ADMIN
  Redis (embedded): $redis

  Place a test call (conference "demo", 5 calls):
    sipp -sn uac -s demo -m 5 -l 1 127.0.0.1:$SIP_PORT
  Point sipedgectl at it:
    ./bin/sipedgectl --redis $redis nodes list
    ./bin/sipedgectl --redis $redis ring lookup demo
    ./bin/sipedgectl --redis $redis conf list
    ./bin/sipedgectl --redis $redis conf show demo     # participants, presence, packets
    ./bin/sipedgectl --redis $redis conf dial demo sip:someone@127.0.0.1:5090 --role host
  Media: RTP of every call flows through relay ports 30000-39999; the
  confnodes send RTP on every call, so presence shows up in conf show.
  Status:  curl http://$ADMIN/api/status

  Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
