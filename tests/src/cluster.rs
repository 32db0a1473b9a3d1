//! What a cluster test says when the cluster, not kube-eagle, is why it cannot go on: pods that
//! never run and nodes that take no pods. A failure in CI is read from its log alone, so the
//! message carries what `kubectl describe` would have shown: each pod's phase and the reason
//! its containers wait, each node's conditions and taints, and the namespace's warning events.

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use std::fmt::Write;

/// A few lines on why pods of `namespace` (matching `selector`, if any) are not Running: the
/// pods, the nodes and the namespace's warning events.
pub async fn why_pods_wait(client: &Client, namespace: &str, selector: Option<&str>) -> String {
    let mut out = String::new();
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    match Api::<Pod>::namespaced(client.clone(), namespace).list(&params).await {
        Ok(pods) if pods.items.is_empty() => out.push_str("\n  no pod was created (see the events)"),
        Ok(pods) => {
            for pod in pods.items {
                let _ = write!(out, "\n  {}", describe_pod(&pod));
            }
        }
        Err(e) => {
            let _ = write!(out, "\n  pods: cannot list: {e}");
        }
    }
    out.push_str(&why_nodes_refuse(client).await);
    match Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await {
        Ok(events) => {
            for e in events.items.iter().filter(|e| e.type_.as_deref() != Some("Normal")).rev().take(8) {
                let _ = write!(
                    out,
                    "\n  event {}: {} {}",
                    e.involved_object.name.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or("").trim()
                );
            }
        }
        Err(e) => {
            let _ = write!(out, "\n  events: cannot list: {e}");
        }
    }
    out
}

/// One line per node: Ready or not, its abnormal conditions (pressure, network) and its taints.
pub async fn why_nodes_refuse(client: &Client) -> String {
    let mut out = String::new();
    let nodes = match Api::<Node>::all(client.clone()).list(&ListParams::default()).await {
        Ok(nodes) => nodes,
        Err(e) => return format!("\n  nodes: cannot list: {e}"),
    };
    for node in nodes.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let mut notes = Vec::new();
        for c in node.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten() {
            // Ready is normal when True, every other condition (pressures, network) when False.
            let normal = (c.type_ == "Ready") == (c.status == "True");
            if !normal {
                notes.push(format!("{}={} ({})", c.type_, c.status, c.message.as_deref().unwrap_or("").trim()));
            }
        }
        if spec.unschedulable == Some(true) {
            notes.push("unschedulable".into());
        }
        for t in spec.taints.iter().flatten() {
            notes.push(format!("taint {}:{}", t.key, t.effect));
        }
        let notes = if notes.is_empty() { "Ready, no taints".to_string() } else { notes.join(", ") };
        let _ = write!(out, "\n  node {name}: {notes}");
    }
    out
}

fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("no node");
    let mut line = format!("pod {name} on {node}: {}", status.phase.as_deref().unwrap_or("no phase"));
    for c in status.conditions.iter().flatten().filter(|c| c.status != "True") {
        let _ = write!(line, "; {} {}", c.type_, c.message.as_deref().or(c.reason.as_deref()).unwrap_or(""));
    }
    for cs in status.container_statuses.iter().flatten() {
        let state = cs.state.clone().unwrap_or_default();
        if let Some(w) = state.waiting {
            let _ = write!(
                line,
                "; container {} waiting: {} {}",
                cs.name,
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            );
        } else if let Some(t) = state.terminated {
            let _ = write!(
                line,
                "; container {} terminated: {} exit {}",
                cs.name,
                t.reason.unwrap_or_default(),
                t.exit_code
            );
        }
    }
    line
}
