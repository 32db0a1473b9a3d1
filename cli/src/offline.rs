//! The commands that work offline on profile files: `check` and `convert` (`diff` is in diff.rs).

use std::path::Path;

use crate::args::{CheckArgs, CheckCommand, ConvertArgs};
use crate::error::{CliError, Exit};
use crate::gate::{Gate, TableTo};
use eagle_proto::FoldedStacks;

use crate::input::{self, Loaded, Raw};
use crate::output::{sorted, Destination, Format, Labels};
use crate::summary::RunInfo;
use crate::{analysis::Analysis, duration};

pub fn convert(args: ConvertArgs) -> Result<Exit, CliError> {
    let gate = Gate::plan(&args.summary, &CheckArgs::default())?;
    let destination = Destination::plan(Some(&args.output), args.format)?;
    let title = args.title.clone().unwrap_or_else(|| format!("kube-eagle: {}", name_of(&args.input)));
    let raw = input::read(&args.input)?;
    // Folded text to SVG, the largest conversions: merged by sorting, on two threads, with no
    // map of stacks (see output/sorted.rs). Everything else goes through FoldedStacks.
    if let (Raw::Folded(text), Format::Svg, false) = (&raw, destination.format, gate.is_active()) {
        let stacks = sorted::parse_sorted(text).map_err(|e| input::parse_error(&args.input, e))?;
        let total = stacks.iter().fold(0u64, |sum, (_, c)| sum.saturating_add(*c));
        if total == 0 {
            return Err(no_samples(&args.input));
        }
        let run = RunInfo { frequency_hz: args.frequency, ..Default::default() };
        destination.write_sorted_svg(&sorted::text_of(&stacks), &Labels { title, subtitle: subtitle(total, &run) })?;
        eprintln!("wrote {} ({total} samples, {} stacks)", destination.describe(), stacks.len());
        return Ok(Exit::Ok);
    }
    let loaded = match raw {
        Raw::Parsed(loaded) => loaded,
        Raw::Folded(text) => Loaded {
            folded: FoldedStacks::parse(&text).map_err(|e| input::parse_error(&args.input, e))?,
            run: RunInfo::default(),
        },
    };
    if loaded.folded.is_empty() {
        return Err(no_samples(&args.input));
    }
    let run = RunInfo { frequency_hz: args.frequency, ..Default::default() }.or(&loaded.run);
    let labels = Labels { title, subtitle: subtitle(loaded.folded.total(), &run) };
    let destination = gate.watch(destination.with_run(run));
    destination.write(&loaded.folded, &labels)?;
    eprintln!("wrote {} ({} samples, {} stacks)", destination.describe(), loaded.folded.total(), loaded.folded.len());
    gate.after_write(&destination, Exit::Ok)
}

pub fn check(args: CheckCommand) -> Result<Exit, CliError> {
    let gate = Gate::plan(&args.summary, &args.checks)?;
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

/// A profile with samples in it: an empty one is a failed run upstream, never a pass.
pub fn load_samples(path: &Path) -> Result<Loaded, CliError> {
    let loaded = input::load(path)?;
    if loaded.folded.is_empty() {
        return Err(no_samples(path));
    }
    Ok(loaded)
}

fn no_samples(path: &Path) -> CliError {
    CliError::NothingToProfile(format!(
        "the profile `{}` has no samples: was the run idle or did it fail?",
        path.display()
    ))
}

pub fn name_of(path: &Path) -> String {
    if path == Path::new("-") {
        return "stdin".into();
    }
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn subtitle(samples: u64, run: &RunInfo) -> String {
    let mut parts = Vec::new();
    if let Some(d) = run.duration {
        parts.push(duration::human(d));
    }
    if let Some(hz) = run.frequency_hz {
        parts.push(format!("{hz} Hz"));
    }
    parts.push(format!("{samples} samples"));
    parts.join(", ")
}
