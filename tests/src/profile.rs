//! Folded profiles with the questions a user asks of them (inclusive shares, the split).

use std::collections::BTreeMap;

use eagle_proto::FoldedStacks;

use crate::{tolerance, SPLIT};

// ---------------------------------------------------------------------------------------------
// Profiles

/// A folded profile, parsed with the project's own model (`eagle_proto::FoldedStacks`).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub folded: FoldedStacks,
}

impl Profile {
    pub fn parse(text: &str) -> Result<Self, eagle_proto::folded::ParseError> {
        FoldedStacks::parse(text).map(|folded| Self { folded })
    }

    pub fn total(&self) -> u64 {
        self.folded.total()
    }

    /// Stacks as frame lists, outermost first, with their counts.
    pub fn stacks(&self) -> impl Iterator<Item = (Vec<&str>, u64)> {
        self.folded.iter().map(|(stack, count)| (stack.split(';').collect(), count))
    }

    /// Samples whose stack satisfies `keep`.
    pub fn count_where(&self, keep: impl Fn(&[&str]) -> bool) -> u64 {
        self.stacks().filter(|(frames, _)| keep(frames)).map(|(_, c)| c).sum()
    }

    /// Samples whose stack contains a frame named exactly `frame`.
    pub fn inclusive(&self, frame: &str) -> u64 {
        self.count_where(|frames| frames.contains(&frame))
    }

    /// The inclusive share of `frame`: the fraction of all samples with it on the stack.
    pub fn share(&self, frame: &str) -> f64 {
        ratio(self.inclusive(frame), self.total())
    }

    /// Only the stacks that satisfy `keep`.
    pub fn filter(&self, keep: impl Fn(&[&str]) -> bool) -> Profile {
        let mut folded = FoldedStacks::new();
        for (frames, count) in self.stacks().filter(|(f, _)| keep(f)) {
            folded.add(&frames, count);
        }
        Profile { folded }
    }

    /// Stacks grouped by their root frame (`groundtruth (4242)` with `--group-by process`).
    pub fn by_root(&self) -> BTreeMap<String, Profile> {
        let mut roots: BTreeMap<String, Profile> = BTreeMap::new();
        for (frames, count) in self.stacks() {
            roots.entry(frames[0].to_owned()).or_default().folded.add(&frames, count);
        }
        roots
    }

    /// Every distinct frame name.
    pub fn frames(&self) -> std::collections::BTreeSet<&str> {
        self.folded.iter().flat_map(|(stack, _)| stack.split(';')).collect()
    }

    /// The groundtruth split as found: each of [`SPLIT`]'s functions with its share of the
    /// samples that are in any of them (samples elsewhere, such as process start-up or the
    /// parent of forked children, do not dilute it).
    pub fn split(&self) -> Vec<(&'static str, f64)> {
        let working = self.working();
        SPLIT.iter().map(|(f, _)| (*f, ratio(self.inclusive(f), working))).collect()
    }

    /// Samples in any of the split's functions.
    pub fn working(&self) -> u64 {
        self.count_where(|frames| SPLIT.iter().any(|(f, _)| frames.contains(f)))
    }

    /// `None` if every function of the split is within [`tolerance`]`(base, ...)` of its
    /// expected share (`base` is a fraction: 0.03 is 3 percentage points), else what is off.
    pub fn split_error(&self, base: f64) -> Option<String> {
        let found = self.split();
        let n = self.working();
        let off: Vec<String> = SPLIT
            .iter()
            .zip(&found)
            .filter(|((_, want), (_, got))| (got - want).abs() > tolerance(base, *want, n))
            .map(|((f, want), (_, got))| {
                format!(
                    "{f} at {:.1}% (expected {:.0}% +- {:.1})",
                    got * 100.0,
                    want * 100.0,
                    tolerance(base, *want, n) * 100.0
                )
            })
            .collect();
        (!off.is_empty()).then(|| {
            format!("the split is off: {} (all: {}; {n} samples in them)", off.join(", "), describe_split(&found))
        })
    }
}

/// `cpu_60 60.2%, cpu_30 29.8%, cpu_10 10.0%`
pub fn describe_split(split: &[(&str, f64)]) -> String {
    split.iter().map(|(f, s)| format!("{f} {:.1}%", s * 100.0)).collect::<Vec<_>>().join(", ")
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
