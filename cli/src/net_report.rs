//! The network side of a window, as a user reads it: HTTP routes with their rate, error ratio
//! and latency percentiles, TCP peers with their traffic; as a terminal table, JSON (schema in
//! docs/net.md) or the Prometheus text format; and the rules `net` checks (`--max-p99`,
//! `--max-retransmits`).

use std::collections::BTreeMap;
use std::time::Duration;

use eagle_proto::{Direction, LatencyHistogram, Listener, NetPayload};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::net_map::{Edge, PeerDirectory, ServiceMap};
use crate::placement::Placements;
use crate::table::{self, LEFT, RIGHT};

/// Version of the JSON report's schema (docs/net.md).
pub const SCHEMA_VERSION: u32 = 1;

/// Where a row's process runs, in a cluster: its container's pod and workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The container's name (`container` is its id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

impl Owner {
    fn of(container: &Option<String>, naming: &Naming) -> Owner {
        match container.as_ref().and_then(|c| naming.placements.get(c)) {
            Some(p) => Owner {
                namespace: Some(p.namespace.clone()),
                workload: Some(p.workload.clone()),
                pod: Some(p.pod.clone()),
                container_name: Some(p.container.clone()),
            },
            None => Owner::default(),
        }
    }

    /// `shop/api-1/app python3 (42)`, or `python3 (42)` outside a cluster.
    fn process(&self, process: &str, pid: u32) -> String {
        match (&self.namespace, &self.pod, &self.container_name) {
            (Some(ns), Some(pod), Some(c)) => format!("{ns}/{pod}/{c} {process} ({pid})"),
            _ => format!("{process} ({pid})"),
        }
    }
}

/// What the CLI knows to name a record's rows by: the pods of the containers it targeted, and
/// the peers' pods and services. Empty for a local run.
#[derive(Clone, Debug, Default)]
pub struct Naming {
    pub placements: Placements,
    pub directory: PeerDirectory,
}

/// The process a row is about, first in every row of the report: its container's id, the pod
/// and workload around it, its pid and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(flatten)]
    pub owner: Owner,
    pub pid: u32,
    pub process: String,
}

impl ProcessRow {
    fn of(container: &Option<String>, pid: u32, process: &str, naming: &Naming) -> ProcessRow {
        ProcessRow {
            container: container.clone(),
            owner: Owner::of(container, naming),
            pid,
            process: process.to_owned(),
        }
    }

    /// Rows read by namespace, workload and pod first (a container id orders nothing).
    fn order(&self) -> (&Owner, &Option<String>, u32) {
        (&self.owner, &self.container, self.pid)
    }

    /// `shop/api-1/app python3 (42)`, or `python3 (42)` outside a cluster.
    fn name(&self) -> String {
        self.owner.process(&self.process, self.pid)
    }
}

/// One route of one process, every status together.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteSummary {
    #[serde(flatten)]
    pub of: ProcessRow,
    pub direction: Direction,
    pub method: String,
    pub path: String,
    pub requests: u64,
    /// Responses with a 5xx status.
    pub errors: u64,
    /// Requests with no response before the window ended.
    pub unanswered: u64,
    pub rate_per_s: f64,
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests by status code.
    pub statuses: BTreeMap<u16, u64>,
    #[serde(skip)]
    pub latency_us: LatencyHistogram,
}

/// One peer of one process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerSummary {
    #[serde(flatten)]
    pub of: ProcessRow,
    pub direction: Direction,
    pub local_port: u16,
    pub peer: String,
    /// The peer's pod or service (`NS/pod/NAME`, `NS/service/NAME`), when the cluster says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_name: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub connects: u64,
    pub accepts: u64,
    pub connect_failures: u64,
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub rtt_ms: Option<f64>,
    /// Segments of these connections the kernel dropped.
    #[serde(default)]
    pub drops: u64,
    /// `drops` by the kernel's reason (`enum skb_drop_reason`'s names, from the node's BTF).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drop_reasons: BTreeMap<String, u64>,
}

