//! `kubectl eagle profile TYPE/NAME ...`: the cluster path from arguments to the written graph
//! and the per-node report.

use std::time::{Duration, Instant};

use eagle_proto::NodeResult;

use super::plan::{self, PlanOptions};
use super::resolve::{self, Resolution, Skipped};
use super::run::{self, NodeOutcome, NodeRun};
use super::tasks;
use super::{connect, ensure_namespace, new_run_id, Connection, DEFAULT_WINDOW};
use crate::args::ProfileArgs;
use crate::duration::human;
use crate::error::{CliError, Exit};
use crate::merge::{self, GroupBy, Placements};
use crate::output::{Destination, Labels};
use crate::summary::{NodeStatus, RunInfo};
use crate::target::ClusterKind;

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

fn describe(args: &ProfileArgs, namespace: &str) -> String {
    let mut parts = args.targets.clone();
    if let Some(l) = &args.cluster.selector {
        parts.push(format!("-l {l}"));
    }
    format!("{} -n {namespace}", parts.join(" "))
}

pub(super) struct Prepared {
    pub client: kube::Client,
    pub resolution: Resolution,
    pub jobs: Vec<(String, usize, k8s_openapi::api::batch::v1::Job)>,
    pub run_id: String,
    pub what: String,
}

pub(super) async fn prepare(args: &ProfileArgs, targets: &[(ClusterKind, String)]) -> Result<Prepared, CliError> {
    let conn = Connection { kubeconfig: args.cluster.kubeconfig.clone(), context: args.cluster.context.clone() };
    let (client, default_ns) = connect(&conn).await?;
    let namespace = args.cluster.namespace.clone().unwrap_or(default_ns);
    let request = resolve::Request {
        namespace: &namespace,
        targets,
        selector: args.cluster.selector.as_deref(),
        container: args.cluster.container.as_deref(),
    };
    let resolution = resolve::resolve(&client, &request).await?;
    let what = describe(args, &namespace);
    if resolution.running.is_empty() {
        let mut why: Vec<String> =
            resolution.skipped.iter().take(5).map(|s| format!("{}/{} {}", s.pod, s.container, s.reason)).collect();
        if resolution.skipped.len() > 5 {
            why.push(format!("and {} more", resolution.skipped.len() - 5));
        }
        return Err(CliError::NothingToProfile(format!("no running containers in {what}: {}", why.join("; "))));
    }
    let run_id = new_run_id();
    let opts = PlanOptions {
        run_id: run_id.clone(),
        target: what.clone(),
        namespace: args.cluster.eagle_namespace.clone(),
        image: args.cluster.agent_image.reference(),
        image_pull_policy: args.cluster.agent_image.image_pull_policy.clone(),
        image_pull_secrets: args.cluster.agent_image.image_pull_secret.clone(),
        duration: args.duration.unwrap_or(DEFAULT_WINDOW),
        frequency_hz: args.frequency,
        capabilities_only: args.cluster.capabilities,
        ttl_after_finished: tasks::ttl_seconds(args.cluster.ttl, args.cluster.async_),
        runtime: args.runtime.clone(),
        python_native: args.native,
    };
    let by_node = resolution.by_node();
    let nodes = by_node.len();
    let jobs = by_node
        .into_iter()
        .enumerate()
        .map(|(i, (node, containers))| {
            let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
            let mut job = plan::job_for_node(&opts, i, node, &ids);
            // What `list` and `fetch` read back: the run's size and each container's place.
            let task = tasks::Task { nodes, is_async: args.cluster.async_, frequency_hz: args.frequency };
            task.annotate(&mut job, containers.iter().map(|c| (c.id.as_str(), &c.placement)));
            (node.to_owned(), ids.len(), job)
        })
        .collect();
    Ok(Prepared { client, resolution, jobs, run_id, what })
}

pub fn dry_run(args: &ProfileArgs, targets: &[(ClusterKind, String)]) -> Result<Exit, CliError> {
    let prepared = runtime()?.block_on(prepare(args, targets))?;
    let mut out = String::new();
    out.push_str(
        &serde_saphyr::to_string(&plan::locked_namespace(&args.cluster.eagle_namespace))
            .map_err(|e| CliError::Failed(e.to_string()))?,
    );
    for (_, _, job) in &prepared.jobs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(job).map_err(|e| CliError::Failed(e.to_string()))?);
    }
    print!("{out}");
    report_skipped(&prepared.resolution.skipped);
    Ok(Exit::Ok)
}

pub fn profile(
    args: &ProfileArgs,
    targets: &[(ClusterKind, String)],
    destination: &Destination,
) -> Result<Exit, CliError> {
    runtime()?.block_on(async {
        let p = prepare(args, targets).await?;
        let window = args.duration.unwrap_or(DEFAULT_WINDOW);
        ensure_namespace(&p.client, &args.cluster.eagle_namespace).await?;
        if !args.cluster.force {
            let nodes: Vec<&str> = p.jobs.iter().map(|(node, _, _)| node.as_str()).collect();
            tasks::refuse_conflicts(&p.client, &args.cluster.eagle_namespace, &nodes, args.cluster.max_per_node)
                .await?;
        }
        eprintln!(
            "profiling {} ({} containers on {} nodes) for {} at {} Hz: run {}",
            p.what,
            p.resolution.running.len(),
            p.jobs.len(),
            human(window),
            args.frequency,
            p.run_id
        );
        let started = Instant::now();
        let outcome =
            run::execute(&p.client, &args.cluster.eagle_namespace, &p.run_id, p.jobs, window, args.cluster.keep)
                .await?;
        let elapsed = started.elapsed();

        let placements: Placements = p.resolution.running.iter().map(|c| (c.id.clone(), c.placement.clone())).collect();
        let finished = Finished {
            what: &p.what,
            window,
            elapsed,
            group_by: args.group_by,
            placements: &placements,
            skipped: &p.resolution.skipped,
        };
        render(&outcome, &finished, destination)
    })
}

