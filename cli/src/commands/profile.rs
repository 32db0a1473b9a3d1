//! `kubectl eagle profile`: local (`pid/N`, `-- COMMAND`) or in the cluster, synchronous or
//! detached (`-a`); the rules, baseline and summary path are checked before any sampling.

use std::path::PathBuf;
use std::time::Duration;

use eagle_proto::{ProfileMode, Runtime};

use crate::check::RuleSpecs;
use crate::cluster::profile::{self, ClusterRequest};
use crate::commands::net::NetOutput;
use crate::error::{CliError, Exit};
use crate::format::Format;
use crate::gate::{Gate, SummaryRequest};
use crate::net_report::Naming;
use crate::output::Destination;
use crate::placement::GroupBy;
use crate::push::target::PushPlan;
use crate::run_info::RunInfo;

/// `profile`, as its arguments asked for it.
#[derive(Debug)]
pub struct ProfilePlan {
    pub output: PathBuf,
    pub format: Option<Format>,
    pub summary: SummaryRequest,
    pub rules: RuleSpecs,
    /// `--push`: receivers of the written profile (refused with `-a`, which writes none).
    pub push: PushPlan,
    /// `--net FILE`: the network side of the same window, and where it goes.
    pub net: Option<NetOutput>,
    pub work: Work,
}

#[derive(Debug)]
pub enum Work {
    Local(LocalRequest),
    Cluster(Box<ClusterRequest>),
}

/// A profile of processes of this machine.
#[derive(Debug)]
pub struct LocalRequest {
    pub pids: Vec<u32>,
    /// The targets as the user wrote them, for the title.
    pub target_words: Vec<String>,
    /// Started and profiled from its first instruction.
    pub command: Vec<String>,
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub runtime: Option<Runtime>,
    pub native: bool,
    pub mode: ProfileMode,
    pub min_block_us: u64,
    pub group_by: GroupBy,
}

pub fn run(plan: ProfilePlan) -> Result<Exit, CliError> {
    if let Work::Cluster(req) = &plan.work {
        if req.is_async {
            if req.dry_run {
                return profile::dry_run(req);
            }
            return profile::start_detached(req, |id| fetch_command(&plan, req, id));
        }
    }
    let gate = Gate::plan(&plan.summary, &plan.rules)?;
    match &plan.work {
        Work::Cluster(req) => {
            if req.dry_run {
                return profile::dry_run(req);
            }
            let requested =
                RunInfo { duration: Some(req.window), frequency_hz: Some(req.frequency_hz), ..Default::default() };
            let destination = gate.watch(
                Destination::plan(Some(&plan.output), plan.format)?.with_run(requested).with_push(plan.push.clone()),
            );
            let exit = match &plan.net {
                None => profile::profile(req, &destination)?,
                Some(out) => with_net(req, &destination, out)?,
            };
            gate.after_write(&destination, exit)
        }
        Work::Local(req) => {
            let destination =
                gate.watch(Destination::plan(Some(&plan.output), plan.format)?.with_push(plan.push.clone()));
            let exit = local::profile(req, &destination, plan.net.as_ref())?;
            gate.after_write(&destination, exit)
        }
    }
}

/// A cluster profile whose agents watch the network too: the graph, then the network report.
/// A graph that could not be written (no samples) leaves the network report worth writing; a
/// node without a network record leaves the run partial.
fn with_net(req: &ClusterRequest, destination: &crate::output::Destination, out: &NetOutput) -> Result<Exit, CliError> {
    let (graph, net) = crate::cluster::net::profile_with_net(req, destination)?;
    let net = match net {
        Ok(net) => net,
        Err(e) if graph.is_ok() => return Err(e),
        Err(e) => {
            eprintln!("error: {e}");
            return graph;
        }
    };
    out.write(&net.net, &Naming { placements: net.placements, directory: net.directory })?;
    match graph? {
        Exit::Ok if net.partial => Ok(Exit::Partial),
        exit => Ok(exit),
    }
}

/// The exact command that fetches `run_id` as this `profile` would have written it.
fn fetch_command(plan: &ProfilePlan, req: &ClusterRequest, run_id: &str) -> String {
    let mut outputs = vec!["-o".into(), profile::quote(&plan.output.to_string_lossy())];
    if let Some(net) = &plan.net {
        outputs.extend(["--net".into(), profile::quote(&net.path.to_string_lossy())]);
    }
    profile::fetch_command_with(req, run_id, outputs)
}

#[cfg(target_os = "linux")]
mod local {
    use std::time::Duration;

    use super::LocalRequest;
    use crate::closing::{self, Profile};
    use crate::commands::net::NetOutput;
    use crate::net_report::Naming;
    use eagle_proto::{Unit, WarningCode};