/// The listen queues of one network namespace of the targets (a pod's, or the host's).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListenSummary {
    #[serde(flatten)]
    pub of: ProcessRow,
    /// The host's namespace: the counts are every host-network process's.
    pub host_network: bool,
    /// Connections that found their listener's accept queue full.
    pub overflows: u64,
    /// Connections a listener dropped, overflows included.
    pub drops: u64,
    /// Each listener of the namespace (the host's: the targets' own), by port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetReport {
    pub schema_version: u32,
    pub window_s: f64,
    pub http: Vec<RouteSummary>,
    pub peers: Vec<PeerSummary>,
    pub lost_events: u64,
    #[serde(default)]
    pub listen_queues: Vec<ListenSummary>,
    /// Who calls whom (`net` in a cluster names the ends by pod, service and workload). Not
    /// read back: no rule judges it yet.
    #[serde(skip_deserializing)]
    pub edges: Vec<Edge>,
}

fn ms(us: Option<f64>) -> Option<f64> {
    us.map(|us| us / 1000.0)
}

pub fn summarize(net: &NetPayload, naming: &Naming) -> NetReport {
    let window_s = (net.window_ms as f64 / 1000.0).max(0.001);
    // Rows read by namespace, workload and pod first (a container id orders nothing).
    type RouteKey = (Owner, Option<String>, u32, Direction, String, String);
    let mut routes: BTreeMap<RouteKey, RouteSummary> = BTreeMap::new();
    for r in &net.http {
        let of = ProcessRow::of(&r.container, r.pid, &r.process, naming);
        let key = (of.owner.clone(), r.container.clone(), r.pid, r.direction, r.method.clone(), r.path.clone());
        let row = routes.entry(key).or_insert_with(|| RouteSummary {
            of,
            direction: r.direction,
            method: r.method.clone(),
            path: r.path.clone(),
            requests: 0,
            errors: 0,
            unanswered: 0,
            rate_per_s: 0.0,
            error_ratio: 0.0,
            p50_ms: None,
            p90_ms: None,
            p99_ms: None,
            statuses: BTreeMap::new(),
            latency_us: LatencyHistogram::default(),
        });
        row.requests += r.requests;
        match r.status {
            0 => row.unanswered += r.requests,
            500..=599 => row.errors += r.requests,
            _ => {}
        }
        *row.statuses.entry(r.status).or_default() += r.requests;
        row.latency_us.merge(&r.latency_us);
    }
    let http = routes
        .into_values()
        .map(|mut r| {
            r.rate_per_s = r.requests as f64 / window_s;
            let answered = r.requests - r.unanswered;
            r.error_ratio = if answered == 0 { 0.0 } else { r.errors as f64 / answered as f64 };
            r.p50_ms = ms(r.latency_us.quantile(0.5));
            r.p90_ms = ms(r.latency_us.quantile(0.9));
            r.p99_ms = ms(r.latency_us.quantile(0.99));
            r
        })
        .collect();
    let mut peers: Vec<PeerSummary> = net
        .peers
        .iter()
        .map(|p| PeerSummary {
            of: ProcessRow::of(&p.container, p.pid, &p.process, naming),
            peer_name: naming.directory.name(&p.peer),
            direction: p.direction,
            local_port: p.local_port,
            peer: p.peer.clone(),
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            connects: p.connects,
            accepts: p.accepts,
            connect_failures: p.connect_failures,
            connect_p50_ms: ms(p.connect_latency_us.quantile(0.5)),
            connect_p99_ms: ms(p.connect_latency_us.quantile(0.99)),
            retransmits: p.retransmits,
            resets_sent: p.resets_sent,
            resets_received: p.resets_received,
            rtt_ms: ms(p.rtt_us()),
            drops: p.drops,
            drop_reasons: p.drop_reasons.clone(),
        })
        .collect();
    peers.sort_by(|a, b| (a.of.order(), a.direction, &a.peer).cmp(&(b.of.order(), b.direction, &b.peer)));
    let mut listen_queues: Vec<ListenSummary> = net
        .listen_queues
        .iter()
        .map(|q| ListenSummary {
            of: ProcessRow::of(&q.container, q.pid, &q.process, naming),
            host_network: q.host_network,
            overflows: q.overflows,
            drops: q.drops,
            listeners: q.listeners.clone(),
        })
        .collect();
    listen_queues.sort_by(|a, b| (&a.of.owner, a.of.pid).cmp(&(&b.of.owner, b.of.pid)));
    let edges = ServiceMap::build(net, &naming.placements, &naming.directory).edges;
    NetReport {
        schema_version: SCHEMA_VERSION,
        window_s,
        http,
        peers,
        lost_events: net.lost_events,
        listen_queues,
        edges,
    }
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
        Direction::Unknown => "?",
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}ms"))
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 << 30 => format!("{}GiB", n >> 30),
        n if n >= 10 << 20 => format!("{}MiB", n >> 20),
        n if n >= 10 << 10 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

