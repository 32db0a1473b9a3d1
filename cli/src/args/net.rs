//! `net`'s arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::profile::ClusterArgs;
use super::shared::RunTargets;
use crate::cluster::plan::DEFAULT_WINDOW;
use crate::cluster::profile::ClusterRequest;
use crate::commands::net::{NetFormat, NetPlan, NetWork};
use crate::duration::parse_duration;
use crate::error::CliError;
use crate::net_report::NetRule;
use crate::placement::GroupBy;
use crate::push::gateway::PushGateway;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NetFormatArg {
    Table,
    Json,
    Prometheus,
    Dot,
}

#[derive(Debug, Args)]
pub struct NetArgs {
    /// What to watch: pod/NAME, deployment/NAME, statefulset/, daemonset/, replicaset/, job/,
    /// service/NAME, namespace/NAME in the cluster; pid/N on this machine. Several allowed.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Window: 500ms, 10s, 2m [default: 30s; with a command: until it exits]
    #[arg(short = 'd', long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// table (the terminal), json (schema in docs/net.md), prometheus (text format) or dot
    /// (the service map, for Graphviz) [default: from the -o file's extension (.json, .prom,
    /// .dot), else table]
    #[arg(long, value_enum)]
    pub format: Option<NetFormatArg>,

    /// Write the report here instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Fail (exit 1) when a matching route's p99 is over: 'http:PATH_REGEX=DURATION'.
    #[arg(long, value_name = "RULE")]
    pub max_p99: Vec<String>,

    /// Fail (exit 1) when retransmitted segments to a peer exceed this share: 1%.
    #[arg(long, value_name = "PERCENT")]
    pub max_retransmits: Option<String>,

    /// Also send the Prometheus text to this Pushgateway (http://HOST:PORT), grouped as
    /// job=kube-eagle-net and run=RUN_ID (`local` for local targets).
    #[arg(long, value_name = "URL")]
    pub push_gateway: Option<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// A command to start and watch from its first instruction (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl NetArgs {
    pub fn into_plan(self) -> Result<NetPlan, CliError> {
        let RunTargets { cluster: cluster_targets, pids, is_cluster } =
            RunTargets::parse(&self.targets, &self.command, self.cluster.selector.is_some(), "watch")?;
        if self.cluster.async_ {
            if !is_cluster {
                return Err(CliError::Usage(
                    "-a/--async runs in the cluster: name cluster targets (deployment/NAME, ...); a local process cannot be watched detached".into(),
                ));
            }
            if !self.max_p99.is_empty() || self.max_retransmits.is_some() || self.push_gateway.is_some() {
                return Err(CliError::Usage(
                    "the rules and --push-gateway need the report, which -a does not wait for: fetch it (`kubectl eagle fetch RUN --net net.json`) and run `kubectl eagle check net.json --max-p99 ...`".into(),
                ));
            }
        }
        let mut rules = self.max_p99.iter().map(|s| NetRule::parse_p99(s)).collect::<Result<Vec<_>, _>>();
        if let (Ok(r), Some(spec)) = (&mut rules, &self.max_retransmits) {
            r.push(NetRule::parse_retransmits(spec).map_err(CliError::Usage)?);
        }
        let rules = rules.map_err(CliError::Usage)?;
        let push = self.push_gateway.as_deref().map(PushGateway::parse).transpose().map_err(CliError::Usage)?;
        let format = match self.format {
            Some(NetFormatArg::Table) => NetFormat::Table,
            Some(NetFormatArg::Json) => NetFormat::Json,
            Some(NetFormatArg::Prometheus) => NetFormat::Prometheus,
            Some(NetFormatArg::Dot) => NetFormat::Dot,
            None => self.output.as_deref().map_or(NetFormat::Table, NetFormat::of_file),
        };
        let work = if is_cluster {
            let c = self.cluster;
            NetWork::Cluster(Box::new(ClusterRequest {
                conn: c.conn.connection(),
                eagle_namespace: c.conn.eagle_namespace,
                targets: cluster_targets,
                target_words: self.targets,
                selector: c.selector,
                namespace: c.namespace,
                container: c.container,
                image: c.agent_image.into_plan(),
                window: self.duration.unwrap_or(DEFAULT_WINDOW),
                // The CPU sampler runs beside the network program; at its lowest rate it costs
                // nothing worth measuring, and its stacks are not shown.
                frequency_hz: 1,
                runtime: None,
                python_native: false,
                mode: eagle_proto::ProfileMode::Cpu,
                min_block_us: eagle_proto::DEFAULT_MIN_BLOCK_US,
                net: true,
                net_only: true,
                capabilities: c.capabilities,
                dry_run: c.dry_run,
                keep: c.keep,
                is_async: c.async_,
                ttl: c.ttl,
                max_per_node: c.max_per_node,
                force: c.force,
                group_by: GroupBy::Process,
                fetch_flags: Vec::new(),
            }))
        } else {
            NetWork::Local { pids, command: self.command, duration: self.duration }
        };
        Ok(NetPlan { work, format, output: self.output, rules, push })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_file_name_chooses_the_format() {
        assert_eq!(NetFormat::of_file(Path::new("map.dot")), NetFormat::Dot);
        assert_eq!(NetFormat::of_file(Path::new("net.json")), NetFormat::Json);
        assert_eq!(NetFormat::of_file(Path::new("net.prom")), NetFormat::Prometheus);
        assert_eq!(NetFormat::of_file(Path::new("net.txt")), NetFormat::Table);
    }
}
