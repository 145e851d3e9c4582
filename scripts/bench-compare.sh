#!/usr/bin/env bash
# `make bench-compare`: sipedge side by side with Kamailio (and rtpengine),
# on one machine in one run, through the same sipp steps and the same nodes.
#
# Systems (SYSTEMS, default all four):
#   sipedge        sipedge, media anchoring off (--media-ports=)
#   kamailio       Kamailio 5.6: tm + rr + dispatcher hash over $rU (configs/bench/kamailio.cfg)
#   sipedge-media  sipedge, anchoring on (its relay)
#   kamailio-rtp   Kamailio with rtpengine_offer/answer/delete, rtpengine userspace (--table=-1)
# The proxy (all its processes, and rtpengine) is pinned to core 0, sipp and
# the load generator to core 1. Loopback only.
#
# Parts (PARTS, default "calls register reject rtp"):
#   calls     INVITE/100/180/200/ACK, HOLD_MS hold, BYE/200 (integration/testdata
#             uac_call.xml, node_uas.xml: both carry SDP), at each of RATES calls/s
#   register  REGISTER/200 at each of REG_RATES/s (uac_register.xml), routed by AOR
#   reject    INVITE/503/ACK at each of REJECT_RATES/s: sipedge deserviced by a
#             profile in Redis (a second, idle sipedge instance of the site keeps
#             the rule from being held back); Kamailio with WITH_REJECT
#   rtp       cmd/rtpload: RTP_CALLS calls set up through SIP to an echo node, then
#             RTP at each of RTP_RATES packets/s (sipedge-media vs kamailio-rtp)
# Paired rounds (PAIRS, default 3; 0 = none): after the sweeps, at each of
#   PAIRED_RATES (default "250 500") calls/s, PAIRS rounds of one sipedge step
#   then one Kamailio step, each freshly started; the table adds the median of
#   the rounds' CPU-per-call ratios (the low rates move most with this machine).
#   With PAIRED_TOP=1 (default) the same rounds run at the highest call rate
#   both passed in the sweeps, and the table adds the median of the rounds'
#   p99 ratios there: sipp times a set-up in steps of about 4 ms (0, 4, 8 ...),
#   so one step's p99 turns on whether 1 % of the calls crossed a step.
#   The register and reject parts get PAIRS rounds too, at the highest rate
#   both passed, with the median of the rounds' CPU ratios: a single step of
#   each once read 1.07 for rejects where three alternated rounds read
#   0.64-0.81 (BENCHMARKS.md, side by side on c0f3c65).
# A SIP step passes below 0.1 % failed calls and below 1 % retransmissions
# (caller's retransmissions per call). An RTP step passes at p99 round trip
# <= 3 ms and < 1 % loss. With STOP_ON_FAIL=1 (default) a system's sweep
# stops at its first failing step.
#
# Per step: rate, proxy CPU µs per call (utime+stime from /proc/<pid>/stat summed
# over every process: kamailio's children, rtpengine), PSS (max over the step of
# /proc/<pid>/smaps_rollup summed over the processes), p99 of the sipp response
# time (-trace_rtt: INVITE to 200, REGISTER to 200, INVITE to 503), the share
# of those above 4 ms (slow%: finer than the p99 at sipp's 4 ms steps), UDP receive
# buffer drops (/proc/net/snmp RcvbufErrors, machine-wide), retransmissions,
# and redis-server's CPU per call (sipedge's shared state; not in the proxy's).
# At the end: ONE table of ratios (sipedge / Kamailio) with the raw figures.
#
# Environment: RATES, REG_RATES, REJECT_RATES, RTP_RATES, RTP_CALLS,
# SECONDS_PER_STEP (default 10), RTP_SECONDS (default 5), HOLD_MS (500),
# CONF_IDS (500: the calls part dials conference ids bench0..bench<CONF_IDS-1>
# in turn, so at 250/s each id comes back every 2 s; a large value makes every
# call a conference of its own, as unique meeting ids do),
# LIMIT (2000), SYSTEMS, PARTS, STOP_ON_FAIL, KAMAILIO_CHILDREN (1: with two
# UDP receivers a 200 can overtake its 180 inside Kamailio, and sipp fails the call),
# SIPEDGE_ARGS (extra sipedge flags), KAMAILIO_ARGS (extra kamailio flags: "-x tlsf
# -X tlsf" swaps its default qm memory manager, built with DBG_SR_MEMORY in Debian,
# for TLSF, about 30 % less CPU per call at 1000/s; BENCHMARKS.md "Kamailio's memory
# manager"), OUT (also write the final table there),
# PPROF_DIR (a CPU profile of sipedge over the middle half of each step,
# from its admin /debug/pprof, written there as <system>-<part>-<rate>.pprof,
# and a heap profile at the end of that window, <system>-<part>-<rate>.heap.pprof;
# with PPROF_TRACE=<seconds>, then an execution trace that long,
# <system>-<part>-<rate>.trace, for go tool trace),
# PERF_STAT=1 (perf stat of the proxy's processes over the middle half of each
# step: syscalls and context switches per call, printed under the step),
# REDIS_CPUS (a taskset CPU list for redis-server, e.g. 1 for the load core;
# unset, the kernel places it, mostly on the proxy's core while sipp keeps
# core 1 busy).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATES=${RATES:-"250 500 750 1000 1500 2000 2500 3000"}
REG_RATES=${REG_RATES:-"2000 4000 8000 12000"}
REJECT_RATES=${REJECT_RATES:-"2000 5000 10000"}
RTP_RATES=${RTP_RATES:-"5000 10000 20000 30000"}
RTP_CALLS=${RTP_CALLS:-500}
STEP=${SECONDS_PER_STEP:-10}
RTP_SECONDS=${RTP_SECONDS:-5}
HOLD_MS=${HOLD_MS:-500}
CONF_IDS=${CONF_IDS:-500}
LIMIT=${LIMIT:-2000}
SYSTEMS=${SYSTEMS:-"sipedge kamailio sipedge-media kamailio-rtp"}
PARTS=${PARTS:-"calls register reject rtp"}
STOP_ON_FAIL=${STOP_ON_FAIL:-1}
KAMAILIO_CHILDREN=${KAMAILIO_CHILDREN:-1}
PAIRS=${PAIRS:-3}
PAIRED_RATES=${PAIRED_RATES:-"250 500"}
PAIRED_TOP=${PAIRED_TOP:-1}
TD=$ROOT/integration/testdata
CFG=$ROOT/configs/bench

