//! The CPU-limit counters of the target processes' cgroups over the window: what the kernel's
//! bandwidth controller itself says (`cpu.stat`: `nr_periods`, `nr_throttled`, and
//! `throttled_time` in cgroup v1 or `throttled_usec` in v2), beside the throttled time the eBPF
//! side measured per stack. Read when a process of a cgroup is first seen and at the window's
//! end; the difference is reported per cgroup (`eagle_proto::CgroupCpuStat`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eagle_proto::{CgroupCpuStat, LimitedLevel, Warning, WarningCode};

use crate::discovery::{self, ProcFs};

/// Where the cpu controller's hierarchy is read, and which view of it that is.
#[derive(Clone, Debug, Default)]
pub struct CpuMounts {
    /// cgroup v1 hierarchy with the `cpu` controller: (root of the mount, its directory).
    pub v1: Option<(String, PathBuf)>,
    /// The cgroup v2 hierarchy: (root of the mount, its directory).
    pub v2: Option<(String, PathBuf)>,
    pub view: View,
    /// The agent's own mount of the hierarchy, which the directories above lead into
    /// (`/proc/self/fd/N`): held open while they are read, gone when the last clone drops.
    _mount: Option<Arc<OwnedFd>>,
}

/// Which view of the cpu hierarchy the counters are read through, as the run reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// This mount namespace's own hierarchy, mounted from its root: every group is in it.
    #[default]
    Own,
    /// A mount of the hierarchy the agent made for itself: created detached (`fsmount`),
    /// read-only, attached to no mount namespace, so neither the host's mounts nor the
    /// container's change; it goes when the agent closes it. `shown`: what this mount
    /// namespace showed instead (a container sees its own group only).
    Private { shown: String },
    /// The host's, through `/proc/1/root`.
    Host { shown: String },
    /// Only the part this mount namespace shows: groups outside it are left out, and `why`.
    Partial { shown: String, why: String },
}

impl View {
    /// What the run says about the view, when it is not the ordinary one.
    pub fn to_warning(&self) -> Option<Warning> {
        let (code, message) = match self {
            View::Own => return None,
            View::Private { shown } => (
                WarningCode::InfoCgroupCpu,
                format!(
                    "cgroup CPU counters are read through a private, read-only mount of the cpu hierarchy the agent made (this mount namespace shows {shown} only)"
                ),
            ),
            View::Host { shown } => (
                WarningCode::InfoCgroupCpu,
                format!(
                    "cgroup CPU counters are read through the host's cpu hierarchy at /proc/1/root (this mount namespace shows {shown} only)"
                ),
            ),
            View::Partial { shown, why } => (
                WarningCode::SamplerFallback,
                format!(
                    "cgroup CPU counters are read only for groups under {shown}, the part of the cpu hierarchy this mount namespace shows ({why}): run the agent privileged, or with CAP_SYS_ADMIN, to have every target's"
                ),
            ),
        };
        Some(Warning { code, pid: None, message })
    }
}

