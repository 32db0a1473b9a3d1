//! The network side of a window: what the agent saw of its targets' TCP connections and HTTP
//! requests, as one record of the result stream (`EAGLE1 N {json}`, at most one, before the
//! trailer, which counts it).
//!
//! Everything here is a sum, so the results of several nodes merge exactly: counters add, and
//! latencies are histograms over one fixed set of buckets ([`LatencyHistogram`]), not
//! percentiles, which cannot be merged. The decoder treats the record like the rest of the
//! stream: as hostile. [`NetPayload::validate`] refuses what breaks [`NetLimits`] or the
//! histogram scheme, and every string that reaches a terminal is made printable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stream::printable;

/// Version of the network record written by this build; the decoder refuses others. The stream
/// version stays 1: an older CLI refuses the unknown `N` record, which is the honest answer to
/// a newer agent, and a stream without one reads as before.
pub const NET_VERSION: u32 = 1;

/// Hard limits of a network record, on both sides: the agent folds what exceeds them
/// ([`NetPayload::fit`]), the decoder refuses a record that breaks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// (process, direction, peer) rows.
    pub peers: usize,
    /// (process, method, path pattern, status) rows.
    pub routes: usize,
    /// Bytes of one path pattern, process name or peer address.
    pub text_bytes: usize,
    /// Bytes of the record's JSON, far below [`crate::Limits::line_bytes`].
    pub record_bytes: usize,
}

impl NetLimits {
    pub const DEFAULT: NetLimits = NetLimits { peers: 2048, routes: 512, text_bytes: 256, record_bytes: 768 << 10 };
}

impl Default for NetLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Sub-buckets per power of two: a value is known to 1/16 of itself, so a percentile read at a
/// bucket's middle is within about 3 % of the true one.
const SUB_BITS: u32 = 4;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Buckets of the scheme: values below 16 have one each, then 16 per power of two up to 2^64.
pub const HISTOGRAM_BUCKETS: u32 = (SUB_BUCKETS as u32) * (64 - SUB_BITS + 1);

/// Latencies in microseconds, counted in log-linear buckets (HDR-style: 16 per power of two).
/// Sparse: `buckets` holds `[index, count]` pairs, indexes strictly increasing, counts non-zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LatencyHistogram {
    pub buckets: Vec<(u32, u64)>,
}

impl LatencyHistogram {
    /// The bucket a value falls in.
    pub fn bucket_of(value: u64) -> u32 {
        if value < SUB_BUCKETS {
            return value as u32;
        }
        let exponent = 63 - value.leading_zeros(); // >= SUB_BITS
        let sub = (value >> (exponent - SUB_BITS)) & (SUB_BUCKETS - 1);
        ((exponent - SUB_BITS + 1) * SUB_BUCKETS as u32) + sub as u32
    }

    /// The smallest value of a bucket, and the smallest of the next one (saturating at the top).
    pub fn bounds(index: u32) -> (u64, u64) {
        let lower = |i: u32| -> u64 {
            if i < SUB_BUCKETS as u32 {
                return i as u64;
            }
            let exponent = i / SUB_BUCKETS as u32 + SUB_BITS - 1;
            let sub = (i % SUB_BUCKETS as u32) as u64;
            (SUB_BUCKETS + sub) << (exponent - SUB_BITS)
        };
        let upper = if index + 1 >= HISTOGRAM_BUCKETS { u64::MAX } else { lower(index + 1) };
        (lower(index), upper)
    }

    pub fn record(&mut self, value: u64) {
        self.add(Self::bucket_of(value), 1);
    }