die() { echo "bench-compare: $*" >&2; exit 1; }
note() { echo "bench-compare: $*" >&2; }

for b in redis-server redis-cli sipp curl ss taskset kamailio; do
  command -v "$b" >/dev/null || die "$b not found (run 'make bench-compare', which installs it)"
done
for b in sipedge rtpload; do [ -x "bin/$b" ] || die "bin/$b missing (run 'make build')"; done
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (proxy on core 0, load on core 1), have $(nproc)"
PIN_PROXY=(taskset -c 0); PIN_LOAD=(taskset -c 1)
hz=$(getconf CLK_TCK)

work=$(mktemp -d)
pids=()     # everything started, killed at exit
sys_pids=() # the system under test, killed between systems
cleanup() {
  for p in "${sys_pids[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

used_ports=" "
free_port() {
  local p
  while :; do
    p=$(( (RANDOM % 20000) + 20000 ))
    [[ "$used_ports" == *" $p "* ]] && continue
    if ! ss -Hlntu "sport = :$p" | grep -q .; then used_ports+="$p "; echo "$p"; return; fi
  done
}
wait_udp() { # port: until something listens on it
  for _ in $(seq 100); do ss -Hlnu "sport = :$1" | grep -q . && return 0; sleep 0.05; done
  return 1
}

# --- shared: Redis and the three sipp UAS nodes (the SAME nodes for all) ---
RP=$(free_port)
pin_redis=(); [ -n "${REDIS_CPUS:-}" ] && pin_redis=(taskset -c "$REDIS_CPUS")
"${pin_redis[@]}" redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
REDIS_PID=$!
pids+=($REDIS_PID)
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$RP" ping >/dev/null || die "redis-server did not start: $(tail -3 "$work/redis.log")"
: >"$work/ds.list"
for i in 1 2 3; do
  NP=$(free_port)
  "${PIN_LOAD[@]}" sipp -sf "$TD/node_uas.xml" -i 127.0.0.1 -p "$NP" -buff_size 4194304 -nostdin \
    -trace_err -error_file "$work/node$i.err" >/dev/null 2>&1 &
  pids+=($!)
  wait_udp "$NP" || die "sipp node $i did not start"
  redis-cli -p "$RP" SADD sipedge:nodes "node$i" >/dev/null
  redis-cli -p "$RP" HSET "sipedge:node:node$i" addr "127.0.0.1:$NP" transport udp weight 100 >/dev/null
  echo "1 sip:127.0.0.1:$NP" >>"$work/ds.list"
done

# --- starting and stopping a system ---
PROXY_PORT=""; PROXY_PIDS=""; SIPEDGE_ADMIN=""; DESERVICED=""
stop_system() {
  if [ -n "$DESERVICED" ]; then undeservice_sipedge; DESERVICED=""; fi
  for p in "${sys_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${sys_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  sys_pids=(); PROXY_PIDS=""; PROXY_PORT=""
  sleep 0.5
}

start_sipedge() { # name media(on|off) prefix [extra args]
  local name=$1 media=$2 prefix=$3; shift 3
  local sp ap margs=(--media-ports=)
  sp=$(free_port); ap=$(free_port)
  if [ "$media" = on ]; then local m0=$(( (RANDOM % 1000) * 2 + 40000 )); margs=(--media-ports="$m0-$((m0 + 9999))"); fi
  # Probes every 2 s, as Kamailio's ds_ping_interval (and sipedge's default).
  # shellcheck disable=SC2086
  "${PIN_PROXY[@]}" ./bin/sipedge --name "$name" --server "$name-host" --redis "127.0.0.1:$RP" --prefix "$prefix" \
    --listen "127.0.0.1:$sp" --admin "127.0.0.1:$ap" --log-level warn --probe-interval 2s --source-rate 0 \
    --admin-pprof "$([ -n "${PPROF_DIR:-}" ] && echo on || echo off)" "${margs[@]}" ${SIPEDGE_ARGS:-} "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  sys_pids+=($pid)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$ap/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$ap/healthz" >/dev/null 2>&1 || die "sipedge $name did not start: $(tail -5 "$work/$name.log")"
  sleep 2.5 # first probes: nodes enter the ring
  PROXY_PORT=$sp; PROXY_PIDS="$pid"; SIPEDGE_ADMIN=$ap
}

RTPENGINE_WHY=""
start_rtpengine() { # sets RTPE_SOCK and RTPE_PID, or RTPENGINE_WHY
  command -v rtpengine >/dev/null || { RTPENGINE_WHY="rtpengine not installed"; return 1; }
  local np; np=$(free_port)
  local m0=$(( (RANDOM % 1000) * 2 + 40000 ))
  "${PIN_PROXY[@]}" rtpengine --table=-1 --interface=127.0.0.1 --listen-ng="127.0.0.1:$np" \
    --port-min="$m0" --port-max="$((m0 + 9999))" --foreground --log-stderr --log-level=3 --num-threads=1 --delete-delay=0 \
    --no-fallback >"$work/rtpengine.log" 2>&1 &
  RTPE_PID=$!
  sys_pids+=($RTPE_PID)
  if ! wait_udp "$np" || ! kill -0 "$RTPE_PID" 2>/dev/null; then
    RTPENGINE_WHY="rtpengine --table=-1 did not start: $(tail -3 "$work/rtpengine.log" | tr '\n' ' ')"
    return 1
  fi
  RTPE_SOCK="udp:127.0.0.1:$np"
}

start_kamailio() { # dslist [defines...]
  local ds=$1; shift
  local kp defs=(-A "DS_LIST=\"$ds\"" -A "CHILDREN=$KAMAILIO_CHILDREN")
  for d in "$@"; do defs+=(-A "$d"); done
  kp=$(free_port)
  "${PIN_PROXY[@]}" kamailio -DD -E -f "$CFG/kamailio.cfg" "${defs[@]}" -l "udp:127.0.0.1:$kp" \
    -m 2048 -M 16 ${KAMAILIO_ARGS:-} -Y "$work" -P "$work/kamailio.pid" >>"$work/kamailio.log" 2>&1 &
  local main=$!
  sys_pids+=($main)
  wait_udp "$kp" || die "kamailio did not start: $(tail -5 "$work/kamailio.log")"
  sleep 2.5 # children forked, first dispatcher probes
  kill -0 "$main" 2>/dev/null || die "kamailio exited: $(tail -5 "$work/kamailio.log")"
  PROXY_PORT=$kp
  PROXY_PIDS="$main $(pgrep -P "$main" | tr '\n' ' ')"
  [ -n "${RTPE_PID:-}" ] && PROXY_PIDS+=" $RTPE_PID"
  return 0
}

start_system() { # system part (sipedge deserviced for the reject part)
  local sys=$1 part=$2
  RTPE_PID=""
  case $sys in
  sipedge)       start_sipedge bench off sipedge:; if [ "$part" = reject ]; then deservice_sipedge; fi ;;
  sipedge-media) start_sipedge bench on sipedge:; if [ "$part" = reject ]; then deservice_sipedge; fi ;;
  kamailio)      start_kamailio "$work/ds.list" $([ "$part" = reject ] && echo WITH_REJECT) ;;
  kamailio-rtp)
    start_rtpengine || return 1
    start_kamailio "$work/ds.list" WITH_RTPENGINE "RTPENGINE_SOCK=\"$RTPE_SOCK\"" $([ "$part" = reject ] && echo WITH_REJECT) ;;
  *) die "unknown system $sys (SYSTEMS: sipedge kamailio sipedge-media kamailio-rtp)" ;;
  esac
}

