//! The arguments of the commands that work on profile files: `check`, `diff`, `convert`.

use std::path::PathBuf;

use clap::Args;
use eagle_proto::MAX_FREQUENCY_HZ;

use super::shared::{CheckArgs, PushArgs, SummaryArgs};
use crate::commands::check::CheckPlan;
use crate::commands::convert::ConvertPlan;
use crate::commands::diff::DiffPlan;
use crate::error::CliError;
use crate::format::Format;
use crate::net_report::NetRule;

#[derive(Debug, Args)]
pub struct CheckCommand {
    /// The profile: folded stacks or pprof (.pb.gz); with --max-p99 or --max-retransmits, a
    /// network report (the JSON of `net` or `profile --net`); `-` reads standard input.
    #[arg(value_name = "PROFILE")]
    pub input: PathBuf,

    #[command(flatten)]
    pub checks: CheckArgs,

    /// Network report: every route whose path matches has its p99 at most DURATION:
    /// 'http:PATH_REGEX=DURATION'. Repeatable.
    #[arg(long, value_name = "RULE", help_heading = "Network report rules")]
    pub max_p99: Vec<String>,

    /// Network report: retransmitted segments to a peer at most this share of those sent: 1%.
    #[arg(long, value_name = "PERCENT", help_heading = "Network report rules")]
    pub max_retransmits: Option<String>,

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

    #[command(flatten)]
    pub push: PushArgs,
}

impl CheckCommand {
    pub fn into_plan(self) -> Result<CheckPlan, CliError> {
        let mut net_rules = self.max_p99.iter().map(|s| NetRule::parse_p99(s)).collect::<Result<Vec<_>, _>>();
        if let (Ok(rules), Some(spec)) = (&mut net_rules, &self.max_retransmits) {
            rules.push(NetRule::parse_retransmits(spec).map_err(CliError::Usage)?);
        }
        let net_rules = net_rules.map_err(CliError::Usage)?;
        let rules = self.checks.into_plan();
        let summary = self.summary.into_plan();
        if !net_rules.is_empty() && (!rules.is_empty() || summary.path.is_some()) {
            return Err(CliError::Usage(
                "--max-p99/--max-retransmits judge a network report, the other rules and --summary a profile: check each file on its own"
                    .into(),
            ));
        }
        Ok(CheckPlan { input: self.input, rules, summary, net_rules })
    }
}

impl DiffArgs {
    pub fn into_plan(self) -> DiffPlan {
        DiffPlan {
            base: self.base,
            new: self.new,
            output: self.output,
            title: self.title,
            negate: self.negate,
            code_only: self.code_only,
        }
    }
}

impl ConvertArgs {
    pub fn into_plan(self) -> Result<ConvertPlan, CliError> {
        Ok(ConvertPlan {
            input: self.input,
            output: self.output,
            format: self.format,
            title: self.title,
            frequency_hz: self.frequency,
            summary: self.summary.into_plan(),
            push: self.push.into_plan()?,
        })
    }
}
