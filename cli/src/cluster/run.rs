//! Running the planned Jobs: create them, watch their pods (one watch for the whole run),
//! follow each agent's log once its pod runs, decode and verify each node's stream, and delete
//! every Job the run created, on success, error, Ctrl-C and SIGTERM alike.
//!
//! The same watch-and-follow loop serves `fetch` ([`attach`]): the Jobs of an earlier run are
//! read as they are, whether their pods still run (followed) or have finished (read in one
//! piece), and a finished Job whose pod is gone is reported as expired.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eagle_proto::{Decoder, Event, Limits, NodeResult};
use futures::{AsyncBufReadExt, AsyncReadExt, FutureExt, StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};

use super::api::{api_error, throttled, transient, with_retries};
use super::plan::AGENT_CONTAINER;
use super::pod_state::{self, Phase, PodState};
use super::store::run_selector;
use crate::error::{CliError, Exit};
use crate::verbose::vlog;

/// How long a pod may stay unschedulable before its node is given up.
const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(20);
/// After Ctrl-C: how long agents get to complete their streams before we stop waiting: the
/// pods' own grace period, and time to read what they wrote.
const INTERRUPT_GRACE: Duration = Duration::from_secs(super::plan::TERMINATION_GRACE_SECONDS as u64 + 15);
/// How long a Job may be without a pod before its events are read for the reason.
const NO_POD_YET: Duration = Duration::from_secs(5);
/// After Ctrl-C: how long a node whose agent was not seen running may still show it running.
const NOT_STARTED_GRACE: Duration = Duration::from_secs(2);
/// How long after its window should have ended a node that went silent (its log stream cut
/// while the pod still runs, its kubelet not answering, its pod marked not ready by the node
/// controller, no line for [`SILENT_AFTER`]) is given up: a kubelet that comes back in that
/// time still delivers.
const SILENT_NODE_GRACE: Duration = Duration::from_secs(10);
/// How long after a follow ended without the agent's trailer, its pod still running, the
/// kubelet is asked (one short log read) whether it still answers: a follow cut by the network
/// is followed by the pod's end within that time, and costs no request.
const PROBE_AFTER: Duration = Duration::from_secs(3);
/// An agent writes progress every second of its window: a followed log quiet for this long,
/// its last line from before the window's end, is silent.
const SILENT_AFTER: Duration = Duration::from_secs(10);
/// How long the API server may give no answer at all (refused or broken connections, no API
/// status) before one request asks whether it is gone; if that fails too, the run stops
/// waiting for nodes it can no longer hear from instead of waiting out their window. Long
/// enough for the watch's own retry and a restarting API server behind a load balancer.
const API_SILENT_GRACE: Duration = Duration::from_secs(3);
/// A pod deleted before its agent's stream was read (`clean`, by hand), not by this run.
const POD_DELETED: &str = "the profiling pod was deleted before its result was read";
/// Why a node of a fetched run has no result: its Job finished and its pod is gone.
pub const EXPIRED: &str = "result expired: the profiling pod is gone (its Job's TTL ran out, or it was deleted)";

/// How one node's profile ended.
#[derive(Debug)]
pub enum NodeOutcome {
    Done(Box<NodeResult>),
    Failed(String),
}

pub struct NodeRun {
    pub node: String,
    pub job: String,
    pub containers: usize,
    pub outcome: Option<NodeOutcome>,
    /// The uid of the Job this run created: only a Job with this uid is stopped or deleted
    /// (a create refused with 409 leaves another run's Job of that name alone).
    pub uid: Option<String>,
    /// The Job had finished before the watch started (`fetch`): no pod then means no result.
    pub job_finished: bool,
    pod: Option<String>,
    following: bool,
    /// A log is followed once; after that the finished log is re-read instead.
    followed: bool,
    /// Its Job was told to end (Ctrl-C, SIGTERM, SIGHUP).
    stop_sent: bool,
    /// Its result went to the run's `on_result` (see [`execute`]).
    handed_over: bool,
    unschedulable_since: Option<Instant>,
    /// The agent's window, when this run set it (`fetch` does not know it): a silent node is
    /// given up [`SILENT_NODE_GRACE`] after it.
    pub window: Option<Duration>,
    /// When its pod was first seen running: the agent's window starts about then.
    running_since: Option<Instant>,
    /// When the last line of its log came.
    last_line: Option<Instant>,
    /// When its follow ended without the trailer while its pod still ran; `None` again once
    /// its kubelet was asked ([`PROBE_AFTER`]).
    stalled_since: Option<Instant>,
    /// Since when, and why, nothing is heard from the node (see [`SILENT_NODE_GRACE`]).
    silent: Option<(Instant, String)>,
    decoder: Decoder,
    bar: ProgressBar,
}

