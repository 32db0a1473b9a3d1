//! `profile`'s arguments, and the summary and check flags it shares with `check` and `fetch`.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use eagle_proto::{ProfileMode, Runtime, DEFAULT_MIN_BLOCK_US, MAX_FREQUENCY_HZ};

use super::shared::{CheckArgs, ConnArgs, GraphArgs, ImageArgs, PushArgs, RunTargets, SummaryArgs};
use crate::cluster::plan::DEFAULT_WINDOW;
use crate::cluster::profile::ClusterRequest;
use crate::commands::net::NetOutput;
use crate::commands::profile::{LocalRequest, ProfilePlan, Work};
use crate::duration::{parse_duration, parse_min_block, parse_ttl};
use crate::error::CliError;
use crate::placement::GroupBy;

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// What to profile: pod/NAME, deployment/NAME, statefulset/, daemonset/, replicaset/, job/,
    /// service/NAME, namespace/NAME in the cluster; pid/N on this machine. Several allowed.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Sampling window: 500ms, 10s, 2m [default: 30s; with a command: until it exits]
    #[arg(short = 'd', long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Samples per second per CPU.
    #[arg(short = 'f', long, default_value_t = 99, value_name = "HZ", value_parser = clap::value_parser!(u64).range(1..=MAX_FREQUENCY_HZ))]
    pub frequency: u64,

    /// What to measure: cpu (on-CPU samples), off-cpu (microseconds blocked, by the stack
    /// that blocked), wall (on-CPU and off-CPU microseconds in one graph).
    #[arg(long, default_value = "cpu", value_name = "MODE", value_parser = parse_mode())]
    pub mode: ProfileMode,

    /// off-cpu and wall: blocks and waits for a CPU shorter than this are not counted (0: every
    /// one) [default: 1ms]
    #[arg(long, value_parser = parse_min_block, value_name = "DURATION")]
    pub min_block: Option<u64>,

    #[command(flatten)]
    pub graph: GraphArgs,

    /// Treat every target process as this runtime instead of detecting it:
    /// native, go, python, java, ruby, node.
    #[arg(long, value_name = "RUNTIME", value_parser = parse_runtime())]
    pub runtime: Option<Runtime>,

    /// Python: merge native (C extension) frames into the Python stacks (py-spy --native).
    #[arg(long)]
    pub native: bool,

    /// Also watch the targets' network in the same window (what `net` reports: TCP per peer,
    /// HTTP/1.x per route, drops, listen-queue overflows) and write that report here; its
    /// format follows the extension (.json, .prom, .dot, else the table); `-` is stdout.
    #[arg(long, value_name = "FILE")]
    pub net: Option<PathBuf>,

    #[command(flatten)]
    pub summary: SummaryArgs,

    #[command(flatten)]
    pub checks: CheckArgs,

    #[command(flatten)]
    pub push: PushArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// A command to start and profile from its first instruction (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Flags of cluster mode, spelled as kubectl spells them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// Namespace of the targets [default: the context's].
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// Profile the pods matching this label selector (like kubectl -l).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,

    /// Only this container of each pod.
    #[arg(short = 'c', long)]
    pub container: Option<String>,

    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub agent_image: ImageArgs,

    /// Run the agent with the minimal capabilities (BPF, PERFMON, SYS_PTRACE, SYS_ADMIN)
    /// instead of privileged.
    #[arg(long)]
    pub capabilities: bool,

    /// Print the Jobs that would be created, as YAML, and create nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Keep the Jobs after the run (their TTL still removes them).
    #[arg(long)]
    pub keep: bool,

    /// Start the run and return at once: print its id and the `fetch` command that gets the
    /// graph; the Jobs keep their results for --ttl.
    #[arg(short = 'a', long = "async")]
    pub async_: bool,

    /// How long finished Jobs keep their results: 30m, 24h, 7d [default: 24h with -a, 5m otherwise].
    #[arg(long, value_parser = parse_ttl, value_name = "DURATION")]
    pub ttl: Option<Duration>,

    /// Refuse the run when one of its nodes already runs this many profiling runs.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_node: u32,

    /// Run even on nodes busy with other profiling runs (see --max-per-node).
    #[arg(long)]
    pub force: bool,
}

