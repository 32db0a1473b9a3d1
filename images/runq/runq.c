/* runq: workloads whose time off the CPU is known in advance from the scheduler's side, for the
 * ground truths of run-queue wait and CPU throttling, and for the cost of following context
 * switches.
 *
 *   runq spin [--threads N] [--cpu C] [--seconds S]
 *     N threads (default 1) that never block: each runs `spin` until S seconds have passed
 *     (default: until killed), pinned to CPU C if given. A thread that never blocks is on a CPU
 *     or runnable all along: its time runnable but not running is its wall time minus its CPU
 *     time, which it prints at the end for each thread:
 *       runq: thread I cpu S s wall S s
 *     Two threads pinned to one CPU each wait about half the time; one thread in a cgroup
 *     limited to 200m is throttled about 80 % of it.
 *
 *   runq pingpong [--rounds N] [--work-us W] [--cpu C]
 *     Two threads hand a byte back and forth over pipes N times (default 100000), each
 *     computing W microseconds of its own CPU time (default 17) per hand-off, in `pong_work`,
 *     both pinned to CPU C if given: every hand-off blocks one thread and wakes the other.
 *     On one CPU (no wake-up crosses CPUs), that is about 50,000 context switches a second on
 *     the machine of docs/performance.md. Prints what scripts/bench-overhead.sh reads, and
 *     the rate:
 *       groundtruth: cpu S s wall S s
 *       runq: S switches per second
 *
 * Built the ordinary way: cc -O2 -pthread -o runq runq.c
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double seconds_of(clockid_t clock)
{
	struct timespec t;
	clock_gettime(clock, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- spin ---------------------------------------------------------------------------------- */

static double spin_seconds;
static int pinned_cpu = -1;
static double spin_started;

struct spinner {
	pthread_t thread;
	int index;
	double cpu, wall;
};

__attribute__((noinline)) static unsigned long spin(double until)
{
	unsigned long x = 1;
	while (until <= 0 || seconds_of(CLOCK_MONOTONIC) < until) {
		for (int i = 0; i < 10000; i++) {
			x = x * 6364136223846793005UL + 1442695040888963407UL;
			__asm__ volatile("" : "+r"(x));
		}
	}
	return x;
}

/* Pins the calling thread to --cpu, if given. */
static void pin(void)
{
	if (pinned_cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(pinned_cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
		fprintf(stderr, "runq: cannot pin a thread to CPU %d\n", pinned_cpu);
		exit(1);
	}
}

static void *spinner_main(void *arg)
{
	struct spinner *s = arg;
	pin();
	double start = seconds_of(CLOCK_MONOTONIC);
	spin(spin_seconds > 0 ? spin_started + spin_seconds : 0);
	s->cpu = seconds_of(CLOCK_THREAD_CPUTIME_ID);
	s->wall = seconds_of(CLOCK_MONOTONIC) - start;
	return NULL;
}

static int run_spin(int threads)
{
	struct spinner *spinners = calloc(threads, sizeof(*spinners));
	spin_started = seconds_of(CLOCK_MONOTONIC);
	for (int i = 0; i < threads; i++) {
		spinners[i].index = i;
		if (pthread_create(&spinners[i].thread, NULL, spinner_main, &spinners[i]) != 0) {
			perror("runq: pthread_create");
			return 1;
		}
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(spinners[i].thread, NULL);
		fprintf(stderr, "runq: thread %d cpu %.6f s wall %.6f s\n", i, spinners[i].cpu, spinners[i].wall);
	}
	return 0;
}

/* ---- pingpong ------------------------------------------------------------------------------ */

static int to_pong[2], to_ping[2];
static long rounds = 100000;
static double work_seconds = 17e-6;
static volatile unsigned long sink;

/* W microseconds of this thread's own CPU time. */
__attribute__((noinline)) static void pong_work(void)
{
	double until = seconds_of(CLOCK_THREAD_CPUTIME_ID) + work_seconds;
	unsigned long x = sink;
	while (seconds_of(CLOCK_THREAD_CPUTIME_ID) < until) {
		for (int i = 0; i < 100; i++) {
			x = x * 6364136223846793005UL + 1442695040888963407UL;
			__asm__ volatile("" : "+r"(x));
		}
	}
	sink = x;
}

static void *pong_main(void *unused)
{
	(void)unused;
	pin();
	char byte;
	while (read(to_pong[0], &byte, 1) == 1) {
		pong_work();
		if (write(to_ping[1], &byte, 1) != 1)
			break;
	}
	return NULL;
}

static int run_pingpong(void)
{
	if (pipe(to_pong) != 0 || pipe(to_ping) != 0) {
		perror("runq: pipe");
		return 1;
	}
	pin();
	pthread_t pong;
	if (pthread_create(&pong, NULL, pong_main, NULL) != 0) {
		perror("runq: pthread_create");
		return 1;
	}
	struct rusage before, after;
	getrusage(RUSAGE_SELF, &before);
	double wall = seconds_of(CLOCK_MONOTONIC);
	double cpu = seconds_of(CLOCK_PROCESS_CPUTIME_ID);
	char byte = 'p';
	for (long i = 0; i < rounds; i++) {
		pong_work();
		if (write(to_pong[1], &byte, 1) != 1 || read(to_ping[0], &byte, 1) != 1) {
			perror("runq: ping");
			return 1;
		}
	}
	wall = seconds_of(CLOCK_MONOTONIC) - wall;
	cpu = seconds_of(CLOCK_PROCESS_CPUTIME_ID) - cpu;
	getrusage(RUSAGE_SELF, &after);
	long switches = (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw);
	fprintf(stderr, "groundtruth: cpu %.6f s wall %.6f s\n", cpu, wall);
	fprintf(stderr, "runq: %.0f switches per second\n", switches / wall);
	close(to_pong[1]);
	pthread_join(pong, NULL);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: runq spin [--threads N] [--cpu C] [--seconds S]\n"
			"       runq pingpong [--rounds N] [--work-us W] [--cpu C]\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage();
	int threads = 1;
	for (int i = 2; i < argc; i += 2) {
		const char *value = i + 1 < argc ? argv[i + 1] : NULL;
		if (!value)
			return usage();
		if (strcmp(argv[i], "--threads") == 0)
			threads = atoi(value);
		else if (strcmp(argv[i], "--cpu") == 0)
			pinned_cpu = atoi(value);
		else if (strcmp(argv[i], "--seconds") == 0)
			spin_seconds = atof(value);
		else if (strcmp(argv[i], "--rounds") == 0)
			rounds = atol(value);
		else if (strcmp(argv[i], "--work-us") == 0)
			work_seconds = atof(value) / 1e6;
		else
			return usage();
	}
	if (strcmp(argv[1], "spin") == 0 && threads >= 1)
		return run_spin(threads);
	if (strcmp(argv[1], "pingpong") == 0 && rounds >= 1 && work_seconds >= 0)
		return run_pingpong();
	return usage();
}