# sipedge's reject path: a deservice profile naming this instance's server,
# and a second instance of the site alive (else the rule is held back).
deservice_sipedge() {
  local peer_sp peer_ap
  peer_sp=$(free_port); peer_ap=$(free_port)
  "${PIN_LOAD[@]}" ./bin/sipedge --name bench-peer --server bench-peer-host --redis "127.0.0.1:$RP" \
    --listen "127.0.0.1:$peer_sp" --admin "127.0.0.1:$peer_ap" --log-level warn --media-ports= >"$work/peer.log" 2>&1 &
  sys_pids+=($!) # not in PROXY_PIDS: it carries no load
  redis-cli -p "$RP" SADD sipedge:profiles bench >/dev/null
  redis-cli -p "$RP" HSET sipedge:profile:bench name bench servers bench-host status deservice >/dev/null
  redis-cli -p "$RP" PUBLISH sipedge:events reload >/dev/null
  DESERVICED=1 # stop_system lifts it
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIPEDGE_ADMIN/readyz")" = 503 ] && return 0
    sleep 0.1
  done
  die "sipedge was not deserviced (readyz still ready): $(tail -5 "$work/bench.log")"
}
undeservice_sipedge() {
  redis-cli -p "$RP" DEL sipedge:profile:bench >/dev/null
  redis-cli -p "$RP" SREM sipedge:profiles bench >/dev/null
}

