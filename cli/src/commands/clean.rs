//! `kubectl eagle clean` and `uninstall`: delete by the project's labels only, propagation
//! Background; what is gone already is not an error.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ApiResource, DeleteParams};
use kube::Api;

use crate::cluster::annotations::{check_run_id, run_of, INSTANCE_LABEL, MANAGED_BY, RUN_LABEL};
use crate::cluster::api::{api_error, connect, runtime, Connection};
use crate::cluster::runs::runs;
use crate::cluster::store::{delete_jobs, delete_pods, list_jobs, list_pods, managed_selector, orphans, sweep};
use crate::error::{CliError, Exit};

/// `clean`, as its arguments asked for it.
#[derive(Debug)]
pub struct CleanPlan {
    pub conn: Connection,
    pub eagle_namespace: String,
    pub runs: Vec<String>,
    pub all: bool,
    pub dry_run: bool,
}

/// `uninstall`, as its arguments asked for it.
#[derive(Debug)]
pub struct UninstallPlan {
    pub conn: Connection,
    pub eagle_namespace: String,
    pub dry_run: bool,
}

/// `kubectl eagle clean RUN... | --all`.
pub fn run(args: CleanPlan) -> Result<Exit, CliError> {
    for id in &args.runs {
        check_run_id(id)?;
    }
    let namespace = &args.eagle_namespace;
    runtime()?.block_on(async {
        let (client, _) = connect(&args.conn).await?;
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
pub fn uninstall(args: UninstallPlan) -> Result<Exit, CliError> {
    let namespace = &args.eagle_namespace;
    runtime()?.block_on(async {
        let (client, _) = connect(&args.conn).await?;
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
