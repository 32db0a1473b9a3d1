//! Finding the processes of a target through `/proc`: a pid is itself, a container or pod is
//! every process whose cgroup path names it. Pure matching over cgroup text, plus a thin scan.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::target::Target;

/// Where `/proc` is: the host's in a hostPID pod, the machine's in local mode.
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self { root: PathBuf::from("/proc") }
    }
}

/// How many files this process may hold open, raised once to the hard limit (a node-wide run
/// watches every target's exit through a descriptor, and holds open every object it names).
fn open_files_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read and write one rlimit structure we own.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        limit.rlim_cur
    })
}

/// Which of `watches` ([`ProcFs::exit_watch`]) tell an exit: their process has ended, a zombie
/// or reaped. One `poll(2)` for all of them, however many targets a node-wide run has, where a
/// read of `/proc/PID/stat` each cost a third of the agent's system time.
pub fn exited(watches: &[BorrowedFd<'_>]) -> Vec<bool> {
    // Cannot tell (EINTR, ENOMEM): nothing is taken for gone; the next collection asks again.
    readable(watches, 0).unwrap_or_else(|_| vec![false; watches.len()])
}

/// Which of `fds` are readable (or in error), after one `poll(2)` that waits up to
/// `timeout_ms` for one of them (0: only looks; -1: for ever).
pub fn readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> std::io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd structures for the call.
    if unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout_ms) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(polled.iter().map(|p| p.revents != 0).collect())
}

/// What the agent knows about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `comm`: the kernel's short name of the process.
    pub name: String,
    /// Container id, when the process lives in one.
    pub container: Option<String>,
    /// When it started ([`ProcFs::start_ticks`]): a later process with its pid is another one.
    pub start_ticks: Option<u64>,
}

impl ProcFs {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Every process (not thread) id currently in `/proc`.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(dir) = fs::read_dir(&self.root) else { return Vec::new() };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
    }

    pub fn is_alive(&self, pid: u32) -> bool {
        self.is_same_alive(pid, None)
    }

    /// When `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`): with the pid,
    /// what names one process, since pids are reused once their process ended.
    pub fn start_ticks(&self, pid: u32) -> Option<u64> {
        parse_start_ticks(&fs::read_to_string(self.root.join(format!("{pid}/stat"))).ok()?)
    }

    /// Whether the process that started at `start_ticks` still runs as `pid`: false once it
    /// ended, also when another process got its pid since. `None` checks the pid only. One
    /// read of `/proc/PID/stat`: the sampler asks this of every target at every collection.
    pub fn is_same_alive(&self, pid: u32, start_ticks: Option<u64>) -> bool {
        let Ok(stat) = fs::read_to_string(self.root.join(format!("{pid}/stat"))) else { return false };
        // A zombie still has a /proc entry but nothing left to sample or symbolize.
        let zombie = matches!(stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next()), Some('Z' | 'X'));
        !zombie && (start_ticks.is_none() || parse_start_ticks(&stat) == start_ticks)
    }

    /// A handle on the process that started at `start_ticks` as `pid` which tells when it
    /// exits ([`exited`]), without reading `/proc` again: a pidfd names one process, never a
    /// later one with its pid. `None` where pidfds cannot be had (a kernel before 5.3, no file
    /// descriptor left, a `/proc` other than this process's own, whose pids are not ours) or
    /// the process is not the one that started then, or gone: ask [`ProcFs::is_same_alive`].
    pub fn exit_watch(&self, pid: u32, start_ticks: Option<u64>) -> Option<OwnedFd> {
        if self.root != Path::new("/proc") {
            return None;
        }
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the descriptor was just returned to us and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Descriptors are numbered lowest free first: past half the limit, the rest is left to
        // the objects being named (a file each), which need them more than a watch does.
        if u64::try_from(fd.as_raw_fd()).unwrap_or(u64::MAX) >= open_files_limit() / 2 {
            return None;
        }
        // Opened first, checked after: if the pid was reused before the open, the start time
        // read now is the later process's, and it is refused.
        self.is_same_alive(pid, start_ticks).then_some(fd)
    }

    /// The thread-group id of `id`, which may be a thread id: `None` if it is gone.
    pub fn tgid_of(&self, id: u32) -> Option<u32> {
        let status = fs::read_to_string(self.root.join(format!("{id}/status"))).ok()?;
        status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
    }

    pub fn name(&self, pid: u32) -> Option<String> {
        fs::read_to_string(self.root.join(format!("{pid}/comm"))).ok().map(|s| s.trim_end().to_owned())
    }

    pub fn cgroup(&self, pid: u32) -> Option<String> {
        fs::read_to_string(self.root.join(format!("{pid}/cgroup"))).ok()
    }

    pub fn info(&self, pid: u32) -> Option<ProcessInfo> {
        let name = self.name(pid)?;
        let container = self.cgroup(pid).as_deref().and_then(container_id);
        Some(ProcessInfo { pid, name, container, start_ticks: self.start_ticks(pid) })
    }

    /// The processes each target names right now. A target that matches nothing maps to an
    /// empty list: the caller decides whether that is an error (a pid) or not yet (a pod whose
    /// container is restarting).
    pub fn resolve(&self, targets: &[Target]) -> BTreeMap<Target, Vec<u32>> {
        let mut found: BTreeMap<Target, Vec<u32>> = targets.iter().map(|t| (t.clone(), Vec::new())).collect();
        let wants_cgroups = targets.iter().any(|t| !matches!(t, Target::Pid(_)));
        for t in targets {
            if let Target::Pid(pid) = t {
                if self.is_alive(*pid) && self.tgid_of(*pid) == Some(*pid) {
                    found.get_mut(t).expect("inserted above").push(*pid);
                }
            }
        }
        if wants_cgroups {
            for pid in self.pids() {
                let Some(cgroup) = self.cgroup(pid) else { continue };
                for t in targets {
                    if cgroup_matches(&cgroup, t) {
                        found.get_mut(t).expect("inserted above").push(pid);
                    }
                }
            }
        }
        for pids in found.values_mut() {
            pids.sort_unstable();
            pids.dedup();
        }
        found
    }
}

