// SPDX-License-Identifier: GPL-2.0
/* CPU sampling for kube-eagle.
 *
 * A perf_event program on the software CPU clock of every CPU. A sample counts only if its
 * process (tgid) is in `targets`, which the agent fills and the fork tracepoint extends, so
 * short-lived children are followed from their first instruction, not from the agent's next
 * /proc scan.
 *
 * Counts and stacks are double-buffered (`*_0`, `*_1`, selected by `active`): the agent flips
 * the buffer, lets in-flight samples land, then drains and clears the idle one. Draining a live
 * map instead would lose counts between read and delete, and clearing a live stack map would
 * invalidate ids that counts still point at.
 */
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <linux/errno.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "eagle.h"

/* The user registers the unwinder starts from, per architecture: the instruction pointer, the
 * stack pointer and the frame pointer (rbp; x29 on arm64, whose frame records have the same
 * layout: the caller's frame pointer, then the return address). */
#if defined(__TARGET_ARCH_arm64)
typedef struct user_pt_regs eagle_user_regs;
#define REGS_IN_USER_MODE(r) (((r).pstate & 0xf) == 0) /* PSR_MODE_EL0t */
#define REGS_IP(r) ((r).pc)
#define REGS_SP(r) ((r).sp)
#define REGS_BP(r) ((r).regs[29])
#define REGS_SYSCALL(r) 0 /* not in user_pt_regs: the stop site is told by the others */
#define REGS_ARG0(r) ((r).regs[0])
#else
typedef struct pt_regs eagle_user_regs;
#define REGS_IN_USER_MODE(r) (((r).cs & 3) == 3)
#define REGS_IP(r) ((r).rip)
#define REGS_SP(r) ((r).rsp)
#define REGS_BP(r) ((r).rbp)
#define REGS_SYSCALL(r) ((r).orig_rax)
#define REGS_ARG0(r) ((r).rdi)
#endif

char LICENSE[] SEC("license") = "GPL";

/* 0: walk every user stack by frame pointers, as before tables existed (for comparisons). */
const volatile __u32 UNWIND_WITH_TABLES = 1;

/* 1: a sample, fork or exec counts for a target only if the current process started when the
 * target did (`struct eagle_target.start`). The agent sets it when the kernel has BTF: the start
 * time is read through CO-RE relocations, which need it. */
const volatile __u32 CHECK_IDENTITY = 0;
/* Nanoseconds per clock tick (USER_HZ), the unit of /proc/PID/stat's start time. */
const volatile __u64 NSEC_PER_CLOCK_TICK = 10000000;

/* The CFS side of a task, for the time its group's CPU limit held it back. A task's
 * `se.cfs_rq` is its cgroup's run queue on the CPU it is queued on (with
 * CONFIG_FAIR_GROUP_SCHED); the bandwidth controller (CONFIG_CFS_BANDWIDTH) keeps there how
 * long that run queue has been throttled: `throttled_clock_self_time` adds up the throttled
 * periods that ended, and `throttled_clock_self` is when the current one began (0: none), both
 * on the clock of its CPU's run queue (`rq->clock`). Linux 6.5 and later. */
struct rq {
	__u64 clock;
} __attribute__((preserve_access_index));

struct cfs_rq {
	struct rq *rq;
	__u64 throttled_clock_self;
	__u64 throttled_clock_self_time;
} __attribute__((preserve_access_index));

struct sched_entity {
	struct cfs_rq *cfs_rq;
} __attribute__((preserve_access_index));

/* The kernel's view of a task, reduced to the fields read here. `preserve_access_index` makes
 * every access a CO-RE relocation: the loader rewrites the offsets from the running kernel's BTF
 * (/sys/kernel/btf/vmlinux), so no header of the build machine's kernel is baked in. */
struct task_struct {
	int pid;
	int tgid;
	struct task_struct *group_leader;
	__u64 start_boottime;
	struct sched_entity se;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tgid */
	__type(value, struct eagle_target);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active SEC(".maps");

/* Processes whose CPU samples are counted per thread (`eagle_stack_key.tid`): JVMs read by
 * Flight Recorder, whose threads outside Java code (compilers, GC) get their native stacks
 * from here. Any other process keeps one bucket per stack, whichever thread ran it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); /* tgid */
	__type(value, __u32);
} by_thread SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EAGLE_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define STACK_MAP(name)                                                   \
	struct {                                                              \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                           \
		__uint(max_entries, 16384);                                       \
		__uint(key_size, sizeof(__u32));                                  \
		__uint(value_size, EAGLE_MAX_STACK_DEPTH * sizeof(__u64));        \
	} name SEC(".maps")

#define COUNT_MAP(name)                                                   \
	struct {                                                              \
		__uint(type, BPF_MAP_TYPE_HASH);                                  \
		__uint(max_entries, 32768);                                       \
		__type(key, struct eagle_stack_key);                              \
		__type(value, __u64);                                             \
	} name SEC(".maps")

STACK_MAP(stacks_0);
STACK_MAP(stacks_1);
COUNT_MAP(counts_0);
COUNT_MAP(counts_1);

/* User stacks unwound with tables, keyed by a hash of their frames (see `unwind_user`).
 * Allocated as stacks come (1 KiB each), not 16 MiB up front per buffer. */
#define USER_STACK_MAP(name)                                              \
	struct {                                                              \
		__uint(type, BPF_MAP_TYPE_HASH);                                  \
		__uint(max_entries, 16384);                                       \
		__uint(map_flags, BPF_F_NO_PREALLOC);                             \
		__type(key, __u64);                                               \
		__type(value, struct eagle_user_stack);                           \
	} name SEC(".maps")

USER_STACK_MAP(ustacks_0);
USER_STACK_MAP(ustacks_1);

/* Off-CPU time, one entry per target thread (key: thread id): off the CPU now (blocked, or
 * runnable but not running: `woken` set) or not, with the stacks it last stopped at. LRU, so
 * an exited thread does not hold its entry for ever. No entry is inserted or deleted as a
 * thread stops, wakes and runs again: a block's wake-up turns it into a wait in place, and
 * the switch in claims it (`since` to 0). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct eagle_offcpu_start);
} offcpu_start SEC(".maps");

/* Each target thread's other stop site and its stacks (key: thread id): a thread that stops
 * in two places by turns (one end of a pipe: preempted in its write by the reader it woke,
 * then blocked in its read) finds either one, not only the last, and is not unwound again at
 * every other stop. Looked up only when the last site is not the one. */
struct eagle_alt_site {
	struct eagle_stack_key key;
	struct eagle_stop_site site;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct eagle_alt_site);
} offcpu_alt_sites SEC(".maps");

/* Room to swap a thread's two sites (too big for the program's stack beside the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct eagle_alt_site);
} offcpu_site_swap SEC(".maps");

/* The user stack from a stop site's first return-address slot to its last, read at once: a
 * `bpf_probe_read_user` costs mostly by the call (the checks around the copy), little by the
 * byte, and a reused site is compared at every stop of its thread that counts (at every switch
 * out where the kernel has no `sched_exit_tp`, or with no minimum duration:
 * `CHECK_SITES_AT_SWITCH_IN`). Four reads of one word each were half of `offcpu_switch`; one
 * read of the span (a few hundred bytes in the usual case) costs about a third of them
 * (docs/performance.md). Wider spans are read word by word. */
#define SITE_SPAN 1024
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[SITE_SPAN + 8]);
} offcpu_site_words SEC(".maps");

/* The stacks of blocks, kept for the whole run (not double-buffered): a block's stack is taken
 * when it starts and counted when it ends, possibly many buffer flips later. Blocking sites
 * are few (a program waits in a handful of places), so they fit. */
STACK_MAP(offcpu_stacks);
USER_STACK_MAP(offcpu_ustacks);