    fn add(&mut self, index: u32, count: u64) {
        if count == 0 {
            return;
        }
        match self.buckets.binary_search_by_key(&index, |b| b.0) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(count),
            Err(at) => self.buckets.insert(at, (index, count)),
        }
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for &(index, count) in &other.buckets {
            self.add(index, count);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |sum, b| sum.saturating_add(b.1))
    }

    /// The `q` quantile (0..=1), read at the middle of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the quantile's observation, 1-based (nearest rank).
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for &(index, count) in &self.buckets {
            seen = seen.saturating_add(count);
            if seen >= rank {
                let (lo, hi) = Self::bounds(index);
                return Some(if hi - lo <= 1 { lo as f64 } else { (lo as f64 + hi as f64) / 2.0 });
            }
        }
        None
    }

    fn validate(&self) -> Result<(), String> {
        let mut previous: Option<u32> = None;
        for &(index, count) in &self.buckets {
            if index >= HISTOGRAM_BUCKETS {
                return Err(format!("histogram bucket {index} is past the scheme's {HISTOGRAM_BUCKETS}"));
            }
            if previous.is_some_and(|p| p >= index) {
                return Err("histogram buckets are not strictly increasing".into());
            }
            if count == 0 {
                return Err("a histogram bucket counts nothing".into());
            }
            previous = Some(index);
        }
        Ok(())
    }
}

/// Who opened the connections of a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The target connected to the peer: `peer` is the server's address and port.
    Outbound,
    /// The target accepted the peer's connections: `peer` is the client's address only, and
    /// `local_port` the port it was accepted on (client ports are ephemeral: one row per port
    /// would be one per connection).
    Inbound,
    /// A connection that existed before the window: which side opened it is not known.
    #[default]
    Unknown,
}

/// TCP counters of one process towards one peer, over the window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    /// Container id the process belongs to, when the target was a container or pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub pid: u32,
    pub process: String,
    pub direction: Direction,
    /// Inbound: the local port connections were accepted on; otherwise 0.
    #[serde(default)]
    pub local_port: u16,
    /// `ADDR:PORT` (outbound, unknown) or `ADDR` (inbound); IPv6 in brackets with a port.
    pub peer: String,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    /// Connections this process opened to the peer (connect completed).
    #[serde(default)]
    pub connects: u64,
    /// Connections this process accepted from the peer.
    #[serde(default)]
    pub accepts: u64,
    /// Connect attempts that failed (refused, timed out, reset during the handshake).
    #[serde(default)]
    pub connect_failures: u64,
    /// From `connect` to the handshake's end, microseconds.
    #[serde(default)]
    pub connect_latency_us: LatencyHistogram,
    #[serde(default)]
    pub retransmits: u64,
    #[serde(default)]
    pub resets_sent: u64,
    #[serde(default)]
    pub resets_received: u64,
    /// The kernel's smoothed RTT, summed over the reads and writes it was sampled at.
    #[serde(default)]
    pub rtt_sum_us: u64,
    #[serde(default)]
    pub rtt_samples: u64,
    /// Segments of these connections the kernel dropped (`skb:kfree_skb`, any reason).
    #[serde(default)]
    pub drops: u64,
    /// `drops` by the kernel's reason, named as its `enum skb_drop_reason` names them without
    /// the `SKB_DROP_REASON_` prefix (`NO_SOCKET`, `TCP_OFO_DROP`), read from the node's BTF;
    /// `reason N` for a number that enum does not name. Absent from agents before reasons.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drop_reasons: BTreeMap<String, u64>,
}

impl PeerTraffic {
    /// The mean smoothed RTT in microseconds.
    pub fn rtt_us(&self) -> Option<f64> {
        (self.rtt_samples > 0).then(|| self.rtt_sum_us as f64 / self.rtt_samples as f64)
    }

    fn key(&self) -> (Option<&str>, u32, Direction, u16, &str) {
        (self.container.as_deref(), self.pid, self.direction, self.local_port, self.peer.as_str())
    }

    /// Adds `other`'s counts (same key or not: folding uses this too).
    pub fn add(&mut self, other: &PeerTraffic) {
        for (a, b) in [
            (&mut self.bytes_sent, other.bytes_sent),
            (&mut self.bytes_received, other.bytes_received),
            (&mut self.connects, other.connects),
            (&mut self.accepts, other.accepts),
            (&mut self.connect_failures, other.connect_failures),
            (&mut self.retransmits, other.retransmits),
            (&mut self.resets_sent, other.resets_sent),
            (&mut self.resets_received, other.resets_received),
            (&mut self.rtt_sum_us, other.rtt_sum_us),
            (&mut self.rtt_samples, other.rtt_samples),
            (&mut self.drops, other.drops),
        ] {
            *a = a.saturating_add(b);
        }
        for (reason, count) in &other.drop_reasons {
            let sum = self.drop_reasons.entry(reason.clone()).or_default();
            *sum = sum.saturating_add(*count);
        }
        self.connect_latency_us.merge(&other.connect_latency_us);
    }