/// Field 22 of a `/proc/PID/stat` text (the start time), counted after the command name, which
/// may hold spaces and parentheses.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    stat.get(stat.rfind(')')? + 2..)?.split(' ').nth(19)?.parse().ok()
}

/// Does a `/proc/PID/cgroup` text place the process in the target's container or pod?
///
/// Handles cgroup v1 and v2, the cgroupfs driver (`/kubepods/burstable/pod<uid>/<id>`), the
/// systemd driver (`kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope`) and plain docker (`/docker/<id>`).
pub fn cgroup_matches(cgroup: &str, target: &Target) -> bool {
    match target {
        Target::Pid(_) => false,
        Target::Container(id) => {
            cgroup_paths(cgroup).any(|p| path_container_id(p).is_some_and(|c| c.starts_with(id.as_str())))
        }
        Target::Pod(uid) => {
            let underscored = uid.replace('-', "_");
            cgroup_paths(cgroup).any(|p| {
                p.split('/').any(|seg| {
                    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
                    seg.rsplit_once("pod").is_some_and(|(_, rest)| rest == uid || rest == underscored)
                })
            })
        }
    }
}

/// The container id in a `/proc/PID/cgroup` text, if the process is in a container.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup_paths(cgroup).find_map(path_container_id).map(str::to_owned)
}

fn cgroup_paths(cgroup: &str) -> impl Iterator<Item = &str> {
    // "hierarchy-id:controllers:path"; the path may itself contain ':'
    cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2))
}

/// The last path segment that is (or wraps) a 64-hex-digit id.
fn path_container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|seg| {
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = seg.rsplit_once('-').map_or(seg, |(_, id)| id);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const UID: &str = "5b9e6f8a-1c2d-4e3f-8a9b-0c1d2e3f4a5b";

    fn fixtures() -> Vec<(&'static str, String)> {
        let u = UID.replace('-', "_");
        vec![
            ("v1 cgroupfs (the lab cluster)", format!("12:pids:/kubepods/besteffort/pod{UID}/{ID}\n4:memory:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n")),
            ("v1 systemd containerd", format!("5:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n")),
            ("v2 systemd cri-o", format!("0::/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope\n")),
            ("v2 cgroupfs guaranteed", format!("0::/kubepods/pod{UID}/{ID}\n")),
        ]
    }

    /// A watch tells the exit of its process (already as a zombie, not reaped here), never
    /// the exit of another, and is refused where it could name another.
    #[test]
    fn an_exit_watch_tells_its_process_exit_and_only_its() {
        let proc = ProcFs::default();
        let mut child = std::process::Command::new("sleep").arg("0.5").spawn().unwrap();
        let pid = child.id();
        let start = proc.start_ticks(pid);
        assert!(proc.exit_watch(pid, start.map(|s| s + 1)).is_none(), "another start time is another process");
        assert!(ProcFs::at("/nowhere").exit_watch(pid, start).is_none(), "not this process's /proc");
        let watch = proc.exit_watch(pid, start).expect("a watch of a live child");
        assert_eq!(exited(&[watch.as_fd()]), vec![false]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !exited(&[watch.as_fd()])[0] {
            assert!(std::time::Instant::now() < deadline, "the exit was never told");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!proc.is_same_alive(pid, start), "a zombie, as the watch says");
        child.wait().unwrap();
        assert_eq!(exited(&[watch.as_fd()]), vec![true], "still told once reaped");
        assert!(exited(&[]).is_empty());
    }

    #[test]
    fn matches_containers_and_pods_in_every_driver() {
        for (name, text) in fixtures() {
            assert!(cgroup_matches(&text, &Target::Container(ID.into())), "{name}: container");
            assert!(cgroup_matches(&text, &Target::Container(ID[..12].into())), "{name}: short id");
            assert!(cgroup_matches(&text, &Target::Pod(UID.into())), "{name}: pod");
            assert_eq!(container_id(&text).as_deref(), Some(ID), "{name}");
            assert!(
                !cgroup_matches(&text, &Target::Pod("5b9e6f8a-1c2d-4e3f-8a9b-000000000000".into())),
                "{name}: other pod"
            );
        }
    }

    #[test]
    fn docker_and_host_processes() {
        let docker = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id(&docker).as_deref(), Some(ID));
        let plain = format!("3:cpu:/docker/{ID}\n");
        assert_eq!(container_id(&plain).as_deref(), Some(ID));
        let host = "9:name=systemd:/\n4:memory:/process_api/21aea51ca0d9e50a3f0bbb06f93db9c5\n0::/\n";
        assert_eq!(container_id(host), None);
        assert!(!cgroup_matches(host, &Target::Pod(UID.into())));
    }

    #[test]
    fn finds_this_very_process() {
        let me = std::process::id();
        let proc = ProcFs::default();
        let found = proc.resolve(&[Target::Pid(me), Target::Pid(u32::MAX - 1)]);
        assert_eq!(found[&Target::Pid(me)], vec![me]);
        assert!(found[&Target::Pid(u32::MAX - 1)].is_empty());
        assert!(!proc.info(me).unwrap().name.is_empty());
    }
}