/* Blocks and waits shorter than this are not counted (the agent's --min-block-us). */
const volatile __u64 MIN_BLOCK_NS = 1000000;

/* 1: a stop at a known site (same registers, call and state) has its return addresses compared
 * when its thread runs again (`offcpu_switch_in`, on `sched_exit_tp`, Linux 6.16+), and only if
 * what it was off the CPU for is long enough to count; 0: at the switch out, every time. The
 * comparison reads the user stack, and one `bpf_probe_read_user` was 40 % of `offcpu_switch`
 * (docs/performance.md); most stops at a high switch rate are shorter than MIN_BLOCK_NS and need
 * no stacks at all. Until the thread runs again its user stack and saved registers are those it
 * stopped with. Set by the agent when the kernel has the tracepoint and MIN_BLOCK_NS is above 0
 * (with no minimum every stop counts, and deferring would spare nothing), unless
 * EAGLE_OFFCPU_CHECK_SITES=switch-out. */
const volatile __u32 CHECK_SITES_AT_SWITCH_IN = 0;

/* Per CPU: the thread just switched in whose off-CPU time `offcpu_switch_in` counts (0: none),
 * written by `offcpu_switch` right before the switch to it on this CPU. It spares the switch-in
 * program a map lookup at every other switch of the machine. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} offcpu_switching_in SEC(".maps");

/* `prev_state` of a thread's last switch, as it exits (include/linux/sched.h). */
#define TASK_DEAD 0x80


/* The executable mappings of each process the agent built tables for (key: tgid). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct eagle_process_maps);
} process_maps SEC(".maps");

/* One table per object, each an array of exactly its rows: the agent creates them with the
 * size the object needs (BPF_F_INNER_MAP lets sizes differ) and fills them through mmap. */
struct unwind_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct eagle_unwind_row));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, EAGLE_MAX_TABLES);
	__type(key, __u32);
	__array(values, struct unwind_table);
} unwind_tables SEC(".maps");

/* Processes whose tables the agent should build or refresh (key: tgid, value: generation,
 * | EAGLE_REQUEST_REFRESH, | EAGLE_REQUEST_OBJECT). The agent is woken by `unwind_doorbell`: a new process is unwound
 * within ms. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} unwind_requests SEC(".maps");

/* Counts of changes the agent looks at without a system call (`enum eagle_change`): it maps
 * the array, and reads the hash map a count is about only when the count moved (iterating
 * `unwind_requests` 200 times a second, and `targets` at every collection, was most of an idle
 * agent's CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EAGLE_CHANGE_KINDS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64); /* 8 bytes: an array's elements are 8-byte aligned in the mapping */
} changes SEC(".maps");

/* Counts one change of `kind`, after the change itself: a look that misses the change misses
 * its count too, and sees both next time. */
static __always_inline void count_change(__u32 kind)
{
	__u64 *count = bpf_map_lookup_elem(&changes, &kind);
	if (count)
		__sync_fetch_and_add(count, 1);
}

/* The unwind thread's bell: a record (the tgid, which the thread does not need) per request
 * made. The thread sleeps on this ring's descriptor, so that an idle node never wakes it (it
 * looked at the count of requests 200 times a second: a third of an idle agent's CPU) and a
 * request wakes it at once. A full ring loses records, not requests: the thread, woken by the
 * records in it, reads the requests map. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} unwind_doorbell SEC(".maps");

/* Asks the agent for `tgid`'s tables (see unwind_requests); one request per process at a time:
 * the request, then its count, then the bell, so that a thread woken by the bell sees both. An
 * object's request joins one already made (a refresh, which the agent serves at most every
 * 200 ms, would otherwise hold it back). */
static __always_inline void request_unwind(__u32 tgid, __u32 request)
{
	if (bpf_map_update_elem(&unwind_requests, &tgid, &request, BPF_NOEXIST) == 0) {
		count_change(EAGLE_CHANGE_REQUESTS);
		bpf_ringbuf_output(&unwind_doorbell, &tgid, sizeof(tgid), 0);
		return;
	}
	if (!(request & EAGLE_REQUEST_OBJECT))
		return;
	/* Not atomic (no 32-bit atomics before BPF v3): a bit lost to a race, or to the agent
	 * taking the request meanwhile, is asked again by the object's next sample. */
	__u32 *made = bpf_map_lookup_elem(&unwind_requests, &tgid);
	if (made && !(*made & EAGLE_REQUEST_OBJECT))
		*made |= EAGLE_REQUEST_OBJECT;
}

/* The unwinder's working state: too big for the 512-byte eBPF stack. */
struct unwind_state {
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u32 maps_tgid; /* whose `process_maps` entry describes this process's code */
	__u32 exact_ip;  /* ip is where the CPU was (leaf, after a signal), not a return address */
	/* Where the innermost frames' return addresses were read (`struct eagle_stop_site`). */
	__u64 ra_slot[EAGLE_SITE_CHECKS];
	struct eagle_user_stack stack;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_state);
} unwind_scratch SEC(".maps");

/* The weight of this CPU's samples, in EAGLE_SAMPLE_UNIT per sample at the asked frequency: its
 * current period over the asked one, written by the agent each time it redraws the period
 * (profiler-image/src/sampler/cpu_clock.rs). A sample's count is then CPU time whatever period
 * took it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sample_weight SEC(".maps");

static __always_inline void bump(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);
	if (value)
		*value += 1; /* per-CPU slot: no other CPU writes it */
}

/* When `task`'s process started, in the unit of `struct eagle_target.start`. */
static __always_inline __u64 process_start(struct task_struct *task)
{
	/* `task` is BTF-typed (the current task, or a tracepoint's argument): plain loads, which
	 * the verifier turns into guarded reads, cost a fraction of a helper call each. */
	return task->group_leader->start_boottime / NSEC_PER_CLOCK_TICK;
}

/* Is the current process the one `target` was made for, and not a later one that got its pid
 * after it ended (before the agent noticed and removed it)? */
static __always_inline int is_target_process(struct eagle_target *target)
{
	if (!CHECK_IDENTITY || target->start == 0)
		return 1;
	return process_start(bpf_get_current_task_btf()) == target->start;
}

/* Adds `n` to a key's count: a CPU sample's weight (EAGLE_SAMPLE_UNIT at the asked period),
 * nanoseconds per block. False when the map is full. */
static __always_inline int record_n(void *counts, struct eagle_stack_key *key, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(counts, key);
	if (value) {
		__sync_fetch_and_add(value, n);
		return 1;
	}
	if (bpf_map_update_elem(counts, key, &n, BPF_NOEXIST) == 0)
		return 1;
	/* Another CPU inserted the same key between our lookup and update. */
	value = bpf_map_lookup_elem(counts, key);
	if (!value)
		return 0;
	__sync_fetch_and_add(value, n);
	return 1;
}

/* Counts a CPU sample at this CPU's weight. */
static __always_inline void record(void *counts, struct eagle_stack_key *key)
{
	__u32 zero = 0;
	__u32 *weight = bpf_map_lookup_elem(&sample_weight, &zero);
	__u64 n = weight && *weight ? *weight : EAGLE_SAMPLE_UNIT;
	if (!record_n(counts, key, n))
		bump(EAGLE_COUNTS_FULL);
}

/* A binary search as a bpf_loop of its own: the verifier checks its body once, instead of every
 * step of an unrolled search inside every step of the unwinding loop (which took it seconds).
 * Finds the last element whose start is <= pc among [lo, hi). */
struct search {
	__u64 pc;
	__u32 lo;
	__u32 hi;
	__u32 key;  /* the tgid of the mapping list, or the table's slot */
	__u32 fail; /* set when a lookup failed: no answer */
};