    fn weight(&self) -> u64 {
        self.bytes_sent.saturating_add(self.bytes_received).saturating_add(self.connects).saturating_add(self.accepts)
    }
}

/// The listen queues of one network namespace of the targets over the window: its own
/// counters of connections a listener dropped (`/proc/PID/net/netstat`, `TcpExt:`). A full
/// accept queue drops the SYN without a drop event, so a namespace's counters are where every
/// overflow is seen; a pod's namespace is the pod's alone, the host's is every host-network
/// process's (`host_network`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenQueues {
    /// A container of the targets in the namespace (any: a pod's containers share one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The first target process seen in the namespace.
    pub pid: u32,
    pub process: String,
    /// The host's namespace: its counters are every host-network process's, not the target's.
    #[serde(default)]
    pub host_network: bool,
    /// `ListenOverflows`: a connection found its listener's accept queue full.
    #[serde(default)]
    pub overflows: u64,
    /// `ListenDrops`: every connection a listener dropped (overflows included).
    #[serde(default)]
    pub drops: u64,
    /// The namespace's listeners: in a namespace of its own, every one; in the host's, those of
    /// the targets. Absent from agents before listeners were read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

/// One listening socket over the window (`sock_diag` at the window's edges, and its last
/// count when a target closed it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// `ADDR:PORT` it is bound to (`0.0.0.0:8080`, `[::]:443`).
    pub address: String,
    pub port: u16,
    /// The target process whose socket it is, when one of theirs holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Connections it dropped in the window: its `sk_drops` (accept-queue overflows, the
    /// namespace's other `ListenDrops`, and what only a socket counts: a final ACK meeting a full
    /// queue counts twice, a socket filter's drops once), so it can exceed `ListenDrops`.
    #[serde(default)]
    pub drops: u64,
    /// Connections waiting in its accept queue at the window's end (or when it closed).
    #[serde(default)]
    pub queued: u32,
    /// Its accept queue's length (`listen()`'s backlog, capped by `somaxconn`).
    #[serde(default)]
    pub backlog: u32,
    /// It was closed before the window ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

/// HTTP/1.x requests one process served, by method, path pattern and status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub pid: u32,
    pub process: String,
    /// Inbound: requests the process served (it read the request and wrote the response);
    /// outbound: requests it made.
    pub direction: Direction,
    /// Who the requests were exchanged with, as in [`PeerTraffic::peer`]: the server's
    /// `ADDR:PORT` (outbound) or the client's `ADDR` (inbound); empty in records of agents
    /// before the service map.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    pub method: String,
    /// The request path with numbers and ids replaced (`/api/users/{id}`), no query.
    pub path: String,
    /// 0: no response seen before the window ended.
    pub status: u16,
    pub requests: u64,
    /// From the request's first byte read to the response's first byte written, microseconds.
    pub latency_us: LatencyHistogram,
}

impl HttpRoute {
    fn key(&self) -> (Option<&str>, u32, Direction, &str, &str, &str, u16) {
        (
            self.container.as_deref(),
            self.pid,
            self.direction,
            self.peer.as_str(),
            self.method.as_str(),
            self.path.as_str(),
            self.status,
        )
    }
}

/// The path pattern rows beyond [`NetLimits::routes`] are folded into.
pub const FOLDED_ROUTES_PATH: &str = "[routes folded: stream size limit]";
/// Drop reasons of one row at most: the kernel has about 130.
pub const MAX_DROP_REASONS: usize = 256;
/// The reasons of a row beyond [`MAX_DROP_REASONS`] are folded into.
pub const FOLDED_DROP_REASONS: &str = "[reasons folded: stream size limit]";
/// The peer rows beyond [`NetLimits::peers`] are folded into.
pub const FOLDED_PEERS: &str = "[peers folded: stream size limit]";

