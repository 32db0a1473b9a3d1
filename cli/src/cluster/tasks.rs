//! Runs as tasks, with no server: the Jobs in the locked namespace, their labels and
//! annotations, and their finished pods' logs are the task store.
//!
//! - `profile -a` creates a run's Jobs with a long TTL and returns ([`profile_async`]);
//! - `list` reads the store: one list of Jobs, one of pods, and the tail of each finished
//!   agent's log for its sample count ([`list`]);
//! - `fetch` reads a run's results through the same watch-and-follow loop as a synchronous run
//!   ([`run::attach`]) and renders them through the same code ([`profile::render`]); the
//!   hierarchy comes from the placements each Job carries ([`Task::annotate`]);
//! - `clean` and `uninstall` delete only objects with the project's labels;
//! - before a run creates Jobs, [`refuse_conflicts`] counts the runs already busy on its nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, LogParams};
use kube::{Api, Client};
use serde::Serialize;

use super::plan::{ANNOTATION_DURATION, ANNOTATION_NODE, ANNOTATION_TARGET, MANAGED_BY, RUN_LABEL};
use super::profile::{self, Finished};
use super::run::{self, NodeOutcome, NodeRun};
use super::{api_error, connect, ensure_namespace, Connection};
use crate::args::{CheckArgs, ProfileArgs, SummaryArgs};
use crate::duration::human;
use crate::error::{CliError, Exit};
use crate::gate::Gate;
use crate::merge::{GroupBy, Placement, Placements};
use crate::output::{Destination, Format};
use crate::summary::RunInfo;
use crate::target::ClusterKind;

/// Container id -> namespace/workload/pod/container of every container a Job profiles, as
/// JSON `{"NS":{"WORKLOAD":{"POD":{"CONTAINER":"ID"}}}}`: each name once, so a node with a
/// hundred containers stays near 12 KiB (annotations may hold 256 KiB).
pub const ANNOTATION_PLACEMENTS: &str = "kube-eagle.io/placements";
/// How many Jobs (nodes) the run has: a Job missing from the store is then still counted.
pub const ANNOTATION_NODES: &str = "kube-eagle.io/nodes";
/// `true` on runs started with `-a`: nobody follows them; their results wait for `fetch`.
pub const ANNOTATION_ASYNC: &str = "kube-eagle.io/async";
pub const ANNOTATION_FREQUENCY: &str = "kube-eagle.io/frequency-hz";
/// The CLI version that created the run.
pub const ANNOTATION_CLI_VERSION: &str = "kube-eagle.io/cli-version";

/// On the objects `init` makes: which locked namespace they serve, so that two installations
/// (`--eagle-namespace`) keep apart and `uninstall` removes one.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// How long finished Jobs of a run started with `-a` keep their results.
pub const ASYNC_TTL: Duration = Duration::from_secs(24 * 3600);
/// ... and those of a synchronous run, which deletes them itself: a backstop.
pub const SYNC_TTL: Duration = Duration::from_secs(300);

fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

fn runs_selector() -> String {
    format!("{},{RUN_LABEL}", managed_selector())
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

/// How to reach the cluster and the locked namespace, for the commands that need nothing else.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ConnArgs {
    /// Path to the kubeconfig file [default: $KUBECONFIG, ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,

    /// The locked namespace the profiling Jobs run in.
    #[arg(long, default_value = "kube-eagle", value_name = "NAMESPACE")]
    pub eagle_namespace: String,
}

