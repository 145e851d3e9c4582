#!/usr/bin/env bash
# `make bench-flat`: sipedge's CPU per extra call set-up and per call end
# while sipp holds LEVELS concurrent anchored calls (issue 9: flat within
# 10 % from 100 to 10 000). Real redis-server, sipedge (media anchoring on)
# and three sipp UAS nodes answering with SDP, all on loopback; sipedge on
# core 0, sipp on core 1.
#
# Per level: a fresh redis-server, nodes and sipedge; a holder sipp sets up
# LEVEL calls (SDP offer and answer: 4 relay sockets each, one conference
# per call) and holds them for the whole level. Then EXTRA further calls
# come in cycles of a tenth of the level (at most 500), so the level stays
# within 10 % of its figure: each cycle sets its calls up at RATE/s (the
# set-up window: their duration + 1 s), holds them, and ends them (BYE; the
# end window: from the first BYE to sipp's exit). sipedge's CPU is read at the cycle's
# edges from /proc/<pid>/task/*/schedstat (nanoseconds; the tick counts of
# /proc/<pid>/stat are 10 ms, too coarse for a cycle of 10 calls), and the
# idle CPU of the level (measured for IDLE_S seconds before the cycles: the
# presence loop, the heartbeats over LEVEL calls) is subtracted. It prints,
# per level, the CPU per set-up and per end, and at the end each level's
# ratio to the first.
#
# Environment: LEVELS (default "100 10000"; a level above what the file
# limit fits, at 4 sockets per anchored call, is measured at the most that
# fits and says so: with the usual hard RLIMIT_NOFILE of 20 000 about 4 500),
# EXTRA (calls measured per level, default 600), RATE (set-ups/s, default
# 200), IDLE_S (default 5), MEDIA_PORTS (default from 10000, as many ports as
# the largest level needs), SIPEDGE_BIN (default ./bin/sipedge: another build
# to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=${LEVELS:-"100 10000"}
EXTRA=${EXTRA:-600}
RATE=${RATE:-200}
IDLE_S=${IDLE_S:-5}
SIPEDGE_BIN=${SIPEDGE_BIN:-./bin/sipedge}
TD=integration/testdata
work=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# A level needs 4 sockets per call (two relay port pairs) plus the extra
# calls of a cycle (at most 500), within the file limit and the media port
# range. The soft limit goes up to the hard one (sipedge, a Go program,
# does the same for itself).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576
fit=$(( ((nofile - 300) / 4 - 500) / 100 * 100 ))
top=0
for level in $LEVELS; do (( level > top )) && top=$level; done
(( top > fit )) && top=$fit
if [ -z "${MEDIA_PORTS:-}" ]; then
  MEDIA_PORTS="10000-$(( 10000 + 4 * (top + 500) * 11 / 10 ))"
  (( ${MEDIA_PORTS#*-} > 65535 )) && MEDIA_PORTS=10000-65535
fi
pmin=${MEDIA_PORTS%-*}; pmax=${MEDIA_PORTS#*-}
pfit=$(( ((pmax - pmin + 1) * 10 / 11 / 4 - 500) / 100 * 100 ))
(( pfit < fit )) && fit=$pfit

# The script's own listeners (redis-server, sipp, the admin API) take ports
# outside the media range, so sipedge's relay never finds one taken.
used_ports=" "
free_port() {
  local p
  while :; do
    p=$(( (RANDOM % 8000) + 2000 ))
    (( p >= pmin && p <= pmax )) && p=$(( (RANDOM % 4000) + 61000 ))
    (( p >= pmin && p <= pmax )) && continue
    [[ "$used_ports" == *" $p "* ]] && continue
    if ! ss -Hlntu "sport = :$p" | grep -q .; then used_ports+="$p "; echo "$p"; return; fi
  done
}

pin_proxy=(); pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin_proxy=(taskset -c 0); pin_load=(taskset -c 1); fi

cpu_ns() { # every thread's run time, ns
  local sum=0 t v
  for t in /proc/"$1"/task/*/schedstat; do read -r v _ <"$t" 2>/dev/null && sum=$((sum + v)); done
  echo "$sum"
}
now_ns() { date +%s%N; }
dialogs() { curl -fsS "http://127.0.0.1:$AP/metrics" 2>/dev/null | awk '$1=="sipedge_dialogs_active"{print int($2)}'; }

start_level() {
  RP=$(free_port); SP=$(free_port); AP=$(free_port)
  redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for i in 1 2 3; do
    NP=$(free_port)
    "${pin_load[@]}" sipp -sf $TD/node_uas.xml -i 127.0.0.1 -p "$NP" -buff_size 4194304 -nostdin \
      >/dev/null 2>&1 &
    pids+=($!)
    redis-cli -p "$RP" SADD sipedge:nodes "node$i" >/dev/null
    redis-cli -p "$RP" HSET "sipedge:node:node$i" addr "127.0.0.1:$NP" transport udp weight 100 >/dev/null
  done
  "${pin_proxy[@]}" "$SIPEDGE_BIN" --name flat --redis "127.0.0.1:$RP" --listen "127.0.0.1:$SP" \
    --admin "127.0.0.1:$AP" --log-level warn --probe-interval 1s \
    --media-ports "$MEDIA_PORTS" --media-timeout 86400s --presence-timeout 1h --guests-only-timeout 86400s \
    --source-rate 0 --source-ports 0 --source-halfopen 0 --max-ports-percent 0 >"$work/sipedge.log" 2>&1 &
  SIPEDGE=$!
  pids+=($SIPEDGE)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$AP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1.5 # first probes
}

# calls NAME N: an injection file of N calls, one conference each.
calls() { { echo SEQUENTIAL; for i in $(seq 1 "$2"); do echo "$1$i;127.0.0.1;$SP"; done; } >"$work/$1.csv"; }

# uac NAME N HOLD_MS: start N calls at RATE/s, each held HOLD_MS, then
# BYE, in the background (UAC is sipp's pid).
uac() {
  local port
  port=$(free_port)
  "${pin_load[@]}" sipp -sf $TD/uac_call.xml -inf "$work/$1.csv" -i 127.0.0.1 -p "$port" \
    -buff_size 4194304 -r "$RATE" -m "$2" -l "$2" -d "$3" -timeout 3600s -nostdin \
    -trace_stat -stf "$work/$1.stat" -fd 1 "127.0.0.1:$SP" >/dev/null 2>&1 &
  UAC=$!
}
failed_of() { # FailedCall(C) of a stat file
  awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print (c ? $c : "?")}' "$1"
}

declare -A SU EN
printf '%-7s %-7s %-8s %-8s %-13s %-13s %-13s %s\n' level extra batch failed idle_ms/s cpu_us/setup cpu_us/end note
measured=""
for asked in $LEVELS; do
  level=$asked
  if (( level > fit )); then
    (( fit < 100 )) && { echo "level $asked skipped: $nofile open files (ulimit -n) and media ports $MEDIA_PORTS fit fewer than 100 anchored calls"; continue; }
    level=$fit
    echo "level $asked measured at $level: $nofile open files (ulimit -n, hard limit $(ulimit -Hn)) and media ports $MEDIA_PORTS fit about $fit anchored calls (4 sockets each)"
  fi
  [[ " $measured " == *" $level "* ]] && continue
  measured+=" $level"
  start_level
  calls hold "$level"
  uac hold "$level" 86400000
  pids+=($UAC)
  deadline=$(( $(date +%s) + level / RATE + 60 ))
  while [ "$(dialogs)" != "$level" ]; do
    if (( $(date +%s) > deadline )); then echo "level $level: only $(dialogs) dialogs up"; break; fi
    sleep 0.5
  done
  sleep 2
  t0=$(now_ns); c0=$(cpu_ns "$SIPEDGE"); sleep "$IDLE_S"; t1=$(now_ns); c1=$(cpu_ns "$SIPEDGE")
  idle=$(( (c1 - c0) * 1000000000 / (t1 - t0) )) # ns of CPU per s

  batch=$(( level / 10 )); (( batch < 1 )) && batch=1; (( batch > 500 )) && batch=500
  hold_ms=$(( batch * 1000 / RATE + 2000 ))
  su=0; en=0; done_calls=0; failed=0; cycle=0
  while (( done_calls < EXTRA )); do
    cycle=$((cycle + 1)); name="x${cycle}_"
    calls "$name" "$batch"
    a0=$(now_ns); ca=$(cpu_ns "$SIPEDGE")
    uac "$name" "$batch" "$hold_ms"
    up=$UAC
    sleep "$(awk -v b="$batch" -v r="$RATE" 'BEGIN{printf "%.3f", b/r + 1}')"
    a1=$(now_ns); cb=$(cpu_ns "$SIPEDGE")
    # The first BYE leaves hold_ms after the first ACK, which is after a0.
    left=$(( a0 + hold_ms * 1000000 - $(now_ns) ))
    (( left > 0 )) && sleep "$(awk -v n="$left" 'BEGIN{printf "%.3f", n/1e9}')"
    a2=$(now_ns); cc=$(cpu_ns "$SIPEDGE")
    wait "$up" || true
    a3=$(now_ns); cd=$(cpu_ns "$SIPEDGE")
    su=$(( su + (cb - ca) - idle * (a1 - a0) / 1000000000 ))
    en=$(( en + (cd - cc) - idle * (a3 - a2) / 1000000000 ))
    f=$(failed_of "$work/$name.stat"); [[ "$f" =~ ^[0-9]+$ ]] && failed=$((failed + f)) || failed=$((failed + batch))
    done_calls=$((done_calls + batch))
  done
  SU[$level]=$(( su / done_calls / 1000 )); EN[$level]=$(( en / done_calls / 1000 ))
  note=""; [ "$(dialogs)" != "$level" ] && note="dialogs after the cycles: $(dialogs)"
  printf '%-7s %-7s %-8s %-8s %-13s %-13s %-13s %s\n' "$level" "$done_calls" "$batch" "$failed" \
    "$((idle / 1000000))" "${SU[$level]}" "${EN[$level]}" "$note"
  stop_all
done

first=""
for level in $measured; do
  [ -n "${SU[$level]:-}" ] || continue
  if [ -z "$first" ]; then first=$level; continue; fi
  awk -v l="$level" -v f="$first" -v s="${SU[$level]}" -v s0="${SU[$first]}" -v e="${EN[$level]}" -v e0="${EN[$first]}" \
    'BEGIN{printf "level %s / level %s: set-up %.2f, end %.2f (flat: within 0.90-1.10)\n", l, f, (s0 ? s/s0 : 0), (e0 ? e/e0 : 0)}'
done