/// The network record of one node's window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPayload {
    pub version: u32,
    /// How long the counters ran, for rates.
    pub window_ms: u64,
    #[serde(default)]
    pub peers: Vec<PeerTraffic>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// Events the kernel side could not count (its maps were full).
    #[serde(default)]
    pub lost_events: u64,
    /// One per network namespace of the targets; absent from agents before drops were counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_queues: Vec<ListenQueues>,
}

impl NetPayload {
    pub fn new(window_ms: u64) -> Self {
        Self { version: NET_VERSION, window_ms, ..Self::default() }
    }

    /// Checks a decoded record against `limits` and the histogram scheme, and makes its strings
    /// printable (process names, paths and methods come from profiled processes and their
    /// clients: no escape sequence of theirs reaches the user's terminal).
    pub fn validate(&mut self, limits: &NetLimits) -> Result<(), String> {
        if self.version != NET_VERSION {
            return Err(format!(
                "network record version {} is not understood by this kubectl-eagle (it reads version {NET_VERSION}): use the same version for the CLI and the agent image",
                self.version
            ));
        }
        if self.peers.len() > limits.peers {
            return Err(format!("{} peer rows, more than the {} allowed", self.peers.len(), limits.peers));
        }
        if self.http.len() > limits.routes {
            return Err(format!("{} HTTP rows, more than the {} allowed", self.http.len(), limits.routes));
        }
        if self.listen_queues.len() > limits.peers {
            return Err(format!(
                "{} listen queue rows, more than the {} allowed",
                self.listen_queues.len(),
                limits.peers
            ));
        }
        let text = |what: &str, s: &mut String| -> Result<(), String> {
            if s.len() > limits.text_bytes {
                return Err(format!("a {what} of {} bytes, more than the {} allowed", s.len(), limits.text_bytes));
            }
            *s = printable(s);
            Ok(())
        };
        for p in &mut self.peers {
            text("process name", &mut p.process)?;
            text("peer", &mut p.peer)?;
            if let Some(c) = &mut p.container {
                text("container id", c)?;
            }
            p.connect_latency_us.validate()?;
        }
        for r in &mut self.http {
            text("process name", &mut r.process)?;
            text("method", &mut r.method)?;
            text("peer", &mut r.peer)?;
            text("path", &mut r.path)?;
            if let Some(c) = &mut r.container {
                text("container id", c)?;
            }
            r.latency_us.validate()?;
        }
        for q in &mut self.listen_queues {
            text("process name", &mut q.process)?;
            if let Some(c) = &mut q.container {
                text("container id", c)?;
            }
            if q.listeners.len() > limits.peers {
                return Err(format!(
                    "{} listeners in a namespace, more than the {} allowed",
                    q.listeners.len(),
                    limits.peers
                ));
            }
            for l in &mut q.listeners {
                text("listener address", &mut l.address)?;
            }
        }
        for p in &mut self.peers {
            if p.drop_reasons.len() > MAX_DROP_REASONS {
                return Err(format!(
                    "{} drop reasons in a row, more than the {MAX_DROP_REASONS} allowed",
                    p.drop_reasons.len()
                ));
            }
            let reasons = std::mem::take(&mut p.drop_reasons);
            for (mut reason, count) in reasons {
                text("drop reason", &mut reason)?;
                // Two reasons that read the same once made printable are one.
                let sum = p.drop_reasons.entry(reason).or_default();
                *sum = sum.saturating_add(count);
            }
        }
        Ok(())
    }