impl CpuMounts {
    /// This mount namespace's hierarchies where they show whole (mounted from their root).
    /// Else (a container sees only its own group: a Job's agent) a mount of the hierarchy of
    /// its own, made detached; else the host's through `/proc/1/root`, which PID 1's owner may
    /// refuse (a sandbox's PID 1, a node whose init is not ours to read); else what shows here.
    pub fn read() -> CpuMounts {
        let own = fs::read_to_string("/proc/self/mountinfo").map(|m| CpuMounts::parse(&m)).unwrap_or_default();
        if own.is_whole() {
            return own;
        }
        let shown = own.shown();
        let controllers = fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| v1_controllers(&c));
        let private = match mount_privately(controllers.as_deref()) {
            Ok(mount) => return CpuMounts::through(mount, controllers.is_some(), shown),
            Err(e) => format!("mounting the hierarchy privately failed: {e}"),
        };
        let host = match fs::read_to_string("/proc/1/mountinfo") {
            Ok(m) => CpuMounts::parse(&m).under(Path::new("/proc/1/root")),
            Err(e) => {
                return CpuMounts {
                    view: View::Partial { shown, why: format!("{private}; /proc/1/mountinfo: {e}") },
                    ..own
                }
            }
        };
        let host_dir = host.v1.as_ref().or(host.v2.as_ref()).map(|(_, dir)| dir.clone());
        match host_dir.map(|dir| fs::read_dir(&dir).map(|_| dir)) {
            Some(Ok(_)) if host.is_whole() => CpuMounts { view: View::Host { shown }, ..host },
            Some(Err(e)) => {
                CpuMounts { view: View::Partial { shown, why: format!("{private}; /proc/1/root: {e}") }, ..own }
            }
            _ => CpuMounts {
                view: View::Partial { shown, why: format!("{private}; PID 1 sees no whole cpu hierarchy either") },
                ..own
            },
        }
    }

    /// Does the hierarchy the counters are read from show every group?
    fn is_whole(&self) -> bool {
        let whole = |m: &Option<(String, PathBuf)>| m.as_ref().is_some_and(|(root, _)| root == "/");
        whole(&self.v1) || (self.v1.is_none() && whole(&self.v2))
    }

    /// What of the hierarchy shows here, for the run's report.
    fn shown(&self) -> String {
        match self.v1.as_ref().or(self.v2.as_ref()) {
            Some((root, dir)) => format!("{root} (at {})", dir.display()),
            None => "no cpu hierarchy".to_owned(),
        }
    }

    /// The hierarchies of another mount namespace, seen through its root directory `at`.
    fn under(self, at: &Path) -> CpuMounts {
        let through =
            |m: Option<(String, PathBuf)>| m.map(|(root, dir)| (root, at.join(dir.strip_prefix("/").unwrap_or(&dir))));
        CpuMounts { v1: through(self.v1), v2: through(self.v2), ..CpuMounts::default() }
    }

    /// The hierarchy of the agent's own mount.
    fn through(mount: OwnedFd, v1: bool, shown: String) -> CpuMounts {
        let hierarchy = Some(("/".to_owned(), PathBuf::from(format!("/proc/self/fd/{}", mount.as_raw_fd()))));
        let (v1, v2) = if v1 { (hierarchy, None) } else { (None, hierarchy) };
        CpuMounts { v1, v2, view: View::Private { shown }, _mount: Some(Arc::new(mount)) }
    }

    /// Parses mountinfo: `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`.
    pub fn parse(mountinfo: &str) -> CpuMounts {
        let mut mounts = CpuMounts::default();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
            let (Some(root), Some(point), Some(kind), Some(options)) =
                (fields.get(3), fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
            else {
                continue;
            };
            let entry = (unescape(root), PathBuf::from(unescape(point)));
            // The first hierarchy found is kept, but a later mount on the same point hides it
            // (the table lists mounts in the order they were made).
            let take = |kept: &Option<(String, PathBuf)>| kept.as_ref().is_none_or(|(_, at)| *at == entry.1);
            match *kind {
                "cgroup" if options.split(',').any(|o| o == "cpu") && take(&mounts.v1) => mounts.v1 = Some(entry),
                "cgroup2" if take(&mounts.v2) => mounts.v2 = Some(entry),
                _ => {}
            }
        }
        mounts
    }

    /// The cgroup of the cpu controller in `/proc/PID/cgroup`, and the directory of its files;
    /// `None` when this view does not show it.
    pub fn locate(&self, proc_cgroup: &str) -> Option<(String, PathBuf, Version)> {
        let v1 = proc_cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == "cpu").then(|| path.to_owned())
        });
        let (path, (root, dir), version) = match (v1, &self.v1, &self.v2) {
            (Some(path), Some(mount), _) => (path, mount, Version::V1),
            (None, _, Some(mount)) => {
                (proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned(), mount, Version::V2)
            }
            _ => return None,
        };
        // A path outside this namespace's view (`/../..`) cannot be reached from here.
        if path.split('/').any(|p| p == "..") {
            return None;
        }
        // A mount of a group shows that group and those below it only (by whole components:
        // `/kubepods/pod1` is not under `/kubepods/pod`).
        let dir = dir.join(Path::new(&path).strip_prefix(root).ok()?);
        Some((path, dir, version))
    }

    /// The nearest group above the one at `dir` that has a CPU limit of its own, among those
    /// this view shows (up to the mount of the hierarchy, as [`CpuMounts::locate`] found it).
    fn limited_above(&self, dir: &Path, version: Version) -> Option<PathBuf> {
        let (_, top) = match version {
            Version::V1 => self.v1.as_ref(),
            Version::V2 => self.v2.as_ref(),
        }?;
        dir.ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(top))
            .find(|a| limit_millicores(a, version).is_some())
            .map(Path::to_path_buf)
    }
}

