//! `check`: thresholds on the share of CPU that groups of functions take, and on how much any
//! function's share grew against a baseline profile. Exit 1 when a rule is broken.
//!
//! - `--max REGEX=15%`: the samples with any function matching REGEX on the stack (total,
//!   inclusive share) are at most 15% of all samples. All functions the regex matches count
//!   together, each sample once.
//! - `--max-self REGEX=5%`: the same, counting the samples whose innermost frame matches.
//! - `--max-regression [REGEX=]3pp` with `--baseline FILE`: a share grew by at most 3
//!   percentage points over the baseline's, each share relative to its own profile's total.
//!   Without REGEX, every function on its own; with it, the group the regex matches.
//! - `--max-self-regression [REGEX=]3pp`: the same for self shares.
//!
//! Patterns are `regex` crate syntax and match anywhere in a function name (anchor with
//! `^...$`); hierarchy frames (namespace, pod, process) are never matched.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::analysis::round;
use crate::analysis::{Analysis, FunctionStats, Group, Measure};
use crate::error::CliError;
use crate::input;
use crate::table;

/// The rules as the user wrote them (`--max`, `--max-self`, `--baseline`, `--max-regression`,
/// `--max-self-regression`), for [`Rules::plan`] to parse and validate.
#[derive(Clone, Debug, Default)]
pub struct RuleSpecs {
    pub max: Vec<String>,
    pub max_self: Vec<String>,
    pub baseline: Option<PathBuf>,
    pub max_regression: Vec<String>,
    pub max_self_regression: Vec<String>,
}

impl RuleSpecs {
    /// No rule and no baseline given.
    pub fn is_empty(&self) -> bool {
        self.max.is_empty()
            && self.max_self.is_empty()
            && self.max_regression.is_empty()
            && self.max_self_regression.is_empty()
            && self.baseline.is_none()
    }
}

/// Which rule a result is of, named as its flag without dashes in the summary (`max-self`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    #[default]
    Max,
    MaxSelf,
    MaxRegression,
    MaxSelfRegression,
}

impl RuleKind {
    pub fn flag(self) -> &'static str {
        match self {
            RuleKind::Max => "--max",
            RuleKind::MaxSelf => "--max-self",
            RuleKind::MaxRegression => "--max-regression",
            RuleKind::MaxSelfRegression => "--max-self-regression",
        }
    }

    /// Inclusive or self shares.
    pub fn measure(self) -> Measure {
        match self {
            RuleKind::Max | RuleKind::MaxRegression => Measure::Total,
            RuleKind::MaxSelf | RuleKind::MaxSelfRegression => Measure::SelfTime,
        }
    }
}

/// A bound on a group's share.
#[derive(Clone, Debug)]
pub struct Limit {
    pub kind: RuleKind,
    pub spec: String,
    pub measure: Measure,
    pub pattern: Regex,
    pub max_percent: f64,
}

/// A bound on the growth of a share over the baseline, in percentage points.
#[derive(Clone, Debug)]
pub struct Regression {
    pub kind: RuleKind,
    pub spec: String,
    pub measure: Measure,
    /// `None`: every function on its own.
    pub pattern: Option<Regex>,
    pub max_points: f64,
}

#[derive(Clone, Debug)]
pub struct Baseline {
    pub path: PathBuf,
    pub analysis: Analysis,
    /// A profile is compared only with a baseline in its own unit.
    pub unit: eagle_proto::Unit,
}

#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub limits: Vec<Limit>,
    pub regressions: Vec<Regression>,
    pub baseline: Option<Baseline>,
}

