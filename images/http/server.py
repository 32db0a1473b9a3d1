#!/usr/bin/env python3
"""Ground-truth HTTP/1.1 server for the network view (issue #19): python3 stdlib only.

Every request to /api/items/N sleeps a known delay and answers 200, except every
--error-every-th request (counted over the whole server), which answers 503: the error ratio
is exact. Every --slow-every-th request sleeps --slow-ms instead of --delay-ms, so p99 is known.
Keep-alive: one connection carries many requests, as real clients do. Each response is one
write. With --io vectored the server reads with recvmsg(2) and writes with sendmsg(2), whose
bytes are in iovecs, as servers built on scattered buffers do.
"""
import argparse
import http.server
import io
import os
import threading
import time


class RecvmsgIO(io.RawIOBase):
    """A connection's reads, each one recvmsg(2) into one iovec."""

    def __init__(self, conn):
        self.conn = conn

    def readable(self):
        return True

    def readinto(self, b):
        return self.conn.recvmsg_into([b])[0]


class SendmsgIO(io.RawIOBase):
    """A connection's writes, each one sendmsg(2) of one iovec."""

    def __init__(self, conn):
        self.conn = conn

    def writable(self):
        return True

    def write(self, b):
        return self.conn.sendmsg([b])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on (0.0.0.0 in a pod)")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--slow-ms", type=float, default=80.0)
    ap.add_argument("--slow-every", type=int, default=25)
    ap.add_argument("--error-every", type=int, default=10)
    ap.add_argument("--ready-file", help="written once the server listens")
    ap.add_argument("--io", choices=["plain", "vectored"], default="plain",
                    help="plain: recv/send (recvfrom/sendto); vectored: recvmsg/sendmsg")
    args = ap.parse_args()
    lock = threading.Lock()
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One write per response (flushed after each request): a status line and a body in two
        # small writes would meet Nagle and the client's delayed ACK, 40 ms the server never sees.
        wbufsize = 1 << 16

        def setup(self):
            super().setup()
            if args.io == "vectored":
                self.rfile = io.BufferedReader(RecvmsgIO(self.connection))
                self.wfile = io.BufferedWriter(SendmsgIO(self.connection), self.wbufsize)

        def do_GET(self):
            with lock:
                count[0] += 1
                n = count[0]
            slow = args.slow_every > 0 and n % args.slow_every == 0
            time.sleep((args.slow_ms if slow else args.delay_ms) / 1000.0)
            failed = args.error_every > 0 and n % args.error_every == 0
            body = (b"unavailable\n" if failed else b"item " + self.path.encode() + b"\n") * 4
            self.send_response(503 if failed else 200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(args.ready_file + ".tmp", args.ready_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
