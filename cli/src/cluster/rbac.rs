//! `kubectl eagle init`: the locked namespace, and least-privilege RBAC for the plugin's users.
//!
//! A user of the plugin needs, and gets, exactly:
//! - in the **target namespaces** (ClusterRole `kube-eagle:targets`, bound per namespace with
//!   `--target-namespace`, else cluster-wide): `get`/`list` pods, `get` services, deployments,
//!   statefulsets, daemonsets, replicasets and jobs: what target resolution reads;
//! - in the **locked namespace** only (Role `kube-eagle:runner`): `create`/`get`/`list`/`watch`/
//!   `delete` Jobs, `get`/`list`/`watch`/`delete` pods (a run stops its agents on Ctrl-C by
//!   deleting their pods), `get` pods/log;
//! - `get` on the locked namespace itself (ClusterRole `kube-eagle:namespace`, one
//!   `resourceName`), so `doctor` and every run can see it exists and how it is labelled.
//!
//! No user gets to create pods directly, exec, or touch anything outside those namespaces: the
//! privileged pods are made by the Job controller from the Jobs the CLI plans. Every object
//! carries `app.kubernetes.io/managed-by=kube-eagle` and `app.kubernetes.io/instance=` the
//! locked namespace, which is how `uninstall` finds them; with another `--eagle-namespace` the
//! cluster-wide names carry it too (`kube-eagle:NS:targets`), so installations keep apart.
//! Applying again adds the subjects named to the bindings and keeps those already there.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::annotations::{INSTANCE_LABEL, MANAGED_BY};
use super::api::api_error;
use super::permissions::{self, Scope};
use super::plan;
use crate::error::CliError;

pub const RUNNER: &str = "runner";
pub const TARGETS: &str = "targets";
pub const NAMESPACE_READER: &str = "namespace";

/// `kube-eagle:targets` for the default locked namespace, `kube-eagle:NS:targets` for another.
pub fn rbac_name(eagle_namespace: &str, role: &str) -> String {
    if eagle_namespace == "kube-eagle" {
        format!("kube-eagle:{role}")
    } else {
        format!("kube-eagle:{eagle_namespace}:{role}")
    }
}
/// The subject when none is named: a group the cluster's authenticator must put users in.
pub const DEFAULT_GROUP: &str = "kube-eagle:users";

fn meta(name: &str, namespace: Option<&str>, instance: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        ])),
        ..Default::default()
    }
}

/// Who may profile, and where: what `init` grants.
#[derive(Clone, Debug, Default)]
pub struct Grant {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// `NAMESPACE/NAME`.
    pub service_accounts: Vec<String>,
    /// Empty: every namespace.
    pub target_namespaces: Vec<String>,
}

/// The subjects the bindings name.
pub fn subjects(args: &Grant) -> Result<Vec<Subject>, CliError> {
    let mut subjects = Vec::new();
    for user in &args.users {
        subjects.push(Subject {
            kind: "User".into(),
            name: user.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        });
    }
    let mut groups = args.groups.clone();
    if args.users.is_empty() && args.groups.is_empty() && args.service_accounts.is_empty() {
        groups.push(DEFAULT_GROUP.into());
    }
    for group in groups {
        subjects.push(Subject {
            kind: "Group".into(),
            name: group,
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        });
    }
    for sa in &args.service_accounts {
        let Some((ns, name)) = sa.split_once('/').filter(|(ns, name)| !ns.is_empty() && !name.is_empty()) else {
            return Err(CliError::Usage(format!("--service-account `{sa}`: write it as NAMESPACE/NAME")));
        };
        subjects.push(Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        });
    }
    Ok(subjects)
}

/// Every RBAC object for the plugin's users, in the order they are applied.
pub struct Rbac {
    pub cluster_roles: Vec<ClusterRole>,
    pub roles: Vec<Role>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub role_bindings: Vec<RoleBinding>,
}