/// The outcome of every rule, as printed and as written into the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub passed: bool,
    /// Rows that broke their rule.
    pub broken: u64,
    /// The baseline file, when rules compared against one.
    pub baseline: Option<String>,
    pub baseline_total_samples: Option<u64>,
    pub results: Vec<CheckResult>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The rule as given: `--max serde_json::.*=15%`.
    pub rule: String,
    /// `max`, `max-self`, `max-regression` or `max-self-regression`.
    pub kind: RuleKind,
    /// `total` or `self`.
    pub measure: Measure,
    /// The regex, absent for per-function regression rules.
    pub pattern: Option<String>,
    /// For limits: the matching function with the largest share. For regressions: the
    /// function whose share grew (per-function rules), or the group's largest function.
    pub function: Option<String>,
    /// Limits: that function's own share by the rule's measure, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_percent: Option<f64>,
    /// Percent for limits, percentage points for regressions.
    pub limit: f64,
    /// The measured share (percent) or growth (percentage points).
    pub value: f64,
    /// Regressions: the share in the baseline and in this profile, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Functions the pattern matched (limits and grouped regressions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_functions: Option<u64>,
    pub broken: bool,
}

impl Rules {
    /// Parses and validates every rule and reads the baseline, before any sampling: a typo
    /// must not cost a profiling window. `None` when no rule was given.
    pub fn plan(args: &RuleSpecs) -> Result<Option<Rules>, CliError> {
        let mut rules = Rules::default();
        for spec in &args.max {
            rules.limits.push(parse_limit(RuleKind::Max, spec)?);
        }
        for spec in &args.max_self {
            rules.limits.push(parse_limit(RuleKind::MaxSelf, spec)?);
        }
        for spec in &args.max_regression {
            rules.regressions.push(parse_regression(RuleKind::MaxRegression, spec)?);
        }
        for spec in &args.max_self_regression {
            rules.regressions.push(parse_regression(RuleKind::MaxSelfRegression, spec)?);
        }
        match (&args.baseline, rules.regressions.is_empty()) {
            (Some(path), true) => {
                return Err(CliError::Usage(format!(
                    "--baseline {} needs a rule to compare with: add --max-regression 3pp (or --max-self-regression)",
                    path.display()
                )))
            }
            (None, false) => {
                return Err(CliError::Usage(
                    "--max-regression and --max-self-regression compare with a baseline: add --baseline BASE.folded"
                        .into(),
                ))
            }
            (Some(path), false) => {
                let loaded = input::load(path)?;
                if loaded.folded.is_empty() {
                    return Err(CliError::NothingToProfile(format!(
                        "the baseline {} has no samples to compare with",
                        path.display()
                    )));
                }
                rules.baseline = Some(Baseline {
                    path: path.clone(),
                    analysis: Analysis::new(&loaded.folded),
                    unit: loaded.run.unit(),
                });
            }
            (None, true) => {}
        }
        Ok(if rules.limits.is_empty() && rules.regressions.is_empty() { None } else { Some(rules) })
    }

    pub fn evaluate(&self, profile: &Analysis) -> CheckReport {
        let mut results = Vec::new();
        for limit in &self.limits {
            let group = profile.group(&limit.pattern);
            let (samples, top) = pick(&group, limit.measure);
            let value = round(profile.percent(samples));
            results.push(CheckResult {
                rule: format!("{} {}", limit.kind.flag(), limit.spec),
                kind: limit.kind,
                measure: limit.measure,
                pattern: Some(limit.pattern.as_str().to_owned()),
                function: top.map(|f| f.name.to_owned()),
                function_percent: top.map(|f| round(profile.percent(samples_of(Some(f), limit.measure)))),
                limit: limit.max_percent,
                value,
                matched_functions: Some(group.functions as u64),
                broken: value > limit.max_percent,
                ..Default::default()
            });
        }
        if let Some(baseline) = &self.baseline {
            for rule in &self.regressions {
                results.extend(regression(rule, &baseline.analysis, profile));
            }
        }
        let broken = results.iter().filter(|r| r.broken).count() as u64;
        CheckReport {
            passed: broken == 0,
            broken,
            baseline: self.baseline.as_ref().map(|b| b.path.display().to_string()),
            baseline_total_samples: self.baseline.as_ref().map(|b| b.analysis.total()),
            results,
        }
    }
}

