//! The JSON summary (`--summary FILE`): what CI reads after a run. Its schema is documented in
//! docs/ci.md and versioned by `schema_version`: fields are only ever added within a version;
//! a removal or a change of meaning raises it.

use std::path::Path;

use eagle_proto::Unit;
use serde::{Deserialize, Serialize};

use crate::analysis::{round, Analysis, FunctionStats, Measure};
use crate::check::CheckReport;
use crate::error::CliError;
use crate::files;
use crate::run_info::{CgroupCpu, NodeStatus, RunInfo};

pub const SCHEMA_VERSION: u32 = 1;

fn cpu_samples() -> String {
    Unit::CpuSamples.name().to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    /// `kube-eagle VERSION`.
    pub generator: String,
    /// The profile's title (`kube-eagle: deployment/api`), or the file it was read from.
    pub title: String,
    pub started_unix_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub frequency_hz: Option<u64>,
    /// The sum of the profile's counts, in `unit`.
    pub total_samples: u64,
    /// What a count stands for: `cpu-samples`, `off-cpu-microseconds`, `wall-microseconds`.
    #[serde(default = "cpu_samples")]
    pub unit: String,
    /// total_samples / frequency_hz: CPU time the samples stand for (CPU samples only).
    pub cpu_seconds: Option<f64>,
    /// Off-CPU and wall-clock profiles: the time their microseconds add up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    pub stacks: u64,
    pub functions: u64,
    /// True when some node failed or the run was stopped early; null when unknown (files).
    pub partial: Option<bool>,
    /// Per-node status; null when unknown (files).
    pub nodes: Option<Vec<NodeStatus>>,
    /// Functions by self share (innermost frame), highest first.
    pub top_self: Vec<FunctionShare>,
    /// Functions by total share (anywhere on the stack), highest first.
    pub top_total: Vec<FunctionShare>,
    /// Off-CPU and wall runs: each profiled cgroup's CPU limit, its own throttling counters
    /// over the window, and the time the profile measured its processes throttled and waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<Vec<CgroupCpu>>,
    /// The checks run on this profile (`--max` ...), absent when none were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<CheckReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionShare {
    pub function: String,
    pub self_samples: u64,
    pub self_percent: f64,
    pub total_samples: u64,
    pub total_percent: f64,
}

impl Summary {
    pub fn new(title: &str, analysis: &Analysis, run: &RunInfo, top: usize) -> Summary {
        let share = |f: FunctionStats| FunctionShare {
            function: f.name.to_owned(),
            self_samples: f.self_samples,
            self_percent: round(analysis.percent(f.self_samples)),
            total_samples: f.total_samples,
            total_percent: round(analysis.percent(f.total_samples)),
        };
        let total = analysis.total();
        let unit = run.unit();
        Summary {
            schema_version: SCHEMA_VERSION,
            generator: format!("kube-eagle {}", env!("CARGO_PKG_VERSION")),
            title: title.to_owned(),
            started_unix_ms: run.started_unix_ms,
            duration_ms: run.duration.map(|d| d.as_millis() as u64),
            frequency_hz: run.frequency_hz,
            total_samples: total,
            unit: unit.name().to_owned(),
            cpu_seconds: run
                .frequency_hz
                .filter(|hz| *hz > 0 && unit == Unit::CpuSamples)
                .map(|hz| round(total as f64 / hz as f64)),
            seconds: (unit != Unit::CpuSamples).then(|| round(total as f64 / 1e6)),
            stacks: analysis.stacks() as u64,
            functions: analysis.function_count() as u64,
            partial: run.partial,
            nodes: run.nodes.clone(),
            top_self: analysis.top(Measure::SelfTime, top).into_iter().map(share).collect(),
            top_total: analysis.top(Measure::Total, top).into_iter().map(share).collect(),
            cgroups: run.cgroups.clone(),
            checks: None,
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a summary serializes");
        s.push('\n');
        s
    }

    pub fn write(&self, path: &Path) -> Result<(), CliError> {
        files::write_file(path, self.to_json().as_bytes(), "summary")
    }
}
