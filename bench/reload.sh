#!/usr/bin/env bash
# What a config change costs, in time and in served requests.
#
# 1. Compile and swap: N VirtualServices (default 10,000, one host and two routes each, a 90/10
#    split, header matches, retries and a timeout) in one file, on one Gateway server; the first
#    one's split changes CHANGES times (one application's change, as a GitOps commit makes it).
#    Prints the median of each step from the gateway's `config applied` log line: reading and
#    parsing the YAML, validating and compiling, swapping the snapshot in, and the analyzers
#    (which run after the swap).
# 2. Reload under load: wrk (64 connections) on one route, first with no change, then while the
#    config is rewritten every INTERVAL seconds; both with the small config (one VirtualService)
#    and with the N-VirtualService one. Prints req/s and the dip.
#
# The gateway runs one worker pinned to core 1; nginx (the backend) and wrk share core 0. The
# control thread (file watch, parse, compile) is pinned with the worker, so the dip under large
# reloads is what one core pays for them; on a machine with a spare core it does not compete.
#
# usage: bench/reload.sh [N] [CHANGES] [SECONDS] [INTERVAL]   (defaults 10000 5 10 1; installs
#        wrk and nginx when absent; SKIP_LOAD=1 stops after step 1). Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; CHANGES=${2:-5}; SECS=${3:-10}; INTERVAL=${4:-1}
for tool in wrk:wrk nginx:nginx; do
  command -v "${tool%%:*}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
[ -x target/release/portico ] || cargo build --release -p portico
BIN=$PWD/target/release/portico
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
BACKEND=18970; HTTP=18971; ADMIN=18972

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
  uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello world\n"; } }
}
CONF

# write_config COUNT WEIGHT: the Gateway, the backend and COUNT VirtualServices (the first with a
# WEIGHT/100-WEIGHT split), written
# atomically (the watcher never reads half a file). Each variant is generated once, on core 0,
# and then only copied: a rewrite under load costs the gateway's core nothing but the reload.
make_variant() {
  mkdir -p "$WORK/config" "$WORK/variants"
  local v="$WORK/variants/$1-$2.yaml"
  [ -f "$v" ] || taskset -c 0 python3 - "$1" "$2" "$v" "$HTTP" "$BACKEND" <<'PY'
import sys
count, weight, path, http, backend = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
out = [f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - {{port: {{number: {http}, name: http, protocol: HTTP}}, hosts: ["*"]}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.bench]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend}}}}}]
"""]
for i in range(count):
    # A change is one application's: only the first VirtualService's split moves.
    w = weight if i == 0 else 90
    out.append(f"""---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs-{i}, namespace: default}}
spec:
  hosts: ["svc-{i}.example.com"]
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /api/{i}}}}}, {{headers: {{x-canary: {{exact: "yes"}}}}}}]
    route:
    - {{destination: {{host: backend.bench, port: {{number: 80}}}}, weight: {w}}}
    - {{destination: {{host: backend.bench, port: {{number: 80}}}}, weight: {100 - w}}}
    retries: {{attempts: 3, retryOn: "5xx,connect-failure"}}
    timeout: 5s
  - route: [{{destination: {{host: backend.bench}}}}]
""")
with open(path, "w") as f:
    f.write("".join(out))
PY
}
write_config() {
  make_variant "$1" "$2"
  taskset -c 0 cp "$WORK/variants/$1-$2.yaml" "$WORK/config/all.yaml.tmp"
  mv "$WORK/config/all.yaml.tmp" "$WORK/config/all.yaml"
}

applied() { grep -ac "config applied" "$WORK/portico.log" || true; }
# wait_applied COUNT: until the gateway logged COUNT `config applied` lines.
wait_applied() {
  for _ in $(seq 600); do [ "$(applied)" -ge "$1" ] && return 0; sleep 0.1; done
  echo "the gateway never applied config #$1" >&2; tail -20 "$WORK/portico.log" >&2; exit 1
}

taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" & pids+=($!)
# load COUNT LABEL: baseline and under-reload req/s with COUNT VirtualServices.
load() {
  local count=$1 label=$2 base under n
  # The two variants the rewrites alternate between, made before anything is measured.
  make_variant "$count" 10; make_variant "$count" 20
  n=$(applied)
  # A weight no earlier step wrote: a real change.
  write_config "$count" 95
  wait_applied $((n + 1))
  taskset -c 0 wrk -t1 -c64 -d2s -H 'Host: svc-0.example.com' "http://127.0.0.1:$HTTP/" >/dev/null
  base=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" -H 'Host: svc-0.example.com' "http://127.0.0.1:$HTTP/" |
    awk '/Requests\/sec/ {print $2}')
  taskset -c 0 wrk -t1 -c64 -d"${SECS}s" -H 'Host: svc-0.example.com' "http://127.0.0.1:$HTTP/" > "$WORK/wrk.out" &
  local w=$! i=0
  while kill -0 $w 2>/dev/null; do
    sleep "$INTERVAL"; i=$((i + 1)); write_config "$count" $((10 + 10 * (i % 2)))
  done
  wait $w || true
  under=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
  local errors; errors=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk.out" | tr '\n' ' ')
  python3 -c "
b, u = $base, $under
print(f'$label: {b:,.0f} req/s steady, {u:,.0f} req/s with a rewrite every ${INTERVAL} s ($i rewrites): dip {(1 - u / b) * 100:.1f}%  ${errors:-no errors}')"
}

write_config "$N" 90
PORTICO_LOG=info taskset -c 1 "$BIN" run --config "$WORK/config" --bind 127.0.0.1 --admin 127.0.0.1:$ADMIN \
  --workers 1 --access-log off > "$WORK/portico.log" 2>&1 & pids+=($!)
wait_applied 1
echo "== compile and swap: $N VirtualServices, $CHANGES changes"
for i in $(seq "$CHANGES"); do
  write_config "$N" $((50 + i))
  wait_applied $((i + 1))
done
grep -a "config applied" "$WORK/portico.log" | tail -n "$CHANGES" | python3 -c "
import re, statistics, sys
rows = [dict(re.findall(r'(\w+_ms)=([0-9.]+)', l)) for l in sys.stdin]
for k in ['load_ms', 'compile_ms', 'swap_ms', 'analyze_ms']:
    v = sorted(float(r[k]) for r in rows)
    print(f'{k:>11}: median {statistics.median(v):8.1f}  min {v[0]:8.1f}  max {v[-1]:8.1f}')
c = sorted(float(r['compile_ms']) + float(r['swap_ms']) for r in rows)
print(f'compile + swap: median {statistics.median(c):.1f} ms')"
echo "== reload under load (wrk -c64, ${SECS}s each)"
[ -n "${SKIP_LOAD:-}" ] && exit 0
load 1 "1 VirtualService"
load "$N" "$N VirtualServices"
