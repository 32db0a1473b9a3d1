"""groundtruth for Python: each round does the same unit of work 6 times in cpu_60, 3 times in
cpu_30 and once in cpu_10, so a correct profile shows them at 60%, 30% and 10%.

    python3 groundtruth.py [--zlib] [--rounds N]

--zlib      spend the time in zlib.compress instead (native code under a Python frame, for
            `kubectl eagle profile --native`)
--rounds N  do N rounds, then print `groundtruth: cpu SECONDS s wall SECONDS s` on stderr
            and exit (fixed work, for scripts/bench-overhead.sh)
"""
import sys
import time
import zlib


def spin(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def cpu_60():
    for _ in range(6):
        spin(10000)


def cpu_30():
    for _ in range(3):
        spin(10000)


def cpu_10():
    spin(10000)


def compress_loop():
    data = bytes(range(256)) * 4096
    while True:
        zlib.compress(data, 9)


if __name__ == "__main__":
    if "--zlib" in sys.argv:
        compress_loop()
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else None
    started = time.monotonic()
    done = 0
    while rounds is None or done < rounds:
        cpu_60()
        cpu_30()
        cpu_10()
        done += 1
    print(f"groundtruth: cpu {time.process_time():.3f} s wall {time.monotonic() - started:.3f} s", file=sys.stderr)
