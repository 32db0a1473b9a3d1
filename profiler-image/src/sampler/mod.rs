//! Samplers: each takes processes to watch and hands back symbolized, aggregated stacks.
//! One trait so the run loop treats native (eBPF) and, later, interpreter samplers alike;
//! one failing process never ends the run for the others.

#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod interpreter;
#[cfg(target_os = "linux")]
pub mod jit;

use crate::aggregate::Aggregate;

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