impl ConnArgs {
    pub fn connection(&self) -> Connection {
        Connection { kubeconfig: self.kubeconfig.clone(), context: self.context.clone() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListOutput {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// `table`, or `json`: every run with its nodes, newest first.
    #[arg(short = 'o', long, value_enum, default_value_t = ListOutput::Table)]
    pub output: ListOutput,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The run id that `profile -a` printed (also in `kubectl eagle list`).
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Output file; the format follows the extension (.svg, .folded/.txt, .json, .pb.gz/.pprof); `-` is stdout.
    #[arg(short = 'o', long, value_name = "FILE", default_value = "flamegraph.svg")]
    pub output: PathBuf,

    /// Output format, overriding the extension.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Hierarchy levels kept above the code frames; `none` merges processes into one code view.
    #[arg(long, value_enum, default_value_t = GroupBy::Process)]
    pub group_by: GroupBy,

    /// Delete the run's Jobs once the profile is written (else their TTL does).
    #[arg(long)]
    pub clean: bool,

    #[command(flatten)]
    pub summary: SummaryArgs,

    #[command(flatten)]
    pub checks: CheckArgs,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Run ids to delete.
    #[arg(value_name = "RUN", required_unless_present = "all", conflicts_with = "all")]
    pub runs: Vec<String>,

    /// Every run (and doctor probe) in the locked namespace, running or not.
    #[arg(long)]
    pub all: bool,

    /// Say what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Say what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `90s`, `30m`, `24h`, `7d`: how long finished Jobs keep their results.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is not a TTL: write it like 30m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{s}` has an unknown unit `{unit}`: use s, m, h or d")),
    };
    if seconds == 0 {
        return Err("the TTL must be longer than 0".into());
    }
    if seconds > 365 * 86_400 {
        return Err(format!("`{s}` is longer than a year: clean runs with `kubectl eagle clean` instead"));
    }
    Ok(Duration::from_secs(seconds))
}

/// The Jobs' `ttlSecondsAfterFinished`.
pub fn ttl_seconds(ttl: Option<Duration>, is_async: bool) -> i32 {
    let ttl = ttl.unwrap_or(if is_async { ASYNC_TTL } else { SYNC_TTL });
    ttl.as_secs().min(i32::MAX as u64) as i32
}

/// A run id, as a label value: what `profile` prints, 8 hex digits.
fn check_run_id(id: &str) -> Result<(), CliError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "`{id}` is not a run id: use the id `profile` printed (8 hex digits, as in `kubectl eagle list`)"
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// What a run's Jobs carry
// ---------------------------------------------------------------------------------------------

/// What a Job records about its run beyond the plan's own annotations.
pub struct Task {
    pub nodes: usize,
    pub is_async: bool,
    pub frequency_hz: u64,
}

impl Task {
    pub fn annotate<'a>(&self, job: &mut Job, placements: impl IntoIterator<Item = (&'a str, &'a Placement)>) {
        let annotations = job.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(ANNOTATION_PLACEMENTS.into(), encode_placements(placements));
        annotations.insert(ANNOTATION_NODES.into(), self.nodes.to_string());
        annotations.insert(ANNOTATION_FREQUENCY.into(), self.frequency_hz.to_string());
        annotations.insert(ANNOTATION_CLI_VERSION.into(), env!("CARGO_PKG_VERSION").into());
        if self.is_async {
            annotations.insert(ANNOTATION_ASYNC.into(), "true".into());
        }
    }
}

type PlacementTree = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>>;

pub fn encode_placements<'a>(placements: impl IntoIterator<Item = (&'a str, &'a Placement)>) -> String {
    let mut tree = PlacementTree::new();
    for (id, p) in placements {
        tree.entry(p.namespace.clone())
            .or_default()
            .entry(p.workload.clone())
            .or_default()
            .entry(p.pod.clone())
            .or_default()
            .insert(p.container.clone(), id.to_owned());
    }
    serde_json::to_string(&tree).expect("maps of strings serialize")
}

pub fn decode_placements(text: &str) -> Result<Placements, String> {
    let tree: PlacementTree = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut placements = Placements::new();
    for (namespace, workloads) in tree {
        for (workload, pods) in workloads {
            for (pod, containers) in pods {
                for (container, id) in containers {
                    let placement = Placement {
                        namespace: namespace.clone(),
                        workload: workload.clone(),
                        pod: pod.clone(),
                        container,
                    };
                    placements.insert(id, placement);
                }
            }
        }
    }
    Ok(placements)
}

fn annotation<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn run_of(job: &Job) -> Option<&str> {
    job.metadata.labels.as_ref()?.get(RUN_LABEL).map(String::as_str)
}

fn name_of(job: &Job) -> &str {
    job.metadata.name.as_deref().unwrap_or_default()
}

/// How a Job ended: `Some(Ok(()))` complete, `Some(Err(why))` failed, `None` still active.
fn job_end(job: &Job) -> Option<Result<(), String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().filter(|c| c.status == "True").find_map(|c| match c.type_.as_str() {
        "Complete" => Some(Ok(())),
        "Failed" => Some(Err(match c.reason.as_deref() {
            Some("DeadlineExceeded") => "deadline exceeded: the agent ran past its window plus 2 minutes".to_owned(),
            Some(reason) => format!("{reason}: {}", c.message.as_deref().unwrap_or_default())
                .trim_end_matches([' ', ':'])
                .to_owned(),
            None => c.message.clone().unwrap_or_else(|| "the Job failed".into()),
        })),
        _ => None,
    })
}

/// When a Job ended, for its TTL.
fn job_end_time(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    if let Some(t) = &status.completion_time {
        return Some(t.0);
    }
    status
        .conditions
        .as_ref()?
        .iter()
        .filter(|c| c.status == "True" && c.type_ == "Failed")
        .find_map(|c| Some(c.last_transition_time.as_ref()?.0))
}

