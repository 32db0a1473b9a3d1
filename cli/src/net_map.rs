//! Who talks to whom: the peers of a `net` window named after the pods, services and workloads
//! of the namespaces involved ([`PeerDirectory`], pure over one list of pods and one of
//! services per namespace), and the service map drawn from it ([`ServiceMap`]: one node per
//! workload, service or unknown address, one edge per client and server with its request
//! rate, error ratio and latency), written as DOT for Graphviz.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use eagle_proto::{Direction, LatencyHistogram, NetPayload};
use k8s_openapi::api::core::v1::{Pod, Service};
use serde::Serialize;

use crate::placement::Placements;

/// What an address of the cluster is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Named {
    /// A pod's IP.
    Pod { namespace: String, workload: String, pod: String },
    /// A service's cluster IP; `fronts`: the one workload its selector picks, if it is one.
    Service { namespace: String, name: String, fronts: Option<String> },
}

/// Addresses of pods and services, from the lists of the namespaces involved.
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory {
    by_ip: HashMap<IpAddr, Named>,
}

impl PeerDirectory {
    /// Indexes `pods` and `services`. A host-network pod shares its node's address, which names
    /// no one pod: left out, as is an address two pods claim (one that ended, one that took it).
    pub fn new(pods: &[Pod], services: &[Service]) -> Self {
        let mut by_ip: HashMap<IpAddr, Named> = HashMap::new();
        let mut claimed_twice = Vec::new();
        for pod in pods {
            let spec = pod.spec.as_ref();
            if spec.and_then(|s| s.host_network).unwrap_or(false) {
                continue;
            }
            let Some(status) = &pod.status else { continue };
            let mut ips: Vec<&str> = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).collect();
            ips.extend(status.pod_ip.as_deref());
            let named = Named::Pod {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                workload: crate::cluster::resolve::workload_of(pod),
                pod: pod.metadata.name.clone().unwrap_or_default(),
            };
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                match by_ip.get(&ip) {
                    Some(other) if *other != named => claimed_twice.push(ip),
                    _ => {
                        by_ip.insert(ip, named.clone());
                    }
                }
            }
        }
        for ip in claimed_twice {
            by_ip.remove(&ip);
        }
        for service in services {
            let Some(spec) = &service.spec else { continue };
            let namespace = service.metadata.namespace.clone().unwrap_or_default();
            let fronts = spec.selector.as_ref().filter(|s| !s.is_empty()).and_then(|selector| {
                let mut workloads: Vec<String> = pods
                    .iter()
                    .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
                    .filter(|p| {
                        let labels = p.metadata.labels.as_ref();
                        selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                    })
                    .map(crate::cluster::resolve::workload_of)
                    .collect();
                workloads.sort();
                workloads.dedup();
                (workloads.len() == 1).then(|| workloads.remove(0))
            });
            let mut ips: Vec<&str> = spec.cluster_ips.iter().flatten().map(String::as_str).collect();
            ips.extend(spec.cluster_ip.as_deref());
            let named = Named::Service {
                namespace: namespace.clone(),
                name: service.metadata.name.clone().unwrap_or_default(),
                fronts: fronts.clone(),
            };
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                by_ip.insert(ip, named.clone());
            }
        }
        PeerDirectory { by_ip }
    }

    /// What a peer of the record (`ADDR:PORT`, `[V6]:PORT`, `ADDR`) is, if it is known.
    pub fn lookup(&self, peer: &str) -> Option<&Named> {
        self.by_ip.get(&address_of(peer)?)
    }

    /// How a peer reads in a table: `shop/pod/api-1`, `shop/service/api`, or nothing.
    pub fn name(&self, peer: &str) -> Option<String> {
        Some(match self.lookup(peer)? {
            Named::Pod { namespace, pod, .. } => format!("{namespace}/pod/{pod}"),
            Named::Service { namespace, name, .. } => format!("{namespace}/service/{name}"),
        })
    }
}

/// The address of a peer as the record writes it.
fn address_of(peer: &str) -> Option<IpAddr> {
    if let Ok(ip) = peer.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = peer.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    peer.rsplit_once(':')?.0.parse().ok()
}

/// One edge: requests and traffic from a client to a server, as one side of them saw it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Edge {
    pub client: String,
    pub server: String,
    /// `server` (the target served them: latency from request read to response written) or
    /// `client` (the target made them: latency from request written to response read).
    pub seen_by: &'static str,
    /// The service the client addressed, when the server is the one workload behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub answered: u64,
    pub rate_per_s: f64,
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub bytes: u64,
    pub connections: u64,
    #[serde(skip)]
    latency_us: LatencyHistogram,
}

/// The service map of one window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceMap {
    pub edges: Vec<Edge>,
}

