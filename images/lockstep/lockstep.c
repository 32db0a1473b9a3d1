/* lockstep: work that repeats in step with a sampler's clock, the worst case for a sampler whose
 * period is fixed.
 *
 * In every 1/F s of CLOCK_MONOTONIC (the clock the kernel's sampling timers run on) it spends the
 * first 60 % in cpu_60, the next 30 % in cpu_30 and the last 10 % in cpu_10. A sampler that fires
 * every 1/F s exactly finds it at the same point of that cycle every time and sees one function
 * only; a sampler that dithers its period sees 60/30/10.
 *
 *   lockstep --hz F [--cpu-seconds S] [--report-cpu]      (default: 499 Hz, run until killed)
 *
 * --cpu-seconds S  exit once it has used S seconds of CPU: a fixed amount of work, so the number
 *                  of samples a profile gets does not depend on how busy the machine is
 * --report-cpu   at exit, print on stderr the CPU time each function got, as
 *                `lockstep: cpu_60 SECONDS cpu_30 SECONDS cpu_10 SECONDS`: the truth a profile is
 *                checked against when other work on the machine takes the CPU away at some
 *                points of the cycle more than at others.
 *
 * Built as distributions build C (plain -O2); see tests/src/lib.rs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long period_ns;
static volatile unsigned long sink;

static long long thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Computes in short bursts, reading the clock between them, until the cycle leaves
 * [from, to) (fractions of the period). Most of the time goes to the burst, not to the clock. */
static inline __attribute__((always_inline)) void compute_while_in(double from, double to)
{
	for (;;) {
		double phase = (double)(now_ns() % period_ns) / (double)period_ns;
		if (phase < from || phase >= to)
			return;
		unsigned long x = sink;
		for (int i = 0; i < 2000; i++) {
			x = x * 6364136223846793005UL + 1442695040888963407UL;
			__asm__ volatile("" : "+r"(x));
		}
		sink = x;
	}
}

__attribute__((noinline)) void cpu_60(void) { compute_while_in(0.0, 0.6); }
__attribute__((noinline)) void cpu_30(void) { compute_while_in(0.6, 0.9); }
__attribute__((noinline)) void cpu_10(void) { compute_while_in(0.9, 1.0); }

/* CPU time each function got, in nanoseconds. */
static long long used[3];

static void timed(void (*f)(void), int slot)
{
	long long before = thread_cpu_ns();
	f();
	used[slot] += thread_cpu_ns() - before;
}

int main(int argc, char **argv)
{
	double hz = 499, cpu_seconds = 0;
	int report_cpu = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--hz") && i + 1 < argc) hz = atof(argv[++i]);
		else if (!strcmp(argv[i], "--cpu-seconds") && i + 1 < argc) cpu_seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--report-cpu")) report_cpu = 1;
		else {
			fprintf(stderr, "usage: %s [--hz F] [--cpu-seconds S] [--report-cpu]\n", argv[0]);
			return 2;
		}
	}
	/* As the kernel turns a frequency into a period: whole nanoseconds. */
	period_ns = (long long)(1000000000.0 / hz);
	long long budget = (long long)(cpu_seconds * 1e9);
	while (budget == 0 || used[0] + used[1] + used[2] < budget) {
		timed(cpu_60, 0);
		timed(cpu_30, 1);
		timed(cpu_10, 2);
	}
	if (report_cpu)
		fprintf(stderr, "lockstep: cpu_60 %.6f cpu_30 %.6f cpu_10 %.6f\n", used[0] / 1e9, used[1] / 1e9, used[2] / 1e9);
	return 0;
}