    use crate::duration;
    use crate::error::{CliError, Exit};
    use crate::local;
    use crate::merge;
    use crate::output::{self, Destination, Labels, Stacks};
    use crate::placement::Placements;
    use crate::run_info::{CgroupCpu, NodeStatus, NodeStatusKind, RunInfo};

    pub fn profile(req: &LocalRequest, destination: &Destination, net: Option<&NetOutput>) -> Result<Exit, CliError> {
        local::install_signal_handlers();
        let run = local::LocalRun {
            pids: req.pids.clone(),
            command: req.command.clone(),
            duration: req.duration,
            frequency_hz: req.frequency_hz,
            runtime: req.runtime,
            native: req.native,
            net: net.is_some(),
            stacks: true,
            mode: req.mode,
            min_block_us: req.min_block_us,
        };
        let outcome = local::profile(&run)?;
        let result = &outcome.result;
        // The network report first: a window without CPU samples may still have traffic.
        if let Some(out) = net {
            let record = result
                .net
                .as_ref()
                .ok_or_else(|| CliError::Failed("internal error: the agent sent no network record".into()))?;
            out.write(record, &Naming::default())?;
        }
        let unit = merge::unit_of([result]).map_err(CliError::Failed)?;
        let folded = merge::merge([result], &Placements::new(), req.group_by);
        let what = describe_targets(&req.target_words, &req.command);
        if folded.is_empty() {
            let why = match unit {
                Unit::CpuSamples => {
                    "it used no CPU (idle, or blocked); try a longer --duration while it is busy".to_owned()
                }
                _ => format!(
                    "it neither ran nor blocked for {} or more; try a longer --duration, or a lower --min-block",
                    duration::human(std::time::Duration::from_micros(req.min_block_us))
                ),
            };
            return Err(CliError::NothingToProfile(format!(
                "no samples of {what} in {}: {why}",
                duration::human(outcome.elapsed)
            )));
        }
        let ended_early = result.warnings.iter().find(|w| w.code == WarningCode::EndedEarly);
        let partial = outcome.interrupted;
        let how = match unit {
            Unit::CpuSamples => format!("at {} Hz", result.header.frequency_hz),
            Unit::OffCpuMicros => {
                format!("blocks of {} or more", duration::human(Duration::from_micros(req.min_block_us)))
            }
            Unit::WallMicros => format!(
                "on-CPU at {} Hz, blocks of {} or more",
                result.header.frequency_hz,
                duration::human(Duration::from_micros(req.min_block_us))
            ),
        };
        let mut subtitle = format!(
            "{} {how}, {}, node {}",
            duration::human(outcome.elapsed),
            output::amount(folded.total(), unit),
            result.header.node
        );
        if partial {
            subtitle.push_str(" | PARTIAL: stopped by Ctrl-C before the window ended");
        } else if let Some(w) = ended_early {
            subtitle.push_str(&format!(" | {}", w.message));
        }
        let run = RunInfo {
            started_unix_ms: Some(result.header.started_unix_ms),
            duration: Some(outcome.elapsed),
            frequency_hz: Some(result.header.frequency_hz),
            partial: Some(partial),
            unit: Some(unit),
            cgroups: CgroupCpu::of_nodes([result], &Placements::new()),
            nodes: Some(vec![NodeStatus {
                node: result.header.node.clone(),
                status: if partial { NodeStatusKind::Partial } else { NodeStatusKind::Ok },
                samples: Some(folded.total()),
                messages: result.warnings.iter().filter(|w| !w.code.is_info()).map(|w| w.message.clone()).collect(),
            }]),
        };
        closing::write(
            destination,
            Profile {
                stacks: Stacks::Folded(&folded),
                labels: Labels { title: output::title(&what, unit), subtitle },
                run,
                partial: Some(partial),
                tail: if partial { ", PARTIAL)" } else { ")" }.to_owned(),
            },
        )
    }

    fn describe_targets(targets: &[String], command: &[String]) -> String {
        let mut parts: Vec<String> = targets.to_vec();
        if !command.is_empty() {
            parts.push(format!("`{}`", command.join(" ")));
        }
        parts.join(" ")
    }
}

#[cfg(not(target_os = "linux"))]
mod local {
    use super::LocalRequest;
    use crate::commands::net::NetOutput;
    use crate::error::{CliError, Exit};
    use crate::output::Destination;

    pub fn profile(_: &LocalRequest, _: &Destination, _: Option<&NetOutput>) -> Result<Exit, CliError> {
        Err(CliError::Usage(
            "local profiling (pid/N, -- COMMAND) needs Linux; profile cluster workloads from this machine instead"
                .into(),
        ))
    }
}
