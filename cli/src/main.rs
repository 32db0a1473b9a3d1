//! `kubectl-eagle`: a kubectl plugin that answers one question: where does the CPU of this
//! workload go? See README.md for usage and docs/ARCHITECTURE.md for how it works.

mod analysis;
mod args;
mod check;
mod cluster;
mod diff;
mod duration;
mod error;
mod gate;
mod hierarchy;
mod input;
#[cfg(target_os = "linux")]
mod local;
mod merge;
mod offline;
mod output;
mod summary;
mod target;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, ProfileArgs};
use error::{CliError, Exit};
use output::{Destination, Labels};
use target::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile(args) => profile(args),
        Command::Check(args) => offline::check(args),
        Command::Diff(args) => diff::diff(args),
        Command::Convert(args) => offline::convert(args),
        Command::List(args) => cluster::tasks::list(&args),
        Command::Fetch(args) => cluster::tasks::fetch(&args),
        Command::Clean(args) => cluster::tasks::clean(&args),
        Command::Uninstall(args) => cluster::tasks::uninstall(&args),
        Command::Init(args) => cluster::rbac::init(&args),
        Command::Doctor(args) => cluster::doctor::doctor(&args),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("kubectl-eagle: error: {e}");
            e.exit().into()
        }
    }
}

fn profile(args: ProfileArgs) -> Result<Exit, CliError> {
    let targets = args.targets.iter().map(|t| target::parse(t)).collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() && args.command.is_empty() && args.cluster.selector.is_none() {
        return Err(CliError::Usage(
            "nothing to profile: name a target (pid/N, deployment/NAME, -l SELECTOR, ...) or a command after `--`"
                .into(),
        ));
    }
    let cluster_targets: Vec<(target::ClusterKind, String)> = targets
        .iter()
        .filter_map(|t| if let Target::Cluster { kind, name } = t { Some((*kind, name.clone())) } else { None })
        .collect();
    let is_cluster = !cluster_targets.is_empty() || args.cluster.selector.is_some();
    if is_cluster && (cluster_targets.len() != targets.len() || !args.command.is_empty()) {
        return Err(CliError::Usage(
            "cluster targets and local ones (pid/N, -- COMMAND) cannot be mixed in one run".into(),
        ));
    }
    if args.cluster.async_ {
        return cluster::tasks::profile_async(&args, &cluster_targets, is_cluster);
    }
    // Rules, baseline and summary path are checked before any sampling.
    let gate = gate::Gate::plan(&args.summary, &args.checks)?;
    if is_cluster {
        if args.cluster.dry_run {
            return cluster::profile::dry_run(&args, &cluster_targets);
        }
        let requested = summary::RunInfo {
            duration: Some(args.duration.unwrap_or(cluster::DEFAULT_WINDOW)),
            frequency_hz: Some(args.frequency),
            ..Default::default()
        };
        let destination = gate.watch(Destination::plan(Some(&args.output), args.format)?.with_run(requested));
        let exit = cluster::profile::profile(&args, &cluster_targets, &destination)?;
        if destination.run().partial.is_none() {
            destination.record_run(summary::RunInfo { partial: Some(exit == Exit::Partial), ..Default::default() });
        }
        return gate.after_write(&destination, exit);
    }
    let destination = gate.watch(Destination::plan(Some(&args.output), args.format)?);
    let exit = profile_local(&args, &targets, &destination)?;
    gate.after_write(&destination, exit)
}

#[cfg(target_os = "linux")]
fn profile_local(args: &ProfileArgs, targets: &[Target], destination: &Destination) -> Result<Exit, CliError> {
    local::install_signal_handlers();
    let pids: Vec<u32> = targets.iter().filter_map(|t| if let Target::Pid(p) = t { Some(*p) } else { None }).collect();
    let runtime = match &args.runtime {
        Some(r) => Some(r.parse().map_err(CliError::Usage)?),
        None => None,
    };
    let run = local::LocalRun {
        pids,
        command: args.command.clone(),
        duration: args.duration,
        frequency_hz: args.frequency,
        runtime,
        native: args.native,
    };
    let outcome = local::profile(&run)?;
    let result = &outcome.result;
    let folded = merge::merge([result], &merge::Placements::new(), args.group_by);
    let what = describe_targets(&args.targets, &args.command);
    if folded.is_empty() {
        return Err(CliError::NothingToProfile(format!(
            "no samples of {what} in {}: it used no CPU (idle, or blocked); try a longer --duration while it is busy",
            duration::human(outcome.elapsed)
        )));
    }
    let ended_early = result.warnings.iter().find(|w| w.code == "ended-early");
    let partial = outcome.interrupted;
    let mut subtitle = format!(
        "{} at {} Hz, {} samples, node {}",
        duration::human(outcome.elapsed),
        result.header.frequency_hz,
        folded.total(),
        result.header.node
    );
    if partial {
        subtitle.push_str(" | PARTIAL: stopped by Ctrl-C before the window ended");
    } else if let Some(w) = ended_early {
        subtitle.push_str(&format!(" | {}", w.message));
    }
    let labels = Labels { title: format!("kube-eagle: {what}"), subtitle };
    destination.record_run(summary::RunInfo {
        started_unix_ms: Some(result.header.started_unix_ms),
        duration: Some(outcome.elapsed),
        frequency_hz: Some(result.header.frequency_hz),
        partial: Some(partial),
        nodes: Some(vec![summary::NodeStatus {
            node: result.header.node.clone(),
            status: if partial { "partial" } else { "ok" }.into(),
            samples: Some(folded.total()),
            messages: result
                .warnings
                .iter()
                .filter(|w| !w.code.starts_with("info-"))
                .map(|w| w.message.clone())
                .collect(),
        }]),
    });
    destination.write(&folded, &labels)?;
    eprintln!(
        "wrote {} ({} samples, {} stacks{})",
        destination.describe(),
        folded.total(),
        folded.len(),
        if partial { ", PARTIAL" } else { "" }
    );
    Ok(if partial { Exit::Partial } else { Exit::Ok })
}

#[cfg(not(target_os = "linux"))]
fn profile_local(_: &ProfileArgs, _: &[Target], _: &Destination) -> Result<Exit, CliError> {
    Err(CliError::Usage(
        "local profiling (pid/N, -- COMMAND) needs Linux; profile cluster workloads from this machine instead".into(),
    ))
}

fn describe_targets(targets: &[String], command: &[String]) -> String {
    let mut parts: Vec<String> = targets.to_vec();
    if !command.is_empty() {
        parts.push(format!("`{}`", command.join(" ")));
    }
    parts.join(" ")
}
