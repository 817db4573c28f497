#!/usr/bin/env bash
# Soak and overload: what the fast tests cannot afford.
#
# 1. Reload soak: wrk keeps requesting a route that never changes while the config changes
#    CHANGES times (weights, a route added/removed, the TLS certificate, a listener added and
#    removed). Prints requests, failures (non-2xx + socket errors), and the gateway's resident
#    memory and open file descriptors before, right after, and after settling.
# 2. 1,000 slow connections (slowloris heads a byte a second, reopened when the gateway closes
#    them) and 200 slow POSTs, while wrk measures normal clients: req/s, p99, errors, gateway CPU.
# 3. HTTP/2 floods (rapid reset, CONTINUATION, PING, SETTINGS) on fresh connections, each while
#    wrk measures normal clients: GOAWAYs seen, gateway CPU and memory, wrk p99 and errors.
#
# usage: bench/soak.sh [CHANGES] [SECONDS_PER_PHASE]   (installs wrk and openssl when absent)
# Uses target/release when built with `cargo build --release -p portico`, else builds it;
# PORTICO_BIN_DIR=target/debug runs a debug build (figures then say little about speed).
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${1:-100}
SECS=${2:-15}

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
ulimit -n 65536 || true

BIN=${PORTICO_BIN_DIR:-target/release}
if [ "$BIN" = target/release ]; then
  cargo build --release -p portico >/dev/null 2>&1 || cargo build --release -p portico
fi
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

BACKEND_A=18910; BACKEND_B=18911; HTTP=18912; HTTPS=18913; EXTRA=18914; ADMIN=18915
"$BIN/portico-echo" --listen 127.0.0.1:$BACKEND_A --name a 2>/dev/null & pids+=($!)
"$BIN/portico-echo" --listen 127.0.0.1:$BACKEND_B --name b 2>/dev/null & pids+=($!)

mkdir -p "$WORK/config"
cert() { # a fresh self-signed certificate as a kubernetes.io/tls Secret
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=secure.local" -addext "subjectAltName=DNS:secure.local" \
    -keyout "$WORK/k.pem" -out "$WORK/c.pem" >/dev/null 2>&1
  cat > "$WORK/config/secret.yaml.tmp" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: soak-cert, namespace: istio-system}
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$WORK/c.pem")
  tls.key: $(base64 -w0 "$WORK/k.pem")
YAML
  mv "$WORK/config/secret.yaml.tmp" "$WORK/config/secret.yaml"
}
gateway() { # $1: with the extra listener (1) or not (0)
  local extra=""
  [ "$1" = 1 ] && extra="
  - {port: {number: 8081, name: extra, protocol: HTTP}, hosts: [\"*\"]}"
  cat > "$WORK/config/gateway.yaml.tmp" <<YAML
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: soak, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["secure.local"]
    tls: {mode: SIMPLE, credentialName: soak-cert}$extra
YAML
  mv "$WORK/config/gateway.yaml.tmp" "$WORK/config/gateway.yaml"
}
routes() { # $1: weight of a on flip.local, $2: with the /extra route (1) or not (0)
  local extra=""
  [ "$2" = 1 ] && extra="
  - match: [{uri: {prefix: /extra}}]
    route: [{destination: {host: b.soak}}]"
  cat > "$WORK/config/routes.yaml.tmp" <<YAML
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: stable, namespace: default}
spec:
  hosts: [stable.local, secure.local]
  gateways: [istio-system/soak]
  http: [{route: [{destination: {host: a.soak}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flip, namespace: default}
spec:
  hosts: [flip.local]
  gateways: [istio-system/soak]
  http:$extra
  - route:
    - {destination: {host: a.soak}, weight: $1}
    - {destination: {host: b.soak}, weight: $((100 - $1))}
YAML
  mv "$WORK/config/routes.yaml.tmp" "$WORK/config/routes.yaml"
}
cat > "$WORK/config/services.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: default}
spec:
  hosts: [a.soak]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $BACKEND_A}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: default}
spec:
  hosts: [b.soak]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: $BACKEND_B}}]
YAML
cert; gateway 0; routes 50 0

PORTICO_LOG=error "$BIN/portico" run --config "$WORK/config" --bind 127.0.0.1 \
  --port-map 80=$HTTP,443=$HTTPS,8081=$EXTRA --admin 127.0.0.1:$ADMIN --access-log off \
  >/dev/null & GW=$!; pids+=($GW)
