//! The CPU-limit counters of the target processes' cgroups over the window: what the kernel's
//! bandwidth controller itself says (`cpu.stat`: `nr_periods`, `nr_throttled`, and
//! `throttled_time` in cgroup v1 or `throttled_usec` in v2), beside the throttled time the eBPF
//! side measured per stack. Read when a process of a cgroup is first seen and at the window's
//! end; the difference is reported per cgroup (`eagle_proto::CgroupCpuStat`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use eagle_proto::CgroupCpuStat;

use crate::discovery::ProcFs;

/// Where the cpu controller is mounted, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuMounts {
    /// cgroup v1 hierarchy with the `cpu` controller: (root of the mount, mount point).
    pub v1: Option<(String, PathBuf)>,
    /// The cgroup v2 hierarchy: (root of the mount, mount point).
    pub v2: Option<(String, PathBuf)>,
}

impl CpuMounts {
    /// This mount namespace's hierarchies where they show whole (mounted from their root);
    /// else the host's, through `/proc/1/root` (a container sees only its own group: a Job's
    /// agent, with the host's pid namespace, reaches the host's mounts that way).
    pub fn read() -> CpuMounts {
        let own = fs::read_to_string("/proc/self/mountinfo").map(|m| CpuMounts::parse(&m)).unwrap_or_default();
        let whole = |m: &Option<(String, PathBuf)>| m.as_ref().is_some_and(|(root, _)| root == "/");
        if whole(&own.v1) || (own.v1.is_none() && whole(&own.v2)) {
            return own;
        }
        let host = fs::read_to_string("/proc/1/mountinfo").map(|m| CpuMounts::parse(&m)).unwrap_or_default();
        let through_host = |m: Option<(String, PathBuf)>| {
            m.map(|(root, point)| (root, Path::new("/proc/1/root").join(point.strip_prefix("/").unwrap_or(&point))))
        };
        if whole(&host.v1) || whole(&host.v2) {
            CpuMounts { v1: through_host(host.v1), v2: through_host(host.v2) }
        } else {
            own
        }
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
            match *kind {
                "cgroup" if options.split(',').any(|o| o == "cpu") && mounts.v1.is_none() => mounts.v1 = Some(entry),
                "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(entry),
                _ => {}
            }
        }
        mounts
    }

    /// The cgroup of the cpu controller in `/proc/PID/cgroup`, and the directory of its files.
    pub fn locate(&self, proc_cgroup: &str) -> Option<(String, PathBuf, Version)> {
        let v1 = proc_cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == "cpu").then(|| path.to_owned())
        });
        let (path, (root, point), version) = match (v1, &self.v1, &self.v2) {
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
        let relative = path.strip_prefix(root.as_str()).filter(|_| root != "/").unwrap_or(&path);
        Some((path.clone(), point.join(relative.trim_start_matches('/')), version))
    }
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
    dir: PathBuf,
    version: Version,
    at_start: Counters,
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

    /// Notes `pid`'s cgroup, reading its counters now if it is new.
    pub fn watch(&mut self, pid: u32) {
        let Some(proc_cgroup) = self.proc.cgroup(pid) else { return };
        let Some((cgroup, dir, version)) = self.mounts.locate(&proc_cgroup) else { return };
        self.members.insert(pid, cgroup.clone());
        if self.watched.contains_key(&cgroup) {
            return;
        }
        if let Some(at_start) = Counters::read(&dir, version) {
            self.watched.insert(cgroup, Watched { pid, dir, version, at_start });
        }
    }

    /// Each cgroup's counters since it was first seen. A cgroup gone meanwhile is left out.
    pub fn finish(&self) -> Vec<CgroupCpuStat> {
        self.watched
            .iter()
            .filter_map(|(cgroup, w)| {
                let now = Counters::read(&w.dir, w.version)?;
                Some(CgroupCpuStat {
                    cgroup: cgroup.clone(),
                    pid: w.pid,
                    limit_millicores: limit_millicores(&w.dir, w.version),
                    nr_periods: now.nr_periods.saturating_sub(w.at_start.nr_periods),
                    nr_throttled: now.nr_throttled.saturating_sub(w.at_start.nr_throttled),
                    throttled_us: now.throttled_us.saturating_sub(w.at_start.throttled_us),
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

        let mounts = CpuMounts { v1: None, v2: Some(("/".into(), mount.clone())) };
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
        let mut watch =
            CgroupCpuWatch::with_mounts(CpuMounts { v1: None, v2: Some(("/".into(), mount)) }, ProcFs::at(&proc));
        watch.watch(42);
        assert!(watch.finish().is_empty());
        fs::write(container.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(limit_millicores(&container, Version::V2), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
