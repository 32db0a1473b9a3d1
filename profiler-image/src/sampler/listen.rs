//! Listen-queue overflows of the targets (issue #19), from their network namespaces' own
//! counters (`TcpExt: ListenOverflows ListenDrops`) and per listener, from each listening
//! socket's `sk_drops` and accept queue as `sock_diag` reports them (what `ss -ltm` shows as
//! `d` of `skmem`), both read when a namespace's first target is added and at the window's end.
//! A listener a target closes before the end has its last count sent by the network program
//! (`inet_sock_set_state` LISTEN -> CLOSE, in the closing target's context).
//!
//! Why sock_diag and not a hook: `tcp_listendrop()`, which counts every dropped connection of a
//! listener, is inline; `tcp_conn_request` could take an fentry program, which kernels locked
//! down for integrity refuse (see net.bpf.c), and a BTF iterator (`iter/tcp`, 5.9+) would read
//! the same `sk_drops` as sock_diag does, only through a program of our own. sock_diag works on
//! every kernel a node runs (`SK_MEMINFO_DROPS` is 4.x) and needs no BTF.
//!
//! Why counters and not a drop event: on Linux 6.x a SYN that finds its listener's accept queue
//! full is dropped in `tcp_conn_request` through `tcp_listendrop()` and freed with
//! `consume_skb`, so `skb:kfree_skb` never sees it (20 connects to a `listen(1)` socket that
//! never accepts: 72 overflows in `/proc/net/netstat`, 72 in the listener's `sk_drops`, no
//! `kfree_skb` of a TCP socket). Only the third handshake segment meeting a full queue has a
//! drop reason (`SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`, 6.15+), and its listener belongs to no
//! process the kernel side could name. A pod's namespace is its own, so its counters are the
//! pod's; the host's namespace is shared by every host-network process, which the record says.
//!
//! A namespace is held open from its first sight (its file descriptor), and read from a thread
//! that enters it: its counters are still there when every target in it has exited (a command
//! run with `--`), and no process of its is trusted to still be in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use eagle_proto::{ListenQueues, Listener};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{nlas::Nla, ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// The two counters of a namespace, as `TcpExt:` spells them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenCounters {
    pub overflows: u64,
    pub drops: u64,
}

impl ListenCounters {
    /// Reads them from the text of a `netstat` file (two `TcpExt:` lines: names, values).
    pub fn parse(netstat: &str) -> Option<ListenCounters> {
        let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = (lines.next()?, lines.next()?);
        let value = |name: &str| -> Option<u64> {
            let at = names.split_whitespace().position(|n| n == name)?;
            values.split_whitespace().nth(at)?.parse().ok()
        };
        Some(ListenCounters { overflows: value("ListenOverflows")?, drops: value("ListenDrops")? })
    }
}

/// One listening TCP socket as sock_diag reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListeningSocket {
    /// The kernel's cookie of the socket: unique while the machine runs.
    pub cookie: u64,
    pub inode: u32,
    pub address: SocketAddr,
    /// `sk_drops`: connections it dropped since it was created.
    pub drops: u32,
    /// Connections in its accept queue, and the queue's length.
    pub queued: u32,
    pub backlog: u32,
}

/// A namespace's counters and listeners at one moment. The listeners are best-effort: a
/// kernel without `inet_diag` still has the namespace's counters.
struct Reading {
    counters: ListenCounters,
    listeners: Result<Vec<ListeningSocket>, String>,
}

/// Listeners closed in the window that are remembered: a target that opens and closes
/// listeners in a loop must not grow the agent's memory. Past it, closes are only counted.
const MAX_CLOSED_LISTENERS: usize = 4096;

/// A listener a target closed in the window: its last `sk_drops`.
#[derive(Clone, Copy, Debug)]
pub struct ClosedListener {
    pub cookie: u64,
    pub netns: u64,
    pub address: SocketAddr,
    pub drops: u64,
    pub pid: u32,
}

struct Namespace {
    file: File,
    pid: u32,
    host_network: bool,
    at_start: ListenCounters,
    /// `sk_drops` of its listeners at first sight, by cookie.
    listeners_at_start: HashMap<u64, u32>,
}

/// The namespaces of the targets, each with its counters at first sight.
#[derive(Default)]
pub struct ListenQueueWatch {
    namespaces: HashMap<u64, Namespace>,
    /// The namespace each target was last seen in: one a target only passed through (the
    /// host's, for `-- nsenter -n ...` before it entered its own) is not reported.
    last_seen_in: HashMap<u32, u64>,
    /// Namespaces that could not be read: said once, at the end, and not tried again.
    unreadable: Vec<String>,
    failed: HashSet<u64>,
    /// The last count of each listener closed in the window, by cookie (a listener that
    /// listens again and closes again sends its newer count).
    closed: HashMap<u64, ClosedListener>,
    /// Closes past [`MAX_CLOSED_LISTENERS`], not counted.
    closed_untracked: u64,
}