impl NodeRun {
    pub fn new(node: String, job: String, containers: usize, bar: ProgressBar) -> Self {
        NodeRun {
            node,
            job,
            containers,
            outcome: None,
            uid: None,
            job_finished: false,
            pod: None,
            following: false,
            followed: false,
            stop_sent: false,
            handed_over: false,
            unschedulable_since: None,
            window: None,
            running_since: None,
            last_line: None,
            silent: None,
            stalled_since: None,
            decoder: Decoder::new(),
            bar,
        }
    }

    /// Marks the node silent (the first reason stays).
    fn went_silent(&mut self, why: String) {
        if self.silent.is_none() && self.outcome.is_none() {
            vlog!(2, "node {}: silent: {why}", self.node);
            self.bar.set_message(format!("no word from the node: {why}"));
            self.silent = Some((Instant::now(), why));
        }
    }

    /// A silent node whose window (and a grace) has passed: the reason to give it up.
    fn silent_too_long(&self, now: Instant) -> Option<String> {
        let (since, why) = self.silent.as_ref()?;
        let window_end = self.running_since? + self.window?;
        (now > window_end.max(*since) + SILENT_NODE_GRACE).then(|| {
            format!(
                "the node went silent during the window ({why}): its kubelet is down or unreachable (`kubectl get node {}`)",
                self.node
            )
        })
    }

    pub fn finish(&mut self, outcome: NodeOutcome) {
        if self.outcome.is_some() {
            return;
        }
        match &outcome {
            NodeOutcome::Done(r) => vlog!(2, "node {}: done, {} samples", self.node, r.samples()),
            NodeOutcome::Failed(why) => vlog!(2, "node {}: failed: {why}", self.node),
        }
        match &outcome {
            NodeOutcome::Done(r) => self.bar.finish_with_message(format!("done: {} samples", r.samples())),
            NodeOutcome::Failed(why) => self.bar.abandon_with_message(format!("FAILED: {why}")),
        }
        self.outcome = Some(outcome);
    }
}

/// Log lines in flight from all followers to the event loop.
const LOG_QUEUE: usize = 1024;

/// The most of a finished agent's log read in one piece: the largest stream an agent writes
/// (its compressed payload's limit in base64, plus room for header, progress and warnings).
const MAX_LOG_BYTES: i64 = (Limits::DEFAULT.compressed_bytes as i64) * 4 / 3 + (8 << 20);

enum LogMsg {
    Line(usize, String),
    /// A line longer than the stream allows: no agent of ours writes one, so the node's result
    /// cannot be trusted (and its reading stops before it takes the CLI's memory).
    TooLong(usize),
    /// The follow ended (container exited, or the connection broke).
    Ended(usize),
}

pub struct Outcome {
    pub nodes: Vec<NodeRun>,
    pub interrupted: bool,
}

/// One progress bar per node, under one [`MultiProgress`], on a terminal; hidden bars
/// otherwise (a log file or a CI job's output gets no redraws, and no thread ticks for it).
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    window: Duration,
    /// Spins every bar, on a terminal.
    ticker: Option<Ticker>,
}

impl Bars {
    pub fn new(window: Duration) -> Self {
        let style = ProgressStyle::with_template("{spinner} {prefix:20} [{bar:25}] {msg}")
            .expect("valid template")
            .progress_chars("=> ");
        let ticker = std::io::stderr().is_terminal().then(Ticker::start);
        Bars { multi: MultiProgress::new(), style, window, ticker }
    }

    pub fn bar(&self, node: &str, message: &str) -> ProgressBar {
        let Some(ticker) = &self.ticker else {
            return ProgressBar::hidden();
        };
        let bar = self.multi.add(
            ProgressBar::new(self.window.as_millis() as u64)
                .with_style(self.style.clone())
                .with_prefix(node.to_owned()),
        );
        bar.set_message(message.to_owned());
        ticker.bars.lock().unwrap_or_else(|e| e.into_inner()).push(bar.clone());
        bar
    }
}

