//! Output formats, one module each, chosen from the file extension or `--format`.

mod folded;
pub mod pprof;
pub mod pprof_proto;
pub mod sorted;
mod speedscope;
mod svg;

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use eagle_proto::FoldedStacks;

use crate::analysis::Analysis;
use crate::error::CliError;
use crate::summary::RunInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Interactive flame graph (inferno): search, zoom, tooltips.
    Svg,
    /// Folded stacks, `frame;frame count` per line: input for inferno, flamegraph.pl, `check`.
    Folded,
    /// speedscope JSON (https://www.speedscope.app).
    Speedscope,
    /// pprof (gzipped profile.proto) for `go tool pprof` and Grafana Pyroscope.
    Pprof,
}

/// What a rendered profile says about itself.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub title: String,
    /// One line under the title: window, rate, samples; and PARTIAL when it is.
    pub subtitle: String,
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
            None => format_from_extension(path)?,
        };
        check_writable(path, "output")?;
        Ok(Self::new(Some(path.to_owned()), format))
    }

    fn new(path: Option<PathBuf>, format: Format) -> Self {
        Self { path, format, run: RefCell::default(), kept: None }
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

    pub fn write(&self, folded: &FoldedStacks, labels: &Labels) -> Result<(), CliError> {
        let bytes = match self.format {
            Format::Svg => svg::render(folded, labels)?,
            Format::Folded => folded::render(folded),
            Format::Speedscope => speedscope::render(folded, labels),
            Format::Pprof => pprof::render(folded, labels, &self.run.borrow()),
        };
        if let Some(kept) = &self.kept {
            *kept.borrow_mut() = Some(Written { analysis: Analysis::new(folded), labels: labels.clone() });
        }
        self.write_bytes(&bytes)
    }

    /// The SVG of folded text already sorted and merged (`output::sorted::parse_sorted`).
    pub fn write_sorted_svg(&self, text: &str, labels: &Labels) -> Result<(), CliError> {
        debug_assert_eq!(self.format, Format::Svg);
        self.write_bytes(&svg::render_sorted(text, labels)?)
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
            Some(path) => write_atomically(path, bytes, "output"),
        }
    }
}

/// Writes a file other than the profile (a summary) the same safe way, `-` being stdout.
pub fn write_file(path: &Path, bytes: &[u8], what: &str) -> Result<(), CliError> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(bytes)
            .and_then(|_| out.flush())
            .map_err(|e| CliError::Io(format!("cannot write the {what} to stdout: {e}")));
    }
    write_atomically(path, bytes, what)
}

fn format_from_extension(path: &Path) -> Result<Format, CliError> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".svg") {
        Ok(Format::Svg)
    } else if name.ends_with(".folded") || name.ends_with(".txt") {
        Ok(Format::Folded)
    } else if name.ends_with(".speedscope.json") || name.ends_with(".json") {
        Ok(Format::Speedscope)
    } else if [".pb.gz", ".pb", ".pprof", ".pprof.gz"].iter().any(|ext| name.ends_with(ext)) {
        Ok(Format::Pprof)
    } else {
        Err(CliError::Usage(format!(
            "cannot tell the output format of `{}` from its extension: use .svg, .folded, .txt, .json or .pb.gz, or say --format svg|folded|speedscope|pprof",
            path.display()
        )))
    }
}

pub fn check_writable(path: &Path, what: &str) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |why: String| Err(CliError::Io(format!("cannot write the {what} to `{}`: {why}", path.display())));
    match std::fs::metadata(dir) {
        Err(e) => return fail(format!("directory `{}`: {e}", dir.display())),
        Ok(m) if !m.is_dir() => return fail(format!("`{}` is not a directory", dir.display())),
        Ok(_) => {}
    }
    if path.is_dir() {
        return fail("it is a directory".into());
    }
    // Probe with a real file: permission bits say nothing about read-only mounts, and root
    // passes every permission check.
    let probe = dir.join(format!(".kubectl-eagle-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => fail(e.to_string()),
    }
}

/// Writes beside the destination and renames, so a failed or interrupted write never leaves a
/// truncated graph where the previous one was.
fn write_atomically(path: &Path, bytes: &[u8], what: &str) -> Result<(), CliError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::Io(format!("cannot write the {what} to `{}`: {e}", path.display()))
    })
}