pub fn rbac(eagle_namespace: &str, subjects: &[Subject], target_namespaces: &[String]) -> Rbac {
    let ns = eagle_namespace;
    let (runner, targets_name, reader) =
        (rbac_name(ns, RUNNER), rbac_name(ns, TARGETS), rbac_name(ns, NAMESPACE_READER));
    let rules_of = |scope| -> Vec<PolicyRule> {
        permissions::rules(scope)
            .into_iter()
            .map(|(group, resources, verbs)| PolicyRule {
                api_groups: Some(vec![group.to_owned()]),
                resources: Some(resources),
                verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                ..Default::default()
            })
            .collect()
    };
    let targets = ClusterRole {
        metadata: meta(&targets_name, None, ns),
        rules: Some(rules_of(Scope::Targets)),
        ..Default::default()
    };
    let mut reads_namespace = rules_of(Scope::LockedNamespace);
    for rule in &mut reads_namespace {
        rule.resource_names = Some(vec![eagle_namespace.to_owned()]);
    }
    let namespace_reader =
        ClusterRole { metadata: meta(&reader, None, ns), rules: Some(reads_namespace), ..Default::default() };
    let runner_role = Role { metadata: meta(&runner, Some(ns), ns), rules: Some(rules_of(Scope::Locked)) };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    };
    let mut role_bindings = vec![RoleBinding {
        metadata: meta(&runner, Some(ns), ns),
        role_ref: role_ref("Role", &runner),
        subjects: Some(subjects.to_vec()),
    }];
    let mut cluster_role_bindings = vec![ClusterRoleBinding {
        metadata: meta(&reader, None, ns),
        role_ref: role_ref("ClusterRole", &reader),
        subjects: Some(subjects.to_vec()),
    }];
    if target_namespaces.is_empty() {
        cluster_role_bindings.push(ClusterRoleBinding {
            metadata: meta(&targets_name, None, ns),
            role_ref: role_ref("ClusterRole", &targets_name),
            subjects: Some(subjects.to_vec()),
        });
    } else {
        for target in target_namespaces {
            role_bindings.push(RoleBinding {
                metadata: meta(&targets_name, Some(target), ns),
                role_ref: role_ref("ClusterRole", &targets_name),
                subjects: Some(subjects.to_vec()),
            });
        }
    }
    Rbac {
        cluster_roles: vec![targets, namespace_reader],
        roles: vec![runner_role],
        cluster_role_bindings,
        role_bindings,
    }
}

fn yaml<T: Serialize>(object: &T) -> Result<String, CliError> {
    serde_saphyr::to_string(object).map_err(|e| CliError::Failed(format!("cannot write YAML: {e}")))
}

/// The whole manifest: namespace, then RBAC, then `limits` (quota, network policy, admission
/// policy); one document each.
pub fn manifest(
    eagle_namespace: &str,
    rbac: &Rbac,
    limits: &[serde_json::Value],
    comment: &str,
) -> Result<String, CliError> {
    let mut docs = vec![yaml(&plan::locked_namespace(eagle_namespace))?];
    for o in &rbac.cluster_roles {
        docs.push(yaml(o)?);
    }
    for o in &rbac.roles {
        docs.push(yaml(o)?);
    }
    for o in &rbac.cluster_role_bindings {
        docs.push(yaml(o)?);
    }
    for o in &rbac.role_bindings {
        docs.push(yaml(o)?);
    }
    for o in limits {
        docs.push(yaml(o)?);
    }
    let mut out = String::new();
    for line in comment.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    out.push_str(&docs.join("---\n"));
    Ok(out)
}

pub fn comment(eagle_namespace: &str, args: &Grant) -> String {
    let mut c = format!(
        "kube-eagle {}: the locked namespace {} and RBAC for the users of `kubectl eagle`.\n",
        env!("CARGO_PKG_VERSION"),
        eagle_namespace
    );
    if args.users.is_empty() && args.groups.is_empty() && args.service_accounts.is_empty() {
        c.push_str(&format!(
            "Subjects: the group {DEFAULT_GROUP}; name others with --user, --group, --service-account.\n"
        ));
    }
    if args.target_namespaces.is_empty() {
        c.push_str("Targets: pods and workloads may be read in every namespace; narrow it with --target-namespace.\n");
    }
    c
}

