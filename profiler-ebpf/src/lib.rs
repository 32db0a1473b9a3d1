//! The eBPF CPU sampling program, compiled from `src/profiler.bpf.c` by `build.rs`, and the map
//! types it shares with the agent. `src/eagle.h` is the C side of these types.
#![no_std]

pub mod net;

/// Bytes of the compiled eBPF object, aligned for the ELF parser. `None` when this build had no
/// clang (see `build.rs`).
pub fn object() -> Option<&'static [u8]> {
    #[repr(C, align(32))]
    struct Aligned<T: ?Sized>(T);
    static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/profiler.bpf.o")));
    if cfg!(eagle_ebpf_stub) {
        None
    } else {
        Some(&OBJECT.0)
    }
}

/// Names of the programs and maps in the object.
pub mod names {
    pub const SAMPLE_PROGRAM: &str = "sample_cpu";
    pub const FORK_PROGRAM: &str = "follow_fork";
    pub const EXEC_PROGRAM: &str = "note_exec";
    /// Off-CPU time: the scheduler's switch event.
    pub const OFFCPU_PROGRAM: &str = "offcpu_switch";
    /// The end of a block: the thread is woken.
    pub const WAKEUP_PROGRAM: &str = "offcpu_wakeup";
    /// A new thread queued to run for the first time: it waits for a CPU from then.
    pub const WAKEUP_NEW_PROGRAM: &str = "offcpu_wakeup_new";
    /// A thread runs again, at the end of the scheduler (`sched_exit_tp`, Linux 6.16+): its
    /// stop site's return addresses are compared there, if what it was off the CPU for counts.
    pub const SWITCH_IN_PROGRAM: &str = "offcpu_switch_in";
    /// The tracepoint [`SWITCH_IN_PROGRAM`] is attached to.
    pub const SWITCH_IN_TRACEPOINT: &str = "sched_exit_tp";
    /// 1: stop sites are compared at the switch in ([`SWITCH_IN_PROGRAM`] attached).
    pub const CHECK_SITES_AT_SWITCH_IN: &str = "CHECK_SITES_AT_SWITCH_IN";
    /// Threads off the CPU: blocked, or runnable but not running (preempted, throttled, or
    /// woken and not yet running).
    pub const OFFCPU_START: &str = "offcpu_start";
    /// A stop site seen beside another (`eagle_alt_site`).
    pub const OFFCPU_ALT_SITES: &str = "offcpu_alt_sites";
    pub const OFFCPU_STACKS: &str = "offcpu_stacks";
    pub const OFFCPU_USER_STACKS: &str = "offcpu_ustacks";
    pub const MIN_BLOCK_NS: &str = "MIN_BLOCK_NS";
    /// The classic tracepoints through tracefs, for kernels without BTF.
    pub const FORK_TRACEFS_PROGRAM: &str = "follow_fork_tracefs";
    pub const EXEC_TRACEFS_PROGRAM: &str = "note_exec_tracefs";
    pub const TARGETS: &str = "targets";
    pub const ACTIVE: &str = "active";
    /// Written into [`ACTIVE`] when the window ends (`EAGLE_WINDOW_ENDED` of `eagle.h`): the
    /// program takes no sample after it.
    pub const WINDOW_ENDED: u32 = 2;
    pub const COUNTERS: &str = "counters";
    /// Per CPU: the weight of its samples, in [`super::SAMPLE_UNIT`]s (`sample_weight`).
    pub const SAMPLE_WEIGHT: &str = "sample_weight";
    pub const STACKS: [&str; 2] = ["stacks_0", "stacks_1"];
    pub const COUNTS: [&str; 2] = ["counts_0", "counts_1"];
    /// Processes whose CPU samples are counted per thread.
    pub const BY_THREAD: &str = "by_thread";
    pub const CHILD_PID_OFFSET: &str = "CHILD_PID_OFFSET";
    pub const UNWIND_WITH_TABLES: &str = "UNWIND_WITH_TABLES";
    pub const CHECK_IDENTITY: &str = "CHECK_IDENTITY";
    pub const NSEC_PER_CLOCK_TICK: &str = "NSEC_PER_CLOCK_TICK";
    pub const USER_STACKS: [&str; 2] = ["ustacks_0", "ustacks_1"];
    pub const PROCESS_MAPS: &str = "process_maps";
    pub const UNWIND_TABLES: &str = "unwind_tables";
    pub const UNWIND_REQUESTS: &str = "unwind_requests";
    /// A ring buffer the kernel side writes a record to per request made: what the unwind
    /// thread sleeps on.
    pub const UNWIND_DOORBELL: &str = "unwind_doorbell";
    /// Counts of changes, mapped by the agent: `u64`s indexed by [`super::Change`].
    pub const CHANGES: &str = "changes";
    /// Names kernel addresses with the kernel's own symbol table, run by the agent
    /// (`BPF_PROG_TEST_RUN`), never attached: [`super::KSYM_BATCH`] addresses in
    /// [`KSYM_ADDRS`], their names out in [`KSYM_NAMES`].
    pub const NAME_KERNEL_ADDRESSES_PROGRAM: &str = "name_kernel_addresses";
    pub const KSYM_ADDRS: &str = "ksym_addrs";
    pub const KSYM_NAMES: &str = "ksym_names";
}

