//! Merging node results into one set of folded stacks, each prefixed with the hierarchy
//! `namespace -> workload -> pod -> container -> process` down to the `--group-by` level.

use eagle_proto::{FoldedStacks, NodeResult, StackRecord, Unit};

use crate::placement::{GroupBy, Placements};

pub fn merge<'a>(
    results: impl IntoIterator<Item = &'a NodeResult>,
    placements: &Placements,
    group_by: GroupBy,
) -> FoldedStacks {
    let mut folded = FoldedStacks::new();
    for result in results {
        for record in &result.records {
            let mut frames = hierarchy(record, placements, group_by);
            frames.extend(record.frames.iter().cloned());
            folded.add(&frames, record.count);
        }
    }
    folded
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

fn hierarchy(record: &StackRecord, placements: &Placements, group_by: GroupBy) -> Vec<String> {
    let mut levels = Vec::new();
    let placement = record.container.as_ref().and_then(|id| placements.get(id));
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
    } else if let Some(id) = &record.container {
        if group_by >= GroupBy::Container {
            levels.push(format!("container/{}", &id[..id.len().min(12)]));
        }
    }
    if group_by >= GroupBy::Process {
        levels.push(format!("{} ({})", record.process, record.pid));
    }
    levels
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

    fn result(records: Vec<StackRecord>) -> NodeResult {
        NodeResult { records, ..Default::default() }
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
}
