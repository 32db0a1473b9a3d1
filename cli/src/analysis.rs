//! What summaries and checks are made of: every function's self and total (inclusive) samples,
//! and the share of samples a group of functions (a regex) accounts for.
//!
//! Only code frames count as functions: the hierarchy frames above them (`namespace/...`,
//! `pod/...`, `comm (pid)`, see `hierarchy.rs`) are not matched by patterns and not listed.
//! A function that appears several times in one stack (recursion) counts once for its total.

use std::collections::HashMap;

use eagle_proto::FoldedStacks;
use regex::Regex;

use crate::hierarchy;

#[derive(Clone, Debug, Default)]
pub struct Analysis {
    total: u64,
    stacks: usize,
    names: Vec<String>,
    index: HashMap<String, u32>,
    self_samples: Vec<u64>,
    total_samples: Vec<u64>,
    /// Code frames of every stack, root first, back to back.
    frames: Vec<u32>,
    /// (start in `frames`, length, count) per stack.
    spans: Vec<(u32, u32, u64)>,
}

/// One function's samples: as the innermost frame (self) and anywhere on the stack (total).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionStats<'a> {
    pub name: &'a str,
    pub self_samples: u64,
    pub total_samples: u64,
}

/// The samples of a group of functions: those with any of them on the stack (total) and those
/// with one of them innermost (self), each sample counted once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Group<'a> {
    pub self_samples: u64,
    pub total_samples: u64,
    /// The matching function with the most self samples, and the one with the most total ones.
    pub top_self: Option<FunctionStats<'a>>,
    pub top_total: Option<FunctionStats<'a>>,
    pub functions: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Inclusive: the function anywhere on the stack.
    Total,
    /// Exclusive: the function is the innermost frame.
    SelfTime,
}

impl Measure {
    pub fn word(self) -> &'static str {
        match self {
            Measure::Total => "total",
            Measure::SelfTime => "self",
        }
    }
}

impl Analysis {
    pub fn new(folded: &FoldedStacks) -> Self {
        let mut a = Analysis { stacks: folded.len(), ..Default::default() };
        // Stack index + 1 at which a function's total was last counted: recursion counts once.
        let mut counted_in: Vec<u32> = Vec::new();
        let mut split: Vec<&str> = Vec::new();
        for (si, (stack, count)) in folded.iter().enumerate() {
            let mark = si as u32 + 1;
            a.total = a.total.saturating_add(count);
            split.clear();
            split.extend(stack.split(';'));
            let skip = hierarchy::prefix_len(&split);
            let start = a.frames.len() as u32;
            for name in &split[skip..] {
                let id = match a.index.get(*name) {
                    Some(id) => *id,
                    None => {
                        let id = a.names.len() as u32;
                        a.names.push((*name).to_owned());
                        a.index.insert((*name).to_owned(), id);
                        a.self_samples.push(0);
                        a.total_samples.push(0);
                        counted_in.push(0);
                        id
                    }
                };
                a.frames.push(id);
                if counted_in[id as usize] != mark {
                    counted_in[id as usize] = mark;
                    a.total_samples[id as usize] += count;
                }
            }
            let len = a.frames.len() as u32 - start;
            if let Some(leaf) = a.frames.last().filter(|_| len > 0) {
                a.self_samples[*leaf as usize] += count;
            }
            a.spans.push((start, len, count));
        }
        a
    }

    /// All samples of the profile.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Distinct stacks.
    pub fn stacks(&self) -> usize {
        self.stacks
    }

    /// Distinct functions (code frames).
    pub fn function_count(&self) -> usize {
        self.names.len()
    }

