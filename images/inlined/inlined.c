/* inlined: a native workload whose hot code is inlined, built as release code is (-O2) with
 * debug information (-g), so that a profiler can tell a function the compiler inlined from a
 * function the CPU called.
 *
 * Each round spends 60 % of its work in mix_60 and 40 % in mix_40, both reached from
 * round_of_work. mix_60 is inlined into round_of_work (always_inline), so no call to it exists
 * in the binary: only DWARF's inline information names it, as a frame marked inlined
 * (`mix_60_[i]` in kube-eagle's folded output). mix_40 is a real function, called. Inside
 * mix_60, step is inlined too, so the inlined frames nest: round_of_work -> mix_60 -> step.
 *
 *   inlined [--rounds N] [--seconds S] [--report-cpu]
 *
 * --rounds N     a fixed amount of work, then exit 0 (default: run until killed)
 * --seconds S    exit after S seconds
 * --report-cpu   with --rounds: at exit, print `groundtruth: cpu SECONDS s wall SECONDS s` on
 *                stderr, as every workload of images/ does
 *
 * Build: cc -O2 -g -o inlined inlined.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define UNIT 200000

static volatile unsigned long sink;

/* One step of a linear congruential generator; the asm keeps the loop from being folded. */
static inline __attribute__((always_inline)) unsigned long step(unsigned long x)
{
	x = x * 6364136223846793005UL + 1442695040888963407UL;
	__asm__ volatile("" : "+r"(x));
	return x;
}

/* Inlined into its caller: 60 % of the work. */
static inline __attribute__((always_inline)) unsigned long mix_60(unsigned long x, int units)
{
	for (int u = 0; u < units; u++)
		for (int i = 0; i < UNIT; i++)
			x = step(x);
	return x;
}

/* Called: 40 % of the work. */
__attribute__((noinline)) unsigned long mix_40(unsigned long x, int units)
{
	for (int u = 0; u < units; u++)
		for (int i = 0; i < UNIT; i++) {
			x = x * 2862933555777941757UL + 3037000493UL;
			__asm__ volatile("" : "+r"(x));
		}
	return x;
}

__attribute__((noinline)) void round_of_work(void)
{
	unsigned long s = sink;
	s = mix_60(s, 6);
	s = mix_40(s, 4);
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
