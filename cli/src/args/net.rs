//! `net`'s arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::commands::net::{NetFormat, NetPlan};
use crate::duration::parse_duration;
use crate::error::CliError;
use crate::target::{self, Target};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NetFormatArg {
    Table,
    Json,
    Prometheus,
}

#[derive(Debug, Args)]
pub struct NetArgs {
    /// What to watch: pid/N on this machine (several allowed). Cluster targets are not
    /// supported by `net` yet.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Window: 500ms, 10s, 2m [default: 30s; with a command: until it exits]
    #[arg(short = 'd', long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// table (the terminal), json (schema in docs/net.md) or prometheus (text format).
    #[arg(long, value_enum, default_value = "table")]
    pub format: NetFormatArg,

    /// Write the report here instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Fail (exit 1) when a matching route's p99 is over: 'http:PATH_REGEX=DURATION'.
    #[arg(long, value_name = "RULE")]
    pub max_p99: Vec<String>,

    /// Fail (exit 1) when retransmitted segments to a peer exceed this share: 1%.
    #[arg(long, value_name = "PERCENT")]
    pub max_retransmits: Option<String>,

    /// A command to start and watch from its first instruction (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl NetArgs {
    pub fn into_plan(self) -> Result<NetPlan, CliError> {
        let targets = self.targets.iter().map(|t| target::parse(t)).collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() && self.command.is_empty() {
            return Err(CliError::Usage("nothing to watch: name pid/N or a command after `--`".into()));
        }
        let mut pids = Vec::new();
        for t in &targets {
            match t {
                Target::Pid(p) => pids.push(*p),
                _ => return Err(CliError::Usage(
                    "`net` watches local processes only for now (pid/N, -- COMMAND); cluster targets need `profile`"
                        .into(),
                )),
            }
        }
        #[cfg(target_os = "linux")]
        let rules = {
            use crate::net_report::NetRule;
            let mut rules = self.max_p99.iter().map(|s| NetRule::parse_p99(s)).collect::<Result<Vec<_>, _>>();
            if let (Ok(r), Some(spec)) = (&mut rules, &self.max_retransmits) {
                r.push(NetRule::parse_retransmits(spec).map_err(CliError::Usage)?);
            }
            rules.map_err(CliError::Usage)?
        };
        Ok(NetPlan {
            pids,
            command: self.command,
            duration: self.duration,
            format: match self.format {
                NetFormatArg::Table => NetFormat::Table,
                NetFormatArg::Json => NetFormat::Json,
                NetFormatArg::Prometheus => NetFormat::Prometheus,
            },
            output: self.output,
            #[cfg(target_os = "linux")]
            rules,
        })
    }
}
