/* groundtruth: a workload whose CPU split is known in advance, so a profile can be checked.
 *
 * Each round does the same unit of work 6 times in cpu_60, 3 times in cpu_30 and once in
 * cpu_10: a correct profiler shows those functions at 60%, 30% and 10% of the samples.
 *
 *   groundtruth [--threads N] [--fork-every MS] [--syscalls] [--seconds S]
 *
 * --threads N      run the rounds on N threads (the split holds per process)
 * --fork-every MS  also fork a short-lived child every MS ms that does a few rounds and exits
 * --syscalls       spend the time in getppid()/write() syscalls instead (kernel frames)
 * --seconds S      exit after S seconds (default: run until killed)
 *
 * Build with frame pointers (clang keeps them in leaves; see DESIGN.md):
 *   clang -O2 -g -fno-omit-frame-pointer -static -pthread -o groundtruth groundtruth.c
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void *worker(void *arg)
{
	(void)arg;
	for (;;)
		round_of_work();
	return NULL;
}

__attribute__((noinline)) void child_work(void)
{
	for (int i = 0; i < 20; i++)
		round_of_work();
}

int main(int argc, char **argv)
{
	int threads = 1, fork_every_ms = 0;
	double seconds = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--fork-every") && i + 1 < argc) fork_every_ms = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--syscalls")) syscalls = 1;
		else { fprintf(stderr, "usage: %s [--threads N] [--fork-every MS] [--syscalls] [--seconds S]\n", argv[0]); return 2; }
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
	for (int i = 1; i < threads; i++) {
		pthread_t t;
		pthread_create(&t, NULL, worker, NULL);
	}
	worker(NULL);
	return 0;
}
