#!/usr/bin/env bash
# Instructions per request under callgrind: a count that does not move with the machine's load,
# so a change's effect on the request path shows even when req/s are noisy. Portico runs one
# worker under valgrind on core 1, nginx serves a fixed body on core 0, h2load drives N requests
# over 16 keep-alive connections (after a 2000-request warm-up that is not counted).
#
# usage: bench/callgrind.sh PORTICO_BIN [N] [h1|h2c|tcp]    (defaults 20000 h1; STREAMS=8 runs h2c
#        with 8 streams per connection, as the harness does; installs valgrind,
#        nginx and nghttp2-client when absent). Prints instructions per request and the
#        functions with the most instructions of their own; the profile is kept for
#        callgrind_annotate (its path is printed). PORTICO_BIN may be bench/floor's
#        portico-floor (h1 only).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "$1"); N=${2:-20000}; MODE=${3:-h1}
for tool in valgrind:valgrind nginx:nginx h2load:nghttp2-client; do
  command -v "${tool%%:*}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
WORK=$(mktemp -d)
OUT=${CALLGRIND_OUT:-/tmp/portico-callgrind.$MODE.out}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
BACKEND=18930; H1=18931; H2C=18932; ADMIN=18933; TCP=18934
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
mkdir -p "$WORK/config"
cat > "$WORK/config/profile.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: profile, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: $H1, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: $H2C, name: http2, protocol: HTTP2}, hosts: ["*"]}
  - {port: {number: $TCP, name: tcp, protocol: TCP}, hosts: ["*"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: profile, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/profile]
  http: [{route: [{destination: {host: backend.profile}}]}]
  # tcp: the same HTTP/1.1 keep-alive requests relayed as bytes (L4).
  tcp: [{match: [{port: $TCP}], route: [{destination: {host: backend.profile, port: {number: 80}}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.profile]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $BACKEND}}]
YAML
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" & pids+=($!)
if [ "$(basename "$BIN")" = portico-floor ]; then
  # bench/floor in Portico's place (h1 only; its FLOOR_* variables pass through).
  taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" 127.0.0.1:$H1 127.0.0.1:$BACKEND \
    2>"$WORK/valgrind.log" & P=$!; pids+=($P)
else
  PORTICO_LOG=error taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" run \
    --config "$WORK/config" --bind 127.0.0.1 --admin 127.0.0.1:$ADMIN --workers 1 --access-log off \
    2>"$WORK/valgrind.log" & P=$!; pids+=($P)
fi
PORT=$H1; [ "$MODE" = h2c ] && PORT=$H2C; [ "$MODE" = tcp ] && PORT=$TCP
for p in $BACKEND $PORT; do
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.2; done
done
H1FLAG=(--h1); [ "$MODE" = h2c ] && H1FLAG=(-m "${STREAMS:-1}")
taskset -c 0 h2load "${H1FLAG[@]}" -n 2000 -c16 "http://127.0.0.1:$PORT/" >/dev/null
callgrind_control -z "$P" >/dev/null 2>&1
taskset -c 0 h2load "${H1FLAG[@]}" -n "$N" -c16 "http://127.0.0.1:$PORT/" > "$WORK/h2load.out"
grep -q "succeeded, 0 failed" "$WORK/h2load.out" || { cat "$WORK/h2load.out"; exit 1; }
kill -INT "$P"; wait "$P" || true
TOTAL=$(awk '/^totals:/ {print $2}' "$OUT")
echo "profile: $OUT"
python3 -c "print(f'$MODE: {$TOTAL / $N:,.0f} instructions per request ($N requests)')"
echo "most instructions of their own, per request:"
callgrind_annotate --threshold=100 "$OUT" 2>/dev/null | awk -v n="$N" -v total="$TOTAL" '
  /file:function/ {on = 1; next}
  on && $2 ~ /^\(/ {v = $1; gsub(",", "", v); v += 0; if (v < total / 2 && shown < 25) {
    s = $0; sub(/^ *[0-9,]+ \([^)]*\) +/, "", s); sub(/^[^:]*:/, "", s)
    printf "%9.0f  %s\n", v / n, substr(s, 1, 120); shown++ } }'