/// One thread that advances every bar's spinner four times a second, where indicatif's steady
/// tick starts a thread per bar: a thousand threads waking four times a second each at 1,000
/// nodes, a fifth of the CLI's time spent switching between them. Stops when dropped.
struct Ticker {
    bars: Arc<Mutex<Vec<ProgressBar>>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start() -> Self {
        let bars: Arc<Mutex<Vec<ProgressBar>>> = Arc::default();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let ticked = bars.clone();
        let thread = std::thread::Builder::new()
            .name("eagle-progress".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_millis(250)) {
                    for bar in ticked.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                        if !bar.is_finished() {
                            bar.tick();
                        }
                    }
                }
            })
            .ok();
        Ticker { bars, stop: Some(stop), thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The wait for a run's results ends at the latest this long after it started: the window plus
/// the Job's own deadline margin, and a little more.
pub fn give_up_after(window: Duration) -> Duration {
    window + super::plan::DEADLINE_MARGIN + Duration::from_secs(30)
}

/// Creates the Jobs, waits for every node's result, and always deletes the Jobs (unless
/// `keep`). Each node's result goes to `on_result` as soon as it is read and verified, while
/// the other nodes are still read: the caller may take what it needs out of it (a profile
/// merges and drops its stacks), so a run of many nodes never holds all their stacks at once.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    client: &Client,
    namespace: &str,
    run_id: &str,
    jobs: Vec<(String, usize, Job)>,
    window: Duration,
    keep: bool,
    limit: usize,
    on_result: &mut dyn FnMut(&mut NodeResult),
) -> Result<Outcome, CliError> {
    let job_api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let bars = Bars::new(window);
    let mut nodes = node_runs(&jobs, |node| bars.bar(node, "creating Job"));
    for n in &mut nodes {
        n.window = Some(window);
    }

    // Caught from before the first Job exists: from here on Ctrl-C, SIGTERM and SIGHUP must
    // not kill the process, or the Jobs it created would be left running.
    let mut signals = Signals::catch();
    let create_error = create(&job_api, namespace, &jobs, &mut nodes, limit).await;
    let outcome = if nodes.iter().all(|n| n.outcome.is_some()) {
        Err(create_error.expect("every node failed at creation"))
    } else {
        let give_up = Instant::now() + give_up_after(window);
        // A panic on the way still deletes the Jobs: caught here, re-raised after the cleanup.
        let followed =
            AssertUnwindSafe(follow(client, namespace, run_id, &mut nodes, give_up, &mut signals, limit, on_result))
                .catch_unwind()
                .await;
        match followed {
            Ok(outcome) => outcome,
            Err(panic) => {
                if !keep {
                    cleanup(&job_api, &nodes, limit, run_id, &mut signals).await;
                }
                std::panic::resume_unwind(panic);
            }
        }
    };
    if !keep {
        cleanup(&job_api, &nodes, limit, run_id, &mut signals).await;
    }
    let interrupted = outcome?;
    Ok(Outcome { nodes, interrupted })
}

/// A node per planned Job, with the progress bar `bar` makes for it.
pub fn node_runs(jobs: &[(String, usize, Job)], bar: impl Fn(&str) -> ProgressBar) -> Vec<NodeRun> {
    jobs.iter()
        .map(|(node, containers, job)| {
            NodeRun::new(node.clone(), job.metadata.name.clone().unwrap_or_default(), *containers, bar(node))
        })
        .collect()
}

/// Creates the Jobs concurrently. A node whose Job was refused is finished as failed; the
/// first refusal is returned, for when every node was refused.
pub async fn create(
    job_api: &Api<Job>,
    namespace: &str,
    jobs: &[(String, usize, Job)],
    nodes: &mut [NodeRun],
    limit: usize,
) -> Option<CliError> {
    let post = PostParams::default();
    // Retried only when throttled: after a 5xx or a broken connection the Job may exist, and
    // a second create would fail with 409 on this run's own Job.
    let creates = jobs.iter().map(|(_, _, job)| with_retries(throttled, || job_api.create(&post, job)));
    let created: Vec<_> = futures::stream::iter(creates).buffered(limit).collect().await;
    let mut create_error = None;
    let mut ttl_dropped = false;
    for ((n, result), (_, _, posted)) in nodes.iter_mut().zip(created).zip(jobs) {
        if let Ok(job) = &result {
            vlog!(2, "node {}: created Job {}", n.node, n.job);
            n.uid = job.metadata.uid.clone();
            let ttl = |j: &Job| j.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
            ttl_dropped |= ttl(posted).is_some() && ttl(job).is_none();
        }
        if let Err(e) = result {
            let e = match e {
                // All a create can miss is its namespace: ensure_namespace could not tell (it
                // may not read namespaces) and the API says so only here.
                kube::Error::Api(s) if s.code == 404 => CliError::NotFound(format!(
                    "the profiling namespace {namespace} does not exist: have it created (`kubectl eagle init`, or `kubectl create namespace {namespace}`), or name an existing one with --eagle-namespace"
                )),
                e => api_error(e, &format!("job {}", n.job), namespace),
            };
            n.finish(NodeOutcome::Failed(e.to_string()));
            create_error.get_or_insert(e);
        }
    }
    if ttl_dropped {
        // Kubernetes before 1.21 drops the field unless the TTLAfterFinished gate is on.
        eprintln!(
            "warning: the API server dropped the Jobs' ttlSecondsAfterFinished (no TTL controller): a Job this run cannot delete stays until `kubectl eagle clean`"
        );
    }
    create_error
}

