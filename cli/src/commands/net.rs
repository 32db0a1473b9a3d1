//! `net`: the network side of a window (issue #19), of local processes or of cluster workloads
//! (the same Jobs as `profile`): TCP per peer and HTTP/1.x per route, as a table, JSON, the
//! Prometheus text format or the service map (DOT), with the rules checked.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::profile::{self, ClusterRequest};
use crate::error::{CliError, Exit};
use crate::net_map::ServiceMap;
use crate::net_report::{self, Naming, NetRule};
use crate::push::gateway::PushGateway;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetFormat {
    Table,
    Json,
    Prometheus,
    /// The service map, for Graphviz.
    Dot,
}

impl NetFormat {
    /// The format a file's name asks for: `.json`, `.prom`, `.dot`/`.gv`; else the table.
    pub fn of_file(path: &Path) -> NetFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => NetFormat::Json,
            Some("prom") => NetFormat::Prometheus,
            Some("dot" | "gv") => NetFormat::Dot,
            _ => NetFormat::Table,
        }
    }
}

/// `profile --net FILE`: where the network side of the profile's window goes, and as what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetOutput {
    /// `-`: stdout.
    pub path: PathBuf,
    pub format: NetFormat,
}

impl NetOutput {
    pub fn new(path: PathBuf) -> NetOutput {
        let format = NetFormat::of_file(&path);
        NetOutput { path, format }
    }

    /// Writes the report of `net`; says how much of the kernel side's events were lost.
    pub fn write(&self, net: &eagle_proto::NetPayload, naming: &Naming) -> Result<(), CliError> {
        write_report(Some(&self.path), &render(net, naming, self.format))?;
        warn_lost(net);
        Ok(())
    }
}

pub struct NetPlan {
    pub work: NetWork,
    pub format: NetFormat,
    /// `None` or `-`: stdout.
    pub output: Option<PathBuf>,
    pub rules: Vec<NetRule>,
    /// `--push-gateway`: where the Prometheus text goes too.
    pub push: Option<PushGateway>,
}

pub enum NetWork {
    Local { pids: Vec<u32>, command: Vec<String>, duration: Option<Duration> },
    Cluster(Box<ClusterRequest>),
}

/// The merged record of a window, what names its rows, and whether it is whole.
struct Watched {
    net: eagle_proto::NetPayload,
    naming: Naming,
    partial: bool,
    /// The Pushgateway group's `run` label: the run id, `local` for local targets.
    run: String,
}

pub fn run(plan: NetPlan) -> Result<Exit, CliError> {
    let watched = match &plan.work {
        NetWork::Cluster(req) if req.dry_run => return profile::dry_run(req),
        NetWork::Cluster(req) if req.is_async => {
            // Where `fetch` writes the report: where this run would have.
            // `fetch --net FILE` takes the format from FILE's name: the name says the format
            // asked for here.
            let output = match &plan.output {
                Some(path) if path.as_os_str() != "-" => path.to_string_lossy().into_owned(),
                _ => match plan.format {
                    NetFormat::Prometheus => "net.prom",
                    NetFormat::Dot => "net.dot",
                    // The table is for a terminal; a file to fetch later is JSON.
                    NetFormat::Table | NetFormat::Json => "net.json",
                }
                .into(),
            };
            let outputs = vec!["--net".to_owned(), profile::quote(&output)];
            return profile::start_detached(req, |id| profile::fetch_command_with(req, id, outputs.clone()));
        }
        NetWork::Cluster(req) => {
            let c = crate::cluster::net::net(req)?;
            let naming = Naming { placements: c.placements, directory: c.directory };
            Watched { net: c.net, naming, partial: c.partial, run: c.run_id }
        }
        NetWork::Local { pids, command, duration } => local(pids, command, *duration)?,
    };
    let net = &watched.net;
    let report = net_report::summarize(net, &watched.naming);
    write_report(plan.output.as_deref(), &render(net, &watched.naming, plan.format))?;
    warn_lost(net);
    let broken = judge(&report, &plan.rules);
    let pushed = match &plan.push {
        None => Ok(()),
        Some(gateway) => {
            let text = net_report::prometheus(net, &watched.naming);
            gateway.push(&[("run", &watched.run)], text).map(|url| eprintln!("pushed to {url}"))
        }
    };
    if let Err(why) = &pushed {
        eprintln!("error: {why}");
    }
    Ok(if broken {
        Exit::CheckFailed
    } else if pushed.is_err() {
        // As `profile --push`: the report is written, only its delivery failed.
        Exit::PushFailed
    } else if watched.partial {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

#[cfg(not(target_os = "linux"))]
fn local(_: &[u32], _: &[String], _: Option<Duration>) -> Result<Watched, CliError> {
    Err(CliError::Usage(
        "`net` of local processes needs Linux (eBPF); watch cluster workloads from this machine instead".into(),
    ))
}

#[cfg(target_os = "linux")]
fn local(pids: &[u32], command: &[String], duration: Option<Duration>) -> Result<Watched, CliError> {
    use crate::local;

    local::install_signal_handlers();
    let run = local::LocalRun {
        pids: pids.to_vec(),
        command: command.to_vec(),
        duration,
        // No stacks: the CPU sampler, unwind tables, runtime samplers and symbolization would
        // cost the target for nothing (at 1 Hz they still took 5 % of a core from a busy
        // server's machine, most of it building unwind tables and reading kernel symbols).
        frequency_hz: 1,
        runtime: None,
        native: false,
        mode: eagle_proto::ProfileMode::Cpu,
        min_block_us: eagle_proto::DEFAULT_MIN_BLOCK_US,
        net: true,
        stacks: false,
    };
    let outcome = local::profile(&run)?;
    let net = outcome
        .result
        .net
        .ok_or_else(|| CliError::Failed("internal error: the agent sent no network record".into()))?;
    Ok(Watched { net, naming: Naming::default(), partial: outcome.interrupted, run: "local".into() })
}

/// Judges `rules` on `report`, one line per verdict on stderr; true when one is broken.
pub fn judge(report: &net_report::NetReport, rules: &[NetRule]) -> bool {
    let verdicts = net_report::check(report, rules);
    for v in &verdicts {
        eprintln!("{} {}: {}: {}", if v.ok { "ok    " } else { "BROKEN" }, v.rule, v.subject, v.value);
    }
    verdicts.iter().any(|v| !v.ok)
}

/// The report of `net` as `format` asks.
pub fn render(net: &eagle_proto::NetPayload, naming: &Naming, format: NetFormat) -> String {
    match format {
        NetFormat::Table => net_report::table(&net_report::summarize(net, naming)),
        NetFormat::Json => net_report::json(&net_report::summarize(net, naming)),
        NetFormat::Prometheus => net_report::prometheus(net, naming),
        NetFormat::Dot => ServiceMap::build(net, &naming.placements, &naming.directory).dot(),
    }
}

/// Writes `text` to `output` (`None` or `-`: stdout), saying where.
fn write_report(output: Option<&Path>, text: &str) -> Result<(), CliError> {
    match output {
        None => print_out(text),
        Some(p) if p.as_os_str() == "-" => print_out(text),
        Some(path) => {
            std::fs::write(path, text).map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
    }
}

fn warn_lost(net: &eagle_proto::NetPayload) {
    if net.lost_events > 0 {
        eprintln!("warning: {} network events were not counted (kernel maps or ring buffer full)", net.lost_events);
    }
}

fn print_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Io(format!("cannot write: {e}"))),
        _ => Ok(()),
    }
}
