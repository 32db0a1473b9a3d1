//! The network side of a window (issue #19): loads `eagle-ebpf`'s network program, follows the
//! target processes, and turns what the kernel counted and sent into the stream's
//! [`NetPayload`]: TCP counters per (process, peer) summed in the kernel, handshake latencies
//! and HTTP/1.x requests from the `net_events` ring buffer.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use eagle_ebpf::net::{
    direction, event_kind, names, NetCounter, NetCounters, NetDropKey, NetEvent, NetKey, AF_INET, AF_INET6,
};
use eagle_proto::{Direction, HttpRoute, LatencyHistogram, NetPayload, PeerTraffic};

use super::drop_reason::DropReasons;
use super::ebpf::{classify, program_mut};
use super::listen::{listener_address, ClosedListener, ListenQueueWatch};
use super::SamplerError;
use crate::discovery::ProcessInfo;
use crate::http::HttpTracker;

pub struct NetCollector {
    // Owns the programs and their links: dropping it detaches everything.
    _bpf: Ebpf,
    targets: BpfHashMap<MapData, u32, u32>,
    traffic: BpfHashMap<MapData, NetKey, NetCounters>,
    drop_reasons: BpfHashMap<MapData, NetDropKey, u64>,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    connect_latency: HashMap<NetKey, LatencyHistogram>,
    http: Option<HttpTracker>,
    /// Ring buffer records that were not ours to read (too short: a kernel/agent mismatch).
    malformed_events: u64,
    /// The targets' network namespaces and their listen-queue counters.
    listen: ListenQueueWatch,
}

impl NetCollector {
    /// Loads and attaches the network program; nothing is counted until [`NetCollector::add`].
    /// With `http`, the first bytes of the targets' socket reads and writes are copied for the
    /// HTTP parser too (by the same hooks: no hook on the machine's every system call).
    pub fn start(http: bool) -> Result<Self, SamplerError> {
        let object = eagle_ebpf::net::object().ok_or(SamplerError::NoProgram)?;
        let btf = Btf::from_sys_fs().map_err(|e| {
            SamplerError::Unsupported(format!(
                "the network view needs BTF (/sys/kernel/btf/vmlinux), which this kernel does not offer: {e}"
            ))
        })?;
        let mut bpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(names::CAPTURE_HTTP, &u32::from(http), true)
            .load(object)
            .map_err(|e| classify("load the network program", &e))?;
        for (program, event) in names::TRACEPOINTS.iter() {
            let tp: &mut BtfTracePoint = program_mut(&mut bpf, program)?;
            tp.load(event, &btf).map_err(|e| classify(&format!("load the {event} tracepoint"), &e))?;
            tp.attach().map_err(|e| classify(&format!("attach to the {event} tracepoint"), &e))?;
        }
        attach_drop_counter(&mut bpf, &btf)?;
        let map = |bpf: &mut Ebpf, name: &str| {
            bpf.take_map(name)
                .ok_or_else(|| SamplerError::Failed(format!("map `{name}` missing from the network program")))
        };
        let failed = |e: aya::maps::MapError| SamplerError::Failed(format!("network program maps: {e}"));
        let targets = BpfHashMap::try_from(map(&mut bpf, names::TARGETS)?).map_err(failed)?;
        let traffic = BpfHashMap::try_from(map(&mut bpf, names::TRAFFIC)?).map_err(failed)?;
        let drop_reasons = BpfHashMap::try_from(map(&mut bpf, names::DROP_REASONS)?).map_err(failed)?;
        let events = RingBuf::try_from(map(&mut bpf, names::EVENTS)?).map_err(failed)?;
        let counters = PerCpuArray::try_from(map(&mut bpf, names::COUNTERS)?).map_err(failed)?;
        Ok(Self {
            _bpf: bpf,
            targets,
            traffic,
            drop_reasons,
            events,
            counters,
            connect_latency: HashMap::new(),
            http: http.then(HttpTracker::default),
            malformed_events: 0,
            listen: ListenQueueWatch::default(),
        })
    }

