//! pprof output: a gzipped `profile.proto` that `go tool pprof`, Grafana Pyroscope and other
//! pprof readers open. Encoding is prost's, over the message structs in `pprof_proto.rs`.
//!
//! - Sample types: `samples/count`, and `cpu/nanoseconds` (count x 1e9 / Hz, with period type
//!   `cpu/nanoseconds`) when the sampling rate is known; pprof shows the last one by default.
//! - Functions are deduplicated by name, locations by the frames they hold, all in one Mapping
//!   marked `has_functions` so readers do not try to symbolize addresses that do not exist.
//! - A frame marked inlined (`_[i]`, see [`eagle_proto::INLINED_SUFFIX`]) is no location of its
//!   own: it is a line of its caller's location, as pprof records inlining (the inlined
//!   functions first, the caller last), named without the mark. Reading it back marks every
//!   line but the last, so Go's own profiles read with their inlined frames marked too.
//! - The hierarchy frames (`namespace/...`, `deployment/...`, `pod/...`, `container/...`,
//!   `comm (pid)`) become sample labels `namespace`, `workload`, `pod`, `container`, `process`,
//!   so pprof's code views merge replicas the way Go profiles look, and
//!   `go tool pprof -tagfocus pod=api-1` filters by them. `-tagroot namespace,workload,pod,container,process`
//!   puts them back on top of the stacks; reading the file back (`convert`, `check`) does too.
//! - Title and subtitle are the profile's comments (`go tool pprof -comments`).

use std::collections::HashMap;
use std::io::Write;

use eagle_proto::{FoldedStacks, Unit, INLINED_SUFFIX};
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::labels::Labels;
use super::pprof_proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::hierarchy::{self, Level};
use crate::run_info::RunInfo;

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// The profile message, before encoding and compression.
pub fn build(folded: &FoldedStacks, labels: &Labels, run: &RunInfo) -> Profile {
    build_labelled(folded, labels, run, &Level::ALL)
}

