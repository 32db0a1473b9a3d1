/* Types shared by the eBPF program (profiler.bpf.c) and the agent (src/lib.rs mirrors them with
 * #[repr(C)]). Changing one side without the other breaks map reads: keep them in step. */
#ifndef EAGLE_H
#define EAGLE_H

#define EAGLE_MAX_STACK_DEPTH 127

/* Frames kept per user stack unwound with tables (a power of two: indexes are masked). */
#define EAGLE_UNWIND_DEPTH 128
/* Executable mappings of one process the unwinder knows (a power of two). */
#define EAGLE_MAX_MAPPINGS 256
/* Steps of the binary search in one mapping list: log2(EAGLE_MAX_MAPPINGS) + 1. */
#define EAGLE_MAPPING_STEPS 9
/* Unwind tables loaded at once, one per object (deduplicated by device and inode). */
#define EAGLE_MAX_TABLES 4096
/* Rows of one object's table are fewer than 2^EAGLE_TABLE_STEPS. */
#define EAGLE_TABLE_STEPS 24

/* Return addresses a stop site's reuse compares (see `struct eagle_stop_site`). */
#define EAGLE_SITE_CHECKS 4
/* Kernel addresses named in one run of `name_kernel_addresses`, and the room for each name:
 * KSYM_NAME_LEN (512 since Linux 6.1, for Rust's long names). */
#define EAGLE_KSYM_BATCH 256
#define EAGLE_KSYM_NAME 512

/* One aggregation bucket: a process and the pair of stacks it was sampled in. */
struct eagle_stack_key {
	__u32 tgid;
	__s32 user_stack_id;   /* >= 0: id in the stack map; < 0: -errno from bpf_get_stackid */
	__s32 kernel_stack_id; /* -EFAULT is normal: the sample hit user mode */
	__u32 flags;           /* enum eagle_key_flag */
	__u64 user_stack_hash; /* with EAGLE_KEY_UNWOUND: key of the user stack in `ustacks_N` */
	__u32 tid;             /* the thread, for processes in `by_thread` (a JVM's threads outside
	                        * Java code get their native stacks); 0 for the others */
	__u32 _pad;
};

/* Written into `active` (instead of a buffer, 0 or 1) when the sampling window ends: no sample
 * is taken after it, however late the agent's last collection comes. */
#define EAGLE_WINDOW_ENDED 2
/* What one CPU sample at the asked frequency adds to its stack's count: the agent redraws each
 * CPU's period and weighs its samples by it (`sample_weight`), in these units. */
#define EAGLE_SAMPLE_UNIT 1024

enum eagle_key_flag {
	/* The user stack was unwound with tables and is `ustacks_N[user_stack_hash]`. */
	EAGLE_KEY_UNWOUND = 1,
	/* The process's tables were not ready: the user stack is a frame-pointer walk. */
	EAGLE_KEY_PENDING = 2,
	/* Time blocked, not a CPU sample: the count is nanoseconds, and the stacks are in
	 * `offcpu_stacks` / `offcpu_ustacks` (which live for the whole run). */
	EAGLE_KEY_OFFCPU = 4,
	/* With EAGLE_KEY_OFFCPU: time runnable but waiting for a CPU (preempted, or woken and not
	 * yet running), not blocked. */
	EAGLE_KEY_WAIT = 8,
	/* With EAGLE_KEY_OFFCPU: time runnable but held back by its cgroup's CPU limit (the CFS
	 * bandwidth controller throttled its group). */
	EAGLE_KEY_THROTTLED = 16,
};

/* Where a thread stopped, told by what is cheap to read at the switch. Taking a block's stacks
 * (the kernel's walk of its own stack, the user stack's unwinding) is most of what following
 * the scheduler costs, and a thread that switches often stops at the same few places (a read
 * on a pipe, a futex wait), each time with the same user registers, in the same system call,
 * in the same way (blocked in the same state, or preempted): then its stacks are those of last
 * time. (Its kernel stack's depth would tell more, but the kernel moves the stack by a random
 * offset at every system call.) */
