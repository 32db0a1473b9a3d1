//! Running the planned Jobs: create them, watch their pods (one watch for the whole run),
//! follow each agent's log once its pod runs, decode and verify each node's stream, and delete
//! every Job the run created, on success, error, Ctrl-C and SIGTERM alike.
//!
//! The same watch-and-follow loop serves `fetch` ([`attach`]): the Jobs of an earlier run are
//! read as they are, whether their pods still run (followed) or have finished (read in one
//! piece), and a finished Job whose pod is gone is reported as expired.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eagle_proto::{Decoder, Event, NodeResult};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use super::annotations::RUN_LABEL;
use super::api::api_error;
use super::plan::AGENT_CONTAINER;
use super::pod_state::{self, Phase, PodState};
use crate::error::CliError;

/// How long a pod may stay unschedulable before its node is given up.
const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(20);
/// After Ctrl-C: how long agents get to complete their streams before we stop waiting.
const INTERRUPT_GRACE: Duration = Duration::from_secs(15);
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
    /// The Job had finished before the watch started (`fetch`): no pod then means no result.
    pub job_finished: bool,
    pod: Option<String>,
    following: bool,
    /// A log is followed once; after that the finished log is re-read instead.
    followed: bool,
    /// Its pod was deleted to stop the agent (Ctrl-C, SIGTERM).
    stop_sent: bool,
    unschedulable_since: Option<Instant>,
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
            job_finished: false,
            pod: None,
            following: false,
            followed: false,
            stop_sent: false,
            unschedulable_since: None,
            decoder: Decoder::new(),
            bar,
        }
    }

    pub fn finish(&mut self, outcome: NodeOutcome) {
        if self.outcome.is_some() {
            return;
        }
        match &outcome {
            NodeOutcome::Done(r) => self.bar.finish_with_message(format!("done: {} samples", r.samples())),
            NodeOutcome::Failed(why) => self.bar.abandon_with_message(format!("FAILED: {why}")),
        }
        self.outcome = Some(outcome);
    }
}

enum LogMsg {
    Line(usize, String),
    /// The follow ended (container exited, or the connection broke).
    Ended(usize),
}

pub struct Outcome {
    pub nodes: Vec<NodeRun>,
    pub interrupted: bool,
}

/// One progress bar per node, under one [`MultiProgress`].
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    window: Duration,
}

impl Bars {
    pub fn new(window: Duration) -> Self {
        let style = ProgressStyle::with_template("{spinner} {prefix:20} [{bar:25}] {msg}")
            .expect("valid template")
            .progress_chars("=> ");
        Bars { multi: MultiProgress::new(), style, window }
    }

