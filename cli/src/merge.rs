//! Merging node results into one set of folded stacks, each prefixed with the hierarchy
//! `namespace -> workload -> pod -> container -> process` down to the `--group-by` level.
//!
//! A cluster run merges each node's result as it arrives ([`Merger::add`]), then lets go of
//! the node's records. What it merges into, [`MergedStacks`], stores each frame name once for
//! the whole run and each distinct code stack once, as frame ids, however many pods ran it;
//! what is left per pod is a count per (hierarchy, code stack) pair. A thousand replicas of a
//! service with 2,000 stacks each are then 2 million pairs of 16 bytes instead of 2 million
//! strings of some 400 bytes (measured in docs/performance.md, "Cluster runs").

use std::cmp::Ordering;
use std::collections::HashMap;

use eagle_proto::folded::push_frame;
use std::hash::BuildHasher;

use eagle_proto::{FoldedStacks, NodeResult, Payload, StackRef, Unit};
use hashbrown::{DefaultHashBuilder, HashTable};
use indexmap::IndexSet;

use crate::placement::{GroupBy, Placements};

/// Merges results into folded stacks with the hierarchy prefix.
pub fn merge<'a>(
    results: impl IntoIterator<Item = &'a NodeResult>,
    placements: &Placements,
    group_by: GroupBy,
) -> FoldedStacks {
    let mut merger = Merger::new(placements, group_by);
    for result in results {
        merger.add(result);
    }
    merger.into_stacks().to_folded()
}

/// The one unit of the results to merge: each agent's header says what its counts are, and
/// counts of different units are never added up (an agent of another version, a forged log).
pub fn unit_of<'a>(results: impl IntoIterator<Item = &'a NodeResult>) -> Result<Unit, String> {
    let mut unit = None;
    for result in results {
        let this = result.header.mode.unit();
        unit = Some(unit.unwrap_or(this).same(this).map_err(|why| format!("node {}: {why}", result.header.node))?);
    }
    Ok(unit.unwrap_or_default())
}

/// Node results merged one at a time, each stack under its hierarchy prefix.
pub struct Merger<'a> {
    placements: &'a Placements,
    group_by: GroupBy,
    stacks: MergedStacks,
    /// The frame ids of the record being merged.
    scratch: Vec<u32>,
}

impl<'a> Merger<'a> {
    pub fn new(placements: &'a Placements, group_by: GroupBy) -> Self {
        Merger { placements, group_by, stacks: MergedStacks::default(), scratch: Vec::new() }
    }

    /// Adds a node's stacks. Their counts are added whatever their unit: [`unit_of`] decides
    /// whether the sum means anything.
    pub fn add(&mut self, result: &NodeResult) {
        // A node's records name a few processes, each in thousands of records: each one's
        // hierarchy is written and interned once.
        let mut hierarchies: HashMap<(Option<&str>, u32, &str), u32> = HashMap::new();
        for record in result.stacks.iter() {
            let key = (record.container, record.pid, record.process);
            let hierarchy = match hierarchies.get(&key) {
                Some(&id) => id,
                None => {
                    self.scratch.clear();
                    for level in hierarchy(&record, self.placements, self.group_by) {
                        self.scratch.push(self.stacks.frame_id(&level));
                    }
                    let id = self.stacks.path_id(&self.scratch);
                    hierarchies.insert(key, id);
                    id
                }
            };
            let code = self.stacks.code_id(record.stack, &mut self.scratch);
            self.stacks.add(hierarchy, code, record.count);
        }
    }

    /// Adds a node's stacks and drops them from its result, which keeps its header, warnings
    /// and counts.
    pub fn take(&mut self, result: &mut NodeResult) {
        self.add(result);
        result.stacks = Payload::default();
    }

    pub fn into_stacks(self) -> MergedStacks {
        self.stacks
    }
}