impl ListenQueueWatch {
    /// Notes `pid`'s namespace, and reads its counters if it is new: their growth from now on
    /// is the window's. Cheap for a namespace seen already (one `stat`): called again for every
    /// target at each collection, since a process may enter another namespace.
    pub fn add(&mut self, pid: u32) {
        let path = format!("/proc/{pid}/ns/net");
        // A process gone already has nothing to count; a namespace seen already is counted.
        let Ok(inode) = std::fs::metadata(&path).map(|m| m.ino()) else { return };
        self.last_seen_in.insert(pid, inode);
        if self.namespaces.contains_key(&inode) || self.failed.contains(&inode) {
            return;
        }
        let Ok(file) = File::open(&path) else { return };
        if file.metadata().map(|m| m.ino()).ok() != Some(inode) {
            return; // entered another one meanwhile: the next call sees it
        }
        let host_network = std::fs::metadata("/proc/1/ns/net").is_ok_and(|m| m.ino() == inode);
        match read_in(&file) {
            Ok(reading) => {
                let listeners_at_start = match reading.listeners {
                    Ok(listeners) => listeners.iter().map(|l| (l.cookie, l.drops)).collect(),
                    Err(why) => {
                        self.unreadable.push(format!("pid {pid}: its listeners: {why}"));
                        HashMap::new()
                    }
                };
                let at_start = reading.counters;
                self.namespaces.insert(inode, Namespace { file, pid, host_network, at_start, listeners_at_start });
            }
            Err(why) => {
                self.failed.insert(inode);
                self.unreadable.push(format!("pid {pid}: {why}"));
            }
        }
    }

    /// A listener `closed.pid` closed: the network program read its last count.
    pub fn closed(&mut self, closed: ClosedListener) {
        // Kept even for a namespace not seen yet: a target that entered it may be added at the
        // next collection; `finish` reports only namespaces it counted.
        if self.closed.len() >= MAX_CLOSED_LISTENERS && !self.closed.contains_key(&closed.cookie) {
            self.closed_untracked += 1;
            return;
        }
        self.closed.insert(closed.cookie, closed);
    }

    /// The counters' growth since each namespace was first seen, with its listeners', and the
    /// namespaces that could not be read (for a warning).
    pub fn finish(self, name: impl Fn(u32) -> (Option<String>, String)) -> (Vec<ListenQueues>, Vec<String>) {
        let mut unreadable = self.unreadable;
        if self.closed_untracked > 0 {
            unreadable.push(format!(
                "{} listeners closed in the window past the first {MAX_CLOSED_LISTENERS} were not counted (a target opening and closing listeners in a loop)",
                self.closed_untracked
            ));
        }
        let mut rows: Vec<ListenQueues> = Vec::new();
        let mut targets_in: HashMap<u64, Vec<u32>> = HashMap::new();
        for (&pid, &inode) in &self.last_seen_in {
            targets_in.entry(inode).or_default().push(pid);
        }
        for (inode, ns) in self.namespaces {
            let Some(targets) = targets_in.get(&inode) else { continue };
            match read_in(&ns.file) {
                Ok(now) => {
                    let (container, process) = name(ns.pid);
                    let now_listeners = now.listeners.unwrap_or_else(|why| {
                        if !ns.listeners_at_start.is_empty() {
                            unreadable.push(format!("pid {}: its listeners at the window's end: {why}", ns.pid));
                        }
                        Vec::new()
                    });
                    // A listener shut down and listening again (same socket) is counted once,
                    // as it is at the end.
                    let open: HashSet<u64> = now_listeners.iter().map(|l| l.cookie).collect();
                    let closed = self.closed.values().filter(|c| c.netns == inode && !open.contains(&c.cookie));
                    let owners = socket_owners(targets);
                    rows.push(ListenQueues {
                        container,
                        pid: ns.pid,
                        process,
                        host_network: ns.host_network,
                        overflows: now.counters.overflows.saturating_sub(ns.at_start.overflows),
                        drops: now.counters.drops.saturating_sub(ns.at_start.drops),
                        listeners: listeners(&ns.listeners_at_start, &now_listeners, closed, &owners, ns.host_network),
                    });
                }
                Err(why) => unreadable.push(format!("pid {}: {why}", ns.pid)),
            }
        }
        rows.sort_by_key(|r| r.pid);
        (rows, unreadable)
    }
}

