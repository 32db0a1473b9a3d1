//! `net`: the network side of local targets over a window (issue #19): TCP per peer and HTTP/1.x
//! per route, as a table, JSON or the Prometheus text format, with the rules checked.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{CliError, Exit};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetFormat {
    Table,
    Json,
    Prometheus,
}

pub struct NetPlan {
    pub pids: Vec<u32>,
    pub command: Vec<String>,
    pub duration: Option<Duration>,
    pub format: NetFormat,
    /// `None` or `-`: stdout.
    pub output: Option<PathBuf>,
    #[cfg(target_os = "linux")]
    pub rules: Vec<crate::net_report::NetRule>,
}

#[cfg(not(target_os = "linux"))]
pub fn run(_plan: NetPlan) -> Result<Exit, CliError> {
    Err(CliError::Usage("`net` on this machine needs Linux (eBPF); in a cluster it is not available yet".into()))
}

#[cfg(target_os = "linux")]
pub fn run(plan: NetPlan) -> Result<Exit, CliError> {
    use crate::local;
    use crate::net_report;

    local::install_signal_handlers();
    let run = local::LocalRun {
        pids: plan.pids,
        command: plan.command,
        duration: plan.duration,
        // The CPU sampler runs beside the network program; at its lowest rate it costs nothing
        // worth measuring and its stacks are not shown.
        frequency_hz: 1,
        runtime: None,
        native: false,
        mode: eagle_proto::ProfileMode::Cpu,
        min_block_us: eagle_proto::DEFAULT_MIN_BLOCK_US,
        net: true,
    };
    let outcome = local::profile(&run)?;
    let net = outcome
        .result
        .net
        .ok_or_else(|| CliError::Failed("internal error: the agent sent no network record".into()))?;
    let report = net_report::summarize(&net);
    let text = match plan.format {
        NetFormat::Table => net_report::table(&report),
        NetFormat::Json => net_report::json(&report),
        NetFormat::Prometheus => net_report::prometheus(&net),
    };
    match plan.output.as_deref() {
        None => print_out(&text)?,
        Some(p) if p.as_os_str() == "-" => print_out(&text)?,
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if net.lost_events > 0 {
        eprintln!("warning: {} network events were not counted (kernel maps or ring buffer full)", net.lost_events);
    }
    let verdicts = net_report::check(&report, &plan.rules);
    let broken: Vec<_> = verdicts.iter().filter(|v| !v.ok).collect();
    for v in &verdicts {
        eprintln!("{} {}: {}: {}", if v.ok { "ok    " } else { "BROKEN" }, v.rule, v.subject, v.value);
    }
    Ok(if !broken.is_empty() {
        Exit::CheckFailed
    } else if outcome.interrupted {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

#[cfg(target_os = "linux")]
fn print_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Io(format!("cannot write: {e}"))),
        _ => Ok(()),
    }
}
