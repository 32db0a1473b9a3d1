//! The edge: every command-line argument, as clap parses it, and nothing else sees clap. Each
//! command's arguments are turned once into the typed plan its command runs (as ripgrep turns
//! low-level arguments into high-level ones): [`Command::run`] is the only way in.
//!
//! - [`profile`]: `profile`, with the summary and check flags it shares with `check` and `fetch`;
//! - [`tasks`]: the cluster's other commands (`list`, `fetch`, `clean`, `uninstall`, `init`,
//!   `doctor`) and the connection flags they share with `profile`;
//! - [`offline`]: `check`, `diff`, `convert`;
//! - [`values`]: how the value types (`Format`, `GroupBy`) are spelled on the command line.

mod complete;
mod net;
mod offline;
mod profile;
mod shared;
mod tasks;
mod values;

use clap::{Parser, Subcommand};

pub use complete::{CompleteArgs, CompletionArgs};
pub use net::NetArgs;
pub use offline::{CheckCommand, ConvertArgs, DiffArgs};
pub use profile::ProfileArgs;
pub use tasks::{CleanArgs, DoctorArgs, FetchArgs, InitArgs, ListArgs, UninstallArgs, VersionArgs};

use crate::commands;
use crate::error::{CliError, Exit};

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
  kubectl eagle profile deployment/api -d 30s -o run.pb.gz --push pyroscope http://pyroscope:4040
  kubectl eagle profile deployment/web -n shop -d 30s -o cpu.svg --net net.json   # and its network

Exit codes: 0 ok, 1 a --max/--max-self/regression rule broken, 2 usage, 3 not found,
4 not permitted, 5 nothing to profile, 6 profiling failed, 7 partial result written,
8 output not writable or baseline unreadable, 9 cluster unreachable, 11 written but a --push failed.")]
    Profile(ProfileArgs),

    /// The network side of workloads or processes over a window: TCP per peer, HTTP/1.x per
    /// route, who calls whom.
    #[command(after_help = "\
Examples:
  kubectl eagle net deployment/web -n shop -d 30s
  kubectl eagle net deployment/web deployment/load -n shop -d 1m -o map.dot   # the service map
  kubectl eagle net namespace/shop -d 30s --format json -o net.json
  sudo kubectl-eagle net pid/4242 -d 30s
  sudo kubectl-eagle net -d 5s --format json -- ./server --port 8080
  sudo kubectl-eagle net pid/4242 -d 1m --format prometheus -o net.prom
  sudo kubectl-eagle net pid/4242 -d 30s --max-p99 'http:/api/.*=200ms' --max-retransmits 1%

HTTP/1.x is read from the first bytes of the processes' socket reads and writes (read, write,
recvfrom, sendto); TLS and HTTP/2 are not decoded. The JSON schema is in docs/net.md.

In a cluster, the same Jobs as `profile` run the agents; each node's record is merged, rows are
attributed to pods, and peers are named after the pods and services of the targets' namespaces.

Exit codes: 0 ok, 1 a --max-p99/--max-retransmits rule broken, 2 usage, 3 no such process or
object, 4 not permitted, 6 failed, 7 partial (a node failed, or stopped early), 8 report not writable,
9 cluster unreachable, 11 written but --push-gateway failed.")]
    Net(NetArgs),

    /// Check a profile against share thresholds and a baseline, or a network report against
    /// latency and retransmission limits; exit 1 when a rule is broken.
    #[command(after_help = "\
Examples:
  kubectl eagle check run.folded --max 'serde_json::.*=15%' --max-self 'regex::.*=5%'
  kubectl eagle check run.folded --baseline base.folded --max-regression 3pp
  kubectl eagle profile deployment/api -d 30s -o - | kubectl eagle check - --max-self '^memcpy=10%'
  kubectl eagle check net.json --max-p99 'http:/api/.*=200ms' --max-retransmits 1%

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
  kubectl eagle convert run.pb.gz -o run.pb.gz --push otlp http://collector:4318

Exit codes: 0 written, 2 usage, 5 no samples, 8 the input cannot be read or the output written,
11 written but a --push failed.")]
    Convert(ConvertArgs),

    /// List the profiling runs in the cluster, newest first: status, nodes, and why one failed.
    #[command(after_help = "\
Examples:
  kubectl eagle list
  kubectl eagle list -o json | jq '.[] | select(.status == \"failed\") | .id'

Reads the Jobs of the locked namespace: runs started with -a stay listed for --ttl after they
end; synchronous runs while they run. Exit codes: 0 listed, 4 forbidden, 9 cluster unreachable.")]
    List(ListArgs),

    /// Get the graph of a run started with `profile -a`; waits while it still runs.
    #[command(after_help = "\
