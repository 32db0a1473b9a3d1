//! What a profiling pod's status means, decided in one place for the three readers of it: the
//! watch of a run (`run`), the run states of `list` (`runs`), and the probe of `doctor`. Each
//! acts on it in its own way (give a node up, show it, report it); none reads the raw status.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

/// Waiting reasons of a container that will not resolve by themselves.
const CANNOT_START: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// The facts of a pod's status that say how it is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub phase: Phase,
    /// A container cannot start and will not by itself: `ErrImagePull: MESSAGE`.
    pub cannot_start: Option<String>,
    /// A container waits, with this reason (`ContainerCreating`, ...; empty when it gives none).
    pub waiting: Option<String>,
    /// The scheduler finds no node for it, with the scheduler's message.
    pub unschedulable: Option<String>,
    /// Deleted, and still running while its agent completes its stream.
    pub stopping: bool,
}

impl PodState {
    pub fn of(pod: &Pod) -> PodState {
        let status = pod.status.clone().unwrap_or_default();
        let phase = match status.phase.as_deref() {
            Some("Pending") => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            _ => Phase::Unknown,
        };
        let waiting = status.container_statuses.iter().flatten().find_map(|s| s.state.as_ref()?.waiting.clone());
        let cannot_start = waiting.as_ref().and_then(|w| {
            let reason = w.reason.clone().unwrap_or_default();
            CANNOT_START.contains(&reason.as_str()).then(|| {
                format!("{reason}: {}", w.message.clone().unwrap_or_default()).trim_end_matches([' ', ':']).to_owned()
            })
        });
        let unschedulable = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
            .map(|c| c.message.clone().unwrap_or_default());
        PodState {
            phase,
            cannot_start,
            waiting: waiting.map(|w| w.reason.unwrap_or_default()),
            unschedulable,
            stopping: pod.metadata.deletion_timestamp.is_some(),
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Succeeded | Phase::Failed)
    }
}

/// How the agent's container ended, if it did.
pub fn terminated(pod: &Pod) -> Option<ContainerStateTerminated> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.terminated.clone()
}

/// `agent exited with code 4 (Error)`.
pub fn exit_of(t: &ContainerStateTerminated) -> String {
    format!("agent exited with code {} ({})", t.exit_code, t.reason.clone().unwrap_or_default())
}

/// Why a profiling pod failed, from its status: the agent's own `eagle-agent: error:` line
/// (the termination message falls back to the log's end), else the exit code.
pub fn failure(pod: &Pod) -> String {
    if let Some(t) = terminated(pod) {
        let said = t.message.as_deref().and_then(eagle_proto::agent_error_in).map(str::to_owned);
        return said.unwrap_or_else(|| exit_of(&t));
    }
    let status = pod.status.as_ref();
    match status.and_then(|s| s.reason.clone()) {
        Some(reason) => format!("{reason}: {}", status.and_then(|s| s.message.clone()).unwrap_or_default()),
        None => "the profiling pod failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn image_errors_cannot_start_and_other_waits_can() {
        let waiting = |reason: &str| {
            pod(
                json!({"phase": "Pending", "containerStatuses": [{"name": "eagle-agent", "ready": false, "restartCount": 0,
                "image": "", "imageID": "", "state": {"waiting": {"reason": reason, "message": "not found"}}}]}),
            )
        };
        let s = PodState::of(&waiting("ErrImagePull"));
        assert_eq!(s.cannot_start.as_deref(), Some("ErrImagePull: not found"));
        let s = PodState::of(&waiting("ContainerCreating"));
        assert_eq!((s.phase, s.cannot_start, s.waiting.as_deref()), (Phase::Pending, None, Some("ContainerCreating")));
    }

    #[test]
    fn unschedulable_with_the_schedulers_message() {
        let p = pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available"}]}));
        assert_eq!(PodState::of(&p).unschedulable.as_deref(), Some("0/1 nodes are available"));
    }

    #[test]
    fn a_failure_is_the_agents_own_line_else_its_exit() {
        let failed = |message: &str| {
            pod(
                json!({"phase": "Failed", "containerStatuses": [{"name": "eagle-agent", "ready": false, "restartCount": 0,
                "image": "", "imageID": "", "state": {"terminated": {"exitCode": 4, "reason": "Error", "message": message}}}]}),
            )
        };
        assert_eq!(failure(&failed("noise\neagle-agent: error: BPF is not permitted\n")), "BPF is not permitted");
        assert_eq!(failure(&failed("segfault")), "agent exited with code 4 (Error)");
        assert_eq!(failure(&pod(json!({"phase": "Failed"}))), "the profiling pod failed");
    }
}