static long mapping_search_step(__u32 index, void *ctx)
{
	struct search *q = ctx;
	if (q->lo >= q->hi)
		return 1;
	struct eagle_process_maps *maps = bpf_map_lookup_elem(&process_maps, &q->key);
	if (!maps) {
		q->fail = 1;
		return 1;
	}
	__u32 mid = (q->lo + q->hi) / 2;
	if (q->pc < maps->mappings[mid & (EAGLE_MAX_MAPPINGS - 1)].start)
		q->hi = mid;
	else
		q->lo = mid + 1;
	return 0;
}

/* The mapping of `pc` in a process's sorted mapping list, or NULL. */
static __always_inline struct eagle_mapping *find_mapping(struct eagle_process_maps *maps, __u32 tgid, __u64 pc)
{
	struct search q = { .pc = pc, .lo = 0, .hi = maps->count, .key = tgid };
	if (q.hi > EAGLE_MAX_MAPPINGS)
		q.hi = EAGLE_MAX_MAPPINGS;
	bpf_loop(EAGLE_MAPPING_STEPS, mapping_search_step, &q, 0);
	if (q.fail || q.lo == 0)
		return 0;
	struct eagle_mapping *m = &maps->mappings[(q.lo - 1) & (EAGLE_MAX_MAPPINGS - 1)];
	return pc < m->end ? m : 0;
}

static long row_search_step(__u32 index, void *ctx)
{
	struct search *q = ctx;
	if (q->lo >= q->hi)
		return 1;
	void *table = bpf_map_lookup_elem(&unwind_tables, &q->key);
	if (!table) {
		q->fail = 1;
		return 1;
	}
	__u32 mid = (q->lo + q->hi) / 2;
	struct eagle_unwind_row *row = bpf_map_lookup_elem(table, &mid);
	if (!row) {
		q->fail = 1;
		return 1;
	}
	if (q->pc < row->pc)
		q->hi = mid;
	else
		q->lo = mid + 1;
	return 0;
}

/* The row of `table` (in slot `slot`) covering `pc`: the last with row.pc <= pc. False if there
 * is none. */
static __always_inline int find_row(void *table, __u32 slot, __u32 rows, __u32 pc, struct eagle_unwind_row *out)
{
	struct search q = { .pc = pc, .lo = 0, .hi = rows, .key = slot };
	bpf_loop(EAGLE_TABLE_STEPS, row_search_step, &q, 0);
	if (q.fail || q.lo == 0)
		return 0;
	__u32 found = q.lo - 1;
	struct eagle_unwind_row *row = bpf_map_lookup_elem(table, &found);
	if (!row)
		return 0;
	*out = *row;
	return 1;
}

/* Return codes of one unwinding step, for bpf_loop: 0 goes on, 1 stops. */
#define STEP_ON 0
#define STEP_STOP 1

/* The caller's frame by the frame-pointer chain: for objects without tables (Go keeps frame
 * pointers, JIT code) and rows without a usable rule. */
static __always_inline long step_frame_pointer(struct unwind_state *s)
{
	__u64 frame[2]; /* saved rbp, return address */
	if (s->bp == 0)
		return STEP_STOP; /* the end of the chain: the outermost frame */
	if (bpf_probe_read_user(frame, sizeof(frame), (void *)s->bp) != 0) {
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
	}
	if (frame[1] == 0)
		return STEP_STOP;
	__u32 at = s->stack.len - 1;
	if (at < EAGLE_SITE_CHECKS)
		s->ra_slot[at] = s->bp + 8;
	s->sp = s->bp + 16;
	s->bp = frame[0];
	s->ip = frame[1];
	s->exact_ip = 0;
	return STEP_ON;
}

/* One frame: record s->ip, then find the caller's ip, sp and bp. A bpf_loop callback. */
static long unwind_step(__u32 index, void *ctx)
{
	__u32 zero = 0;
	struct unwind_state *s = bpf_map_lookup_elem(&unwind_scratch, &zero);
	if (!s)
		return STEP_STOP;
	__u32 len = s->stack.len;
	if (len >= EAGLE_UNWIND_DEPTH) {
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
	}
	s->stack.ips[len & (EAGLE_UNWIND_DEPTH - 1)] = s->ip;
	s->stack.len = len + 1;
	if (len + 1 >= EAGLE_UNWIND_DEPTH) {
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
	}

	struct eagle_process_maps *maps = bpf_map_lookup_elem(&process_maps, &s->maps_tgid);
	if (!maps) {
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
	}
	/* A return address is one past its call, which may be a function's last instruction
	 * (a call to a noreturn function): the call itself says which rules apply. */
	__u64 pc = s->exact_ip ? s->ip : s->ip - 1;
	struct eagle_mapping *m = find_mapping(maps, s->maps_tgid, pc);
	if (!m) {
		/* Code the agent does not know of (mapped since it read the process). */
		__u32 request = maps->generation | EAGLE_REQUEST_REFRESH;
		request_unwind(s->maps_tgid, request);
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
	}
	if (m->table == 0)
		return step_frame_pointer(s);
	if (m->table == EAGLE_TABLE_LAZY) {
		/* Marked as needed (the agent builds the tables of the marked mappings), asked for,
		 * and walked by frame pointers meanwhile, as a process without tables is. Marked
		 * only while still lazy and unmarked, `table` and `rows` as one 64-bit word (little
		 * endian: `table` low): were the entry freed and its memory reused for another
		 * process's since it was looked up, a loaded mapping's rows stay as they are. */
		__sync_val_compare_and_swap((__u64 *)&m->table, (__u64)EAGLE_TABLE_LAZY,
					    (__u64)EAGLE_TABLE_LAZY | (1ULL << 32));
		request_unwind(s->maps_tgid, maps->generation | EAGLE_REQUEST_OBJECT);
		s->stack.flags |= EAGLE_STACK_PENDING;
		return step_frame_pointer(s);
	}
	__u32 slot = m->table;
	__u32 rows = m->rows;
	__u64 relative = pc - m->bias;
	void *table = bpf_map_lookup_elem(&unwind_tables, &slot);
	if (!table) {
		s->stack.flags |= EAGLE_STACK_PENDING;
		return step_frame_pointer(s);
	}
	struct eagle_unwind_row row;
	if (relative > 0xffffffffULL || !find_row(table, slot, rows, (__u32)relative, &row))
		return step_frame_pointer(s);

	__u64 cfa;
	switch (row.kind & EAGLE_CFA_KIND_MASK) {
	case EAGLE_CFA_RSP:
		cfa = s->sp + row.cfa_offset;
		break;
	case EAGLE_CFA_RBP:
		cfa = s->bp + row.cfa_offset;
		break;
	case EAGLE_CFA_PLT:
		cfa = s->sp + 8 + ((s->ip & 15) >= row.cfa_offset ? 8 : 0);
		break;
	case EAGLE_CFA_SIGNAL: {
#if defined(__TARGET_ARCH_arm64)
		/* The agent builds tables for x86-64 code only: there is no arm64 signal row. */
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
#else
		/* rsp points at the ucontext of the rt_sigframe; its mcontext (at 40) holds rbp at
		 * 80, rsp at 120 and rip at 128: the interrupted code, at the instruction it was on. */
		__u64 regs[7]; /* rbp, rbx, rdx, rax, rcx, rsp, rip */
		if (bpf_probe_read_user(regs, sizeof(regs), (void *)(s->sp + 40 + 80)) != 0) {
			s->stack.flags |= EAGLE_STACK_TRUNCATED;
			return STEP_STOP;
		}
		if (len < EAGLE_SITE_CHECKS)
			s->ra_slot[len] = s->sp + 40 + 80 + 6 * 8;
		s->bp = regs[0];
		s->sp = regs[5];
		s->ip = regs[6];
		s->exact_ip = 1;
		return STEP_ON;
#endif
	}
	case EAGLE_CFA_END:
		return STEP_STOP;
	default:
		return step_frame_pointer(s);
	}

	__u64 ra = 0;
	if (bpf_probe_read_user(&ra, sizeof(ra), (void *)(cfa - 8)) != 0) {
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
	}
	if (row.kind & EAGLE_RBP_SAVED) {
		__u64 bp = 0;
		if (bpf_probe_read_user(&bp, sizeof(bp), (void *)(cfa + (__s64)row.rbp_offset * 8)) != 0) {
			s->stack.flags |= EAGLE_STACK_TRUNCATED;
			return STEP_STOP;
		}
		s->bp = bp;
	}
	if (ra == 0)
		return STEP_STOP; /* some outermost frames end the chain with a null return address */
	if (cfa <= s->sp) {
		/* The stack grows down: a caller's frame is above. Anything else is a loop. */
		s->stack.flags |= EAGLE_STACK_TRUNCATED;
		return STEP_STOP;
	}
	if (len < EAGLE_SITE_CHECKS)
		s->ra_slot[len] = cfa - 8;
	s->sp = cfa;
	s->ip = ra;
	s->exact_ip = 0;
	return STEP_ON;
}