/// Kernel addresses named in one run of [`names::NAME_KERNEL_ADDRESSES_PROGRAM`]
/// (`EAGLE_KSYM_BATCH` of `eagle.h`).
pub const KSYM_BATCH: u32 = 256;
/// Bytes of one name in [`names::KSYM_NAMES`] (`EAGLE_KSYM_NAME`), its end padded with zeros.
pub const KSYM_NAME: usize = 512;

/// Index in the `changes` array (`enum eagle_change` of `eagle.h`): what the kernel side counts
/// so that the agent reads the hash map a count is about only when the count moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Change {
    /// Children followed and execs counted in `targets`.
    Targets = 0,
    /// Requests put into `unwind_requests`.
    Requests = 1,
}

/// What a CPU sample at the asked frequency adds to its stack's count (`EAGLE_SAMPLE_UNIT` of
/// `eagle.h`): a sample taken at another period weighs its period over the asked one, in these
/// units, so that counts stay CPU time while the agent redraws periods.
pub const SAMPLE_UNIT: u64 = 1024;

/// Frames kept per stack by the kernel side.
pub const MAX_STACK_DEPTH: usize = 127;

/// Frames kept per user stack unwound with tables.
pub const UNWIND_DEPTH: usize = 128;
/// Executable mappings of one process the unwinder knows.
pub const MAX_MAPPINGS: usize = 256;
/// Unwind tables loaded at once (slot 0 stays empty: it means "no table").
pub const MAX_TABLES: u32 = 4096;
/// Rows of one table are fewer than this (the kernel's binary search takes 24 steps).
pub const MAX_TABLE_ROWS: usize = 1 << 24;

/// `StackKey::flags`: `enum eagle_key_flag`.
pub mod key_flags {
    /// The user stack was unwound with tables: `ustacks_N[user_stack_hash]`.
    pub const UNWOUND: u32 = 1;
    /// The process's tables were not ready: the user stack is a frame-pointer walk.
    pub const PENDING: u32 = 2;
    /// Time blocked: the count is nanoseconds, the stacks are in the `offcpu_*` maps.
    pub const OFFCPU: u32 = 4;
    /// With [`OFFCPU`]: runnable, waiting for a CPU (preempted, or woken and not yet running).
    pub const WAIT: u32 = 8;
    /// With [`OFFCPU`]: runnable, held back by its cgroup's CPU limit (throttled).
    pub const THROTTLED: u32 = 16;
}

/// `UserStack::flags`: `enum eagle_stack_flag`.
pub mod stack_flags {
    /// Unwinding stopped before the outermost frame.
    pub const TRUNCATED: u32 = 1;
    /// Some frame had no table ready and was walked by its frame pointer.
    pub const PENDING: u32 = 2;
}

