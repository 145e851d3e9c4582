#!/usr/bin/env bash
# Two sipedge binaries alternated through the same bench-compare step, each
# step freshly started: OLD=<binary> NEW=<binary> [RATE=3000] [ROUNDS=3]
# [PARTS=calls] ./scripts/bench-ab.sh. On a noisy 2-core machine only
# alternated rounds tell a change from the drift between minutes
# (BENCHMARKS.md "Counts of conferences in progress at the beat").
# bin/sipedge is restored at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD:?OLD=<path of the old sipedge binary>}" "${NEW:?NEW=<path of the new sipedge binary>}"
RATE=${RATE:-3000}; ROUNDS=${ROUNDS:-3}; PARTS=${PARTS:-calls}
keep=$(mktemp); cp bin/sipedge "$keep"
trap 'cp "$keep" bin/sipedge; rm -f "$keep"' EXIT
echo "binary round system part rate calls ok failed fail% retr cpu_us pss_mb p99_ms slow% drops pass redis_us"
for round in $(seq "$ROUNDS"); do
  for b in old new; do
    if [ $b = old ]; then cp "$OLD" bin/sipedge; else cp "$NEW" bin/sipedge; fi
    SYSTEMS=sipedge PARTS=$PARTS RATES=$RATE PAIRS=0 ./scripts/bench-compare.sh 2>&1 |
      grep -E "^sipedge +$PARTS " | sed "s/^/$b r$round /"
  done
done