fn hierarchy(record: &StackRef, placements: &Placements, group_by: GroupBy) -> Vec<String> {
    let mut levels = Vec::new();
    let placement = record.container.and_then(|id| placements.get(id));
    if let Some(p) = placement {
        if group_by >= GroupBy::Namespace {
            levels.push(format!("namespace/{}", p.namespace));
        }
        if group_by >= GroupBy::Workload {
            levels.push(p.workload.clone());
        }
        if group_by >= GroupBy::Pod {
            levels.push(format!("pod/{}", p.pod));
        }
        if group_by >= GroupBy::Container {
            levels.push(format!("container/{}", p.container));
        }
    } else if let Some(id) = record.container {
        if group_by >= GroupBy::Container {
            // The id is the stream's (hostile) text: cut at a character, not a byte.
            let short = id.char_indices().nth(12).map_or(id, |(at, _)| &id[..at]);
            levels.push(format!("container/{short}"));
        }
    }
    if group_by >= GroupBy::Process {
        levels.push(format!("{} ({})", record.process, record.pid));
    }
    levels
}

/// Merged stacks in a compact form: frame names interned, stacks as sequences of frame ids,
/// a stack of the graph as the pair (hierarchy prefix, code stack). Reads as the
/// [`FoldedStacks`] of the same stacks ([`MergedStacks::to_folded`]); the flame graph takes
/// only what it can draw ([`MergedStacks::visible`]).
#[derive(Clone, Debug, Default)]
pub struct MergedStacks {
    /// Frame names as folded text writes them ([`push_frame`]); a frame's id is its index.
    frames: IndexSet<Box<str>>,
    /// Frame id sequences, outermost first: hierarchy prefixes and code stacks alike.
    paths: IndexSet<Box<[u32]>>,
    /// (hierarchy path, code path) -> samples.
    counts: hashbrown::HashMap<(u32, u32), u64>,
    /// Code stacks by the text a payload joins them as: (hash of the text, code path). A
    /// stack that came before, from any node, is found by one hash of its text and a compare
    /// of its frames, instead of a lookup of every frame name (a thousand replicas send the
    /// same stacks a thousand times). Only the hash is kept, not the text.
    stack_texts: HashTable<(u64, u32)>,
    text_hasher: DefaultHashBuilder,
}

/// A stack of the graph while [`MergedStacks::visible`] walks them.
#[derive(Clone, Copy)]
struct Entry {
    hierarchy: u32,
    code: u32,
    count: u64,
}

impl MergedStacks {
    /// The id of a frame name, as [`FoldedStacks::add`] would write it.
    fn frame_id(&mut self, name: &str) -> u32 {
        // Names are looked up as they come: an interned name is already in folded form, and
        // `push_frame` leaves a name in folded form as it is.
        if let Some(id) = self.frames.get_index_of(name) {
            return id as u32;
        }
        let mut clean = String::with_capacity(name.len());
        push_frame(&mut clean, name);
        self.frames.insert_full(clean.into_boxed_str()).0 as u32
    }

    /// The code path of a stack as a payload joins it (`frame;frame`, raw frame names).
    fn code_id(&mut self, stack: &str, scratch: &mut Vec<u32>) -> u32 {
        let hash = self.text_hasher.hash_one(stack);
        let (frames, paths) = (&self.frames, &self.paths);
        let same = |&(h, id): &(u64, u32)| h == hash && is_path_of(frames, &paths[id as usize], stack);
        if let Some(&(_, id)) = self.stack_texts.find(hash, same) {
            return id;
        }
        scratch.clear();
        // As `StackRef::frames`: an empty stack has no frames.
        for frame in (!stack.is_empty()).then(|| stack.split(';')).into_iter().flatten() {
            scratch.push(self.frame_id(frame));
        }
        let id = self.path_id(scratch);
        self.stack_texts.insert_unique(hash, (hash, id), |&(h, _)| h);
        id
    }