fn is_active(job: &Job) -> bool {
    job_end(job).is_none() && job.metadata.deletion_timestamp.is_none()
}

fn created(job: &Job) -> Option<Timestamp> {
    job.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
fn ago(now: Timestamp, then: Timestamp) -> String {
    format!("{} ago", span((now.as_second() - then.as_second()).max(0)))
}

fn span(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

// ---------------------------------------------------------------------------------------------
// The state of runs, from their Jobs and pods (pure)
// ---------------------------------------------------------------------------------------------

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
    fn label(self) -> &'static str {
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

/// The pod of a Job: by owner reference, else by the `job-name` label; the newest if several.
fn pod_of<'a>(job: &Job, pods: &'a [Pod]) -> Option<&'a Pod> {
    let uid = job.metadata.uid.as_deref();
    let name = name_of(job);
    pods.iter()
        .filter(|p| {
            let owned = uid.is_some()
                && p.metadata.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == uid && o.kind == "Job");
            owned || p.metadata.labels.as_ref().and_then(|l| l.get("job-name")).map(String::as_str) == Some(name)
        })
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Why a profiling pod failed, from its status: the agent's own `eagle-agent: error:` line
/// (the termination message falls back to the log's end), else the exit code.
fn pod_failure(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref()?.terminated.clone());
    if let Some(t) = terminated {
        let said = t
            .message
            .as_deref()
            .and_then(|m| m.lines().rev().find_map(|l| l.strip_prefix("eagle-agent: error: ")).map(str::to_owned));
        return said
            .unwrap_or_else(|| format!("agent exited with code {} ({})", t.exit_code, t.reason.unwrap_or_default()));
    }
    match status.and_then(|s| s.reason.clone()) {
        Some(reason) => format!("{reason}: {}", status.and_then(|s| s.message.clone()).unwrap_or_default()),
        None => "the profiling pod failed".into(),
    }
}

/// One node's state from its Job, its pod (if any) and the samples its trailer announced.
pub fn node_view(job: &Job, pod: Option<&Pod>, samples: Option<u64>) -> NodeView {
    let node = annotation(job, ANNOTATION_NODE).unwrap_or("?").to_owned();
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
    let status = pod.status.clone().unwrap_or_default();
    match status.phase.as_deref() {
        Some("Succeeded") => return view(NodeState::Done, None),
        Some("Failed") => return view(NodeState::Failed, Some(pod_failure(pod))),
        _ => {}
    }
    if let Some(Err(why)) = end {
        return view(NodeState::Failed, Some(why));
    }
    let waiting = status.container_statuses.iter().flatten().find_map(|s| s.state.as_ref()?.waiting.clone());
    if let Some(w) = &waiting {
        let reason = w.reason.clone().unwrap_or_default();
        if run::FATAL_WAITING.contains(&reason.as_str()) {
            let why = format!("{reason}: {}", w.message.clone().unwrap_or_default());
            return view(NodeState::Failed, Some(why.trim_end_matches([' ', ':']).to_owned()));
        }
    }
    if status.phase.as_deref() == Some("Running") {
        let stopping = pod.metadata.deletion_timestamp.is_some();
        return view(NodeState::Running, stopping.then(|| "stopping".to_owned()));
    }
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"));
    if let Some(c) = unschedulable {
        return view(NodeState::Pending, Some(format!("unschedulable: {}", c.message.clone().unwrap_or_default())));
    }
    view(NodeState::Pending, waiting.and_then(|w| w.reason))
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
            let announced = jobs.iter().filter_map(|j| annotation(j, ANNOTATION_NODES)?.parse::<usize>().ok()).max();
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
                target: annotation(first, ANNOTATION_TARGET).unwrap_or("?").to_owned(),
                duration_ms: annotation(first, ANNOTATION_DURATION).and_then(|d| d.parse().ok()),
                frequency_hz: annotation(first, ANNOTATION_FREQUENCY).and_then(|d| d.parse().ok()),
                is_async: annotation(first, ANNOTATION_ASYNC) == Some("true"),
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

/// The runs busy on each of `nodes` when a new run would exceed `limit` there.
pub fn conflicts<'a>(jobs: &'a [Job], nodes: &[&str], limit: usize) -> Vec<(String, Vec<&'a Job>)> {
    nodes
        .iter()
        .filter_map(|node| {
            let busy: Vec<&Job> = jobs
                .iter()
                .filter(|j| run_of(j).is_some() && is_active(j) && annotation(j, ANNOTATION_NODE) == Some(*node))
                .collect();
            (busy.len() >= limit).then(|| ((*node).to_owned(), busy))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

async fn list_jobs(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Job>, CliError> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(api_error(e, "profiling Jobs", namespace)),
    }
}

async fn list_pods(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Pod>, CliError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(api_error(e, "profiling pods", namespace)),
    }
}

/// Before a run creates its Jobs: refuses it when one of its nodes already runs `limit`
/// profiling runs, naming them. One list call. A user who may not list Jobs is warned and
/// let through: the check protects nodes, it is not access control.
pub async fn refuse_conflicts(client: &Client, namespace: &str, nodes: &[&str], limit: u32) -> Result<(), CliError> {
    let jobs = match list_jobs(client, namespace, &runs_selector()).await {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("warning: cannot check the nodes for other profiling runs ({e}); going ahead");
            return Ok(());
        }
    };
    let busy = conflicts(&jobs, nodes, limit as usize);
    if busy.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now();
    let mut ids = BTreeSet::new();
    let what: Vec<String> = busy
        .iter()
        .map(|(node, jobs)| {
            let runs: Vec<String> = jobs
                .iter()
                .map(|j| {
                    let id = run_of(j).unwrap_or_default();
                    ids.insert(id.to_owned());
                    let started = created(j).map(|t| format!(", started {}", ago(now, t))).unwrap_or_default();
                    format!("run {id} ({}{started})", annotation(j, ANNOTATION_TARGET).unwrap_or("?"))
                })
                .collect();
            format!("node {node} already runs {}", runs.join(", "))
        })
        .collect();
    let first = ids.iter().next().cloned().unwrap_or_default();
    Err(CliError::Busy(format!(
        "{}, and --max-per-node is {limit}: wait for it (`kubectl eagle fetch {first}`), stop it (`kubectl eagle clean {first}`), or run anyway with --force",
        what.join("; ")
    )))
}

