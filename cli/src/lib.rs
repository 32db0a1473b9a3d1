//! The library behind `kubectl-eagle`: everything the binary does, so that tests, fuzz targets
//! and benchmarks reach the same code the users run (the binary, `main.rs`, only parses the
//! command line and maps the outcome to an exit code). See README.md for usage and
//! docs/ARCHITECTURE.md for how it works.
//!
//! Layers, top down (a test, `cli/tests/layers.rs`, keeps them so): `args` is the edge, the only
//! code that sees clap, and turns each command's arguments into its plan; `commands` are thin
//! glue, one module per subcommand; everything else is engines and values that never see
//! either.

pub mod analysis;
pub mod args;
pub mod check;
pub mod closing;
pub mod cluster;
pub mod commands;
pub mod duration;
pub mod error;
pub mod files;
pub mod format;
pub mod gate;
pub mod hierarchy;
pub mod input;
#[cfg(target_os = "linux")]
pub mod local;
pub mod merge;
pub mod net_map;
pub mod net_report;
pub mod output;
pub mod placement;
pub mod push;
pub mod run_info;
#[cfg(test)]
#[path = "../tests/common/snapshot.rs"]
mod snapshot;
pub mod summary;
pub mod table;
pub mod target;
pub mod verbose;