# --- measuring ---
ticks() { local s=0 p t; for p in $1; do t=$(awk '{sub(/.*\) /,""); print $12+$13}' "/proc/$p/stat" 2>/dev/null || echo 0); s=$((s + t)); done; echo $s; }
pss_kb() { local s=0 p v; for p in $1; do v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); s=$((s + ${v:-0})); done; echo $s; }
udp_drops() { awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }
declare -A R # R[sys|part|rate|metric]

run_step() { # sys part rate [tag: results kept under part+tag, e.g. calls.pair2]
  local sys=$1 part=$2 rate=$3 tag=${4:-} n=$(( $3 * STEP )) sf inf args=()
  local dir="$work/$sys-$part$tag-$rate"; mkdir -p "$dir"
  case $part in
  calls)    sf=$TD/uac_call.xml
            { echo SEQUENTIAL; for i in $(seq 1 "$n"); do echo "bench$((i % CONF_IDS));127.0.0.1;$PROXY_PORT"; done; } >"$dir/in.csv"
            args=(-d "$HOLD_MS" -l "$LIMIT") ;;
  register) sf=$TD/uac_register.xml
            { echo SEQUENTIAL; for i in $(seq 1 "$n"); do echo "user$((i % 5000));127.0.0.1"; done; } >"$dir/in.csv"
            args=(-l "$LIMIT") ;;
  reject)   sf=$CFG/uac_reject.xml
            { echo SEQUENTIAL; for i in $(seq 1 "$n"); do echo "bench$((i % 500))"; done; } >"$dir/in.csv"
            args=(-l "$LIMIT") ;;
  esac
  local t0 t1 c0 c1 d0 d1 rc0 rc1 peak=0 v
  t0=$(date +%s.%N); c0=$(ticks "$PROXY_PIDS"); d0=$(udp_drops); rc0=$(ticks "$REDIS_PID")
  # sipp's own -timeout does not end a run with a call stuck in it: timeout(1) does.
  ( cd "$dir" && exec timeout -k 5 $((STEP * 2 + 30)) "${PIN_LOAD[@]}" sipp -sf "$sf" -inf in.csv -i 127.0.0.1 -p "$(free_port)" -buff_size 4194304 \
      -r "$rate" -m "$n" "${args[@]}" -timeout $((STEP * 2 + 20))s -nostdin -trace_stat -stf stat.csv -fd 1 -trace_err -error_file err.log \
      -trace_rtt -rtt_freq 200 "127.0.0.1:$PROXY_PORT" >sipp.out 2>&1 ) &
  local sp=$!
  if [ -n "${PPROF_DIR:-}" ] && [ -n "${SIPEDGE_ADMIN:-}" ] && [ "${sys#sipedge}" != "$sys" ]; then
    # A CPU profile of the middle of the step (go tool pprof bin/sipedge FILE).
    mkdir -p "$PPROF_DIR"
    ( sleep $((STEP / 4)); curl -fsS -o "$PPROF_DIR/$sys-$part-$rate.pprof" \
        "http://127.0.0.1:$SIPEDGE_ADMIN/debug/pprof/profile?seconds=$((STEP / 2 > 0 ? STEP / 2 : 1))"
      curl -fsS -o "$PPROF_DIR/$sys-$part-$rate.heap.pprof" "http://127.0.0.1:$SIPEDGE_ADMIN/debug/pprof/heap"
      if [ "${PPROF_TRACE:-0}" -gt 0 ]; then
        curl -fsS -o "$PPROF_DIR/$sys-$part-$rate.trace" "http://127.0.0.1:$SIPEDGE_ADMIN/debug/pprof/trace?seconds=$PPROF_TRACE"
      fi ) &
  fi
  local perf_pid="" half=$((STEP / 2 > 0 ? STEP / 2 : 1))
  if [ "${PERF_STAT:-0}" = 1 ]; then
    # Syscalls and context switches of the proxy's processes over the middle half.
    ( sleep $((STEP / 4)); perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "${PROXY_PIDS// /,}" \
        -o "$dir/perf.csv" -- sleep "$half" >"$dir/perf.err" 2>&1 ) &
    perf_pid=$!
  fi
  while kill -0 "$sp" 2>/dev/null; do v=$(pss_kb "$PROXY_PIDS"); [ "$v" -gt "$peak" ] && peak=$v; sleep 1; done
  wait "$sp" || true
  t1=$(date +%s.%N); c1=$(ticks "$PROXY_PIDS"); d1=$(udp_drops); rc1=$(ticks "$REDIS_PID")
  [ -s "$dir/stat.csv" ] || die "$sys $part $rate/s: sipp wrote no statistics: $(tail -3 "$dir/sipp.out")"
  local header line
  header=$(head -n 1 "$dir/stat.csv"); line=$(tail -n 1 "$dir/stat.csv")
  col() { awk -F';' -v h="$header" -v name="$1" -v l="$line" 'BEGIN{n=split(h,H,";"); split(l,L,";"); for(i=1;i<=n;i++) if(H[i]==name){print L[i]; exit}}'; }
  local ok failed retr p99 slow
  ok=$(col "SuccessfulCall(C)"); failed=$(col "FailedCall(C)"); retr=$(col "Retransmissions(C)")
  ok=${ok:-0}; failed=${failed:-0}; retr=${retr:-0}
  read -r p99 slow < <(cat "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '$2 ~ /^[0-9.]+$/ {print $2}' | sort -n |
        awk '{v[NR]=$1; if ($1 > 4.5) s++} END{if(NR==0){print "- -"; exit} r=int(NR*0.99+0.999999); if(r<1)r=1; printf "%.1f %.2f\n", v[r], 100*s/NR}')
  local cpu_us redis_us pct retr_pct pass
  cpu_us=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v n="$n" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')
  # redis-server holds sipedge's shared state (Kamailio here keeps none): its
  # CPU is not in the proxy's, so it is reported beside it.
  redis_us=$(awk -v a="$rc0" -v b="$rc1" -v hz="$hz" -v n="$n" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')
  pct=$(awk -v f="$failed" -v ok="$ok" -v c="$n" 'BEGIN{printf "%.3f", (c ? 100*(c-ok)/c : 100)}')
  retr_pct=$(awk -v r="$retr" -v c="$n" 'BEGIN{printf "%.3f", 100*r/c}')
  pass=no
  awk -v p="$pct" -v r="$retr_pct" 'BEGIN{exit !(p < 0.1 && r < 1)}' && pass=yes
  local k="$sys|$part$tag|$rate"
  R[$k|cpu]=$cpu_us; R[$k|redis]=$redis_us; R[$k|pss]=$(awk -v k="$peak" 'BEGIN{printf "%.0f", k/1024}'); R[$k|p99]=$p99; R[$k|slow]=$slow
  R[$k|drops]=$((d1 - d0)); R[$k|retr]=$retr; R[$k|pass]=$pass
  printf '%-14s %-9s %-7s %-7s %-7s %-7s %-8s %-8s %-9s %-8s %-9s %-6s %-6s %-4s %s\n' "$sys" "$part$tag" "$rate" "$n" "$ok" "$failed" \
    "$pct" "$retr" "$cpu_us" "${R[$k|pss]}" "$p99" "$slow" "$((d1 - d0))" "$pass" "$redis_us"
  [ -n "$perf_pid" ] && wait "$perf_pid"
  if [ -s "$dir/perf.csv" ]; then
    awk -F, -v n="$((rate * half))" -v s="$sys $part$tag $rate/s" \
      '$3 ~ /sys_enter/ {sc=$1} $3 ~ /context-switches/ {cs=$1}
       END {printf "  perf %s: %.1f syscalls and %.2f context switches per call\n", s, sc/n, cs/n}' "$dir/perf.csv"
  elif [ -n "$perf_pid" ]; then
    echo "  perf $sys $part$tag $rate/s: no count ($(tail -1 "$dir/perf.err" 2>/dev/null))" >&2
  fi
  [ $pass = yes ]
}