/// `profile ... -a`: plans and creates the Jobs like a synchronous run, prints the run id
/// (stdout) and how to fetch it (stderr), and returns.
pub fn profile_async(
    args: &ProfileArgs,
    targets: &[(ClusterKind, String)],
    is_cluster: bool,
) -> Result<Exit, CliError> {
    if !is_cluster {
        return Err(CliError::Usage(
            "-a/--async runs in the cluster: name cluster targets (deployment/NAME, ...); a local profile (pid/N, -- COMMAND) cannot run detached".into(),
        ));
    }
    let c = &args.checks;
    let rules = !c.max.is_empty()
        || !c.max_self.is_empty()
        || !c.max_regression.is_empty()
        || !c.max_self_regression.is_empty()
        || c.baseline.is_some();
    if rules || args.summary.summary.is_some() {
        return Err(CliError::Usage(
            "--summary and the check rules need the profile, which -a does not wait for: pass them to `kubectl eagle fetch`".into(),
        ));
    }
    if args.cluster.dry_run {
        return profile::dry_run(args, targets);
    }
    let namespace = &args.cluster.eagle_namespace;
    profile::runtime()?.block_on(async {
        let p = profile::prepare(args, targets).await?;
        ensure_namespace(&p.client, namespace).await?;
        if !args.cluster.force {
            let nodes: Vec<&str> = p.jobs.iter().map(|(node, _, _)| node.as_str()).collect();
            refuse_conflicts(&p.client, namespace, &nodes, args.cluster.max_per_node).await?;
        }
        let job_api: Api<Job> = Api::namespaced(p.client.clone(), namespace);
        let mut nodes = run::node_runs(&p.jobs, |_| indicatif::ProgressBar::hidden());
        let create_error = run::create(&job_api, namespace, &p.jobs, &mut nodes).await;
        let failed: Vec<&NodeRun> = nodes.iter().filter(|n| n.outcome.is_some()).collect();
        if failed.len() == nodes.len() {
            return Err(create_error.expect("every node failed at creation"));
        }
        for n in &failed {
            if let Some(NodeOutcome::Failed(why)) = &n.outcome {
                eprintln!("node {}: no Job: {why}", n.node);
            }
        }
        let window = args.duration.unwrap_or(super::DEFAULT_WINDOW);
        let ttl = Duration::from_secs(ttl_seconds(args.cluster.ttl, true) as u64);
        println!("{}", p.run_id);
        eprintln!(
            "started run {}: {} ({} containers on {} nodes) for {} at {} Hz; its results are kept {} after it ends",
            p.run_id,
            p.what,
            p.resolution.running.len(),
            nodes.len() - failed.len(),
            human(window),
            args.frequency,
            span(ttl.as_secs() as i64)
        );
        eprintln!("fetch it with:\n  {}", fetch_command(args, &p.run_id));
        Ok(if failed.is_empty() { Exit::Ok } else { Exit::Partial })
    })
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The exact command that fetches `run_id` as `args` would have written it.
fn fetch_command(args: &ProfileArgs, run_id: &str) -> String {
    let mut cmd = vec!["kubectl".to_owned(), "eagle".into(), "fetch".into(), run_id.to_owned()];
    cmd.extend(["-o".into(), quote(&args.output.to_string_lossy())]);
    if let Some(f) = args.format {
        cmd.extend(["--format".into(), f.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()]);
    }
    if args.group_by != GroupBy::Process {
        cmd.extend([
            "--group-by".into(),
            args.group_by.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default(),
        ]);
    }
    if let Some(k) = &args.cluster.kubeconfig {
        cmd.extend(["--kubeconfig".into(), quote(&k.to_string_lossy())]);
    }
    if let Some(c) = &args.cluster.context {
        cmd.extend(["--context".into(), quote(c)]);
    }
    if args.cluster.eagle_namespace != "kube-eagle" {
        cmd.extend(["--eagle-namespace".into(), quote(&args.cluster.eagle_namespace)]);
    }
    cmd.join(" ")
}

/// `kubectl eagle list`.
pub fn list(args: &ListArgs) -> Result<Exit, CliError> {
    let namespace = &args.conn.eagle_namespace;
    let views = profile::runtime()?.block_on(async {
        let (client, _) = connect(&args.conn.connection()).await?;
        let selector = runs_selector();
        let (jobs, pods) = futures::future::try_join(
            list_jobs(&client, namespace, &selector),
            list_pods(&client, namespace, &selector),
        )
        .await?;
        let samples = samples_of_finished(&client, namespace, &pods).await;
        Ok::<_, CliError>(runs(&jobs, &pods, &samples))
    })?;
    match args.output {
        ListOutput::Json => {
            println!("{}", serde_json::to_string_pretty(&views).expect("runs serialize"));
        }
        ListOutput::Table if views.is_empty() => {
            eprintln!("no profiling runs in namespace {namespace}");
        }
        ListOutput::Table => print!("{}", table(&views, Timestamp::now())),
    }
    Ok(Exit::Ok)
}

/// The sample count each succeeded agent announced in its trailer: the tail of its log, a few
/// hundred bytes per finished node, read concurrently.
async fn samples_of_finished(client: &Client, namespace: &str, pods: &[Pod]) -> HashMap<String, u64> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let finished: Vec<String> = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    futures::stream::iter(finished)
        .map(|name| {
            let api = api.clone();
            async move {
                let params = LogParams {
                    container: Some(super::plan::AGENT_CONTAINER.into()),
                    tail_lines: Some(5),
                    ..Default::default()
                };
                let tail = api.logs(&name, &params).await.ok()?;
                Some((name, eagle_proto::trailer_in_tail(&tail)?.samples))
            }
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

fn table(views: &[RunView], now: Timestamp) -> String {
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
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `kubectl eagle fetch RUN -o FILE`.
pub fn fetch(args: &FetchArgs) -> Result<Exit, CliError> {
    check_run_id(&args.run)?;
    let gate = Gate::plan(&args.summary, &args.checks)?;
    let destination = gate.watch(Destination::plan(Some(&args.output), args.format)?);
    let exit = profile::runtime()?.block_on(fetch_run(args, &destination))?;
    if destination.run().partial.is_none() {
        destination.record_run(RunInfo { partial: Some(exit == Exit::Partial), ..Default::default() });
    }
    gate.after_write(&destination, exit)
}

async fn fetch_run(args: &FetchArgs, destination: &Destination) -> Result<Exit, CliError> {
    let namespace = &args.conn.eagle_namespace;
    let id = &args.run;
    let (client, _) = connect(&args.conn.connection()).await?;
    let mut jobs = list_jobs(&client, namespace, &format!("{RUN_LABEL}={id}")).await?;
    if jobs.is_empty() {
        return Err(CliError::NotFound(format!(
            "no run {id} in namespace {namespace}: it never existed, was cleaned, or its results expired (runs started with -a keep them for --ttl, 24h by default); `kubectl eagle list` shows the runs there are"
        )));
    }
    jobs.sort_by_key(|j| (name_of(j).len(), name_of(j).to_owned()));
    let first = &jobs[0];
    let what = annotation(first, ANNOTATION_TARGET).unwrap_or(id).to_owned();
    let window = annotation(first, ANNOTATION_DURATION)
        .and_then(|d| d.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(super::DEFAULT_WINDOW);
    let total =
        jobs.iter().filter_map(|j| annotation(j, ANNOTATION_NODES)?.parse::<usize>().ok()).max().unwrap_or(jobs.len());
    let mut placements = Placements::new();
    let mut unplaced = 0;
    for job in &jobs {
        match annotation(job, ANNOTATION_PLACEMENTS).map(decode_placements) {
            Some(Ok(p)) => placements.extend(p),
            _ => unplaced += 1,
        }
    }
    if unplaced > 0 {
        eprintln!(
            "warning: {unplaced} of the run's Jobs do not say where their containers run (made by an older kubectl-eagle?): their stacks are labelled by container id"
        );
    }
    let now = Timestamp::now();
    let started = jobs.iter().filter_map(created).min();
    let active = jobs.iter().filter(|j| is_active(j)).count();
    let frequency: Option<u64> = annotation(first, ANNOTATION_FREQUENCY).and_then(|f| f.parse().ok());
    destination.record_run(RunInfo { duration: Some(window), frequency_hz: frequency, ..Default::default() });
    let since = started.map(|t| format!(", started {}", ago(now, t))).unwrap_or_default();
    if active > 0 {
        eprintln!(
            "run {id} ({what}, {} window{since}) is still running on {active} of {} nodes: waiting for it (Ctrl-C stops waiting; the run goes on)",
            human(window),
            jobs.len()
        );
    } else {
        eprintln!("fetching run {id} ({what}, {} window{since}) from {} nodes", human(window), jobs.len());
    }

    let bars = run::Bars::new(window);
    let mut nodes: Vec<NodeRun> = jobs
        .iter()
        .map(|j| {
            let node = annotation(j, ANNOTATION_NODE).unwrap_or("?").to_owned();
            let containers =
                annotation(j, ANNOTATION_PLACEMENTS).and_then(|p| decode_placements(p).ok()).map_or(0, |p| p.len());
            let bar = bars.bar(&node, if is_active(j) { "waiting" } else { "reading the log" });
            let mut n = NodeRun::new(node, name_of(j).to_owned(), containers, bar);
            n.job_finished = !is_active(j);
            n
        })
        .collect();
    for i in jobs.len()..total {
        let mut n =
            NodeRun::new(format!("(Job {} of {total})", i + 1), String::new(), 0, bars.bar("(missing Job)", ""));
        n.finish(NodeOutcome::Failed("its Job is gone: never created, or deleted".into()));
        nodes.push(n);
    }
    // Until the latest the run can still deliver: its start, the window and the deadline margin.
    let wait = match started {
        Some(t) => {
            let elapsed = Duration::from_secs((now.as_second() - t.as_second()).max(0) as u64);
            run::give_up_after(window).saturating_sub(elapsed).max(Duration::from_secs(30))
        }
        None => run::give_up_after(window),
    };
    let fetching = Instant::now();
    let outcome = run::attach(&client, namespace, id, nodes, Instant::now() + wait).await?;
    let expired = outcome
        .nodes
        .iter()
        .filter(|n| matches!(&n.outcome, Some(NodeOutcome::Failed(w)) if w == run::EXPIRED))
        .count();
    if expired == outcome.nodes.len() {
        return Err(CliError::NotFound(format!(
            "the results of run {id} expired: its Jobs remain but their pods (and logs) are gone; profile again, and fetch sooner or keep results longer (-a --ttl)"
        )));
    }
    let finished = Finished {
        what: &what,
        window,
        elapsed: fetching.elapsed(),
        group_by: args.group_by,
        placements: &placements,
        skipped: &[],
    };
    let exit = profile::render(&outcome, &finished, destination)?;
    if args.clean {
        let deleted = delete_jobs(&client, namespace, &jobs).await?;
        eprintln!("cleaned run {id}: deleted {deleted} Job(s)");
    }
    Ok(exit)
}

/// Deletes Jobs (their pods go with them: propagation Background); gone ones count as done.
async fn delete_jobs(client: &Client, namespace: &str, jobs: &[Job]) -> Result<usize, CliError> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams::background();
    let results = futures::future::join_all(jobs.iter().map(|j| api.delete(name_of(j), &params))).await;
    let mut deleted = 0;
    for (job, result) in jobs.iter().zip(results) {
        match result {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_error(e, &format!("job {}", name_of(job)), namespace)),
        }
    }
    Ok(deleted)
}

/// Pods with the project's labels that no Job owns any more (it was deleted with propagation
/// Orphan, by hand). A pod whose Job was just deleted still names it as its owner: the garbage
/// collector takes it.
fn orphans<'a>(pods: &'a [Pod], jobs: &[Job]) -> Vec<&'a Pod> {
    let names: BTreeSet<&str> = jobs.iter().map(name_of).collect();
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.owner_references.iter().flatten().all(|o| o.kind != "Job"))
        .filter(|p| {
            let job = p.metadata.labels.as_ref().and_then(|l| l.get("job-name")).map(String::as_str);
            job.is_none_or(|j| !names.contains(j))
        })
        .collect()
}

