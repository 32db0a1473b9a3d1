//! Output formats, one module each, chosen from the file extension or `--format`.

mod folded;
mod speedscope;
mod svg;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use eagle_proto::FoldedStacks;

use crate::error::CliError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Interactive flame graph (inferno): search, zoom, tooltips.
    Svg,
    /// Folded stacks, `frame;frame count` per line: input for inferno, flamegraph.pl, `check`.
    Folded,
    /// speedscope JSON (https://www.speedscope.app).
    Speedscope,
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
}

impl Destination {
    /// Checks the destination before any sampling, so a typo does not cost a whole window.
    pub fn plan(output: Option<&Path>, format: Option<Format>) -> Result<Self, CliError> {
        let path = output.unwrap_or(Path::new("flamegraph.svg"));
        if path == Path::new("-") {
            return Ok(Self { path: None, format: format.unwrap_or(Format::Folded) });
        }
        let format = match format {
            Some(f) => f,
            None => format_from_extension(path)?,
        };
        check_writable(path)?;
        Ok(Self { path: Some(path.to_owned()), format })
    }

    pub fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "stdout".to_owned(), |p| p.display().to_string())
    }

    pub fn write(&self, folded: &FoldedStacks, labels: &Labels) -> Result<(), CliError> {
        let bytes = match self.format {
            Format::Svg => svg::render(folded, labels)?,
            Format::Folded => folded::render(folded),
            Format::Speedscope => speedscope::render(folded, labels),
        };
        match &self.path {
            None => {
                let mut out = std::io::stdout().lock();
                match out.write_all(&bytes).and_then(|_| out.flush()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(CliError::Io(format!("cannot write to stdout: {e}")))
                    }
                    _ => Ok(()),
                }
            }
            Some(path) => write_atomically(path, &bytes),
        }
    }
}

fn format_from_extension(path: &Path) -> Result<Format, CliError> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".svg") {
        Ok(Format::Svg)
    } else if name.ends_with(".folded") || name.ends_with(".txt") {
        Ok(Format::Folded)
    } else if name.ends_with(".speedscope.json") || name.ends_with(".json") {
        Ok(Format::Speedscope)
    } else {
        Err(CliError::Usage(format!(
            "cannot tell the output format of `{}` from its extension: use .svg, .folded, .txt or .json, or say --format svg|folded|speedscope",
            path.display()
        )))
    }
}

fn check_writable(path: &Path) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |why: String| Err(CliError::Io(format!("cannot write the output to `{}`: {why}", path.display())));
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
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::Io(format!("cannot write the output to `{}`: {e}", path.display()))
    })
}
