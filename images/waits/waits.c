/* waits: a workload whose wall-clock time splits in advance between sleeping, waiting on a pipe
 * and computing, so off-CPU and wall-clock profiles can be checked.
 *
 * Each round of the main thread takes about 100 ms of wall-clock time:
 *   sleep_60  sleeps 60 ms (nanosleep)                            60 %, off-CPU
 *   pipe_30   asks a helper thread for a byte and blocks in read()  30 %, off-CPU;
 *             the helper sleeps 30 ms before it writes it
 *   cpu_10    computes for 10 ms of its own CPU time                10 %, on-CPU
 * The helper thread is off-CPU all along (waiting for a request, or sleeping); a profile
 * judges the split on the main thread's stacks, which start at `main`.
 *
 *   waits [--seconds S] [--scale F]
 *
 * --seconds S   exit after S seconds (default: run until killed)
 * --scale F     multiply every duration by F (default 1): rounds of 100 * F ms
 *
 * Built the ordinary way: cc -O2 -pthread -o waits waits.c
 */
#include <errno.h>
#include <pthread.h>
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

__attribute__((noinline)) void pipe_30(void)
{
	char byte = 'q';
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

__attribute__((noinline)) void cpu_10(void)
{
	/* 10 ms of this thread's own CPU time: waiting for a CPU on a busy machine does not count. */
	double until = seconds_of(CLOCK_THREAD_CPUTIME_ID) + 0.010 * scale;
	unsigned long x = sink;
	while (seconds_of(CLOCK_THREAD_CPUTIME_ID) < until) {
		for (int i = 0; i < 1000; i++) {
			x = x * 6364136223846793005UL + 1442695040888963407UL;
			__asm__ volatile("" : "+r"(x));
		}
	}
	sink = x;
}

/* The other end of the pipe: answers each request 30 ms later. */
static void *helper(void *unused)
{
	(void)unused;
	char byte;
	while (read(request_pipe[0], &byte, 1) == 1) {
		sleep_ms(30 * scale);
		if (write(reply_pipe[1], &byte, 1) != 1)
			break;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	double seconds = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
			scale = atof(argv[++i]);
		} else {
			fprintf(stderr, "usage: waits [--seconds S] [--scale F]\n");
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
	pthread_t thread;
	if (pthread_create(&thread, NULL, helper, NULL) != 0) {
		fprintf(stderr, "waits: cannot start the helper thread\n");
		return 1;
	}
	double end = seconds > 0 ? seconds_of(CLOCK_MONOTONIC) + seconds : 0;
	while (end == 0 || seconds_of(CLOCK_MONOTONIC) < end) {
		sleep_60();
		pipe_30();
		cpu_10();
	}
	return 0;
}
