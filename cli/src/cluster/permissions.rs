//! Every permission the plugin uses, in one table: `init` grants exactly these (`rbac`), and
//! `doctor` asks the API server about each of them, as a run does about those it cannot do
//! without ([`may_run`]). A verb the code starts to use is added
//! here, and both follow.

/// Where a permission applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In the locked namespace, where the Jobs run.
    Locked,
    /// In the namespaces of the workloads to profile.
    Targets,
    /// On the locked namespace object itself (cluster-scoped, that one name only).
    LockedNamespace,
}

/// One permission the plugin uses.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub scope: Scope,
    /// What the plugin does with it.
    pub why: &'static str,
}

const fn p(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    scope: Scope,
    why: &'static str,
) -> Permission {
    Permission { verb, group, resource, subresource, scope, why }
}

use Scope::{Locked, LockedNamespace, Targets};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::CliError;

pub const PERMISSIONS: [Permission; 20] = [
    p("create", "batch", "jobs", None, Locked, "start profiling Jobs"),
    p("list", "batch", "jobs", None, Locked, "list, fetch, clean, and the per-node conflict check"),
    p("delete", "batch", "jobs", None, Locked, "remove a run's Jobs when it ends, and clean"),
    p("patch", "batch", "jobs", None, Locked, "stop the agents early on Ctrl-C (the Job's deadline)"),
    p("list", "", "pods", None, Locked, "watch the agents' pods (list)"),
    p("watch", "", "pods", None, Locked, "watch the agents' pods"),
    p("get", "", "pods", None, Locked, "re-read a finished agent"),
    p("delete", "", "pods", None, Locked, "clean: pods whose Job is gone"),
    p("get", "", "pods", Some("log"), Locked, "read the agents' results"),
    p("list", "", "events", None, Locked, "say why a Job made no pod (admission refused it)"),
    p("get", "", "pods", None, Targets, "pod/NAME targets"),
    p("list", "", "pods", None, Targets, "every target's pods"),
    p("get", "", "services", None, Targets, "service/NAME targets"),
    p("list", "", "services", None, Targets, "net: name the peers by service (the service map)"),
    p("get", "apps", "deployments", None, Targets, "deployment/NAME targets"),
    p("get", "apps", "statefulsets", None, Targets, "statefulset/NAME targets"),
    p("get", "apps", "daemonsets", None, Targets, "daemonset/NAME targets"),
    p("get", "apps", "replicasets", None, Targets, "replicaset/NAME targets"),
    p("get", "batch", "jobs", None, Targets, "job/NAME targets"),
    p("get", "", "namespaces", None, LockedNamespace, "see the locked namespace and its labels"),
];

impl Permission {
    /// `pods/log`, as RBAC rules name a subresource.
    pub fn rbac_resource(&self) -> String {
        match self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.to_owned(),
        }
    }
}

/// The permissions of one scope as RBAC rules: `(api group, resources, verbs)`, one per
/// resource with its verbs in a fixed order, and neighbours of one group with the same verbs
/// merged (`deployments`, `statefulsets`, ... `get`).
pub fn rules(scope: Scope) -> Vec<(&'static str, Vec<String>, Vec<&'static str>)> {
    const VERB_ORDER: [&str; 6] = ["get", "list", "watch", "create", "patch", "delete"];
    let mut by_resource: Vec<(&'static str, String, Vec<&'static str>)> = Vec::new();
    for perm in PERMISSIONS.iter().filter(|p| p.scope == scope) {
        let resource = perm.rbac_resource();
        match by_resource.iter_mut().find(|(g, r, _)| *g == perm.group && *r == resource) {
            Some((_, _, verbs)) => verbs.push(perm.verb),
            None => by_resource.push((perm.group, resource, vec![perm.verb])),
        }
    }
    let mut rules: Vec<(&'static str, Vec<String>, Vec<&'static str>)> = Vec::new();
    for (group, resource, mut verbs) in by_resource {
        verbs.sort_by_key(|v| VERB_ORDER.iter().position(|o| o == v).unwrap_or(VERB_ORDER.len()));
        match rules.last_mut() {
            Some((g, resources, v)) if *g == group && *v == verbs => resources.push(resource),
            _ => rules.push((group, vec![resource], verbs)),
        }
    }
    rules
}

/// Asks the API server whether the user may do `perm` in `namespace` (for the locked
/// namespace object: on that name): allowed, and the authorizer's reason.
pub async fn allowed(client: &Client, perm: &Permission, namespace: &str) -> Result<(bool, String), kube::Error> {
    let namespaced = perm.resource != "namespaces";
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(perm.verb.into()),
                group: Some(perm.group.into()),
                resource: Some(perm.resource.into()),
                subresource: perm.subresource.map(str::to_owned),
                namespace: namespaced.then(|| namespace.to_owned()),
                name: (!namespaced).then(|| namespace.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    let status = answer.status.unwrap_or_default();
    let why = status.reason.or(status.evaluation_error).unwrap_or_default();
    Ok((status.allowed && !status.denied.unwrap_or(false), why))
}

/// Before a run creates anything: may the user read pods in every namespace it profiles, and
/// stop and delete the Jobs it is about to create? A privileged pod its creator could not stop
/// or remove is not started. A cluster that cannot answer (no SelfSubjectAccessReview) is not
/// an obstacle: the requests themselves are checked anyway.
pub async fn may_run(client: &Client, locked: &str, targets: &[&str]) -> Result<(), CliError> {
    let needed = PERMISSIONS.iter().filter(|p| {
        (p.scope == Targets && p.verb == "list" && p.resource == "pods")
            || (p.scope == Locked && p.resource == "jobs" && ["create", "patch", "delete"].contains(&p.verb))
    });
    let mut asks = Vec::new();
    for perm in needed {
        if perm.scope == Targets {
            asks.extend(targets.iter().map(|ns| (perm, *ns)));
        } else {
            asks.push((perm, locked));
        }
    }
    let answers = futures::future::join_all(asks.iter().map(|(perm, ns)| allowed(client, perm, ns))).await;
    let refused: Vec<String> = asks
        .iter()
        .zip(answers)
        .filter(|(_, answer)| matches!(answer, Ok((false, _))))
        .map(|((perm, ns), _)| format!("{} {} in namespace {ns} ({})", perm.verb, perm.rbac_resource(), perm.why))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(CliError::Forbidden(format!(
        "not allowed to {}: nothing was started; ask your cluster admin for it (`kubectl eagle init` prints the RBAC)",
        refused.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_group_what_the_table_lists() {
        let targets = rules(Targets);
        assert_eq!(targets[0], ("", vec!["pods".to_owned(), "services".to_owned()], vec!["get", "list"]));
        let apps: Vec<&str> = ["deployments", "statefulsets", "daemonsets", "replicasets"].to_vec();
        assert_eq!(targets[1], ("apps", apps.iter().map(|s| s.to_string()).collect(), vec!["get"]));
        let locked = rules(Locked);
        assert_eq!(locked[0], ("batch", vec!["jobs".to_owned()], vec!["list", "create", "patch", "delete"]));
        assert_eq!(locked[1], ("", vec!["pods".to_owned()], vec!["get", "list", "watch", "delete"]));
        assert_eq!(locked[2], ("", vec!["pods/log".to_owned()], vec!["get"]));
    }
}
