//! `kubectl-eagle`: a kubectl plugin that answers one question: where does the CPU of this
//! workload go? A thin binary over the `kube_eagle` library (`lib.rs`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kube_eagle::args::Cli::parse();
    match cli.command.run() {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("kubectl-eagle: error: {e}");
            e.exit().into()
        }
    }
}
