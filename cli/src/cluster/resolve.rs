//! Target resolution: `deployment/api` -> the running containers of its pods, by node.
//! Pure functions over API objects, plus thin API calls that fetch them.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Client};

use super::api::api_error;
use crate::error::CliError;
use crate::placement::Placement;
use crate::target::ClusterKind;

/// One running container to profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    pub node: String,
    /// Bare hex id, as in cgroup paths.
    pub id: String,
    pub placement: Placement,
}

/// A container that matched but cannot be sampled now, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub pod: String,
    pub container: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub running: Vec<RunningContainer>,
    pub skipped: Vec<Skipped>,
}

impl Resolution {
    /// Running containers grouped by node, nodes sorted.
    pub fn by_node(&self) -> BTreeMap<&str, Vec<&RunningContainer>> {
        let mut nodes: BTreeMap<&str, Vec<&RunningContainer>> = BTreeMap::new();
        for c in &self.running {
            nodes.entry(c.node.as_str()).or_default().push(c);
        }
        nodes
    }

    fn add_pod(&mut self, pod: &Pod, only_container: Option<&str>) {
        let (running, skipped) = containers_of(pod, only_container);
        self.running.extend(running);
        self.skipped.extend(skipped);
    }
}

/// The workload a pod belongs to, from its owner references: a ReplicaSet made by a
/// Deployment is named after the Deployment (its `pod-template-hash` suffix dropped), so
/// replicas of one Deployment share one level in the graph.
pub fn workload_of(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let Some(owner) =
        meta.owner_references.as_ref().and_then(|o| o.iter().find(|o| o.controller == Some(true)).or(o.first()))
    else {
        return format!("pod/{name}");
    };
    let kind = owner.kind.to_lowercase();
    if kind == "replicaset" {
        if let Some(hash) = meta.labels.as_ref().and_then(|l| l.get("pod-template-hash")) {
            if let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}")) {
                return format!("deployment/{deployment}");
            }
        }
    }
    format!("{kind}/{}", owner.name)
}

/// Running containers of a pod (with their node and id), and the others with a reason.
pub fn containers_of(pod: &Pod, only_container: Option<&str>) -> (Vec<RunningContainer>, Vec<Skipped>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into());
    let workload = workload_of(pod);
    let wanted: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers.iter().map(|c| c.name.clone()).filter(|c| only_container.is_none_or(|o| o == c)).collect()
        })
        .unwrap_or_default();
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let mut running = Vec::new();
    let mut skipped = Vec::new();
    for container in wanted {
        let status = statuses.iter().find(|s| s.name == container);
        let is_running = status.and_then(|s| s.state.as_ref()).and_then(|s| s.running.as_ref()).is_some();
        let id = status
            .and_then(|s| s.container_id.as_deref())
            .map(|id| id.rsplit_once("://").map_or(id, |(_, id)| id).to_owned());
        match (&node, is_running, id) {
            (Some(node), true, Some(id)) if !id.is_empty() => running.push(RunningContainer {
                node: node.clone(),
                id,
                placement: Placement {
                    namespace: namespace.clone(),
                    workload: workload.clone(),
                    pod: name.clone(),
                    container: container.clone(),
                },
            }),
            _ => {
                let state = status.and_then(|s| s.state.as_ref());
                let reason = state
                    .and_then(|s| {
                        s.waiting
                            .as_ref()
                            .and_then(|w| w.reason.clone())
                            .or_else(|| s.terminated.as_ref().and_then(|t| t.reason.clone()))
                    })
                    .unwrap_or_else(|| format!("pod is {phase}"));
                skipped.push(Skipped {
                    pod: format!("{namespace}/{name}"),
                    container,
                    reason: format!("not running: {reason}"),
                });
            }
        }
    }
    (running, skipped)
}

/// A label selector as the API's `labelSelector` query parameter.
pub fn selector_query(selector: &LabelSelector) -> Result<String, String> {
    let mut parts: Vec<String> = selector.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => return Err(format!("unknown selector operator {op}")),
        });
    }
    if parts.is_empty() {
        return Err("its selector is empty (it would select every pod)".into());
    }
    Ok(parts.join(","))
}

/// What the user named, fetched from the API.
pub struct Request<'a> {
    pub namespace: &'a str,
    pub targets: &'a [(ClusterKind, String)],
    pub selector: Option<&'a str>,
    pub container: Option<&'a str>,
}