/// What is known about a run once its nodes have their outcomes.
pub(super) struct Finished<'a> {
    pub what: &'a str,
    pub window: Duration,
    pub elapsed: Duration,
    pub group_by: GroupBy,
    pub placements: &'a Placements,
    pub skipped: &'a [Skipped],
}

/// The per-node table, then the merged graph from the nodes that delivered: shared by a
/// synchronous run and `fetch`.
pub(super) fn render(outcome: &run::Outcome, run: &Finished, destination: &Destination) -> Result<Exit, CliError> {
    let done: Vec<&NodeResult> = outcome
        .nodes
        .iter()
        .filter_map(|n| match &n.outcome {
            Some(NodeOutcome::Done(r)) => Some(r.as_ref()),
            _ => None,
        })
        .collect();
    let failed = outcome.nodes.len() - done.len();
    report(&outcome.nodes, run.skipped);
    if done.is_empty() {
        return Err(CliError::Failed(format!(
            "no node delivered a profile ({} failed): see the table above",
            outcome.nodes.len()
        )));
    }
    let folded = merge::merge(done.iter().copied(), run.placements, run.group_by);
    if folded.is_empty() {
        return Err(CliError::NothingToProfile(format!(
            "no samples of {} in {}: the containers used no CPU; try a longer --duration while they are busy",
            run.what,
            human(run.window)
        )));
    }
    let partial = failed > 0 || outcome.interrupted;
    destination.record_run(RunInfo {
        // The agents' own clocks, as in local runs; also known to `fetch`.
        started_unix_ms: done.iter().map(|r| r.header.started_unix_ms).min(),
        partial: Some(partial),
        nodes: Some(outcome.nodes.iter().map(node_status).collect()),
        ..Default::default()
    });
    let frequency = done[0].header.frequency_hz;
    let mut subtitle = format!(
        "{} at {frequency} Hz, {} samples, {} of {} nodes",
        human(run.window),
        folded.total(),
        done.len(),
        outcome.nodes.len()
    );
    if partial {
        let why = if outcome.interrupted { "interrupted".to_owned() } else { format!("{failed} node(s) failed") };
        subtitle.push_str(&format!(" | PARTIAL: {why}"));
    }
    destination.write(&folded, &Labels { title: format!("kube-eagle: {}", run.what), subtitle })?;
    eprintln!(
        "wrote {} ({} samples, {} stacks, {}){}",
        destination.describe(),
        folded.total(),
        folded.len(),
        human(run.elapsed),
        if partial { " PARTIAL" } else { "" }
    );
    Ok(if partial { Exit::Partial } else { Exit::Ok })
}

/// A node's line in the `--summary` file: what the table on stderr says, for CI to read.
fn node_status(n: &NodeRun) -> NodeStatus {
    let (status, samples, messages) = match &n.outcome {
        Some(NodeOutcome::Done(r)) => {
            let early = r.warnings.iter().any(|w| w.code == "ended-early");
            let messages = r.warnings.iter().filter(|w| !w.code.starts_with("info-")).map(|w| w.message.clone());
            (if early { "partial" } else { "ok" }, Some(r.samples()), messages.collect())
        }
        Some(NodeOutcome::Failed(why)) => ("failed", None, vec![why.clone()]),
        None => ("failed", None, vec!["no result: the run ended before the node reported".to_owned()]),
    };
    NodeStatus { node: n.node.clone(), status: status.to_owned(), samples, messages }
}

fn report(nodes: &[NodeRun], skipped: &[Skipped]) {
    let width = nodes.iter().map(|n| n.node.len()).max().unwrap_or(4).max(4);
    eprintln!("{:width$}  {:>10}  {:>8}  STATUS", "NODE", "CONTAINERS", "SAMPLES");
    for n in nodes {
        let (samples, status) = match &n.outcome {
            Some(NodeOutcome::Done(r)) => (r.samples().to_string(), "ok".to_owned()),
            Some(NodeOutcome::Failed(why)) => ("-".into(), format!("FAILED: {why}")),
            None => ("-".into(), "unknown".into()),
        };
        eprintln!("{:width$}  {:>10}  {:>8}  {status}", n.node, n.containers, samples);
        if let Some(NodeOutcome::Done(r)) = &n.outcome {
            for w in &r.warnings {
                let kind = if w.code.starts_with("info-") { "" } else { "warning: " };
                eprintln!("{:width$}  {kind}{}", "", w.message);
            }
        }
    }
    report_skipped(skipped);
}

fn report_skipped(skipped: &[Skipped]) {
    for s in skipped {
        eprintln!("skipped {}/{}: {}", s.pod, s.container, s.reason);
    }
}