sweep() { # sys part rates...
  local sys=$1 part=$2; shift 2
  local best=0 r
  for r in "$@"; do
    if run_step "$sys" "$part" "$r"; then best=$r; else [ "$STOP_ON_FAIL" = 1 ] && break; fi
  done
  R[$sys|$part|best]=$best
}

RTPLOAD_LOG=""
rtp_sweep() { # sys: an echo node of its own, calls through the proxy, RTP steps
  local sys=$1 np lp
  np=$(free_port); lp=$(free_port)
  "${PIN_LOAD[@]}" ./bin/rtpload node --listen "127.0.0.1:$np" >"$work/rtpnode.log" 2>&1 &
  local node=$!
  pids+=($node)
  wait_udp "$np" || die "rtpload node did not start: $(tail -3 "$work/rtpnode.log")"
  case $sys in
  sipedge-media)
    redis-cli -p "$RP" SADD rtp:nodes echo >/dev/null
    redis-cli -p "$RP" HSET rtp:node:echo addr "127.0.0.1:$np" transport udp weight 100 >/dev/null
    start_sipedge bench on rtp: ;;
  kamailio-rtp)
    echo "1 sip:127.0.0.1:$np" >"$work/ds-rtp.list"
    start_rtpengine || { kill "$node"; return 1; }
    start_kamailio "$work/ds-rtp.list" WITH_RTPENGINE "RTPENGINE_SOCK=\"$RTPE_SOCK\"" ;;
  esac
  local out="$work/rtpload-$sys.out"
  # shellcheck disable=SC2086
  if ! timeout -k 5 $((RTP_SECONDS * 8 + 120)) "${PIN_LOAD[@]}" ./bin/rtpload call --proxy "127.0.0.1:$PROXY_PORT" --local "127.0.0.1:$lp" --calls "$RTP_CALLS" \
      --rates "$RTP_RATES" --seconds "$RTP_SECONDS" --pids "$(echo $PROXY_PIDS | tr ' ' ,)" >"$out" 2>&1; then
    cat "$out" >&2
    die "rtpload against $sys failed"
  fi
  kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true
  stop_system
  sed "s/^/$sys /" "$out"
  local best=0 line rate
  R[$sys|rtp|setup]=$(awk '/^setup/{for(i=2;i<=NF;i++){split($i,a,"="); if(a[1]=="pss_per_call_kb") print a[2]}}' "$out")
  while read -r line; do
    rate=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$line")
    for f in relayed_pps p99_rtt_ms cpu_us_per_pkt mem_per_call_kb loss_pct pass; do
      R[$sys|rtp|$rate|$f]=$(sed -n "s/.* $f=\([^ ]*\).*/\1/p" <<<"$line")
    done
    if [ "${R[$sys|rtp|$rate|pass]}" = true ]; then best=$rate; fi
  done < <(grep '^step ' "$out")
  R[$sys|rtp|best]=$best
}