/// The terminal's view: an HTTP table, then a TCP one.
pub fn table(report: &NetReport) -> String {
    let mut out = String::new();
    if !report.http.is_empty() {
        let columns = [LEFT, LEFT, LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT];
        let mut rows = vec![["PROCESS", "DIR", "METHOD", "PATH", "REQS", "RATE", "ERRORS", "P50", "P90", "P99"]
            .map(String::from)
            .to_vec()];
        for r in &report.http {
            rows.push(vec![
                r.of.name(),
                direction_word(r.direction).into(),
                r.method.clone(),
                r.path.clone(),
                r.requests.to_string(),
                format!("{:.1}/s", r.rate_per_s),
                format!("{:.2}%", r.error_ratio * 100.0),
                opt_ms(r.p50_ms),
                opt_ms(r.p90_ms),
                opt_ms(r.p99_ms),
            ]);
        }
        out.push_str(&table::render(&columns, &rows));
        out.push('\n');
    }
    let columns = [LEFT, LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT];
    let mut rows =
        vec![["PROCESS", "DIR", "PEER", "SENT", "RECEIVED", "CONN", "CONN P99", "RETRANS", "RESETS", "DROPS", "RTT"]
            .map(String::from)
            .to_vec()];
    for p in &report.peers {
        let mut peer = match p.direction {
            Direction::Inbound => format!("{} -> :{}", p.peer, p.local_port),
            _ => p.peer.clone(),
        };
        if let Some(name) = &p.peer_name {
            peer.push_str(&format!(" ({name})"));
        }
        rows.push(vec![
            p.of.name(),
            direction_word(p.direction).into(),
            peer,
            bytes(p.bytes_sent),
            bytes(p.bytes_received),
            (p.connects + p.accepts).to_string(),
            opt_ms(p.connect_p99_ms),
            p.retransmits.to_string(),
            (p.resets_sent + p.resets_received).to_string(),
            p.drops.to_string(),
            p.rtt_ms.map_or_else(|| "-".into(), |v| format!("{v:.2}ms")),
        ]);
    }
    if report.peers.is_empty() {
        out.push_str("no TCP traffic of the targets in the window\n");
    } else {
        out.push_str(&table::render(&columns, &rows));
    }
    let dropped: Vec<&PeerSummary> = report.peers.iter().filter(|p| !p.drop_reasons.is_empty()).collect();
    if !dropped.is_empty() {
        let columns = [LEFT, LEFT, LEFT, RIGHT];
        let mut rows = vec![["DROPS OF", "PEER", "REASON", "DROPS"].map(String::from).to_vec()];
        for p in dropped {
            for (reason, count) in &p.drop_reasons {
                rows.push(vec![p.of.name(), p.peer.clone(), reason.clone(), count.to_string()]);
            }
        }
        out.push('\n');
        out.push_str(&table::render(&columns, &rows));
    }
    if !report.listen_queues.is_empty() {
        let columns = [LEFT, LEFT, RIGHT, RIGHT, RIGHT];
        let mut rows = vec![["LISTEN QUEUES OF", "NETWORK NAMESPACE / LISTENER", "OVERFLOWS", "DROPS", "QUEUED"]
            .map(String::from)
            .to_vec()];
        for q in &report.listen_queues {
            rows.push(vec![
                q.of.name(),
                if q.host_network { "the host's (shared)" } else { "its own" }.into(),
                q.overflows.to_string(),
                q.drops.to_string(),
                String::new(),
            ]);
            for l in &q.listeners {
                let mut address = format!("  {}", l.address);
                if let Some(pid) = l.pid.filter(|&pid| pid != q.of.pid) {
                    address.push_str(&format!(" (pid {pid})"));
                }
                if l.closed {
                    address.push_str(" (closed)");
                }
                let queued = if l.closed { "-".into() } else { format!("{}/{}", l.queued, l.backlog) };
                rows.push(vec![String::new(), address, String::new(), l.drops.to_string(), queued]);
            }
        }
        out.push('\n');
        out.push_str(&table::render(&columns, &rows));
    }
    out
}