/// The controllers of the v1 hierarchy that holds `cpu`, from a `/proc/PID/cgroup` text
/// (`4:cpu,cpuacct:/...`): mounting v1 again must name exactly those. `None`: `cpu` is in v2.
fn v1_controllers(proc_cgroup: &str) -> Option<Vec<String>> {
    proc_cgroup.lines().find_map(|l| {
        let controllers = l.split(':').nth(1)?;
        controllers.split(',').any(|c| c == "cpu").then(|| controllers.split(',').map(str::to_owned).collect())
    })
}

/// Mounts the hierarchy of `v1_controllers` (v2 when `None`) with the mount API (Linux 5.2):
/// the mount is made detached, attached to no directory of any mount namespace, and read
/// through its descriptor. It shows the whole hierarchy of the agent's cgroup namespace.
fn mount_privately(v1_controllers: Option<&[String]>) -> rustix::io::Result<OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    let fs = fsopen(if v1_controllers.is_some() { "cgroup" } else { "cgroup2" }, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for controller in v1_controllers.unwrap_or_default() {
        match controller.strip_prefix("name=") {
            Some(name) => fsconfig_set_string(&fs, "name", name)?,
            None => fsconfig_set_flag(&fs, controller.as_str())?,
        }
    }
    fsconfig_create(&fs)?;
    let attributes = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attributes)
}

/// `\040` and friends in mountinfo paths.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The counters of one `cpu.stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_us: u64,
}

impl Counters {
    pub fn parse(stat: &str, version: Version) -> Option<Counters> {
        let field = |name: &str| {
            stat.lines().find_map(|l| {
                l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse::<u64>().ok())
            })
        };
        Some(Counters {
            nr_periods: field("nr_periods")?,
            nr_throttled: field("nr_throttled")?,
            throttled_us: match version {
                Version::V1 => field("throttled_time")? / 1000,
                Version::V2 => field("throttled_usec")?,
            },
        })
    }

    fn read(dir: &Path, version: Version) -> Option<Counters> {
        Counters::parse(&fs::read_to_string(dir.join("cpu.stat")).ok()?, version)
    }
}

/// The limit in millicores: v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none), v2
/// `cpu.max` (`max PERIOD`: none).
fn limit_millicores(dir: &Path, version: Version) -> Option<u64> {
    let read = |f: &str| fs::read_to_string(dir.join(f)).ok();
    let (quota, period) = match version {
        Version::V1 => (
            read("cpu.cfs_quota_us")?.trim().parse::<i64>().ok()?,
            read("cpu.cfs_period_us")?.trim().parse::<i64>().ok()?,
        ),
        Version::V2 => {
            let max = read("cpu.max")?;
            let mut parts = max.split_whitespace();
            (parts.next()?.parse::<i64>().ok()?, parts.next()?.parse::<i64>().ok()?)
        }
    };
    (quota > 0 && period > 0).then(|| (quota as u64 * 1000).div_ceil(period as u64))
}

