//! Every permission the plugin uses, in one table: `init` grants exactly these (`rbac`), and
//! `doctor` asks the API server about each of them. A verb the code starts to use is added
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

pub const PERMISSIONS: [Permission; 17] = [
    p("create", "batch", "jobs", None, Locked, "start profiling Jobs"),
    p("list", "batch", "jobs", None, Locked, "list, fetch, clean, and the per-node conflict check"),
    p("delete", "batch", "jobs", None, Locked, "remove a run's Jobs when it ends, and clean"),
    p("list", "", "pods", None, Locked, "watch the agents' pods (list)"),
    p("watch", "", "pods", None, Locked, "watch the agents' pods"),
    p("get", "", "pods", None, Locked, "re-read a finished agent"),
    p("delete", "", "pods", None, Locked, "stop the agents early on Ctrl-C"),
    p("get", "", "pods", Some("log"), Locked, "read the agents' results"),
    p("get", "", "pods", None, Targets, "pod/NAME targets"),
    p("list", "", "pods", None, Targets, "every target's pods"),
    p("get", "", "services", None, Targets, "service/NAME targets"),
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
    const VERB_ORDER: [&str; 5] = ["get", "list", "watch", "create", "delete"];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_group_what_the_table_lists() {
        let targets = rules(Targets);
        assert_eq!(targets[0], ("", vec!["pods".to_owned()], vec!["get", "list"]));
        let apps: Vec<&str> = ["deployments", "statefulsets", "daemonsets", "replicasets"].to_vec();
        assert_eq!(targets[2], ("apps", apps.iter().map(|s| s.to_string()).collect(), vec!["get"]));
        let locked = rules(Locked);
        assert_eq!(locked[0], ("batch", vec!["jobs".to_owned()], vec!["list", "create", "delete"]));
        assert_eq!(locked[1], ("", vec!["pods".to_owned()], vec!["get", "list", "watch", "delete"]));
        assert_eq!(locked[2], ("", vec!["pods/log".to_owned()], vec!["get"]));
    }
}