/* The registers `task` saved on its entry to the kernel, where they are: a BTF-typed pointer
 * (`bpf_task_pt_regs`), read field by field with plain loads rather than copied whole with
 * `bpf_probe_read_kernel` (a helper call and 168 bytes, on every context switch in off-CPU
 * mode). arm64's kernel pt_regs starts with the user_pt_regs. */
static __always_inline const eagle_user_regs *saved_regs(struct task_struct *task)
{
	return (const eagle_user_regs *)bpf_task_pt_regs(task);
}

/* The current task's user registers as saved on its entry to the kernel. False for a kernel
 * thread. */
static __always_inline int saved_user_regs(__u64 *ip, __u64 *sp, __u64 *bp)
{
	/* Copied with the helper, not loaded field by field (`saved_regs`): the compiler would merge
	 * these loads with those of the sample's own registers in `user_regs`, one instruction for
	 * two kinds of pointer, which the verifier refuses. A sample is no hot path. */
	eagle_user_regs regs;
	if (bpf_probe_read_kernel(&regs, sizeof(regs), (void *)saved_regs(bpf_get_current_task_btf())) != 0)
		return 0;
	if (!REGS_IN_USER_MODE(regs))
		return 0; /* a kernel thread: no user stack */
	*ip = REGS_IP(regs);
	*sp = REGS_SP(regs);
	*bp = REGS_BP(regs);
	return 1;
}

/* The process's user registers: the sample's own when it hit user mode, else those saved on
 * entry to the kernel. */
static __always_inline int user_regs(struct bpf_perf_event_data *ctx, __u64 *ip, __u64 *sp, __u64 *bp)
{
	if (REGS_IN_USER_MODE(ctx->regs)) {
		*ip = REGS_IP(ctx->regs);
		*sp = REGS_SP(ctx->regs);
		*bp = REGS_BP(ctx->regs);
		return 1;
	}
	return saved_user_regs(ip, sp, bp);
}

/* Which `process_maps` entry describes `tgid`'s code now: its own, or, for a forked child that
 * did not exec, its root's. 0 when there is none up to date. */
static __always_inline __u32 maps_owner(__u32 tgid, struct eagle_target *target, __u32 *flags)
{
	struct eagle_process_maps *maps = bpf_map_lookup_elem(&process_maps, &tgid);
	if (maps && maps->generation == target->execed) {
		*flags = maps->flags;
		return tgid;
	}
	if (target->execed == 0 && target->root != tgid) {
		__u32 root = target->root;
		struct eagle_target *root_target = bpf_map_lookup_elem(&targets, &root);
		maps = bpf_map_lookup_elem(&process_maps, &root);
		if (root_target && maps && maps->generation == root_target->execed) {
			*flags = maps->flags;
			return root;
		}
	}
	return 0;
}

/* Unwinds a user stack with the tables into `ustacks`, from the registers the caller put in
 * the scratch state; sets the key's hash. False when it could not (the caller falls back to
 * frame pointers), < 0 when the stack could not be stored. */
static __always_inline int unwind_user(struct unwind_state *s, void *ustacks, __u32 owner,
				       struct eagle_stack_key *key)
{
	s->maps_tgid = owner;
	s->exact_ip = 1;
	s->stack.len = 0;
	s->stack.flags = 0;
	bpf_loop(EAGLE_UNWIND_DEPTH, unwind_step, 0, 0);

	/* FNV-1a over the frames: equal stacks share one entry. */
	__u32 len = s->stack.len;
	__u64 hash = 0xcbf29ce484222325ULL ^ len ^ ((__u64)s->stack.flags << 32);
	for (int i = 0; i < EAGLE_UNWIND_DEPTH; i++) {
		if (i >= len)
			break;
		hash = (hash ^ s->stack.ips[i]) * 0x100000001b3ULL;
	}
	/* What lies past `len` is left from earlier samples: the agent reads `len` frames. */
	long err = bpf_map_update_elem(ustacks, &hash, &s->stack, BPF_NOEXIST);
	if (err != 0 && err != -EEXIST)
		return -1;
	if (s->stack.flags & EAGLE_STACK_TRUNCATED)
		bump(EAGLE_UNWIND_TRUNCATED);
	/* A frame in an object whose table is not built yet was walked by frame pointers. */
	if (s->stack.flags & EAGLE_STACK_PENDING)
		bump(EAGLE_UNWIND_PENDING);
	key->user_stack_hash = hash;
	key->user_stack_id = -ENOENT;
	key->flags |= EAGLE_KEY_UNWOUND;
	return 1;
}

SEC("perf_event")
int sample_cpu(struct bpf_perf_event_data *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &tgid);
	if (!target)
		return 0;
	if (!is_target_process(target)) {
		bump(EAGLE_NOT_TARGET);
		return 0;
	}

	__u32 zero = 0;
	__u32 *active_buffer = bpf_map_lookup_elem(&active, &zero);
	/* Read once: stacks and counts of one sample must land in the same buffer. */
	__u32 buffer = active_buffer ? *(volatile __u32 *)active_buffer : 0;
	if (buffer >= EAGLE_WINDOW_ENDED)
		return 0;
	bump(EAGLE_SAMPLES);
	__u64 id = bpf_get_current_pid_tgid();
	struct eagle_stack_key key = { .tgid = tgid };
	if (bpf_map_lookup_elem(&by_thread, &tgid))
		key.tid = (__u32)id;

	/* User stacks by the tables where the agent built them; by frame pointers otherwise,
	 * as before, asking the agent for tables unless it gave up on this process. */
	__u32 process_flags = 0;
	__u32 owner = UNWIND_WITH_TABLES ? maps_owner(tgid, target, &process_flags) : 0;
	int unwound = 0;
	if (!UNWIND_WITH_TABLES) {
		/* frame pointers only */
	} else if (owner != 0 && !(process_flags & EAGLE_PROCESS_FRAME_POINTERS)) {
		struct unwind_state *s = bpf_map_lookup_elem(&unwind_scratch, &zero);
		if (s && user_regs(ctx, &s->ip, &s->sp, &s->bp))
			unwound = unwind_user(s, buffer == 1 ? (void *)&ustacks_1 : (void *)&ustacks_0, owner, &key);
		if (unwound < 0) {
			bump(EAGLE_STACK_LOST);
			return 0;
		}
		if (unwound)
			bump(EAGLE_UNWOUND);
	} else if (owner == 0) {
		__u32 generation = target->execed;
		request_unwind(tgid, generation);
		key.flags |= EAGLE_KEY_PENDING;
		bump(EAGLE_UNWIND_PENDING);
	}

	if (buffer == 1) {
		if (!unwound)
			key.user_stack_id = bpf_get_stackid(ctx, &stacks_1, BPF_F_USER_STACK);
		key.kernel_stack_id = bpf_get_stackid(ctx, &stacks_1, 0);
	} else {
		if (!unwound)
			key.user_stack_id = bpf_get_stackid(ctx, &stacks_0, BPF_F_USER_STACK);
		key.kernel_stack_id = bpf_get_stackid(ctx, &stacks_0, 0);
	}
	/* -EFAULT only means "no stack of this kind" (a user-mode sample has no kernel stack);
	 * anything else is a collision or a full map, and the sample's stack is lost. */
	if ((!unwound && key.user_stack_id < 0 && key.user_stack_id != -EFAULT) ||
	    (key.kernel_stack_id < 0 && key.kernel_stack_id != -EFAULT)) {
		bump(EAGLE_STACK_LOST);
		return 0;
	}

	if (buffer == 1)
		record(&counts_1, &key);
	else
		record(&counts_0, &key);
	return 0;
}

