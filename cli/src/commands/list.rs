//! `kubectl eagle list`: every run in the locked namespace, newest first. One list of Jobs, one
//! of pods, and the last lines of each finished agent's log, whose trailer gives its sample
//! count: that is how an empty run is told from a good one.

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::LogParams;
use kube::{Api, Client};

use crate::cluster::api::{connect, runtime, Connection};
use crate::cluster::identity::whoami;
use crate::cluster::plan::AGENT_CONTAINER;
use crate::cluster::runs::{is_mine, runs, table};
use crate::cluster::store::{list_jobs, list_pods, runs_selector};
use crate::error::{CliError, Exit};

/// `list`, as its arguments asked for it.
#[derive(Debug)]
pub struct ListPlan {
    pub conn: Connection,
    pub eagle_namespace: String,
    /// JSON on stdout instead of the table.
    pub json: bool,
    /// Also other users' runs.
    pub all_users: bool,
}

/// `kubectl eagle list`.
pub fn run(args: ListPlan) -> Result<Exit, CliError> {
    let namespace = &args.eagle_namespace;
    let (views, me) = runtime()?.block_on(async {
        let (client, _) = connect(&args.conn).await?;
        let me = if args.all_users { None } else { whoami(&client, &args.conn).await };
        let selector = runs_selector();
        let (jobs, pods) = futures::future::try_join(
            list_jobs(&client, namespace, &selector),
            list_pods(&client, namespace, &selector),
        )
        .await?;
        let samples = samples_of_finished(&client, namespace, &pods).await;
        Ok::<_, CliError>((runs(&jobs, &pods, &samples), me))
    })?;
    let (views, others): (Vec<_>, Vec<_>) = views.into_iter().partition(|v| is_mine(v.user.as_deref(), me.as_deref()));
    if !others.is_empty() {
        eprintln!("{} run(s) of other users not shown (--all-users shows them)", others.len());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views).expect("runs serialize"));
    } else if views.is_empty() {
        match &me {
            Some(me) if !others.is_empty() => eprintln!("no profiling runs of {me} in namespace {namespace}"),
            _ => eprintln!("no profiling runs in namespace {namespace}"),
        }
    } else {
        print!("{}", table(&views, Timestamp::now()));
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
                let params =
                    LogParams { container: Some(AGENT_CONTAINER.into()), tail_lines: Some(5), ..Default::default() };
                let tail = api.logs(&name, &params).await.ok()?;
                Some((name, eagle_proto::trailer_in_tail(&tail)?.samples))
            }
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await
}
