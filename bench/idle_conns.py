#!/usr/bin/env python3
"""Open N keep-alive connections to a proxy, make one request on each, then hold them idle
and print the proxy's resident memory growth (KiB per connection).

usage: idle_conns.py PORT HOST_HEADER N PID [PID...]
"""
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def main():
    port, host, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    pids = [int(p) for p in sys.argv[4:]]
    before = rss_kib(pids)
    conns = []
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        conns.append(s)
    time.sleep(1.0)
    after = rss_kib(pids)
    print(f"{before} {after} {(after - before) / n:.2f}")
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
