//! `kubectl eagle check`: the rules on a profile file; exit 1 when one is broken. The rules
//! themselves are `crate::check`.

use std::path::PathBuf;

use std::io::Read as _;
use std::path::Path;

use crate::analysis::Analysis;
use crate::check::RuleSpecs;
use crate::error::{CliError, Exit};
use crate::gate::{Gate, SummaryRequest, TableTo};
use crate::input::{load_samples, name_of};
use crate::net_report::{self, NetRule};

/// `check`, as its arguments asked for it.
#[derive(Debug)]
pub struct CheckPlan {
    pub input: PathBuf,
    pub rules: RuleSpecs,
    pub summary: SummaryRequest,
    /// `--max-p99`, `--max-retransmits`: the input is a network report (JSON).
    pub net_rules: Vec<NetRule>,
}

pub fn run(args: CheckPlan) -> Result<Exit, CliError> {
    if !args.net_rules.is_empty() {
        return check_network(&args.input, &args.net_rules);
    }
    let gate = Gate::plan(&args.summary, &args.rules)?;
    if !gate.has_rules() {
        return Err(CliError::Usage(
            "nothing to check: give --max 'REGEX=15%', --max-self 'REGEX=5%', or --baseline BASE.folded --max-regression 3pp"
                .into(),
        ));
    }
    let loaded = load_samples(&args.input)?;
    let analysis = Analysis::new(&loaded.folded);
    let title = format!("kube-eagle: {}", name_of(&args.input));
    gate.finish(&title, &analysis, &loaded.run, Exit::Ok, TableTo::Stdout, &args.input.display().to_string())
}

/// The network rules on a report of `net --format json` (or `profile --net FILE.json`): the
/// same verdicts `net` prints after its window, exit 1 when one is broken.
fn check_network(input: &Path, rules: &[NetRule]) -> Result<Exit, CliError> {
    let fail = |why: String| CliError::Io(format!("cannot read the network report {}: {why}", name_of(input)));
    let mut text = String::new();
    let read = if input == Path::new("-") {
        std::io::stdin().lock().read_to_string(&mut text)
    } else {
        std::fs::File::open(input).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| fail(e.to_string()))?;
    let report = net_report::parse_json(&text).map_err(|why| {
        CliError::Usage(format!(
            "{}: {why}; --max-p99 and --max-retransmits judge the JSON of `net --format json` or `profile --net FILE.json`",
            name_of(input)
        ))
    })?;
    Ok(if crate::commands::net::judge(&report, rules) { Exit::CheckFailed } else { Exit::Ok })
}
