#!/usr/bin/env python3
"""A listener whose accept queue overflows (issue #19): python3 stdlib only.

Listens with a small backlog and never accepts; after --start-after seconds, opens --clients
connections to itself (non-blocking). The first backlog + 1 handshakes complete into the accept
queue; every other SYN finds the queue full and is dropped, and its client sends it again (after
1 s, 3 s, 7 s...), each time an overflow of the listener. Exits after --seconds more, closing
everything. Prints what it did as JSON.
"""
import argparse
import json
import socket
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--backlog", type=int, default=1)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--start-after", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.bind, args.port))
    listener.listen(args.backlog)
    time.sleep(args.start_after)
    clients = []
    for _ in range(args.clients):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        client.connect_ex((args.bind, args.port))
        clients.append(client)
    time.sleep(args.seconds)
    connected = sum(1 for c in clients if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _peer(c))
    print(json.dumps({"clients": args.clients, "connected": connected}))


def _peer(client):
    try:
        client.getpeername()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
