/* waits: a workload whose wall-clock time splits in advance between sleeping, waiting on a pipe
 * and computing, so off-CPU and wall-clock profiles can be checked.
 *
 * Each round of the main thread takes about 100 ms of wall-clock time:
 *   sleep_60  sleeps 60 ms (nanosleep)                            60 %, off-CPU
 *   pipe_30   asks a helper thread for a byte and blocks in read()  30 %, off-CPU;
 *             the helper sleeps 30 ms before it writes it
 *   cpu_10    computes for 10 ms of wall-clock time on a CPU          10 %, on-CPU
 *             (the time it waits for a CPU on a busy machine does not count; see cpu_10)
 * The helper thread (at a real-time priority where permitted, so that it answers on time on a
 * busy machine) is off-CPU all along (waiting for a request, or sleeping); a profile
 * judges the split on the main thread's stacks, which start at `main`.
 *
 * With --same-site, a round takes about 30 ms instead, all of it waiting on the pipe from one
 * place, `ask_and_wait`, called from two functions at the same depth:
 *   pipe_20   asks for a reply 20 ms later                          2/3 of the blocked time
 *   pipe_10   asks for a reply 10 ms later                          1/3
 * Its read() blocks with the same registers, in the same system call on the same descriptor,
 * from both: only the return address into pipe_20 or pipe_10 tells them apart (a profiler that
 * reuses the stacks of a thread's last stop must see it).
 *
 *   waits [--seconds S] [--scale F] [--same-site]
 *
 * --seconds S   exit after S seconds (default: run until killed)
 * --scale F     multiply every duration by F (default 1): rounds of 100 * F ms
 * --same-site   the pipe_20/pipe_10 rounds
 *
 * Built the ordinary way: cc -O2 -pthread -o waits waits.c
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double scale = 1.0;
static int request_pipe[2], reply_pipe[2];
static volatile unsigned long sink;

static void sleep_ms(double ms)
{
	struct timespec t = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6) };
	while (nanosleep(&t, &t) != 0 && errno == EINTR) {
	}
}

static double seconds_of(clockid_t clock)
{
	struct timespec t;
	clock_gettime(clock, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* Each function does something after its wait, so the compiler cannot make the wait a tail
 * call and drop the function's frame. */
__attribute__((noinline)) void sleep_60(void)
{
	sleep_ms(60 * scale);
	sink++;
}

/* Asks the helper for a reply `ms` milliseconds (times the scale) later, and waits for it. */
__attribute__((noinline)) void ask_and_wait(char ms)
{
	char byte = ms;
	if (write(request_pipe[1], &byte, 1) != 1) {
		perror("waits: write request");
		exit(1);
	}
	if (read(reply_pipe[0], &byte, 1) != 1) {
		perror("waits: read reply");
		exit(1);
	}
	sink += byte;
}

__attribute__((noinline)) void pipe_30(void)
{
	ask_and_wait(30);
	sink++;
}

__attribute__((noinline)) void pipe_20(void)
{
	ask_and_wait(20);
	sink++;
}

__attribute__((noinline)) void pipe_10(void)
{
	ask_and_wait(10);
	sink += 2;
}

/* /proc/thread-self/schedstat of the main thread, opened once: its second field is the time
 * the thread has waited on a run queue (run_delay, nanoseconds of the wall clock). -1 where the
 * kernel has no scheduler statistics. */
static int schedstat_fd = -1;

/* Seconds the main thread has waited for a CPU so far, or -1 where the kernel does not say. */
static double waited_for_a_cpu(void)
{
	char text[128];
	unsigned long long ran, waited;
	ssize_t n = schedstat_fd < 0 ? -1 : pread(schedstat_fd, text, sizeof text - 1, 0);
	if (n <= 0)
		return -1;
	text[n] = 0;
	if (sscanf(text, "%llu %llu", &ran, &waited) != 2)
		return -1;
	return waited / 1e9;
}