struct Watched {
    pid: u32,
    /// The container of `pid`, when it is in one.
    container: Option<String>,
    dir: PathBuf,
    version: Version,
    at_start: Counters,
    /// The nearest limited group above (a pod's) and its counters when first seen.
    above: Option<(PathBuf, Counters)>,
}

/// The cgroups of the run's processes, each read when first seen.
pub struct CgroupCpuWatch {
    mounts: CpuMounts,
    proc: ProcFs,
    watched: BTreeMap<String, Watched>,
    /// Every process seen, and its cgroup.
    members: HashMap<u32, String>,
}

impl CgroupCpuWatch {
    pub fn new(proc: ProcFs) -> CgroupCpuWatch {
        CgroupCpuWatch::with_mounts(CpuMounts::read(), proc)
    }

    /// With the hierarchies given, not read from the mount table.
    pub fn with_mounts(mounts: CpuMounts, proc: ProcFs) -> CgroupCpuWatch {
        CgroupCpuWatch { mounts, proc, watched: BTreeMap::new(), members: HashMap::new() }
    }

    /// Which view of the hierarchy the counters are read through.
    pub fn view(&self) -> &View {
        &self.mounts.view
    }

    /// Notes `pid`'s cgroup, reading its counters now if it is new.
    pub fn watch(&mut self, pid: u32) {
        let Some(proc_cgroup) = self.proc.cgroup(pid) else { return };
        let Some((cgroup, dir, version)) = self.mounts.locate(&proc_cgroup) else { return };
        self.members.insert(pid, cgroup.clone());
        if self.watched.contains_key(&cgroup) {
            return;
        }
        if let Some(at_start) = Counters::read(&dir, version) {
            let container = discovery::container_id(&proc_cgroup);
            let above = self
                .mounts
                .limited_above(&dir, version)
                .and_then(|a| Counters::read(&a, version).map(|at_start| (a, at_start)));
            self.watched.insert(cgroup, Watched { pid, container, dir, version, at_start, above });
        }
    }

    /// Each cgroup's counters since it was first seen. A cgroup gone meanwhile is left out.
    pub fn finish(&self) -> Vec<CgroupCpuStat> {
        self.watched
            .iter()
            .filter_map(|(cgroup, w)| {
                let now = Counters::read(&w.dir, w.version)?;
                let above = w.above.as_ref().and_then(|(dir, at_start)| {
                    let now = Counters::read(dir, w.version)?;
                    Some(LimitedLevel {
                        limit_millicores: limit_millicores(dir, w.version)?,
                        nr_periods: now.nr_periods.saturating_sub(at_start.nr_periods),
                        nr_throttled: now.nr_throttled.saturating_sub(at_start.nr_throttled),
                        throttled_us: now.throttled_us.saturating_sub(at_start.throttled_us),
                    })
                });
                Some(CgroupCpuStat {
                    cgroup: cgroup.clone(),
                    pid: w.pid,
                    container: w.container.clone(),
                    limit_millicores: limit_millicores(&w.dir, w.version),
                    nr_periods: now.nr_periods.saturating_sub(w.at_start.nr_periods),
                    nr_throttled: now.nr_throttled.saturating_sub(w.at_start.nr_throttled),
                    throttled_us: now.throttled_us.saturating_sub(w.at_start.throttled_us),
                    above,
                    ..CgroupCpuStat::default()
                })
            })
            .collect()
    }
}

