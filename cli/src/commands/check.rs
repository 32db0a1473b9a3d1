//! `kubectl eagle check`: the rules on a profile file; exit 1 when one is broken. The rules
//! themselves are `crate::check`.

use std::path::PathBuf;

use crate::analysis::Analysis;
use crate::check::RuleSpecs;
use crate::error::{CliError, Exit};
use crate::gate::{Gate, SummaryRequest, TableTo};
use crate::input::{load_samples, name_of};

/// `check`, as its arguments asked for it.
#[derive(Debug)]
pub struct CheckPlan {
    pub input: PathBuf,
    pub rules: RuleSpecs,
    pub summary: SummaryRequest,
}

pub fn run(args: CheckPlan) -> Result<Exit, CliError> {
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