pub fn json(report: &NetReport) -> String {
    serde_json::to_string_pretty(report).expect("the report serializes") + "\n"
}

/// Reads back a report `json` wrote (`net --format json`, `profile --net FILE.json`), for
/// `check`'s network rules.
pub fn parse_json(text: &str) -> Result<NetReport, String> {
    let report: NetReport = serde_json::from_str(text).map_err(|e| format!("not a network report's JSON ({e})"))?;
    if report.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "a network report of schema version {}, which this kubectl-eagle does not read (it reads {SCHEMA_VERSION})",
            report.schema_version
        ));
    }
    Ok(report)
}

/// A label value as the text format wants it: `\`, `"` and line breaks escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition format: counters over the window and latency histograms
/// (cumulative `le` buckets in seconds, at the bounds of the buckets that hold requests).
pub fn prometheus(net: &NetPayload, naming: &Naming) -> String {
    let mut out = String::new();
    let process_labels = |container: &Option<String>, pid: u32, process: &str| {
        let mut l = format!("pid=\"{pid}\",process=\"{}\"", label(process));
        if let Some(c) = container {
            l.push_str(&format!(",container=\"{}\"", label(c)));
        }
        let owner = Owner::of(container, naming);
        for (name, value) in [("namespace", &owner.namespace), ("workload", &owner.workload), ("pod", &owner.pod)] {
            if let Some(v) = value {
                l.push_str(&format!(",{name}=\"{}\"", label(v)));
            }
        }
        l
    };
    type Field = fn(&eagle_proto::PeerTraffic) -> u64;
    let counters: [(&str, &str, Field); 7] = [
        ("eagle_tcp_sent_bytes_total", "Bytes the process sent to the peer.", |p| p.bytes_sent),
        ("eagle_tcp_received_bytes_total", "Bytes the process received from the peer.", |p| p.bytes_received),
        ("eagle_tcp_connections_opened_total", "Connections the process opened to the peer.", |p| p.connects),
        ("eagle_tcp_connections_accepted_total", "Connections the process accepted from the peer.", |p| p.accepts),
        ("eagle_tcp_connect_failures_total", "Connect attempts to the peer that failed.", |p| p.connect_failures),
        ("eagle_tcp_retransmits_total", "Segments retransmitted to the peer.", |p| p.retransmits),
        ("eagle_tcp_resets_total", "Resets sent to or received from the peer.", |p| p.resets_sent + p.resets_received),
    ];
    for (name, help, field) in counters {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for p in &net.peers {
            out.push_str(&format!(
                "{name}{{{},direction=\"{}\",peer=\"{}\",local_port=\"{}\"}} {}\n",
                process_labels(&p.container, p.pid, &p.process),
                direction_word(p.direction),
                label(&p.peer),
                p.local_port,
                field(p)
            ));
        }
    }
    let name = "eagle_tcp_drops_total";
    out.push_str(&format!(
        "# HELP {name} Segments of the connections with the peer the kernel dropped, by the kernel's reason.\n# TYPE {name} counter\n"
    ));
    for p in &net.peers {
        let labels = format!(
            "{},direction=\"{}\",peer=\"{}\",local_port=\"{}\"",
            process_labels(&p.container, p.pid, &p.process),
            direction_word(p.direction),
            label(&p.peer),
            p.local_port,
        );
        for (reason, count) in &p.drop_reasons {
            out.push_str(&format!("{name}{{{labels},reason=\"{}\"}} {count}\n", label(reason)));
        }
        // Drops of agents before reasons, or none at all: one series all the same.
        let named = p.drop_reasons.values().fold(0u64, |sum, n| sum.saturating_add(*n));
        if p.drop_reasons.is_empty() || named < p.drops {
            out.push_str(&format!("{name}{{{labels},reason=\"unknown\"}} {}\n", p.drops.saturating_sub(named)));
        }
    }
    type ListenField = fn(&eagle_proto::ListenQueues) -> u64;
    let listen: [(&str, &str, ListenField); 2] = [
        (
            "eagle_tcp_listen_overflows_total",
            "Connections that found a listener's accept queue full, in the process's network namespace.",
            |q| q.overflows,
        ),
        (
            "eagle_tcp_listen_drops_total",
            "Connections a listener dropped (overflows included), in the process's network namespace.",
            |q| q.drops,
        ),
    ];
    for (name, help, field) in listen {
        if net.listen_queues.is_empty() {
            break;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for q in &net.listen_queues {
            out.push_str(&format!(
                "{name}{{{},host_network=\"{}\"}} {}\n",
                process_labels(&q.container, q.pid, &q.process),
                q.host_network,
                field(q)
            ));
        }
    }
    type ListenerValue = fn(&Listener) -> u64;
    let per_listener: [(&str, &str, &str, ListenerValue); 3] = [
        (
            "eagle_tcp_listener_drops_total",
            "counter",
            "Connections the listener dropped: its sk_drops (accept queue full, the namespace's other listen drops, and a socket's own: can exceed ListenDrops).",
            |l| l.drops,
        ),
        (
            "eagle_tcp_listener_queued",
            "gauge",
            "Connections in the listener's accept queue at the window's end.",
            |l| u64::from(l.queued),
        ),
        ("eagle_tcp_listener_backlog", "gauge", "Length of the listener's accept queue.", |l| u64::from(l.backlog)),
    ];
    for (name, kind, help, value) in per_listener {
        if net.listen_queues.iter().all(|q| q.listeners.is_empty()) {
            break;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for q in &net.listen_queues {
            for l in q.listeners.iter().filter(|l| kind == "counter" || !l.closed) {
                out.push_str(&format!(
                    "{name}{{{},host_network=\"{}\",address=\"{}\",port=\"{}\"{}}} {}\n",
                    process_labels(&q.container, q.pid, &q.process),
                    q.host_network,
                    label(&l.address),
                    l.port,
                    l.pid.map_or_else(String::new, |pid| format!(",listener_pid=\"{pid}\"")),
                    value(l)
                ));
            }
        }
    }
    let name = "eagle_http_request_duration_seconds";
    out.push_str(&format!(
        "# HELP {name} HTTP/1.x requests by route and status, and their latency.\n# TYPE {name} histogram\n"
    ));
    for r in &net.http {
        let mut labels = format!(
            "{},direction=\"{}\",method=\"{}\",path=\"{}\",status=\"{}\"",
            process_labels(&r.container, r.pid, &r.process),
            direction_word(r.direction),
            label(&r.method),
            label(&r.path),
            r.status
        );
        if !r.peer.is_empty() {
            labels.push_str(&format!(",peer=\"{}\"", label(&r.peer)));
        }
        let mut cumulative = 0;
        let mut sum_us = 0.0;
        for &(index, count) in &r.latency_us.buckets {
            cumulative += count;
            let (lo, hi) = LatencyHistogram::bounds(index);
            sum_us += (lo as f64 + hi as f64) / 2.0 * count as f64;
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{}\"}} {cumulative}\n", hi as f64 / 1e6));
        }
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {}\n", r.requests));
        out.push_str(&format!("{name}_sum{{{labels}}} {}\n", sum_us / 1e6));
        out.push_str(&format!("{name}_count{{{labels}}} {}\n", r.requests));
    }
    out
}