/// `UnwindRow::kind`: `enum eagle_cfa_kind`, with [`RBP_SAVED`] or'd in.
pub mod cfa {
    /// CFA = rsp + offset.
    pub const RSP: u8 = 0;
    /// CFA = rbp + offset.
    pub const RBP: u8 = 1;
    /// A PLT stub: CFA = rsp + 8, + 8 once `(rip & 15) >= offset`.
    pub const PLT: u8 = 2;
    /// A signal trampoline: the registers are in the ucontext at rsp.
    pub const SIGNAL: u8 = 3;
    /// The return address is undefined: the outermost frame.
    pub const END: u8 = 4;
    /// No usable rule: walk the frame pointer.
    pub const NONE: u8 = 5;
    /// The caller's rbp is saved at CFA + 8 * `rbp_offset`.
    pub const RBP_SAVED: u8 = 0x80;
}

/// `eagle_process_maps::flags`.
pub const PROCESS_FRAME_POINTERS: u32 = 1;
/// `unwind_requests` value bit: an address outside every known mapping.
pub const REQUEST_REFRESH: u32 = 0x8000_0000;
/// `unwind_requests` value bit: an address in a mapping whose table is lazy.
pub const REQUEST_OBJECT: u32 = 0x4000_0000;
/// `Mapping::table` of an object whose table the agent builds once a sample needs it
/// (`EAGLE_TABLE_LAZY`).
pub const TABLE_LAZY: u32 = u32::MAX;

/// Key of the counts maps: `struct eagle_stack_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    /// `>= 0`: id in the stack map; `< 0`: `-errno` from `bpf_get_stackid`.
    pub user_stack_id: i32,
    /// `-EFAULT` is normal: the sample hit user mode.
    pub kernel_stack_id: i32,
    /// [`key_flags`].
    pub flags: u32,
    /// With [`key_flags::UNWOUND`]: key of the user stack in `ustacks_N`.
    pub user_stack_hash: u64,
    /// The thread, for processes in `by_thread`; 0 for the others.
    pub tid: u32,
    pub _pad: u32,
}

/// One row of an object's unwind table: `struct eagle_unwind_row`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// From this address of the object as linked (an ELF virtual address) to the next row's.
    pub pc: u32,
    /// [`cfa::RSP`]/[`cfa::RBP`]: CFA = register + offset; [`cfa::PLT`]: the threshold.
    pub cfa_offset: u16,
    /// One of [`cfa`], with [`cfa::RBP_SAVED`] or'd in.
    pub kind: u8,
    /// With [`cfa::RBP_SAVED`]: the caller's rbp is at CFA + 8 * this.
    pub rbp_offset: i8,
}

/// One executable mapping of a process: `struct eagle_mapping`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Address in the process - bias = address in the object's table.
    pub bias: u64,
    /// Slot in `unwind_tables`; 0: no table, walk frame pointers; [`TABLE_LAZY`]: a table the
    /// agent builds once a sample needs it.
    pub table: u32,
    /// Rows of the table; of a lazy one, not 0 once the kernel side marked it needed.
    pub rows: u32,
}

/// Value of `process_maps`: `struct eagle_process_maps`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessMaps {
    pub count: u32,
    /// The target's `execed` when the agent read the mappings.
    pub generation: u32,
    /// [`PROCESS_FRAME_POINTERS`].
    pub flags: u32,
    pub _pad: u32,
    pub mappings: [Mapping; MAX_MAPPINGS],
}

/// Value of `ustacks_N`: `struct eagle_user_stack`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserStack {
    pub len: u32,
    /// [`stack_flags`].
    pub flags: u32,
    pub ips: [u64; UNWIND_DEPTH],
}

/// Value of the `targets` map: `struct eagle_target`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetEntry {
    /// Tgid of the requested target this process descends from (itself if requested).
    pub root: u32,
    /// Execs since the process was added: each may change its runtime.
    pub execed: u32,
    /// When the process started, in clock ticks since boot (`/proc/PID/stat` field 22): a later
    /// process that reuses the pid is not the target. 0: unknown, not checked.
    pub start: u64,
}

