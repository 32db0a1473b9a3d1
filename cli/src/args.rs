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
#[allow(clippy::large_enum_variant)] // parsed once per run
pub enum Command {
    /// Sample CPU stacks of the targets for a window and write one flame graph.
    #[command(after_help = "\
Examples:
  kubectl eagle profile pid/4242 -d 10s -f 99 -o flame.svg
  kubectl eagle profile pid/4242 pid/4243 -o out.folded
  kubectl eagle profile -d 5s -o flame.svg -- ./server --port 8080
  kubectl eagle profile deployment/api -n ci -d 30s -o run.folded --summary summary.json \\
      --max 'serde_json::.*=15%'

Exit codes: 0 ok, 1 a --max/--max-self/regression rule broken, 2 usage, 3 not found,
4 not permitted, 5 nothing to profile, 6 profiling failed, 7 partial result written,
8 output not writable or baseline unreadable, 9 cluster unreachable.")]
    Profile(ProfileArgs),

    /// Check a profile against share thresholds and a baseline; exit 1 when a rule is broken.
    #[command(after_help = "\
Examples:
  kubectl eagle check run.folded --max 'serde_json::.*=15%' --max-self 'regex::.*=5%'
  kubectl eagle check run.folded --baseline base.folded --max-regression 3pp
  kubectl eagle profile deployment/api -d 30s -o - | kubectl eagle check - --max-self '^memcpy=10%'

Shares are of all samples; --max counts a sample when any matching function is on its stack,
--max-self when the innermost one matches. Regressions are percentage points of share over
the baseline's. The schema of --summary is in docs/ci.md.

Exit codes: 0 every rule holds, 1 a rule is broken, 2 usage (bad rule or regex),
5 no samples in the profile, 8 a profile cannot be read (missing, malformed line N).")]
    Check(CheckCommand),

    /// Differential flame graph of two profiles: red grew, blue shrank, both normalised.
    #[command(after_help = "\
Examples:
  kubectl eagle diff base.folded run.folded -o diff.svg
  kubectl eagle diff run.folded base.folded --negate -o gone.svg   # what shrank or vanished

The graph has the shape of NEW, colored by the change from BASE; BASE is scaled to NEW's
sample count first. Pod names and pids change between runs, so they are dropped before
comparing (--code-only drops every hierarchy level).

Exit codes: 0 written, 2 usage, 5 no samples, 8 a profile cannot be read or the output written.")]
    Diff(DiffArgs),

    /// Convert a profile: folded or pprof in; SVG, folded, speedscope or pprof out.
    #[command(after_help = "\
Examples:
  kubectl eagle convert run.folded -o run.pb.gz -f 99     # pprof: go tool pprof, Pyroscope
  kubectl eagle convert run.folded -o run.svg --summary summary.json
  kubectl eagle convert cpu.pprof -o cpu.folded           # a Go profile into folded stacks

Exit codes: 0 written, 2 usage, 5 no samples, 8 the input cannot be read or the output written.")]
    Convert(ConvertArgs),

    /// List the profiling runs in the cluster, newest first: status, nodes, and why one failed.
    #[command(after_help = "\
Examples:
  kubectl eagle list
  kubectl eagle list -o json | jq '.[] | select(.status == \"failed\") | .id'

Reads the Jobs of the locked namespace: runs started with -a stay listed for --ttl after they
end; synchronous runs while they run. Exit codes: 0 listed, 4 forbidden, 9 cluster unreachable.")]
    List(crate::cluster::tasks::ListArgs),

    /// Get the graph of a run started with `profile -a`; waits while it still runs.
    #[command(after_help = "\
Examples:
  kubectl eagle profile namespace/shop -d 5m -a       # prints the run id
  kubectl eagle fetch 9e2017d3 -o shop.svg
  kubectl eagle fetch 9e2017d3 -o shop.folded --group-by workload --clean

Exit codes: 0 written, 1 a --max/--max-self/regression rule broken, 3 no such run or its results
expired, 4 forbidden, 5 no samples, 6 no node delivered, 7 partial, 8 output not writable,
9 cluster unreachable.")]
    Fetch(crate::cluster::tasks::FetchArgs),

    /// Delete profiling runs (their Jobs and pods), running or not.
    #[command(after_help = "\
Examples:
  kubectl eagle clean 9e2017d3
  kubectl eagle clean --all

Only objects labelled app.kubernetes.io/managed-by=kube-eagle are touched; a run that is gone
already is not an error.")]
    Clean(crate::cluster::tasks::CleanArgs),

    /// Remove everything kube-eagle created: Jobs, pods, RBAC, and its namespace.
    #[command(after_help = "\
Deletes what carries app.kubernetes.io/managed-by=kube-eagle for the locked namespace
(--eagle-namespace): its Jobs and pods, the roles and bindings `init --apply` made for it (in
any namespace), and the namespace itself if kube-eagle created it. Needs cluster-admin.
Running it again finds nothing and exits 0.")]
    Uninstall(crate::cluster::tasks::UninstallArgs),

    /// Set up the cluster: the locked namespace, and least-privilege RBAC for the plugin's users.
    #[command(after_help = "\
Examples:
  kubectl eagle init                                   # namespace; prints the RBAC for review
  kubectl eagle init --group devs --target-namespace shop --apply
  kubectl eagle init --dry-run > kube-eagle.yaml       # everything as YAML, for GitOps

Users get: read pods and workloads in the target namespaces; create/list/watch/delete Jobs,
pods and pod logs in the locked namespace only. Needs cluster-admin.")]
    Init(crate::cluster::rbac::InitArgs),

