"""groundtruth for per-thread weighting: one thread spends all its time in cpu_busy, two others
wait in idle_wait, waking every millisecond (so a sampler sometimes finds them runnable), and
use next to no CPU. A correct profile shows cpu_busy at ~100% and idle_wait at ~0%.

    python3 threads.py
"""
import threading
import time


def spin(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def cpu_busy():
    while True:
        spin(10000)


def idle_wait():
    while True:
        time.sleep(0.001)


if __name__ == "__main__":
    for _ in range(2):
        threading.Thread(target=idle_wait, daemon=True).start()
    cpu_busy()