/// [`build`], with only the hierarchy levels in `as_labels` (from the top) turned into sample
/// labels; the levels below stay frames. `--push pyroscope` keeps the process a frame: a
/// receiver that makes series of sample labels would make one per pid.
pub fn build_labelled(folded: &FoldedStacks, labels: &Labels, run: &RunInfo, as_labels: &[Level]) -> Profile {
    let mut strings = Strings::new();
    let mut profile = Profile::default();
    let unit = run.unit();
    // Time units are their own value: one sample type, a period of one of it.
    let period_ns =
        run.frequency_hz.filter(|hz| *hz > 0 && unit == Unit::CpuSamples).map(|hz| (1_000_000_000 / hz) as i64);
    let (kind, unit_name) = unit.pprof_type();
    let samples_type = ValueType { r#type: strings.get(kind), unit: strings.get(unit_name) };
    profile.sample_type.push(samples_type.clone());
    match period_ns {
        Some(period) => {
            let cpu = ValueType { r#type: strings.get("cpu"), unit: strings.get("nanoseconds") };
            profile.sample_type.push(cpu.clone());
            profile.period_type = Some(cpu);
            profile.period = period;
        }
        None => {
            profile.period_type = Some(samples_type);
            profile.period = 1;
        }
    }
    let mapping_name = strings.get("kube-eagle");
    profile.mapping.push(Mapping { id: 1, filename: mapping_name, has_functions: true, ..Default::default() });

    let mut function_ids: HashMap<String, u64> = HashMap::new();
    let mut location_ids: HashMap<Vec<&str>, u64> = HashMap::new();
    let keys: Vec<i64> = Level::ALL.iter().map(|l| strings.get(l.key())).collect();
    let mut frames: Vec<&str> = Vec::new();
    let mut function_id = |name: &str, strings: &mut Strings, profile: &mut Profile| -> u64 {
        if let Some(id) = function_ids.get(name) {
            return *id;
        }
        let id = function_ids.len() as u64 + 1;
        let name_index = strings.get(name);
        profile.function.push(Function { id, name: name_index, system_name: name_index, ..Default::default() });
        function_ids.insert(name.to_owned(), id);
        id
    };
    for (stack, count) in folded.sorted() {
        frames.clear();
        frames.extend(stack.split(';'));
        let mut levels = hierarchy::levels(&frames);
        levels.truncate(levels.iter().take_while(|(level, _)| as_labels.contains(level)).count());
        let skip = levels.last().map_or(0, |(_, i)| i + 1);
        let label = levels
            .iter()
            .map(|(level, i)| Label {
                key: keys[*level as usize],
                str: strings.get(level.value(frames[*i])),
                ..Default::default()
            })
            .collect();
        // One location per frame and the frames inlined into it, leaf first.
        let mut location_id: Vec<u64> = Vec::new();
        let mut code = &frames[skip..];
        while !code.is_empty() {
            let caller = code.iter().rposition(|f| !is_inlined(f)).unwrap_or(0);
            let group = &code[caller..];
            code = &code[..caller];
            let next = location_ids.len() as u64 + 1;
            let id = *location_ids.entry(group.to_vec()).or_insert_with(|| {
                let mut line: Vec<Line> = group[1..]
                    .iter()
                    .rev()
                    .map(|f| Line { function_id: function_id(strip_inlined(f), &mut strings, &mut profile), line: 0 })
                    .collect();
                line.push(Line { function_id: function_id(group[0], &mut strings, &mut profile), line: 0 });
                profile.location.push(Location { id: next, mapping_id: 1, line, ..Default::default() });
                next
            });
            location_id.push(id);
        }
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let mut value = vec![count];
        if let Some(period) = period_ns {
            value.push(count.saturating_mul(period));
        }
        profile.sample.push(Sample { location_id, value, label });
    }
    profile.mapping[0].has_inline_frames = profile.location.iter().any(|l| l.line.len() > 1);
    profile.time_nanos = run.started_unix_ms.map_or(0, |ms| (ms as i64).saturating_mul(1_000_000));
    profile.duration_nanos = run.duration.map_or(0, |d| d.as_nanos() as i64);
    for comment in [&labels.title, &labels.subtitle] {
        if !comment.is_empty() {
            let i = strings.get(comment);
            profile.comment.push(i);
        }
    }
    profile.string_table = strings.table;
    profile
}

fn is_inlined(frame: &str) -> bool {
    frame.ends_with(INLINED_SUFFIX)
}

/// An inlined frame's function name: pprof says it was inlined by where its line is.
fn strip_inlined(frame: &str) -> &str {
    frame.strip_suffix(INLINED_SUFFIX).unwrap_or(frame)
}

/// Gzipped profile.proto bytes, as pprof files are stored.
pub fn render(folded: &FoldedStacks, labels: &Labels, run: &RunInfo) -> Vec<u8> {
    gzipped(&build(folded, labels, run))
}

/// The profile encoded and gzipped.
pub fn gzipped(profile: &Profile) -> Vec<u8> {
    let encoded = profile.encode_to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(encoded.len() / 4), Compression::default());
    gz.write_all(&encoded).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

/// Reads a (decompressed) profile.proto back into folded stacks, with the hierarchy labels
/// this module writes put back on top, and what the profile says about its run.
pub fn decode(bytes: &[u8]) -> Result<(FoldedStacks, RunInfo), String> {
    let p = Profile::decode(bytes).map_err(|e| e.to_string())?;
    let string = |i: i64| -> Result<&str, String> {
        p.string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map(String::as_str)
            .ok_or_else(|| format!("string index {i} is past the string table ({} strings)", p.string_table.len()))
    };
    let type_of = |v: &ValueType| -> Result<(&str, &str), String> { Ok((string(v.r#type)?, string(v.unit)?)) };
    if p.sample_type.is_empty() {
        return Err("it has no sample types".into());
    }
    // The count of samples if the profile has one; else the default type, else the last.
    let mut index = p.sample_type.len() - 1;
    if p.default_sample_type != 0 {
        let wanted = string(p.default_sample_type)?;
        for (i, t) in p.sample_type.iter().enumerate() {
            if type_of(t)?.0 == wanted {
                index = i;
            }
        }
    }
    for (i, t) in p.sample_type.iter().enumerate().rev() {
        if type_of(t)?.1 == "count" {
            index = i;
        }
    }
    let (kind, unit) = type_of(&p.sample_type[index])?;
    let known_unit = Unit::from_pprof_type(kind, unit);
    let period_unit = p.period_type.as_ref().map(&type_of).transpose()?.map(|(_, unit)| unit);
    // A profile with only cpu/nanoseconds still counts samples: one per period.
    let divisor = if unit != "count" && period_unit == Some(unit) && p.period > 0 { p.period } else { 1 };

    let functions: HashMap<u64, &str> = p
        .function
        .iter()
        .map(|f| {
            let name = string(f.name)?;
            let name = if name.is_empty() { string(f.system_name)? } else { name };
            Ok((f.id, if name.is_empty() { "[unknown]" } else { name }))
        })
        .collect::<Result<_, String>>()?;
    let mut locations: HashMap<u64, Vec<String>> = HashMap::new();
    for loc in &p.location {
        // Lines run from the innermost inlined function to the caller; stacks here run root
        // first, and every line but the caller is a function inlined into it.
        let mut names: Vec<String> = loc
            .line
            .iter()
            .rev()
            .enumerate()
            .map(|(i, l)| {
                let name = functions.get(&l.function_id).copied().unwrap_or("[unknown]");
                if i == 0 || is_inlined(name) {
                    name.to_owned()
                } else {
                    format!("{name}{INLINED_SUFFIX}")
                }
            })
            .collect();
        if names.is_empty() {
            names.push(format!("{:#x}", loc.address));
        }
        locations.insert(loc.id, names);
    }
    let keys: Vec<(Level, i64)> = Level::ALL
        .iter()
        .filter_map(|l| p.string_table.iter().position(|s| s == l.key()).map(|i| (*l, i as i64)))
        .collect();

    let mut folded = FoldedStacks::new();
    let mut frames: Vec<String> = Vec::new();
    for (n, sample) in p.sample.iter().enumerate() {
        let value = *sample.value.get(index).ok_or_else(|| format!("sample {n} has no value {index}"))?;
        if value <= 0 {
            continue;
        }
        frames.clear();
        for (level, key) in &keys {
            if let Some(label) = sample.label.iter().find(|l| l.key == *key && l.str != 0) {
                frames.push(level.frame(string(label.str)?));
            }
        }
        for id in sample.location_id.iter().rev() {
            let names = locations.get(id).ok_or_else(|| format!("sample {n} names location {id}, which is missing"))?;
            frames.extend(names.iter().cloned());
        }
        folded.add(&frames, (value / divisor).max(1) as u64);
    }
    let run = RunInfo {
        started_unix_ms: (p.time_nanos > 0).then_some(p.time_nanos as u64 / 1_000_000),
        duration: (p.duration_nanos > 0).then(|| std::time::Duration::from_nanos(p.duration_nanos as u64)),
        frequency_hz: (period_unit == Some("nanoseconds") && p.period > 0)
            .then(|| (1_000_000_000.0 / p.period as f64).round() as u64),
        unit: known_unit,
        ..Default::default()
    };
    Ok((folded, run))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use flate2::read::GzDecoder;

    use super::*;

    #[test]
    fn round_trip_keeps_stacks_hierarchy_and_rate() {
        let text = "namespace/shop;deployment/api;pod/api-1;container/app;api (10);main;hot 3\n\
                    namespace/shop;deployment/api;pod/api-2;container/app;api (11);main;hot 2\n\
                    namespace/shop;deployment/api;pod/api-2;container/app;api (11);main;cold;hot 1\n";
        let folded = FoldedStacks::parse(text).unwrap();
        let run = RunInfo {
            started_unix_ms: Some(1_700_000_000_000),
            duration: Some(Duration::from_secs(10)),
            frequency_hz: Some(100),
            ..Default::default()
        };
        let labels = Labels { title: "kube-eagle: deployment/api".into(), subtitle: "10s at 100 Hz".into() };
        let gz = render(&folded, &labels, &run);
        let mut bytes = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut bytes).unwrap();
        let p = Profile::decode(&bytes[..]).unwrap();
        // Three code functions, deduplicated, one location each.
        assert_eq!(p.function.len(), 3);
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.sample.len(), 3);
        assert_eq!(p.period, 10_000_000);
        let hot = p.sample.iter().find(|s| s.value[0] == 3).unwrap();
        assert_eq!(hot.value[1], 30_000_000);
        assert_eq!(hot.label.len(), 5);
        let (back, back_run) = decode(&bytes).unwrap();
        assert_eq!(back.to_text(), folded.to_text());
        assert_eq!(back_run.frequency_hz, Some(100));
        assert_eq!(back_run.duration, Some(Duration::from_secs(10)));
        assert_eq!(back_run.started_unix_ms, Some(1_700_000_000_000));
    }

    /// Inlined frames (`_[i]`) are lines of their caller's location, inlined functions first,
    /// named without the mark; reading the profile back marks them again.
    #[test]
    fn inlined_frames_are_lines_of_their_callers_location() {
        let text = "main;round_of_work;mix_60_[i];step_[i] 6\n\
                    main;round_of_work;mix_40 4\n\
                    lead_[i];x_[i] 1\n";
        let folded = FoldedStacks::parse(text).unwrap();
        let p = build(&folded, &Labels::default(), &RunInfo::default());
        let name = |id: u64| {
            let f = p.function.iter().find(|f| f.id == id).unwrap();
            p.string_table[f.name as usize].as_str()
        };
        let lines = |l: &Location| l.line.iter().map(|l| name(l.function_id)).collect::<Vec<_>>();
        let mut inlined: Vec<Vec<&str>> = p.location.iter().filter(|l| l.line.len() > 1).map(lines).collect();
        inlined.sort();
        assert_eq!(inlined, [vec!["step", "mix_60", "round_of_work"], vec!["x", "lead_[i]"]]);
        // main, round_of_work, mix_60, step, mix_40, x, lead_[i]: each function once.
        assert_eq!(p.function.len(), 7);
        // round_of_work alone (calling mix_40) is a location apart from the one with inlines.
        assert_eq!(p.location.iter().filter(|l| lines(l) == ["round_of_work"]).count(), 1);
        assert!(p.mapping[0].has_inline_frames);
        assert_eq!(decode(&p.encode_to_vec()).unwrap().0.to_text(), folded.to_text());
    }

    #[test]
    fn without_a_rate_only_counts() {
        let folded = FoldedStacks::parse("main;hot 4\n").unwrap();
        let p = build(&folded, &Labels::default(), &RunInfo::default());
        assert_eq!(p.sample_type.len(), 1);
        assert_eq!(p.sample[0].value, [4]);
        assert!(p.sample[0].label.is_empty());
        assert_eq!(decode(&p.encode_to_vec()).unwrap().0.to_text(), "main;hot 4\n");
    }
}
