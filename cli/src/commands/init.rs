//! `kubectl eagle init`: the locked namespace, the RBAC of the plugin's users, and the limits
//! around the namespace (quota, network policy, admission policy), printed for review or
//! applied (`cluster::rbac` and `cluster::limits` make the objects).

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use serde_json::Value;

use crate::cluster::annotations::MANAGED_BY;
use crate::cluster::api::{connect, runtime, Connection};
use crate::cluster::limits::{self, FALLBACK_MAX_PODS};
use crate::cluster::rbac::{apply, comment, manifest, namespace, rbac, subjects, union, Grant};
use crate::error::{CliError, Exit};
use crate::verbose::vlog;

/// The API versions of ValidatingAdmissionPolicy, newest first: v1 from Kubernetes 1.30,
/// v1beta1 on 1.28-1.29 where the cluster enabled it.
const POLICY_VERSIONS: [&str; 2] = ["admissionregistration.k8s.io/v1", "admissionregistration.k8s.io/v1beta1"];

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
    /// The quota on pods in the locked namespace; `None`: the cluster's node count.
    pub max_pods: Option<u32>,
    /// The agent image the admission policy admits.
    pub image: String,
}

/// `kubectl eagle init`.
pub fn run(args: InitPlan) -> Result<Exit, CliError> {
    let subjects = subjects(&args.grant)?;
    let ns = &args.eagle_namespace;
    let rbac = rbac(ns, &subjects, &args.grant.target_namespaces);
    let limits_of = |max_pods: u32| {
        let v1 = POLICY_VERSIONS[0];
        vec![
            limits::resource_quota(ns, max_pods),
            limits::network_policy(ns),
            limits::admission_policy(ns, &args.image, v1),
            limits::admission_binding(ns, v1),
            limits::run_policy(ns, v1),
            limits::run_binding(ns, v1),
        ]
    };
    let mut comment = comment(ns, &args.grant);
    comment.push_str(&format!(
        "Limits: a quota on pods, a deny-all NetworkPolicy, and ValidatingAdmissionPolicies (Kubernetes 1.30+) admitting only the agent image {} and only Jobs whose creator may list pods in the namespaces they profile.\n",
        args.image
    ));
    if args.dry_run {
        let max_pods = args.max_pods.unwrap_or(FALLBACK_MAX_PODS);
        if args.max_pods.is_none() {
            comment.push_str(&format!(
                "The pod quota is {FALLBACK_MAX_PODS} here; applied, it is the cluster's node count (or --max-pods).\n"
            ));
        }
        print!("{}", manifest(ns, &rbac, &limits_of(max_pods), &comment)?);
        return Ok(Exit::Ok);
    }
    runtime()?.block_on(async {
        let (client, _) = connect(&args.conn).await?;
        namespace(&client, ns).await?;
        let max_pods = match args.max_pods {
            Some(n) => n,
            None => node_count(&client).await,
        };
        if !args.apply {
            print!("{}", manifest(ns, &rbac, &limits_of(max_pods), &comment)?);
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
        kept.extend(apply_limits(&client, ns, max_pods, &args.image).await?);
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

/// The cluster's node count, for the pod quota: one agent per node at a time. Nodes that
/// cannot be listed give [`FALLBACK_MAX_PODS`], said so.
async fn node_count(client: &Client) -> u32 {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.list_metadata(&ListParams::default()).await {
        Ok(list) => (list.items.len() as u32).max(1),
        Err(e) => {
            eprintln!(
                "warning: cannot count the nodes ({e}): the pod quota of the locked namespace is {FALLBACK_MAX_PODS}; set it with --max-pods"
            );
            FALLBACK_MAX_PODS
        }
    }
}

/// The API version of ValidatingAdmissionPolicy the server serves, newest first; `None`
/// before Kubernetes 1.28 (or without the beta API on 1.28-1.29).
async fn policy_version(client: &Client) -> Option<&'static str> {
    for version in POLICY_VERSIONS {
        match client.list_api_group_resources(version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "validatingadmissionpolicies") => {
                vlog!(4, "the API server serves ValidatingAdmissionPolicy as {version}");
                return Some(version);
            }
            Ok(_) => vlog!(4, "{version} has no ValidatingAdmissionPolicy"),
            Err(e) => vlog!(4, "{version}: {e}"),
        }
    }
    None
}

/// Applies a limit object built as JSON, as the kind and version it names.
async fn apply_object(client: &Client, object: &Value, plural: &str, shown: &str) -> Result<Option<String>, CliError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap_or_default());
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    let dynamic: DynamicObject = serde_json::from_value(object.clone())
        .map_err(|e| CliError::Failed(format!("{shown}: cannot build the object: {e}")))?;
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    apply(&api, &dynamic, shown, |_, _| {}).await
}

/// The quota, the network policy, and the admission policy with its binding where the server
/// has them; a server without ValidatingAdmissionPolicy is said so, and the rest applies.
async fn apply_limits(client: &Client, ns: &str, max_pods: u32, image: &str) -> Result<Vec<String>, CliError> {
    let mut kept = Vec::new();
    kept.extend(apply_object(client, &limits::resource_quota(ns, max_pods), "resourcequotas", "resourcequota").await?);
    kept.extend(apply_object(client, &limits::network_policy(ns), "networkpolicies", "networkpolicy").await?);
    match policy_version(client).await {
        Some(version) => {
            let policy = limits::admission_policy(ns, image, version);
            kept.extend(apply_object(client, &policy, "validatingadmissionpolicies", "validatingadmissionpolicy").await?);
            let binding = limits::admission_binding(ns, version);
            kept.extend(
                apply_object(client, &binding, "validatingadmissionpolicybindings", "validatingadmissionpolicybinding")
                    .await?,
            );
            let policy = limits::run_policy(ns, version);
            kept.extend(apply_object(client, &policy, "validatingadmissionpolicies", "validatingadmissionpolicy").await?);
            let binding = limits::run_binding(ns, version);
            kept.extend(
                apply_object(client, &binding, "validatingadmissionpolicybindings", "validatingadmissionpolicybinding")
                    .await?,
            );
        }
        None => eprintln!(
            "warning: this cluster does not serve ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1 from Kubernetes 1.30, v1beta1 on 1.28-1.29 when enabled): \
             pods in {ns} are not limited to the agent image by admission, and whoever may create Jobs there is root on every node (docs/security.md)"
        ),
    }
    Ok(kept)
}