/// Reads the results of Jobs that already exist (`fetch`): follows the logs of running agents
/// and reads finished ones in one piece, until every node has its outcome or `give_up` comes.
/// Creates and deletes nothing; Ctrl-C keeps its default (the run goes on without us). Each
/// result goes to `on_result` as in [`execute`].
pub async fn attach(
    client: &Client,
    namespace: &str,
    run_id: &str,
    mut nodes: Vec<NodeRun>,
    give_up: Instant,
    limit: usize,
    on_result: &mut dyn FnMut(&mut NodeResult),
) -> Result<Outcome, CliError> {
    let mut signals = Signals { interrupt: None, terminate: None, hangup: None, interrupts: 0 };
    let interrupted = follow(client, namespace, run_id, &mut nodes, give_up, &mut signals, limit, on_result).await?;
    Ok(Outcome { nodes, interrupted })
}

/// The event loop of a run. Returns whether it was interrupted.
#[allow(clippy::too_many_arguments)]
async fn follow(
    client: &Client,
    namespace: &str,
    run_id: &str,
    nodes: &mut [NodeRun],
    give_up: Instant,
    signals: &mut Signals,
    limit: usize,
    on_result: &mut dyn FnMut(&mut NodeResult),
) -> Result<bool, CliError> {
    // Log follows last as long as their agents: at most `limit` at once; the others wait, and
    // a pod that finished meanwhile is read in one piece.
    let follows = Arc::new(Semaphore::new(limit));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels_from(&run_selector(run_id));
    let mut events = watcher(pods.clone(), config).default_backoff().boxed();
    // Bounded: followers wait while the loop is busy, instead of queueing a whole log each.
    let (log_tx, mut log_rx) = mpsc::channel::<LogMsg>(LOG_QUEUE);
    let by_job: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.job.clone(), i)).collect();
    let mut interrupted_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut events_read: Option<Instant> = None;
    let started = Instant::now();
    // Since when the API server has given no answer at all (the watch could not reconnect).
    let mut unanswered_since: Option<Instant> = None;

    while nodes.iter().any(|n| n.outcome.is_none()) {
        tokio::select! {
            event = events.try_next() => match event {
                Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    unanswered_since = None;
                    let job = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")).cloned().unwrap_or_default();
                    if let Some(&i) = by_job.get(&job) {
                        on_pod(&pods, &mut nodes[i], i, &pod, &log_tx, &follows).await;
                        hand_over(&mut nodes[i], on_result);
                    }
                }
                Ok(Some(watcher::Event::Delete(pod))) => {
                    let job = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")).cloned().unwrap_or_default();
                    if let Some(&i) = by_job.get(&job) {
                        let n = &mut nodes[i];
                        if n.outcome.is_none() && !n.following {
                            if n.stop_sent && !n.followed {
                                // Its Job ended it before its agent ran: nothing will come.
                                n.finish(NodeOutcome::Failed("interrupted before the agent started".into()));
                            } else if !n.stop_sent {
                                // Not read while it ran nor once it finished: deleted under us.
                                n.finish(NodeOutcome::Failed(POD_DELETED.into()));
                            }
                        }
                    }
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    // Every pod of the run is listed now: a finished Job without one has lost
                    // its result.
                    for n in nodes.iter_mut().filter(|n| n.job_finished && n.pod.is_none()) {
                        n.finish(NodeOutcome::Failed(EXPIRED.into()));
                    }
                }
                Ok(Some(watcher::Event::Init)) => {}
                Ok(None) => return Err(CliError::Cluster("the watch on the profiling pods ended unexpectedly".into())),
                Err(e) => {
                    if let Some(msg) = forbidden(&e) {
                        return Err(CliError::Forbidden(msg));
                    }
                    if unanswered(&e) {
                        unanswered_since.get_or_insert_with(Instant::now);
                    }
                }
            },
            Some(msg) = log_rx.recv() => match msg {
                LogMsg::Line(i, line) => {
                    unanswered_since = None;
                    on_line(&mut nodes[i], &line);
                    hand_over(&mut nodes[i], on_result);
                }
                LogMsg::TooLong(i) => nodes[i].finish(NodeOutcome::Failed(format!(
                    "the agent's log has a line over {} bytes, which no eagle-agent of this version writes (a custom --image?): its result is refused",
                    Limits::DEFAULT.line_bytes
                ))),
                LogMsg::Ended(i) => {
                    let n = &mut nodes[i];
                    n.following = false;
                    if n.outcome.is_none() {
                        // Follow broke or the container ended without a trailer: read the whole
                        // log again once the pod has terminated.
                        n.decoder = Decoder::new();
                        n.bar.set_message("re-reading the log");
                        if let Some(pod) = n.pod.clone() {
                            reread_if_terminated(&pods, n, &pod).await;
                            if n.outcome.is_none() && !n.stop_sent {
                                n.stalled_since = Some(Instant::now());
                            }
                        }
                    }
                    hand_over(n, on_result);
                }
            },
            _ = received(&mut signals.interrupt) => {
                signals.interrupts += 1;
                if interrupted_at.is_none() {
                    interrupted_at = Some(Instant::now());
                    eprintln!("interrupted: stopping the agents; they send what they sampled so far (Ctrl-C again to stop waiting)");
                    stop_agents(client, namespace, nodes, limit).await;
                } else {
                    for n in nodes.iter_mut() {
                        n.finish(NodeOutcome::Failed("interrupted".into()));
                    }
                }
            }
            // SIGTERM, and SIGHUP (the terminal closed): stopped as on Ctrl-C.
            _ = async { tokio::select! { _ = received(&mut signals.terminate) => {}, _ = received(&mut signals.hangup) => {} } }, if interrupted_at.is_none() => {
                interrupted_at = Some(Instant::now());
                stop_agents(client, namespace, nodes, limit).await;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if unanswered_since.is_some_and(|t| now - t > API_SILENT_GRACE) {
                    match client.apiserver_version().await {
                        Err(e) if !matches!(e, kube::Error::Api(_)) => {
                            lose_api_server(nodes, run_id, &e)?;
                            break;
                        }
                        // It answers (if only with an error): the watch reconnects on its own.
                        _ => unanswered_since = None,
                    }
                }
                // A Job whose pod does not appear within seconds: its controller's events say
                // why (an admission rejection), one list for the whole run every few seconds.
                let waiting = nodes.iter().any(|n| n.outcome.is_none() && n.pod.is_none() && n.uid.is_some());
                if waiting && now - started > NO_POD_YET && events_read.is_none_or(|t| now - t > NO_POD_YET) {
                    events_read = Some(now);
                    fail_refused_creates(client, namespace, nodes).await;
                }
                for n in nodes.iter_mut().filter(|n| n.outcome.is_none() && !n.stop_sent) {
                    if n.stalled_since.is_some_and(|t| now - t > PROBE_AFTER) {
                        n.stalled_since = None;
                        if let Some(pod) = n.pod.clone() {
                            probe_kubelet(&pods, n, &pod).await;
                        }
                    }
                }
                for n in nodes.iter_mut().filter(|n| n.outcome.is_none()) {
                    // Quiet mid-window only: after its window an agent may symbolize for a while
                    // without a line (the window is counted from when the pod was seen running,
                    // before the agent's own set-up: its real end is later, never earlier).
                    let mid_window = |t: Instant| n.running_since.zip(n.window).is_some_and(|(r, w)| t < r + w);
                    if n.following && !n.stop_sent && n.last_line.is_some_and(|t| now - t > SILENT_AFTER && mid_window(t)) {
                        n.went_silent(format!("no line from its agent for {} s", SILENT_AFTER.as_secs()));
                    }
                    if let Some(why) = n.silent_too_long(now).filter(|_| interrupted_at.is_none()) {
                        n.finish(NodeOutcome::Failed(why));
                    } else if n.unschedulable_since.is_some_and(|t| now - t > UNSCHEDULABLE_GRACE) {
                        n.finish(NodeOutcome::Failed("unschedulable: the profiling pod cannot be placed on this node".into()));
                    } else if n.stop_sent && !n.followed && interrupted_at.is_some_and(|t| now - t > NOT_STARTED_GRACE) {
                        // Its Job ended before the agent ran (the pod may be gone before the
                        // watch ever listed it): nothing will come.
                        n.finish(NodeOutcome::Failed("interrupted before the agent started".into()));
                    } else if interrupted_at.is_some_and(|t| now - t > INTERRUPT_GRACE) {
                        n.finish(NodeOutcome::Failed("interrupted before the agent sent its result".into()));
                    } else if now > give_up {
                        let why = if n.pod.is_none() { "no pod was ever created for the Job (admission refused it? `kubectl describe job -n kube-eagle`)" } else { "timed out waiting for the agent's result" };
                        n.finish(NodeOutcome::Failed(why.into()));
                    }
                }
            }
        }
    }
    Ok(interrupted_at.is_some())
}