has() { [[ " $SYSTEMS " == *" $1 "* ]]; }
skipped=" "
printf '%-14s %-9s %-7s %-7s %-7s %-7s %-8s %-8s %-9s %-8s %-9s %-6s %-6s %-4s %s\n' system part rate n ok failed fail% retrans \
  cpu_us/op pss_MB p99_ms slow% drops pass redis_us/op
for part in calls register reject; do
  [[ " $PARTS " == *" $part "* ]] || continue
  case $part in calls) rates=$RATES ;; register) rates=$REG_RATES ;; reject) rates=$REJECT_RATES ;; esac
  for sys in $SYSTEMS; do
    # register and reject do not touch media: the anchored variants add nothing there
    if [ "$part" != calls ] && [[ $sys == *-media || $sys == *-rtp ]]; then continue; fi
    [[ "$skipped" == *" $sys "* ]] && continue
    if ! start_system "$sys" "$part"; then
      note "skipping $sys: $RTPENGINE_WHY"; skipped+="$sys "; stop_system; continue
    fi
    # shellcheck disable=SC2086
    sweep "$sys" "$part" $rates
    stop_system
  done
done
common() { # the highest rate both passed: sys1 sys2 part rates
  local a=$1 b=$2 part=$3 c="" r; shift 3
  for r in "$@"; do [ "${R[$a|$part|$r|pass]:-}" = yes ] && [ "${R[$b|$part|$r|pass]:-}" = yes ] && c=$r; done
  echo "$c"
}
pair_rounds() { # part rate: PAIRS rounds of one sipedge step, then one Kamailio step, each freshly started
  local part=$1 rate=$2 round sys
  for round in $(seq "$PAIRS"); do
    for sys in sipedge kamailio; do
      [[ "$skipped" == *" $sys "* ]] && continue
      start_system "$sys" "$part"
      run_step "$sys" "$part" "$rate" ".pair$round" || true
      stop_system
    done
  done
}
# Paired rounds at low rates: this machine's CPU per call at 250-500/s
# moves by about ±25 % between steps minutes apart (BENCHMARKS.md, "where the
# low-rate gap is not"), so one sweep per system cannot compare them there.
# Each round runs sipedge and then Kamailio at the same rate, each freshly
# started, back to back; the table gives the median of the rounds' ratios.
PAIRED_TOP_RATE=""
if [[ " $PARTS " == *" calls "* ]] && [ "$PAIRS" -gt 0 ] && has sipedge && has kamailio; then
  paired=$PAIRED_RATES
  if [ "$PAIRED_TOP" = 1 ]; then
    for r in $RATES; do
      [ "${R[sipedge|calls|$r|pass]:-}" = yes ] && [ "${R[kamailio|calls|$r|pass]:-}" = yes ] && PAIRED_TOP_RATE=$r
    done
    [ -n "$PAIRED_TOP_RATE" ] && [[ " $paired " != *" $PAIRED_TOP_RATE "* ]] && paired+=" $PAIRED_TOP_RATE"
  fi
  for rate in $paired; do pair_rounds calls "$rate"; done
