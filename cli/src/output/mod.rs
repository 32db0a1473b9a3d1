//! Output formats, one module each, chosen from the file extension or `--format`.

mod folded;
mod labels;
pub mod pprof;
pub mod pprof_proto;
pub mod sorted;
mod speedscope;
mod svg;

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

use eagle_proto::FoldedStacks;

use crate::analysis::Analysis;
use crate::error::CliError;
use crate::files;
use crate::format::Format;
use crate::merge::MergedStacks;
use crate::push::target::PushPlan;
use crate::run_info::RunInfo;
pub use labels::{amount, title, Labels};

/// The stacks to write: folded stacks, or the compact form a cluster run merges its nodes
/// into, which the flame graph reads without joining every stack (see
/// [`MergedStacks::visible`]).
#[derive(Clone, Copy, Debug)]
pub enum Stacks<'a> {
    Folded(&'a FoldedStacks),
    Merged(&'a MergedStacks),
}

impl<'a> Stacks<'a> {
    pub fn total(&self) -> u64 {
        match self {
            Stacks::Folded(f) => f.total(),
            Stacks::Merged(m) => m.total(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Stacks::Folded(f) => f.len(),
            Stacks::Merged(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every stack joined, for the writers that need them all.
    pub fn folded(&self) -> Cow<'a, FoldedStacks> {
        match *self {
            Stacks::Folded(f) => Cow::Borrowed(f),
            Stacks::Merged(m) => Cow::Owned(m.to_folded()),
        }
    }
}

/// Where the profile goes.
#[derive(Clone, Debug)]
pub struct Destination {
    /// `None` is stdout (`-o -`).
    pub path: Option<PathBuf>,
    pub format: Format,
    /// What is known about the run; pprof and the summary use it. See [`Destination::record_run`].
    run: RefCell<RunInfo>,
    /// Set by [`Destination::keep_analysis`]: the analysis of what `write` wrote, for the
    /// summary and checks that follow a profile.
    kept: Option<RefCell<Option<Written>>>,
    /// `--push`: the receivers the profile goes to after the file (see `closing.rs`).
    push: PushPlan,
}

/// What a [`Destination`] wrote, analysed.
#[derive(Clone, Debug)]
pub struct Written {
    pub analysis: Analysis,
    pub labels: Labels,
}

impl Destination {
    /// Checks the destination before any sampling, so a typo does not cost a whole window.
    pub fn plan(output: Option<&Path>, format: Option<Format>) -> Result<Self, CliError> {
        let path = output.unwrap_or(Path::new("flamegraph.svg"));
        if path == Path::new("-") {
            return Ok(Self::new(None, format.unwrap_or(Format::Folded)));
        }
        let format = match format {
            Some(f) => f,
            None => Format::from_extension(path)?,
        };
        files::check_writable(path, "output")?;
        Ok(Self::new(Some(path.to_owned()), format))
    }

    fn new(path: Option<PathBuf>, format: Format) -> Self {
        Self { path, format, run: RefCell::default(), kept: None, push: PushPlan::default() }
    }

    /// The receivers the profile is pushed to once written.
    pub fn with_push(mut self, push: PushPlan) -> Self {
        self.push = push;
        self
    }

    pub fn push(&self) -> &PushPlan {
        &self.push
    }

    /// What is known about the run before it starts (the requested window and rate).
    pub fn with_run(self, run: RunInfo) -> Self {
        *self.run.borrow_mut() = run;
        self
    }

    /// Records what the run really was (rate, window, start, per-node status, partial), before
    /// `write`: the pprof output and the `--summary` use it. Fields left `None` keep what was
    /// known before.
    pub fn record_run(&self, run: RunInfo) {
        let known = self.run.borrow().clone();
        *self.run.borrow_mut() = run.or(&known);
    }

    pub fn run(&self) -> RunInfo {
        self.run.borrow().clone()
    }

    /// Makes `write` keep an analysis of what it wrote (see [`Destination::take_written`]).
    pub fn keep_analysis(mut self) -> Self {
        self.kept = Some(RefCell::new(None));
        self
    }

    pub fn take_written(&self) -> Option<Written> {
        self.kept.as_ref().and_then(|k| k.borrow_mut().take())
    }

    pub fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "stdout".to_owned(), |p| p.display().to_string())
    }

    pub fn write(&self, stacks: Stacks, labels: &Labels) -> Result<(), CliError> {
        let unit = self.run.borrow().unit();
        // Every stack joined only for what needs them all, and once.
        let all = std::cell::OnceCell::new();
        let folded = || -> &FoldedStacks { all.get_or_init(|| stacks.folded()) };
        let bytes = match (self.format, stacks) {
            (Format::Svg, Stacks::Merged(merged)) => svg::render_merged(merged, labels, unit)?,
            (Format::Svg, Stacks::Folded(f)) => svg::render(f, labels, unit)?,
            (Format::Folded, _) => folded::render(folded(), unit),
            (Format::Speedscope, _) => speedscope::render(folded(), labels, unit),
            (Format::Pprof, _) => pprof::render(folded(), labels, &self.run.borrow()),
        };
        if let Some(kept) = &self.kept {
            *kept.borrow_mut() = Some(Written { analysis: Analysis::new(folded()), labels: labels.clone() });
        }
        self.write_bytes(&bytes)
    }

    /// The SVG of folded text already sorted and merged (`output::sorted::parse_sorted`).
    pub fn write_sorted_svg(&self, text: &str, labels: &Labels) -> Result<(), CliError> {
        debug_assert_eq!(self.format, Format::Svg);
        self.write_bytes(&svg::render_sorted(text, labels, self.run.borrow().unit())?)
    }

    fn write_bytes(&self, bytes: &[u8]) -> Result<(), CliError> {
        match &self.path {
            None => {
                let mut out = std::io::stdout().lock();
                match out.write_all(bytes).and_then(|_| out.flush()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(CliError::Io(format!("cannot write to stdout: {e}")))
                    }
                    _ => Ok(()),
                }
            }
            Some(path) => files::write_atomically(path, bytes, "output"),
        }
    }
}
