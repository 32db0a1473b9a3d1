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
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "eagle.h"

char LICENSE[] SEC("license") = "GPL";

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

static __always_inline void bump(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);
	if (value)
		*value += 1; /* per-CPU slot: no other CPU writes it */
}

static __always_inline void record(void *counts, struct eagle_stack_key *key)
{
	__u64 one = 1;
	__u64 *value = bpf_map_lookup_elem(counts, key);
	if (value) {
		__sync_fetch_and_add(value, 1);
		return;
	}
	if (bpf_map_update_elem(counts, key, &one, BPF_NOEXIST) == 0)
		return;
	/* Another CPU inserted the same key between our lookup and update. */
	value = bpf_map_lookup_elem(counts, key);
	if (value)
		__sync_fetch_and_add(value, 1);
	else
		bump(EAGLE_COUNTS_FULL);
}

SEC("perf_event")
int sample_cpu(struct bpf_perf_event_data *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&targets, &tgid))
		return 0;
	bump(EAGLE_SAMPLES);

	__u32 zero = 0;
	__u32 *active_buffer = bpf_map_lookup_elem(&active, &zero);
	/* Read once: stacks and counts of one sample must land in the same buffer. */
	__u32 buffer = active_buffer ? *(volatile __u32 *)active_buffer : 0;
	struct eagle_stack_key key = { .tgid = tgid };

	if (buffer == 1) {
		key.user_stack_id = bpf_get_stackid(ctx, &stacks_1, BPF_F_USER_STACK);
		key.kernel_stack_id = bpf_get_stackid(ctx, &stacks_1, 0);
	} else {
		key.user_stack_id = bpf_get_stackid(ctx, &stacks_0, BPF_F_USER_STACK);
		key.kernel_stack_id = bpf_get_stackid(ctx, &stacks_0, 0);
	}
	/* -EFAULT only means "no stack of this kind" (a user-mode sample has no kernel stack);
	 * anything else is a collision or a full map, and the sample's stack is lost. */
	if ((key.user_stack_id < 0 && key.user_stack_id != -EFAULT) ||
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

/* The kernel's view of a task, reduced to the fields read here. `preserve_access_index` makes
 * every access a CO-RE relocation: the loader rewrites the offsets from the running kernel's BTF
 * (/sys/kernel/btf/vmlinux), so no header of the build machine's kernel is baked in. */
struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

/* A new task descends from a target: follow it if it is a new process. Threads need nothing:
 * their samples count under their process's tgid already. */
static __always_inline void follow_child(__u32 parent, __u32 child_tgid)
{
	if (child_tgid == 0 || child_tgid == parent)
		return;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &parent);
	if (!target)
		return;
	struct eagle_target followed = { .root = target->root };
	if (bpf_map_update_elem(&targets, &child_tgid, &followed, BPF_NOEXIST) == 0)
		bump(EAGLE_FORKS_FOLLOWED);
}

static __always_inline void count_exec(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct eagle_target *target = bpf_map_lookup_elem(&targets, &tgid);
	if (target)
		__sync_fetch_and_add(&target->execed, 1);
}

/* BTF-typed tracepoints (tp_btf): attached by BTF id, with the kernel's own typed arguments, so
 * they need neither tracefs nor record offsets read from its format files. Arguments of
 * sched_process_fork: (struct task_struct *parent, struct task_struct *child). */
SEC("tp_btf/sched_process_fork")
int follow_fork(__u64 *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx[1];
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	follow_child(parent, BPF_CORE_READ(child, tgid));
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
	follow_child(bpf_get_current_pid_tgid() >> 32, child);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int note_exec_tracefs(void *ctx)
{
	count_exec();
	return 0;
}
