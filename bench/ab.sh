#!/usr/bin/env bash
# Two portico binaries side by side (before/after a change), one pinned core each in turn, wrk on
# the other core: small GETs and 64 KiB POSTs over HTTP/1.1 keep-alive, two rounds alternating.
#
# It also prints each gateway's CPU time per request (from /proc), which stays comparable on a
# busy machine when req/s do not.
#
# usage: bench/ab.sh PORTICO_A PORTICO_B [DURATION_SECONDS]   (installs wrk when absent)
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; DUR=${3:-10}
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
ECHO=${PORTICO_ECHO:-target/release/portico-echo}
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
BACKEND=18920; PA=18921; PB=18922
taskset -c 0 "$ECHO" --listen 127.0.0.1:$BACKEND --name backend --workers 1 2>/dev/null & pids+=($!)
mkdir -p "$WORK/config"
cat > "$WORK/config/ab.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ab, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ab, namespace: default}
spec:
  hosts: ["ab.local"]
  gateways: [istio-system/ab]
  http: [{route: [{destination: {host: backend.ab}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.ab]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $BACKEND}}]
YAML
PORTICO_LOG=error taskset -c 1 "$A" run --config "$WORK/config" --bind 127.0.0.1 --port-map 80=$PA \
  --admin 127.0.0.1:18923 --workers 1 --access-log off >/dev/null & PID_A=$!; pids+=($PID_A)
PORTICO_LOG=error taskset -c 1 "$B" run --config "$WORK/config" --bind 127.0.0.1 --port-map 80=$PB \
  --admin 127.0.0.1:18924 --workers 1 --access-log off >/dev/null & PID_B=$!; pids+=($PID_B)
for p in $BACKEND $PA $PB; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
printf 'wrk.method = "POST"\nwrk.body = string.rep("x", 65536)\n' > "$WORK/post.lua"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # port, pid, extra wrk args → "rps p99 cpu-µs/request"
  local port=$1 pid=$2; shift 2
  local t0 t1
  t0=$(ticks "$pid")
  taskset -c 0 wrk -t1 -c64 -d${DUR}s --latency -H 'Host: ab.local' "$@" "http://127.0.0.1:$port/" > "$WORK/w.out"
  t1=$(ticks "$pid")
  local req
  req=$(awk '/requests in/ {print $1}' "$WORK/w.out")
  local us
  us=$(python3 -c "print(f'{($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / $req:.1f}')")
  echo "$(awk '/Requests\/sec/ {print $2}' "$WORK/w.out") $(awk '$1=="99%" {print $2}' "$WORK/w.out") $us"
}
printf "%-6s %-5s %-5s %12s %10s %12s\n" case round bin req/s p99 cpu-us/req
for kind in get post; do
  extra=(); [ $kind = post ] && extra=(-s "$WORK/post.lua")
  for round in 1 2; do
    for bin in A B; do
      port=$PA; pid=$PID_A; [ $bin = B ] && { port=$PB; pid=$PID_B; }
      read -r rps p99 ipr < <(run $port $pid "${extra[@]}")
      printf "%-6s %-5s %-5s %12s %10s %12s\n" $kind $round $bin "$rps" "$p99" "$ipr"
    done
  done
done
