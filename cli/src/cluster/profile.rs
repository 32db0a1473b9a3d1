//! A cluster profile from its request to the written graph and the per-node report:
//! resolve -> plan -> (conflict gate) -> run -> render. `profile -a` stops after creating the
//! Jobs ([`start_detached`]); `fetch` joins at [`render`].

use std::time::{Duration, Instant};

use eagle_proto::{CgroupCpuStat, NodeResult, ProfileMode, Runtime, WarningCode};

use k8s_openapi::api::batch::v1::Job;
use kube::Api;

use super::annotations::{NetSide, Task};
use super::api::{connect, ensure_namespace, new_run_id, runtime, Connection};
use super::conflicts::refuse_conflicts;
use super::identity;
use super::permissions::may_run;
use super::plan::{self, Image, PlanOptions};
use super::resolve::{self, Resolution, Skipped};
use super::run::{self, NodeOutcome, NodeRun};
use crate::closing::{self, Profile};
use crate::duration::{human, span};
use crate::error::{CliError, Exit};
use crate::merge::{self, MergedStacks, Merger};
use crate::output::{Destination, Labels, Stacks};
use crate::placement::{GroupBy, Placements};
use crate::run_info::{CgroupCpu, NodeStatus, NodeStatusKind, RunInfo};
use crate::table::{self, Align, Column};
use crate::target::ClusterKind;

/// A cluster profile, as the user asked for it.
#[derive(Debug)]
pub struct ClusterRequest {
    pub conn: Connection,
    /// The locked namespace the Jobs run in.
    pub eagle_namespace: String,
    pub targets: Vec<(ClusterKind, String)>,
    /// The targets as the user wrote them, for titles and `list`.
    pub target_words: Vec<String>,
    pub selector: Option<String>,
    /// The targets' namespace; `None` is the context's.
    pub namespace: Option<String>,
    pub container: Option<String>,
    pub image: Image,
    pub window: Duration,
    pub frequency_hz: u64,
    pub runtime: Option<Runtime>,
    pub python_native: bool,
    pub mode: ProfileMode,
    /// Off-CPU blocks shorter than this are not counted.
    pub min_block_us: u64,
    /// The network side of the window too (`net`).
    pub net: bool,
    /// `net`: the network side is all the run is for (its 1 Hz stacks are not shown).
    pub net_only: bool,
    pub capabilities: bool,
    pub dry_run: bool,
    pub keep: bool,
    pub is_async: bool,
    pub ttl: Option<Duration>,
    pub max_per_node: u32,
    pub force: bool,
    pub group_by: GroupBy,
    /// `fetch` flags that write the graph as this run would have: `--format`, `--group-by`.
    pub fetch_flags: Vec<String>,
}

/// The run as a user would type it: `-n NS` only where a target or the selector is looked up in
/// it (`namespace/NAME` names its own).
fn describe(req: &ClusterRequest, namespace: &str) -> String {
    let mut parts = req.target_words.clone();
    if let Some(l) = &req.selector {
        parts.push(format!("-l {l}"));
    }
    let namespaced = req.selector.is_some() || req.targets.iter().any(|(kind, _)| *kind != ClusterKind::Namespace);
    if namespaced {
        parts.push(format!("-n {namespace}"));
    }
    parts.join(" ")
}

/// `1 container`, `2 containers`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub(super) struct Prepared {
    pub client: kube::Client,
    pub resolution: Resolution,
    pub jobs: Vec<(String, usize, k8s_openapi::api::batch::v1::Job)>,
    pub run_id: String,
    pub what: String,
}

