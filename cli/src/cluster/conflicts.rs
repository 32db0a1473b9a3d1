//! The conflict gate: before a run creates its Jobs, the runs already busy on its nodes are
//! counted, and `--max-per-node` of them refuse it. Two runs started at the same instant can
//! both pass: it protects nodes from piling up, it is not a lock.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::Client;

use super::annotations::{annotation, run_of, ANNOTATION_NODE, ANNOTATION_TARGET};
use super::store::{created, is_active, list_jobs, runs_selector};
use crate::duration::ago;
use crate::error::CliError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::runs::tests::job;

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
}