    /// Check that you can profile here: permissions, the locked namespace, the profiler image.
    #[command(after_help = "\
Examples:
  kubectl eagle doctor -n shop
  kubectl eagle doctor --skip-image -o json

Exit codes: 0 ready (warnings allowed), 4 a permission is missing, 6 something else is
missing (namespace, image, admission), 9 cluster unreachable.")]
    Doctor(crate::cluster::doctor::DoctorArgs),
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

    /// Output file; the format follows the extension (.svg, .folded/.txt, .json, .pb.gz/.pprof); `-` is stdout.
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
    pub summary: SummaryArgs,

    #[command(flatten)]
    pub checks: CheckArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// A command to start and profile from its first instruction (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Flags of cluster mode, spelled as kubectl spells them.
/// The profiler image and how the nodes get it: the same flags for `profile` and `doctor`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Profiler image [default: the eagle-agent image of this version].
    #[arg(long)]
    pub image: Option<String>,

    /// imagePullPolicy of the profiler pods.
    #[arg(long, value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: Option<String>,

    /// Image pull secret (in the profiling namespace); repeatable.
    #[arg(long)]
    pub image_pull_secret: Vec<String>,
}

impl ImageArgs {
    /// `--image`, or the eagle-agent image of this version.
    pub fn reference(&self) -> String {
        self.image.clone().unwrap_or_else(crate::cluster::plan::default_image)
    }
}

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

    #[command(flatten)]
    pub agent_image: ImageArgs,

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

    /// Start the run and return at once: print its id and the `fetch` command that gets the
    /// graph; the Jobs keep their results for --ttl.
    #[arg(short = 'a', long = "async")]
    pub async_: bool,

    /// How long finished Jobs keep their results: 30m, 24h, 7d [default: 24h with -a, 5m otherwise].
    #[arg(long, value_parser = crate::cluster::tasks::parse_ttl, value_name = "DURATION")]
    pub ttl: Option<Duration>,

    /// Refuse the run when one of its nodes already runs this many profiling runs.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_node: u32,

    /// Run even on nodes busy with other profiling runs (see --max-per-node).
    #[arg(long)]
    pub force: bool,
}

/// `--summary`, on `profile`, `check` and `convert`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Summary and checks")]
pub struct SummaryArgs {
    /// Also write a JSON summary here: samples, rate, nodes, top functions (schema: docs/ci.md).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Functions in each of the summary's top lists.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub summary_top: usize,
}

/// The rules of `check`, also accepted by `profile` (checked on the fresh profile).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Summary and checks")]
pub struct CheckArgs {
    /// At most this share of samples may have a function matching REGEX on the stack
    /// (inclusive): 'serde_json::.*=15%'. Repeatable.
    #[arg(long, value_name = "REGEX=PERCENT")]
    pub max: Vec<String>,

    /// At most this share of samples may have a function matching REGEX innermost (self time):
    /// 'regex::.*=5%'. Repeatable.
    #[arg(long, value_name = "REGEX=PERCENT")]
    pub max_self: Vec<String>,

    /// The profile to compare with (folded or pprof), for the regression rules.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// No function's inclusive share may grow by more than this many percentage points over
    /// the baseline: 3pp; 'REGEX=3pp' bounds the group REGEX matches instead. Repeatable.
    #[arg(long, value_name = "[REGEX=]POINTS")]
    pub max_regression: Vec<String>,

    /// As --max-regression, for self shares.
    #[arg(long, value_name = "[REGEX=]POINTS")]
    pub max_self_regression: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CheckCommand {
    /// The profile: folded stacks or pprof (.pb.gz); `-` reads standard input.
    #[arg(value_name = "PROFILE")]
    pub input: PathBuf,

    #[command(flatten)]
    pub checks: CheckArgs,

    #[command(flatten)]
    pub summary: SummaryArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The baseline profile (folded or pprof).
    #[arg(value_name = "BASE")]
    pub base: PathBuf,

    /// The profile to compare with it; the graph has its shape.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,

    /// Output: .svg, or .folded/.txt for the three-column differential folded stacks.
    #[arg(short = 'o', long, value_name = "FILE", default_value = "diff.svg")]
    pub output: PathBuf,

    /// Graph title [default: kube-eagle diff: BASE -> NEW].
    #[arg(long)]
    pub title: Option<String>,

    /// Swap the colors (blue grew, red shrank): with BASE and NEW swapped, shows what vanished.
    #[arg(long)]
    pub negate: bool,

    /// Compare code frames only, dropping every hierarchy level (namespace, workload, ...).
    #[arg(long)]
    pub code_only: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The profile: folded stacks or pprof (.pb.gz); `-` reads standard input.
    #[arg(value_name = "PROFILE")]
    pub input: PathBuf,

    /// Output file; the format follows the extension (.svg, .folded/.txt, .json, .pb.gz/.pprof); `-` is stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,

    /// Output format, overriding the extension.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Graph title [default: the input's file name].
    #[arg(long)]
    pub title: Option<String>,

    /// The rate the input was sampled at, when it does not say (folded files do not): gives
    /// pprof its cpu/nanoseconds values and the summary its CPU seconds.
    #[arg(short = 'f', long, value_name = "HZ", value_parser = clap::value_parser!(u64).range(1..=MAX_FREQUENCY_HZ))]
    pub frequency: Option<u64>,

    #[command(flatten)]
    pub summary: SummaryArgs,
}
