//! `kubectl eagle clean` and `uninstall`: delete by the project's labels only, propagation
//! Background; what is gone already is not an error.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ApiResource, DeleteParams, GroupVersionKind};
use kube::Api;

use crate::cluster::annotations::ANNOTATION_USER;
use crate::cluster::annotations::{check_run_id, run_of, MANAGED_BY};
use crate::cluster::api::{api_error, connect, runtime, Connection};
use crate::cluster::identity::whoami;
use crate::cluster::runs::{is_mine, runs};
use crate::cluster::store::{
    delete_jobs, delete_pods, instance_selector, list_jobs, list_pods, managed_selector, orphans, runs_of, sweep,
};
use crate::error::{CliError, Exit};

/// `clean`, as its arguments asked for it.
#[derive(Debug)]
pub struct CleanPlan {
    pub conn: Connection,
    pub eagle_namespace: String,
    pub runs: Vec<String>,
    pub all: bool,
    pub dry_run: bool,
    /// Also other users' runs.
    pub all_users: bool,
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
        let selector = if args.all { managed_selector() } else { runs_of(&args.runs) };
        let (jobs, pods) = futures::future::try_join(
            list_jobs(&client, namespace, &selector),
            list_pods(&client, namespace, &selector),
        )
        .await?;
        let me = if args.all_users { None } else { whoami(&client, &args.conn).await };
        let all_views = runs(&jobs, &pods, &HashMap::new());
        let (views, others): (Vec<_>, Vec<_>) =
            all_views.into_iter().partition(|v| is_mine(v.user.as_deref(), me.as_deref()));
        if let (Some(me), false) = (&me, others.is_empty()) {
            let theirs: Vec<String> =
                others.iter().map(|v| format!("{} (of {})", v.id, v.user.as_deref().unwrap_or("?"))).collect();
            if !args.all {
                return Err(CliError::Forbidden(format!(
                    "not your run{}: {}; you are {me}. Clean another user's run with --all-users",
                    if theirs.len() > 1 { "s" } else { "" },
                    theirs.join(", ")
                )));
            }
            println!("kept {} run(s) of other users (--all-users deletes them too)", others.len());
        }
        let orphans: Vec<&Pod> = orphans(&pods, &jobs)
            .into_iter()
            .filter(|p| {
                let owner = p.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_USER));
                is_mine(owner.map(String::as_str), me.as_deref())
            })
            .collect();
        let jobs: Vec<Job> =
            jobs.into_iter().filter(|j| run_of(j).is_none_or(|id| !others.iter().any(|v| v.id == id))).collect();
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
        let instance = instance_selector(namespace);
        // Jobs first (their pods go with them), then pods left without a Job, the limits and
        // the RBAC of `init`, and last the namespace, which takes whatever is still inside. A
        // kind the server does not serve (ValidatingAdmissionPolicy before 1.28) lists as 404:
        // nothing to delete.
        let resource = |group: &str, version: &str, kind: &str, plural: &str| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
        };
        let admission = "admissionregistration.k8s.io";
        let sweeps = [
            (ApiResource::erase::<Job>(&()), "job", Some(namespace.as_str()), &managed),
            (ApiResource::erase::<Pod>(&()), "pod", Some(namespace.as_str()), &managed),
            (
                resource("", "v1", "ResourceQuota", "resourcequotas"),
                "resourcequota",
                Some(namespace.as_str()),
                &instance,
            ),
            (
                resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
                "networkpolicy",
                Some(namespace.as_str()),
                &instance,
            ),
            (
                resource(admission, "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings"),
                "validatingadmissionpolicybinding",
                None,
                &instance,
            ),
            (
                resource(admission, "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
                "validatingadmissionpolicy",
                None,
                &instance,
            ),
            (
                resource(admission, "v1beta1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings"),
                "validatingadmissionpolicybinding",
                None,
                &instance,
            ),
            (
                resource(admission, "v1beta1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
                "validatingadmissionpolicy",
                None,
                &instance,
            ),
            (ApiResource::erase::<ClusterRoleBinding>(&()), "clusterrolebinding", None, &instance),
            (ApiResource::erase::<ClusterRole>(&()), "clusterrole", None, &instance),
            (ApiResource::erase::<RoleBinding>(&()), "rolebinding", None, &instance),
            (ApiResource::erase::<Role>(&()), "role", None, &instance),
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