    /// Adds another node's (or window's) record: rows with the same key add up.
    pub fn merge(&mut self, other: &NetPayload) {
        self.window_ms = self.window_ms.max(other.window_ms);
        self.lost_events = self.lost_events.saturating_add(other.lost_events);
        let mut peers: BTreeMap<_, usize> = self.peers.iter().enumerate().map(|(i, p)| (key_of_peer(p), i)).collect();
        for p in &other.peers {
            match peers.get(&key_of_peer(p)) {
                Some(&i) => self.peers[i].add(p),
                None => {
                    peers.insert(key_of_peer(p), self.peers.len());
                    self.peers.push(p.clone());
                }
            }
        }
        let mut routes: BTreeMap<_, usize> = self.http.iter().enumerate().map(|(i, r)| (key_of_route(r), i)).collect();
        for r in &other.http {
            match routes.get(&key_of_route(r)) {
                Some(&i) => {
                    let row = &mut self.http[i];
                    row.requests = row.requests.saturating_add(r.requests);
                    row.latency_us.merge(&r.latency_us);
                }
                None => {
                    routes.insert(key_of_route(r), self.http.len());
                    self.http.push(r.clone());
                }
            }
        }
        // Each node reads its own namespaces: rows of the same namespace come from one node,
        // and two windows of one node add up.
        for q in &other.listen_queues {
            match self.listen_queues.iter_mut().find(|m| (&m.container, m.pid) == (&q.container, q.pid)) {
                Some(m) => {
                    m.overflows = m.overflows.saturating_add(q.overflows);
                    m.drops = m.drops.saturating_add(q.drops);
                    for l in &q.listeners {
                        match m.listeners.iter_mut().find(|n| n.address == l.address && n.pid == l.pid) {
                            // The later window's queue is the one at the end.
                            Some(n) => {
                                n.drops = n.drops.saturating_add(l.drops);
                                (n.queued, n.backlog, n.closed) = (l.queued, l.backlog, l.closed);
                            }
                            None => m.listeners.push(l.clone()),
                        }
                    }
                }
                None => self.listen_queues.push(q.clone()),
            }
        }
    }