/* Off-CPU time, from the scheduler's own switch and wake-up events (BTF-typed: no tracefs).
 * Arguments: (bool preempt, struct task_struct *prev, struct task_struct *next,
 * unsigned int prev_state), the last since Linux 5.18. It runs on the CPU that switches, with
 * `prev` still current: its stacks are where it stopped.
 *
 * A target thread that leaves the CPU stops at a stack, taken now, and is off the CPU until it
 * is switched in again, in two ways:
 * - blocked (not runnable: prev_state != TASK_RUNNING, and not preempted) until it is woken
 *   (or switched in, whichever is seen first): a block;
 * - runnable but not running: preempted (or throttled: its group used up its CPU limit) until
 *   it runs again, or woken after a block until it runs: a wait. At its end the wait is split
 *   by how much of it its group spent throttled (`group_throttled`): that part is
 *   EAGLE_KEY_THROTTLED, the rest EAGLE_KEY_WAIT (waiting for a CPU).
 * Both are the thread's entry of `offcpu_start`, from the switch out to the switch in (`woken`:
 * 0 while blocked), so that none of the three, at 50,000 hand-offs a second, inserts or deletes
 * a map entry. Each is counted on its stacks if it lasted MIN_BLOCK_NS or more. */
struct task_struct;
static __always_inline int task_tid(struct task_struct *task);

static __always_inline void *active_counts(__u32 buffer)
{
	return buffer == 1 ? (void *)&counts_1 : (void *)&counts_0;
}

static __always_inline __u32 active_buffer_now(void)
{
	__u32 zero = 0;
	__u32 *active_buffer = bpf_map_lookup_elem(&active, &zero);
	return active_buffer ? *(volatile __u32 *)active_buffer : 0;
}

/* The CFS run queue `task` is queued on, or NULL (no group scheduling in this kernel). */
static __always_inline struct cfs_rq *task_cfs_rq(struct task_struct *task)
{
	if (!bpf_core_field_exists(task->se.cfs_rq))
		return 0;
	return task->se.cfs_rq;
}

/* How long a run queue has been throttled so far, in its run queue's clock: the periods that
 * ended (`total`) plus the one under way since `since` (0: none), up to `clock`. The difference
 * of two readings is the throttled time between them. */
static __always_inline __u64 throttled_so_far(__u64 total, __u64 since, __u64 clock, __u32 *throttled_now)
{
	if (since) {
		if (clock > since)
			total += clock - since;
		*throttled_now = 1;
	}
	return total;
}

/* That reading for a task's own run queue (`task_cfs_rq`: a BTF-typed pointer, plain loads, as
 * at every switch). 0 without the kernel's accounting (before 6.5, or without
 * CONFIG_CFS_BANDWIDTH). */
static __always_inline __u64 group_throttled(struct cfs_rq *cfs_rq, __u32 *throttled_now)
{
	if (!cfs_rq || !bpf_core_field_exists(cfs_rq->throttled_clock_self))
		return 0;
	__u64 since = cfs_rq->throttled_clock_self;
	return throttled_so_far(cfs_rq->throttled_clock_self_time, since, since ? cfs_rq->rq->clock : 0,
				throttled_now);
}

/* The same for a run queue whose address was kept in a map entry at an earlier event: a plain
 * number to the verifier, read with the helper (only where a wait long enough to count ends). */
static __always_inline __u64 kept_group_throttled(__u64 address, __u32 *throttled_now)
{
	struct cfs_rq *cfs_rq = (struct cfs_rq *)address;
	if (!cfs_rq || !bpf_core_field_exists(cfs_rq->throttled_clock_self))
		return 0;
	__u64 since = BPF_CORE_READ(cfs_rq, throttled_clock_self);
	return throttled_so_far(BPF_CORE_READ(cfs_rq, throttled_clock_self_time), since,
				since ? BPF_CORE_READ(cfs_rq, rq, clock) : 0, throttled_now);
}

/* `task` is runnable from `now` on: its wait begins, with its group's throttled time then. */
static __always_inline void begin_wait(struct task_struct *task, struct eagle_offcpu_start *entry, __u64 now)
{
	struct cfs_rq *cfs_rq = task_cfs_rq(task);
	__u32 throttled_then = 0;
	entry->cfs_rq = (__u64)cfs_rq;
	entry->throttled = group_throttled(cfs_rq, &throttled_then);
	entry->throttled_then = throttled_then;
	entry->woken = now;
}

/* Counts a block of `blocked` ns on the stacks of `at` (a thread's entry), if long enough. The
 * key is copied only then: most blocks at a high switch rate are short. */
static __always_inline void count_block(const struct eagle_stack_key *at, __u64 blocked, __u32 buffer)
{
	if (blocked < MIN_BLOCK_NS) {
		bump(EAGLE_OFFCPU_SHORT);
		return;
	}
	struct eagle_stack_key key = *at;
	if (record_n(active_counts(buffer), &key, blocked))
		bump(EAGLE_OFFCPU_BLOCKS);
	else
		bump(EAGLE_COUNTS_FULL);
}

/* Is a block of `blocked` ns, ended by a wake-up, left uncounted by it for the thread's switch
 * in? When it counts, on stacks whose return addresses are not compared yet. The wake-up
 * decides before it sets `woken`, and the switch in after it takes `since`, with
 * `site_unchecked` as the thread's switch out left it (only the switch in clears it, after
 * that), so both decide alike. */
static __always_inline int block_left(const struct eagle_offcpu_start *entry, __u64 blocked)
{
	return CHECK_SITES_AT_SWITCH_IN && entry->site_unchecked && blocked >= MIN_BLOCK_NS;
}

/* A block ends when its thread is woken (runnable again), and the time it then waits for a CPU
 * begins, on the same stacks. The block is counted once: by whoever sets `woken` first, this
 * or the thread's switch in on another CPU. */
static __always_inline void end_block(struct task_struct *task, __u64 now)
{
	__u32 tid = task_tid(task);
	struct eagle_offcpu_start *entry = bpf_map_lookup_elem(&offcpu_start, &tid);
	if (!entry)
		return;
	__u64 since = entry->since;
	if (since == 0 || entry->woken != 0)
		return; /* not blocked: running, preempted, or woken already */
	__u32 buffer = active_buffer_now();
	/* After the window: the block stays for the agent, which counts it up to the window's
	 * end (`close_blocks`). */
	if (buffer >= EAGLE_WINDOW_ENDED)
		return;
	/* The group's reading first: once `woken` is set, a switch in may end the wait. */
	struct cfs_rq *cfs_rq = task_cfs_rq(task);
	__u32 throttled_then = 0;
	entry->cfs_rq = (__u64)cfs_rq;
	entry->throttled = group_throttled(cfs_rq, &throttled_then);
	entry->throttled_then = throttled_then;
	/* Stacks not compared yet: the block (`woken - since`) is left for its thread's switch in,
	 * which compares them first (`count_off_cpu`). Decided before `woken` is set: after it,
	 * the switch in may compare the site and clear `site_unchecked`. */
	int left = block_left(entry, now - since);
	if (__sync_val_compare_and_swap(&entry->woken, 0, now) != 0)
		return;
	if (!left)
		count_block(&entry->key, now - since, buffer);
}

