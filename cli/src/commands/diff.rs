//! `diff`: a differential flame graph (inferno's `differential` + `flamegraph`), with the shape
//! of NEW and the colors of the change from BASE: red grew, blue shrank. inferno scales BASE's
//! counts to NEW's total first (`normalize`), so two windows of different length or rate
//! compare by share. Levels that differ between two runs of one workload (pod names, pids) are
//! dropped first (`hierarchy::stable_stack`), or every level with `--code-only`.

use std::path::{Path, PathBuf};

use eagle_proto::FoldedStacks;
use inferno::{differential, flamegraph};

use crate::analysis::Analysis;
use crate::error::{CliError, Exit};
use crate::files;
use crate::format::Format;
use crate::hierarchy;
use crate::input::{load_samples, name_of};

/// `diff`, as its arguments asked for it.
#[derive(Debug)]
pub struct DiffPlan {
    pub base: PathBuf,
    pub new: PathBuf,
    pub output: PathBuf,
    pub title: Option<String>,
    pub negate: bool,
    pub code_only: bool,
}

pub fn run(args: DiffPlan) -> Result<Exit, CliError> {
    let name = args.output.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let format = if name.ends_with(".svg") {
        Format::Svg
    } else if name.ends_with(".folded") || name.ends_with(".txt") || args.output == Path::new("-") {
        Format::Folded
    } else {
        return Err(CliError::Usage(format!(
            "a diff is written as .svg (differential flame graph) or .folded/.txt (two-count folded stacks), not `{}`",
            args.output.display()
        )));
    };
    if args.output != Path::new("-") {
        files::check_writable(&args.output, "diff")?;
    }
    let (base, new) = (load_samples(&args.base)?, load_samples(&args.new)?);
    base.run
        .unit()
        .same(new.run.unit())
        .map_err(|why| CliError::Usage(format!("{} and {}: {why}", args.base.display(), args.new.display())))?;
    let base = comparable(base.folded, args.code_only);
    let new = comparable(new.folded, args.code_only);
    let (base_text, new_text) = (base.to_text(), new.to_text());
    let mut lines = Vec::with_capacity(new_text.len() + base_text.len());
    differential::from_readers(
        differential::Options { normalize: true, strip_hex: false },
        base_text.as_bytes(),
        new_text.as_bytes(),
        &mut lines,
    )
    .map_err(|e| CliError::Failed(format!("cannot compute the difference: {e}")))?;
    let lines = String::from_utf8(lines).map_err(|e| CliError::Failed(format!("differential output: {e}")))?;
    let mut lines: Vec<&str> = lines.lines().collect();
    lines.sort_unstable();

    let bytes = match format {
        Format::Folded => {
            let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
            for l in &lines {
                text.push_str(l);
                text.push('\n');
            }
            text.into_bytes()
        }
        _ => {
            let mut options = flamegraph::Options::default();
            options.title = args
                .title
                .clone()
                .unwrap_or_else(|| format!("kube-eagle diff: {} -> {}", name_of(&args.base), name_of(&args.new)));
            let (grew, shrank) = if args.negate { ("blue", "red") } else { ("red", "blue") };
            options.subtitle = Some(format!(
                "{grew}: grew, {shrank}: shrank in {} against {} ({} samples, scaled to {})",
                name_of(&args.new),
                name_of(&args.base),
                base.total(),
                new.total()
            ));
            options.count_name = "samples".into();
            options.negate_differentials = args.negate;
            options.no_sort = true;
            let mut svg = Vec::new();
            flamegraph::from_lines(&mut options, lines.iter().copied(), &mut svg)
                .map_err(|e| CliError::Failed(format!("cannot render the differential flame graph: {e}")))?;
            svg
        }
    };
    files::write_file(&args.output, &bytes, "diff")?;
    eprintln!(
        "wrote {} ({} -> {} samples, {} stacks)",
        if args.output == Path::new("-") { "stdout".to_owned() } else { args.output.display().to_string() },
        base.total(),
        new.total(),
        lines.len()
    );
    for line in largest_changes(&Analysis::new(&base), &Analysis::new(&new), 5) {
        eprintln!("  {line}");
    }
    Ok(Exit::Ok)
}

fn comparable(folded: FoldedStacks, code_only: bool) -> FoldedStacks {
    let mut out = FoldedStacks::new();
    for (stack, count) in folded.iter() {
        let stack = if code_only { hierarchy::code_stack(stack).to_owned() } else { hierarchy::stable_stack(stack) };
        out.add_joined(stack, count);
    }
    out
}

/// The functions whose total share changed most, for the log: `+4.20pp parse (10.00% -> 14.20%)`.
fn largest_changes(base: &Analysis, new: &Analysis, n: usize) -> Vec<String> {
    let share = |a: &Analysis, name: &str| a.percent(a.function(name).map_or(0, |f| f.total_samples));
    let mut changes: Vec<(f64, &str)> = new
        .functions()
        .map(|f| f.name)
        .chain(base.functions().map(|f| f.name).filter(|name| new.function(name).is_none()))
        .map(|name| (share(new, name) - share(base, name), name))
        .filter(|(d, _)| d.abs() >= 0.005)
        .collect();
    changes.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()).then_with(|| a.1.cmp(b.1)));
    let mut out: Vec<String> = changes
        .iter()
        .take(n)
        .map(|(d, name)| format!("{d:+.2}pp {name} ({:.2}% -> {:.2}%)", share(base, name), share(new, name)))
        .collect();
    if !out.is_empty() {
        out.insert(0, "largest changes of total share:".into());
    }
    out
}
