//! The flag groups several commands share: the connection (every cluster command), the image
//! (`profile`, `doctor`), the summary and the check rules (`profile`, `fetch`, `check`).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;

use crate::check::RuleSpecs;
use crate::cluster::api::Connection;
use crate::cluster::plan::{self, Image, PullPolicy};
use crate::error::CliError;
use crate::format::Format;
use crate::gate::SummaryRequest;
use crate::placement::GroupBy;
use crate::push::target::PushPlan;
use crate::target::{self, ClusterKind, Target};

/// How to reach the cluster and the locked namespace, for the commands that need nothing else.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ConnArgs {
    /// Path to the kubeconfig file [default: $KUBECONFIG, ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,

    /// The locked namespace the profiling Jobs run in.
    #[arg(long, default_value = "kube-eagle", value_name = "NAMESPACE")]
    pub eagle_namespace: String,

    /// How long to wait for each API request (not for log follows and watches, which last the
    /// run), as kubectl's flag: `10s`, `1m`; `0` waits forever.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_request_timeout)]
    pub request_timeout: Duration,

    /// Act as this user (impersonation: the real user needs RBAC's `impersonate` verb), as
    /// kubectl's flag; every request, access check and `doctor` answer is for that user.
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,

    /// A group to act as, with --as; repeatable.
    #[arg(long = "as-group", value_name = "GROUP", requires = "as_user")]
    pub as_group: Vec<String>,

    /// Log level, as kubectl's: 1 the connection, 2 each node's steps, 4 retries and
    /// decisions, 6 every API request with its status and time, 7 also request headers.
    #[arg(short = 'v', long = "v", value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=10))]
    pub verbosity: u8,

    /// The most API requests of one kind (Job creates, log follows, deletes) in flight at once.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_concurrent_requests: u32,
}

impl ConnArgs {
    pub fn connection(&self) -> Connection {
        Connection {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            request_timeout: (!self.request_timeout.is_zero()).then_some(self.request_timeout),
            max_concurrent_requests: self.max_concurrent_requests as usize,
            impersonate_user: self.as_user.clone(),
            impersonate_groups: self.as_group.clone(),
            verbosity: self.verbosity,
        }
    }
}

/// `--request-timeout`: a duration, or `0` for none (kubectl's spelling).
fn parse_request_timeout(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    crate::duration::parse_duration(s)
}

/// The profiler image and how the nodes get it: the same flags for `profile` and `doctor`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Profiler image [default: the eagle-agent image of this version].
    #[arg(long)]
    pub image: Option<String>,

    /// imagePullPolicy of the profiler pods.
    #[arg(long, value_parser = parse_pull_policy())]
    pub image_pull_policy: Option<PullPolicy>,

    /// Image pull secret (in the profiling namespace); repeatable.
    #[arg(long)]
    pub image_pull_secret: Vec<String>,
}

/// `--image-pull-policy`, spelled as Kubernetes spells it (clap lists the values in the help).
fn parse_pull_policy() -> impl TypedValueParser<Value = PullPolicy> {
    PossibleValuesParser::new(PullPolicy::ALL.map(PullPolicy::as_str))
        .map(|name| PullPolicy::ALL.into_iter().find(|p| p.as_str() == name).expect("a name of PullPolicy::ALL"))
}

impl ImageArgs {
    pub fn into_plan(self) -> Image {
        Image {
            reference: self.image.unwrap_or_else(plan::default_image),
            pull_policy: self.image_pull_policy,
            pull_secrets: self.image_pull_secret,
        }
    }
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

impl SummaryArgs {
    pub fn into_plan(self) -> SummaryRequest {
        SummaryRequest { path: self.summary, top: self.summary_top }
    }
}

impl CheckArgs {
    pub fn into_plan(self) -> RuleSpecs {
        RuleSpecs {
            max: self.max,
            max_self: self.max_self,
            baseline: self.baseline,
            max_regression: self.max_regression,
            max_self_regression: self.max_self_regression,
        }
    }
}

/// Where and how a profile is written: the same flags on `profile` and `fetch`, which writes the
/// graph of a run as `profile` would have.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Output file; the format follows the extension (.svg, .folded/.txt, .json, .pb.gz/.pprof); `-` is stdout.
    #[arg(short = 'o', long, value_name = "FILE", default_value = "flamegraph.svg")]
    pub output: PathBuf,

    /// Output format, overriding the extension.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Hierarchy levels kept above the code frames; `none` merges processes into one code view.
    #[arg(long, value_enum, default_value_t = GroupBy::Process)]
    pub group_by: GroupBy,
}

/// `--push RECEIVER URL` (`profile`, `fetch`, `convert`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Push")]
pub struct PushArgs {
    /// After writing the profile, push it to a receiver too: `pyroscope URL` (Grafana
    /// Pyroscope's /ingest) or `otlp URL` (OTLP/HTTP profiles, /v1development/profiles).
    /// Labelled with namespace, workload, pod and container. Repeatable.
    #[arg(long, num_args = 2, value_names = ["RECEIVER", "URL"], action = clap::ArgAction::Append)]
    pub push: Vec<String>,

    /// A header sent with every push: 'Authorization: Basic ...', 'X-Scope-OrgID: team-a'. Repeatable.
    #[arg(long, value_name = "'NAME: VALUE'")]
    pub push_header: Vec<String>,

    /// The service name profiles are stored under [default: NAMESPACE/WORKLOAD of each series].
    #[arg(long, value_name = "NAME")]
    pub push_service: Option<String>,
}

impl PushArgs {
    pub fn into_plan(self) -> Result<PushPlan, CliError> {
        PushPlan::parse(&self.push, &self.push_header, self.push_service).map_err(CliError::Usage)
    }
}

/// The targets of a run (`profile`, `net`), parsed once: the cluster ones apart from a local
/// run's pids, and the two mistakes both commands refuse (nothing named; local and cluster
/// mixed in one run).
pub struct RunTargets {
    /// `deployment/api`, `namespace/shop`, ... as (kind, name).
    pub cluster: Vec<(ClusterKind, String)>,
    /// `pid/N` of a local run.
    pub pids: Vec<u32>,
    /// Cluster targets or a label selector: the run goes through Jobs.
    pub is_cluster: bool,
}

impl RunTargets {
    /// `verb` names what the run does in the error for no target ("profile", "watch").
    pub fn parse(words: &[String], command: &[String], has_selector: bool, verb: &str) -> Result<Self, CliError> {
        let targets = words.iter().map(|t| target::parse(t)).collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() && command.is_empty() && !has_selector {
            return Err(CliError::Usage(format!(
                "nothing to {verb}: name a target (pid/N, deployment/NAME, -l SELECTOR, ...) or a command after `--`"
            )));
        }
        let mut cluster = Vec::new();
        let mut pids = Vec::new();
        for t in targets {
            match t {
                Target::Cluster { kind, name } => cluster.push((kind, name)),
                Target::Pid(pid) => pids.push(pid),
            }
        }
        let is_cluster = !cluster.is_empty() || has_selector;
        if is_cluster && (!pids.is_empty() || !command.is_empty()) {
            return Err(CliError::Usage(
                "cluster targets and local ones (pid/N, -- COMMAND) cannot be mixed in one run".into(),
            ));
        }
        Ok(Self { cluster, pids, is_cluster })
    }
}