static __always_inline int stopped_stacks(__u64 *ctx, __u32 tgid, struct eagle_target *target, __u32 how,
					  struct eagle_offcpu_start *entry, int check_later);
static __always_inline int same_return_addresses(const struct eagle_stop_site *site);

/* The current thread, switched in, was off the CPU long enough to count on the stacks of its
 * entry, whose return addresses were not compared at the switch out: compared now (its user
 * stack is as it stopped), and the stacks taken again if they differ. False when they could
 * not be taken. */
static __always_inline int checked_site(__u64 *ctx, struct eagle_offcpu_start *entry)
{
	entry->site_unchecked = 0;
	if (same_return_addresses(&entry->site))
		return 1;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &tgid);
	if (!target)
		return 0;
	return stopped_stacks(ctx, tgid, target, entry->site.how, entry, 0);
}

static __always_inline void count_off_cpu(__u64 *ctx, struct eagle_offcpu_start *entry, __u64 now, __u32 buffer,
					  int may_check);

/* The block to count for `entry`'s thread as it is switched in at `now`, off the CPU since
 * `since` and runnable since `woken`: ending now (its wake-up not seen), or ended at its wake-up
 * and left for this (a preemption's wait begins with `woken` = `since`: no block). */
static __always_inline __u64 block_at_switch_in(const struct eagle_offcpu_start *entry, __u64 since, __u64 woken,
						__u64 now)
{
	if (woken == 0)
		return now - since;
	return block_left(entry, woken - since) ? woken - since : 0;
}

/* Would what `entry`'s thread was off the CPU for count, if it ended at `now`? Read without
 * taking it. A wake-up of the thread runs under its run queue's lock, as this switch does, so
 * none races with it. */
static __always_inline int counts_if_ended(const struct eagle_offcpu_start *entry, __u64 now)
{
	__u64 woken = entry->woken;
	return block_at_switch_in(entry, entry->since, woken, now) >= MIN_BLOCK_NS ||
	       (woken != 0 && now - woken >= MIN_BLOCK_NS);
}

/* Thread `tid` is switched in at `now`: what it was off the CPU for is counted (`count_off_cpu`),
 * here, or right after the switch in the thread itself when its stacks must be compared first. */
static __always_inline void end_off_cpu(__u32 tid, __u64 now, __u32 buffer)
{
	struct eagle_offcpu_start *entry = bpf_map_lookup_elem(&offcpu_start, &tid);
	if (!entry || entry->since == 0)
		return;
	/* After the window: the agent counts it up to the window's end (`close_blocks`). */
	if (buffer >= EAGLE_WINDOW_ENDED)
		return;
	if (CHECK_SITES_AT_SWITCH_IN && entry->site_unchecked && counts_if_ended(entry, now)) {
		/* Its stacks are needed: left to `offcpu_switch_in`, in the thread itself, right after
		 * this switch. (Most are not: counted here, as short, with no second lookup there.) */
		__u32 zero = 0;
		__u32 *switching_in = bpf_map_lookup_elem(&offcpu_switching_in, &zero);
		if (switching_in)
			*switching_in = tid;
		return;
	}
	count_off_cpu(0, entry, now, buffer, 0);
}

/* What `entry`'s thread, switched in at `now`, was off the CPU for is counted: a block whose
 * wake-up was not seen (woken before it was counted as blocked) ends here, and so does a wait,
 * split into the time its group was throttled and the rest. `may_check`: in the
 * thread itself (`offcpu_switch_in`, event `ctx`), where stacks not compared at the switch out
 * can be. */
static __always_inline void count_off_cpu(__u64 *ctx, struct eagle_offcpu_start *entry, __u64 now, __u32 buffer,
					  int may_check)
{
	/* Counted once, by whoever takes `since`. */
	__u64 since = __sync_lock_test_and_set(&entry->since, 0);
	if (since == 0)
		return;
	/* The entry stays as it is until the thread stops again, on this CPU, after this: it is
	 * read in place, not copied (most waits at a high switch rate are short). */
	__u64 woken = __sync_val_compare_and_swap(&entry->woken, 0, now);
	__u64 blocked = block_at_switch_in(entry, since, woken, now);
	__u64 waited = woken == 0 ? 0 : now - woken;
	if (may_check && entry->site_unchecked && (blocked >= MIN_BLOCK_NS || waited >= MIN_BLOCK_NS) &&
	    !checked_site(ctx, entry)) {
		bump(EAGLE_OFFCPU_LOST);
		return;
	}
	if (woken == 0 || blocked != 0)
		count_block(&entry->key, blocked, buffer);
	if (woken == 0)
		return;
	if (waited < MIN_BLOCK_NS) {
		bump(EAGLE_WAITS_SHORT);
		return;
	}
	/* The group's throttled time since the wait began is the part its CPU limit held the
	 * thread back. (A thread moved to another CPU while it waited is judged by the run queue
	 * it waited on first: a throttled thread is not moved, it waits where it was throttled.) */
	__u32 throttled_now = 0;
	__u64 throttled_after = kept_group_throttled(entry->cfs_rq, &throttled_now);
	__u64 throttled = throttled_after > entry->throttled ? throttled_after - entry->throttled : 0;
	if (throttled > waited)
		throttled = waited;
	struct eagle_stack_key key = entry->key;
	void *counts = active_counts(buffer);
	int kept = 1;
	if (throttled > 0) {
		key.flags |= EAGLE_KEY_THROTTLED;
		kept &= record_n(counts, &key, throttled);
		key.flags &= ~EAGLE_KEY_THROTTLED;
	}
	if (waited > throttled) {
		key.flags |= EAGLE_KEY_WAIT;
		kept &= record_n(counts, &key, waited - throttled);
	}
	bump(kept ? EAGLE_WAITS : EAGLE_COUNTS_FULL);
}

/* sched_wakeup: (struct task_struct *p), on the waker's CPU, once `p` is queued to run. */
SEC("tp_btf/sched_wakeup")
int offcpu_wakeup(__u64 *ctx)
{
	end_block((struct task_struct *)ctx[0], bpf_ktime_get_ns());
	return 0;
}

/* sched_wakeup_new: (struct task_struct *p), a new thread or process queued to run for the
 * first time. Until it runs it waits for a CPU like any woken thread (a busy machine keeps a new
 * thread waiting a while); it has run nothing yet, so its wait has no stacks. */
SEC("tp_btf/sched_wakeup_new")
int offcpu_wakeup_new(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	if (active_buffer_now() >= EAGLE_WINDOW_ENDED)
		return 0;
	__u32 tgid = task->tgid;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &tgid);
	if (!target)
		return 0;
	/* Its own process's start: `current` is its parent, another process after a fork. */
	if (CHECK_IDENTITY && target->start != 0 && process_start(task) != target->start)
		return 0;
	/* No site: its first stop takes its stacks. */
	struct eagle_offcpu_start waiting = {
		.key = { .tgid = tgid, .user_stack_id = -EFAULT, .kernel_stack_id = -EFAULT, .flags = EAGLE_KEY_OFFCPU }
	};
	__u64 now = bpf_ktime_get_ns();
	waiting.since = now;
	begin_wait(task, &waiting, now);
	__u32 tid = task_tid(task);
	if (bpf_map_update_elem(&offcpu_start, &tid, &waiting, BPF_ANY) != 0)
		bump(EAGLE_OFFCPU_LOST);
	return 0;
}