/// A rule `net` checks after the window.
#[derive(Clone, Debug)]
pub enum NetRule {
    /// `--max-p99 'http:REGEX=DURATION'`: every route whose path matches has its p99 under.
    MaxP99 { spec: String, path: Regex, limit: Duration },
    /// `--max-retransmits PERCENT`: per peer, retransmitted segments as a share of the
    /// segments sent (estimated from the bytes, see [`MSS`]).
    MaxRetransmits { spec: String, percent: f64 },
}

impl NetRule {
    pub fn parse_p99(spec: &str) -> Result<NetRule, String> {
        let body = spec.strip_prefix("http:").ok_or_else(|| {
            format!("--max-p99 `{spec}`: expected http:PATH_REGEX=DURATION, e.g. 'http:/api/.*=200ms'")
        })?;
        let (pattern, limit) = body.rsplit_once('=').ok_or_else(|| {
            format!("--max-p99 `{spec}`: expected http:PATH_REGEX=DURATION, e.g. 'http:/api/.*=200ms'")
        })?;
        let path =
            Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("--max-p99 `{spec}`: bad regex: {e}"))?;
        let limit = crate::duration::parse_duration(limit).map_err(|e| format!("--max-p99 `{spec}`: {e}"))?;
        Ok(NetRule::MaxP99 { spec: spec.to_owned(), path, limit })
    }

    pub fn parse_retransmits(spec: &str) -> Result<NetRule, String> {
        let number = spec.strip_suffix('%').unwrap_or(spec);
        let percent: f64 = number
            .parse()
            .ok()
            .filter(|p: &f64| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| format!("--max-retransmits `{spec}`: expected a percentage, e.g. 1%"))?;
        Ok(NetRule::MaxRetransmits { spec: spec.to_owned(), percent })
    }
}

