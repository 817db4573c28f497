#!/usr/bin/env bash
# Large bodies, side by side with nginx: the matrix (bench/matrix.sh) sends 13-byte bodies,
# so streaming, flow control and TLS records of real payloads are measured here. An nginx origin
# serves a 64 KiB and a 1 MiB file, and takes uploads of the same sizes (it reads each whole
# before answering: a mirror subrequest makes it, then a sink answers without the body). Portico
# and nginx (as a reverse proxy, its defaults: proxy buffering on, keep-alive upstream pool;
# uploads streamed, `proxy_request_buffering off`, as Portico streams them) each run one worker
# pinned to core 1; the origin and the load generators share core 0, as in the harness. Per proxy
# core = requests per second ÷ core 1's busy share (user, system, irq and softirq from
# /proc/stat), the harness's measure.
#
# usage: bench/bodies.sh [SECONDS]   (default 8 per run; installs nginx, wrk and nghttp2-client
#        when absent; PORTICO_BIN runs another build). Only 127.0.0.1 is contacted. Prints one
#        line per run and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-8}
for tool in nginx:nginx wrk:wrk h2load:nghttp2-client openssl:openssl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
BIN=${PORTICO_BIN:-$PWD/target/release/portico}
[ -x "$BIN" ] || cargo build --release -p portico
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ORIGIN=19100; SINK=19104; NGX_H1=19101; NGX_H2C=19102; NGX_TLS=19103; P_H1=19111; P_H2C=19112; P_TLS=19113; ADMIN=19119

head -c 65536 /dev/urandom > "$WORK/64k"
head -c 1048576 /dev/urandom > "$WORK/1m"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/key.pem" \
  -out "$WORK/cert.pem" -days 2 -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
TEMPS="client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK; uwsgi_temp_path $WORK; scgi_temp_path $WORK;"
cat > "$WORK/origin.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/origin.pid; error_log $WORK/origin.err warn;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000; keepalive_timeout 300s; $TEMPS
  client_max_body_size 4m; client_body_buffer_size 2m;
  upstream sink { server 127.0.0.1:$SINK; keepalive 64; }
  server { listen 127.0.0.1:$SINK; location / { return 200 "ok\n"; } }
  server {
    listen 127.0.0.1:$ORIGIN; location = /64k { alias $WORK/64k; } location = /1m { alias $WORK/1m; }
    location = /up { mirror /read-whole; proxy_pass http://sink; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_pass_request_body off; proxy_set_header Content-Length ""; }
    location = /read-whole { internal; return 204; }
  }
}
CONF
cat > "$WORK/proxy.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/proxy.pid; error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s; $TEMPS
  upstream be { server 127.0.0.1:$ORIGIN; keepalive 512; }
  server {
    listen 127.0.0.1:$NGX_H1; listen 127.0.0.1:$NGX_H2C http2; listen 127.0.0.1:$NGX_TLS ssl http2;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_session_cache shared:SSL:10m;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location = /up { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_request_buffering off; client_max_body_size 4m; }
  }
}
CONF
mkdir -p "$WORK/config"
cat > "$WORK/config/bodies.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bodies, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: $P_H1, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: $P_H2C, name: http2, protocol: HTTP2}, hosts: ["*"]}
  - port: {number: $P_TLS, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, serverCertificate: $WORK/cert.pem, privateKey: $WORK/key.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bodies, namespace: default}
spec:
  hosts: ["*"]
  gateways: [bodies]
  http: [{route: [{destination: {host: origin.bodies, port: {number: 80}}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: origin, namespace: default}
spec:
  hosts: [origin.bodies]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $ORIGIN}}]
YAML
taskset -c 0 nginx -c "$WORK/origin.conf" -p "$WORK" & pids+=($!)
taskset -c 1 nginx -c "$WORK/proxy.conf" -p "$WORK" & pids+=($!)
PORTICO_LOG=error taskset -c 1 "$BIN" run --config "$WORK/config" --bind 127.0.0.1 --admin 127.0.0.1:$ADMIN \
  --workers 1 --access-log off >"$WORK/portico.log" 2>&1 & pids+=($!)
for p in $ORIGIN $NGX_H1 $P_H1 $P_TLS; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

busy() { awk '/^cpu1 /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# One run: prints requests per second and core 1's busy share. Uploads (`up1` over HTTP/1.1,
# `up2` over h2c) post the file named after the path's `+`.
measure() {
  local kind=$1 url=${2%+*} file=$WORK/${2##*+} out b0 t0 b1 t1
  load() {
    case $kind in
      wrk) taskset -c 0 wrk -t1 -c16 -d"$1"s "$url" | awk '/Requests\/sec/ {print $2}' ;;
      h2) taskset -c 0 h2load -c8 -m4 -D "$1" "$url" | awk '/^finished in/ {print $4}' ;;
      up1) taskset -c 0 h2load --h1 -c8 -m1 -D "$1" -d "$file" "$url" | awk '/^finished in/ {print $4}' ;;
      up2) taskset -c 0 h2load -c8 -m1 -D "$1" -d "$file" "$url" | awk '/^finished in/ {print $4}' ;;
    esac
  }
  load 2 >/dev/null
  read -r b0 t0 < <(busy)
  out=$(load "$DUR")
  read -r b1 t1 < <(busy)
  echo "$out $(( (b1 - b0) * 1000 / (t1 - t0) ))"
}
printf '%-28s %10s %10s %8s\n' "per proxy core" nginx Portico ratio
for row in "HTTP/1.1 64 KiB|wrk|http|$NGX_H1|$P_H1|/64k" "HTTP/1.1 1 MiB|wrk|http|$NGX_H1|$P_H1|/1m" \
           "h2c 64 KiB|h2|http|$NGX_H2C|$P_H2C|/64k" "h2c 1 MiB|h2|http|$NGX_H2C|$P_H2C|/1m" \
           "HTTPS/1.1 64 KiB|wrk|https|$NGX_TLS|$P_TLS|/64k" "h2 over TLS 64 KiB|h2|https|$NGX_TLS|$P_TLS|/64k" \
           "upload HTTP/1.1 64 KiB|up1|http|$NGX_H1|$P_H1|/up+64k" "upload HTTP/1.1 1 MiB|up1|http|$NGX_H1|$P_H1|/up+1m" \
           "upload h2c 64 KiB|up2|http|$NGX_H2C|$P_H2C|/up+64k" "upload h2c 1 MiB|up2|http|$NGX_H2C|$P_H2C|/up+1m"; do
  IFS='|' read -r name kind scheme nport pport path <<<"$row"
  read -r n_rps n_busy < <(measure "$kind" "$scheme://127.0.0.1:$nport$path")
  read -r p_rps p_busy < <(measure "$kind" "$scheme://127.0.0.1:$pport$path")
  python3 -c "
n = $n_rps / ($n_busy / 1000); p = $p_rps / ($p_busy / 1000)
print(f'{\"$name\":28s} {n:10,.0f} {p:10,.0f} {p / n:8.2f}   (req/s {$n_rps:,.0f} / {$p_rps:,.0f}, core 1 busy {$n_busy / 10:.0f}% / {$p_busy / 10:.0f}%)')"
done