    fn path_id(&mut self, frames: &[u32]) -> u32 {
        match self.paths.get_index_of(frames) {
            Some(id) => id as u32,
            None => self.paths.insert_full(frames.into()).0 as u32,
        }
    }

    /// Adds `count` samples as [`FoldedStacks::add`] does: nothing for 0 or an empty stack,
    /// sums saturating (a forged log must not make them wrap).
    fn add(&mut self, hierarchy: u32, code: u32, count: u64) {
        if count == 0 || self.path(hierarchy).is_empty() && self.path(code).is_empty() {
            return;
        }
        let total = self.counts.entry((hierarchy, code)).or_insert(0);
        *total = total.saturating_add(count);
    }

    fn path(&self, id: u32) -> &[u32] {
        &self.paths[id as usize]
    }

    fn name(&self, frame: u32) -> &str {
        &self.frames[frame as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.values().fold(0u64, |sum, c| sum.saturating_add(*c))
    }

    /// Distinct (hierarchy, code stack) pairs: the stacks of the graph.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Every stack, joined: what the formats other than the flame graph write.
    pub fn to_folded(&self) -> FoldedStacks {
        let mut folded = FoldedStacks::new();
        for (&(hierarchy, code), &count) in &self.counts {
            let frames = self.path(hierarchy).iter().chain(self.path(code));
            folded.add_joined(self.joined(frames.copied()), count);
        }
        folded
    }

    fn joined(&self, frames: impl Iterator<Item = u32>) -> String {
        let mut out = String::new();
        for (i, frame) in frames.enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(self.name(frame));
        }
        out
    }

    fn depth_of(&self, e: &Entry) -> usize {
        self.path(e.hierarchy).len() + self.path(e.code).len()
    }

    fn frame_at(&self, e: &Entry, depth: usize) -> u32 {
        let hierarchy = self.path(e.hierarchy);
        match hierarchy.get(depth) {
            Some(&frame) => frame,
            None => self.path(e.code)[depth - hierarchy.len()],
        }
    }

