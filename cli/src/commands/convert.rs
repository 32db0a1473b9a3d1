//! `kubectl eagle convert`: a profile file (folded or pprof) into another format, with the
//! summary if asked.

use std::path::PathBuf;

use eagle_proto::{FoldedStacks, Unit};

use crate::check::RuleSpecs;
use crate::closing::{self, Profile};
use crate::duration;
use crate::error::{CliError, Exit};
use crate::format::Format;
use crate::gate::{Gate, SummaryRequest};
use crate::input::{self, name_of, Loaded, Raw};
use crate::output::{sorted, Destination, Labels, Stacks};
use crate::push::target::PushPlan;
use crate::run_info::RunInfo;

/// `convert`, as its arguments asked for it.
#[derive(Debug)]
pub struct ConvertPlan {
    pub input: PathBuf,
    pub output: PathBuf,
    pub format: Option<Format>,
    pub title: Option<String>,
    /// The rate the input was sampled at, when it does not say.
    pub frequency_hz: Option<u64>,
    pub summary: SummaryRequest,
    pub push: PushPlan,
}

pub fn run(args: ConvertPlan) -> Result<Exit, CliError> {
    let gate = Gate::plan(&args.summary, &RuleSpecs::default())?;
    let destination = Destination::plan(Some(&args.output), args.format)?.with_push(args.push.clone());
    let title = args.title.clone().unwrap_or_else(|| format!("kube-eagle: {}", name_of(&args.input)));
    let raw = input::read(&args.input)?;
    // Folded text to SVG, the largest conversions: merged by sorting, on two threads, with no
    // map of stacks (see output/sorted.rs). Everything else goes through FoldedStacks.
    let declares_unit =
        |text: &str| text.lines().find(|l| !l.trim().is_empty()).and_then(Unit::from_folded_line).is_some();
    // A push needs the stacks, which this path does not keep.
    if let (Raw::Folded(text), Format::Svg, false, true) =
        (&raw, destination.format, gate.is_active(), args.push.is_empty())
    {
        if !declares_unit(text) {
            let stacks = sorted::parse_sorted(text).map_err(|e| input::parse_error(&args.input, e))?;
            let total = stacks.iter().fold(0u64, |sum, (_, c)| sum.saturating_add(*c));
            if total == 0 {
                return Err(input::no_samples(&args.input));
            }
            let run = RunInfo { frequency_hz: args.frequency_hz, ..Default::default() };
            destination
                .write_sorted_svg(&sorted::text_of(&stacks), &Labels { title, subtitle: subtitle(total, &run) })?;
            eprintln!("wrote {} ({total} samples, {} stacks)", destination.describe(), stacks.len());
            return Ok(Exit::Ok);
        }
    }
    let loaded = match raw {
        Raw::Parsed(loaded) => loaded,
        Raw::Folded(text) => {
            let (folded, unit) =
                FoldedStacks::parse_with_unit(&text).map_err(|e| input::parse_error(&args.input, e))?;
            Loaded { folded, run: RunInfo { unit: Some(unit), ..RunInfo::default() } }
        }
    };
    if loaded.folded.is_empty() {
        return Err(input::no_samples(&args.input));
    }
    let run = RunInfo { frequency_hz: args.frequency_hz, ..Default::default() }.or(&loaded.run);
    // A folded file of samples may come from any profiler: its unit is not claimed to be CPU
    // time here, as a profile kube-eagle took says it is.
    let title = args.title.clone().unwrap_or_else(|| match run.unit() {
        Unit::CpuSamples => format!("kube-eagle: {}", name_of(&args.input)),
        unit => crate::output::title(&name_of(&args.input), unit),
    });
    let labels = Labels { title, subtitle: subtitle(loaded.folded.total(), &run) };
    let destination = gate.watch(destination.with_run(run));
    let exit = closing::write(
        &destination,
        Profile {
            stacks: Stacks::Folded(&loaded.folded),
            labels,
            run: RunInfo::default(),
            partial: None,
            tail: ")".into(),
        },
    )?;
    gate.after_write(&destination, exit)
}

fn subtitle(samples: u64, run: &RunInfo) -> String {
    let mut parts = Vec::new();
    if let Some(d) = run.duration {
        parts.push(duration::human(d));
    }
    if let Some(hz) = run.frequency_hz {
        parts.push(format!("{hz} Hz"));
    }
    parts.push(crate::output::amount(samples, run.unit()));
    parts.join(", ")
}