/// Resolves and plans the run; `record_user`: ask the API server who the user is, to record it
/// on the Jobs (a POST, which `--dry-run` does not make).
pub(super) async fn prepare(req: &ClusterRequest, record_user: bool) -> Result<Prepared, CliError> {
    let (client, default_ns) = connect(&req.conn).await?;
    let namespace = req.namespace.clone().unwrap_or(default_ns);
    let request = resolve::Request {
        namespace: &namespace,
        targets: &req.targets,
        selector: req.selector.as_deref(),
        container: req.container.as_deref(),
    };
    let resolution = resolve::resolve(&client, &request).await?;
    let what = describe(req, &namespace);
    if resolution.running.is_empty() {
        let mut why: Vec<String> =
            resolution.skipped.iter().take(5).map(|s| format!("{}/{} {}", s.pod, s.container, s.reason)).collect();
        if resolution.skipped.len() > 5 {
            why.push(format!("and {} more", resolution.skipped.len() - 5));
        }
        return Err(CliError::NothingToProfile(format!("no running containers in {what}: {}", why.join("; "))));
    }
    let run_id = new_run_id();
    let user = if record_user { identity::whoami(&client, &req.conn).await } else { None };
    let opts = PlanOptions {
        run_id: run_id.clone(),
        target: what.clone(),
        namespace: req.eagle_namespace.clone(),
        image: req.image.clone(),
        duration: req.window,
        frequency_hz: req.frequency_hz,
        capabilities_only: req.capabilities,
        ttl_after_finished: plan::ttl_seconds(req.ttl, req.is_async),
        runtime: req.runtime,
        python_native: req.python_native,
        mode: req.mode,
        min_block_us: req.min_block_us,
        net: req.net,
        stacks: !req.net_only,
    };
    let by_node = resolution.by_node();
    let nodes = by_node.len();
    let jobs = by_node
        .into_iter()
        .enumerate()
        .map(|(i, (node, containers))| {
            let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
            let namespaces: std::collections::BTreeSet<&str> =
                containers.iter().map(|c| c.placement.namespace.as_str()).collect();
            let namespaces: Vec<&str> = namespaces.into_iter().collect();
            let mut job = plan::job_for_node(&opts, i, node, &ids, &namespaces);
            // What `list` and `fetch` read back: the run's size and each container's place.
            let net = match (req.net, req.net_only) {
                (false, _) => NetSide::None,
                (true, true) => NetSide::Only,
                (true, false) => NetSide::BesideProfile,
            };
            let task = Task { nodes, is_async: req.is_async, frequency_hz: req.frequency_hz, user: user.clone(), net };
            task.annotate(&mut job, containers.iter().map(|c| (c.id.as_str(), &c.placement)));
            (node.to_owned(), ids.len(), job)
        })
        .collect();
    Ok(Prepared { client, resolution, jobs, run_id, what })
}

/// The namespaces of the containers a run profiles, each once.
pub(super) fn target_namespaces(resolution: &Resolution) -> Vec<&str> {
    let set: std::collections::BTreeSet<&str> =
        resolution.running.iter().map(|c| c.placement.namespace.as_str()).collect();
    set.into_iter().collect()
}