    pub fn bar(&self, node: &str, message: &str) -> ProgressBar {
        let bar = self.multi.add(
            ProgressBar::new(self.window.as_millis() as u64)
                .with_style(self.style.clone())
                .with_prefix(node.to_owned()),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }
}

/// The wait for a run's results ends at the latest this long after it started: the window plus
/// the Job's own deadline margin, and a little more.
pub fn give_up_after(window: Duration) -> Duration {
    window + super::plan::DEADLINE_MARGIN + Duration::from_secs(30)
}

/// Creates the Jobs, waits for every node's result, and always deletes the Jobs (unless
/// `keep`).
pub async fn execute(
    client: &Client,
    namespace: &str,
    run_id: &str,
    jobs: Vec<(String, usize, Job)>,
    window: Duration,
    keep: bool,
) -> Result<Outcome, CliError> {
    let job_api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let bars = Bars::new(window);
    let mut nodes = node_runs(&jobs, |node| bars.bar(node, "creating Job"));

    // Caught from before the first Job exists: from here on Ctrl-C and SIGTERM must not kill
    // the process, or the Jobs it created would be left running.
    let mut signals = Signals::catch();
    let create_error = create(&job_api, namespace, &jobs, &mut nodes).await;
    let outcome = if nodes.iter().all(|n| n.outcome.is_some()) {
        Err(create_error.expect("every node failed at creation"))
    } else {
        let give_up = Instant::now() + give_up_after(window);
        follow(client, namespace, run_id, &mut nodes, give_up, &mut signals).await
    };
    if !keep {
        cleanup(&job_api, &nodes).await;
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
) -> Option<CliError> {
    let post = PostParams::default();
    let created = futures::future::join_all(jobs.iter().map(|(_, _, job)| job_api.create(&post, job))).await;
    let mut create_error = None;
    for (n, result) in nodes.iter_mut().zip(created) {
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
    create_error
}

/// Reads the results of Jobs that already exist (`fetch`): follows the logs of running agents
/// and reads finished ones in one piece, until every node has its outcome or `give_up` comes.
/// Creates and deletes nothing; Ctrl-C keeps its default (the run goes on without us).
pub async fn attach(
    client: &Client,
    namespace: &str,
    run_id: &str,
    mut nodes: Vec<NodeRun>,
    give_up: Instant,
) -> Result<Outcome, CliError> {
    let mut signals = Signals { interrupt: None, terminate: None };
    let interrupted = follow(client, namespace, run_id, &mut nodes, give_up, &mut signals).await?;
    Ok(Outcome { nodes, interrupted })
}

/// The event loop of a run. Returns whether it was interrupted.
async fn follow(
    client: &Client,
    namespace: &str,
    run_id: &str,
    nodes: &mut [NodeRun],
    give_up: Instant,
    signals: &mut Signals,
) -> Result<bool, CliError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run_id}"));
    let mut events = watcher(pods.clone(), config).default_backoff().boxed();
    let (log_tx, mut log_rx) = mpsc::unbounded_channel::<LogMsg>();
    let by_job: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.job.clone(), i)).collect();
    let mut interrupted_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));

    while nodes.iter().any(|n| n.outcome.is_none()) {
        tokio::select! {
            event = events.try_next() => match event {
                Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    let job = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")).cloned().unwrap_or_default();
                    if let Some(&i) = by_job.get(&job) {
                        on_pod(&pods, &mut nodes[i], i, &pod, &log_tx).await;
                        if interrupted_at.is_some() {
                            // A pod first seen after the interrupt (its Job was still being
                            // created) is stopped too.
                            stop_agents(client, namespace, nodes).await;
                        }
                    }
                }
                Ok(Some(watcher::Event::Delete(pod))) => {
                    let job = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")).cloned().unwrap_or_default();
                    if let Some(&i) = by_job.get(&job) {
                        let n = &mut nodes[i];
                        // Not read while it ran nor once it finished: deleted under us.
                        if n.outcome.is_none() && !n.following && !n.stop_sent {
                            n.finish(NodeOutcome::Failed(POD_DELETED.into()));
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
                }
            },
            Some(msg) = log_rx.recv() => match msg {
                LogMsg::Line(i, line) => on_line(&mut nodes[i], &line),
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
                        }
                    }
                }
            },
            _ = received(&mut signals.interrupt) => {
                if interrupted_at.is_none() {
                    interrupted_at = Some(Instant::now());
                    eprintln!("interrupted: stopping the agents; they send what they sampled so far (Ctrl-C again to quit at once)");
                    stop_agents(client, namespace, nodes).await;
                } else {
                    for n in nodes.iter_mut() {
                        n.finish(NodeOutcome::Failed("interrupted".into()));
                    }
                }
            }
            _ = received(&mut signals.terminate), if interrupted_at.is_none() => {
                interrupted_at = Some(Instant::now());
                stop_agents(client, namespace, nodes).await;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for n in nodes.iter_mut().filter(|n| n.outcome.is_none()) {
                    if n.unschedulable_since.is_some_and(|t| now - t > UNSCHEDULABLE_GRACE) {
                        n.finish(NodeOutcome::Failed("unschedulable: the profiling pod cannot be placed on this node".into()));
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

fn forbidden(e: &watcher::Error) -> Option<String> {
    let text = e.to_string();
    (text.contains("403") || text.to_lowercase().contains("forbidden"))
        .then(|| format!("not allowed to watch pods in the profiling namespace: {text}; ask for `watch` on pods there, or run `kubectl eagle init`"))
}

async fn on_pod(pods: &Api<Pod>, n: &mut NodeRun, index: usize, pod: &Pod, log_tx: &mpsc::UnboundedSender<LogMsg>) {
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
    match state.phase {
        // A Pending pod's log is empty and its follow ends at once: wait for it to run.
        Phase::Running if !n.followed => {
            n.following = true;
            n.followed = true;
            n.bar.set_message("sampling");
            spawn_follow(pods.clone(), name, index, log_tx.clone());
        }
        Phase::Succeeded | Phase::Failed if !n.following => reread(pods, n, &name, Some(pod)).await,
        _ => {}
    }
}

fn spawn_follow(pods: Api<Pod>, pod: String, index: usize, tx: mpsc::UnboundedSender<LogMsg>) {
    tokio::spawn(async move {
        let params = LogParams { follow: true, container: Some(AGENT_CONTAINER.into()), ..Default::default() };
        if let Ok(stream) = pods.log_stream(&pod, &params).await {
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                if tx.send(LogMsg::Line(index, line)).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(LogMsg::Ended(index));
    });
}

fn on_line(n: &mut NodeRun, line: &str) {
    if n.outcome.is_some() {
        return;
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
    let params = LogParams { container: Some(AGENT_CONTAINER.into()), ..Default::default() };
    let log = match pods.logs(pod_name, &params).await {
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
}

impl Signals {
    fn catch() -> Self {
        Signals { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
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

/// Ctrl-C: the agents end their window on SIGTERM and still write their stream, so deleting
/// the pods (gracefully) is how to stop them early without losing what they sampled.
async fn stop_agents(client: &Client, namespace: &str, nodes: &mut [NodeRun]) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for n in nodes.iter_mut().filter(|n| n.outcome.is_none() && !n.stop_sent) {
        if let Some(pod) = &n.pod {
            n.stop_sent = true;
            let _ = pods.delete(pod, &DeleteParams::default()).await;
            if !n.followed {
                // Not running yet: its agent never starts, so nothing will come.
                n.finish(NodeOutcome::Failed("interrupted before the agent started".into()));
            }
        }
    }
}

async fn cleanup(jobs: &Api<Job>, nodes: &[NodeRun]) {
    let params = DeleteParams::background();
    let deletes = nodes.iter().map(|n| jobs.delete(&n.job, &params));
    for (n, result) in nodes.iter().zip(futures::future::join_all(deletes).await) {
        if let Err(e) = result {
            let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
            if !gone {
                eprintln!("warning: could not delete Job {} (node {}): {e}; its TTL removes it later", n.job, n.node);
            }
        }
    }
}