    /// Counts `pid`'s connections from now on (and its children's, which the kernel adds).
    pub fn add(&mut self, pid: u32) -> Result<(), SamplerError> {
        self.listen.add(pid);
        self.targets
            .insert(pid, 1, 0)
            .map_err(|e| SamplerError::Failed(format!("cannot watch pid {pid}'s network: {e}")))
    }

    /// Reads what the ring buffer holds. Call often (every collection): a full buffer drops
    /// events, which are counted.
    pub fn poll(&mut self) {
        while let Some(item) = self.events.next() {
            let Some(event) = NetEvent::read(&item) else {
                self.malformed_events += 1;
                continue;
            };
            match event.kind {
                event_kind::CONNECT if event.ok == 1 => {
                    self.connect_latency.entry(event.key).or_default().record(event.value / 1000);
                }
                event_kind::DATA => {
                    if let Some(http) = &mut self.http {
                        let key = event.key;
                        let peer = || peer_address(&key);
                        http.data(event.sock, key.tgid, peer, event.ok == 1, event.time_ns, event.data());
                    }
                }
                event_kind::LISTENER_CLOSED => {
                    let listener = event.listener();
                    self.listen.closed(ClosedListener {
                        cookie: listener.cookie,
                        netns: u64::from(listener.netns),
                        address: listener_address(listener.family, listener.addr, listener.port),
                        drops: event.value,
                        pid: event.key.tgid,
                    });
                }
                _ => {}
            }
        }
    }

    /// Events the kernel side could not keep: full maps, a full ring buffer.
    pub fn lost_events(&self) -> u64 {
        [NetCounter::RowsFull, NetCounter::EventsLost, NetCounter::SocksFull]
            .iter()
            .filter_map(|c| self.counters.get(&(*c as u32), 0).ok())
            .map(|per_cpu| per_cpu.iter().sum::<u64>())
            .sum::<u64>()
            + self.malformed_events
    }

    /// Everything counted, as the stream's record; `processes` names the pids. Also returns
    /// why a namespace's listen queues could not be read, if one could not.
    pub fn finish(mut self, window_ms: u64, processes: &HashMap<u32, ProcessInfo>) -> (NetPayload, Vec<String>) {
        self.poll();
        let mut net = NetPayload::new(window_ms);
        net.lost_events = self.lost_events();
        let name = |pid: u32| -> (Option<String>, String) {
            match processes.get(&pid) {
                Some(info) => (info.container.clone(), info.name.clone()),
                None => (None, comm(pid).unwrap_or_else(|| "[exited]".into())),
            }
        };
        let mut rows: Vec<(NetKey, NetCounters)> = self.traffic.iter().filter_map(Result::ok).collect();
        rows.sort_by_key(|(k, _)| *k);
        let mut reasons_of: HashMap<NetKey, Vec<(u32, u64)>> = HashMap::new();
        for (drop, count) in self.drop_reasons.iter().filter_map(Result::ok) {
            reasons_of.entry(drop.key).or_default().push((drop.reason, count));
        }
        let reason_names = if reasons_of.is_empty() { DropReasons::default() } else { DropReasons::from_kernel() };
        for (key, c) in rows {
            let (container, process) = name(key.tgid);
            net.peers.push(PeerTraffic {
                container,
                pid: key.tgid,
                process,
                direction: match key.direction {
                    direction::OUTBOUND => Direction::Outbound,
                    direction::INBOUND => Direction::Inbound,
                    _ => Direction::Unknown,
                },
                local_port: key.local_port,
                peer: peer_address(&key),
                bytes_sent: c.bytes_sent,
                bytes_received: c.bytes_received,
                connects: c.connects,
                accepts: c.accepts,
                connect_failures: c.connect_failures,
                connect_latency_us: self.connect_latency.remove(&key).unwrap_or_default(),
                retransmits: c.retransmits,
                resets_sent: c.resets_sent,
                resets_received: c.resets_received,
                rtt_sum_us: c.rtt_sum_us,
                rtt_samples: c.rtt_samples,
                drops: c.drops,
                drop_reasons: reasons_of.remove(&key).unwrap_or_default().into_iter().fold(
                    BTreeMap::new(),
                    |mut named, (reason, count)| {
                        *named.entry(reason_names.name(reason)).or_default() += count;
                        named
                    },
                ),
            });
        }
        if let Some(http) = self.http.take() {
            for (route, counts) in http.finish() {
                let (container, process) = name(route.tgid);
                net.http.push(HttpRoute {
                    container,
                    pid: route.tgid,
                    process,
                    direction: route.direction,
                    peer: route.peer,
                    method: route.method.to_owned(),
                    path: route.path,
                    status: route.status,
                    requests: counts.requests,
                    latency_us: counts.latency_us,
                });
            }
        }
        let (listen_queues, unreadable) = std::mem::take(&mut self.listen).finish(name);
        net.listen_queues = listen_queues;
        (net, unreadable)
    }
}