fn pick<'a>(group: &Group<'a>, measure: Measure) -> (u64, Option<FunctionStats<'a>>) {
    match measure {
        Measure::Total => (group.total_samples, group.top_total),
        Measure::SelfTime => (group.self_samples, group.top_self),
    }
}

fn samples_of(f: Option<FunctionStats>, measure: Measure) -> u64 {
    f.map_or(0, |f| match measure {
        Measure::Total => f.total_samples,
        Measure::SelfTime => f.self_samples,
    })
}

fn regression(rule: &Regression, base: &Analysis, new: &Analysis) -> Vec<CheckResult> {
    let row = |function: Option<&str>, before: f64, after: f64| {
        let (before, after) = (round(before), round(after));
        let value = round(after - before);
        CheckResult {
            rule: format!("{} {}", rule.kind.flag(), rule.spec),
            kind: rule.kind,
            measure: rule.measure,
            pattern: rule.pattern.as_ref().map(|p| p.as_str().to_owned()),
            function: function.map(str::to_owned),
            limit: rule.max_points,
            value,
            baseline_percent: Some(before),
            percent: Some(after),
            function_percent: None,
            matched_functions: None,
            broken: value > rule.max_points,
        }
    };
    if let Some(pattern) = &rule.pattern {
        let (b, n) = (base.group(pattern), new.group(pattern));
        let (b_samples, _) = pick(&b, rule.measure);
        let (n_samples, top) = pick(&n, rule.measure);
        let mut r = row(top.map(|f| f.name), base.percent(b_samples), new.percent(n_samples));
        r.matched_functions = Some(n.functions as u64);
        return vec![r];
    }
    // Every function of either profile on its own; a function new in this profile grew from 0.
    let mut changes: Vec<(&str, f64, f64)> = new
        .functions()
        .map(|f| (f.name, base.percent(samples_of(base.function(f.name), rule.measure))))
        .map(|(name, before)| (name, before, new.percent(samples_of(new.function(name), rule.measure))))
        .collect();
    changes.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)).then_with(|| a.0.cmp(b.0)));
    let broken: Vec<CheckResult> =
        changes.iter().map(|(name, before, after)| row(Some(name), *before, *after)).take_while(|r| r.broken).collect();
    if broken.is_empty() {
        // Passed: show the largest growth, so the headroom is visible.
        let largest = changes.first().map_or_else(|| row(None, 0.0, 0.0), |(n, b, a)| row(Some(n), *b, *a));
        vec![largest]
    } else {
        broken
    }
}

fn parse_limit(kind: RuleKind, spec: &str) -> Result<Limit, CliError> {
    let (flag, measure) = (kind.flag(), kind.measure());
    let example = if measure == Measure::Total { "'serde_json::.*=15%'" } else { "'regex::.*=5%'" };
    let Some((pattern, value)) = spec.rsplit_once('=') else {
        return Err(CliError::Usage(format!("{flag} `{spec}`: write REGEX=PERCENT, for example {flag} {example}")));
    };
    let pattern = compile(flag, spec, pattern)?;
    let number = value.trim().strip_suffix('%').unwrap_or(value.trim());
    let max_percent = match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => p,
        _ => {
            return Err(CliError::Usage(format!(
                "{flag} `{spec}`: `{value}` is not a share: write a percentage from 0% to 100%, for example {flag} {example}"
            )))
        }
    };
    Ok(Limit { kind, spec: spec.to_owned(), measure, pattern, max_percent })
}