/* Are the return addresses `site` keeps still in the slots of the current thread's user stack
 * where the unwinder read them? */
static __always_inline int same_return_addresses(const struct eagle_stop_site *site)
{
	__u32 checks = site->checks;
	if (checks == 0)
		return 1;
	__u64 first = site->ra_slot[0];
	__u64 last = site->ra_slot[(checks - 1) & (EAGLE_SITE_CHECKS - 1)];
	__u32 zero = 0;
	__u8 *words = bpf_map_lookup_elem(&offcpu_site_words, &zero);
	if (words && checks <= EAGLE_SITE_CHECKS && last >= first && last - first <= SITE_SPAN - 8) {
		__u32 span = (__u32)(last - first) + 8;
		if (bpf_probe_read_user(words, span, (void *)first) != 0)
			return 0;
		for (int i = 0; i < EAGLE_SITE_CHECKS; i++) {
			if (i >= checks)
				break;
			/* Slots out of order (a hostile stack) read as a difference: the stacks are
			 * taken again. */
			__u64 at = site->ra_slot[i] - first;
			if (at > span - 8)
				return 0;
			__u64 ra;
			__builtin_memcpy(&ra, words + (at & (SITE_SPAN - 1)), sizeof(ra));
			if (ra != site->ra[i])
				return 0;
		}
		return 1;
	}
	for (int i = 0; i < EAGLE_SITE_CHECKS; i++) {
		if (i >= checks)
			break;
		__u64 ra = 0;
		if (bpf_probe_read_user(&ra, sizeof(ra), (void *)site->ra_slot[i]) != 0 || ra != site->ra[i])
			return 0;
	}
	return 1;
}

/* Is the current thread, its user registers `regs` as it entered the kernel, stopping in the
 * way `how` at the site `site` where the stacks of `key` were taken? The same registers, system
 * call and first argument, the same program (no exec since), and, unless `check_later`, the
 * same innermost return addresses on its stack (the same registers reached from another caller
 * differ there; `checked_site` compares them when the thread runs again). */
static __always_inline int same_site(const struct eagle_stop_site *site, const struct eagle_stack_key *key,
				     const eagle_user_regs *regs, __u32 how, const struct eagle_target *target,
				     __u32 tgid, int check_later)
{
	if (site->ip == 0 || site->ip != REGS_IP(*regs) || site->sp != REGS_SP(*regs) || site->bp != REGS_BP(*regs) ||
	    site->syscall != REGS_SYSCALL(*regs) || site->arg0 != REGS_ARG0(*regs) || site->how != how ||
	    site->execed != target->execed || key->tgid != tgid)
		return 0;
	return check_later || same_return_addresses(site);
}

/* The stacks the current thread (of target process `tgid`) stops at, from the switch event
 * `ctx`, in the way `how` (see `struct eagle_stop_site`), into its `entry`: those already there
 * if it stopped at the same site last time, else taken now. False when they could not be kept.
 * `check_later`: a known site's return addresses are left to `checked_site`. */
static __always_inline int stopped_stacks(__u64 *ctx, __u32 tgid, struct eagle_target *target, __u32 how,
					  struct eagle_offcpu_start *entry, int check_later)
{
	const eagle_user_regs *regs = saved_regs(bpf_get_current_task_btf());
	/* False for a thread with no user side (a process's io_uring worker): its kernel stack. */
	int user = REGS_IN_USER_MODE(*regs);
	struct eagle_stop_site *last = &entry->site;
	if (user && same_site(last, &entry->key, regs, how, target, tgid, check_later)) {
		entry->site_unchecked = check_later;
		bump(EAGLE_STOP_SITES_REUSED);
		return 1;
	}
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct eagle_alt_site *alt = bpf_map_lookup_elem(&offcpu_alt_sites, &tid);
	struct eagle_alt_site *swap = bpf_map_lookup_elem(&offcpu_site_swap, &zero);
	if (user && alt && swap && same_site(&alt->site, &alt->key, regs, how, target, tgid, check_later)) {
		/* Its other site: the two change places. */
		swap->key = entry->key;
		swap->site = entry->site;
		entry->key = alt->key;
		entry->site = alt->site;
		alt->key = swap->key;
		alt->site = swap->site;
		entry->site_unchecked = check_later;
		bump(EAGLE_STOP_SITES_REUSED);
		return 1;
	}
	/* A new site: the last one becomes the other. */
	if (last->ip != 0) {
		if (alt) {
			alt->key = entry->key;
			alt->site = entry->site;
		} else if (swap) {
			swap->key = entry->key;
			swap->site = entry->site;
			bpf_map_update_elem(&offcpu_alt_sites, &tid, swap, BPF_ANY);
		}
	}

	struct eagle_stack_key *key = &entry->key;
	key->tgid = tgid;
	key->flags = EAGLE_KEY_OFFCPU;
	key->user_stack_hash = 0;
	key->tid = 0;
	/* No site to reuse until the stacks below are kept; those are taken here, not compared. */
	last->ip = 0;
	entry->site_unchecked = 0;
	__u32 process_flags = 0;
	__u32 owner = UNWIND_WITH_TABLES ? maps_owner(tgid, target, &process_flags) : 0;
	int unwound = 0;
	/* A frame in a mapping whose table was not built yet was walked by frame pointers. */
	int partly_pending = 0;
	__u32 checks = 0;
	if (owner != 0 && !(process_flags & EAGLE_PROCESS_FRAME_POINTERS)) {
		struct unwind_state *s = bpf_map_lookup_elem(&unwind_scratch, &zero);
		if (s && user) {
			s->ip = REGS_IP(*regs);
			s->sp = REGS_SP(*regs);
			s->bp = REGS_BP(*regs);
			unwound = unwind_user(s, &offcpu_ustacks, owner, key);
			partly_pending = s->stack.flags & EAGLE_STACK_PENDING;
			/* The return addresses read: frames 1 to `checks` of the stack. */
			if (unwound > 0) {
				__u32 len = s->stack.len;
				checks = len > EAGLE_SITE_CHECKS ? EAGLE_SITE_CHECKS : (len > 0 ? len - 1 : 0);
				for (int i = 0; i < EAGLE_SITE_CHECKS; i++) {
					if (i >= checks)
						break;
					last->ra_slot[i] = s->ra_slot[i];
					last->ra[i] = s->stack.ips[(i + 1) & (EAGLE_UNWIND_DEPTH - 1)];
				}
			}
		}
		if (unwound < 0)
			return 0;
	} else if (UNWIND_WITH_TABLES && owner == 0) {
		__u32 generation = target->execed;
		request_unwind(tgid, generation);
		key->flags |= EAGLE_KEY_PENDING;
	}
	if (!unwound)
		key->user_stack_id = bpf_get_stackid(ctx, &offcpu_stacks, BPF_F_USER_STACK);
	key->kernel_stack_id = bpf_get_stackid(ctx, &offcpu_stacks, 0);
	if ((!unwound && key->user_stack_id < 0 && key->user_stack_id != -EFAULT) ||
	    (key->kernel_stack_id < 0 && key->kernel_stack_id != -EFAULT))
		return 0;
	/* Reused only when unwound with the tables, which say where the return addresses were: a
	 * frame-pointer walk (the tables not ready, or a process walked so), whole or in part (an
	 * object whose table is being built), is taken each time. */
	if (user && unwound > 0 && !partly_pending) {
		last->checks = checks;
		last->sp = REGS_SP(*regs);
		last->bp = REGS_BP(*regs);
		last->syscall = REGS_SYSCALL(*regs);
		last->arg0 = REGS_ARG0(*regs);
		last->how = how;
		last->execed = target->execed;
		last->ip = REGS_IP(*regs);
	}
	return 1;
}