struct eagle_stop_site {
	__u64 ip;      /* user registers saved as it entered the kernel; 0: no site to reuse */
	__u64 sp;
	__u64 bp;
	__u64 syscall; /* the system call it is in (x86-64's orig_rax; -1: none) */
	__u64 arg0;    /* its first argument (a file descriptor, a futex): where in the kernel */
	__u32 how;     /* prev_state << 1 | preempted */
	__u32 execed;  /* the process's execs then: another program after one */
	__u32 checks;  /* return addresses to compare, up to EAGLE_SITE_CHECKS */
	__u32 _pad;
	/* The innermost return addresses the unwinder read, and where on the stack: the same
	 * registers reached from another caller (a helper that reads, called from two places at
	 * the same depth) have another return address there. */
	__u64 ra_slot[EAGLE_SITE_CHECKS];
	__u64 ra[EAGLE_SITE_CHECKS];
};

/* Value of `offcpu_start` (key: thread id), one per thread for the run: off the CPU since it
 * was switched out (`since`; 0: on a CPU), the stacks it stopped at, and, once it is runnable
 * (preempted, or woken after a block), since when, and its group's throttled time then, to
 * split the wait at its end. The entry stays while the thread runs: its next switch out finds
 * the last stop's site and stacks there, and writes no new entry. */
struct eagle_offcpu_start {
	__u64 since;     /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at the switch out; 0: on a CPU */
	__u64 woken;     /* when it became runnable: a wait for a CPU since; 0: blocked still */
	__u64 cfs_rq;    /* the kernel's `struct cfs_rq *` it was queued on (0: none known) */
	__u64 throttled; /* that group's throttled time then (rq clock ns, see `group_throttled`) */
	__u32 throttled_then; /* 1: its group was throttled as the wait began */
	/* 1: `key` was reused at the switch out because the registers, call and state matched
	 * `site`; its return addresses are compared when the thread runs again, and only if what
	 * it was off the CPU for is long enough to count (`offcpu_switch_in`). A block on such
	 * stacks that lasted that long (`woken - since`) is left by its wake-up to the switch in. */
	__u32 site_unchecked;
	struct eagle_stack_key key;
	struct eagle_stop_site site; /* where `key`'s stacks were taken */
};

/* Value of the targets map. `root` lets the agent symbolize a forked child that exited before
 * it was read, with the binary of the target it came from, unless it exec'd another program.
 * `start` tells the process from a later one that reuses its pid: a pid names a process only
 * while it lives, and another container's process may get it during the window. */
struct eagle_target {
	__u32 root;   /* tgid of the requested target this process descends from (itself if requested) */
	__u32 execed; /* execs since it was added: each may change its runtime (shell -> python) */
	__u64 start;  /* when the process started, in clock ticks since boot (/proc/PID/stat field 22,
	               * the group leader's start_boottime); 0: unknown, not checked */
};

/* One row of an object's unwind table: from `pc` (an address of the object as linked, i.e. an
 * ELF virtual address) up to the next row's, how to find the caller's frame. */
struct eagle_unwind_row {
	__u32 pc;
	__u16 cfa_offset; /* EAGLE_CFA_RSP/RBP: CFA = reg + cfa_offset; EAGLE_CFA_PLT: the threshold */
	__u8 kind;        /* enum eagle_cfa_kind, | EAGLE_RBP_SAVED */
	__s8 rbp_offset;  /* with EAGLE_RBP_SAVED: the caller's rbp is at CFA + 8 * rbp_offset */
};

enum eagle_cfa_kind {
	EAGLE_CFA_RSP = 0,    /* CFA = rsp + cfa_offset; return address at CFA - 8 */
	EAGLE_CFA_RBP = 1,    /* CFA = rbp + cfa_offset */
	EAGLE_CFA_PLT = 2,    /* PLT stubs: CFA = rsp + 8, + 8 once (rip & 15) >= cfa_offset */
	EAGLE_CFA_SIGNAL = 3, /* a signal trampoline: the registers are in the ucontext at rsp */
	EAGLE_CFA_END = 4,    /* the return address is undefined: the outermost frame (_start, clone) */
	EAGLE_CFA_NONE = 5,   /* no usable rule (a gap, a DWARF expression): walk the frame pointer */
};
#define EAGLE_CFA_KIND_MASK 0x7f
#define EAGLE_RBP_SAVED 0x80

/* One executable mapping of a process, sorted by `start` in `eagle_process_maps`. */
struct eagle_mapping {
	__u64 start;
	__u64 end;
	__u64 bias;  /* address in the process - bias = address in the object's table */
	__u32 table; /* slot in `unwind_tables`; 0: no table, walk frame pointers (Go, JIT code);
		      * EAGLE_TABLE_LAZY: one the agent builds once a sample needs it */
	__u32 rows;  /* rows of the table; of a lazy one: set by the kernel side when it is needed */
};

