//! The flag groups several commands share: the connection (every cluster command), the image
//! (`profile`, `doctor`), the summary and the check rules (`profile`, `fetch`, `check`).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;

use crate::check::RuleSpecs;
use crate::cluster::api::Connection;
use crate::cluster::plan::{self, Image, PullPolicy};
use crate::format::Format;
use crate::gate::SummaryRequest;
use crate::placement::GroupBy;

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
}

impl ConnArgs {
    pub fn connection(&self) -> Connection {
        Connection { kubeconfig: self.kubeconfig.clone(), context: self.context.clone() }
    }
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