/// Creates the locked namespace, or adds the labels it lacks. Reports what it did on stdout.
pub async fn namespace(client: &Client, name: &str) -> Result<(), CliError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let wanted = plan::locked_namespace(name);
    match api.create(&PostParams::default(), &wanted).await {
        Ok(_) => {
            eprintln!("created namespace {name}");
            return Ok(());
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(api_error(e, &format!("namespace {name}"), name)),
    }
    let existing = api.get(name).await.map_err(|e| api_error(e, &format!("namespace {name}"), name))?;
    let have = existing.metadata.labels.unwrap_or_default();
    let missing: BTreeMap<String, String> =
        wanted.metadata.labels.unwrap_or_default().into_iter().filter(|(k, v)| have.get(k) != Some(v)).collect();
    if missing.is_empty() {
        eprintln!("namespace {name} exists, labelled");
        return Ok(());
    }
    let patch = serde_json::json!({"metadata": {"labels": missing}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| api_error(e, &format!("namespace {name}"), name))?;
    let added: Vec<String> = missing.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("namespace {name} existed: labelled it {}", added.join(", "));
    Ok(())
}

/// Subjects already bound stay bound: `init --user bob` after `init --user alice` binds both.
pub fn union(new: &mut Option<Vec<Subject>>, old: &Option<Vec<Subject>>) {
    let mut subjects = old.clone().unwrap_or_default();
    for s in new.take().unwrap_or_default() {
        if !subjects.contains(&s) {
            subjects.push(s);
        }
    }
    *new = Some(subjects);
}

/// Create, or replace when it exists with the project's label (`merge` first carries over what
/// the existing object has that must stay). Returns the object's name when it exists without
/// the label (someone else's): it is not touched.
pub async fn apply<K>(
    api: &Api<K>,
    object: &K,
    kind: &str,
    merge: impl Fn(&mut K, &K),
) -> Result<Option<String>, CliError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let shown = match &object.meta().namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let scope = object.meta().namespace.clone().unwrap_or_else(|| "(cluster)".into());
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {
            println!("created {shown}");
            return Ok(None);
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(api_error(e, &shown, &scope)),
    }
    let existing = api.get(&name).await.map_err(|e| api_error(e, &shown, &scope))?;
    let ours =
        existing.meta().labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str) == Some(MANAGED_BY.1);
    if !ours {
        eprintln!("warning: {shown} exists and is not kube-eagle's: left as it is");
        return Ok(Some(shown));
    }
    let mut updated = object.clone();
    merge(&mut updated, &existing);
    updated.meta_mut().resource_version = existing.meta().resource_version.clone();
    api.replace(&name, &PostParams::default(), &updated).await.map_err(|e| api_error(e, &shown, &scope))?;
    println!("updated {shown}");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The manifest `init --dry-run` prints. Regenerate with `EAGLE_BLESS=1 cargo test` (and review the diff).
    #[test]
    fn manifest_snapshot() {
        // init --user alice --service-account ci/profiler --target-namespace shop
        let a = Grant {
            users: strings(&["alice"]),
            service_accounts: strings(&["ci/profiler"]),
            target_namespaces: strings(&["shop"]),
            ..Default::default()
        };
        let r = rbac("kube-eagle", &subjects(&a).unwrap(), &a.target_namespaces);
        let image = "ghcr.io/kube-eagle/eagle-agent:0.1.0";
        let v1 = "admissionregistration.k8s.io/v1";
        let limits = [
            super::super::limits::resource_quota("kube-eagle", 3),
            super::super::limits::network_policy("kube-eagle"),
            super::super::limits::admission_policy("kube-eagle", image, v1),
            super::super::limits::admission_binding("kube-eagle", v1),
            super::super::limits::run_policy("kube-eagle", v1),
            super::super::limits::run_binding("kube-eagle", v1),
        ];
        let actual = manifest("kube-eagle", &r, &limits, &comment("kube-eagle", &a)).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cluster/testdata/init-rbac.yaml");
        crate::snapshot::assert_snapshot(std::path::Path::new(path), &actual);
    }

    #[test]
    fn least_privilege() {
        let a = Grant::default();
        let subjects = subjects(&a).unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("Group", DEFAULT_GROUP));
        let r = rbac("kube-eagle", &subjects, &[]);
        // Writes only in the locked namespace, and no verb on pods/exec, secrets or pods create.
        let writes = ["create", "delete", "update", "patch", "deletecollection", "*"];
        for role in &r.cluster_roles {
            for rule in role.rules.iter().flatten() {
                assert!(rule.verbs.iter().all(|v| !writes.contains(&v.as_str())), "{rule:?}");
                assert!(rule.resources.iter().flatten().all(|r| r != "secrets" && r != "*" && r != "pods/exec"));
            }
        }
        let runner = &r.roles[0];
        assert_eq!(runner.metadata.namespace.as_deref(), Some("kube-eagle"));
        let pods =
            runner.rules.iter().flatten().find(|r| r.resources.as_deref() == Some(&["pods".to_owned()])).unwrap();
        assert!(!pods.verbs.contains(&"create".to_owned()), "pods are made by the Job controller, not the user");
        // Without --target-namespace the target reads are bound cluster-wide.
        assert!(r.cluster_role_bindings.iter().any(|b| b.metadata.name.as_deref() == Some("kube-eagle:targets")));
        let other = rbac("eagle-ci", &subjects, &[]);
        assert_eq!(other.cluster_roles[0].metadata.name.as_deref(), Some("kube-eagle:eagle-ci:targets"));
        let mut new = Some(vec![subjects[0].clone()]);
        let alice = Subject { kind: "User".into(), name: "alice".into(), ..Default::default() };
        union(&mut new, &Some(vec![alice.clone()]));
        assert_eq!(new.unwrap(), vec![alice, subjects[0].clone()]);
        assert!(subjects_of(&Grant { service_accounts: strings(&["nope"]), ..Default::default() }).is_err());
    }

    fn subjects_of(a: &Grant) -> Result<Vec<Subject>, CliError> {
        subjects(a)
    }
}
