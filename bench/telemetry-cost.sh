#!/usr/bin/env bash
# What telemetry costs on the request path, side by side in one run, on this machine.
#
# One portico-echo backend on core 0 and a second portico-echo as the OTLP collector (it answers
# 200 to every POST) on core 0; four portico instances, each in turn pinned to core 1 with one
# worker, all with Istio's metrics (always on):
#   off    --access-log off
#   text   --access-log text (stdout to /dev/null: the lines are formatted and written)
#   trace  --access-log off, --otlp-endpoint, --trace-sampling 100 (every request: 2 spans)
#   all    --access-log text and tracing at 100 %
# wrk (HTTP/1.1 keep-alive, 64 connections) on core 0. Two rounds, alternating.
#
# usage: bench/telemetry-cost.sh [DURATION_SECONDS]   (installs wrk when absent)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=64

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
ulimit -n 65536 || true

cargo build --release -p portico >/dev/null 2>&1 || cargo build --release -p portico
BIN=target/release
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

BACKEND=18910; COLLECTOR=18911
taskset -c 0 "$BIN/portico-echo" --listen 127.0.0.1:$BACKEND --name backend --workers 1 2>/dev/null & pids+=($!)
taskset -c 0 "$BIN/portico-echo" --listen 127.0.0.1:$COLLECTOR --name otlp --workers 1 2>/dev/null & pids+=($!)

mkdir -p "$WORK/config"
cat > "$WORK/config/bench.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: default}
spec:
  hosts: ["bench.local"]
  gateways: [istio-system/bench]
  http: [{route: [{destination: {host: backend.bench}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.bench]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $BACKEND}}]
YAML

VARIANTS=(off text trace all)
declare -A PORT=([off]=18921 [text]=18922 [trace]=18923 [all]=18924)
declare -A ADMIN=([off]=18931 [text]=18932 [trace]=18933 [all]=18934)
OTLP=(--otlp-endpoint http://127.0.0.1:$COLLECTOR/v1/traces --trace-sampling 100)
declare -A ARGS=(
  [off]="--access-log off"
  [text]="--access-log text"
  [trace]="--access-log off ${OTLP[*]}"
  [all]="--access-log text ${OTLP[*]}"
)
for v in "${VARIANTS[@]}"; do
  # shellcheck disable=SC2086
  PORTICO_LOG=error taskset -c 1 "$BIN/portico" run --config "$WORK/config" --bind 127.0.0.1 \
    --port-map 80=${PORT[$v]} --admin 127.0.0.1:${ADMIN[$v]} --workers 1 ${ARGS[$v]} >/dev/null 2>&1 & pids+=($!)
done
for v in "${VARIANTS[@]}"; do
  p=${PORT[$v]}
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
  curl -sf -H 'Host: bench.local' http://127.0.0.1:$p/ >/dev/null || { echo "portico ($v) is not serving"; exit 1; }
done

run_wrk() { # port → "rps p50 p99"
  taskset -c 0 wrk -t1 -c$CONNS -d${DUR}s --latency -H 'Host: bench.local' "http://127.0.0.1:$1/" > "$WORK/wrk.out"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.out")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.out")
  echo "$rps $p50 $p99"
}

for v in "${VARIANTS[@]}"; do
  taskset -c 0 wrk -t1 -c$CONNS -d2s -H 'Host: bench.local' "http://127.0.0.1:${PORT[$v]}/" >/dev/null
done
printf "%-8s %-6s %12s %10s %10s\n" variant round req/s p50 p99
declare -A total=([off]=0 [text]=0 [trace]=0 [all]=0)
for round in 1 2; do
  for v in "${VARIANTS[@]}"; do
    read -r rps p50 p99 < <(run_wrk ${PORT[$v]})
    printf "%-8s %-6s %12s %10s %10s\n" $v $round "$rps" "$p50" "$p99"
    total[$v]=$(python3 -c "print(${total[$v]} + $rps)")
  done
done
for v in "${VARIANTS[@]}"; do
  python3 -c "print(f'$v: {${total[$v]} / 2:.0f} req/s mean, {${total[$v]} / ${total[off]}:.3f} of off')"
done
# Spans exported vs dropped (a dropped span never slowed a request: the queue is bounded).
for v in trace all; do
  curl -s http://127.0.0.1:${ADMIN[$v]}/stats/prometheus | grep '^portico_tracing_spans_total' | sed "s/^/$v: /"
done
