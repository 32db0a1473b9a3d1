//! The task store: the Jobs (and their pods) in the locked namespace, selected by the project's
//! labels. Reading them (one list call each), telling how a Job ended, and deleting them
//! (propagation Background; what is gone already counts as done).

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams};
use kube::{Api, Client};

use super::annotations::{name_of, MANAGED_BY, RUN_LABEL};
use super::api::api_error;
use crate::error::CliError;

pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

pub fn runs_selector() -> String {
    format!("{},{RUN_LABEL}", managed_selector())
}

/// How a Job ended: `Some(Ok(()))` complete, `Some(Err(why))` failed, `None` still active.
pub fn job_end(job: &Job) -> Option<Result<(), String>> {
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
pub fn job_end_time(job: &Job) -> Option<Timestamp> {
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

pub fn is_active(job: &Job) -> bool {
    job_end(job).is_none() && job.metadata.deletion_timestamp.is_none()
}

pub fn created(job: &Job) -> Option<Timestamp> {
    job.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// The pod of a Job: by owner reference, else by the `job-name` label; the newest if several.
pub fn pod_of<'a>(job: &Job, pods: &'a [Pod]) -> Option<&'a Pod> {
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

pub async fn list_jobs(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Job>, CliError> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(api_error(e, "profiling Jobs", namespace)),
    }
}

pub async fn list_pods(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Pod>, CliError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(api_error(e, "profiling pods", namespace)),
    }
}

/// Deletes Jobs (their pods go with them: propagation Background); gone ones count as done.
pub async fn delete_jobs(client: &Client, namespace: &str, jobs: &[Job]) -> Result<usize, CliError> {
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
pub fn orphans<'a>(pods: &'a [Pod], jobs: &[Job]) -> Vec<&'a Pod> {
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

pub async fn delete_pods(client: &Client, pods: &[&Pod]) -> Result<usize, CliError> {
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

/// Deletes every object of one kind that `selector` selects, in `scope` (a namespace) or
/// everywhere; one list call, one delete per object. Objects already being deleted are left to
/// finish.
pub async fn sweep(
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
