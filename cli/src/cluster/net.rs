//! `kubectl eagle net` in the cluster: the Jobs of a profile, their agents asked for the network
//! side of the window (`AgentArgs::net`); each node's record merged into one (counters add,
//! latency histograms merge exactly), its rows attributed to pods by the container ids the CLI
//! resolved, and the peers named from one list of pods and one of services per namespace the
//! run looked at.

use eagle_proto::NetPayload;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use super::api::{ensure_namespace, runtime, transient, with_retries};
use super::conflicts::refuse_conflicts;
use super::permissions::may_run;
use super::profile::{count, ended_early, prepare, profile_run, report, target_namespaces, ClusterRequest};
use super::run::{self, NodeOutcome};
use crate::duration::human;
use crate::error::{CliError, Exit};
use crate::net_map::PeerDirectory;
use crate::output::Destination;
use crate::placement::Placements;

/// The network side of a cluster window, merged over its nodes.
pub struct ClusterNet {
    pub net: NetPayload,
    /// Container id -> pod, for the rows.
    pub placements: Placements,
    /// The peers' pods and services.
    pub directory: PeerDirectory,
    /// A node failed, stopped early or sent no record, or the run was interrupted.
    pub partial: bool,
    pub run_id: String,
}

/// Runs the Jobs for `req` (whose `net` is set), waits for every node, prints the per-node
/// table and returns the merged record.
pub fn net(req: &ClusterRequest) -> Result<ClusterNet, CliError> {
    runtime()?.block_on(async {
        let p = prepare(req, true).await?;
        ensure_namespace(&p.client, &req.eagle_namespace).await?;
        if !req.force {
            let nodes: Vec<&str> = p.jobs.iter().map(|(node, _, _)| node.as_str()).collect();
            refuse_conflicts(&p.client, &req.eagle_namespace, &nodes, req.max_per_node).await?;
        }
        let namespaces: Vec<String> = target_namespaces(&p.resolution).into_iter().map(str::to_owned).collect();
        let namespace_refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
        may_run(&p.client, &req.eagle_namespace, &namespace_refs).await?;
        eprintln!(
            "watching the network of {} ({} on {}) for {}: run {}",
            p.what,
            count(p.resolution.running.len(), "container"),
            count(p.jobs.len(), "node"),
            human(req.window),
            p.run_id
        );
        let outcome = run::execute(
            &p.client,
            &req.eagle_namespace,
            &p.run_id,
            p.jobs,
            req.window,
            req.keep,
            req.conn.max_concurrent_requests,
            // The network records are merged below; the stacks are not asked for.
            &mut |_| {},
        )
        .await?;
        let placements: Placements = p.resolution.running.iter().map(|c| (c.id.clone(), c.placement.clone())).collect();
        report(&outcome.nodes, &p.resolution.skipped, &placements);
        let (net, partial_net) = merge_nodes(&outcome)?;
        let directory = directory(&p.client, &namespace_refs).await;
        let partial = partial_net || outcome.interrupted;
        Ok(ClusterNet { net, placements, directory, partial, run_id: p.run_id })
    })
}

/// What writing a profile's graph came to, and its network side (or why there is none).
pub type GraphAndNet = (Result<Exit, CliError>, Result<ClusterNet, CliError>);

/// `profile --net`: a profile's run whose agents watched the network too. Returns what writing
/// the graph came to and the merged network record with what names its rows, or why there is
/// none (every node failed). `partial` there is the network side's alone.
pub fn profile_with_net(req: &ClusterRequest, destination: &Destination) -> Result<GraphAndNet, CliError> {
    runtime()?.block_on(async {
        let profiled = profile_run(req, destination).await?;
        let net = match merge_nodes(&profiled.outcome) {
            Ok((net, partial)) => {
                let namespaces: Vec<&str> = profiled.namespaces.iter().map(String::as_str).collect();
                let directory = directory(&profiled.client, &namespaces).await;
                Ok(ClusterNet {
                    net,
                    placements: profiled.placements,
                    directory,
                    partial: partial || profiled.outcome.interrupted,
                    run_id: profiled.run_id,
                })
            }
            Err(e) => Err(e),
        };
        Ok((profiled.graph, net))
    })
}

/// The nodes' network records merged (counters add, histograms merge exactly), and whether one
/// is missing or short (a node failed, stopped early, or its agent sent none: said per node).
pub(crate) fn merge_nodes(outcome: &run::Outcome) -> Result<(NetPayload, bool), CliError> {
    let mut merged: Option<NetPayload> = None;
    let (mut failed, mut early) = (0, 0);
    for n in &outcome.nodes {
        match &n.outcome {
            Some(NodeOutcome::Done(r)) => match &r.net {
                Some(net) => {
                    early += usize::from(ended_early(r));
                    match &mut merged {
                        Some(m) => m.merge(net),
                        None => merged = Some(net.clone()),
                    }
                }
                None => {
                    failed += 1;
                    eprintln!(
                        "node {}: its agent sent no network record: the agent image is older than this kubectl-eagle; use an image of the same version (--image)",
                        n.node
                    );
                }
            },
            _ => failed += 1,
        }
    }
    let Some(net) = merged else {
        return Err(CliError::Failed(format!(
            "no node delivered the network side of its window ({} of {} failed): see the table above",
            failed,
            outcome.nodes.len()
        )));
    };
    Ok((net, failed > 0 || early > 0))
}

/// One list of pods and one of services per namespace: what names the peers. Read after the
/// window, so pods started during it are known. A list the user may not read leaves those
/// peers to their addresses, with one line that says so; the run stands.
pub(crate) async fn directory(client: &Client, namespaces: &[&str]) -> PeerDirectory {
    let (mut pods, mut services) = (Vec::new(), Vec::new());
    let params = ListParams::default();
    for ns in namespaces {
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
        match with_retries(transient, || pod_api.list(&params)).await {
            Ok(list) => pods.extend(list.items),
            Err(e) => {
                eprintln!("warning: cannot list the pods of namespace {ns} ({e}): peers there are shown by address")
            }
        }
        let service_api: Api<Service> = Api::namespaced(client.clone(), ns);
        match with_retries(transient, || service_api.list(&params)).await {
            Ok(list) => services.extend(list.items),
            Err(e) => eprintln!(
                "warning: cannot list the services of namespace {ns} ({e}): peers there are shown by address; `kubectl eagle init` grants `list services`"
            ),
        }
    }
    PeerDirectory::new(&pods, &services)
}
