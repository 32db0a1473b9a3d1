/* chains: a native workload built the way distributions build code, without frame pointers
 * (plain -O2 omits them on x86-64), whose CPU time is known by call chain, not by leaf.
 *
 * All the work happens in one leaf, crunch(). Three call chains reach it, and each round
 * spends 60 % of its work through chain_60_outer -> chain_60_inner -> crunch, 30 % through
 * the chain_30 pair and 10 % through the chain_10 pair. A profiler that only sees the leaf
 * (a frame-pointer walk of this binary) cannot tell the chains apart; one that unwinds with
 * the .eh_frame tables shows each chain at its share, every stack complete down to main.
 *
 *   chains [--rounds N] [--seconds S] [--report-cpu]
 *
 * --rounds N     a fixed amount of work, then exit 0 (default: run until killed)
 * --seconds S    exit after S seconds
 * --report-cpu   with --rounds: at exit, print `groundtruth: cpu SECONDS s wall SECONDS s` on
 *                stderr, as every workload of images/ does (scripts/bench-overhead.sh reads it)
 *
 * Build: cc -O2 -g -o chains chains.c   (no -fno-omit-frame-pointer: that is the point)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define UNIT 200000

/* The shared leaf: all samples land here. */
__attribute__((noinline)) unsigned long crunch(unsigned long seed, int units)
{
	unsigned long x = seed;
	for (int u = 0; u < units; u++)
		for (int i = 0; i < UNIT; i++) {
			x = x * 6364136223846793005UL + 1442695040888963407UL;
			__asm__ volatile("" : "+r"(x));
		}
	return x;
}

/* Each chain function keeps a frame of a different size and works on the result after the
 * call, so that no call becomes a jump and the unwinder meets varied CFA offsets. */
#define CHAIN(name, next, pad)                                        \
	__attribute__((noinline)) unsigned long name(unsigned long s, int units) \
	{                                                                 \
		volatile unsigned char frame[pad];                            \
		frame[0] = (unsigned char)s;                                  \
		unsigned long r = next(s ^ frame[0], units);                  \
		frame[pad - 1] = (unsigned char)r;                            \
		return r + frame[pad - 1] + pad;                              \
	}

CHAIN(chain_60_inner, crunch, 24)
CHAIN(chain_60_outer, chain_60_inner, 200)
CHAIN(chain_30_inner, crunch, 56)
CHAIN(chain_30_outer, chain_30_inner, 8)
CHAIN(chain_10_inner, crunch, 1000)
CHAIN(chain_10_outer, chain_10_inner, 40)

static volatile unsigned long sink;

__attribute__((noinline)) void round_of_work(void)
{
	unsigned long s = sink;
	s = chain_60_outer(s, 6);
	s = chain_30_outer(s, 3);
	s = chain_10_outer(s, 1);
	sink = s;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double started = now();
	long rounds = 0;
	double seconds = 0;
	int report_cpu = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atol(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--report-cpu")) report_cpu = 1;
		else {
			fprintf(stderr, "usage: %s [--rounds N] [--seconds S] [--report-cpu]\n", argv[0]);
			return 2;
		}
	}
	if (seconds > 0)
		alarm((unsigned)(seconds + 0.999));
	for (long i = 0; rounds == 0 || i < rounds; i++)
		round_of_work();
	if (report_cpu) {
		struct rusage ru;
		getrusage(RUSAGE_SELF, &ru);
		double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
		fprintf(stderr, "groundtruth: cpu %.3f s wall %.3f s\n", cpu, now() - started);
	}
	return 0;
}