pub async fn resolve(client: &Client, req: &Request<'_>) -> Result<Resolution, CliError> {
    let mut resolution = Resolution::default();
    let mut seen = HashSet::new();
    let mut add = |resolution: &mut Resolution, pods: Vec<Pod>| {
        for pod in pods {
            if seen.insert(pod.metadata.uid.clone().unwrap_or_default()) {
                resolution.add_pod(&pod, req.container);
            }
        }
    };
    let ns = req.namespace;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Some(selector) = req.selector {
        let found = list_pods(&pods, selector, &format!("-l {selector}"), ns).await?;
        add(&mut resolution, found);
    }
    for (kind, name) in req.targets {
        let what = format!("{}/{name}", kind_name(*kind));
        let found = match kind {
            ClusterKind::Pod => vec![pods.get(name).await.map_err(|e| api_error(e, &what, ns))?],
            ClusterKind::Namespace => {
                let all: Api<Pod> = Api::namespaced(client.clone(), name);
                let list = all.list(&ListParams::default()).await.map_err(|e| api_error(e, &what, name))?;
                if list.items.is_empty() {
                    return Err(CliError::NothingToProfile(format!(
                        "namespace {name} has no pods (does it exist? `kubectl get ns {name}`)"
                    )));
                }
                list.items
            }
            ClusterKind::Service => {
                let svc = Api::<Service>::namespaced(client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(|e| api_error(e, &what, ns))?;
                let labels = svc.spec.and_then(|s| s.selector).unwrap_or_default();
                if labels.is_empty() {
                    return Err(CliError::Usage(format!(
                        "{what} has no selector, so no pods: name its pods or workload instead"
                    )));
                }
                let query = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
                list_pods(&pods, &query, &what, ns).await?
            }
            _ => {
                let selector = workload_selector(client, *kind, name, ns, &what).await?;
                let query = selector_query(&selector).map_err(|e| CliError::Usage(format!("{what}: {e}")))?;
                list_pods(&pods, &query, &what, ns).await?
            }
        };
        add(&mut resolution, found);
    }
    Ok(resolution)
}

async fn list_pods(pods: &Api<Pod>, selector: &str, what: &str, ns: &str) -> Result<Vec<Pod>, CliError> {
    let list = pods.list(&ListParams::default().labels(selector)).await.map_err(|e| api_error(e, what, ns))?;
    if list.items.is_empty() {
        return Err(CliError::NothingToProfile(format!("{what} in namespace {ns} has no pods")));
    }
    Ok(list.items)
}

async fn workload_selector(
    client: &Client,
    kind: ClusterKind,
    name: &str,
    ns: &str,
    what: &str,
) -> Result<LabelSelector, CliError> {
    let c = client.clone();
    let err = |e| api_error(e, what, ns);
    let selector = match kind {
        ClusterKind::Deployment => {
            Api::<Deployment>::namespaced(c, ns).get(name).await.map_err(err)?.spec.map(|s| s.selector)
        }
        ClusterKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(c, ns).get(name).await.map_err(err)?.spec.map(|s| s.selector)
        }
        ClusterKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(c, ns).get(name).await.map_err(err)?.spec.map(|s| s.selector)
        }
        ClusterKind::ReplicaSet => {
            Api::<ReplicaSet>::namespaced(c, ns).get(name).await.map_err(err)?.spec.map(|s| s.selector)
        }
        ClusterKind::Job => Api::<Job>::namespaced(c, ns).get(name).await.map_err(err)?.spec.and_then(|s| s.selector),
        _ => None,
    };
    selector.ok_or_else(|| CliError::Usage(format!("{what} has no pod selector")))
}

pub fn kind_name(kind: ClusterKind) -> &'static str {
    match kind {
        ClusterKind::Pod => "pod",
        ClusterKind::Deployment => "deployment",
        ClusterKind::StatefulSet => "statefulset",
        ClusterKind::DaemonSet => "daemonset",
        ClusterKind::ReplicaSet => "replicaset",
        ClusterKind::Job => "job",
        ClusterKind::Service => "service",
        ClusterKind::Namespace => "namespace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn deployment_pod(name: &str, phase: &str, running: bool) -> Pod {
        let state = if running {
            serde_json::json!({"running": {"startedAt": "2026-11-22T00:00:00Z"}})
        } else {
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}})
        };
        pod(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                "labels": {"app": "api", "pod-template-hash": "7d4f9"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d4f9", "uid": "rs", "controller": true}]},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "app", "containerID": "containerd://abc123", "ready": true, "restartCount": 0, "image": "i", "imageID": "i", "state": state},
                {"name": "sidecar", "containerID": "containerd://def456", "ready": true, "restartCount": 0, "image": "i", "imageID": "i", "state": {"running": {}}}
            ]}
        }))
    }

    #[test]
    fn deployment_pods_resolve_to_running_containers_with_placement() {
        let (running, skipped) = containers_of(&deployment_pod("api-7d4f9-x", "Running", true), None);
        assert_eq!(running.len(), 2);
        assert_eq!(running[0].id, "abc123");
        assert_eq!(running[0].node, "node-a");
        assert_eq!(running[0].placement.workload, "deployment/api");
        assert!(skipped.is_empty());
        let (running, _) = containers_of(&deployment_pod("api-7d4f9-x", "Running", true), Some("sidecar"));
        assert_eq!(running.iter().map(|c| c.placement.container.as_str()).collect::<Vec<_>>(), ["sidecar"]);
    }

    #[test]
    fn containers_not_running_are_reported_not_dropped() {
        let (running, skipped) = containers_of(&deployment_pod("api-7d4f9-y", "Running", false), None);
        assert_eq!(running.len(), 1);
        assert_eq!(
            skipped,
            vec![Skipped {
                pod: "shop/api-7d4f9-y".into(),
                container: "app".into(),
                reason: "not running: CrashLoopBackOff".into()
            }]
        );
        let pending = pod(
            serde_json::json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}}),
        );
        let (running, skipped) = containers_of(&pending, None);
        assert!(running.is_empty());
        assert_eq!(skipped[0].reason, "not running: pod is Pending");
    }

    #[test]
    fn workloads_from_owner_references() {
        let bare = pod(serde_json::json!({"metadata": {"name": "solo"}}));
        assert_eq!(workload_of(&bare), "pod/solo");
        let sts = pod(
            serde_json::json!({"metadata": {"name": "db-0", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]}}),
        );
        assert_eq!(workload_of(&sts), "statefulset/db");
    }

    #[test]
    fn selectors_become_queries() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "api"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}, {"key": "canary", "operator": "DoesNotExist"}]
        })).unwrap();
        assert_eq!(selector_query(&s).unwrap(), "app=api,tier in (web,api),!canary");
        assert!(selector_query(&LabelSelector::default()).is_err());
    }
}