/// Whether a watch failed for want of any answer from the API server (a refused or broken
/// connection, a timeout), not with a status it sent.
fn unanswered(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            !matches!(e, kube::Error::Api(_))
        }
        _ => false,
    }
}

/// The API server is gone mid-run: every node not yet read fails with that reason. The nodes
/// that delivered are written (partial); if none did, the run ends with the API server's
/// error (exit 9) and where the results are. The agents do not need the API server: they
/// sample to the end of their window and their results wait in the pods' logs.
fn lose_api_server(nodes: &mut [NodeRun], run_id: &str, e: &kube::Error) -> Result<(), CliError> {
    let why = format!("the API server stopped answering ({e})");
    for n in nodes.iter_mut() {
        n.finish(NodeOutcome::Failed(why.clone()));
    }
    if nodes.iter().any(|n| matches!(n.outcome, Some(NodeOutcome::Done(_)))) {
        return Ok(());
    }
    Err(CliError::Cluster(format!(
        "{why} during the run: the agents sample to the end of their window and keep their results in their pods' logs until their Jobs' TTL runs out ({} minutes after a run in the foreground, --ttl after one with -a); once the cluster answers, `kubectl eagle fetch {run_id}` reads them",
        super::plan::SYNC_TTL.as_secs() / 60
    )))
}

