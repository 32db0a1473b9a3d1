//! Listen-queue overflows of the targets (issue #19), from their network namespaces' own
//! counters (`TcpExt: ListenOverflows ListenDrops`), read when a namespace's first target is
//! added and at the window's end.
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

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use eagle_proto::ListenQueues;

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

struct Namespace {
    file: File,
    pid: u32,
    host_network: bool,
    at_start: ListenCounters,
}

/// The namespaces of the targets, each with its counters at first sight.
#[derive(Default)]
pub struct ListenQueueWatch {
    namespaces: HashMap<u64, Namespace>,
    /// The namespace each target was last seen in: one a target only passed through (the
    /// host's, for `-- nsenter -n ...` before it entered its own) is not reported.
    last_seen_in: HashMap<u32, u64>,
    /// Namespaces that could not be read: said once, at the end.
    unreadable: Vec<String>,
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
        if self.namespaces.contains_key(&inode) {
            return;
        }
        let Ok(file) = File::open(&path) else { return };
        if file.metadata().map(|m| m.ino()).ok() != Some(inode) {
            return; // entered another one meanwhile: the next call sees it
        }
        let host_network = std::fs::metadata("/proc/1/ns/net").is_ok_and(|m| m.ino() == inode);
        match read_in(&file) {
            Ok(at_start) => {
                self.namespaces.insert(inode, Namespace { file, pid, host_network, at_start });
            }
            Err(why) => self.unreadable.push(format!("pid {pid}: {why}")),
        }
    }

    /// The counters' growth since each namespace was first seen, and the namespaces that could
    /// not be read (for a warning).
    pub fn finish(self, name: impl Fn(u32) -> (Option<String>, String)) -> (Vec<ListenQueues>, Vec<String>) {
        let mut unreadable = self.unreadable;
        let mut rows: Vec<ListenQueues> = Vec::new();
        let current: std::collections::HashSet<u64> = self.last_seen_in.into_values().collect();
        for (_, ns) in self.namespaces.into_iter().filter(|(inode, _)| current.contains(inode)) {
            match read_in(&ns.file) {
                Ok(now) => {
                    let (container, process) = name(ns.pid);
                    rows.push(ListenQueues {
                        container,
                        pid: ns.pid,
                        process,
                        host_network: ns.host_network,
                        overflows: now.overflows.saturating_sub(ns.at_start.overflows),
                        drops: now.drops.saturating_sub(ns.at_start.drops),
                    });
                }
                Err(why) => unreadable.push(format!("pid {}: {why}", ns.pid)),
            }
        }
        rows.sort_by_key(|r| r.pid);
        (rows, unreadable)
    }
}

/// Reads the counters of the namespace `ns` from a thread that enters it (`setns` moves the
/// calling thread only), through `/proc/thread-self/net/netstat`, which is its thread's
/// namespace's.
fn read_in(ns: &File) -> Result<ListenCounters, String> {
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
                ListenCounters::parse(&text).ok_or_else(|| "no ListenOverflows in its /proc/net/netstat".to_owned())
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
