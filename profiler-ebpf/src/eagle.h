/* Types shared by the eBPF program (profiler.bpf.c) and the agent (src/lib.rs mirrors them with
 * #[repr(C)]). Changing one side without the other breaks map reads: keep them in step. */
#ifndef EAGLE_H
#define EAGLE_H

#define EAGLE_MAX_STACK_DEPTH 127

/* One aggregation bucket: a process and the pair of stacks it was sampled in. */
struct eagle_stack_key {
	__u32 tgid;
	__s32 user_stack_id;   /* >= 0: id in the stack map; < 0: -errno from bpf_get_stackid */
	__s32 kernel_stack_id; /* -EFAULT is normal: the sample hit user mode */
	__u32 _pad;
};

/* Value of the targets map. `root` lets the agent symbolize a forked child that exited before
 * it was read, with the binary of the target it came from, unless it exec'd another program. */
struct eagle_target {
	__u32 root;   /* tgid of the requested target this process descends from (itself if requested) */
	__u32 execed; /* execs since it was added: each may change its runtime (shell -> python) */
};

/* Indexes of the per-CPU counter array. */
enum eagle_counter {
	EAGLE_SAMPLES = 0,        /* samples that hit a target process, kept or lost */
	EAGLE_STACK_LOST = 1,     /* dropped: stack-map collision or full stack map */
	EAGLE_COUNTS_FULL = 2,    /* dropped: the counts map had no room */
	EAGLE_FORKS_FOLLOWED = 3, /* children added to the target set by the fork tracepoint */
	EAGLE_COUNTER_MAX = 4,
};

#endif