/// Hands a node's result to the run's `on_result`, once, as soon as it is known.
fn hand_over(n: &mut NodeRun, on_result: &mut dyn FnMut(&mut NodeResult)) {
    if let (false, Some(NodeOutcome::Done(result))) = (n.handed_over, &mut n.outcome) {
        n.handed_over = true;
        on_result(result);
    }
}

/// Fails the nodes whose Job could not create its pod, with the Job controller's reason
/// (`FailedCreate`: Pod Security, an admission webhook, a quota). Events that cannot be read
/// (no permission, an old cluster) leave the nodes waiting, as before.
async fn fail_refused_creates(client: &Client, namespace: &str, nodes: &mut [NodeRun]) {
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields("involvedObject.kind=Job,reason=FailedCreate");
    let Ok(list) = with_retries(transient, || events.list(&params)).await else { return };
    for n in nodes.iter_mut().filter(|n| n.outcome.is_none() && n.pod.is_none()) {
        let refused = list.items.iter().rev().find(|e| n.uid.is_some() && e.involved_object.uid == n.uid);
        if let Some(message) = refused.and_then(|e| e.message.as_deref()) {
            n.finish(NodeOutcome::Failed(format!(
                "no pod: its Job could not create one: {}",
                eagle_proto::stream::printable(message.trim())
            )));
        }
    }
}

fn forbidden(e: &watcher::Error) -> Option<String> {
    let text = e.to_string();
    (text.contains("403") || text.to_lowercase().contains("forbidden"))
        .then(|| format!("not allowed to watch pods in the profiling namespace: {text}; ask for `watch` on pods there, or run `kubectl eagle init`"))
}

async fn on_pod(
    pods: &Api<Pod>,
    n: &mut NodeRun,
    index: usize,
    pod: &Pod,
    log_tx: &mpsc::Sender<LogMsg>,
    follows: &Arc<Semaphore>,
) {
    if n.outcome.is_some() {
        return;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    n.pod = Some(name.clone());
    let state = PodState::of(pod);
    // Failures visible before the container runs.
    if let Some(why) = state.cannot_start {
        n.finish(NodeOutcome::Failed(why));
        return;
    }
    if let Some(reason) = &state.waiting {
        n.bar.set_message(reason.clone());
    }
    if state.unschedulable.is_some() {
        n.unschedulable_since.get_or_insert_with(Instant::now);
        n.bar.set_message("unschedulable");
    } else {
        n.unschedulable_since = None;
    }
    if state.phase == Phase::Running {
        n.running_since.get_or_insert_with(Instant::now);
        if let Some(why) = node_not_ready(pod) {
            n.went_silent(why);
        }
    }
    match state.phase {
        // A Pending pod's log is empty and its follow ends at once: wait for it to run.
        Phase::Running if !n.followed => {
            n.following = true;
            n.followed = true;
            n.bar.set_message("sampling");
            vlog!(2, "node {}: pod {name} runs; following its log", n.node);
            spawn_follow(pods.clone(), name, index, log_tx.clone(), follows.clone());
        }
        Phase::Succeeded | Phase::Failed if !n.following => reread(pods, n, &name, Some(pod)).await,
        _ => {}
    }
}

fn spawn_follow(pods: Api<Pod>, pod: String, index: usize, tx: mpsc::Sender<LogMsg>, follows: Arc<Semaphore>) {
    tokio::spawn(async move {
        let _permit = follows.acquire_owned().await;
        let params = LogParams { follow: true, container: Some(AGENT_CONTAINER.into()), ..Default::default() };
        if let Ok(mut stream) = pods.log_stream(&pod, &params).await {
            let limit = Limits::DEFAULT.line_bytes;
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // At most one byte past the limit is read into memory for any line.
                match (&mut stream).take(limit as u64 + 1).read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.len() > limit && buf.last() != Some(&b'\n') => {
                        let _ = tx.send(LogMsg::TooLong(index)).await;
                        return;
                    }
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(LogMsg::Line(index, line)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let _ = tx.send(LogMsg::Ended(index)).await;
    });
}

fn on_line(n: &mut NodeRun, line: &str) {
    if n.outcome.is_some() {
        return;
    }
    n.last_line = Some(Instant::now());
    if n.silent.take().is_some() {
        vlog!(2, "node {}: heard from again", n.node);
    }
    match n.decoder.feed_line(line) {
        Ok(Some(Event::Progress(p))) => {
            n.bar.set_position(p.elapsed_ms);
            n.bar.set_message(format!("sampling: {} samples, {} processes", p.samples, p.processes));
        }
        Ok(Some(Event::Trailer(_))) => {
            let decoder = std::mem::take(&mut n.decoder);
            match decoder.finish() {
                Ok(result) => n.finish(NodeOutcome::Done(Box::new(result))),
                Err(e) => n.finish(NodeOutcome::Failed(e.to_string())),
            }
        }
        Ok(_) => {}
        Err(_) => {} // kept in the decoder; reported when the stream ends
    }
}

/// After a follow ended without the agent's trailer while its pod still runs: one short read
/// of the log says whether the node's kubelet still answers (the API server reaches logs
/// through it). A refusal other than "not found" makes the node silent.
async fn probe_kubelet(pods: &Api<Pod>, n: &mut NodeRun, pod: &str) {
    let params = LogParams { container: Some(AGENT_CONTAINER.into()), tail_lines: Some(1), ..Default::default() };
    match pods.logs(pod, &params).await {
        Ok(_) => vlog!(4, "node {}: its log stream ended early, but its kubelet answers", n.node),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            let said = match &e {
                kube::Error::Api(s) => s.message.clone(),
                e => e.to_string(),
            };
            n.went_silent(format!(
                "its log stream broke and the kubelet does not answer: {}",
                eagle_proto::stream::printable(said.trim())
            ));
        }
    }
}

/// The node controller's word on a running pod whose node stopped reporting: `Ready` turned
/// `False` while the kubelet's last status still has the agent running and ready (only the
/// node controller, not the kubelet, makes that pair).
fn node_not_ready(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready")?;
    let agent_ready = status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.name == AGENT_CONTAINER && c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()));
    (ready.status == "False" && agent_ready).then(|| {
        let reason = ready.reason.as_deref().or(ready.message.as_deref()).unwrap_or("NodeNotReady");
        format!("the node controller marked its pod not ready: {}", eagle_proto::stream::printable(reason))
    })
}

