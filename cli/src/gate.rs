//! `--summary` and the check rules, wherever a profile is made or read: `profile` (on the fresh
//! profile, after it is written), `check` and `convert`. Everything is validated before any
//! sampling, so a bad rule or an unwritable summary path does not cost a window.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::analysis::Analysis;
use crate::check::{self, RuleSpecs, Rules};
use crate::error::{CliError, Exit};
use crate::files;
use crate::output::Destination;
use crate::run_info::RunInfo;
use crate::summary::Summary;

/// Where the check table goes: stdout for `check`, stderr beside `profile`'s other messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableTo {
    Stdout,
    Stderr,
}

/// `--summary FILE` and `--summary-top N`.
#[derive(Clone, Debug, Default)]
pub struct SummaryRequest {
    pub path: Option<PathBuf>,
    /// Functions in each of the summary's top lists.
    pub top: usize,
}

#[derive(Debug)]
pub struct Gate {
    summary: Option<PathBuf>,
    top: usize,
    rules: Option<Rules>,
}

impl Gate {
    pub fn plan(summary: &SummaryRequest, rules: &RuleSpecs) -> Result<Gate, CliError> {
        let rules = Rules::plan(rules)?;
        if let Some(path) = summary.path.as_deref().filter(|p| *p != Path::new("-")) {
            files::check_writable(path, "summary")?;
        }
        Ok(Gate { summary: summary.path.clone(), top: summary.top, rules })
    }

    pub fn is_active(&self) -> bool {
        self.summary.is_some() || self.rules.is_some()
    }

    pub fn has_rules(&self) -> bool {
        self.rules.is_some()
    }

    /// Makes `destination` keep what it writes when there is something to do after it.
    pub fn watch(&self, destination: Destination) -> Destination {
        if self.is_active() {
            destination.keep_analysis()
        } else {
            destination
        }
    }

    /// After `profile` or `convert` wrote `destination`: the summary and the checks on what it
    /// wrote. A broken rule turns the exit code into 1, also over a partial result (7): the
    /// shares of what was sampled broke the rule; the summary's `partial` says the rest.
    pub fn after_write(&self, destination: &Destination, exit: Exit) -> Result<Exit, CliError> {
        match destination.take_written() {
            Some(written) => self.finish(
                &written.labels.title,
                &written.analysis,
                &destination.run(),
                exit,
                TableTo::Stderr,
                &destination.describe(),
            ),
            None => Ok(exit),
        }
    }

    /// Writes the summary (with the check results in it) and prints the check table.
    pub fn finish(
        &self,
        title: &str,
        analysis: &Analysis,
        run: &RunInfo,
        exit: Exit,
        table_to: TableTo,
        profile: &str,
    ) -> Result<Exit, CliError> {
        if let Some(baseline) = self.rules.as_ref().and_then(|r| r.baseline.as_ref()) {
            run.unit().same(baseline.unit).map_err(|why| {
                CliError::Usage(format!("{profile} and the baseline {}: {why}", baseline.path.display()))
            })?;
        }
        let report = self.rules.as_ref().map(|r| r.evaluate(analysis));
        if let Some(path) = &self.summary {
            let mut summary = Summary::new(title, analysis, run, self.top);
            summary.checks = report.clone();
            summary.write(path)?;
        }
        let Some(report) = report else { return Ok(exit) };
        for r in report.results.iter().filter(|r| r.matched_functions == Some(0)) {
            eprintln!("warning: `{}` matches no function in {profile}: is the pattern right?", r.rule);
        }
        let table = check::table(&report, Path::new(profile), analysis.total());
        // The summary may own stdout (`--summary -`); the table then goes to stderr.
        let to_stdout = table_to == TableTo::Stdout && self.summary.as_deref() != Some(Path::new("-"));
        if to_stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(table.as_bytes()).and_then(|_| out.flush());
        } else {
            eprint!("{table}");
        }
        Ok(if report.passed { exit } else { Exit::CheckFailed })
    }
}