/// Attaches the first of the drop counter's programs this kernel loads (see
/// [`names::DROP_PROGRAMS`]).
fn attach_drop_counter(bpf: &mut Ebpf, btf: &Btf) -> Result<(), SamplerError> {
    let mut refusal = None;
    for program in names::DROP_PROGRAMS {
        let tp: &mut BtfTracePoint = program_mut(bpf, program)?;
        match tp.load(names::DROP_TRACEPOINT, btf) {
            Ok(()) => {
                tp.attach().map_err(|e| classify("attach to the kfree_skb tracepoint", &e))?;
                return Ok(());
            }
            Err(e) => refusal = Some(classify("load the kfree_skb tracepoint", &e)),
        }
    }
    Err(refusal.expect("two programs were tried"))
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_owned())
}

/// `ADDR:PORT`, `[ADDR]:PORT`, or the address alone for inbound rows (port 0).
fn peer_address(key: &NetKey) -> String {
    let address = match key.family {
        AF_INET => {
            let v4 = Ipv4Addr::new(key.peer_addr[0], key.peer_addr[1], key.peer_addr[2], key.peer_addr[3]);
            if key.peer_port == 0 {
                return v4.to_string();
            }
            return format!("{v4}:{}", key.peer_port);
        }
        AF_INET6 => Ipv6Addr::from(key.peer_addr),
        _ => return "[unknown family]".into(),
    };
    // An IPv4 peer of a dual-stack socket reads as ::ffff:a.b.c.d: say it as IPv4.
    let shown = address.to_ipv4_mapped().map_or_else(|| address.to_string(), |v4| v4.to_string());
    match (key.peer_port, address.to_ipv4_mapped()) {
        (0, _) => shown,
        (port, Some(_)) => format!("{shown}:{port}"),
        (port, None) => format!("[{shown}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both drop programs pass the verifier: the one this kernel attaches, and the one kept for
    /// kernels before `kfree_skb` had `rx_sk` (6.11), which no machine here would otherwise load.
    #[test]
    fn both_drop_programs_load() {
        // SAFETY: a plain syscall without arguments.
        let root = unsafe { libc::geteuid() } == 0;
        let (Some(object), Ok(btf), true) = (eagle_ebpf::net::object(), Btf::from_sys_fs(), root) else {
            eprintln!("skipped: needs root, BTF and the compiled program");
            return;
        };
        for program in names::DROP_PROGRAMS {
            let mut bpf = EbpfLoader::new().btf(Some(&btf)).load(object).unwrap();
            let tp: &mut BtfTracePoint = program_mut(&mut bpf, program).unwrap();
            tp.load(names::DROP_TRACEPOINT, &btf).unwrap_or_else(|e| panic!("{program}: {e}"));
        }
    }

    #[test]
    fn peers_read_as_people_write_them() {
        let mut key = NetKey { family: AF_INET, peer_port: 8080, ..NetKey::default() };
        key.peer_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(peer_address(&key), "127.0.0.1:8080");
        key.peer_port = 0;
        assert_eq!(peer_address(&key), "127.0.0.1");
        let mut v6 = NetKey { family: AF_INET6, peer_port: 443, ..NetKey::default() };
        v6.peer_addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(peer_address(&v6), "[::1]:443");
        v6.peer_addr = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        assert_eq!(peer_address(&v6), "10.1.2.3:443");
    }
}