async fn reread_if_terminated(pods: &Api<Pod>, n: &mut NodeRun, pod: &str) {
    match pods.get(pod).await {
        Ok(p) => {
            if PodState::of(&p).finished() {
                reread(pods, n, pod, Some(&p)).await;
            }
        }
        Err(kube::Error::Api(s)) if s.code == 404 && !n.stop_sent => n.finish(NodeOutcome::Failed(POD_DELETED.into())),
        Err(_) => {}
    }
}

/// Reads the finished log in one piece: the reliable path when a follow broke, and the only
/// one for a pod that finished before we could follow it.
async fn reread(pods: &Api<Pod>, n: &mut NodeRun, pod_name: &str, pod: Option<&Pod>) {
    if n.outcome.is_some() {
        return;
    }
    // The API server stops at limitBytes: a log larger than any stream of ours arrives cut, and
    // the decoder says it was cut short, instead of the whole of it landing in memory.
    let params =
        LogParams { container: Some(AGENT_CONTAINER.into()), limit_bytes: Some(MAX_LOG_BYTES), ..Default::default() };
    let log = match with_retries(transient, || pods.logs(pod_name, &params)).await {
        Ok(log) => log,
        Err(e) => return n.finish(NodeOutcome::Failed(format!("cannot read the agent's log: {e}"))),
    };
    let mut decoder = Decoder::new();
    let _ = decoder.feed_text(&log);
    match decoder.finish() {
        Ok(result) => n.finish(NodeOutcome::Done(Box::new(result))),
        Err(e) => {
            // Say why the agent stopped, if it said so itself.
            let agent_said = eagle_proto::agent_error_in(&log).map(str::to_owned);
            let terminated = pod.and_then(pod_state::terminated).map(|t| pod_state::exit_of(&t));
            let why = match (agent_said, terminated) {
                (Some(said), _) => said,
                (None, Some(t)) if log.trim().is_empty() => t,
                (None, Some(t)) => format!("{t}; {e}"),
                (None, None) => e.to_string(),
            };
            n.finish(NodeOutcome::Failed(why));
        }
    }
}

/// Ctrl-C and SIGTERM, caught once for the whole run: one stream each, so that a signal that
/// arrives while the event loop is busy (reading a log, deleting pods) is not lost.
struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
    hangup: Option<Signal>,
    /// Ctrl-Cs so far: the first stops the agents, the second stops waiting for them, the
    /// third quits, even while the Jobs are being deleted.
    interrupts: u32,
}

