//! `kubectl eagle doctor`: runs the checks (`cluster::doctor`), prints them as a table or JSON,
//! and turns what is missing into the exit code.

use crate::cluster::api::runtime;
use crate::cluster::doctor::{run_checks, Check, DoctorPlan, Status};
use crate::error::{CliError, Exit};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoctorOutput {
    Table,
    Json,
}

/// `doctor`, as its arguments asked for it.
#[derive(Debug)]
pub struct DoctorRun {
    pub output: DoctorOutput,
    pub checks: DoctorPlan,
}

/// `kubectl eagle doctor`.
pub fn run(args: DoctorRun) -> Result<Exit, CliError> {
    let checks = runtime()?.block_on(run_checks(&args.checks))?;
    match args.output {
        DoctorOutput::Json => println!("{}", serde_json::to_string_pretty(&checks).expect("checks serialize")),
        DoctorOutput::Table => print!("{}", table(&checks)),
    }
    let missing: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Missing).collect();
    if missing.is_empty() {
        if args.output == DoctorOutput::Table {
            let warnings = checks.iter().filter(|c| c.status == Status::Warning).count();
            println!(
                "\nready to profile{}",
                if warnings > 0 { format!(" ({warnings} warning(s) above)") } else { String::new() }
            );
        }
        return Ok(Exit::Ok);
    }
    let first = missing[0];
    let what = format!("{} problem(s); first: {} {}: {}", missing.len(), first.area, first.check, first.detail);
    if missing.iter().any(|c| c.area == "permission") {
        Err(CliError::Forbidden(what))
    } else {
        Err(CliError::Failed(what))
    }
}

fn table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    let mut area = "";
    for c in checks {
        if c.area != area {
            area = c.area;
            out.push_str(&format!("{}\n", area.to_uppercase()));
        }
        let status = match c.status {
            Status::Ok => "ok",
            Status::Missing => "MISSING",
            Status::Warning => "warning",
            Status::Skipped => "skipped",
        };
        out.push_str(format!("  {status:8} {:width$}  {}", c.check, c.detail).trim_end());
        out.push('\n');
    }
    out
}