    /// Keeps the record within `limits`, as the agent must before writing it: long strings are
    /// cut, the busiest rows are kept whole and each process's others are folded into one row
    /// (so every byte and request still counts, for the right process). Returns how many rows
    /// were folded.
    pub fn fit(&mut self, limits: &NetLimits) -> usize {
        let cut = |s: &mut String| {
            if s.len() > limits.text_bytes {
                let mut end = limits.text_bytes;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
        };
        for q in &mut self.listen_queues {
            cut(&mut q.process);
            if let Some(c) = &mut q.container {
                cut(c);
            }
            // The busiest listeners, if a namespace has more than a record holds.
            if q.listeners.len() > limits.peers {
                q.listeners.sort_by(|a, b| (b.drops, a.port).cmp(&(a.drops, b.port)));
                q.listeners.truncate(limits.peers);
            }
        }
        for p in &mut self.peers {
            if p.drop_reasons.len() > MAX_DROP_REASONS {
                let mut reasons: Vec<(String, u64)> = std::mem::take(&mut p.drop_reasons).into_iter().collect();
                reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let other = reasons.split_off(MAX_DROP_REASONS - 1).iter().fold(0u64, |sum, r| sum.saturating_add(r.1));
                p.drop_reasons = reasons.into_iter().collect();
                p.drop_reasons.insert(FOLDED_DROP_REASONS.into(), other);
            }
        }
        // One row per network namespace: more than a node holds in practice; the busiest kept.
        if self.listen_queues.len() > limits.peers {
            self.listen_queues.sort_by(|a, b| (b.drops, a.pid).cmp(&(a.drops, b.pid)));
            self.listen_queues.truncate(limits.peers);
        }
        for p in &mut self.peers {
            cut(&mut p.process);
            cut(&mut p.peer);
            if let Some(c) = &mut p.container {
                cut(c);
            }
        }
        for r in &mut self.http {
            cut(&mut r.process);
            cut(&mut r.method);
            cut(&mut r.peer);
            cut(&mut r.path);
            if let Some(c) = &mut r.container {
                cut(c);
            }
        }
        let (mut max_peers, mut max_routes) = (limits.peers, limits.routes);
        // Listeners too, per namespace: many namespaces of many listeners (a target can make
        // both) must not make the record too big to be read. The namespace's own counters stay.
        let mut max_listeners = limits.peers;
        let mut folded = 0;
        loop {
            folded += self.fold_peers(max_peers) + self.fold_routes(max_routes);
            for q in &mut self.listen_queues {
                if q.listeners.len() > max_listeners {
                    q.listeners.sort_by(|a, b| (b.drops, a.port).cmp(&(a.drops, b.port)));
                    folded += q.listeners.len() - max_listeners;
                    q.listeners.truncate(max_listeners);
                }
            }
            let size = serde_json::to_string(self).map_or(usize::MAX, |s| s.len());
            if size <= limits.record_bytes || (max_peers <= 1 && max_routes <= 1 && max_listeners == 0) {
                return folded;
            }
            max_peers = (max_peers * 3 / 4).max(1);
            max_routes = (max_routes * 3 / 4).max(1);
            max_listeners = if max_listeners <= 1 { 0 } else { max_listeners * 3 / 4 };
        }
    }

    fn fold_peers(&mut self, max: usize) -> usize {
        if self.peers.len() <= max {
            return 0;
        }
        // The folded rows need room too: at most one per process.
        let processes: std::collections::BTreeSet<(Option<String>, u32)> =
            self.peers.iter().map(|p| (p.container.clone(), p.pid)).collect();
        let keep = max.saturating_sub(processes.len().min(max));
        let mut rows = std::mem::take(&mut self.peers);
        rows.sort_by(|a, b| b.weight().cmp(&a.weight()).then_with(|| key_of_peer(a).cmp(&key_of_peer(b))));
        let rest = rows.split_off(keep.min(rows.len()));
        let folded = rest.len();
        let mut by_process: BTreeMap<(Option<String>, u32), PeerTraffic> = BTreeMap::new();
        for p in rest {
            let row = by_process.entry((p.container.clone(), p.pid)).or_insert_with(|| PeerTraffic {
                container: p.container.clone(),
                pid: p.pid,
                process: p.process.clone(),
                peer: FOLDED_PEERS.into(),
                ..PeerTraffic::default()
            });
            row.add(&p);
        }
        rows.extend(by_process.into_values());
        self.peers = rows;
        folded
    }

    fn fold_routes(&mut self, max: usize) -> usize {
        if self.http.len() <= max {
            return 0;
        }
        let processes: std::collections::BTreeSet<(Option<String>, u32, Direction)> =
            self.http.iter().map(|r| (r.container.clone(), r.pid, r.direction)).collect();
        let keep = max.saturating_sub(processes.len().min(max));
        let mut rows = std::mem::take(&mut self.http);
        rows.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| key_of_route(a).cmp(&key_of_route(b))));
        let rest = rows.split_off(keep.min(rows.len()));
        let folded = rest.len();
        let mut by_process: BTreeMap<(Option<String>, u32, Direction), HttpRoute> = BTreeMap::new();
        for r in rest {
            let row = by_process.entry((r.container.clone(), r.pid, r.direction)).or_insert_with(|| HttpRoute {
                container: r.container.clone(),
                pid: r.pid,
                process: r.process.clone(),
                direction: r.direction,
                method: "*".into(),
                path: FOLDED_ROUTES_PATH.into(),
                ..HttpRoute::default()
            });
            row.requests = row.requests.saturating_add(r.requests);
            row.latency_us.merge(&r.latency_us);
        }
        rows.extend(by_process.into_values());
        self.http = rows;
        folded
    }
}

type PeerKey = (Option<String>, u32, Direction, u16, String);
type RouteKey = (Option<String>, u32, Direction, String, String, String, u16);

fn key_of_peer(p: &PeerTraffic) -> PeerKey {
    let (c, pid, d, port, peer) = p.key();
    (c.map(str::to_owned), pid, d, port, peer.to_owned())
}