fn parse_regression(kind: RuleKind, spec: &str) -> Result<Regression, CliError> {
    let (flag, measure) = (kind.flag(), kind.measure());
    let (pattern, value) = match spec.rsplit_once('=') {
        Some((pattern, value)) => (Some(compile(flag, spec, pattern)?), value),
        None => (None, spec),
    };
    let value = value.trim();
    let bad = |why: &str| {
        Err(CliError::Usage(format!(
            "{flag} `{spec}`: {why}: write percentage points, for example {flag} 3pp or {flag} 'serde_json::.*=3pp'"
        )))
    };
    if value.ends_with('%') {
        return bad("a regression is the difference of two shares, in percentage points, not percent");
    }
    let number = value.strip_suffix("pp").unwrap_or(value).trim();
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => {
            Ok(Regression { kind, spec: spec.to_owned(), measure, pattern, max_points: p })
        }
        _ => bad(&format!("`{value}` is not a number of percentage points from 0 to 100")),
    }
}

fn compile(flag: &str, spec: &str, pattern: &str) -> Result<Regex, CliError> {
    if pattern.is_empty() {
        return Err(CliError::Usage(format!("{flag} `{spec}`: the regex before `=` is empty")));
    }
    Regex::new(pattern).map_err(|e| {
        // The regex crate explains over several lines with a caret; keep its last line.
        let text = e.to_string();
        let why = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let why = why.strip_prefix("error: ").unwrap_or(why);
        CliError::Usage(format!("{flag} `{spec}`: `{pattern}` is not a valid regex: {why}"))
    })
}

/// How many broken rows of one per-function rule the table shows; the summary has them all.
const ROWS_PER_RULE: usize = 10;

