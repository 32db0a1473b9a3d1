//! `kubectl eagle fetch RUN`: the graph of a run started with `profile -a`. The run's Jobs say
//! what it profiled (their annotations); the same watch-and-follow loop as a synchronous run
//! reads the agents (`run::attach`), the same rendering writes the graph (`profile::render`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::check::RuleSpecs;
use crate::cluster::annotations::{check_run_id, name_of, NetSide, RunAnnotations};
use crate::cluster::api::{connect, runtime, Connection};
use crate::cluster::identity::whoami;
use crate::cluster::plan::DEFAULT_WINDOW;
use crate::cluster::profile::{self, Finished};
use crate::cluster::run::{self, NodeOutcome, NodeRun};
use crate::cluster::runs::is_mine;
use crate::cluster::store::{created, delete_jobs, is_active, list_jobs, run_selector};
use crate::commands::net::NetOutput;
use crate::duration::{ago, human};
use crate::error::{CliError, Exit};
use crate::format::Format;
use crate::gate::{Gate, SummaryRequest};
use crate::merge::Merger;
use crate::net_report::Naming;
use crate::output::Destination;
use crate::placement::{GroupBy, Placements};
use crate::push::target::PushPlan;
use crate::run_info::RunInfo;

/// `fetch`, as its arguments asked for it.
#[derive(Debug)]
pub struct FetchPlan {
    pub conn: Connection,
    pub eagle_namespace: String,
    pub run: String,
    pub output: PathBuf,
    pub format: Option<Format>,
    pub group_by: GroupBy,
    /// `--net FILE`: the run's network report.
    pub net: Option<NetOutput>,
    /// Delete the run's Jobs once the profile is written.
    pub clean: bool,
    /// Also another user's run.
    pub all_users: bool,
    pub summary: SummaryRequest,
    pub rules: RuleSpecs,
    pub push: PushPlan,
}

/// `kubectl eagle fetch RUN -o FILE`.
pub fn run(plan: FetchPlan) -> Result<Exit, CliError> {
    check_run_id(&plan.run)?;
    let gate = Gate::plan(&plan.summary, &plan.rules)?;
    let destination = gate.watch(Destination::plan(Some(&plan.output), plan.format)?.with_push(plan.push.clone()));
    let exit = runtime()?.block_on(fetch_run(&plan, &destination))?;
    gate.after_write(&destination, exit)
}

async fn fetch_run(args: &FetchPlan, destination: &Destination) -> Result<Exit, CliError> {
    let namespace = &args.eagle_namespace;
    let id = &args.run;
    let (client, _) = connect(&args.conn).await?;
    let mut jobs = list_jobs(&client, namespace, &run_selector(id)).await?;
    if jobs.is_empty() {
        return Err(CliError::NotFound(format!(
            "no run {id} in namespace {namespace}: it never existed, was cleaned, or its results expired (runs started with -a keep them for --ttl, 24h by default); `kubectl eagle list` shows the runs there are"
        )));
    }
    jobs.sort_by_key(|j| (name_of(j).len(), name_of(j).to_owned()));
    let first = &jobs[0];
    let said = RunAnnotations::of(first);
    if !args.all_users {
        let me = whoami(&client, &args.conn).await;
        if let (false, Some(me), Some(owner)) = (is_mine(said.user.as_deref(), me.as_deref()), &me, &said.user) {
            return Err(CliError::Forbidden(format!(
                "not your run: {id} (of {owner}); you are {me}. Fetch another user's run with --all-users"
            )));
        }
    }
    let what = said.target.clone().unwrap_or_else(|| id.clone());
    match (said.net, &args.net) {
        (NetSide::Only, None) => {
            return Err(CliError::Usage(format!(
                "run {id} watched the network only (`net -a`): fetch its report with --net FILE (.json, .prom, .dot, or a table)"
            )))
        }
        (NetSide::None, Some(_)) => {
            return Err(CliError::Usage(format!(
                "run {id} did not watch the network: --net is for runs of `net -a` or `profile --net FILE -a`"
            )))
        }
        (NetSide::BesideProfile, None) => {
            eprintln!("note: run {id} watched the network too: add --net FILE to write its report");
        }
        _ => {}
    }
    let window = said.duration_ms.map(Duration::from_millis).unwrap_or(DEFAULT_WINDOW);
    let records: Vec<RunAnnotations> = jobs.iter().map(RunAnnotations::of).collect();
    let total = records.iter().filter_map(|r| r.nodes).max().unwrap_or(jobs.len());
    let mut placements = Placements::new();
    let mut unplaced = 0;
    for record in &records {
        match record.placements() {
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
    let frequency = said.frequency_hz;
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
        .zip(&records)
        .map(|(j, record)| {
            let node = record.node.clone().unwrap_or_else(|| "?".into());
            let containers = record.placements().and_then(Result::ok).map_or(0, |p| p.len());
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
    let mut merger = Merger::new(&placements, args.group_by);
    let outcome = run::attach(
        &client,
        namespace,
        id,
        nodes,
        Instant::now() + wait,
        args.conn.max_concurrent_requests,
        &mut |result| merger.take(result),
    )
    .await?;
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
    let finished = Finished { what: &what, window, elapsed: fetching.elapsed(), skipped: &[], placements: &placements };
    let exit = match (said.net, &args.net) {
        // The 1 Hz stacks of a `net` run are not shown, as `net` does not show them.
        (NetSide::Only, Some(out)) => {
            profile::report(&outcome.nodes, &[], &placements);
            write_net(&client, &outcome, &placements, out).await?
        }
        (NetSide::BesideProfile, Some(out)) => {
            let graph = profile::render(&outcome, &merger.into_stacks(), &finished, destination);
            match write_net(&client, &outcome, &placements, out).await {
                Ok(Exit::Partial) if matches!(graph, Ok(Exit::Ok)) => Exit::Partial,
                Ok(_) => graph?,
                Err(e) if graph.is_ok() => return Err(e),
                Err(e) => {
                    eprintln!("error: {e}");
                    graph?
                }
            }
        }
        _ => profile::render(&outcome, &merger.into_stacks(), &finished, destination)?,
    };
    if args.clean {
        let deleted = delete_jobs(&client, namespace, &jobs).await?;
        eprintln!("cleaned run {id}: deleted {deleted} Job(s)");
    }
    Ok(exit)
}

/// The nodes' network records merged and written as `out` asks, the rows named by pod and the
/// peers from the target namespaces' pods and services (listed now, as `net` lists them after
/// its window). Partial when a node delivered none.
async fn write_net(
    client: &kube::Client,
    outcome: &run::Outcome,
    placements: &Placements,
    out: &NetOutput,
) -> Result<Exit, CliError> {
    let (net, partial) = crate::cluster::net::merge_nodes(outcome)?;
    let namespaces: std::collections::BTreeSet<&str> = placements.values().map(|p| p.namespace.as_str()).collect();
    let namespaces: Vec<&str> = namespaces.into_iter().collect();
    let directory = crate::cluster::net::directory(client, &namespaces).await;
    out.write(&net, &Naming { placements: placements.clone(), directory })?;
    Ok(if partial || outcome.interrupted { Exit::Partial } else { Exit::Ok })
}
