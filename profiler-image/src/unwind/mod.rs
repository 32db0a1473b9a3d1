//! Native stacks without frame pointers: the agent builds unwind tables from the `.eh_frame`
//! of every object its targets' samples land in ([`table`]), and keeps the kernel's copies of them and of
//! each process's mappings up to date ([`loader`]); the eBPF program unwinds with them.

pub mod loader;
pub mod maps;
pub mod table;

pub use loader::{UnwindMaps, UnwindStats, Unwinder};
