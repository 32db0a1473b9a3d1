//! `kubectl eagle init`: the locked namespace, and the RBAC of the plugin's users printed for
//! review or applied (`cluster::rbac` makes the objects).

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Api;

use crate::cluster::annotations::MANAGED_BY;
use crate::cluster::api::{connect, runtime, Connection};
use crate::cluster::rbac::{apply, comment, manifest, namespace, rbac, subjects, union, Grant};
use crate::error::{CliError, Exit};

/// `init`, as its arguments asked for it.
#[derive(Debug)]
pub struct InitPlan {
    pub conn: Connection,
    pub eagle_namespace: String,
    /// Create (or update) the RBAC objects; else print them.
    pub apply: bool,
    /// Print everything as YAML and change nothing.
    pub dry_run: bool,
    pub grant: Grant,
}

/// `kubectl eagle init`.
pub fn run(args: InitPlan) -> Result<Exit, CliError> {
    let subjects = subjects(&args.grant)?;
    let ns = &args.eagle_namespace;
    let rbac = rbac(ns, &subjects, &args.grant.target_namespaces);
    let manifest = manifest(ns, &rbac, &comment(ns, &args.grant))?;
    if args.dry_run {
        print!("{manifest}");
        return Ok(Exit::Ok);
    }
    runtime()?.block_on(async {
        let (client, _) = connect(&args.conn).await?;
        namespace(&client, ns).await?;
        if !args.apply {
            print!("{manifest}");
            eprintln!(
                "the RBAC above is not applied: review it, then `kubectl apply -f -` it or run `kubectl eagle init --apply`"
            );
            return Ok(Exit::Ok);
        }
        let mut kept = Vec::new();
        for o in &rbac.cluster_roles {
            kept.extend(apply(&Api::all(client.clone()), o, "clusterrole", |_, _| {}).await?);
        }
        for o in &rbac.roles {
            let api = Api::namespaced(client.clone(), o.metadata.namespace.as_deref().unwrap_or(ns));
            kept.extend(apply(&api, o, "role", |_, _| {}).await?);
        }
        for o in &rbac.cluster_role_bindings {
            let union = |new: &mut ClusterRoleBinding, old: &ClusterRoleBinding| union(&mut new.subjects, &old.subjects);
            kept.extend(apply(&Api::all(client.clone()), o, "clusterrolebinding", union).await?);
        }
        for o in &rbac.role_bindings {
            let api = Api::namespaced(client.clone(), o.metadata.namespace.as_deref().unwrap_or(ns));
            let union = |new: &mut RoleBinding, old: &RoleBinding| union(&mut new.subjects, &old.subjects);
            kept.extend(apply(&api, o, "rolebinding", union).await?);
        }
        if kept.is_empty() {
            eprintln!("done: check a user with `kubectl eagle doctor` (as that user)");
            Ok(Exit::Ok)
        } else {
            Err(CliError::Failed(format!(
                "{} existed without the {}={} label and were left as they are: {}; rename or delete them, then run init again",
                kept.len(),
                MANAGED_BY.0,
                MANAGED_BY.1,
                kept.join(", ")
            )))
        }
    })
}
