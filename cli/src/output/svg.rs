//! Interactive SVG flame graphs through inferno.

use eagle_proto::{FoldedStacks, Unit};
use inferno::flamegraph::{self, color::MultiPalette, Palette};

use super::labels::Labels;
use crate::error::CliError;
use crate::merge::MergedStacks;

pub fn render(folded: &FoldedStacks, labels: &Labels, unit: Unit) -> Result<Vec<u8>, CliError> {
    // Sorted here, on two threads: inferno need not sort again.
    render_sorted(&super::sorted::sorted_text(folded), labels, unit)
}

/// The flame graph of a cluster run's merged stacks: inferno gets only the frames it draws.
pub fn render_merged(merged: &MergedStacks, labels: &Labels, unit: Unit) -> Result<Vec<u8>, CliError> {
    let lines = merged.visible(options(labels, unit).min_width);
    let text = super::sorted::sorted_text_of(lines.iter().map(|(stack, count)| (stack.as_str(), *count)).collect());
    render_sorted(&text, labels, unit)
}

/// The flame graph of folded text that is already sorted and merged.
pub fn render_sorted(text: &str, labels: &Labels, unit: Unit) -> Result<Vec<u8>, CliError> {
    let mut options = options(labels, unit);
    let mut svg = Vec::with_capacity(1 << 20);
    flamegraph::from_lines(&mut options, text.lines(), &mut svg)
        .map_err(|e| CliError::Failed(format!("cannot render the flame graph: {e}")))?;
    Ok(svg)
}

fn options<'a>(labels: &Labels, unit: Unit) -> flamegraph::Options<'a> {
    let mut options = flamegraph::Options::default();
    options.title = labels.title.clone();
    options.subtitle = Some(labels.subtitle.clone()).filter(|s| !s.is_empty());
    // Every frame's tooltip says what its count is: `(1,234 µs off-CPU, 12%)`.
    options.count_name = unit.count_name().into();
    // The Java palette colors `_[k]` kernel frames apart from user code, and C++/Rust paths
    // apart from plain C, which keeps mixed graphs readable.
    options.colors = Palette::Multi(MultiPalette::Java);
    options.hash = true;
    options.no_sort = true;
    options
}

#[cfg(test)]
mod tests {
    use eagle_proto::{NodeResult, StackRecord};

    use super::*;
    use crate::merge::Merger;
    use crate::placement::{GroupBy, Placement, Placements};

    /// xorshift64: the same profile every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// `pods` pods of one workload, each running the same code (a call tree with skewed
    /// weights, stacks ending at every depth), in processes of their own.
    fn profile(pods: usize, stacks_per_pod: usize, seed: u64) -> (Vec<NodeResult>, Placements) {
        let mut rng = Rng(seed);
        let code: Vec<(Vec<String>, u64)> = (0..stacks_per_pod)
            .map(|i| {
                let depth = 1 + rng.below(14) as usize;
                let frames = (0..depth)
                    .map(|d| match d {
                        0 => ["main", "start_thread", "[k] ret_from_fork"][rng.below(3) as usize].to_owned(),
                        _ if d + 1 == depth && rng.below(2) == 0 => format!("leaf_{i}"),
                        _ => format!("mod{d}::step_{}", rng.below(4)),
                    })
                    .collect();
                (frames, 1 + rng.below(3) * 1000 / (1 + i as u64))
            })
            .collect();
        let mut placements = Placements::new();
        let results = (0..pods)
            .map(|p| {
                let id = format!("{p:064x}");
                placements.insert(
                    id.clone(),
                    Placement {
                        namespace: "shop".into(),
                        workload: "deployment/api".into(),
                        pod: format!("api-{p}"),
                        container: "app".into(),
                    },
                );
                let records: Vec<StackRecord> = code
                    .iter()
                    .map(|(frames, count)| StackRecord {
                        container: Some(id.clone()),
                        pid: 100 + (p as u32 % 3),
                        process: "api".into(),
                        sampler: "ebpf".into(),
                        frames: frames.clone(),
                        count: count * (1 + rng.below(2)),
                    })
                    .collect();
                NodeResult { stacks: eagle_proto::Payload::from_records(&records), ..Default::default() }
            })
            .collect();
        (results, placements)
    }

    /// The graph of the frames inferno draws is the graph inferno draws of every stack, byte
    /// for byte, whatever the level of the hierarchy kept.
    #[test]
    fn merged_stacks_render_as_every_stack_does() {
        let labels = Labels { title: "t".into(), subtitle: "s".into() };
        for (pods, stacks, seed) in [(1, 50, 1), (3, 2_000, 2), (60, 300, 3)] {
            let (results, placements) = profile(pods, stacks, seed);
            for group_by in [GroupBy::None, GroupBy::Pod, GroupBy::Process] {
                let mut merger = Merger::new(&placements, group_by);
                for r in &results {
                    merger.add(r);
                }
                let merged = merger.into_stacks();
                let whole = render(&merged.to_folded(), &labels, Unit::CpuSamples).unwrap();
                let drawn = render_merged(&merged, &labels, Unit::CpuSamples).unwrap();
                let lines = merged.visible(options(&labels, Unit::CpuSamples).min_width).len();
                assert!(
                    whole == drawn,
                    "{pods} pods, {stacks} stacks, {group_by:?}: the SVGs differ ({lines} of {} lines drawn)",
                    merged.len()
                );
                if merged.len() >= 10_000 {
                    assert!(lines < merged.len(), "{lines} of {} lines", merged.len());
                }
            }
        }
    }
}
