//! speedscope's file format: one "sampled" profile whose samples are the folded stacks,
//! weighted by their counts. Written by hand: it is a few lines of serde and no crate of this
//! field keeps it.

use std::collections::HashMap;

use eagle_proto::{FoldedStacks, Unit};
use serde::Serialize;

use super::labels::Labels;

#[derive(Serialize)]
struct File<'a> {
    /// Required by the format's schema: the speedscope release whose format this follows
    /// (0.6.0 added `name` and `activeProfileIndex`, the newest fields written here).
    version: &'static str,
    #[serde(rename = "$schema")]
    schema: &'static str,
    name: &'a str,
    exporter: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    shared: Shared<'a>,
    profiles: [Profile<'a>; 1],
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<Frame<'a>>,
}

#[derive(Serialize)]
struct Frame<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Profile<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

pub fn render(folded: &FoldedStacks, labels: &Labels, unit: Unit) -> Vec<u8> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut frames = Vec::new();
    let mut samples = Vec::new();
    let mut weights = Vec::new();
    for (stack, count) in folded.sorted() {
        let ids = stack
            .split(';')
            .map(|name| {
                *index.entry(name).or_insert_with(|| {
                    frames.push(Frame { name });
                    frames.len() - 1
                })
            })
            .collect();
        samples.push(ids);
        weights.push(count);
    }
    let file = File {
        version: "0.6.0",
        schema: "https://www.speedscope.app/file-format-schema.json",
        name: &labels.title,
        exporter: format!("kube-eagle {}", env!("CARGO_PKG_VERSION")),
        active_profile_index: 0,
        shared: Shared { frames },
        profiles: [Profile {
            kind: "sampled",
            name: &labels.title,
            unit: unit.speedscope(),
            start_value: 0,
            end_value: folded.total(),
            samples,
            weights,
        }],
    };
    serde_json::to_vec(&file).expect("speedscope file serializes")
}
