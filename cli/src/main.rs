//! `kubectl-eagle`: a kubectl plugin that answers one question: where does the CPU of this
//! workload go? See README.md for usage and docs/ARCHITECTURE.md for how it works.
//!
//! Layers, top down (a test, `cli/tests/layers.rs`, keeps them so): `args` is the edge, the only
//! code that sees clap, and turns each command's arguments into its plan; `commands` are thin
//! glue, one module per subcommand; everything else is engines and values that never see
//! either.

mod analysis;
mod args;
mod check;
mod closing;
mod cluster;
mod commands;
mod duration;
mod error;
mod files;
mod format;
mod gate;
mod hierarchy;
mod input;
#[cfg(target_os = "linux")]
mod local;
mod merge;
mod net_map;
mod net_report;
mod output;
mod placement;
mod push;
mod run_info;
#[cfg(test)]
#[path = "../tests/common/snapshot.rs"]
mod snapshot;
mod summary;
mod table;
mod target;
mod verbose;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match cli.command.run() {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("kubectl-eagle: error: {e}");
            e.exit().into()
        }
    }
}