/// The window's listeners of one namespace: those open at its end, less their drops at its
/// start, and those a target closed. In the host's namespace only the targets' own are theirs.
fn listeners<'a>(
    at_start: &HashMap<u64, u32>,
    now: &[ListeningSocket],
    closed: impl Iterator<Item = &'a ClosedListener>,
    owners: &HashMap<u32, u32>,
    host_network: bool,
) -> Vec<Listener> {
    let before = |cookie: u64| u64::from(at_start.get(&cookie).copied().unwrap_or(0));
    // Sockets on one address of one process (SO_REUSEPORT, or closed and opened again) are one
    // row: a user asks about the port.
    let mut rows: BTreeMap<(u16, String, Option<u32>), Listener> = BTreeMap::new();
    fn row(
        rows: &mut BTreeMap<(u16, String, Option<u32>), Listener>,
        address: SocketAddr,
        pid: Option<u32>,
    ) -> &mut Listener {
        let text = address.to_string();
        rows.entry((address.port(), text.clone(), pid)).or_insert_with(|| Listener {
            address: text,
            port: address.port(),
            pid,
            ..Listener::default()
        })
    }
    for socket in now {
        let pid = owners.get(&socket.inode).copied();
        if host_network && pid.is_none() {
            continue;
        }
        let listener = row(&mut rows, socket.address, pid);
        // Sums of what the kernel (or a target's own `listen(fd, INT_MAX)`) says: saturated.
        listener.drops = listener.drops.saturating_add(u64::from(socket.drops).saturating_sub(before(socket.cookie)));
        listener.queued = listener.queued.saturating_add(socket.queued);
        listener.backlog = listener.backlog.saturating_add(socket.backlog);
    }
    for socket in closed {
        let listener = row(&mut rows, socket.address, Some(socket.pid));
        listener.drops = listener.drops.saturating_add(socket.drops.saturating_sub(before(socket.cookie)));
        // Still open on another socket: the open one's queue is the end's.
        listener.closed = listener.backlog == 0;
    }
    rows.into_values().collect()
}

/// Socket inode -> the target holding it, from the targets' file descriptors.
fn socket_owners(targets: &[u32]) -> HashMap<u32, u32> {
    let mut owners = HashMap::new();
    for &pid in targets {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.filter_map(Result::ok) {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            let inode = link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok());
            if let Some(inode) = inode {
                // A listener shared by a prefork parent and its workers: the same owner every
                // run (the parent, usually the smallest pid), not the first the map yields.
                let owner = owners.entry(inode).or_insert(pid);
                *owner = (*owner).min(pid);
            }
        }
    }
    owners
}

/// The listening TCP sockets of the calling thread's network namespace, IPv4 and IPv6, as
/// `ss -ltm` asks for them.
pub fn listening_sockets() -> Result<Vec<ListeningSocket>, String> {
    let socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| format!("cannot open a sock_diag socket: {e}"))?;
    let mut found = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::SKMEMINFO,
                states: StateFlags::LISTEN,
                socket_id: if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() },
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        socket.send(&bytes, 0).map_err(|e| format!("sock_diag request refused: {e}"))?;
        'replies: loop {
            let (reply, _) = socket.recv_from_full().map_err(|e| format!("sock_diag reply unreadable: {e}"))?;
            let mut at = 0;
            while at < reply.len() {
                let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&reply[at..])
                    .map_err(|e| format!("sock_diag reply malformed: {e}"))?;
                let length = message.header.length as usize;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                        let drops = response.nlas.iter().find_map(|nla| match nla {
                            Nla::MemInfo(memory) => Some(memory.drops),
                            _ => None,
                        });
                        let id = &response.header.socket_id;
                        let [a, b, c, d, e, f, g, h] = id.cookie;
                        let cookie = u64::from(u32::from_ne_bytes([a, b, c, d]))
                            | u64::from(u32::from_ne_bytes([e, f, g, h])) << 32;
                        found.push(ListeningSocket {
                            cookie,
                            inode: response.header.inode,
                            address: SocketAddr::new(id.source_address, id.source_port),
                            drops: drops.unwrap_or(0),
                            // A listener's queues are its accept queue: what waits, and its length.
                            queued: response.header.recv_queue,
                            backlog: response.header.send_queue,
                        });
                    }
                    NetlinkPayload::Done(_) => break 'replies,
                    NetlinkPayload::Error(e) => {
                        // A kernel without IPv6 has no sockets of that family to list.
                        if family == AF_INET6 {
                            break 'replies;
                        }
                        return Err(format!("sock_diag refused the dump: {e}"));
                    }
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                at += length;
            }
        }
    }
    Ok(found)
}

