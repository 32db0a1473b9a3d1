//! The state of runs, derived from their Jobs and pods (pure): what `list` shows, and what
//! `clean` names. A node's state comes from its pod (what `pod_state` says of it) and its Job.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::annotations::{name_of, run_of, RunAnnotations};
use super::pod_state::{self, Phase, PodState};
use super::run;
use super::store::{created, is_active, job_end, job_end_time, pod_of};
use crate::duration::{ago, human, span};
use crate::table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Pending,
    Running,
    Done,
    Failed,
    Expired,
}

/// One node of a run.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub node: String,
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub state: NodeState,
    /// Samples the agent delivered, from its trailer (done nodes whose log tail was read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Some node is still pending or sampling.
    Running,
    /// Every node delivered.
    Done,
    /// Some nodes delivered, others failed or expired.
    Partial,
    /// The nodes that finished delivered no samples.
    Empty,
    /// No node delivered.
    Failed,
    /// Every Job finished and every pod (with its log) is gone.
    Expired,
}

impl RunStatus {
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Running => "Running",
            RunStatus::Done => "Done",
            RunStatus::Partial => "Partial",
            RunStatus::Empty => "Empty",
            RunStatus::Failed => "Failed",
            RunStatus::Expired => "Expired",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct NodeCounts {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub running: usize,
    pub pending: usize,
    pub expired: usize,
}

/// One run, as `list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip)]
    pub started_at: Option<Timestamp>,
    pub target: String,
    /// Who started it (`kube-eagle.io/user`); `None` for runs that do not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_hz: Option<u64>,
    /// Started with `-a`: nobody follows it, its results wait for `fetch`.
    #[serde(rename = "async")]
    pub is_async: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i32>,
    /// When its finished Jobs (and results) go, by their TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip)]
    pub expires_at: Option<Timestamp>,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub nodes: NodeCounts,
    #[serde(rename = "per_node")]
    pub node_views: Vec<NodeView>,
}

/// One node's state from its Job, its pod (if any) and the samples its trailer announced.
pub fn node_view(job: &Job, pod: Option<&Pod>, samples: Option<u64>) -> NodeView {
    let node = RunAnnotations::of(job).node.unwrap_or_else(|| "?".into());
    let end = job_end(job);
    let view = |state, reason: Option<String>| NodeView {
        node: node.clone(),
        job: name_of(job).to_owned(),
        pod: pod.and_then(|p| p.metadata.name.clone()),
        state,
        samples: if state == NodeState::Done { samples } else { None },
        reason,
    };
    let Some(pod) = pod else {
        return match end {
            Some(_) => view(NodeState::Expired, Some(run::EXPIRED.into())),
            None => view(NodeState::Pending, Some("no pod yet".into())),
        };
    };
    let state = PodState::of(pod);
    match state.phase {
        Phase::Succeeded => return view(NodeState::Done, None),
        Phase::Failed => return view(NodeState::Failed, Some(pod_state::failure(pod))),
        _ => {}
    }
    if let Some(Err(why)) = end {
        return view(NodeState::Failed, Some(why));
    }
    if let Some(why) = state.cannot_start {
        return view(NodeState::Failed, Some(why));
    }
    if state.phase == Phase::Running {
        return view(NodeState::Running, state.stopping.then(|| "stopping".to_owned()));
    }
    if let Some(message) = state.unschedulable {
        return view(NodeState::Pending, Some(format!("unschedulable: {message}")));
    }
    view(NodeState::Pending, state.waiting.filter(|r| !r.is_empty()))
}