SEC("tp_btf/sched_switch")
int offcpu_switch(__u64 *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	struct task_struct *next = (struct task_struct *)ctx[2];
	__u32 buffer = active_buffer_now();
	/* The thread switched in is off the CPU no more. */
	end_off_cpu(task_tid(next), now, buffer);
	if (buffer >= EAGLE_WINDOW_ENDED)
		return 0; /* nothing starts after the window */

	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = (__u32)id;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &tgid);
	if (!target || !is_target_process(target))
		return 0;

	int preempted = (int)ctx[0];
	unsigned int prev_state = (unsigned int)ctx[3];
	/* An exiting thread's last switch: it is gone, not blocked. */
	if (prev_state & TASK_DEAD)
		return 0;
	struct eagle_offcpu_start *entry = bpf_map_lookup_elem(&offcpu_start, &tid);
	if (!entry) {
		/* Its first stop. (On a CPU: `since` 0.) */
		struct eagle_offcpu_start fresh = {};
		bpf_map_update_elem(&offcpu_start, &tid, &fresh, BPF_NOEXIST);
		entry = bpf_map_lookup_elem(&offcpu_start, &tid);
		if (!entry) {
			bump(EAGLE_OFFCPU_LOST);
			return 0;
		}
	}
	if (!stopped_stacks(ctx, tgid, target, prev_state << 1 | (preempted != 0), entry, CHECK_SITES_AT_SWITCH_IN)) {
		bump(EAGLE_OFFCPU_LOST);
		return 0;
	}
	/* Still runnable: preempted, or throttled by its group's CPU limit. */
	if (preempted || prev_state == 0)
		begin_wait((struct task_struct *)ctx[1], entry, now);
	else
		entry->woken = 0;
	/* Last: from here a wake-up or the agent may read the entry. */
	__sync_lock_test_and_set(&entry->since, now);
	return 0;
}

/* sched_exit_tp (its arguments, unread here, differ between kernels): at the end of `__schedule`,
 * in the thread that now runs (after a switch: the one switched in, still in the kernel, its user
 * stack as it stopped). A new thread's first run passes it too (`schedule_tail`); its entry
 * (`offcpu_wakeup_new`) is never left here, so the slot does not name it. Counts
 * what a thread whose site was not compared at its switch out (`CHECK_SITES_AT_SWITCH_IN`) was
 * off the CPU for, comparing the site only if that is long enough to count. Every other
 * thread's is counted at the switch, as without this program. */
SEC("tp_btf/sched_exit_tp")
int offcpu_switch_in(__u64 *ctx)
{
	__u32 zero = 0;
	__u32 *switching_in = bpf_map_lookup_elem(&offcpu_switching_in, &zero);
	if (!switching_in || *switching_in == 0)
		return 0;
	__u32 tid = *switching_in;
	*switching_in = 0;
	/* Preemption stays off from the switch to here: the thread that runs is that one. */
	if (tid != (__u32)bpf_get_current_pid_tgid())
		return 0;
	struct eagle_offcpu_start *entry = bpf_map_lookup_elem(&offcpu_start, &tid);
	if (!entry)
		return 0;
	__u32 buffer = active_buffer_now();
	if (buffer >= EAGLE_WINDOW_ENDED)
		return 0;
	count_off_cpu(ctx, entry, bpf_ktime_get_ns(), buffer, 1);
	return 0;
}

static __always_inline int task_tid(struct task_struct *task)
{
	return task->pid;
}

/* A new task descends from a target: follow it if it is a new process. Threads need nothing:
 * their samples count under their process's tgid already. `child_start`: when the child
 * started (0: unknown), so that its samples are told from a later process with its pid too. */
static __always_inline void follow_child(__u32 parent, __u32 child_tgid, __u64 child_start)
{
	if (child_tgid == 0 || child_tgid == parent)
		return;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &parent);
	if (!target || !is_target_process(target))
		return;
	struct eagle_target followed = { .root = target->root, .start = child_start };
	if (bpf_map_update_elem(&targets, &child_tgid, &followed, BPF_NOEXIST) == 0) {
		bump(EAGLE_FORKS_FOLLOWED);
		count_change(EAGLE_CHANGE_TARGETS);
	}
}

static __always_inline void count_exec(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &tgid);
	if (target && is_target_process(target)) {
		__sync_fetch_and_add(&target->execed, 1);
		count_change(EAGLE_CHANGE_TARGETS);
	}
}

/* BTF-typed tracepoints (tp_btf): attached by BTF id, with the kernel's own typed arguments, so
 * they need neither tracefs nor record offsets read from its format files. Arguments of
 * sched_process_fork: (struct task_struct *parent, struct task_struct *child). */
SEC("tp_btf/sched_process_fork")
int follow_fork(__u64 *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx[1];
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	/* The child is a new process (not a thread) exactly when it leads its group: its own start. */
	follow_child(parent, child->tgid, CHECK_IDENTITY ? process_start(child) : 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int note_exec(__u64 *ctx)
{
	count_exec();
	return 0;
}

/* Fallback for kernels without BTF: the classic tracepoints, attached through tracefs, whose
 * record layout the agent reads from the format file (child_pid moved in Linux 6.x). */
const volatile __u32 CHILD_PID_OFFSET = 20;

SEC("tracepoint/sched/sched_process_fork")
int follow_fork_tracefs(void *ctx)
{
	__s32 child = 0;
	if (bpf_probe_read_kernel(&child, sizeof(child), (char *)ctx + CHILD_PID_OFFSET) != 0 || child <= 0)
		return 0;
	/* The record names the child's thread id, not its tgid: a new thread of a target is added
	 * too, and the agent prunes it (no sample's tgid matches it). */
	follow_child(bpf_get_current_pid_tgid() >> 32, child, 0);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int note_exec_tracefs(void *ctx)
{
	count_exec();
	return 0;
}

/* Kernel frames named by the kernel itself: the agent writes up to EAGLE_KSYM_BATCH addresses
 * into `ksym_addrs` and runs this program once (BPF_PROG_TEST_RUN, the count as its first
 * argument); `%ps` looks each up in the kernel's symbol table (a binary search; a module's is
 * scanned) and writes its
 * name, with " [module]" for a module's, or its address in hex when no symbol holds it; an
 * empty name where it failed or would not fit (the agent asks kallsyms then). Reading
 * /proc/kallsyms instead makes the kernel format every one of its 120,000 lines (about 50 ms of
 * system time, each run, for a few hundred names). Never attached. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EAGLE_KSYM_BATCH);
	__type(key, __u32);
	__type(value, __u64);
} ksym_addrs SEC(".maps");

struct eagle_ksym_name {
	char name[EAGLE_KSYM_NAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EAGLE_KSYM_BATCH);
	__type(key, __u32);
	__type(value, struct eagle_ksym_name);
} ksym_names SEC(".maps");

static long name_one_address(__u64 i, void *ctx)
{
	__u32 k = i;
	__u64 *addr = bpf_map_lookup_elem(&ksym_addrs, &k);
	struct eagle_ksym_name *out = bpf_map_lookup_elem(&ksym_names, &k);
	if (!addr || !out)
		return 1;
	__u64 args[1] = { *addr };
	long written = bpf_snprintf(out->name, sizeof(out->name), "%ps", args, sizeof(args));
	if (written < 0 || written > (long)sizeof(out->name))
		out->name[0] = 0;
	return 0;
}

SEC("raw_tp/eagle_name_kernel_addresses")
int name_kernel_addresses(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 count = ctx->args[0];
	if (count > EAGLE_KSYM_BATCH)
		count = EAGLE_KSYM_BATCH;
	/* How many were named: the agent reads no name past it. */
	return bpf_loop(count, name_one_address, NULL, 0);
}