impl Signals {
    fn catch() -> Self {
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
            hangup: signal(SignalKind::hangup()).ok(),
            interrupts: 0,
        }
    }
}

/// The next delivery of a caught signal; never, if it could not be caught.
async fn received(signal: &mut Option<Signal>) {
    if let Some(s) = signal {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// Ctrl-C: the agents end their window on SIGTERM and still write their stream. Each Job is
/// suspended (Kubernetes 1.22+; earlier API servers drop the field) and its deadline moved to
/// one second after its start: the Job controller deletes its pod with the pod's grace period
/// (SIGTERM, time to flush) and, the Job being suspended or failed, creates no other. Deleting
/// the pods instead would have the controller replace them (before Kubernetes 1.26 always,
/// later while the old pod terminates): a second privileged pod per node.
async fn stop_agents(client: &Client, namespace: &str, nodes: &mut [NodeRun], limit: usize) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let stopping: Vec<usize> =
        (0..nodes.len()).filter(|&i| nodes[i].outcome.is_none() && !nodes[i].stop_sent).collect();
    let patches = stopping.iter().map(|&i| {
        let n = &nodes[i];
        // The uid makes the patch a precondition: only the Job this run created is ended.
        let patch = serde_json::json!({
            "metadata": {"uid": n.uid},
            "spec": {"suspend": true, "activeDeadlineSeconds": 1},
        });
        let jobs = jobs.clone();
        let name = n.job.clone();
        async move {
            let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
            with_retries(transient, || jobs.patch(&name, &params, &patch)).await
        }
    });
    let results: Vec<_> = futures::stream::iter(patches).buffered(limit).collect().await;
    for (&i, result) in stopping.iter().zip(results) {
        let n = &mut nodes[i];
        n.stop_sent = true;
        if let Err(e) = result {
            n.bar.set_message("could not stop the agent");
            eprintln!(
                "warning: could not stop the agent on node {} (patching Job {}: {e}); it runs to the end of its window",
                n.node, n.job
            );
        } else if n.pod.is_none() {
            n.bar.set_message("stopped before its pod was seen");
        }
    }
}

/// Deletes the Jobs this run created, each only if it is still the one created (its uid). A
/// third Ctrl-C quits at once, leaving them to their deadline and TTL.
async fn cleanup(jobs: &Api<Job>, nodes: &[NodeRun], limit: usize, run_id: &str, signals: &mut Signals) {
    let deletes = delete_created(jobs, nodes, limit, run_id);
    tokio::pin!(deletes);
    loop {
        tokio::select! {
            _ = &mut deletes => return,
            _ = received(&mut signals.interrupt) => {
                signals.interrupts += 1;
                if signals.interrupts >= 3 {
                    eprintln!("interrupted again: quitting before the run's Jobs are deleted; their deadline and TTL end them, or remove them now with `kubectl eagle clean {run_id}`");
                    std::process::exit(Exit::Failed as i32);
                }
            }
        }
    }
}

async fn delete_created(jobs: &Api<Job>, nodes: &[NodeRun], limit: usize, run_id: &str) {
    let created: Vec<&NodeRun> = nodes.iter().filter(|n| n.uid.is_some()).collect();
    // Once a delete has spent its retries on an API server that is gone or failing (refused or
    // broken connections, 5xx), the deletes not sent yet are not sent: each would spend its own
    // retries (1.75 s), some 90 s for 1,000 nodes, after the results are written.
    let unreachable = AtomicBool::new(false);
    let deletes = created.iter().map(|n| {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: n.uid.clone(), resource_version: None }),
            ..DeleteParams::background()
        };
        let unreachable = &unreachable;
        async move {
            if unreachable.load(Ordering::Relaxed) {
                return None;
            }
            let result = with_retries(transient, || jobs.delete(&n.job, &params)).await;
            if result.as_ref().is_err_and(transient) {
                unreachable.store(true, Ordering::Relaxed);
            }
            Some(result)
        }
    });
    let results: Vec<_> = futures::stream::iter(deletes).buffered(limit).collect().await;
    let mut not_sent = 0;
    for (n, result) in created.into_iter().zip(results) {
        match result {
            None => not_sent += 1,
            Some(Err(e)) => {
                // 404: gone already (another user's `clean`); 409: the name is another Job's now.
                let gone = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
                if !gone {
                    eprintln!(
                        "warning: could not delete Job {} (node {}): {e}; its deadline and TTL end it, or run `kubectl eagle clean {run_id}` once the API server answers",
                        n.job, n.node
                    );
                }
            }
            Some(Ok(_)) => {}
        }
    }
    if not_sent > 0 {
        eprintln!(
            "warning: {not_sent} more Job(s) of run {run_id} not deleted: the API server failed the deletes above; their deadline and TTL end them, or run `kubectl eagle clean {run_id}` once it answers"
        );
    }
}