/* `eagle_mapping::table` of an object with unwind information whose table is not built yet:
 * the agent builds an object's table when a sample first lands in it, not for every object a
 * process maps (a process may map libraries of millions of rows and never run them). */
#define EAGLE_TABLE_LAZY 0xffffffff

/* The kernel side marks a lazy mapping with one 64-bit compare-and-swap of `table` and `rows`. */
_Static_assert(__builtin_offsetof(struct eagle_mapping, table) % 8 == 0 &&
		       __builtin_offsetof(struct eagle_mapping, rows) == __builtin_offsetof(struct eagle_mapping, table) + 4,
	       "table and rows make one aligned 64-bit word");

/* Value of `process_maps`: what the unwinder knows about a process's executable mappings. */
struct eagle_process_maps {
	__u32 count;
	__u32 generation; /* the target's `execed` when the agent read the mappings */
	__u32 flags;      /* enum eagle_process_flag */
	__u32 _pad;
	struct eagle_mapping mappings[EAGLE_MAX_MAPPINGS];
};

enum eagle_process_flag {
	/* Walk frame pointers, ask for nothing. (The agent sets it no more: a table over its
	 * budget sends only its own object to frame pointers, `table` 0.) */
	EAGLE_PROCESS_FRAME_POINTERS = 1,
};

/* Index in `changes`: what the kernel side counts for the agent to look at without a system
 * call (the array is mapped), reading the hash map a count is about only when it moved. */
enum eagle_change {
	EAGLE_CHANGE_TARGETS = 0, /* children followed and execs counted in `targets` */
	EAGLE_CHANGE_REQUESTS = 1, /* requests put into `unwind_requests` */
	EAGLE_CHANGE_KINDS = 2,
};

/* Value of `unwind_requests` (key: tgid): why the agent should (re)read a process. */
#define EAGLE_REQUEST_REFRESH 0x80000000 /* an address outside every known mapping (dlopen) */
#define EAGLE_REQUEST_OBJECT 0x40000000  /* an address in a mapping whose table is lazy */

/* A user stack unwound with tables: value of `ustacks_N`. */
struct eagle_user_stack {
	__u32 len;
	__u32 flags; /* enum eagle_stack_flag */
	__u64 ips[EAGLE_UNWIND_DEPTH];
};

enum eagle_stack_flag {
	/* Unwinding stopped before the outermost frame (unreadable stack, unknown code, depth). */
	EAGLE_STACK_TRUNCATED = 1,
	/* Some frame had no table ready and was walked by its frame pointer. */
	EAGLE_STACK_PENDING = 2,
};

/* Indexes of the per-CPU counter array. */
enum eagle_counter {
	EAGLE_SAMPLES = 0,        /* samples that hit a target process, kept or lost */
	EAGLE_STACK_LOST = 1,     /* dropped: stack-map collision or full stack map */
	EAGLE_COUNTS_FULL = 2,    /* dropped: the counts map had no room */
	EAGLE_FORKS_FOLLOWED = 3, /* children added to the target set by the fork tracepoint */
	EAGLE_UNWOUND = 4,        /* user stacks unwound with tables */
	EAGLE_UNWIND_PENDING = 5, /* user stacks walked by frame pointers: tables not ready yet */
	EAGLE_UNWIND_TRUNCATED = 6, /* unwound stacks that stopped before the outermost frame */
	EAGLE_OFFCPU_BLOCKS = 7,  /* blocks of a target thread counted (min_block or longer) */
	EAGLE_OFFCPU_SHORT = 8,   /* blocks shorter than min_block: not counted */
	EAGLE_OFFCPU_LOST = 9,    /* blocks whose stack or start could not be kept */
	EAGLE_NOT_TARGET = 10,    /* dropped: a process that reuses a target's pid, not the target */
	EAGLE_WAITS = 11,         /* waits for a CPU (or the CPU limit) counted (min_block or longer) */
	EAGLE_WAITS_SHORT = 12,   /* waits shorter than min_block: not counted */
	EAGLE_STOP_SITES_REUSED = 13, /* switches whose stacks were those of the thread's last stop */
	EAGLE_COUNTER_MAX = 14,
};

#endif
