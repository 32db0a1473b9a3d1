//! Targets as users write them: `pid/4242` locally, `deployment/api` in a cluster.

use crate::error::CliError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A process on this machine.
    Pid(u32),
    /// A Kubernetes object, `KIND/NAME` with the kind normalized (`deploy` -> `deployment`).
    Cluster { kind: ClusterKind, name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    Service,
    Namespace,
}

impl ClusterKind {
    /// A kind as kubectl spells it (`deploy`, `deployments`, ...).
    pub fn parse(kind: &str) -> Option<Self> {
        Some(match kind.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Self::Pod,
            "deployment" | "deployments" | "deploy" => Self::Deployment,
            "statefulset" | "statefulsets" | "sts" => Self::StatefulSet,
            "daemonset" | "daemonsets" | "ds" => Self::DaemonSet,
            "replicaset" | "replicasets" | "rs" => Self::ReplicaSet,
            "job" | "jobs" => Self::Job,
            "service" | "services" | "svc" => Self::Service,
            "namespace" | "namespaces" | "ns" => Self::Namespace,
            _ => return None,
        })
    }
}

const KINDS: &str = "pid, pod, deployment, statefulset, daemonset, replicaset, job, service, namespace";

pub fn parse(s: &str) -> Result<Target, CliError> {
    let (kind, name) = s.split_once('/').ok_or_else(|| {
        CliError::Usage(format!(
            "`{s}` is not a target: write KIND/NAME, for example pid/4242 or deployment/api (kinds: {KINDS})"
        ))
    })?;
    if name.is_empty() {
        return Err(CliError::Usage(format!("`{s}` names no {kind}: write {kind}/NAME")));
    }
    if kind == "pid" {
        return match name.parse::<u32>() {
            Ok(pid) if pid > 0 => Ok(Target::Pid(pid)),
            _ => Err(CliError::Usage(format!("`{s}`: a pid is a positive number"))),
        };
    }
    let kind = ClusterKind::parse(kind)
        .ok_or_else(|| CliError::Usage(format!("`{s}`: unknown kind `{kind}` (kinds: {KINDS})")))?;
    Ok(Target::Cluster { kind, name: name.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_cluster_targets() {
        assert_eq!(parse("pid/42").unwrap(), Target::Pid(42));
        assert_eq!(parse("deploy/api").unwrap(), Target::Cluster { kind: ClusterKind::Deployment, name: "api".into() });
        assert_eq!(parse("ns/shop").unwrap(), Target::Cluster { kind: ClusterKind::Namespace, name: "shop".into() });
    }

    #[test]
    fn bad_targets_say_what_to_write() {
        for (bad, hint) in [
            ("4242", "KIND/NAME"),
            ("deployment/", "deployment/NAME"),
            ("pid/0", "positive"),
            ("pid/x", "positive"),
            ("gizmo/a", "unknown kind"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(hint), "{bad}: {e}");
        }
    }
}
