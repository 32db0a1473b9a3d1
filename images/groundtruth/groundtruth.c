/* groundtruth: a workload whose CPU split is known in advance, so a profile can be checked.
 *
 * Each round does the same unit of work 6 times in cpu_60, 3 times in cpu_30 and once in
 * cpu_10: a correct profiler shows those functions at 60%, 30% and 10% of the samples.
 *
 *   groundtruth [--threads N] [--fork-every MS] [--child-rounds N] [--syscalls] [--seconds S]
 *               [--rounds N] [--report-cpu]
 *
 * --threads N        run the rounds on N threads (the split holds per process)
 * --fork-every MS    instead, fork a short-lived child every MS ms that does a few rounds and
 *                    exits; the parent only forks and reaps
 * --child-rounds N   rounds each forked child does (default 20); keep N * round time / MS
 *                    below the CPUs you have, or children pile up faster than they finish
 * --syscalls         spend the time in getppid()/write() syscalls instead (kernel frames)
 * --seconds S        exit after S seconds (default: run until killed)
 * --rounds N         a fixed amount of work: every thread does N rounds, then the process
 *                    exits 0 (for timing a run, e.g. the cost of sampling it)
 * --report-cpu       with --rounds: at exit, print on stderr the CPU time used (what a
 *                    profile's samples add up to) and the time from start to exit, as
 *                    `groundtruth: cpu SECONDS s wall SECONDS s`
 *
 * Build with frame pointers (clang keeps them in leaves; see DESIGN.md):
 *   clang -O2 -g -fno-omit-frame-pointer -static -pthread -o groundtruth groundtruth.c
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UNIT 200000

/* The unit of work: identical in every caller, inlined so the caller is the leaf frame. */
static inline __attribute__((always_inline)) unsigned long spin(unsigned long seed)
{
	unsigned long x = seed;
	for (int i = 0; i < UNIT; i++) {
		x = x * 6364136223846793005UL + 1442695040888963407UL;
		__asm__ volatile("" : "+r"(x));
	}
	return x;
}

__attribute__((noinline)) unsigned long cpu_60(unsigned long s) { for (int i = 0; i < 6; i++) s = spin(s); return s; }
__attribute__((noinline)) unsigned long cpu_30(unsigned long s) { for (int i = 0; i < 3; i++) s = spin(s); return s; }
__attribute__((noinline)) unsigned long cpu_10(unsigned long s) { return spin(s); }

static int devnull = -1;
__attribute__((noinline)) void sys_getppid(void) { for (int i = 0; i < 2000; i++) getppid(); }
__attribute__((noinline)) void sys_write(void) { char b[64] = {0}; for (int i = 0; i < 2000; i++) (void)!write(devnull, b, sizeof b); }

static int syscalls;
static volatile unsigned long sink;

__attribute__((noinline)) void round_of_work(void)
{
	if (syscalls) {
		sys_getppid();
		sys_write();
		return;
	}
	unsigned long s = sink;
	s = cpu_60(s);
	s = cpu_30(s);
	s = cpu_10(s);
	sink = s;
}

static long rounds; /* 0: forever */

static void *worker(void *arg)
{
	(void)arg;
	for (long i = 0; rounds == 0 || i < rounds; i++)
		round_of_work();
	return NULL;
}

static int child_rounds = 20;

__attribute__((noinline)) void child_work(void)
{
	for (int i = 0; i < child_rounds; i++)
		round_of_work();
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
	int threads = 1, fork_every_ms = 0, report_cpu = 0;
	double seconds = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--fork-every") && i + 1 < argc) fork_every_ms = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--child-rounds") && i + 1 < argc) child_rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atol(argv[++i]);
		else if (!strcmp(argv[i], "--syscalls")) syscalls = 1;
		else if (!strcmp(argv[i], "--report-cpu")) report_cpu = 1;
		else {
			fprintf(stderr, "usage: %s [--threads N] [--fork-every MS] [--child-rounds N] [--syscalls] [--seconds S] [--rounds N] [--report-cpu]\n", argv[0]);
			return 2;
		}
	}
	devnull = open("/dev/null", O_WRONLY);
	if (seconds > 0)
		alarm((unsigned)(seconds + 0.999));
	if (fork_every_ms > 0) {
		/* Forked children do the work; the parent only forks and reaps. */
		for (;;) {
			pid_t pid = fork();
			if (pid == 0) {
				child_work();
				_exit(0);
			}
			struct timespec ts = { fork_every_ms / 1000, (fork_every_ms % 1000) * 1000000L };
			nanosleep(&ts, NULL);
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
		}
	}
	pthread_t extra[threads > 1 ? threads - 1 : 1];
	for (int i = 0; i < threads - 1; i++)
		pthread_create(&extra[i], NULL, worker, NULL);
	worker(NULL);
	for (int i = 0; i < threads - 1; i++)
		pthread_join(extra[i], NULL);
	if (report_cpu) {
		struct rusage ru;
		getrusage(RUSAGE_SELF, &ru);
		double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
		fprintf(stderr, "groundtruth: cpu %.3f s wall %.3f s\n", cpu, now() - started);
	}
	return 0;
}