/// One rule's verdict on one row.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub rule: String,
    pub subject: String,
    pub value: String,
    pub ok: bool,
}

/// Segments per peer are estimated from bytes at a 1448-byte MSS (what Ethernet carries): the
/// kernel counts retransmitted segments, not the segments it sent.
const MSS: u64 = 1448;

pub fn check(report: &NetReport, rules: &[NetRule]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for rule in rules {
        match rule {
            NetRule::MaxP99 { spec, path, limit } => {
                for r in report.http.iter().filter(|r| path.is_match(&r.path)) {
                    let Some(p99) = r.p99_ms else { continue };
                    verdicts.push(Verdict {
                        rule: format!("--max-p99 {spec}"),
                        subject: format!("{} {} {} ({})", r.of.process, r.method, r.path, r.of.pid),
                        value: format!("p99 {p99:.1}ms"),
                        ok: p99 <= limit.as_secs_f64() * 1000.0,
                    });
                }
            }
            NetRule::MaxRetransmits { spec, percent } => {
                for p in &report.peers {
                    let segments = p.bytes_sent.div_ceil(MSS);
                    if segments == 0 {
                        continue;
                    }
                    let share = p.retransmits as f64 * 100.0 / segments as f64;
                    verdicts.push(Verdict {
                        rule: format!("--max-retransmits {spec}"),
                        subject: format!("{} ({}) -> {}", p.of.process, p.of.pid, p.peer),
                        value: format!("{share:.2}% of ~{segments} segments"),
                        ok: share <= *percent,
                    });
                }
            }
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use eagle_proto::{HttpRoute, PeerTraffic};

    fn route(status: u16, requests: u64, latency_ms: u64) -> HttpRoute {
        let mut latency_us = LatencyHistogram::default();
        for _ in 0..requests {
            latency_us.record(latency_ms * 1000);
        }
        HttpRoute {
            pid: 7,
            process: "srv".into(),
            direction: Direction::Inbound,
            method: "GET".into(),
            path: "/api/items/{n}".into(),
            status,
            requests,
            latency_us,
            ..HttpRoute::default()
        }
    }

    fn payload() -> NetPayload {
        let mut net = NetPayload::new(10_000);
        net.http = vec![route(200, 90, 20), route(503, 10, 300)];
        net.peers = vec![PeerTraffic {
            pid: 7,
            process: "srv".into(),
            direction: Direction::Inbound,
            local_port: 8080,
            peer: "127.0.0.1".into(),
            bytes_sent: 14480,
            retransmits: 1,
            ..PeerTraffic::default()
        }];
        net
    }

    #[test]
    fn routes_add_up_over_their_statuses() {
        let report = summarize(&payload(), &Naming::default());
        let r = &report.http[0];
        assert_eq!((r.requests, r.errors, r.rate_per_s, r.error_ratio), (100, 10, 10.0, 0.1));
        assert!((r.p50_ms.unwrap() - 20.0).abs() < 0.7, "{:?}", r.p50_ms);
        assert!((r.p99_ms.unwrap() - 300.0).abs() < 10.0, "{:?}", r.p99_ms);
        let text = table(&report);
        assert!(text.contains("/api/items/{n}") && text.contains("10.00%"), "{text}");
    }

    #[test]
    fn rules_judge_each_matching_row() {
        let report = summarize(&payload(), &Naming::default());
        let rules = [
            NetRule::parse_p99("http:/api/.*=200ms").unwrap(),
            NetRule::parse_p99("http:/other=1ms").unwrap(),
            NetRule::parse_retransmits("5%").unwrap(),
        ];
        let verdicts = check(&report, &rules);
        assert_eq!(verdicts.iter().map(|v| v.ok).collect::<Vec<_>>(), [false, false]);
        assert!(verdicts[1].value.starts_with("10.00%"), "{verdicts:?}");
        assert!(NetRule::parse_p99("/api=1s").unwrap_err().contains("http:"));
        assert!(NetRule::parse_p99("http:(=1s").unwrap_err().contains("regex"));
        assert!(NetRule::parse_retransmits("lots").is_err());
    }

    #[test]
    fn a_json_report_reads_back_to_the_same_verdicts() {
        let report = summarize(&payload(), &Naming::default());
        let rules = [NetRule::parse_p99("http:/api/.*=200ms").unwrap(), NetRule::parse_retransmits("5%").unwrap()];
        let read = parse_json(&json(&report)).unwrap();
        assert_eq!(check(&read, &rules), check(&report, &rules));
        assert!(parse_json("{}").unwrap_err().contains("not a network report"));
        let newer = json(&report).replacen("\"schema_version\": 1", "\"schema_version\": 2", 1);
        assert!(parse_json(&newer).unwrap_err().contains("schema version 2"));
    }

    #[test]
    fn drops_and_listen_queues_reach_the_table_and_prometheus() {
        let mut net = payload();
        net.peers[0].drops = 3;
        net.listen_queues.push(eagle_proto::ListenQueues {
            pid: 7,
            process: "srv".into(),
            host_network: true,
            overflows: 72,
            drops: 73,
            ..Default::default()
        });
        let report = summarize(&net, &Naming::default());
        let text = table(&report);
        assert!(text.contains("DROPS") && text.contains("LISTEN QUEUES OF"), "{text}");
        let queue_line = text.lines().find(|l| l.contains("the host's (shared)")).unwrap();
        assert!(queue_line.contains("srv (7)") && queue_line.contains("72") && queue_line.contains("73"), "{text}");
        let json = json(&report);
        assert!(json.contains("\"drops\": 3") && json.contains("\"overflows\": 72"), "{json}");
        let prom = prometheus(&net, &Naming::default());
        assert!(prom.contains("eagle_tcp_drops_total{pid=\"7\",process=\"srv\",direction=\"in\",peer=\"127.0.0.1\",local_port=\"8080\",reason=\"unknown\"} 3"), "{prom}");
        assert!(
            prom.contains("eagle_tcp_listen_overflows_total{pid=\"7\",process=\"srv\",host_network=\"true\"} 72"),
            "{prom}"
        );
        assert!(
            prom.contains("eagle_tcp_listen_drops_total{pid=\"7\",process=\"srv\",host_network=\"true\"} 73"),
            "{prom}"
        );
    }

    #[test]
    fn drop_reasons_and_listeners_reach_the_table_json_and_prometheus() {
        let mut net = payload();
        net.peers[0].drops = 5;
        net.peers[0].drop_reasons = BTreeMap::from([("TCP_OLD_DATA".into(), 4), ("TCP_CSUM".into(), 1)]);
        net.listen_queues.push(eagle_proto::ListenQueues {
            pid: 7,
            process: "srv".into(),
            overflows: 72,
            drops: 72,
            listeners: vec![
                Listener {
                    address: "127.0.0.1:8080".into(),
                    port: 8080,
                    pid: Some(7),
                    drops: 72,
                    queued: 2,
                    backlog: 1,
                    closed: false,
                },
                Listener {
                    address: "[::]:9090".into(),
                    port: 9090,
                    pid: Some(8),
                    drops: 0,
                    closed: true,
                    ..Listener::default()
                },
            ],
            ..Default::default()
        });
        let report = summarize(&net, &Naming::default());
        let text = table(&report);
        let reason = text.lines().find(|l| l.contains("TCP_OLD_DATA")).unwrap_or_else(|| panic!("{text}"));
        assert!(reason.contains("srv (7)") && reason.contains("127.0.0.1") && reason.ends_with('4'), "{text}");
        let listener = text.lines().find(|l| l.contains("127.0.0.1:8080")).unwrap_or_else(|| panic!("{text}"));
        assert!(listener.contains("72") && listener.contains("2/1"), "{text}");
        assert!(text.contains("[::]:9090 (pid 8) (closed)"), "{text}");
        let json = json(&report);
        assert!(json.contains("\"TCP_OLD_DATA\": 4") && json.contains("\"address\": \"127.0.0.1:8080\""), "{json}");
        let read = parse_json(&json).unwrap();
        assert_eq!(read.peers[0].drop_reasons, net.peers[0].drop_reasons);
        assert_eq!(read.listen_queues[0].listeners, net.listen_queues[0].listeners);
        let prom = prometheus(&net, &Naming::default());
        let peer = "pid=\"7\",process=\"srv\",direction=\"in\",peer=\"127.0.0.1\",local_port=\"8080\"";
        assert!(prom.contains(&format!("eagle_tcp_drops_total{{{peer},reason=\"TCP_OLD_DATA\"}} 4")), "{prom}");
        assert!(prom.contains(&format!("eagle_tcp_drops_total{{{peer},reason=\"TCP_CSUM\"}} 1")), "{prom}");
        assert!(!prom.contains("reason=\"unknown\""), "every drop has its reason: {prom}");
        let at = "pid=\"7\",process=\"srv\",host_network=\"false\",address=\"127.0.0.1:8080\",port=\"8080\",listener_pid=\"7\"";
        assert!(prom.contains(&format!("eagle_tcp_listener_drops_total{{{at}}} 72")), "{prom}");
        assert!(prom.contains(&format!("eagle_tcp_listener_queued{{{at}}} 2")), "{prom}");
        assert!(prom.contains(&format!("eagle_tcp_listener_backlog{{{at}}} 1")), "{prom}");
        // A closed listener has a count, and no queue.
        assert_eq!(prom.lines().filter(|l| l.contains("9090")).count(), 1, "{prom}");
    }

    /// The rows' shared process fields are flattened where each row type had its own: the
    /// report's keys, and their order, are those docs/net.md documents.
    #[test]
    fn every_row_starts_with_its_process_as_documented() {
        let mut net = payload();
        for r in &mut net.http {
            r.container = Some("c0ffee".into());
        }
        net.listen_queues.push(eagle_proto::ListenQueues { pid: 7, process: "srv".into(), ..Default::default() });
        let mut naming = Naming::default();
        naming.placements.insert(
            "c0ffee".into(),
            crate::placement::Placement {
                namespace: "shop".into(),
                workload: "deployment/web".into(),
                pod: "web-1".into(),
                container: "app".into(),
            },
        );
        let report = summarize(&net, &naming);
        // The keys of a row's own object in the order written (nested objects' keys skipped).
        fn keys(row: &impl Serialize) -> Vec<String> {
            let text = serde_json::to_string(row).unwrap();
            let (mut depth, mut keys, mut rest) = (0, Vec::new(), text.as_str());
            while let Some(c) = rest.chars().next() {
                match c {
                    '{' | '[' => depth += 1,
                    '}' | ']' => depth -= 1,
                    '"' => {
                        let end = rest[1..].find('"').unwrap() + 1;
                        if depth == 1 && rest[end + 1..].starts_with(':') {
                            keys.push(rest[1..end].to_owned());
                        }
                        rest = &rest[end..];
                    }
                    _ => {}
                }
                rest = &rest[c.len_utf8()..];
            }
            keys
        }
        let route = keys(&report.http[0]);
        assert_eq!(route[..6], ["container", "namespace", "workload", "pod", "container_name", "pid"]);
        assert_eq!(
            route[6..],
            [
                "process",
                "direction",
                "method",
                "path",
                "requests",
                "errors",
                "unanswered",
                "rate_per_s",
                "error_ratio",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "statuses"
            ]
        );
        assert_eq!(
            keys(&report.peers[0]),
            [
                "pid",
                "process",
                "direction",
                "local_port",
                "peer",
                "bytes_sent",
                "bytes_received",
                "connects",
                "accepts",
                "connect_failures",
                "connect_p50_ms",
                "connect_p99_ms",
                "retransmits",
                "resets_sent",
                "resets_received",
                "rtt_ms",
                "drops"
            ]
        );
        assert_eq!(keys(&report.listen_queues[0]), ["pid", "process", "host_network", "overflows", "drops"]);
        let read = parse_json(&json(&report)).unwrap();
        assert_eq!(read.http[0].of, report.http[0].of);
    }

    #[test]
    fn prometheus_lines_carry_escaped_labels_and_cumulative_buckets() {
        let mut net = payload();
        net.http[0].path = "/a\"b".into();
        let text = prometheus(&net, &Naming::default());
        assert!(text.contains("path=\"/a\\\"b\""), "{text}");
        assert!(text.contains("eagle_http_request_duration_seconds_count{pid=\"7\",process=\"srv\",direction=\"in\",method=\"GET\",path=\"/a\\\"b\",status=\"200\"} 90"));
        assert!(text.contains("eagle_tcp_retransmits_total{pid=\"7\""));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