/// `--runtime`: the names the agent knows, as it spells them (clap lists them in the help).
fn parse_runtime() -> impl TypedValueParser<Value = Runtime> {
    PossibleValuesParser::new(Runtime::ALL.map(Runtime::name))
        .map(|name| name.parse::<Runtime>().expect("a name of Runtime::ALL parses"))
}

/// `--mode`: the names the agent knows (clap lists them in the help).
fn parse_mode() -> impl TypedValueParser<Value = ProfileMode> {
    PossibleValuesParser::new(ProfileMode::ALL.map(ProfileMode::name))
        .map(|name| name.parse::<ProfileMode>().expect("a name of ProfileMode::ALL parses"))
}

/// How a `--format` and `--group-by` are written back, for the command that fetches a run.
fn flag_value(value: impl ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
}

impl ProfileArgs {
    /// What to profile, where, and how: the targets parsed, local and cluster ones kept apart,
    /// and the flags that make no sense together refused, before anything else happens.
    pub fn into_plan(self) -> Result<ProfilePlan, CliError> {
        let RunTargets { cluster: cluster_targets, pids, is_cluster } =
            RunTargets::parse(&self.targets, &self.command, self.cluster.selector.is_some(), "profile")?;
        if self.min_block.is_some() && self.mode == ProfileMode::Cpu {
            return Err(CliError::Usage(
                "--min-block filters off-CPU blocks: add --mode off-cpu or --mode wall".into(),
            ));
        }
        let min_block_us = self.min_block.unwrap_or(DEFAULT_MIN_BLOCK_US);
        let is_stdout = |p: &std::path::Path| p.as_os_str() == "-";
        if self.net.as_deref().is_some_and(is_stdout) && is_stdout(&self.graph.output) {
            return Err(CliError::Usage(
                "-o - and --net - both write to stdout: give one of them a file (--net net.json)".into(),
            ));
        }
        let net = self.net.map(NetOutput::new);
        let summary = self.summary.into_plan();
        let rules = self.checks.into_plan();
        let push = self.push.into_plan()?;
        if self.cluster.async_ {
            if !is_cluster {
                return Err(CliError::Usage(
                    "-a/--async runs in the cluster: name cluster targets (deployment/NAME, ...); a local profile (pid/N, -- COMMAND) cannot run detached".into(),
                ));
            }
            if !rules.is_empty() || summary.path.is_some() {
                return Err(CliError::Usage(
                    "--summary and the check rules need the profile, which -a does not wait for: pass them to `kubectl eagle fetch`".into(),
                ));
            }
            if !push.is_empty() {
                return Err(CliError::Usage(
                    "--push needs the profile, which -a does not wait for: pass it to `kubectl eagle fetch`".into(),
                ));
            }
        }
        let work = if is_cluster {
            let c = self.cluster;
            let mut fetch_flags = Vec::new();
            if let Some(f) = self.graph.format {
                fetch_flags.extend(["--format".to_owned(), flag_value(f)]);
            }
            if self.graph.group_by != GroupBy::Process {
                fetch_flags.extend(["--group-by".to_owned(), flag_value(self.graph.group_by)]);
            }
            Work::Cluster(Box::new(ClusterRequest {
                conn: c.conn.connection(),
                eagle_namespace: c.conn.eagle_namespace,
                targets: cluster_targets,
                target_words: self.targets,
                selector: c.selector,
                namespace: c.namespace,
                container: c.container,
                image: c.agent_image.into_plan(),
                window: self.duration.unwrap_or(DEFAULT_WINDOW),
                frequency_hz: self.frequency,
                runtime: self.runtime,
                python_native: self.native,
                mode: self.mode,
                min_block_us,
                net: net.is_some(),
                net_only: false,
                capabilities: c.capabilities,
                dry_run: c.dry_run,
                keep: c.keep,
                is_async: c.async_,
                ttl: c.ttl,
                max_per_node: c.max_per_node,
                force: c.force,
                group_by: self.graph.group_by,
                fetch_flags,
            }))
        } else {
            Work::Local(LocalRequest {
                pids,
                target_words: self.targets,
                command: self.command,
                duration: self.duration,
                frequency_hz: self.frequency,
                runtime: self.runtime,
                native: self.native,
                mode: self.mode,
                min_block_us,
                group_by: self.graph.group_by,
            })
        };
        Ok(ProfilePlan { output: self.graph.output, format: self.graph.format, summary, rules, push, net, work })
    }
}