    /// The stacks as a flame graph `min_width_percent` wide at least per frame draws them
    /// (inferno's `min_width`): every frame it draws with its full count, and nothing below.
    ///
    /// Inferno lays out every frame of every stack before it drops those narrower than its
    /// minimum width: for 2 million stacks of 20 frames, 40 million frames held at once, of
    /// which a few thousand are drawn. Here the stacks are cut first. A frame at least half as
    /// wide as the minimum is kept (inferno drops what is narrower than the minimum itself;
    /// the half keeps float rounding from ever cutting a frame inferno would draw). Below a
    /// kept frame, neighbouring callees too narrow to keep are merged into one line named
    /// after the first of them, as long as that line stays too narrow to draw: the frames
    /// after them start where they did, and the graph is the graph inferno draws of all the
    /// stacks. Lines come in no particular order; sort them for inferno.
    pub fn visible(&self, min_width_percent: f64) -> Vec<(String, u64)> {
        let total = self.total();
        if total == 0 {
            return Vec::new();
        }
        // inferno: a frame is dropped when `(end - start) as f64 < min_width / (100 / total)`.
        let keep = min_width_percent / (100.0 / total as f64) / 2.0;
        let drawn = |count: u64| count as f64 >= keep;
        let mut entries: Vec<Entry> =
            self.counts.iter().map(|(&(hierarchy, code), &count)| Entry { hierarchy, code, count }).collect();
        let mut lines = Vec::new();
        // Ranges of `entries` that share their first `depth` frames, a frame that is drawn
        // (or, at depth 0, the graph's root): walked without recursion, since a forged stream
        // may carry a stack of a million frames.
        let mut work = vec![(0, entries.len(), 0)];
        while let Some((start, end, depth)) = work.pop() {
            let range = &mut entries[start..end];
            // The stacks that end here: the frame's own samples.
            let mut ending = 0;
            for i in 0..range.len() {
                if self.depth_of(&range[i]) == depth {
                    range.swap(i, ending);
                    ending += 1;
                }
            }
            let own = range[..ending].iter().fold(0u64, |sum, e| sum.saturating_add(e.count));
            if depth > 0 && own > 0 {
                lines.push((self.joined((0..depth).map(|d| self.frame_at(&range[0], d))), own));
            }
            let callees = &mut range[ending..];
            let Some(first) = callees.first() else { continue };
            let first = self.frame_at(first, depth);
            if callees.iter().any(|e| self.frame_at(e, depth) != first) {
                callees.sort_unstable_by_key(|e| self.frame_at(e, depth));
            }
            // One group per callee: (frame, start, end, samples).
            let mut groups: Vec<(u32, usize, usize, u64)> = Vec::new();
            for (i, e) in callees.iter().enumerate() {
                let frame = self.frame_at(e, depth);
                match groups.last_mut() {
                    Some(g) if g.0 == frame => {
                        g.2 = i + 1;
                        g.3 = g.3.saturating_add(e.count);
                    }
                    _ => groups.push((frame, i, i + 1, e.count)),
                }
            }
            groups.sort_by(|a, b| folded_order(self.name(a.0), self.name(b.0)));
            let offset = start + ending;
            // Neighbouring callees too narrow to draw: (an entry of the first, its frame, samples).
            let mut narrow: Option<(Entry, u32, u64)> = None;
            let flush = |narrow: &mut Option<(Entry, u32, u64)>, lines: &mut Vec<(String, u64)>| {
                if let Some((e, frame, count)) = narrow.take() {
                    let frames = (0..depth).map(|d| self.frame_at(&e, d)).chain([frame]);
                    lines.push((self.joined(frames), count));
                }
            };
            for (frame, g_start, g_end, count) in groups {
                if drawn(count) {
                    flush(&mut narrow, &mut lines);
                    work.push((offset + g_start, offset + g_end, depth + 1));
                    continue;
                }
                match &mut narrow {
                    Some((_, _, sum)) if !drawn(sum.saturating_add(count)) => *sum += count,
                    _ => {
                        flush(&mut narrow, &mut lines);
                        narrow = Some((entries[offset + g_start], frame, count));
                    }
                }
            }
            flush(&mut narrow, &mut lines);
        }
        lines
    }
}

/// Whether `path` is the stack `stack` (raw frame names joined by `;`) once each frame is in
/// folded form ([`push_frame`]), as [`MergedStacks::frame_id`] stores it.
fn is_path_of(frames: &IndexSet<Box<str>>, path: &[u32], stack: &str) -> bool {
    let mut raw = (!stack.is_empty()).then(|| stack.split(';')).into_iter().flatten();
    for &id in path {
        let Some(raw) = raw.next() else { return false };
        if !is_folded_form_of(&frames[id as usize], raw) {
            return false;
        }
    }
    raw.next().is_none()
}

/// Whether `name` is what [`push_frame`] writes of `raw` (which holds no `;`).
fn is_folded_form_of(name: &str, raw: &str) -> bool {
    if raw.is_empty() {
        return name == "[unknown]";
    }
    name == raw || name.chars().eq(raw.chars().map(|c| if c.is_control() { ' ' } else { c }))
}