    /// `samples` as a percentage of all samples (0 for an empty profile).
    pub fn percent(&self, samples: u64) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            samples as f64 * 100.0 / self.total as f64
        }
    }

    fn stats(&self, id: usize) -> FunctionStats<'_> {
        FunctionStats {
            name: &self.names[id],
            self_samples: self.self_samples[id],
            total_samples: self.total_samples[id],
        }
    }

    pub fn function(&self, name: &str) -> Option<FunctionStats<'_>> {
        self.index.get(name).map(|id| self.stats(*id as usize))
    }

    pub fn functions(&self) -> impl Iterator<Item = FunctionStats<'_>> {
        (0..self.names.len()).map(|id| self.stats(id))
    }

    /// The `n` functions with the most samples by `measure`, ties by name.
    pub fn top(&self, measure: Measure, n: usize) -> Vec<FunctionStats<'_>> {
        let key = |f: &FunctionStats| match measure {
            Measure::Total => f.total_samples,
            Measure::SelfTime => f.self_samples,
        };
        let mut all: Vec<FunctionStats> = self.functions().filter(|f| key(f) > 0).collect();
        all.sort_unstable_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.name.cmp(b.name)));
        all.truncate(n);
        all
    }

    /// The samples of every function whose name `re` matches (anywhere in the name, as grep).
    pub fn group(&self, re: &Regex) -> Group<'_> {
        let matched: Vec<bool> = self.names.iter().map(|n| re.is_match(n)).collect();
        let mut group = Group { functions: matched.iter().filter(|m| **m).count(), ..Default::default() };
        if group.functions == 0 {
            return group;
        }
        for &(start, len, count) in &self.spans {
            let frames = &self.frames[start as usize..(start + len) as usize];
            if frames.iter().any(|id| matched[*id as usize]) {
                group.total_samples += count;
            }
            if frames.last().is_some_and(|id| matched[*id as usize]) {
                group.self_samples += count;
            }
        }
        let best = |key: fn(&FunctionStats) -> u64| {
            (0..self.names.len())
                .filter(|id| matched[*id])
                .map(|id| self.stats(id))
                .max_by(|a, b| key(a).cmp(&key(b)).then_with(|| b.name.cmp(a.name)))
        };
        group.top_self = best(|f| f.self_samples);
        group.top_total = best(|f| f.total_samples);
        group
    }
}

/// Percentages as they appear in summaries and tables: 4 decimals, stable across platforms.
pub fn round(percent: f64) -> f64 {
    (percent * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(text: &str) -> Analysis {
        Analysis::new(&FoldedStacks::parse(text).unwrap())
    }

    #[test]
    fn self_total_and_recursion() {
        let a = analysis("main;a;b 6\nmain;a;a;a 3\nmain 1\n");
        assert_eq!(a.total(), 10);
        assert_eq!(a.function("main").unwrap(), FunctionStats { name: "main", self_samples: 1, total_samples: 10 });
        assert_eq!(a.function("a").unwrap(), FunctionStats { name: "a", self_samples: 3, total_samples: 9 });
        assert_eq!(a.function("b").unwrap().self_samples, 6);
        let top = a.top(Measure::SelfTime, 2);
        assert_eq!(top.iter().map(|f| f.name).collect::<Vec<_>>(), ["b", "a"]);
    }

    #[test]
    fn hierarchy_frames_are_not_functions() {
        let a = analysis("namespace/shop;deployment/api;pod/api-1;container/app;api (10);main;hot 4\n");
        assert!(a.function("pod/api-1").is_none());
        assert!(a.function("api (10)").is_none());
        assert_eq!(a.function("main").unwrap().total_samples, 4);
        let g = a.group(&Regex::new("api").unwrap());
        assert_eq!(g.total_samples, 0);
    }

    #[test]
    fn groups_count_each_sample_once() {
        let a = analysis("main;serde::a;serde::b 5\nmain;serde::a 2\nmain;other 3\n");
        let g = a.group(&Regex::new("^serde::").unwrap());
        assert_eq!((g.total_samples, g.self_samples, g.functions), (7, 7, 2));
        assert_eq!(g.top_total.unwrap().name, "serde::a");
        assert_eq!(g.top_self.unwrap().name, "serde::b");
        assert_eq!(a.percent(g.total_samples), 70.0);
    }
}