/// `--dry-run`: the namespace and the Jobs as YAML; nothing is created.
pub fn dry_run(req: &ClusterRequest) -> Result<Exit, CliError> {
    let prepared = runtime()?.block_on(prepare(req, false))?;
    let mut out = String::new();
    out.push_str(
        &serde_saphyr::to_string(&plan::locked_namespace(&req.eagle_namespace))
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

/// A synchronous run: creates the Jobs, follows them, deletes them, writes the graph.
pub fn profile(req: &ClusterRequest, destination: &Destination) -> Result<Exit, CliError> {
    runtime()?.block_on(async { profile_run(req, destination).await?.graph })
}

/// A synchronous run done, its graph written (or why not), and what else its nodes sent.
pub(super) struct Profiled {
    /// What writing the graph came to.
    pub graph: Result<Exit, CliError>,
    pub outcome: run::Outcome,
    pub placements: Placements,
    pub client: kube::Client,
    /// The namespaces of the targets.
    pub namespaces: Vec<String>,
    pub run_id: String,
}

/// [`profile`]'s steps, keeping the nodes' outcomes for more than the graph (`profile --net`).
pub(super) async fn profile_run(req: &ClusterRequest, destination: &Destination) -> Result<Profiled, CliError> {
    {
        let p = prepare(req, true).await?;
        let window = req.window;
        ensure_namespace(&p.client, &req.eagle_namespace).await?;
        if !req.force {
            let nodes: Vec<&str> = p.jobs.iter().map(|(node, _, _)| node.as_str()).collect();
            refuse_conflicts(&p.client, &req.eagle_namespace, &nodes, req.max_per_node).await?;
        }
        may_run(&p.client, &req.eagle_namespace, &target_namespaces(&p.resolution)).await?;
        eprintln!(
            "profiling {} ({} on {}) for {} at {} Hz: run {}",
            p.what,
            count(p.resolution.running.len(), "container"),
            count(p.jobs.len(), "node"),
            human(window),
            req.frequency_hz,
            p.run_id
        );
        let started = Instant::now();
        let placements: Placements = p.resolution.running.iter().map(|c| (c.id.clone(), c.placement.clone())).collect();
        let mut merger = Merger::new(&placements, req.group_by);
        let outcome = run::execute(
            &p.client,
            &req.eagle_namespace,
            &p.run_id,
            p.jobs,
            window,
            req.keep,
            req.conn.max_concurrent_requests,
            &mut |result| merger.take(result),
        )
        .await?;
        let elapsed = started.elapsed();
        let stacks = merger.into_stacks();
        let finished =
            Finished { what: &p.what, window, elapsed, skipped: &p.resolution.skipped, placements: &placements };
        let graph = render(&outcome, &stacks, &finished, destination);
        let namespaces = target_namespaces(&p.resolution).into_iter().map(str::to_owned).collect();
        Ok(Profiled { graph, outcome, placements, client: p.client, namespaces, run_id: p.run_id })
    }
}

/// What is known about a run once its nodes have their outcomes.
pub struct Finished<'a> {
    pub what: &'a str,
    pub window: Duration,
    pub elapsed: Duration,
    pub skipped: &'a [Skipped],
    /// Where the run's containers are: names the cgroups of the summary by pod.
    pub placements: &'a Placements,
}

/// The per-node table, then the graph of `stacks`, merged from the nodes that delivered as
/// their results came ([`Merger::take`]): shared by a synchronous run and `fetch`.
pub fn render(
    outcome: &run::Outcome,
    stacks: &MergedStacks,
    run: &Finished,
    destination: &Destination,
) -> Result<Exit, CliError> {
    let done: Vec<&NodeResult> = outcome
        .nodes
        .iter()
        .filter_map(|n| match &n.outcome {
            Some(NodeOutcome::Done(r)) => Some(r.as_ref()),
            _ => None,
        })
        .collect();
    let failed = outcome.nodes.len() - done.len();
    report(&outcome.nodes, run.skipped, run.placements);
    if done.is_empty() {
        return Err(CliError::Failed(format!(
            "no node delivered a profile ({} failed): see the table above",
            outcome.nodes.len()
        )));
    }
    let unit = merge::unit_of(done.iter().copied()).map_err(CliError::Failed)?;
    if stacks.is_empty() {
        return Err(CliError::NothingToProfile(format!(
            "no samples of {} in {}: the containers used no CPU; try a longer --duration while they are busy",
            run.what,
            human(run.window)
        )));
    }
    // A node stopped before its window ended (a deadline, an eviction or drain, another user's
    // `clean`, Ctrl-C) delivers a valid but shorter profile: the run is partial all the same.
    let ended_early = done.iter().filter(|r| ended_early(r)).count();
    let partial = failed > 0 || outcome.interrupted || ended_early > 0;
    let frequency = done[0].header.frequency_hz;
    let rate = if unit == eagle_proto::Unit::CpuSamples { format!(" at {frequency} Hz") } else { String::new() };
    let mut subtitle = format!(
        "{}{rate}, {}, {} of {} nodes",
        human(run.window),
        crate::output::amount(stacks.total(), unit),
        done.len(),
        outcome.nodes.len()
    );
    if partial {
        let mut why = Vec::new();
        if outcome.interrupted {
            why.push("interrupted".to_owned());
        } else if ended_early > 0 {
            why.push(format!("{ended_early} node(s) ended early"));
        }
        if failed > 0 {
            why.push(format!("{failed} node(s) failed"));
        }
        let why = why.join(", ");
        subtitle.push_str(&format!(" | PARTIAL: {why}"));
    }
    closing::write(
        destination,
        Profile {
            stacks: Stacks::Merged(stacks),
            labels: Labels { title: crate::output::title(run.what, unit), subtitle },
            run: RunInfo {
                unit: Some(unit),
                // The agents' own clocks, as in local runs; also known to `fetch`.
                started_unix_ms: done.iter().map(|r| r.header.started_unix_ms).min(),
                partial: Some(partial),
                nodes: Some(outcome.nodes.iter().map(node_status).collect()),
                cgroups: CgroupCpu::of_nodes(done.iter().copied(), run.placements),
                ..Default::default()
            },
            partial: Some(partial),
            tail: format!(", {}){}", human(run.elapsed), if partial { " PARTIAL" } else { "" }),
        },
    )
}

/// A node's line in the `--summary` file: what the table on stderr says, for CI to read.
fn node_status(n: &NodeRun) -> NodeStatus {
    let (status, samples, messages) = match &n.outcome {
        Some(NodeOutcome::Done(r)) => {
            let early = ended_early(r);
            let messages = r.warnings.iter().filter(|w| !w.code.is_info()).map(|w| w.message.clone());
            let status = if early { NodeStatusKind::Partial } else { NodeStatusKind::Ok };
            (status, Some(r.samples()), messages.collect())
        }
        Some(NodeOutcome::Failed(why)) => (NodeStatusKind::Failed, None, vec![why.clone()]),
        None => (NodeStatusKind::Failed, None, vec!["no result: the run ended before the node reported".to_owned()]),
    };
    NodeStatus { node: n.node.clone(), status, samples, messages }
}

/// Whether a node's agent stopped before its window ended, as it says in an `ended-early`
/// warning.
pub(super) fn ended_early(result: &NodeResult) -> bool {
    result.warnings.iter().any(|w| w.code == WarningCode::EndedEarly)
}

/// The per-node table, each node's warnings under its row; a cgroup's counters named by the
/// pod and container of `placements` where the agent said whose the cgroup is.
pub(crate) fn report(nodes: &[NodeRun], skipped: &[Skipped], placements: &Placements) {
    let columns = [
        Column { align: Align::Left, min_width: 4 },
        Column { align: Align::Right, min_width: 10 },
        Column { align: Align::Right, min_width: 8 },
        table::LEFT,
    ];
    let mut rows = vec![["NODE", "CONTAINERS", "SAMPLES", "STATUS"].map(str::to_owned).to_vec()];
    for n in nodes {
        let (samples, status) = match &n.outcome {
            Some(NodeOutcome::Done(r)) if ended_early(r) => {
                (r.samples().to_string(), "PARTIAL: ended early".to_owned())
            }
            Some(NodeOutcome::Done(r)) => (r.samples().to_string(), "ok".to_owned()),
            Some(NodeOutcome::Failed(why)) => ("-".into(), format!("FAILED: {why}")),
            None => ("-".into(), "unknown".into()),
        };
        rows.push(vec![n.node.clone(), n.containers.to_string(), samples, status]);
    }
    let widths = table::widths(&columns, &rows);
    eprintln!("{}", table::line(&columns, &widths, &rows[0]));
    for (n, row) in nodes.iter().zip(&rows[1..]) {
        eprintln!("{}", table::line(&columns, &widths, row));
        if let Some(NodeOutcome::Done(r)) = &n.outcome {
            for w in r.shown_warnings() {
                let kind = if w.code.is_info() { "" } else { "warning: " };
                let pod = CgroupCpuStat::from_warning(w)
                    .and_then(|s| placements.get(&s.container?))
                    .map_or_else(String::new, |p| {
                        format!("pod {}/{}, container {}: ", p.namespace, p.pod, p.container)
                    });
                eprintln!("{:width$}  {kind}{pod}{}", "", eagle_proto::for_people(w), width = widths[0]);
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

/// `s` as a shell word: as is where that is safe, else single-quoted.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `kubectl eagle fetch RUN OUTPUTS...` with the connection flags `req` was given.
pub fn fetch_command_with(req: &ClusterRequest, run_id: &str, outputs: Vec<String>) -> String {
    let mut cmd = vec!["kubectl".to_owned(), "eagle".into(), "fetch".into(), run_id.to_owned()];
    cmd.extend(outputs);
    cmd.extend(req.fetch_flags.iter().cloned());
    if let Some(k) = &req.conn.kubeconfig {
        cmd.extend(["--kubeconfig".into(), quote(&k.to_string_lossy())]);
    }
    if let Some(c) = &req.conn.context {
        cmd.extend(["--context".into(), quote(c)]);
    }
    if req.eagle_namespace != "kube-eagle" {
        cmd.extend(["--eagle-namespace".into(), quote(&req.eagle_namespace)]);
    }
    cmd.join(" ")
}

/// `profile -a`: plans and creates the Jobs like a synchronous run, prints the run id
/// (stdout) and how to fetch it (stderr, as `fetch_command` writes it), and returns.
pub fn start_detached(req: &ClusterRequest, fetch_command: impl Fn(&str) -> String) -> Result<Exit, CliError> {
    let namespace = &req.eagle_namespace;
    runtime()?.block_on(async {
        let p = prepare(req, true).await?;
        ensure_namespace(&p.client, namespace).await?;
        if !req.force {
            let nodes: Vec<&str> = p.jobs.iter().map(|(node, _, _)| node.as_str()).collect();
            refuse_conflicts(&p.client, namespace, &nodes, req.max_per_node).await?;
        }
        may_run(&p.client, namespace, &target_namespaces(&p.resolution)).await?;
        let job_api: Api<Job> = Api::namespaced(p.client.clone(), namespace);
        let mut nodes = run::node_runs(&p.jobs, |_| indicatif::ProgressBar::hidden());
        let create_error =
            run::create(&job_api, namespace, &p.jobs, &mut nodes, req.conn.max_concurrent_requests).await;
        let failed: Vec<&NodeRun> = nodes.iter().filter(|n| n.outcome.is_some()).collect();
        if failed.len() == nodes.len() {
            return Err(create_error.expect("every node failed at creation"));
        }
        for n in &failed {
            if let Some(NodeOutcome::Failed(why)) = &n.outcome {
                eprintln!("node {}: no Job: {why}", n.node);
            }
        }
        let ttl = Duration::from_secs(plan::ttl_seconds(req.ttl, true) as u64);
        println!("{}", p.run_id);
        eprintln!(
            "started run {}: {} ({} on {}) for {} at {} Hz; its results are kept {} after it ends",
            p.run_id,
            p.what,
            count(p.resolution.running.len(), "container"),
            count(nodes.len() - failed.len(), "node"),
            human(req.window),
            req.frequency_hz,
            span(ttl.as_secs() as i64)
        );
        eprintln!("fetch it with:\n  {}", fetch_command(&p.run_id));
        Ok(if failed.is_empty() { Exit::Ok } else { Exit::Partial })
    })
}