fi
declare -A PAIRED_PART_RATE=() # register, reject: the rate of their paired rounds
if [ "$PAIRS" -gt 0 ] && has sipedge && has kamailio; then
  for part in register reject; do
    [[ " $PARTS " == *" $part "* ]] || continue
    if [ "$part" = register ]; then rates=$REG_RATES; else rates=$REJECT_RATES; fi
    # shellcheck disable=SC2086
    PAIRED_PART_RATE[$part]=$(common sipedge kamailio "$part" $rates)
    [ -n "${PAIRED_PART_RATE[$part]}" ] && pair_rounds "$part" "${PAIRED_PART_RATE[$part]}"
  done
fi
if [[ " $PARTS " == *" rtp "* ]]; then
  for sys in sipedge-media kamailio-rtp; do
    has "$sys" || continue
    [[ "$skipped" == *" $sys "* ]] && continue
    if ! rtp_sweep "$sys"; then note "skipping $sys rtp: $RTPENGINE_WHY"; skipped+="$sys "; stop_system; fi
  done
fi

# --- the table of ratios ---
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if(a==""||b==""||a=="-"||b=="-"||b+0==0){print "-"}else{printf "%.2f", a/b}}'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
sum2() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", a + b}'; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR]=$1} END{if(NR==0){print "-"; exit} if(NR%2){print v[(NR+1)/2]} else {printf "%.2f", (v[NR/2]+v[NR/2+1])/2}}'; }
pair_row() { # a b rate field label [part]: one figure of the paired rounds, each round's ratio, and their median
  local a=$1 b=$2 c=$3 f=$4 label=$5 part=${6:-calls} i va vb r n=0 rs="" as="" bs="" each=""
  for i in $(seq "$PAIRS"); do
    [ "${R[$a|$part.pair$i|$c|pass]:-}" = yes ] && [ "${R[$b|$part.pair$i|$c|pass]:-}" = yes ] || continue
    va=${R[$a|$part.pair$i|$c|$f]}; vb=${R[$b|$part.pair$i|$c|$f]}; r=$(ratio "$va" "$vb")
    as+="$va "; bs+="$vb "; rs+="$r "; each+="${each:+; }$va/$vb = $r"; n=$((n + 1))
  done
  printf '| %s at %s/s, median of %s of %s paired rounds passed by both (%s) | %s | %s | %s |\n' \
    "$label" "$c" "$n" "$PAIRS" "${each:-none}" "$(median <<<"$as")" "$(median <<<"$bs")" "$(median <<<"$rs")"
}
table() {
  local a=$1 b=$2 c r
  echo
  echo "### $a / $b"
  echo
  echo "| measure | $a | $b | ratio $a/$b |"
  echo "|---|---|---|---|"
  if [[ "$skipped" == *" $b "* ]]; then echo "| (skipped: $RTPENGINE_WHY) | | | |"; return; fi
  # shellcheck disable=SC2086
  if [[ " $PARTS " == *" calls "* ]]; then
    row "highest passing call rate (calls/s)" "${R[$a|calls|best]:-}" "${R[$b|calls|best]:-}"
    c=$(common "$a" "$b" calls $RATES)
    if [ -n "$c" ]; then
      row "proxy CPU µs per call at $c/s" "${R[$a|calls|$c|cpu]}" "${R[$b|calls|$c|cpu]}"
      row "redis-server CPU µs per call at $c/s (not in the proxy's)" "${R[$a|calls|$c|redis]}" "${R[$b|calls|$c|redis]}"
      row "proxy + redis-server CPU µs per call at $c/s" "$(sum2 "${R[$a|calls|$c|cpu]}" "${R[$a|calls|$c|redis]}")" \
        "$(sum2 "${R[$b|calls|$c|cpu]}" "${R[$b|calls|$c|redis]}")"
      row "proxy PSS MB at $c/s" "${R[$a|calls|$c|pss]}" "${R[$b|calls|$c|pss]}"
      row "p99 set-up ms at $c/s" "${R[$a|calls|$c|p99]}" "${R[$b|calls|$c|p99]}"
      row "set-ups above 4 ms at $c/s (%)" "${R[$a|calls|$c|slow]}" "${R[$b|calls|$c|slow]}"
      row "UDP drops at $c/s" "${R[$a|calls|$c|drops]}" "${R[$b|calls|$c|drops]}"
      row "retransmissions at $c/s" "${R[$a|calls|$c|retr]}" "${R[$b|calls|$c|retr]}"
    fi
    if [[ $a == sipedge && $b == kamailio ]] && [ "$PAIRS" -gt 0 ]; then
      for c in $PAIRED_RATES; do pair_row "$a" "$b" "$c" cpu "proxy CPU µs per call"; done
      if [ -n "$PAIRED_TOP_RATE" ]; then
        [[ " $PAIRED_RATES " == *" $PAIRED_TOP_RATE "* ]] || pair_row "$a" "$b" "$PAIRED_TOP_RATE" cpu "proxy CPU µs per call"
        pair_row "$a" "$b" "$PAIRED_TOP_RATE" p99 "p99 set-up ms"
        pair_row "$a" "$b" "$PAIRED_TOP_RATE" slow "% of set-ups above 4 ms"
      fi
    fi
    r=${R[$a|calls|best]:-0}; [ "$r" != 0 ] && row "p99 set-up ms at own top rate ($a $r/s, $b ${R[$b|calls|best]}/s)" \
      "${R[$a|calls|$r|p99]}" "${R[$b|calls|${R[$b|calls|best]}|p99]:-}"
  fi
  if [[ $a == sipedge && $b == kamailio ]]; then
    if [[ " $PARTS " == *" register "* ]]; then
      row "highest passing REGISTER rate (/s)" "${R[$a|register|best]:-}" "${R[$b|register|best]:-}"
      c=$(common "$a" "$b" register $REG_RATES)
      [ -n "$c" ] && row "proxy CPU µs per REGISTER at $c/s" "${R[$a|register|$c|cpu]}" "${R[$b|register|$c|cpu]}"
      [ -n "${PAIRED_PART_RATE[register]:-}" ] && pair_row "$a" "$b" "${PAIRED_PART_RATE[register]}" cpu "proxy CPU µs per REGISTER" register
    fi
    if [[ " $PARTS " == *" reject "* ]]; then
      row "highest passing 503 reject rate (/s)" "${R[$a|reject|best]:-}" "${R[$b|reject|best]:-}"
      c=$(common "$a" "$b" reject $REJECT_RATES)
      [ -n "$c" ] && row "proxy CPU µs per 503 reject at $c/s" "${R[$a|reject|$c|cpu]}" "${R[$b|reject|$c|cpu]}"
      [ -n "${PAIRED_PART_RATE[reject]:-}" ] && pair_row "$a" "$b" "${PAIRED_PART_RATE[reject]}" cpu "proxy CPU µs per 503 reject" reject
    fi
  fi
  if [[ $a == sipedge-media && " $PARTS " == *" rtp "* && -n "${R[$a|rtp|best]:-}" && -n "${R[$b|rtp|best]:-}" ]]; then
    row "relay: highest passing RTP rate sent (pkt/s, p99 RTT <= 3 ms)" "${R[$a|rtp|best]}" "${R[$b|rtp|best]}"
    c=""; for r in $RTP_RATES; do [ "${R[$a|rtp|$r|pass]:-}" = true ] && [ "${R[$b|rtp|$r|pass]:-}" = true ] && c=$r; done
    [ -n "$c" ] || c=$(echo "$RTP_RATES" | awk '{print $1}')
    row "relay: packets relayed/s at $c pkt/s sent" "${R[$a|rtp|$c|relayed_pps]:-}" "${R[$b|rtp|$c|relayed_pps]:-}"
    row "relay: CPU µs per relayed packet at $c pkt/s" "${R[$a|rtp|$c|cpu_us_per_pkt]:-}" "${R[$b|rtp|$c|cpu_us_per_pkt]:-}"
    row "relay: p99 round trip ms at $c pkt/s" "${R[$a|rtp|$c|p99_rtt_ms]:-}" "${R[$b|rtp|$c|p99_rtt_ms]:-}"
    row "relay: loss % at $c pkt/s" "${R[$a|rtp|$c|loss_pct]:-}" "${R[$b|rtp|$c|loss_pct]:-}"
    row "relay: memory KB per call at $c pkt/s (PSS delta + socket buffers)" "${R[$a|rtp|$c|mem_per_call_kb]:-}" "${R[$b|rtp|$c|mem_per_call_kb]:-}"
    row "relay: PSS KB per call, idle calls up" "${R[$a|rtp|setup]:-}" "${R[$b|rtp|setup]:-}"
  fi
}
{
  echo
  echo "## sipedge / Kamailio (ratio < 1 is better for CPU, PSS, p99, drops; > 1 for rates)"
  echo "steps: ${STEP}s SIP, ${RTP_SECONDS}s RTP with $RTP_CALLS calls; proxy on core 0, load on core 1"
  if has sipedge && has kamailio; then table sipedge kamailio; fi
  if has sipedge-media && has kamailio-rtp; then table sipedge-media kamailio-rtp; fi
} | tee "${OUT:-/dev/null}"