/// Indexes of the per-CPU `counters` array: `enum eagle_counter`.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum Counter {
    /// Samples that hit a target process, kept or lost.
    Samples = 0,
    /// Dropped: stack-map collision or full stack map.
    StackLost = 1,
    /// Dropped: the counts map had no room.
    CountsFull = 2,
    /// Children added to the target set by the fork tracepoint.
    ForksFollowed = 3,
    /// User stacks unwound with tables.
    Unwound = 4,
    /// User stacks walked by frame pointers because the tables were not ready yet.
    UnwindPending = 5,
    /// Unwound stacks that stopped before the outermost frame.
    UnwindTruncated = 6,
    /// Blocks of a target thread counted (the minimum duration or longer).
    OffCpuBlocks = 7,
    /// Blocks shorter than the minimum duration: not counted.
    OffCpuShort = 8,
    /// Blocks whose stack or start could not be kept.
    OffCpuLost = 9,
    /// Dropped: a process that reuses a target's pid, not the target.
    NotTarget = 10,
    /// Waits for a CPU or the CPU limit counted (the minimum duration or longer).
    Waits = 11,
    /// Waits shorter than the minimum duration: not counted.
    WaitsShort = 12,
    /// Switches whose stacks were those of the thread's last stop at the same site.
    StopSitesReused = 13,
}

pub const COUNTER_MAX: u32 = 14;

/// Where a thread stopped: `struct eagle_stop_site`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopSite {
    /// User registers saved as it entered the kernel; `ip` 0: no site.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The system call it was in.
    pub syscall: u64,
    /// Its first argument.
    pub arg0: u64,
    /// `prev_state << 1 | preempted`.
    pub how: u32,
    /// The process's execs then.
    pub execed: u32,
    /// Return addresses compared, up to [`SITE_CHECKS`].
    pub checks: u32,
    pub _pad: u32,
    /// Where the innermost return addresses were read, and what they were.
    pub ra_slot: [u64; SITE_CHECKS],
    pub ra: [u64; SITE_CHECKS],
}

/// Return addresses a stop site's reuse compares: `EAGLE_SITE_CHECKS`.
pub const SITE_CHECKS: usize = 4;

/// Value of `offcpu_start`, one per thread: `struct eagle_offcpu_start`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuStart {
    /// CLOCK_MONOTONIC nanoseconds when the thread was switched out; 0: on a CPU.
    pub since: u64,
    /// When it became runnable (preempted, or woken after a block): a wait for a CPU since.
    /// 0: blocked still.
    pub woken: u64,
    /// The kernel's `struct cfs_rq *` it waited on (an address, never dereferenced here).
    pub cfs_rq: u64,
    /// That group's throttled time then, on its run queue's clock.
    pub throttled: u64,
    /// 1: its group was throttled as the wait began.
    pub throttled_then: u32,
    /// 1: `key` was reused on matching registers at the switch out; its return addresses are
    /// compared when the thread runs again. A block on it long enough to count
    /// (`woken - since`) is then left by the wake-up to the switch in.
    pub site_unchecked: u32,
    pub key: StackKey,
    /// Where `key`'s stacks were taken.
    pub site: StopSite,
}

#[cfg(feature = "user")]
// SAFETY: plain old data, `repr(C)`, no padding (32 bytes: 4 x u32, a u64, 2 x u32).
unsafe impl aya::Pod for StackKey {}
#[cfg(feature = "user")]
// SAFETY: as above (16 bytes: 2 x u32, then a u64).
unsafe impl aya::Pod for TargetEntry {}
#[cfg(feature = "user")]
// SAFETY: as above (4 x u64, 2 x u32, the 32-byte key, the 120-byte site (5 x u64, 4 x u32,
// 8 x u64): 192 bytes, no padding).
unsafe impl aya::Pod for OffCpuStart {}
#[cfg(feature = "user")]
// SAFETY: as above (8 bytes, no padding).
unsafe impl aya::Pod for UnwindRow {}
#[cfg(feature = "user")]
// SAFETY: as above (explicit `_pad`; `Mapping` is 32 bytes without padding).
unsafe impl aya::Pod for ProcessMaps {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for UserStack {}
