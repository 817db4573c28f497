#!/usr/bin/env bash
# Where a proxied request's CPU goes, Portico beside the best peer as a proxy: user and system
# time of the proxy per request (from /proc), its socket calls per request (perf tracepoints,
# when perf is there) and the TCP segments and bytes per request (nstat, when it is there).
# Each proxy runs one worker on core 1; nginx as the origin and the load share core 0.
#   h1:  HTTP/1.1 keep-alive, wrk -c64, beside nginx;
#   h2c: HTTP/2 prior knowledge, h2load -c8 -m8 (as the harness), beside HAProxy;
#   tcp: the h1 load relayed as bytes (an L4 TCP route), beside HAProxy in tcp mode.
#
# usage: bench/cpu-split.sh PORTICO_BIN [SECONDS] [h1|h2c|tcp]     (default 8 s per proxy, h1)
#        PEER=h2o runs h2o (the harness's best h2c peer) instead of HAProxy for h2c;
#        H2LOAD_EXTRA adds h2load options (the harness's are "--log-file=FILE --warm-up-time 1");
#        FLOOR=1 (h1 only) also measures bench/floor, the least a tokio HTTP/1.1 proxy can do.
# Only 127.0.0.1 is contacted; only processes started here are stopped.
set -uo pipefail
BIN=$(realpath "$1"); DUR=${2:-8}; MODE=${3:-h1}
for tool in nginx:nginx wrk:wrk haproxy:haproxy h2load:nghttp2-client; do
  command -v "${tool%%:*}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
W=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
ORIGIN=19000; NGINX=19001; PORTICO=19002; ADMIN=19003
cat > "$W/origin.conf" <<CONF
worker_processes 1; daemon off; pid $W/origin.pid; error_log $W/origin.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; client_body_temp_path $W;
  server { listen 127.0.0.1:$ORIGIN; location / { return 200 "Hello, world\n"; } } }
CONF
cat > "$W/proxy.conf" <<CONF
worker_processes 1; daemon off; pid $W/proxy.pid; error_log $W/proxy.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; client_body_temp_path $W; proxy_temp_path $W;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 512; }
  server { listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
mkdir -p "$W/config"
PROTO=HTTP; ROUTE=http; HAPROXY_MODE=http; BIND="proto h2"
[ "$MODE" = h2c ] && PROTO=HTTP2
[ "$MODE" = tcp ] && { PROTO=TCP; ROUTE=tcp; HAPROXY_MODE=tcp; BIND=""; }
cat > "$W/config/split.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: split, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: $PORTICO, name: port, protocol: $PROTO}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/split]
  $ROUTE: [{route: [{destination: {host: origin.split, port: {number: 80}}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: origin, namespace: default}
spec:
  hosts: [origin.split]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $ORIGIN}}]
YAML
cat > "$W/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode $HAPROXY_MODE
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$NGINX $BIND
  default_backend be
backend be
  server s1 127.0.0.1:$ORIGIN maxconn 9000
CONF
cat > "$W/h2o.conf" <<CONF
num-threads: 1
listen: {host: 127.0.0.1, port: $NGINX}
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:$ORIGIN/
        proxy.timeout.keepalive: 300000
CONF
# load SECONDS PORT: prints requests per second.
load() {
  if [ "$MODE" = h2c ]; then
    taskset -c 0 h2load -t1 -c8 -m8 -D "$1" ${H2LOAD_EXTRA:-} "http://127.0.0.1:$2/" | awk '/^finished in/ {print $4}'
  else
    taskset -c 0 wrk -t1 -c64 -d"$1s" "http://127.0.0.1:$2/" | awk '/^Requests\/sec/ {print $2}'
  fi
}
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk "{print \$$FIELD}" "/proc/$p/stat"))); done; echo $t; }

# measure NAME PID PORT: a 3 s warm-up, then DUR seconds measured.
measure() {
  local name=$1 port=$3 procs
  procs="$2 $(pgrep -P "$2" | tr '\n' ' ')"
  load 3 "$port" >/dev/null
  local u0 s0 u1 s1 req perf_pid=""
  u0=$(FIELD=14 cpu_ticks $procs); s0=$(FIELD=15 cpu_ticks $procs)
  if command -v perf >/dev/null; then
    perf stat -x, -o "$W/perf.$name" -p "$(echo $procs | tr ' ' ',')" -e raw_syscalls:sys_enter -e context-switches -e sched:sched_waking -e ipi:ipi_send_cpu \
      -e syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait \
      2>/dev/null & perf_pid=$!
  fi
  command -v nstat >/dev/null && nstat -n
  req=$(load "$DUR" "$port")
  [ -n "$perf_pid" ] && { kill -INT "$perf_pid"; wait "$perf_pid"; }
  command -v nstat >/dev/null && nstat > "$W/nstat.$name"
  u1=$(FIELD=14 cpu_ticks $procs); s1=$(FIELD=15 cpu_ticks $procs)
  python3 - "$name" "$req" "$DUR" "$((u1 - u0))" "$((s1 - s0))" "$W" <<'PY'
import os, sys
name, rate, dur, user, system, work = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), *map(int, sys.argv[4:6]), sys.argv[6]
n = rate * dur
hz = os.sysconf("SC_CLK_TCK")
u, s = user / hz / n * 1e6, system / hz / n * 1e6
print(f"{name}: {rate:,.0f} req/s   per request: user {u:.1f} µs, system {s:.1f} µs, total {u + s:.1f} µs")
try:
    for line in open(f"{work}/perf.{name}"):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            print(f"    {f[2]:34} {float(f[0]) / n:6.2f} per request")
except FileNotFoundError:
    pass
try:
    for line in open(f"{work}/nstat.{name}"):
        f = line.split()
        if len(f) > 1 and f[0] in ("TcpInSegs", "TcpOutSegs", "IpExtOutOctets"):
            print(f"    {f[0]:34} {int(f[1]) / n:6.2f} per request")
except FileNotFoundError:
    pass
PY
}

taskset -c 0 nginx -c "$W/origin.conf" -p "$W" & pids+=($!)
wait_port $ORIGIN
if [ "$MODE" = h2c ] && [ "${PEER:-}" = h2o ]; then
  taskset -c 1 h2o -c "$W/h2o.conf" & NP=$!; pids+=($NP)
  wait_port $NGINX
  measure h2o $NP $NGINX
elif [ "$MODE" != h1 ]; then
  taskset -c 1 haproxy -db -f "$W/haproxy.cfg" & NP=$!; pids+=($NP)
  wait_port $NGINX
  measure haproxy $NP $NGINX
else
  taskset -c 1 nginx -c "$W/proxy.conf" -p "$W" & NP=$!; pids+=($NP)
  wait_port $NGINX
  measure nginx $NP $NGINX
fi
kill $NP
if [ "${FLOOR:-0}" = 1 ] && [ "$MODE" = h1 ]; then
  FLOOR_DIR=$(cd "$(dirname "$0")/floor" && pwd)
  (cd "$FLOOR_DIR" && { cargo build --release --offline -q 2>/dev/null || cargo build --release -q; })
  taskset -c 1 "$FLOOR_DIR/target/release/portico-floor" 127.0.0.1:$NGINX 127.0.0.1:$ORIGIN & FP=$!; pids+=($FP)
  wait_port $NGINX
  measure floor $FP $NGINX
  kill $FP
fi
PORTICO_LOG=error taskset -c 1 "$BIN" run --config "$W/config" --bind 127.0.0.1 --admin 127.0.0.1:$ADMIN \
  --workers 1 --access-log off & PP=$!; pids+=($PP)
wait_port $PORTICO
measure portico $PP $PORTICO