/// The failure reason of a run, from its failed nodes: one reason when they agree.
fn failure_reason(views: &[&NodeView], missing: usize) -> Option<String> {
    let mut reasons: Vec<String> =
        views.iter().map(|v| format!("{}: {}", v.node, v.reason.as_deref().unwrap_or("failed"))).collect();
    let distinct: BTreeSet<&str> = views.iter().filter_map(|v| v.reason.as_deref()).collect();
    if views.len() > 1 && distinct.len() == 1 {
        reasons = vec![format!("{} (all {} nodes)", distinct.first().expect("one"), views.len())];
    }
    if missing > 0 {
        reasons.push(format!("{missing} Job(s) missing: never created, or deleted"));
    }
    match reasons.len() {
        0 => None,
        1 => reasons.pop(),
        n => Some(format!("{} (and {} more)", reasons[0], n - 1)),
    }
}

/// Whether a run (or pod) whose annotation says `owner` is `me`'s to list and clean without
/// `--all-users`: theirs, or one that does not say (made before runs were recorded), or
/// anyone's when the CLI cannot tell who `me` is.
pub fn is_mine(owner: Option<&str>, me: Option<&str>) -> bool {
    match (owner, me) {
        (Some(owner), Some(me)) => owner == me,
        _ => true,
    }
}

/// Every run in `jobs`, newest first. `samples` maps a finished pod's name to the sample count
/// its trailer announced.
pub fn runs(jobs: &[Job], pods: &[Pod], samples: &HashMap<String, u64>) -> Vec<RunView> {
    let mut by_run: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for job in jobs {
        if let Some(id) = run_of(job) {
            by_run.entry(id).or_default().push(job);
        }
    }
    let mut views: Vec<RunView> = by_run
        .into_iter()
        .map(|(id, mut jobs)| {
            jobs.sort_by_key(|j| (name_of(j).len(), name_of(j).to_owned()));
            let first = jobs[0];
            let node_views: Vec<NodeView> = jobs
                .iter()
                .map(|j| {
                    let pod = pod_of(j, pods);
                    let n = pod.and_then(|p| p.metadata.name.as_ref()).and_then(|name| samples.get(name)).copied();
                    node_view(j, pod, n)
                })
                .collect();
            let announced = jobs.iter().filter_map(|j| RunAnnotations::of(j).nodes).max();
            let total = announced.unwrap_or(jobs.len()).max(jobs.len());
            let missing = total - jobs.len();
            let count = |s: NodeState| node_views.iter().filter(|v| v.state == s).count();
            let nodes = NodeCounts {
                total,
                done: count(NodeState::Done),
                failed: count(NodeState::Failed) + missing,
                running: count(NodeState::Running),
                pending: count(NodeState::Pending),
                expired: count(NodeState::Expired),
            };
            let failed: Vec<&NodeView> =
                node_views.iter().filter(|v| matches!(v.state, NodeState::Failed | NodeState::Expired)).collect();
            let done: Vec<&NodeView> = node_views.iter().filter(|v| v.state == NodeState::Done).collect();
            let all_empty = !done.is_empty() && done.iter().all(|v| v.samples == Some(0));
            let (status, reason) = if nodes.running + nodes.pending > 0 {
                // Of the pending ones, only what will not pass by itself.
                let pending: Vec<&NodeView> = node_views
                    .iter()
                    .filter(|v| v.state == NodeState::Pending)
                    .filter(|v| v.reason.as_deref().is_some_and(|r| r.starts_with("unschedulable")))
                    .collect();
                let reason = failure_reason(&failed, missing).or_else(|| {
                    pending.first().map(|v| format!("{}: {}", v.node, v.reason.as_deref().unwrap_or_default()))
                });
                (RunStatus::Running, reason)
            } else if done.is_empty() {
                if nodes.expired > 0 && nodes.expired + missing == total {
                    (RunStatus::Expired, Some("results expired: the profiling pods are gone".to_owned()))
                } else {
                    (RunStatus::Failed, failure_reason(&failed, missing))
                }
            } else if all_empty {
                let mut why = "all profile results empty: increase --duration".to_owned();
                if let Some(f) = failure_reason(&failed, missing) {
                    why.push_str(&format!("; {f}"));
                }
                (RunStatus::Empty, Some(why))
            } else if !failed.is_empty() || missing > 0 {
                (RunStatus::Partial, failure_reason(&failed, missing))
            } else {
                (RunStatus::Done, None)
            };
            let said = RunAnnotations::of(first);
            let started_at = jobs.iter().filter_map(|j| created(j)).min();
            let ttl = first.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
            let finished = jobs.iter().all(|j| !is_active(j));
            let expires_at = match (finished, ttl) {
                (true, Some(ttl)) => jobs
                    .iter()
                    .filter_map(|j| job_end_time(j))
                    .max()
                    .and_then(|end| end.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(ttl.into())).ok()),
                _ => None,
            };
            RunView {
                id: id.to_owned(),
                started: started_at.map(|t| t.to_string()),
                started_at,
                target: said.target.unwrap_or_else(|| "?".into()),
                user: said.user,
                duration_ms: said.duration_ms,
                frequency_hz: said.frequency_hz,
                is_async: said.is_async,
                ttl_seconds: ttl,
                expires: expires_at.map(|t| t.to_string()),
                expires_at,
                status,
                reason,
                nodes,
                node_views,
            }
        })
        .collect();
    views.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| a.id.cmp(&b.id)));
    views
}

