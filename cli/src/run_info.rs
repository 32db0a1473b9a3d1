//! What is known about the run behind a profile: a value shared by the writers (pprof), the
//! summary and every command that makes or reads a profile.

use std::time::Duration;

use eagle_proto::{CgroupCpuStat, NodeResult, Unit};
use serde::{Deserialize, Serialize};

use crate::placement::Placements;

/// What is known about the run that produced a profile; `None` where it is not (a profile read
/// from a folded file knows only its stacks).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunInfo {
    pub started_unix_ms: Option<u64>,
    pub duration: Option<Duration>,
    pub frequency_hz: Option<u64>,
    pub partial: Option<bool>,
    pub nodes: Option<Vec<NodeStatus>>,
    /// What a count stands for; `None` (unknown) reads as CPU samples.
    pub unit: Option<Unit>,
    /// Off-CPU and wall runs: the CPU-limit counters of the profiled cgroups, per node.
    pub cgroups: Option<Vec<CgroupCpu>>,
}

/// One cgroup's CPU limit over the window, beside what the profile measured for its
/// processes: the `cgroups` of the `--summary` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupCpu {
    pub node: String,
    /// As `/proc/PID/cgroup` names it (the cpu controller's hierarchy).
    pub cgroup: String,
    /// A profiled process in it.
    pub pid: u32,
    /// The pod whose container the cgroup is, where the run knows it (cluster runs): its
    /// namespace, name and container name, and the container's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The limit (cgroup v1 `cfs_quota_us / cfs_period_us`, v2 `cpu.max`); null: none.
    pub limit_millicores: Option<u64>,
    /// `cpu.stat` over the window: periods, periods throttled, time throttled (summed over CPUs).
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_seconds: f64,
    /// What the profile measured for the processes of the cgroup it profiled: time their
    /// threads were runnable and held back by the limit, and runnable and waiting for a CPU.
    pub measured_throttled_seconds: f64,
    pub measured_waiting_seconds: f64,
    /// The nearest group above with a CPU limit of its own (a pod's group), its own counters:
    /// each level counts only the throttling its own quota caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<CgroupLevel>,
}

/// A limited group's own `cpu.stat` over the window (see [`CgroupCpu::above`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupLevel {
    pub limit_millicores: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_seconds: f64,
}

impl CgroupCpu {
    /// The cgroups a node's agent reported (`info-cgroup-cpu`), named by pod where the agent
    /// said which container a cgroup's process is in and `placements` knows that container.
    pub fn of_node(result: &NodeResult, placements: &Placements) -> Vec<CgroupCpu> {
        result
            .warnings
            .iter()
            .filter_map(CgroupCpuStat::from_warning)
            .map(|s| {
                let placement = s.container.as_ref().and_then(|id| placements.get(id));
                (s, placement)
            })
            .map(|(s, placement)| CgroupCpu {
                node: result.header.node.clone(),
                cgroup: s.cgroup,
                pid: s.pid,
                namespace: placement.map(|p| p.namespace.clone()),
                pod: placement.map(|p| p.pod.clone()),
                container: placement.map(|p| p.container.clone()),
                container_id: s.container,
                limit_millicores: s.limit_millicores,
                nr_periods: s.nr_periods,
                nr_throttled: s.nr_throttled,
                throttled_seconds: s.throttled_us as f64 / 1e6,
                measured_throttled_seconds: s.measured_throttled_us as f64 / 1e6,
                measured_waiting_seconds: s.measured_waiting_us as f64 / 1e6,
                above: s.above.map(|a| CgroupLevel {
                    limit_millicores: a.limit_millicores,
                    nr_periods: a.nr_periods,
                    nr_throttled: a.nr_throttled,
                    throttled_seconds: a.throttled_us as f64 / 1e6,
                }),
            })
            .collect()
    }

    /// Every node's, or `None` when no node reported any (CPU runs).
    pub fn of_nodes<'a>(
        results: impl IntoIterator<Item = &'a NodeResult>,
        placements: &Placements,
    ) -> Option<Vec<CgroupCpu>> {
        let all: Vec<CgroupCpu> = results.into_iter().flat_map(|r| CgroupCpu::of_node(r, placements)).collect();
        (!all.is_empty()).then_some(all)
    }
}

impl RunInfo {
    /// Fills what `self` does not know from `other`.
    pub fn or(self, other: &RunInfo) -> RunInfo {
        RunInfo {
            started_unix_ms: self.started_unix_ms.or(other.started_unix_ms),
            duration: self.duration.or(other.duration),
            frequency_hz: self.frequency_hz.or(other.frequency_hz),
            partial: self.partial.or(other.partial),
            nodes: self.nodes.or_else(|| other.nodes.clone()),
            unit: self.unit.or(other.unit),
            cgroups: self.cgroups.or_else(|| other.cgroups.clone()),
        }
    }

    /// What a count stands for: CPU samples unless the run or the file said otherwise.
    pub fn unit(&self) -> Unit {
        self.unit.unwrap_or_default()
    }
}

/// How a node's part in a run went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatusKind {
    /// It delivered its whole window.
    #[default]
    Ok,
    /// It was stopped early, and still delivered what it sampled.
    Partial,
    /// It delivered nothing.
    Failed,
}

/// One node's part in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub status: NodeStatusKind,
    /// Samples the node delivered; absent when it failed.
    #[serde(default)]
    pub samples: Option<u64>,
    /// Why it failed, or the warnings it sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
}
