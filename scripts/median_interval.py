"""The median of paired ratios with a distribution-free 95 % interval, for the benches.

Order statistics of the binomial, as for any median: no assumption on the spread's shape. Used
by scripts/bench-net.sh (imported) and scripts/bench-overhead.sh (run: each line of stdin is
"LABEL RATIO..."; prints "LABEL MEDIAN [LOW, HIGH]").
"""
import math
import sys


def median(values):
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def median_interval(ratios):
    r = sorted(ratios)
    n = len(r)
    # Largest k with P(Binomial(n, 1/2) < k) <= 2.5 %: [r[k-1], r[n-k]] covers the median at >= 95 %.
    cdf, k = 0.0, 0
    while k < n and cdf + math.comb(n, k) / 2**n <= 0.025:
        cdf += math.comb(n, k) / 2**n
        k += 1
    interval = f"[{r[k - 1]:.3f}, {r[n - k]:.3f}]" if k >= 1 else "(too few repetitions for a 95 % interval)"
    return f"{median(r):.3f} {interval}"


if __name__ == "__main__":
    for line in sys.stdin:
        label, *ratios = line.split()
        if ratios:
            print(label, median_interval([float(x) for x in ratios]))