/// The order of sibling frames in sorted folded text, where each is followed by `;`.
fn folded_order(a: &str, b: &str) -> Ordering {
    a.bytes().chain([b';']).cmp(b.bytes().chain([b';']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_different_units_are_not_merged() {
        let mut cpu = result(Vec::new());
        cpu.header.node = "a".into();
        let mut off = result(Vec::new());
        off.header.node = "b".into();
        off.header.mode = eagle_proto::ProfileMode::OffCpu;
        assert_eq!(unit_of([&off, &off]), Ok(Unit::OffCpuMicros));
        let refused = unit_of([&cpu, &off]).unwrap_err();
        assert!(refused.starts_with("node b: cannot combine a profile in CPU samples"), "{refused}");
    }
    use crate::placement::Placement;
    use eagle_proto::StackRecord;

    fn result(records: Vec<StackRecord>) -> NodeResult {
        NodeResult { stacks: Payload::from_records(&records), ..Default::default() }
    }

    fn record(container: &str, pid: u32, frames: &[&str], count: u64) -> StackRecord {
        StackRecord {
            container: Some(container.into()),
            pid,
            process: "api".into(),
            sampler: "ebpf".into(),
            frames: frames.iter().map(|s| s.to_string()).collect(),
            count,
        }
    }

    #[test]
    fn levels_down_to_group_by_and_none_merges_replicas() {
        let mut placements = Placements::new();
        for (id, pod) in [("aaa", "api-1"), ("bbb", "api-2")] {
            placements.insert(
                id.into(),
                Placement {
                    namespace: "shop".into(),
                    workload: "deployment/api".into(),
                    pod: pod.into(),
                    container: "app".into(),
                },
            );
        }
        let results = [
            result(vec![record("aaa", 10, &["main", "hot"], 3)]),
            result(vec![record("bbb", 11, &["main", "hot"], 2)]),
        ];
        let none = merge(&results, &placements, GroupBy::None);
        assert_eq!(none.to_text(), "main;hot 5\n");
        let workload = merge(&results, &placements, GroupBy::Workload);
        assert_eq!(workload.to_text(), "namespace/shop;deployment/api;main;hot 5\n");
        let process = merge(&results, &placements, GroupBy::Process);
        assert_eq!(
            process.to_text(),
            "namespace/shop;deployment/api;pod/api-1;container/app;api (10);main;hot 3\n\
             namespace/shop;deployment/api;pod/api-2;container/app;api (11);main;hot 2\n"
        );
    }

    #[test]
    fn frames_are_written_as_folded_stacks_writes_them() {
        let records = vec![
            record("aaa", 1, &["main", "a;b", "", "x\ty"], 2),
            record("aaa", 1, &["main", "a:b", "[unknown]", "x y"], 3),
            record("aaa", 1, &["main"], 0),
            StackRecord { container: None, process: "p".into(), frames: Vec::new(), ..record("-", 2, &[], 4) },
        ];
        let ours = merge(&[result(records.clone())], &Placements::new(), GroupBy::None);
        let mut theirs = FoldedStacks::new();
        for r in &records {
            theirs.add(&r.frames, r.count);
        }
        assert_eq!(ours, theirs);
        assert_eq!(ours.to_text(), "main;a:b;[unknown];x y 5\n");
    }

    #[test]
    fn a_stack_is_found_by_its_text_whatever_its_frames_hold() {
        let mut stacks = MergedStacks::default();
        let mut scratch = Vec::new();
        // Raw payload text, as a forged stream may carry it: a control character and an empty
        // frame, which read back as a space and `[unknown]`.
        let raw = stacks.code_id("main;a\u{1}b;;leaf", &mut scratch);
        assert_eq!(stacks.code_id("main;a\u{1}b;;leaf", &mut scratch), raw);
        assert_eq!(stacks.code_id("main;a b;[unknown];leaf", &mut scratch), raw);
        assert_eq!(stacks.frames.len(), 4);
        let shorter = stacks.code_id("main;a b;[unknown]", &mut scratch);
        let longer = stacks.code_id("main;a b;[unknown];leaf;more", &mut scratch);
        let empty = stacks.code_id("", &mut scratch);
        assert_eq!(
            [shorter, longer, empty].map(|id| stacks.joined(stacks.path(id).iter().copied())),
            ["main;a b;[unknown]", "main;a b;[unknown];leaf;more", ""].map(str::to_owned)
        );
        assert_eq!(stacks.joined(stacks.path(raw).iter().copied()), "main;a b;[unknown];leaf");
    }
}