impl ServiceMap {
    /// Edges from the record's rows: a target row's end is its pod's workload (`NS/KIND/NAME`,
    /// from `placements`), a peer's what `directory` knows of it, else its address. When both
    /// ends were targets, each side's view is an edge of its own (`seen_by`), never added up:
    /// the two count the same requests.
    pub fn build(net: &NetPayload, placements: &Placements, directory: &PeerDirectory) -> Self {
        let window_s = (net.window_ms as f64 / 1000.0).max(0.001);
        let me = |container: &Option<String>, process: &str, pid: u32| -> String {
            match container.as_ref().and_then(|c| placements.get(c)) {
                Some(p) => format!("{}/{}", p.namespace, p.workload),
                None => format!("{process} ({pid})"),
            }
        };
        let them = |peer: &str| -> (String, Option<String>) {
            match directory.lookup(peer) {
                Some(Named::Pod { namespace, workload, .. }) => (format!("{namespace}/{workload}"), None),
                Some(Named::Service { namespace, name, fronts: Some(w) }) => {
                    (format!("{namespace}/{w}"), Some(format!("{namespace}/service/{name}")))
                }
                Some(Named::Service { namespace, name, fronts: None }) => (format!("{namespace}/service/{name}"), None),
                None => (peer.to_owned(), None),
            }
        };
        let mut edges = Edges::new();
        for r in &net.http {
            if r.peer.is_empty() || r.direction == Direction::Unknown {
                continue;
            }
            let e = edge(&mut edges, me(&r.container, &r.process, r.pid), them(&r.peer), r.direction);
            e.requests += r.requests;
            if r.status != 0 {
                e.answered += r.requests;
            }
            if (500..=599).contains(&r.status) {
                e.errors += r.requests;
            }
            e.latency_us.merge(&r.latency_us);
        }
        for p in &net.peers {
            if p.direction == Direction::Unknown || p.peer == eagle_proto::net::FOLDED_PEERS {
                continue;
            }
            let e = edge(&mut edges, me(&p.container, &p.process, p.pid), them(&p.peer), p.direction);
            e.bytes += p.bytes_sent + p.bytes_received;
            e.connections += p.connects + p.accepts;
        }
        let edges = edges
            .into_values()
            .map(|mut e| {
                e.rate_per_s = e.requests as f64 / window_s;
                e.error_ratio = if e.answered == 0 { 0.0 } else { e.errors as f64 / e.answered as f64 };
                e.p50_ms = e.latency_us.quantile(0.5).map(|us| us / 1000.0);
                e.p99_ms = e.latency_us.quantile(0.99).map(|us| us / 1000.0);
                e
            })
            .collect();
        ServiceMap { edges }
    }

    /// Graphviz's DOT: `dot -Tsvg map.dot > map.svg`. Edges carry the request rate, the 5xx
    /// ratio and p50/p99 (or the bytes, for connections without HTTP); a dashed edge is the
    /// client's view of requests the server's side also saw.
    pub fn dot(&self) -> String {
        let mut out = String::from(
            "digraph service_map {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
        );
        let mut nodes: Vec<&str> = self.edges.iter().flat_map(|e| [e.client.as_str(), e.server.as_str()]).collect();
        nodes.sort();
        nodes.dedup();
        for n in nodes {
            out.push_str(&format!("  {};\n", quoted(n)));
        }
        let both_sides: std::collections::BTreeSet<(&str, &str)> = self
            .edges
            .iter()
            .filter(|e| e.seen_by == "server")
            .map(|e| (e.client.as_str(), e.server.as_str()))
            .collect();
        for e in &self.edges {
            let mut label = Vec::new();
            if e.requests > 0 {
                label.push(format!("{:.1} req/s, {:.1}% 5xx", e.rate_per_s, e.error_ratio * 100.0));
                if let (Some(p50), Some(p99)) = (e.p50_ms, e.p99_ms) {
                    label.push(format!("p50 {p50:.1}ms p99 {p99:.1}ms"));
                }
            } else {
                label.push(format!("{} bytes, {} connections", e.bytes, e.connections));
            }
            if let Some(via) = &e.via {
                label.push(format!("via {via}"));
            }
            label.push(format!("(seen by the {})", e.seen_by));
            let dashed = e.seen_by == "client" && both_sides.contains(&(e.client.as_str(), e.server.as_str()));
            out.push_str(&format!(
                "  {} -> {} [label={}{}];\n",
                quoted(&e.client),
                quoted(&e.server),
                quoted(&label.join("\n")),
                if dashed { ", style=dashed" } else { "" }
            ));
        }
        out.push_str("}\n");
        out
    }
}

