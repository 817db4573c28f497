#!/usr/bin/env bash
# testssl.sh (Debian's package) against a Portico HTTPS server with default TLS settings:
# the seed example's 443 server (SIMPLE, credentialName my-cert-secret). Prints testssl's
# findings for protocols, cipher categories, vulnerabilities and the rating.
#
# usage: bench/testssl.sh            (installs testssl.sh when absent)
#        PORTICO_BIN=target/debug/portico bench/testssl.sh   (skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v testssl >/dev/null 2>&1 && ! command -v testssl.sh >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >/dev/null
fi
TESTSSL=$(command -v testssl || command -v testssl.sh)

BIN=${PORTICO_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release -p portico >/dev/null 2>&1 || cargo build --release -p portico
  BIN=target/release/portico
fi

WORK=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

HTTPS=18943; HTTP=18980; ADMIN=18990
"$BIN" run --config examples/seed --bind 127.0.0.1 \
  --port-map 443=$HTTPS --port-map 80=$HTTP --admin 127.0.0.1:$ADMIN \
  2>"$WORK/portico.log" &
pid=$!
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$HTTPS) 2>/dev/null && break
  sleep 0.1
done

# --ip: the name is resolved to the local gateway, SNI still says dev.example.com.
"$TESTSSL" --quiet --color 0 --warnings off --ip 127.0.0.1 \
  --protocols --std --server-preference --server-defaults --vulnerable \
  "https://dev.example.com:$HTTPS/" >"$WORK/out.txt" 2>&1 || true

if ! kill -0 "$pid" 2>/dev/null; then
  echo "portico exited:"; cat "$WORK/portico.log"; exit 1
fi
mkdir -p target && cp "$WORK/out.txt" target/testssl-full.txt

echo "== testssl.sh $("$TESTSSL" --version 2>/dev/null | grep -m1 -oE '[0-9]+\.[0-9]+(\.[0-9]+)?[^ ]*' || true) against Portico (default TLS settings)"
sed -n "/Testing protocols/,/Testing server defaults/p" "$WORK/out.txt" | grep -v "^ *$" | grep -v "Testing server defaults" || true
sed -n "/Testing vulnerabilities/,/Running client simulations\|Rating (experimental)\|Done /p" "$WORK/out.txt" | grep -v "^ *$" || true
echo "(full report: target/testssl-full.txt)"
