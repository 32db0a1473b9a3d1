//! Samples summed by process and symbolized stack: what the result stream's payload carries.

use std::collections::HashMap;

use eagle_proto::StackRecord;

use crate::discovery::ProcessInfo;

#[derive(Debug, Default)]
pub struct Aggregate {
    counts: HashMap<(u32, &'static str, Vec<String>), u64>,
    samples: u64,
}

impl Aggregate {
    /// Adds `count` samples of `pid` in `frames` (outermost first), taken by `sampler`.
    pub fn add(&mut self, pid: u32, sampler: &'static str, frames: Vec<String>, count: u64) {
        *self.counts.entry((pid, sampler, frames)).or_insert(0) += count;
        self.samples += count;
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Every (pid, sampler, frames, count), for moving samples on.
    pub fn into_entries(self) -> impl Iterator<Item = (u32, &'static str, Vec<String>, u64)> {
        self.counts.into_iter().map(|((pid, sampler, frames), count)| (pid, sampler, frames, count))
    }

    /// Per process, the counts of the stacks whose innermost frame is `leaf`.
    pub fn leaf_totals(&self, leaf: &str) -> HashMap<u32, u64> {
        let mut totals = HashMap::new();
        for ((pid, _, frames), count) in &self.counts {
            if frames.last().is_some_and(|f| f == leaf) {
                *totals.entry(*pid).or_insert(0) += count;
            }
        }
        totals
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.counts.keys().map(|k| k.0)
    }

    /// Records sorted by pid then stack, so equal profiles encode to equal streams.
    pub fn into_records(self, processes: &HashMap<u32, ProcessInfo>) -> Vec<StackRecord> {
        let mut records: Vec<StackRecord> = self
            .counts
            .into_iter()
            .map(|((pid, sampler, frames), count)| {
                let info = processes.get(&pid);
                StackRecord {
                    container: info.and_then(|i| i.container.clone()),
                    pid,
                    process: info.map_or_else(|| "[exited]".to_owned(), |i| i.name.clone()),
                    sampler: sampler.to_owned(),
                    frames,
                    count,
                }
            })
            .collect();
        records.sort_by(|a, b| (a.pid, &a.frames).cmp(&(b.pid, &b.frames)));
        records
    }
}