/// The bound address of a listener the network program reported closed.
pub fn listener_address(family: u16, addr: [u8; 16], port: u16) -> SocketAddr {
    let ip = if family == u16::from(AF_INET) {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    };
    SocketAddr::new(ip, port)
}

/// Reads the counters and listeners of the namespace `ns` from a thread that enters it (`setns` moves the
/// calling thread only), through `/proc/thread-self/net/netstat`, which is its thread's
/// namespace's.
fn read_in(ns: &File) -> Result<Reading, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a plain syscall on an open namespace file descriptor; it changes the
                // network namespace of this short-lived thread alone.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("cannot enter its network namespace: {}", std::io::Error::last_os_error()));
                }
                let text = std::fs::read_to_string("/proc/thread-self/net/netstat")
                    .map_err(|e| format!("cannot read its /proc/net/netstat: {e}"))?;
                let counters = ListenCounters::parse(&text)
                    .ok_or_else(|| "no ListenOverflows in its /proc/net/netstat".to_owned())?;
                // A socket belongs to the namespace of the thread that creates it.
                let listeners = listening_sockets();
                Ok(Reading { counters, listeners })
            })
            .join()
            .unwrap_or_else(|_| Err("the thread reading its counters panicked".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_are_found_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\nTcpExt: 1 72 73 5\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(ListenCounters::parse(text), Some(ListenCounters { overflows: 72, drops: 73 }));
        assert_eq!(ListenCounters::parse("IpExt: A\nIpExt: 1\n"), None);
    }

    /// sock_diag finds a listener of this process, with its accept queue's length, and the
    /// owner is found by its socket's inode among this process's descriptors.
    #[test]
    fn a_listener_of_ours_is_listed_and_owned() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sockets = listening_sockets().unwrap();
        let ours = sockets.iter().find(|s| s.address.port() == port).unwrap_or_else(|| panic!("{sockets:?}"));
        assert_eq!(ours.address.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(ours.backlog > 0 && ours.queued == 0 && ours.drops == 0 && ours.cookie != 0, "{ours:?}");
        let owners = socket_owners(&[std::process::id()]);
        assert_eq!(owners.get(&ours.inode), Some(&std::process::id()));
    }

    #[test]
    fn drops_are_the_windows_and_a_closed_listener_keeps_its_last_count() {
        let socket = |cookie, port, drops, inode| ListeningSocket {
            cookie,
            inode,
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            drops,
            queued: 1,
            backlog: 4,
        };
        // Cookie 1 was there at the start with 5 drops; 2 opened in the window; 3 was there at
        // the start with 7 and a target closed it at 10; 4 opened and closed in the window.
        let at_start = HashMap::from([(1, 5), (3, 7)]);
        let now = [socket(1, 80, 12, 100), socket(2, 81, 3, 101), socket(9, 22, 50, 999)];
        let closed = |cookie, port, drops| ClosedListener {
            cookie,
            netns: 1,
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            drops,
            pid: 42,
        };
        let closed = [closed(3, 82, 10), closed(4, 83, 2)];
        let owners = HashMap::from([(100, 42), (101, 42)]);
        let own = listeners(&at_start, &now, closed.iter(), &owners, false);
        let rows: Vec<(u16, u64, Option<u32>, bool)> = own.iter().map(|l| (l.port, l.drops, l.pid, l.closed)).collect();
        assert_eq!(
            rows,
            [
                (22, 50, None, false),
                (80, 7, Some(42), false),
                (81, 3, Some(42), false),
                (82, 3, Some(42), true),
                (83, 2, Some(42), true)
            ]
        );
        assert_eq!(own[1].address, "0.0.0.0:80");
        // In the host's namespace, port 22 (nobody's of ours) is not the targets' business.
        let host = listeners(&at_start, &now, closed.iter(), &owners, true);
        assert!(host.iter().all(|l| l.port != 22) && host.len() == 4, "{host:?}");
    }

    #[test]
    fn this_namespace_reads_and_an_exited_target_is_no_error() {
        let mut watch = ListenQueueWatch::default();
        watch.add(std::process::id());
        watch.add(u32::MAX);
        let (rows, unreadable) = watch.finish(|_| (None, "test".into()));
        // Entering a namespace needs CAP_SYS_ADMIN: as another user, the reason is said.
        assert_eq!(rows.len() + unreadable.len(), 1, "{unreadable:?}");
    }
}
