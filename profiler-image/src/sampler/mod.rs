//! Samplers: each takes processes to watch and hands back symbolized, aggregated stacks.
//! One trait so the run loop treats native (eBPF) and, later, interpreter samplers alike;
//! one failing process never ends the run for the others.

#[cfg(target_os = "linux")]
pub mod cpu_clock;
#[cfg(target_os = "linux")]
pub mod drop_reason;
#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod interpreter;
#[cfg(target_os = "linux")]
pub mod jfr;
#[cfg(target_os = "linux")]
pub mod jit;
#[cfg(target_os = "linux")]
pub mod kernel_names;
#[cfg(target_os = "linux")]
pub mod listen;
#[cfg(target_os = "linux")]
pub mod native_thread;
#[cfg(target_os = "linux")]
pub mod net;
pub mod oncpu;
#[cfg(target_os = "linux")]
pub mod python;
#[cfg(target_os = "linux")]
pub mod ruby;

use crate::aggregate::Aggregate;
use oncpu::Distribution;

/// What a sampler learned about processes since the last collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// A process the sampler started following by itself (a forked child), with the requested
    /// target process it descends from.
    Found { pid: u32, root: u32 },
    /// A followed process exec'd another program: its runtime may have changed.
    Execed { pid: u32 },
    /// A followed process ended.
    Exited { pid: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("this eagle-agent was built without its eBPF program (clang was missing at build time): rebuild with clang-19 installed")]
    NoProgram,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("sampler failed: {0}")]
    Failed(String),
}

pub trait Sampler {
    /// Stable name carried in the result stream (`ebpf`, `py-spy`, ...).
    fn name(&self) -> &'static str;

    /// Starts sampling a process; the sampler follows its future children where it can.
    fn add(&mut self, pid: u32) -> Result<(), SamplerError>;

    /// Stops sampling a process (handed over to another sampler, e.g. after an exec into
    /// an interpreter).
    fn remove(&mut self, _pid: u32) {}

    /// Moves what was sampled since the last call into `out` and reports processes found or
    /// ended meanwhile.
    fn collect(&mut self, out: &mut Aggregate, events: &mut Vec<ProcessEvent>) -> Result<(), SamplerError>;

    /// Processes followed that are still alive.
    fn live(&self) -> usize;

    /// Samples taken so far, kept or lost.
    fn samples(&self) -> u64;

    /// Samples taken but lost (stack-map collisions, full maps).
    fn lost_samples(&self) -> u64;
}

/// What a runtime's own sampler (py-spy, rbspy, Flight Recorder) made of one process: how its
/// time divides among its stacks, or why it could not tell.
pub type Recorded = (u32, Result<Distribution, String>);

/// A sampler that reads a runtime's own frames. It gives each process's distribution over
/// stacks; the magnitude, CPU time, comes from the eBPF sampler (see [`oncpu`]).
pub trait RuntimeSampler {
    /// Stable name carried in the result stream (`py-spy`, `rbspy`, `jfr`).
    fn name(&self) -> &'static str;

    /// Starts recording a process.
    fn add(&mut self, pid: u32) -> Result<(), SamplerError>;

    /// Ends the recording of one process (it exec'd another program) and hands back what it
    /// got; `None` if it was not recorded.
    fn stop(&mut self, pid: u32) -> Option<Result<Distribution, String>>;

    /// Recordings that ended by themselves since the last call (their process exited, or the
    /// sampler failed on it).
    fn ended(&mut self) -> Vec<Recorded>;

    /// The sampling window ended: what a recording weighs is measured up to now, not up to
    /// [`RuntimeSampler::finish`], which comes after the last collection (seconds later on a
    /// loaded machine, while the processes keep running).
    fn window_ended(&mut self) {}

    /// Ends every recording and hands back what each got.
    fn finish(&mut self) -> Vec<Recorded>;

    /// Processes being recorded.
    fn live(&self) -> usize;
}
