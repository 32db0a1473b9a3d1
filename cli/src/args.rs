//! Command-line arguments. Parsing validates; `main` then builds the real plan from them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::parse_duration;
use crate::merge::GroupBy;
use crate::output::Format;

/// Highest accepted sampling rate; the agent enforces the same bound.
pub const MAX_FREQUENCY_HZ: u64 = 10_000;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-eagle",
    bin_name = "kubectl eagle",
    version,
    about = "Where does the CPU of this workload go? One flame graph of a process, a pod, a workload or a namespace."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample CPU stacks of the targets for a window and write one flame graph.
    #[command(after_help = "\
Examples:
  kubectl eagle profile pid/4242 -d 10s -f 99 -o flame.svg
  kubectl eagle profile pid/4242 pid/4243 -o out.folded
  kubectl eagle profile -d 5s -o flame.svg -- ./server --port 8080

Exit codes: 0 ok, 2 usage, 3 not found, 4 not permitted, 5 nothing to profile,
6 profiling failed, 7 partial result written, 8 output not writable, 9 cluster unreachable.")]
    Profile(ProfileArgs),
}

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

    /// Output file; the format follows the extension (.svg, .folded/.txt, .json); `-` is stdout.
    #[arg(short = 'o', long, value_name = "FILE", default_value = "flamegraph.svg")]
    pub output: PathBuf,

    /// Output format, overriding the extension.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Hierarchy levels kept above the code frames; `none` merges processes into one code view.
    #[arg(long, value_enum, default_value_t = GroupBy::Process)]
    pub group_by: GroupBy,

    /// Treat every target process as this runtime instead of detecting it:
    /// native, go, python, java, ruby, node.
    #[arg(long, value_name = "RUNTIME", value_parser = ["native", "go", "python", "java", "ruby", "node"])]
    pub runtime: Option<String>,

    /// Python: merge native (C extension) frames into the Python stacks (py-spy --native).
    #[arg(long)]
    pub native: bool,

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

    /// Path to the kubeconfig file [default: $KUBECONFIG, ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,

    /// Profiler image [default: the eagle-agent image of this version].
    #[arg(long)]
    pub image: Option<String>,

    /// imagePullPolicy of the profiler pods.
    #[arg(long, value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: Option<String>,

    /// Image pull secret (in the profiling namespace); repeatable.
    #[arg(long)]
    pub image_pull_secret: Vec<String>,

    /// The locked namespace the profiling Jobs run in.
    #[arg(long, default_value = "kube-eagle", value_name = "NAMESPACE")]
    pub eagle_namespace: String,

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
}
