#!/usr/bin/env bash
# Quick start: builds Portico, starts three demo backends and the gateway on localhost:8080.
# Then, in another terminal:
#   curl -H 'Host: shop.example.com' http://127.0.0.1:8080/reviews      # reviews-v1 (90%) or reviews-v2 (10%)
#   curl -H 'Host: shop.example.com' -H 'x-canary: always' http://127.0.0.1:8080/reviews   # always reviews-v2
#   curl -H 'Host: shop.example.com' http://127.0.0.1:8080/ratings      # ratings
#   curl http://127.0.0.1:15000/config_dump                             # what is being served
# Edit examples/quickstart/shop.yaml while it runs: the change is live within a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p portico
bin=target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
"$bin/portico-echo" --listen 127.0.0.1:18081 --name reviews-v1 & pids+=($!)
"$bin/portico-echo" --listen 127.0.0.1:18082 --name reviews-v2 & pids+=($!)
"$bin/portico-echo" --listen 127.0.0.1:18083 --name ratings & pids+=($!)
"$bin/portico" run --config examples/quickstart --bind 127.0.0.1 --port-map 80=8080 --admin 127.0.0.1:15000 & pids+=($!)
sleep 1
echo
echo "Portico is serving shop.example.com on http://127.0.0.1:8080 — try:"
echo "  for i in \$(seq 20); do curl -s -H 'Host: shop.example.com' http://127.0.0.1:8080/reviews; done | sort | uniq -c"
wait "${pids[-1]}"