for _ in $(seq 100); do curl -sf -H 'Host: stable.local' http://127.0.0.1:$HTTP/ >/dev/null && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2}' /proc/$GW/status; }
fds() { ls /proc/$GW/fd | wc -l; }
cpu_ticks() { awk '{print $14 + $15}' /proc/$GW/stat; }
hz=$(getconf CLK_TCK)
generation() { curl -s http://127.0.0.1:$ADMIN/stats/prometheus | awk '/^portico_config_generation / {print $2}'; }
wrk_summary() { # file → "requests failed p99"
  local req non2xx sock p99
  req=$(awk '/requests in/ {print $1}' "$1")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$1"); non2xx=${non2xx:-0}
  sock=$(awk -F'[ ,]+' '/Socket errors/ {print $5 + $7 + $9 + $11}' "$1"); sock=${sock:-0}
  p99=$(awk '$1=="99%" {print $2}' "$1")
  echo "$req $((non2xx + sock)) $p99"
}

# Warm up, then the baseline.
wrk -t1 -c16 -d3s -H 'Host: stable.local' http://127.0.0.1:$HTTP/ >/dev/null
sleep 1
rss0=$(rss); fds0=$(fds); gen0=$(generation)

echo "== reload soak: $CHANGES config changes under constant load"
interval=$(python3 -c "print(max(0.25, $SECS * 2 / $CHANGES))")
dur=$(python3 -c "import math; print(math.ceil($CHANGES * $interval) + 4)")
wrk -t1 -c32 -d${dur}s --latency -H 'Host: stable.local' http://127.0.0.1:$HTTP/ > "$WORK/soak.wrk" &
WRK=$!
sleep 2
for i in $(seq "$CHANGES"); do
  case $((i % 4)) in
    0) routes $(( (i * 37) % 101 )) 0 ;;
    1) routes 50 $((i % 8 == 1 ? 1 : 0)) ;;
    2) cert ;;
    3) gateway $(( (i / 4) % 2 )) ;;
  esac
  sleep "$interval"
done
wait $WRK
sleep 2
gen1=$(generation)
rss1=$(rss); fds1=$(fds)
curl -sf --resolve secure.local:$HTTPS:127.0.0.1 -k https://secure.local:$HTTPS/ >/dev/null && tls=ok || tls=FAILED
read -r req failed p99 < <(wrk_summary "$WORK/soak.wrk")
echo "requests $req  failed $failed  p99 $p99  config generations $gen0 -> $gen1  https after: $tls"
# A second round of the same changes: memory must come back to the same plateau.
for i in $(seq "$CHANGES"); do
  case $((i % 4)) in 0) routes $(( (i * 37) % 101 )) 0 ;; 1) routes 50 0 ;; 2) cert ;; 3) gateway $(( (i / 4) % 2 )) ;; esac
  sleep 0.05
done
sleep 3
rss2=$(rss); fds2=$(fds)
echo "rss KiB: before $rss0  after $CHANGES changes $rss1  after $((2 * CHANGES)) changes $rss2"
echo "open fds: before $fds0  after $fds1  after $fds2"

measure() { # $1: label; runs wrk for SECS while the hostile load (already started) runs
  local t0 t1 peak=0 r
  t0=$(cpu_ticks)
  wrk -t1 -c16 -d${SECS}s --latency -H 'Host: stable.local' http://127.0.0.1:$HTTP/ > "$WORK/m.wrk" &
  local w=$!
  while kill -0 $w 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.5; done
  t1=$(cpu_ticks)
  read -r req failed p99 < <(wrk_summary "$WORK/m.wrk")
  local rps cpu
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/m.wrk")
  cpu=$(python3 -c "print(f'{($t1 - $t0) / $hz / $SECS * 100:.0f}%')")
  printf "%-34s req/s %9s  p99 %9s  failed %5s  gateway cpu %5s  peak rss %7s KiB\n" "$1" "$rps" "$p99" "$failed" "$cpu" "$peak"
}

echo "== normal clients (wrk -c16, ${SECS}s) under hostile load"
measure "no attack"
python3 bench/hostile.py slowloris $HTTP 1000 $((SECS + 2)) > "$WORK/slow.out" & S1=$!
python3 bench/hostile.py slowpost $HTTP 200 $((SECS + 2)) > "$WORK/post.out" & S2=$!
sleep 2
measure "1000 slowloris + 200 slow POST"
wait $S1 $S2
echo "   slowloris: opened/closed by gateway $(cat "$WORK/slow.out");  slow POST: $(cat "$WORK/post.out")"
for kind in rapid-reset continuation ping settings; do
  python3 bench/hostile.py h2 $kind $HTTP $SECS > "$WORK/flood.out" & F=$!
  measure "h2 $kind flood"
  wait $F
  read -r c g s < "$WORK/flood.out"
  echo "   $kind: connections $c  GOAWAY seen $g"
done
echo "rss after everything: $(rss) KiB  open fds: $(fds)"