type Edges = BTreeMap<(String, String, &'static str), Edge>;

/// The edge between a target (`local`) and its peer (`remote`, and the service it was
/// addressed through), oriented from client to server.
fn edge(edges: &mut Edges, local: String, remote: (String, Option<String>), direction: Direction) -> &mut Edge {
    let (remote, via) = remote;
    let (client, server, seen_by) = match direction {
        Direction::Inbound => (remote, local, "server"),
        _ => (local, remote, "client"),
    };
    let key = (client.clone(), server.clone(), seen_by);
    let e = edges.entry(key).or_insert_with(|| Edge { client, server, seen_by, ..Edge::default() });
    if e.via.is_none() {
        e.via = via;
    }
    e
}

/// A DOT string: `"` and `\` escaped, line breaks as `\n`, other control characters dropped
/// (names come from the cluster and from profiled processes).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Placement;
    use eagle_proto::{HttpRoute, PeerTraffic};
    use serde_json::json;

    fn pod(ns: &str, name: &str, ip: &str, owner: Option<&str>, app: &str) -> Pod {
        let mut value = json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}
        });
        if let Some(owner) = owner {
            value["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": owner, "uid": "u", "controller": true}]);
        }
        serde_json::from_value(value).unwrap()
    }

    fn service(ns: &str, name: &str, ip: &str, app: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "selector": {"app": app}}
        }))
        .unwrap()
    }

    fn directory() -> PeerDirectory {
        let pods = [
            pod("shop", "web-0", "10.244.1.5", Some("web"), "web"),
            pod("shop", "load", "10.244.2.9", None, "load"),
            pod("shop", "old", "10.244.3.3", None, "x"),
            pod("shop", "new", "10.244.3.3", None, "y"),
        ];
        PeerDirectory::new(
            &pods,
            &[service("shop", "web", "10.96.0.10", "web"), service("shop", "none", "10.96.0.11", "z")],
        )
    }

    #[test]
    fn peers_are_named_by_pod_and_service_and_unknown_ones_by_address() {
        let d = directory();
        assert_eq!(d.name("10.244.1.5"), Some("shop/pod/web-0".into()));
        assert_eq!(d.name("10.96.0.10:80"), Some("shop/service/web".into()));
        assert_eq!(d.name("[::ffff:1.2.3.4]:80"), None);
        // Two pods claimed it during the window: neither is named.
        assert_eq!(d.name("10.244.3.3"), None);
        assert_eq!(
            d.lookup("10.96.0.10:80"),
            Some(&Named::Service {
                namespace: "shop".into(),
                name: "web".into(),
                fronts: Some("statefulset/web".into())
            })
        );
        assert!(matches!(d.lookup("10.96.0.11:80"), Some(Named::Service { fronts: None, .. })));
    }

    #[test]
    fn edges_go_from_client_to_server_with_rates_and_latencies() {
        let placements: Placements = [
            (
                "cw".to_owned(),
                Placement {
                    namespace: "shop".into(),
                    workload: "statefulset/web".into(),
                    pod: "web-0".into(),
                    container: "c".into(),
                },
            ),
            (
                "cl".to_owned(),
                Placement {
                    namespace: "shop".into(),
                    workload: "pod/load".into(),
                    pod: "load".into(),
                    container: "c".into(),
                },
            ),
        ]
        .into();
        let mut net = NetPayload::new(10_000);
        let route = |container: &str, direction, peer: &str, status, requests, ms: u64| {
            let mut latency_us = LatencyHistogram::default();
            (0..requests).for_each(|_| latency_us.record(ms * 1000));
            HttpRoute {
                container: Some(container.into()),
                pid: 1,
                process: "python3".into(),
                direction,
                peer: peer.into(),
                method: "GET".into(),
                path: "/api".into(),
                status,
                requests,
                latency_us,
            }
        };
        net.http = vec![
            route("cw", Direction::Inbound, "10.244.2.9", 200, 90, 20),
            route("cw", Direction::Inbound, "10.244.2.9", 503, 10, 20),
            route("cl", Direction::Outbound, "10.96.0.10:80", 200, 90, 21),
            route("cl", Direction::Outbound, "10.96.0.10:80", 503, 10, 21),
        ];
        net.peers = vec![PeerTraffic {
            container: Some("cl".into()),
            pid: 1,
            process: "python3".into(),
            direction: Direction::Outbound,
            peer: "10.0.0.1:443".into(),
            bytes_sent: 100,
            connects: 2,
            ..PeerTraffic::default()
        }];
        let map = ServiceMap::build(&net, &placements, &directory());
        let rows: Vec<_> = map
            .edges
            .iter()
            .map(|e| (e.client.as_str(), e.server.as_str(), e.seen_by, e.requests, e.errors, e.via.as_deref()))
            .collect();
        assert_eq!(
            rows,
            [
                ("shop/pod/load", "10.0.0.1:443", "client", 0, 0, None),
                ("shop/pod/load", "shop/statefulset/web", "client", 100, 10, Some("shop/service/web")),
                ("shop/pod/load", "shop/statefulset/web", "server", 100, 10, None),
            ]
        );
        assert_eq!((map.edges[1].rate_per_s, map.edges[1].error_ratio), (10.0, 0.1));
        let dot = map.dot();
        assert!(
            dot.contains("\"shop/pod/load\" -> \"shop/statefulset/web\" [label=\"10.0 req/s, 10.0% 5xx\\np50 "),
            "{dot}"
        );
        assert!(dot.contains("style=dashed"), "{dot}");
        assert!(dot.contains("100 bytes, 2 connections"), "{dot}");
        assert_eq!(quoted("a\"b\\c\u{1b}"), "\"a\\\"b\\\\c\"");
    }
}
