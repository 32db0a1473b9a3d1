#!/usr/bin/env python3
"""Ground-truth HTTP/1.1 load generator for the network view (issue #19): python3 stdlib only.

Sends --requests GET requests at --rate per second over --connections keep-alive connections
(round robin), with raw sockets so that it counts every byte it sends and receives itself, and
measures each request from its first byte sent to its response's last byte read. Prints one
JSON object: what the network view must agree with.
"""
import argparse
import json
import socket
import time


def read_response(sock, buf):
    """One response (status line, headers, Content-Length body) from sock; returns
    (status, bytes read for it, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    used = len(head) + 4 + length
    return status, used, rest[length:]


def quantile(values, q):
    ordered = sorted(values)
    rank = max(1, -(-int(q * len(ordered) * 1000) // 1000))  # nearest rank, ceil
    return ordered[min(len(ordered), rank) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1", help="the server's address (a pod IP in a cluster)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--connections", type=int, default=2)
    args = ap.parse_args()
    conns = [socket.create_connection((args.host, args.port)) for _ in range(args.connections)]
    pending = [b""] * len(conns)
    sent = received = errors = 0
    latencies = []
    started = time.monotonic()
    for i in range(args.requests):
        due = started + i / args.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        c = i % len(conns)
        request = b"GET /api/items/%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (1000 + i, args.host.encode())
        t0 = time.monotonic()
        conns[c].sendall(request)
        sent += len(request)
        status, used, pending[c] = read_response(conns[c], pending[c])
        latencies.append((time.monotonic() - t0) * 1000.0)
        received += used
        errors += status >= 500
    elapsed = time.monotonic() - started
    for s in conns:
        s.close()
    print(json.dumps({
        "requests": args.requests,
        "errors": errors,
        "seconds": elapsed,
        "rate_per_s": args.requests / elapsed,
        "p50_ms": quantile(latencies, 0.5),
        "p99_ms": quantile(latencies, 0.99),
        "bytes_sent": sent,
        "bytes_received": received,
        "connections": args.connections,
    }))


if __name__ == "__main__":
    main()
