#!/usr/bin/env bash
# `make bench-sipp`: stepped call rates (INVITE/ACK/BYE) from sipp through
# sipedge to three sipp UAS nodes, all on loopback, with a real redis-server.
# sipedge is pinned to core 0, sipp to core 1. For each rate it prints the
# calls, failures, and sipedge's CPU; at the end, the highest rate with
# < 0.1 % failed calls.
#
# Environment: RATES="100 200 ..." (calls/s), SECONDS_PER_STEP (default 10),
# LIMIT (max concurrent calls, default 2000), HOLD_MS (call duration between
# ACK and BYE, default 500: with 0 the ACK and the BYE leave the caller
# back to back and may overtake each other inside any parallel proxy),
# SIPEDGE_ARGS (extra sipedge flags, e.g. --media-ports= to turn media
# anchoring off and compare).
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"100 200 400 600 800 1000"}
STEP=${SECONDS_PER_STEP:-10}
LIMIT=${LIMIT:-2000}
HOLD_MS=${HOLD_MS:-500}
TD=integration/testdata
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

used_ports=" "
free_port() {
  local p
  while :; do
    p=$(( (RANDOM % 20000) + 30000 ))
    [[ "$used_ports" == *" $p "* ]] && continue
    if ! ss -Hlntu "sport = :$p" | grep -q .; then used_ports+="$p "; echo "$p"; return; fi
  done
}

cores=$(nproc)
pin_proxy=(); pin_load=()
if command -v taskset >/dev/null && [ "$cores" -ge 2 ]; then pin_proxy=(taskset -c 0); pin_load=(taskset -c 1); fi

RP=$(free_port); SP=$(free_port); AP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done

for i in 1 2 3; do
  NP=$(free_port)
  "${pin_load[@]}" sipp -sf $TD/node_uas.xml -i 127.0.0.1 -p "$NP" -buff_size 4194304 -nostdin -trace_err -error_file "$work/node$i.err" \
    >/dev/null 2>&1 &
  pids+=($!)
  redis-cli -p "$RP" SADD sipedge:nodes "node$i" >/dev/null
  redis-cli -p "$RP" HSET "sipedge:node:node$i" addr "127.0.0.1:$NP" transport udp weight 100 >/dev/null
done

"${pin_proxy[@]}" ./bin/sipedge --name bench --redis "127.0.0.1:$RP" --listen "127.0.0.1:$SP" \
  --admin "127.0.0.1:$AP" --log-level warn --probe-interval 1s --source-rate 0 ${SIPEDGE_ARGS:-} >"$work/sipedge.log" 2>&1 &
SIPEDGE=$!
pids+=($SIPEDGE)
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$AP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1.5 # first probes

udp_drops() { awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

printf '%-8s %-8s %-8s %-8s %-10s %-10s %-10s\n' rate calls ok failed fail% cpu% udp_drops
best=0
for rate in $RATES; do
  calls=$((rate * STEP))
  { echo SEQUENTIAL; for i in $(seq 1 "$calls"); do echo "bench$((i % 500));127.0.0.1;$SP"; done; } >"$work/calls.csv"
  t0=$(date +%s.%N); c0=$(cpu_ticks "$SIPEDGE"); d0=$(udp_drops)
  "${pin_load[@]}" sipp -sf $TD/uac_call.xml -inf "$work/calls.csv" -i 127.0.0.1 -p "$(free_port)" \
    -buff_size 4194304 -r "$rate" -m "$calls" -l "$LIMIT" -d "$HOLD_MS" -timeout $((STEP * 3 + 30))s -nostdin \
    -trace_stat -stf "$work/stat_$rate.csv" -fd 1 "127.0.0.1:$SP" >/dev/null 2>&1 || true
  t1=$(date +%s.%N); c1=$(cpu_ticks "$SIPEDGE"); d1=$(udp_drops)
  line=$(tail -n 1 "$work/stat_$rate.csv")
  header=$(head -n 1 "$work/stat_$rate.csv")
  col() { awk -F';' -v h="$header" -v name="$1" -v l="$line" 'BEGIN{n=split(h,H,";"); split(l,L,";"); for(i=1;i<=n;i++) if(H[i]==name){print L[i]; exit}}'; }
  ok=$(col "SuccessfulCall(C)"); failed=$(col "FailedCall(C)")
  ok=${ok:-0}; failed=${failed:-0}
  pct=$(awk -v f="$failed" -v c="$calls" 'BEGIN{printf "%.3f", (c ? 100*f/c : 100)}')
  cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(t1-t0)}')
  printf '%-8s %-8s %-8s %-8s %-10s %-10s %-10s\n' "$rate" "$calls" "$ok" "$failed" "$pct" "$cpu" "$((d1 - d0))"
  if awk -v p="$pct" -v ok="$ok" -v c="$calls" 'BEGIN{exit !(p < 0.1 && ok >= c*0.999)}'; then best=$rate; fi
done
echo "highest rate with < 0.1% failed calls: $best calls/s (sipedge on core 0, sipp on core 1)"
