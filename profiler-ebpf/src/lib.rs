//! The eBPF CPU sampling program, compiled from `src/profiler.bpf.c` by `build.rs`, and the map
//! types it shares with the agent. `src/eagle.h` is the C side of these types.
#![no_std]

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
    /// The classic tracepoints through tracefs, for kernels without BTF.
    pub const FORK_TRACEFS_PROGRAM: &str = "follow_fork_tracefs";
    pub const EXEC_TRACEFS_PROGRAM: &str = "note_exec_tracefs";
    pub const TARGETS: &str = "targets";
    pub const ACTIVE: &str = "active";
    pub const COUNTERS: &str = "counters";
    pub const STACKS: [&str; 2] = ["stacks_0", "stacks_1"];
    pub const COUNTS: [&str; 2] = ["counts_0", "counts_1"];
    pub const CHILD_PID_OFFSET: &str = "CHILD_PID_OFFSET";
}

/// Frames kept per stack by the kernel side.
pub const MAX_STACK_DEPTH: usize = 127;

/// Key of the counts maps: `struct eagle_stack_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    /// `>= 0`: id in the stack map; `< 0`: `-errno` from `bpf_get_stackid`.
    pub user_stack_id: i32,
    /// `-EFAULT` is normal: the sample hit user mode.
    pub kernel_stack_id: i32,
    pub _pad: u32,
}

/// Value of the `targets` map: `struct eagle_target`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetEntry {
    /// Tgid of the requested target this process descends from (itself if requested).
    pub root: u32,
    /// Execs since the process was added: each may change its runtime.
    pub execed: u32,
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
}

pub const COUNTER_MAX: u32 = 4;

#[cfg(feature = "user")]
// SAFETY: plain old data, `repr(C)`, no padding the kernel would not also write (explicit `_pad`).
unsafe impl aya::Pod for StackKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for TargetEntry {}
