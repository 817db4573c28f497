#!/usr/bin/env bash
# Portico vs nginx as reverse proxies, side by side in one run, on this machine.
#
# One small fast backend (portico-echo) on core 0; each proxy in turn pinned to core 1 with one
# worker; wrk (HTTP/1.1 keep-alive, 64 connections, 10 s) on core 0. Two rounds, alternating.
# Then the resident memory each proxy adds for 2000 idle keep-alive connections. Both run without an
# access log (nginx `access_log off`, portico `--access-log off`): like for like; bench/telemetry-cost.sh
# measures what the log costs.
#
# usage: bench/compare-nginx.sh [DURATION_SECONDS]   (installs nginx and wrk when absent)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=64
IDLE=2000

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 || true

cargo build --release -p portico >/dev/null 2>&1 || cargo build --release -p portico
BIN=target/release
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

BACKEND=18900; PORTICO=18901; NGINX_PORT=18902; ADMIN=18903
taskset -c 0 "$BIN/portico-echo" --listen 127.0.0.1:$BACKEND --name backend --workers 1 2>/dev/null & pids+=($!)

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
PORTICO_LOG=error taskset -c 1 "$BIN/portico" run --config "$WORK/config" --bind 127.0.0.1 \
  --port-map 80=$PORTICO --admin 127.0.0.1:$ADMIN --workers 1 --access-log off >/dev/null & PORTICO_PID=$!; pids+=($PORTICO_PID)

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log error;
events { worker_connections 8192; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
CONF
taskset -c 1 "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null & NGINX_PID=$!; pids+=($NGINX_PID)

for p in $BACKEND $PORTICO $NGINX_PORT; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
curl -sf -H 'Host: bench.local' http://127.0.0.1:$PORTICO/ >/dev/null || { echo "portico is not serving"; exit 1; }
curl -sf -H 'Host: bench.local' http://127.0.0.1:$NGINX_PORT/ >/dev/null || { echo "nginx is not serving"; exit 1; }

run_wrk() { # port → "rps p50 p99"
  taskset -c 0 wrk -t1 -c$CONNS -d${DUR}s --latency -H 'Host: bench.local' "http://127.0.0.1:$1/" > "$WORK/wrk.out"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.out")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.out")
  echo "$rps $p50 $p99"
}

# Warm both up, then alternate.
taskset -c 0 wrk -t1 -c$CONNS -d2s -H 'Host: bench.local' http://127.0.0.1:$PORTICO/ >/dev/null
taskset -c 0 wrk -t1 -c$CONNS -d2s -H 'Host: bench.local' http://127.0.0.1:$NGINX_PORT/ >/dev/null
printf "%-8s %-6s %12s %10s %10s\n" proxy round req/s p50 p99
declare -A total=([portico]=0 [nginx]=0)
for round in 1 2; do
  for proxy in portico nginx; do
    port=$PORTICO; [ $proxy = nginx ] && port=$NGINX_PORT
    read -r rps p50 p99 < <(run_wrk $port)
    printf "%-8s %-6s %12s %10s %10s\n" $proxy $round "$rps" "$p50" "$p99"
    total[$proxy]=$(python3 -c "print(${total[$proxy]} + $rps)")
  done
done
python3 -c "print(f'throughput ratio portico/nginx: {${total[portico]} / ${total[nginx]}:.2f}')"

NGINX_WORKER=$(pgrep -P $NGINX_PID | head -1)
read -r pb pa pk < <(python3 bench/idle_conns.py $PORTICO bench.local $IDLE $PORTICO_PID)
read -r nb na nk < <(python3 bench/idle_conns.py $NGINX_PORT bench.local $IDLE $NGINX_PID $NGINX_WORKER)
echo "idle keep-alive connections: $IDLE"
printf "%-8s rss before %8s KiB  after %8s KiB  per connection %6s KiB\n" portico "$pb" "$pa" "$pk"
printf "%-8s rss before %8s KiB  after %8s KiB  per connection %6s KiB\n" nginx "$nb" "$na" "$nk"