/// The short table a person reads in a CI log: every rule, what it measured, what broke.
pub fn table(report: &CheckReport, profile: &Path, total: u64) -> String {
    let mut rows: Vec<[String; 5]> = vec![["RESULT", "RULE", "LIMIT", "VALUE", "WHERE"].map(str::to_owned)];
    let mut hidden: Vec<(String, usize)> = Vec::new();
    let mut shown_per_rule: Vec<(String, usize)> = Vec::new();
    for r in &report.results {
        let is_regression = r.baseline_percent.is_some();
        if r.broken && is_regression && r.pattern.is_none() {
            let shown = match shown_per_rule.iter_mut().find(|(rule, _)| *rule == r.rule) {
                Some((_, n)) => n,
                None => {
                    shown_per_rule.push((r.rule.clone(), 0));
                    &mut shown_per_rule.last_mut().expect("just pushed").1
                }
            };
            *shown += 1;
            if *shown > ROWS_PER_RULE {
                match hidden.iter_mut().find(|(rule, _)| *rule == r.rule) {
                    Some((_, n)) => *n += 1,
                    None => hidden.push((r.rule.clone(), 1)),
                }
                continue;
            }
        }
        let (limit, value, detail) = if is_regression {
            let name = r.function.as_deref().map(|f| format!("{} ", ellipsize(f, 60))).unwrap_or_default();
            (
                format!("+{:.2}pp", r.limit),
                format!("{:+.2}pp", r.value),
                format!(
                    "{name}{:.2}% -> {:.2}%",
                    r.baseline_percent.unwrap_or_default(),
                    r.percent.unwrap_or_default()
                ),
            )
        } else {
            let matching = match r.matched_functions {
                Some(0) => "matches no function".to_owned(),
                Some(1) => "1 function matches".to_owned(),
                Some(n) => format!("{n} functions match"),
                None => String::new(),
            };
            let detail = match (&r.function, r.function_percent) {
                (Some(f), Some(p)) if p > 0.0 => format!("{} {p:.2}%, {matching}", ellipsize(f, 60)),
                _ => matching,
            };
            (format!("{:.2}%", r.limit), format!("{:.2}%", r.value), detail)
        };
        let result = if r.broken { "BROKEN" } else { "ok" };
        rows.push([result.to_owned(), r.rule.clone(), limit, value, detail]);
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.to_vec()).collect();
    let mut out = table::render(&[table::LEFT, table::LEFT, table::RIGHT, table::RIGHT, table::LEFT], &rows);
    for (rule, n) in hidden {
        out.push_str(&format!("... and {n} more functions broke `{rule}` (all of them are in --summary)\n"));
    }
    let what = match (&report.baseline, report.baseline_total_samples) {
        (Some(b), Some(n)) => format!("{} ({total} samples) against {b} ({n} samples)", profile.display()),
        _ => format!("{} ({total} samples)", profile.display()),
    };
    let rules = report.results.iter().map(|r| r.rule.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    if report.passed {
        out.push_str(&format!("check passed: {what}, {rules} rule(s)\n"));
    } else {
        let broken_rules = report
            .results
            .iter()
            .filter(|r| r.broken)
            .map(|r| r.rule.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        out.push_str(&format!("check FAILED: {what}: {broken_rules} of {rules} rule(s) broken\n"));
    }
    out
}

fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use eagle_proto::FoldedStacks;

    use super::*;

    fn args(max: &[&str], max_self: &[&str]) -> RuleSpecs {
        RuleSpecs {
            max: max.iter().map(|s| s.to_string()).collect(),
            max_self: max_self.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn analysis(text: &str) -> Analysis {
        Analysis::new(&FoldedStacks::parse(text).unwrap())
    }

    #[test]
    fn limits_on_groups() {
        let rules = Rules::plan(&args(&["serde::.*=60%"], &["serde::b=40%"])).unwrap().unwrap();
        let report = rules.evaluate(&analysis("main;serde::a;serde::b 5\nmain;serde::a 2\nmain;other 3\n"));
        assert_eq!(report.results[0].value, 70.0);
        assert!(report.results[0].broken);
        assert_eq!(report.results[1].value, 50.0);
        assert!(report.results[1].broken);
        assert_eq!(report.broken, 2);
        let rules = Rules::plan(&args(&["serde::.*=70%"], &[])).unwrap().unwrap();
        assert!(rules.evaluate(&analysis("main;serde::a 7\nmain 3\n")).passed, "equal to the limit passes");
    }

    #[test]
    fn syntax_errors_are_usage_errors_on_one_line() {
        for (max, needle) in [
            ("serde", "write REGEX=PERCENT"),
            ("serde(=15%", "is not a valid regex: unclosed group"),
            ("serde=lots", "is not a share"),
            ("serde=150%", "is not a share"),
            ("=15%", "regex before `=` is empty"),
        ] {
            let e = Rules::plan(&args(&[max], &[])).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{max}");
            assert!(e.to_string().contains(needle), "{max}: {e}");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
        let regression = |spec: &str| RuleSpecs { max_regression: vec![spec.into()], ..Default::default() };
        let e = Rules::plan(&regression("3%")).unwrap_err();
        assert!(e.to_string().contains("percentage points"), "{e}");
        let e = Rules::plan(&regression("3pp")).unwrap_err();
        assert!(e.to_string().contains("--baseline"), "{e}");
        assert!(Rules::plan(&RuleSpecs::default()).unwrap().is_none());
    }

    #[test]
    fn regressions_per_function_and_per_group() {
        let base = analysis("main;parse 20\nmain;work 80\n");
        let new = analysis("main;parse 30\nmain;work 60\nmain;fresh 10\n");
        let rule = |spec: &str| parse_regression(RuleKind::MaxRegression, spec).unwrap();
        let rows = regression(&rule("5pp"), &base, &new);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].function.as_deref(), rows[0].value), (Some("fresh"), 10.0));
        assert_eq!((rows[1].function.as_deref(), rows[1].value), (Some("parse"), 10.0));
        let rows = regression(&rule("10pp"), &base, &new);
        assert!(!rows[0].broken && rows.len() == 1 && rows[0].value == 10.0);
        let rows = regression(&rule("^(parse|work)$=1pp"), &base, &new);
        assert_eq!((rows[0].baseline_percent, rows[0].percent, rows[0].broken), (Some(100.0), Some(90.0), false));
    }
}
