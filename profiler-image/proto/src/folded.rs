//! The folded-stack model: `frame;frame;frame count` lines, as Brendan Gregg's stackcollapse
//! scripts and inferno write them.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::agent::Unit;

/// The end of a frame that the compiler inlined into the frame before it: a function of the
/// source, not a call the CPU made. The agent writes it (from DWARF's inline information), the
/// pprof writer turns such frames into lines of their caller's location, and inferno's palettes
/// colour them apart, as they do the marks of inferno's perf collapser it comes from.
pub const INLINED_SUFFIX: &str = "_[i]";

/// Aggregated stacks: each distinct `;`-joined stack with its sample count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldedStacks {
    stacks: HashMap<String, u64>,
}

/// A line of folded input that is not `stack count`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

impl FoldedStacks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `count` samples of the stack given outermost frame first.
    pub fn add<S: AsRef<str>>(&mut self, frames: &[S], count: u64) {
        let mut stack = String::new();
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 {
                stack.push(';');
            }
            push_frame(&mut stack, frame.as_ref());
        }
        self.add_joined(stack, count);
    }

    /// Adds `count` samples of an already `;`-joined stack.
    pub fn add_joined(&mut self, stack: String, count: u64) {
        if count > 0 && !stack.is_empty() {
            let total = self.stacks.entry(stack).or_insert(0);
            // Saturating: folded files come from users (baselines), and a sum past u64::MAX
            // must not panic or wrap.
            *total = total.saturating_add(count);
        }
    }

    pub fn merge(&mut self, other: FoldedStacks) {
        for (stack, count) in other.stacks {
            self.add_joined(stack, count);
        }
    }

    pub fn total(&self) -> u64 {
        self.stacks.values().fold(0u64, |sum, c| sum.saturating_add(*c))
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.stacks.iter().map(|(s, c)| (s.as_str(), *c))
    }

    /// Stacks sorted by name: the order inferno expects, and a stable order for files.
    pub fn sorted(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<_> = self.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Folded text, one `stack count` line per stack, sorted.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.stacks.len() * 64);
        for (stack, count) in self.sorted() {
            let _ = writeln!(out, "{stack} {count}");
        }
        out
    }

    /// Parses folded text. Blank lines are skipped; any other line must end in ` COUNT`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Self::parse_with_unit(text).map(|(folded, _)| folded)
    }

    /// Folded text, line and its unit: a first line `# unit: NAME` (what kube-eagle writes
    /// for profiles not in CPU samples), CPU samples without one.
    pub fn parse_with_unit(text: &str) -> Result<(Self, Unit), ParseError> {
        let mut folded = Self::new();
        let mut unit = Unit::CpuSamples;
        let mut first = true;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let err = |reason: &str| ParseError { line: i + 1, reason: reason.to_owned() };
            if let Some(declared) = Unit::from_folded_line(line) {
                // Only the first line may declare the unit. Read elsewhere as a stack, it would
                // sort first when printed and then declare a unit: refuse it where it stands.
                if !std::mem::take(&mut first) {
                    return Err(err("a `# unit:` line may only be the first line"));
                }
                unit = declared.map_err(|e| err(&e))?;
                continue;
            }
            first = false;
            let (stack, count) =
                line.rsplit_once(' ').ok_or_else(|| err("expected `frame;frame;... COUNT`, found no count"))?;
            let count: u64 = count.parse().map_err(|_| err(&format!("`{count}` is not a sample count")))?;
            if stack.is_empty() {
                return Err(err("empty stack"));
            }
            folded.add_joined(stack.to_owned(), count);
        }
        Ok((folded, unit))
    }

    /// Folded text in `unit`: its unit line first (see [`Unit::folded_header`]), then the
    /// stacks.
    pub fn to_text_in(&self, unit: Unit) -> String {
        match unit.folded_header() {
            Some(header) => format!("{header}\n{}", self.to_text()),
            None => self.to_text(),
        }
    }
}

/// Appends a frame name, keeping the folded syntax intact: `;` separates frames, so it becomes
/// `:`; a line break would end the record and a tab would end a payload field, and the other
/// control characters break the tools downstream (XML forbids them in an SVG, line-splitting
/// readers cut at vertical tab, form feed or NEL), so every control character becomes a space.
/// An empty frame becomes `[unknown]`.
pub fn push_frame(out: &mut String, frame: &str) {
    if frame.is_empty() {
        out.push_str("[unknown]");
        return;
    }
    out.extend(frame.chars().map(|c| match c {
        ';' => ':',
        c if c.is_control() => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_merges_duplicates_and_reports_line_numbers() {
        let f = FoldedStacks::parse("a;b 2\n\na;b 3\na;c 1\n").unwrap();
        assert_eq!(f.total(), 6);
        assert_eq!(f.to_text(), "a;b 5\na;c 1\n");
        let e = FoldedStacks::parse("a;b 2\nbroken\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = FoldedStacks::parse("a;b x\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn a_unit_line_says_what_the_counts_are() {
        let mut f = FoldedStacks::new();
        f.add(&["main", "sleep_60"], 60_000);
        for unit in Unit::ALL {
            assert_eq!(FoldedStacks::parse_with_unit(&f.to_text_in(unit)), Ok((f.clone(), unit)));
        }
        assert_eq!(f.to_text_in(Unit::CpuSamples), f.to_text());
        // Only as the first line: anywhere else it is a broken stack line.
        assert!(FoldedStacks::parse("a 1\n# unit: wall-microseconds\n").is_err());
        // Found by fuzzing: a stack whose first frame looks like a unit line sorted first when
        // printed, and the printed text no longer parsed.
        let e = FoldedStacks::parse("main;serve 3\n# unit: main;serve 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(FoldedStacks::parse("# unit: parsecs\na 1\n").unwrap_err().reason.contains("parsecs"));
    }

    #[test]
    fn frames_with_separators_are_sanitized() {
        let mut f = FoldedStacks::new();
        f.add(&["main", "Vec<a;b>", ""], 1);
        assert_eq!(f.to_text(), "main;Vec<a:b>;[unknown] 1\n");
    }
}