fn key_of_route(r: &HttpRoute) -> RouteKey {
    let (c, pid, d, peer, m, path, status) = r.key();
    (c.map(str::to_owned), pid, d, peer.to_owned(), m.to_owned(), path.to_owned(), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_a_bucket_whose_bounds_hold_it() {
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((0..64).map(|s| 1u64 << s));
        values.extend((1..64).map(|s| (1u64 << s) - 1));
        values.push(u64::MAX);
        for v in values {
            let i = LatencyHistogram::bucket_of(v);
            assert!(i < HISTOGRAM_BUCKETS, "{v} -> {i}");
            let (lo, hi) = LatencyHistogram::bounds(i);
            assert!(lo <= v && (v < hi || hi == u64::MAX), "{v} in bucket {i} [{lo}, {hi})");
            // Within 1/16 of itself: what the percentiles' precision rests on.
            assert!((hi - lo) as f64 <= (lo as f64 / 16.0).max(1.0) + 1.0, "{v}: [{lo}, {hi})");
        }
    }

    #[test]
    fn quantiles_are_within_four_percent_and_merging_is_exact() {
        let (mut a, mut b, mut whole) =
            (LatencyHistogram::default(), LatencyHistogram::default(), LatencyHistogram::default());
        for v in 1..=10_000u64 {
            let us = v * 37;
            if v % 3 == 0 { &mut a } else { &mut b }.record(us);
            whole.record(us);
        }
        a.merge(&b);
        assert_eq!(a, whole);
        for (q, truth) in [(0.5, 5000.0 * 37.0), (0.9, 9000.0 * 37.0), (0.99, 9900.0 * 37.0)] {
            let got = whole.quantile(q).unwrap();
            assert!((got - truth).abs() / truth < 0.04, "q{q}: {got} vs {truth}");
        }
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }

    fn peer(pid: u32, peer: &str, bytes: u64) -> PeerTraffic {
        PeerTraffic { pid, process: "p".into(), peer: peer.into(), bytes_sent: bytes, ..PeerTraffic::default() }
    }

    #[test]
    fn fitting_folds_the_smallest_rows_per_process_and_keeps_every_byte() {
        let mut net = NetPayload::new(1000);
        net.peers = (0..100).map(|i| peer(1 + i % 2, &format!("10.0.0.{i}:80"), 1 + i as u64)).collect();
        let total: u64 = net.peers.iter().map(|p| p.bytes_sent).sum();
        let limits = NetLimits { peers: 10, ..NetLimits::DEFAULT };
        let folded = net.fit(&limits);
        assert_eq!(folded, 92);
        assert_eq!(net.peers.len(), 10);
        assert_eq!(net.peers.iter().map(|p| p.bytes_sent).sum::<u64>(), total);
        assert_eq!(net.peers.iter().filter(|p| p.peer == FOLDED_PEERS).count(), 2);
        assert!(net.peers.iter().any(|p| p.peer == "10.0.0.99:80"));
        net.validate(&limits).unwrap();
    }

    #[test]
    fn hostile_records_are_refused_with_a_reason() {
        let limits = NetLimits::DEFAULT;
        let mut net = NetPayload::new(1);
        net.peers.push(peer(1, "1.2.3.4:5", 1));
        net.peers[0].connect_latency_us.buckets = vec![(3, 1), (2, 1)];
        assert!(net.validate(&limits).unwrap_err().contains("increasing"));
        net.peers[0].connect_latency_us.buckets = vec![(HISTOGRAM_BUCKETS, 1)];
        assert!(net.validate(&limits).unwrap_err().contains("past"));
        net.peers[0].connect_latency_us.buckets = vec![];
        net.peers[0].peer = "x".repeat(300);
        assert!(net.validate(&limits).unwrap_err().contains("bytes"));
        net.peers[0].peer = "\u{1b}[31mred".into();
        net.validate(&limits).unwrap();
        assert_eq!(net.peers[0].peer, " [31mred");
        net.version = 2;
        assert!(net.validate(&limits).unwrap_err().contains("version 2"));
    }

    #[test]
    fn merging_adds_rows_with_the_same_key() {
        let mut a = NetPayload::new(1000);
        a.peers.push(peer(1, "10.0.0.1:80", 5));
        let mut b = NetPayload::new(2000);
        b.peers.push(peer(1, "10.0.0.1:80", 7));
        b.peers.push(peer(2, "10.0.0.1:80", 1));
        let queue = |overflows| ListenQueues { pid: 1, process: "p".into(), overflows, ..ListenQueues::default() };
        a.listen_queues.push(queue(2));
        b.listen_queues.push(queue(3));
        a.merge(&b);
        assert_eq!(a.listen_queues, [queue(5)]);
        assert_eq!(a.window_ms, 2000);
        assert_eq!(a.peers.iter().map(|p| (p.pid, p.bytes_sent)).collect::<Vec<_>>(), [(1, 12), (2, 1)]);
    }
}
