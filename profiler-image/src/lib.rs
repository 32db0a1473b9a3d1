//! `eagle-agent`: the node-side profiler. It finds the processes of its targets, samples them,
//! symbolizes on the node and writes the result stream of `eagle-proto`.
//!
//! The flow follows the modules: [`target`] (what to profile) -> [`discovery`] (which processes)
//! -> [`sampler`] (samples, symbolized by [`symbolize`]) -> [`aggregate`] -> [`run`] (the
//! window and the stream).

pub mod aggregate;
#[cfg(target_os = "linux")]
pub mod cgroup_cpu;
pub mod discovery;
pub mod http;
#[cfg(target_os = "linux")]
pub mod kubelet_record;
#[cfg(target_os = "linux")]
pub mod mapped_count;
#[cfg(target_os = "linux")]
pub mod memory;
pub mod runtime;
pub mod sampler;
#[cfg(target_os = "linux")]
pub mod symbolize;
pub mod target;
#[cfg(target_os = "linux")]
pub mod target_file;
#[cfg(target_os = "linux")]
pub mod unwind;

#[cfg(target_os = "linux")]
pub mod run;

#[cfg(target_os = "linux")]
pub use run::{run, AgentConfig, AgentError, Summary, MAX_FREQUENCY_HZ};
pub use target::Target;
