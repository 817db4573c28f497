#!/usr/bin/env python3
"""The performance issue's table from one harness result file: per proxy core, Portico's figure,
the best peer's (named), and Portico / best (≥ 1 is better for throughput; ≤ 1 for latency and
memory). Per-core throughput is req/s divided by the busy fraction of the proxy's core, as the
harness's summarize.py computes it."""
import json
import sys

PEERS = ["nginx", "haproxy", "h2o", "pingora", "pingora-rustls", "caddy"]


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") != "run" or r.get("error") or r.get("rps") is None and "bytes_per_conn" not in r:
                continue
            rows[(r["proxy"], r["scenario"])] = r
    return rows


def per_core(r):
    if not r or not r.get("rps") or not r.get("cpu_util"):
        return None
    busy = r["cpu_util"].get("1")
    return r["rps"] / (busy / 100.0) if busy else None


def fmt(v, unit=""):
    if v is None:
        return "–"
    if unit == "B":
        return f"{v / 1024:.1f} KiB" if v >= 1024 else f"{v:.0f} B"
    if unit == "us":
        return f"+{v:.0f} µs"
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def main():
    rows = load(sys.argv[1])
    get = lambda p, s: rows.get((p, s))
    direct_c1 = (get("direct", "h1-c1") or {}).get("p50_ms")

    def added(p):
        r = get(p, "h1-c1")
        if not r or r.get("p50_ms") is None or direct_c1 is None:
            return None
        return (r["p50_ms"] - direct_c1) * 1000

    def mem(s):
        return lambda p: (get(p, s) or {}).get("bytes_per_conn")

    lines = [
        ("HTTP/1.1 keep-alive req/s per core", lambda p: per_core(get(p, "h1")), "", True),
        ("h2c req/s per core", lambda p: per_core(get(p, "h2c")), "", True),
        ("HTTP/2 over TLS req/s per core", lambda p: per_core(get(p, "h2-tls")), "", True),
        ("HTTP/1.1 over TLS req/s per core", lambda p: per_core(get(p, "h1-tls")), "", True),
        ("full TLS handshakes/s per core (ECDSA)", lambda p: per_core(get(p, "tls-full")), "", True),
        ("resumed TLS handshakes/s per core", lambda p: per_core(get(p, "tls-resume")), "", True),
        ("raw TCP forwarding req/s per core", lambda p: per_core(get(p, "tcp")), "", True),
        ("TLS passthrough by SNI req/s per core", lambda p: per_core(get(p, "sni-pass")), "", True),
        ("added p50 latency, 1 connection", added, "us", False),
        ("bytes per idle connection, plain", mem("mem"), "B", False),
        ("bytes per idle connection, TLS", mem("mem-tls"), "B", False),
    ]
    print("| per proxy core | Portico | best peer | Portico / best |")
    print("|---|---:|---:|---:|")
    for name, f, unit, higher in lines:
        ours = f("ours")
        peers = [(p, f(p)) for p in PEERS if f(p) is not None]
        if not peers:
            best = (None, None)
        else:
            best = (max if higher else min)(peers, key=lambda x: x[1])
        ratio = f"{ours / best[1]:.2f}" if ours is not None and best[1] else "–"
        label = f"{fmt(best[1], unit)} ({best[0]})" if best[0] else "–"
        print(f"| {name} | {fmt(ours, unit)} | {label} | {ratio} |")
    base = (get("ours", "mem") or {}).get("rss_before_kb")
    if base:
        print(f"\nPortico RSS before the idle connections: {base / 1024:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