Examples:
  kubectl eagle profile namespace/shop -d 5m -a       # prints the run id
  kubectl eagle fetch 9e2017d3 -o shop.svg
  kubectl eagle fetch 9e2017d3 -o shop.folded --group-by workload --clean

Exit codes: 0 written, 1 a --max/--max-self/regression rule broken, 3 no such run or its results
expired, 4 forbidden, 5 no samples, 6 no node delivered, 7 partial, 8 output not writable,
9 cluster unreachable, 11 written but a --push failed.")]
    Fetch(FetchArgs),

    /// Delete profiling runs (their Jobs and pods), running or not.
    #[command(after_help = "\
Examples:
  kubectl eagle clean 9e2017d3
  kubectl eagle clean --all

Only objects labelled app.kubernetes.io/managed-by=kube-eagle are touched; a run that is gone
already is not an error.")]
    Clean(CleanArgs),

    /// Remove everything kube-eagle created: Jobs, pods, RBAC, and its namespace.
    #[command(after_help = "\
Deletes what carries app.kubernetes.io/managed-by=kube-eagle for the locked namespace
(--eagle-namespace): its Jobs and pods, the roles and bindings `init --apply` made for it (in
any namespace), and the namespace itself if kube-eagle created it. Needs cluster-admin.
Running it again finds nothing and exits 0.")]
    Uninstall(UninstallArgs),

    /// Set up the cluster: the locked namespace, and least-privilege RBAC for the plugin's users.
    #[command(after_help = "\
Examples:
  kubectl eagle init                                   # namespace; prints the RBAC for review
  kubectl eagle init --group devs --target-namespace shop --apply
  kubectl eagle init --dry-run > kube-eagle.yaml       # everything as YAML, for GitOps

Users get: read pods and workloads in the target namespaces; create/list/delete Jobs and
get/list/watch/delete pods and their logs in the locked namespace only. Needs cluster-admin.")]
    Init(InitArgs),

    /// Check that you can profile here: permissions, the locked namespace, the profiler image.
    #[command(after_help = "\
Examples:
  kubectl eagle doctor -n shop
  kubectl eagle doctor --skip-image -o json

Exit codes: 0 ready (warnings allowed), 4 a permission is missing, 6 something else is
missing (namespace, image, admission), 9 cluster unreachable.")]
    Doctor(DoctorArgs),

    /// The CLI's version, the agent image it runs, and the cluster's version.
    #[command(after_help = "\
Examples:
  kubectl eagle version
  kubectl eagle version --client        # without asking the cluster

Exit codes: 0 printed, 9 the cluster is unreachable (the client's lines are printed first).")]
    Version(VersionArgs),

    /// Print a shell completion script for kubectl-eagle: bash, zsh or fish.
    #[command(after_help = "\
Examples:
  source <(kubectl-eagle completion bash)                 # bash, for this shell
  kubectl-eagle completion zsh > \"${fpath[1]}/_kubectl-eagle\"
  kubectl-eagle completion fish > ~/.config/fish/completions/kubectl-eagle.fish

For `kubectl eagle <TAB>` (kubectl 1.26 or later), put cli/completion/kubectl_complete-eagle
(it runs `kubectl-eagle __complete`) on your PATH beside kubectl-eagle; krew installs it.")]
    Completion(CompletionArgs),

    /// kubectl's plugin completion protocol, spoken with `kubectl_complete-eagle`.
    #[command(name = "__complete", hide = true)]
    Complete(CompleteArgs),
}

impl Command {
    /// Turns the arguments into their command's plan, and runs it.
    pub fn run(self) -> Result<Exit, CliError> {
        match self {
            Command::Profile(args) => commands::profile::run(args.into_plan()?),
            Command::Check(args) => commands::check::run(args.into_plan()?),
            Command::Net(args) => commands::net::run(args.into_plan()?),
            Command::Diff(args) => commands::diff::run(args.into_plan()),
            Command::Convert(args) => commands::convert::run(args.into_plan()?),
            Command::List(args) => commands::list::run(args.into_plan()),
            Command::Fetch(args) => commands::fetch::run(args.into_plan()?),
            Command::Clean(args) => commands::clean::run(args.into_plan()),
            Command::Uninstall(args) => commands::clean::uninstall(args.into_plan()),
            Command::Init(args) => commands::init::run(args.into_plan()),
            Command::Doctor(args) => commands::doctor::run(args.into_plan()),
            Command::Version(args) => commands::version::run(args.into_plan()),
            Command::Completion(args) => {
                use std::io::Write;
                std::io::stdout()
                    .write_all(&args.script(<Cli as clap::CommandFactory>::command()))
                    .map_err(|e| CliError::Io(format!("cannot write the script: {e}")))?;
                Ok(Exit::Ok)
            }
            Command::Complete(args) => {
                commands::complete::run(args.into_plan(<Cli as clap::CommandFactory>::command()))
            }
        }
    }
}
