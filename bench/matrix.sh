#!/usr/bin/env bash
# Portico against nginx, HAProxy, h2o and a Pingora proxy on the shared side-by-side harness
# (../shared/bench), the full matrix in one run, then the issue's table: Portico's figure per
# proxy core, the best peer's, and the ratio.
#
# usage: bench/matrix.sh [REPEAT] [DURATION_SECONDS]     (defaults 3 and 10: about 40 minutes)
#   MATRIX_PROXIES   peers to run   (default direct,ours,nginx,haproxy,h2o,pingora-rustls)
#   OURS_SCENARIOS   scenarios      (default the whole matrix)
# Only 127.0.0.1 is contacted; every load run is bounded by the harness (≤ 15 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REPEAT=${1:-3}
DUR=${2:-10}
SHARED=${PORTICO_BENCH_HARNESS:-$ROOT/../shared/bench}
[ -f "$SHARED/bench.py" ] || { echo "no harness at $SHARED (set PORTICO_BENCH_HARNESS)" >&2; exit 2; }

# The harness writes results/ and work/ beside itself: run a writable copy.
HARNESS=${TMPDIR:-/tmp}/portico-bench-harness
mkdir -p "$HARNESS"
cp -r "$SHARED"/. "$HARNESS"/
chmod -R u+w "$HARNESS"
mkdir -p "$HARNESS/results" "$HARNESS/work"
# The peers and tools (apt packages, the Pingora proxy, tls-hammer); skip with MATRIX_SKIP_INSTALL=1
# when they are already built.
[ "${MATRIX_SKIP_INSTALL:-0}" = 1 ] || (cd "$HARNESS" && ./run.sh install)

cargo build --release -p portico
BIN=$ROOT/target/release/portico
CMD="$HARNESS/portico-bench $BIN {WORK} {H1_PORT} {H2C_PORT} {TLS_PORT} {TCP_PORT} {SNI_PORT} {BACKEND_PORT} {BACKEND_TLS_PORT} {CERT} {KEY}"
SCEN=${OURS_SCENARIOS:-h1,h1-c1,h2c,h2-tls,h1-tls,tls-full,tls-resume,mem,mem-tls,tcp,sni-pass}
PROXIES=${MATRIX_PROXIES:-direct,ours,nginx,haproxy,h2o,pingora-rustls}
STAMP=portico-$(date +%Y%m%d-%H%M%S)
RESULT=$HARNESS/results/matrix-$STAMP.jsonl
: > "$RESULT"
# One scenario at a time, every proxy in turn: the figures a ratio compares are taken within a
# minute of each other, not up to ten minutes apart (this VM's speed drifts by more than the
# gaps being measured). Each result line also gets the CPU time the hypervisor stole meanwhile
# (bench/steal.py; the harness reports on stderr).
for scn in ${SCEN//,/ }; do
  (cd "$HARNESS" && python3 -u bench.py --repeat "$REPEAT" --duration "$DUR" --proxies "$PROXIES" \
    --ours-cmd "$CMD" --scenarios "$scn" --tag "$STAMP-$scn") 2>&1 | python3 "$ROOT/bench/steal.py"
  cat "$(ls -t "$HARNESS"/results/*-"$STAMP-$scn".jsonl | head -1)" >> "$RESULT"
done
echo "raw results: $RESULT"
python3 "$ROOT/bench/matrix_table.py" "$RESULT"
# Idle RSS and binary size, for the issue's extra rows.
ls -l "$BIN" | awk '{printf "release binary: %.1f MB\n", $5 / 1048576}'