async fn delete_pods(client: &Client, pods: &[&Pod]) -> Result<usize, CliError> {
    let mut deleted = 0;
    for pod in pods {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_error(e, &format!("pod {name}"), &ns)),
        }
    }
    Ok(deleted)
}

/// `kubectl eagle clean RUN... | --all`.
pub fn clean(args: &CleanArgs) -> Result<Exit, CliError> {
    for id in &args.runs {
        check_run_id(id)?;
    }
    let namespace = &args.conn.eagle_namespace;
    profile::runtime()?.block_on(async {
        let (client, _) = connect(&args.conn.connection()).await?;
        let selector = if args.all {
            managed_selector()
        } else {
            format!("{},{RUN_LABEL} in ({})", managed_selector(), args.runs.join(","))
        };
        let (jobs, pods) = futures::future::try_join(
            list_jobs(&client, namespace, &selector),
            list_pods(&client, namespace, &selector),
        )
        .await?;
        let orphans = orphans(&pods, &jobs);
        let views = runs(&jobs, &pods, &HashMap::new());
        let verb = if args.dry_run { "would delete" } else { "deleted" };
        for v in &views {
            println!("{verb} run {} ({}, {}, {} Job(s))", v.id, v.target, v.status.label(), v.node_views.len());
        }
        let probes = jobs.iter().filter(|j| run_of(j).is_none()).count();
        if probes > 0 {
            println!("{verb} {probes} other Job(s) of kube-eagle (doctor probes)");
        }
        if !orphans.is_empty() {
            println!("{verb} {} pod(s) whose Job is gone", orphans.len());
        }
        let found: BTreeSet<&str> = views.iter().map(|v| v.id.as_str()).collect();
        for id in args.runs.iter().filter(|id| !found.contains(id.as_str())) {
            println!("run {id}: nothing to delete (never existed, already cleaned, or expired)");
        }
        if args.all && jobs.is_empty() && orphans.is_empty() {
            println!("nothing to delete in namespace {namespace}");
        }
        if !args.dry_run {
            delete_jobs(&client, namespace, &jobs).await?;
            delete_pods(&client, &orphans).await?;
        }
        Ok(Exit::Ok)
    })
}