pub fn table(views: &[RunView], now: Timestamp) -> String {
    let header = ["RUN", "STARTED", "TARGET", "WINDOW", "NODES", "DONE", "FAILED", "STATUS", "EXPIRES", "REASON"];
    let rows: Vec<[String; 10]> = views
        .iter()
        .map(|v| {
            [
                v.id.clone(),
                v.started_at.map(|t| ago(now, t)).unwrap_or_else(|| "-".into()),
                v.target.clone(),
                v.duration_ms.map(|ms| human(Duration::from_millis(ms))).unwrap_or_else(|| "-".into()),
                v.nodes.total.to_string(),
                v.nodes.done.to_string(),
                (v.nodes.failed + v.nodes.expired).to_string(),
                v.status.label().to_owned(),
                v.expires_at
                    .map(|t| {
                        let left = t.as_second() - now.as_second();
                        if left > 0 {
                            format!("in {}", span(left))
                        } else {
                            "now".into()
                        }
                    })
                    .unwrap_or_else(|| "-".into()),
                v.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut lines = vec![header.map(str::to_owned).to_vec()];
    lines.extend(rows.into_iter().map(|r| r.to_vec()));
    table::render(&[table::LEFT; 10], &lines)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn job(id: &str, index: usize, node: &str, created: &str, condition: Option<(&str, &str)>) -> Job {
        let mut status = json!({});
        if let Some((kind, reason)) = condition {
            status = json!({"conditions": [{"type": kind, "status": "True", "reason": reason, "lastTransitionTime": "2026-11-22T10:01:00Z"}], "completionTime": if kind == "Complete" { json!("2026-11-22T10:01:00Z") } else { json!(null) }});
        }
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("eagle-{id}-{index}"), "namespace": "kube-eagle", "uid": format!("uid-{id}-{index}"),
                "creationTimestamp": created,
                "labels": {"app.kubernetes.io/managed-by": "kube-eagle", "kube-eagle.io/run": id},
                "annotations": {"kube-eagle.io/node": node, "kube-eagle.io/target": "deployment/api -n shop", "kube-eagle.io/duration-ms": "30000", "kube-eagle.io/nodes": "2", "kube-eagle.io/async": "true"}
            },
            "spec": {"ttlSecondsAfterFinished": 86400, "template": {}},
            "status": status
        }))
        .unwrap()
    }

    fn pod(job: &Job, phase: &str, extra: serde_json::Value) -> Pod {
        let name = format!("{}-x", name_of(job));
        let mut status = json!({"phase": phase});
        if let Some(map) = extra.as_object() {
            for (k, v) in map {
                status[k] = v.clone();
            }
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "kube-eagle", "labels": {"job-name": name_of(job)},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name_of(job), "uid": job.metadata.uid}]},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn list_states_newest_first_with_reasons() {
        let done_a = job("aaaa0001", 0, "node-a", "2026-11-22T10:00:00Z", Some(("Complete", "")));
        let done_b = job("aaaa0001", 1, "node-b", "2026-11-22T10:00:00Z", Some(("Complete", "")));
        let running = job("bbbb0002", 0, "node-a", "2026-11-22T10:05:00Z", None);
        let failed = job("cccc0003", 0, "node-a", "2026-11-22T09:00:00Z", Some(("Failed", "BackoffLimitExceeded")));
        let empty = job("dddd0004", 0, "node-a", "2026-11-22T08:00:00Z", Some(("Complete", "")));
        let expired = job("eeee0005", 0, "node-a", "2026-11-22T07:00:00Z", Some(("Complete", "")));
        let pods = vec![
            pod(&done_a, "Succeeded", json!({})),
            pod(&done_b, "Succeeded", json!({})),
            pod(&running, "Running", json!({})),
            pod(
                &failed,
                "Failed",
                json!({"containerStatuses": [{"name": "eagle-agent", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                "state": {"terminated": {"exitCode": 4, "reason": "Error", "message": "noise\neagle-agent: error: BPF is not permitted\n"}}}]}),
            ),
            pod(&empty, "Succeeded", json!({})),
        ];
        let samples = HashMap::from([
            ("eagle-aaaa0001-0-x".to_owned(), 120),
            ("eagle-aaaa0001-1-x".to_owned(), 80),
            ("eagle-dddd0004-0-x".to_owned(), 0),
        ]);
        let views = runs(&[failed.clone(), done_a, running, done_b, empty, expired], &pods, &samples);
        let ids: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["bbbb0002", "aaaa0001", "cccc0003", "dddd0004", "eeee0005"]);
        let status: Vec<RunStatus> = views.iter().map(|v| v.status).collect();
        assert_eq!(
            status,
            [RunStatus::Running, RunStatus::Done, RunStatus::Failed, RunStatus::Empty, RunStatus::Expired]
        );
        // A run announced on 2 nodes that has one Job: the other counts as failed.
        assert_eq!(views[0].nodes, NodeCounts { total: 2, running: 1, failed: 1, ..Default::default() });
        assert_eq!(views[1].nodes, NodeCounts { total: 2, done: 2, ..Default::default() });
        assert_eq!(views[1].expires.as_deref(), Some("2026-11-23T10:01:00Z"));
        assert!(views[2].reason.as_deref().unwrap().contains("BPF is not permitted"), "{:?}", views[2].reason);
        assert!(views[3].reason.as_deref().unwrap().starts_with("all profile results empty: increase --duration"));
        assert_eq!(views[4].node_views[0].state, NodeState::Expired);
        let text = table(&views, "2026-11-22T10:06:00Z".parse().unwrap());
        let first = text.lines().nth(1).unwrap();
        assert!(first.starts_with("bbbb0002  60s ago"), "{text}");
        assert!(text.contains("in 23h"), "{text}");
    }

    #[test]
    fn image_pull_errors_and_unschedulable_pods_are_named() {
        let j = job("ffff0006", 0, "node-a", "2026-11-22T10:00:00Z", None);
        let p = pod(
            &j,
            "Pending",
            json!({"containerStatuses": [{"name": "eagle-agent", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}),
        );
        let v = node_view(&j, Some(&p), None);
        assert_eq!((v.state, v.reason.as_deref()), (NodeState::Failed, Some("ErrImagePull: not found")));
        let p = pod(
            &j,
            "Pending",
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}]}),
        );
        let v = node_view(&j, Some(&p), None);
        assert_eq!(
            (v.state, v.reason.as_deref()),
            (NodeState::Pending, Some("unschedulable: 0/1 nodes are available"))
        );
        let v = node_view(&j, None, None);
        assert_eq!(v.state, NodeState::Pending);
    }
}
