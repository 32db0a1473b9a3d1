//! What is known about the run behind a profile: a value shared by the writers (pprof), the
//! summary and every command that makes or reads a profile.

use std::time::Duration;

use eagle_proto::Unit;
use serde::{Deserialize, Serialize};

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