/// `kubectl eagle uninstall`: everything kube-eagle made for the locked namespace: its Jobs and
/// pods there, the RBAC of `init` for it (label `app.kubernetes.io/instance=NAMESPACE`, in any
/// namespace), and the namespace itself when kube-eagle created it. Only objects with the
/// project's label are touched; what is gone already is not an error.
pub fn uninstall(args: &UninstallArgs) -> Result<Exit, CliError> {
    let namespace = &args.conn.eagle_namespace;
    profile::runtime()?.block_on(async {
        let (client, _) = connect(&args.conn.connection()).await?;
        let mut problems: Vec<CliError> = Vec::new();
        let mut removed = 0usize;
        let managed = managed_selector();
        let instance = format!("{managed},{INSTANCE_LABEL}={namespace}");
        // Jobs first (their pods go with them), then pods left without a Job, the RBAC, and last
        // the namespace, which takes whatever is still inside.
        let sweeps = [
            (ApiResource::erase::<Job>(&()), "job", Some(namespace.as_str()), managed.as_str()),
            (ApiResource::erase::<Pod>(&()), "pod", Some(namespace.as_str()), managed.as_str()),
            (ApiResource::erase::<ClusterRoleBinding>(&()), "clusterrolebinding", None, instance.as_str()),
            (ApiResource::erase::<ClusterRole>(&()), "clusterrole", None, instance.as_str()),
            (ApiResource::erase::<RoleBinding>(&()), "rolebinding", None, instance.as_str()),
            (ApiResource::erase::<Role>(&()), "role", None, instance.as_str()),
        ];
        for (resource, what, scope, selector) in &sweeps {
            match sweep(&client, resource, what, *scope, selector, args.dry_run).await {
                Ok(n) => removed += n,
                Err(e) => problems.push(e),
            }
        }
        let ns_api: Api<Namespace> = Api::all(client.clone());
        match ns_api.get_opt(namespace).await {
            Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_some() => {}
            Ok(Some(ns)) => {
                let ours = ns.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str)
                    == Some(MANAGED_BY.1);
                if !ours {
                    eprintln!(
                        "kept namespace {namespace}: kube-eagle did not create it (no {}={} label)",
                        MANAGED_BY.0, MANAGED_BY.1
                    );
                } else if args.dry_run {
                    println!("would delete namespace {namespace}");
                    removed += 1;
                } else {
                    match ns_api.delete(namespace, &DeleteParams::background()).await {
                        Ok(_) => {
                            println!("deleted namespace {namespace}");
                            removed += 1;
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => problems.push(api_error(e, &format!("namespace {namespace}"), namespace)),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => problems.push(api_error(e, &format!("namespace {namespace}"), namespace)),
        }
        if removed == 0 && problems.is_empty() {
            println!("nothing of kube-eagle is left for namespace {namespace}");
        }
        match problems.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(Exit::Ok),
        }
    })
}

/// Deletes every object of one kind that `selector` selects, in `scope` (a namespace) or
/// everywhere; one list call, one delete per object. Objects already being deleted are left to
/// finish.
async fn sweep(
    client: &Client,
    resource: &ApiResource,
    what: &str,
    scope: Option<&str>,
    selector: &str,
    dry_run: bool,
) -> Result<usize, CliError> {
    let api: Api<DynamicObject> = match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let list = match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => list,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(0),
        Err(e) => return Err(api_error(e, &format!("{what}s"), scope.unwrap_or("(all namespaces)"))),
    };
    let mut removed = 0;
    for item in list.items.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
        let name = item.metadata.name.clone().unwrap_or_default();
        let ns = item.metadata.namespace.clone();
        let shown = match &ns {
            Some(ns) => format!("{what} {ns}/{name}"),
            None => format!("{what} {name}"),
        };
        if dry_run {
            println!("would delete {shown}");
            removed += 1;
            continue;
        }
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
            None => Api::all_with(client.clone(), resource),
        };
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {
                println!("deleted {shown}");
                removed += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_error(e, &shown, ns.as_deref().unwrap_or("(cluster)"))),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn placement(ns: &str, workload: &str, pod: &str, container: &str) -> Placement {
        Placement { namespace: ns.into(), workload: workload.into(), pod: pod.into(), container: container.into() }
    }

    #[test]
    fn placements_round_trip_compactly() {
        let a = placement("shop", "deployment/api", "api-1", "app");
        let b = placement("shop", "deployment/api", "api-1", "sidecar");
        let c = placement("shop", "pod/solo", "solo", "app");
        let text = encode_placements([("aaa", &a), ("bbb", &b), ("ccc", &c)]);
        assert_eq!(
            text,
            r#"{"shop":{"deployment/api":{"api-1":{"app":"aaa","sidecar":"bbb"}},"pod/solo":{"solo":{"app":"ccc"}}}}"#
        );
        let back = decode_placements(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back["bbb"], b);
        assert_eq!(back["ccc"], c);
        assert!(decode_placements("{not json").is_err());
    }

    #[test]
    fn ttls_as_users_write_them() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        for bad in ["0", "1w", "h", "-1h", "400d", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        assert_eq!(ttl_seconds(None, true), 86_400);
        assert_eq!(ttl_seconds(None, false), 300);
        assert_eq!(ttl_seconds(Some(Duration::from_secs(60)), true), 60);
    }

    fn job(id: &str, index: usize, node: &str, created: &str, condition: Option<(&str, &str)>) -> Job {
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

    #[test]
    fn conflicts_count_active_runs_per_node() {
        let busy = job("aaaa0001", 0, "node-a", "2026-11-22T10:00:00Z", None);
        let other = job("bbbb0002", 0, "node-b", "2026-11-22T10:00:00Z", None);
        let finished = job("cccc0003", 0, "node-a", "2026-11-22T10:00:00Z", Some(("Complete", "")));
        let jobs = [busy, other, finished];
        let c = conflicts(&jobs, &["node-a", "node-c"], 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "node-a");
        assert_eq!(run_of(c[0].1[0]), Some("aaaa0001"));
        assert!(conflicts(&jobs, &["node-a"], 2).is_empty(), "two may share a node under --max-per-node 2");
    }

    #[test]
    fn run_ids_are_label_values() {
        assert!(check_run_id("9e2017d3").is_ok());
        for bad in ["", "-x", "ABC", "a b", "a,b", "x)"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }
}