static void compute_a_while(unsigned long *x)
{
	for (int i = 0; i < 1000; i++) {
		*x = *x * 6364136223846793005UL + 1442695040888963407UL;
		__asm__ volatile("" : "+r"(*x));
	}
}

__attribute__((noinline)) void cpu_10(void)
{
	/* 10 ms of the wall clock on a CPU: the time from start to end less the time the thread
	 * waited for a CPU meanwhile. That is what a wall-clock profile charges to cpu_10 (its
	 * waits for a CPU are frames of their own), and it is not the thread's CPU time on a
	 * virtual machine: the time the hypervisor gives the CPU to another guest ("steal") passes
	 * on the wall clock while the thread runs, but the kernel leaves it out of the thread's CPU
	 * clock. Computing for 10 ms of CPU time took 14 ms of the wall clock on a CI machine whose
	 * host was busy, and cpu_10 was 13.5 % of the wall-clock graph rather than 10.
	 * Where the kernel keeps no run-queue statistics, 10 ms of CPU time, as before. */
	double budget = 0.010 * scale;
	unsigned long x = sink;
	double waited_before = waited_for_a_cpu();
	if (waited_before < 0) {
		double until = seconds_of(CLOCK_THREAD_CPUTIME_ID) + budget;
		while (seconds_of(CLOCK_THREAD_CPUTIME_ID) < until)
			compute_a_while(&x);
		sink = x;
		return;
	}
	/* The run-queue wait is read again only once the wall clock says the budget may be spent,
	 * so the loop stays in user code (clock_gettime of CLOCK_MONOTONIC is no system call). */
	double start = seconds_of(CLOCK_MONOTONIC), until = start + budget;
	for (;;) {
		compute_a_while(&x);
		if (seconds_of(CLOCK_MONOTONIC) < until)
			continue;
		double waited = waited_for_a_cpu() - waited_before;
		if (waited < 0)
			waited = 0;
		if (seconds_of(CLOCK_MONOTONIC) - start - waited >= budget)
			break;
		until = start + budget + waited;
	}
	sink = x;
}

/* The other end of the pipe: answers each request as many milliseconds later as it asks. */
static void *helper(void *unused)
{
	(void)unused;
	char byte;
	while (read(request_pipe[0], &byte, 1) == 1) {
		sleep_ms(byte * scale);
		if (write(reply_pipe[1], &byte, 1) != 1)
			break;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	double seconds = 0;
	int same_site = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--same-site") == 0) {
			same_site = 1;
		} else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
			scale = atof(argv[++i]);
		} else {
			fprintf(stderr, "usage: waits [--seconds S] [--scale F] [--same-site]\n");
			return 2;
		}
	}
	if (scale <= 0) {
		fprintf(stderr, "waits: --scale must be above 0\n");
		return 2;
	}
	if (pipe(request_pipe) != 0 || pipe(reply_pipe) != 0) {
		perror("waits: pipe");
		return 1;
	}
	/* The helper answers on time even on a busy machine when it may run at a real-time
	 * priority (root, or CAP_SYS_NICE): otherwise its own wait for a CPU after each sleep would
	 * lengthen pipe_30's, and the split would depend on the machine's load. It runs a few
	 * microseconds per round. Without the privilege it runs as any thread. */
	pthread_t thread;
	pthread_attr_t attr;
	struct sched_param priority = { .sched_priority = 10 };
	pthread_attr_init(&attr);
	pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
	pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
	pthread_attr_setschedparam(&attr, &priority);
	if (pthread_create(&thread, &attr, helper, NULL) != 0 && pthread_create(&thread, NULL, helper, NULL) != 0) {
		fprintf(stderr, "waits: cannot start the helper thread\n");
		return 1;
	}
	schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	double end = seconds > 0 ? seconds_of(CLOCK_MONOTONIC) + seconds : 0;
	while (end == 0 || seconds_of(CLOCK_MONOTONIC) < end) {
		if (same_site) {
			pipe_20();
			pipe_10();
		} else {
			sleep_60();
			pipe_30();
			cpu_10();
		}
	}
	return 0;
}