/// Adds what the profile measured to each cgroup's counters: the time its processes' threads
/// were throttled and waited for a CPU, from the per-process totals of its
/// `eagle_proto::THROTTLED_FRAME` and `WAITING_FRAME` stacks.
pub fn add_measured(
    stats: &mut [CgroupCpuStat],
    watch: &CgroupCpuWatch,
    throttled: &HashMap<u32, u64>,
    waiting: &HashMap<u32, u64>,
) {
    for stat in stats.iter_mut() {
        let members = watch.members.iter().filter(|(_, c)| **c == stat.cgroup).map(|(pid, _)| pid);
        for pid in members {
            stat.measured_throttled_us += throttled.get(pid).copied().unwrap_or(0);
            stat.measured_waiting_us += waiting.get(pid).copied().unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
35 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
36 25 0:32 / /sys/fs/cgroup/cpuset rw,nosuid shared:16 - cgroup cgroup rw,cpuset
";

    #[test]
    fn the_cpu_controller_is_found_in_v1_and_v2() {
        let mounts = CpuMounts::parse(HYBRID);
        assert_eq!(mounts.v1, Some(("/".into(), PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))));
        let (cgroup, dir, version) =
            mounts.locate("12:cpuset:/\n4:cpu,cpuacct:/kubepods/pod1/abc\n0::/system.slice\n").expect("found");
        assert_eq!((cgroup.as_str(), version), ("/kubepods/pod1/abc", Version::V1));
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/abc"));

        let v2 = CpuMounts::parse("30 25 0:26 / /sys/fs/cgroup rw shared:10 - cgroup2 cgroup2 rw\n");
        let (cgroup, dir, version) = v2.locate("0::/kubepods.slice/x.scope\n").expect("found");
        assert_eq!((cgroup.as_str(), version), ("/kubepods.slice/x.scope", Version::V2));
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/kubepods.slice/x.scope"));
        // Outside this cgroup namespace's view: not reachable, not guessed.
        assert_eq!(v2.locate("0::/../../kubepods\n"), None);
    }

    #[test]
    fn counters_of_v1_and_v2() {
        let v1 = "nr_periods 70\nnr_throttled 67\nthrottled_time 2331244420\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            Counters::parse(v1, Version::V1),
            Some(Counters { nr_periods: 70, nr_throttled: 67, throttled_us: 2_331_244 })
        );
        let v2 = "usage_usec 10\nuser_usec 5\nsystem_usec 5\nnr_periods 3\nnr_throttled 1\nthrottled_usec 80000\n";
        assert_eq!(
            Counters::parse(v2, Version::V2),
            Some(Counters { nr_periods: 3, nr_throttled: 1, throttled_us: 80_000 })
        );
        // No bandwidth control (the root group): no counters.
        assert_eq!(Counters::parse("usage_usec 10\n", Version::V2), None);
    }

    /// A container limited to 200m in a pod limited to 300m (as the kubelet makes them,
    /// cgroup v1): each level is throttled by its own quota and counts that in its own
    /// `cpu.stat`, so the pod's counters come beside the container's. The QoS level above the
    /// pod, with no limit, is not the one.
    #[test]
    fn a_container_in_a_limited_pod_has_the_pods_counters_beside_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (proc, mount) = (dir.path().join("proc"), dir.path().join("cpu"));
        let (qos, pod) = (mount.join("kubepods/burstable"), mount.join("kubepods/burstable/pod1"));
        let (container, free) = (pod.join("abc"), qos.join("pod2/def"));
        fs::create_dir_all(proc.join("42")).unwrap();
        fs::create_dir_all(proc.join("43")).unwrap();
        fs::create_dir_all(&container).unwrap();
        fs::create_dir_all(&free).unwrap();
        fs::write(proc.join("42/cgroup"), "4:cpu,cpuacct:/kubepods/burstable/pod1/abc\n").unwrap();
        fs::write(proc.join("43/cgroup"), "4:cpu,cpuacct:/kubepods/burstable/pod2/def\n").unwrap();
        let stat = |periods: u64, throttled: u64, ns: u64| {
            format!("nr_periods {periods}\nnr_throttled {throttled}\nthrottled_time {ns}\n")
        };
        for (group, quota) in
            [(&qos, -1), (&qos.join("pod2"), -1), (&pod, 30_000), (&container, 20_000), (&free, 20_000)]
        {
            fs::write(group.join("cpu.cfs_quota_us"), format!("{quota}\n")).unwrap();
            fs::write(group.join("cpu.cfs_period_us"), "100000\n").unwrap();
            fs::write(group.join("cpu.stat"), stat(10, 5, 400_000_000)).unwrap();
        }
        let mounts = CpuMounts { v1: Some(("/".into(), mount.clone())), ..CpuMounts::default() };
        let mut watch = CgroupCpuWatch::with_mounts(mounts, ProcFs::at(&proc));
        watch.watch(42);
        watch.watch(43);
        fs::write(container.join("cpu.stat"), stat(160, 55, 3_400_000_000)).unwrap();
        fs::write(pod.join("cpu.stat"), stat(150, 60, 3_500_000_000)).unwrap();
        fs::write(qos.join("cpu.stat"), stat(160, 999, 99_000_000_000)).unwrap();
        let stats = watch.finish();
        assert_eq!(stats.len(), 2, "{stats:?}");
        let limited = stats.iter().find(|s| s.pid == 42).unwrap();
        assert_eq!(limited.limit_millicores, Some(200));
        assert_eq!((limited.nr_periods, limited.nr_throttled, limited.throttled_us), (150, 50, 3_000_000));
        let above = LimitedLevel { limit_millicores: 300, nr_periods: 140, nr_throttled: 55, throttled_us: 3_100_000 };
        assert_eq!(limited.above, Some(above));
        let alone = stats.iter().find(|s| s.pid == 43).unwrap();
        assert_eq!(alone.above, None, "a pod with no limit of its own: {alone:?}");
    }

    /// A pod's container in a cgroup v2 hierarchy with the cpu controller, as a unified-only
    /// node has it (this machine's cpu controller is in v1, so a real v2 group here has no
    /// bandwidth counters): the whole path from `/proc/PID/cgroup` to the window's counters.
    #[test]
    fn a_v2_cgroup_is_read_from_proc_to_the_windows_counters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (proc, mount) = (dir.path().join("proc"), dir.path().join("cgroup"));
        let container = mount.join("kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope");
        fs::create_dir_all(proc.join("42")).unwrap();
        fs::create_dir_all(proc.join("43")).unwrap();
        fs::create_dir_all(&container).unwrap();
        let path = "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope";
        fs::write(proc.join("42/cgroup"), format!("0::{path}\n")).unwrap();
        fs::write(proc.join("43/cgroup"), format!("0::{path}\n")).unwrap();
        fs::write(container.join("cpu.max"), "20000 100000\n").unwrap();
        let stat = |periods: u64, throttled: u64, usec: u64| {
            format!(
                "usage_usec 900\nuser_usec 800\nsystem_usec 100\nnr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {usec}\nnr_bursts 0\nburst_usec 0\n"
            )
        };
        fs::write(container.join("cpu.stat"), stat(10, 8, 640_000)).unwrap();

        let mounts = CpuMounts { v2: Some(("/".into(), mount.clone())), ..CpuMounts::default() };
        let mut watch = CgroupCpuWatch::with_mounts(mounts, ProcFs::at(&proc));
        watch.watch(42);
        watch.watch(43); // same cgroup: read once, when first seen
        fs::write(container.join("cpu.stat"), stat(110, 104, 8_320_000)).unwrap();

        let stats = watch.finish();
        assert_eq!(stats.len(), 1, "{stats:?}");
        let s = &stats[0];
        assert_eq!((s.cgroup.as_str(), s.pid, s.limit_millicores), (path, 42, Some(200)));
        assert_eq!((s.nr_periods, s.nr_throttled, s.throttled_us), (100, 96, 7_680_000));

        // The cpu controller not enabled for the group (its parent's cgroup.subtree_control):
        // v2's cpu.stat has the usage only, and the group is left out rather than shown
        // unthrottled. `cpu.max` unlimited reads as no limit.
        fs::write(container.join("cpu.stat"), "usage_usec 900\nuser_usec 800\nsystem_usec 100\n").unwrap();
        let mut watch = CgroupCpuWatch::with_mounts(
            CpuMounts { v2: Some(("/".into(), mount)), ..CpuMounts::default() },
            ProcFs::at(&proc),
        );
        watch.watch(42);
        assert!(watch.finish().is_empty());
        fs::write(container.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(limit_millicores(&container, Version::V2), None);
    }

    /// What a Job's container sees on a cgroup v1 node (the lab's nodes: `cpu` and `cpuacct`
    /// separate): its own group bound over each hierarchy's mount point.
    const CONTAINER: &str = "\
1021 1012 0:30 /eagle-lab/lab-node-2/kubepods/besteffort/podA/ctr1 /sys/fs/cgroup/cpu ro,nosuid master:12 - cgroup cgroup rw,cpu
1022 1012 0:31 /eagle-lab/lab-node-2/kubepods/besteffort/podA/ctr1 /sys/fs/cgroup/cpuacct ro,nosuid master:13 - cgroup cgroup rw,cpuacct
1023 1012 0:29 /eagle-lab/lab-node-2/kubepods/besteffort/podA/ctr1 /sys/fs/cgroup/unified ro,nosuid master:11 - cgroup2 cgroup2 rw
";

    #[test]
    fn a_containers_view_shows_its_own_group_only() {
        let mounts = CpuMounts::parse(CONTAINER);
        assert!(!mounts.is_whole());
        assert_eq!(mounts.shown(), "/eagle-lab/lab-node-2/kubepods/besteffort/podA/ctr1 (at /sys/fs/cgroup/cpu)");
        let other_pod = "3:cpu:/eagle-lab/lab-node-2/kubepods/burstable/podB/ctr2\n0::/\n";
        assert_eq!(mounts.locate(other_pod), None, "another pod's group is not under this view");
        // Under it by whole path components only.
        let prefix_only = "3:cpu:/eagle-lab/lab-node-2/kubepods/besteffort/podA/ctr10\n";
        assert_eq!(mounts.locate(prefix_only), None);
        let (_, dir, _) =
            mounts.locate("3:cpu:/eagle-lab/lab-node-2/kubepods/besteffort/podA/ctr1/sub\n").expect("below it");
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/cpu/sub"));
        assert!(CpuMounts::parse(HYBRID).is_whole());
        // A group bound over the whole hierarchy's mount point hides it.
        let bound = format!(
            "{HYBRID}{}",
            CONTAINER.lines().next().unwrap().replace("/sys/fs/cgroup/cpu ", "/sys/fs/cgroup/cpu,cpuacct ")
        );
        assert!(!CpuMounts::parse(&bound).is_whole(), "{bound}");
    }

    #[test]
    fn a_private_mount_names_the_controllers_of_cpus_hierarchy() {
        let separate = "12:cpuacct:/x\n11:cpu:/x\n1:name=systemd:/x\n0::/x\n";
        assert_eq!(v1_controllers(separate), Some(vec!["cpu".to_owned()]));
        let comounted = "4:cpu,cpuacct:/kubepods/pod1/abc\n0::/\n";
        assert_eq!(v1_controllers(comounted), Some(vec!["cpu".to_owned(), "cpuacct".to_owned()]));
        // `cpuacct` alone is not `cpu`; cpu in v2 mounts v2.
        assert_eq!(v1_controllers("3:cpuacct:/\n0::/x\n"), None);
        assert_eq!(v1_controllers("0::/kubepods.slice/x.scope\n"), None);
    }

    /// The host's hierarchy through another mount namespace's root (`/proc/1/root`), on a
    /// fixture tree: a v1 group found and read from `/proc/PID/cgroup` to the window's counters.
    #[test]
    fn a_v1_cgroup_is_read_through_another_namespaces_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (proc, root) = (dir.path().join("proc"), dir.path().join("root"));
        fs::create_dir_all(proc.join("7")).unwrap();
        let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
        fs::write(proc.join("7/cgroup"), format!("3:cpu:/kubepods/burstable/podB/{id}\n0::/\n")).unwrap();
        let group = root.join(format!("sys/fs/cgroup/cpu/kubepods/burstable/podB/{id}"));
        fs::create_dir_all(&group).unwrap();
        fs::write(group.join("cpu.cfs_quota_us"), "25000\n").unwrap();
        fs::write(group.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let stat = |throttled: u64, ns: u64| {
            format!("nr_periods {}\nnr_throttled {throttled}\nthrottled_time {ns}\n", throttled + 3)
        };
        fs::write(group.join("cpu.stat"), stat(10, 1_000_000_000)).unwrap();

        let host = "35 25 0:31 / /sys/fs/cgroup/cpu rw,nosuid shared:15 - cgroup cgroup rw,cpu\n";
        let mounts = CpuMounts::parse(host).under(&root);
        assert!(mounts.is_whole());
        let mut watch = CgroupCpuWatch::with_mounts(mounts, ProcFs::at(&proc));
        watch.watch(7);
        fs::write(group.join("cpu.stat"), stat(60, 3_500_000_000)).unwrap();
        let stats = watch.finish();
        assert_eq!(stats.len(), 1, "{stats:?}");
        let s = &stats[0];
        assert_eq!(s.cgroup, format!("/kubepods/burstable/podB/{id}"));
        assert_eq!((s.pid, s.container.as_deref(), s.limit_millicores), (7, Some(id), Some(250)));
        assert_eq!((s.nr_periods, s.nr_throttled, s.throttled_us), (50, 50, 2_500_000));
    }

    /// The real thing, as root: the hierarchy of cpu mounted detached shows a group made in
    /// this namespace's own view, and no mount appears in this namespace's table.
    #[test]
    fn a_private_mount_shows_the_whole_hierarchy_and_attaches_nowhere() {
        let own = CpuMounts::parse(&fs::read_to_string("/proc/self/mountinfo").unwrap());
        let Some((_, own_dir)) = own.v1.clone().filter(|_| own.is_whole()) else {
            eprintln!("skipped: no whole v1 cpu hierarchy here to compare with");
            return;
        };
        let controllers = v1_controllers(&fs::read_to_string("/proc/self/cgroup").unwrap());
        let mount = match mount_privately(controllers.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipped: cannot mount the cpu hierarchy here (not root?): {e}");
                return;
            }
        };
        // Its own mount id, not a count of the table: other mounts may come and go meanwhile.
        let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", mount.as_raw_fd())).unwrap();
        let mnt_id =
            fdinfo.lines().find_map(|l| l.strip_prefix("mnt_id:")).expect("mnt_id in fdinfo").trim().to_owned();
        let attached =
            fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.starts_with(&format!("{mnt_id} ")));
        assert!(!attached, "the private mount (mount {mnt_id}) is attached to no directory");
        let name = format!("eagle-unit-{}", std::process::id());
        if fs::create_dir(own_dir.join(&name)).is_err() {
            eprintln!("skipped: cannot create a group in {}", own_dir.display());
            return;
        }
        let mounts = CpuMounts::through(mount, controllers.is_some(), "test".into());
        let (_, dir, _) = mounts.locate(&format!("1:cpu:/{name}\n")).expect("located");
        let read = Counters::read(&dir, Version::V1);
        let written = fs::write(dir.join("cpu.cfs_quota_us"), "1000");
        fs::remove_dir(own_dir.join(&name)).unwrap();
        assert_eq!(read, Some(Counters::default()), "a new group's counters, through {}", dir.display());
        assert!(dir.starts_with("/proc/self/fd/"), "{}", dir.display());
        assert_eq!(written.map_err(|e| e.raw_os_error()), Err(Some(libc::EROFS)), "the private mount is read-only");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
