//! Workloads a test starts: processes (groups) killed when their guard drops, even on panic.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::groundtruth;

// ---------------------------------------------------------------------------------------------
// A cgroup with a CPU limit

/// A cgroup of the cpu controller made for one test, with a CPU limit (cgroup v1: its
/// `cpu.cfs_quota_us` per `cpu.cfs_period_us`; v2: `cpu.max`), named after the test process and
/// a counter so parallel tests do not meet. Dropping it moves nothing: kill its processes
/// first (drop their [`Workload`]); it is then removed.
pub struct LimitedCgroup {
    dir: PathBuf,
    /// As `/proc/PID/cgroup` names it.
    pub path: String,
    pub v2: bool,
}

impl LimitedCgroup {
    /// A cgroup limited to `millicores` in 100 ms periods. `Err` says why none can be made
    /// here (no cpu controller, not root): a missing capability, for [`crate::skip`].
    pub fn create(millicores: u64) -> Result<LimitedCgroup, String> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("eagle-test-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let mount = |kind: &str, needs_cpu: bool| {
            mountinfo.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let dash = fields.iter().position(|f| *f == "-")?;
                let cpu = fields.get(dash + 3)?.split(',').any(|o| o == "cpu");
                (fields.get(dash + 1) == Some(&kind) && (cpu || !needs_cpu) && fields[3] == "/")
                    .then(|| PathBuf::from(fields[4]))
            })
        };
        let (root, v2) = match (mount("cgroup", true), mount("cgroup2", false)) {
            (Some(v1), _) => (v1, false),
            (None, Some(v2))
                if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu")) =>
            {
                (v2, true)
            }
            _ => return Err("no cgroup hierarchy with the cpu controller is mounted here".into()),
        };
        let dir = root.join(&name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {} (needs root): {e}", dir.display()))?;
        let cgroup = LimitedCgroup { dir, path: format!("/{name}"), v2 };
        let quota = millicores * 100;
        let written = if v2 {
            std::fs::write(cgroup.dir.join("cpu.max"), format!("{quota} 100000"))
        } else {
            std::fs::write(cgroup.dir.join("cpu.cfs_period_us"), "100000")
                .and_then(|()| std::fs::write(cgroup.dir.join("cpu.cfs_quota_us"), quota.to_string()))
        };
        written.map_err(|e| format!("cannot limit the cgroup {}: {e}", cgroup.dir.display()))?;
        // The group competes for the CPU as one entity of its parent, with its own weight: a
        // nice -20 process inside it gets no more than the group's share, which is a single
        // nice-0 task's by default. On a machine with twenty runnable tasks on two CPUs that
        // starved the group below its quota (a loop limited to 200m ran 14 % of a CPU, 13 s of
        // 15 waiting) and it was never throttled. Weighed as a nice -20 task (v1
        // `cpu.shares`, v2 `cpu.weight`), it gets its quota's worth first.
        let weighed = if v2 {
            std::fs::write(cgroup.dir.join("cpu.weight"), "10000")
        } else {
            std::fs::write(cgroup.dir.join("cpu.shares"), "88761")
        };
        weighed.map_err(|e| format!("cannot weigh the cgroup {}: {e}", cgroup.dir.display()))?;
        Ok(cgroup)
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for LimitedCgroup {
    fn drop(&mut self) {
        // Its processes were killed; a killed process leaves its cgroup once it is reaped.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("cannot remove the test cgroup {}: is a process still in it?", self.dir.display());
    }
}

/// The cgroup hierarchies as a container sees them: in a mount namespace of a command's own,
/// a group made for the test is bound over the mount point of each hierarchy of `cpu`,
/// `cpuacct` and cgroup v2, as a container runtime binds the container's own group there.
/// Groups outside it (another pod's) do not show in that view. Dropping it removes the groups
/// (the command must have exited); the host's mounts are never touched (the namespace is made
/// private before anything is bound in it, and goes with the command).
pub struct ContainerCgroupView {
    /// (the group made in the hierarchy, the hierarchy's mount point).
    binds: Vec<(PathBuf, PathBuf)>,
    /// As `/proc/PID/cgroup` names the group in each hierarchy.
    pub path: String,
}

impl ContainerCgroupView {
    /// `Err` says why none can be made here (not root, no such hierarchy), for [`crate::skip`].
    pub fn create() -> Result<ContainerCgroupView, String> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("eagle-view-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let mut view = ContainerCgroupView { binds: Vec::new(), path: format!("/{name}") };
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
            let (kind, options) = (fields.get(dash + 1).copied(), fields.get(dash + 3).copied().unwrap_or(""));
            let wanted = kind == Some("cgroup2")
                || kind == Some("cgroup") && options.split(',').any(|o| o == "cpu" || o == "cpuacct");
            if !wanted || fields[3] != "/" {
                continue;
            }
            let point = PathBuf::from(fields[4]);
            let group = point.join(&name);
            std::fs::create_dir(&group)
                .map_err(|e| format!("cannot create the cgroup {} (needs root): {e}", group.display()))?;
            view.binds.push((group, point));
        }
        if view.binds.is_empty() {
            return Err("no cgroup hierarchy of cpu is mounted here".into());
        }
        Ok(view)
    }

    /// Runs `command` in the view: a mount namespace of its own, private, with the groups bound.
    pub fn confine(&self, command: &mut Command) {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &std::path::Path| CString::new(p.as_os_str().as_bytes()).expect("a path without NUL");
        let binds: Vec<(CString, CString)> = self.binds.iter().map(|(group, point)| (c(group), c(point))).collect();
        // SAFETY: only system calls between fork and exec, on strings made before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (group, point) in &binds {
                    if libc::mount(group.as_ptr(), point.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
                        != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

impl Drop for ContainerCgroupView {
    fn drop(&mut self) {
        for (group, _) in &self.binds {
            if let Err(e) = std::fs::remove_dir(group) {
                eprintln!("cannot remove the test cgroup {}: {e}", group.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// A process started for a test, in a process group of its own: dropping the guard kills the
/// whole group (its forked children and helpers too) and reaps it, also when the test panics.
pub struct Workload {
    pub(crate) child: Child,
    pub(crate) what: String,
}

/// Scheduling priority of the workloads and of the binaries under test, when this process may
/// raise it (root): a measurement whose precision depends on the CPU the workload gets should
/// not be at the mercy of whatever else the machine runs (a build, another test suite). It
/// changes how much CPU the processes get, never how it splits.
pub const NICE: i32 = -5;

pub(crate) fn raise_priority(command: &mut Command) -> &mut Command {
    // SAFETY: setpriority(2) is async-signal-safe; failing (not root) leaves the default.
    unsafe {
        command.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
            Ok(())
        })
    }
}

impl Workload {
    pub fn start(command: &mut Command) -> Self {
        let what = format!("{command:?}");
        let child = raise_priority(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the workload {what}: {e}"));
        Self { child, what }
    }

    /// groundtruth with these arguments.
    pub fn groundtruth(args: &[&str]) -> Self {
        Self::start(Command::new(groundtruth()).args(args))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the workload is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until a descendant of the workload named `comm` (its `/proc/PID/comm`) runs, and
    /// returns its pid: the process a wrapper such as `unshare` or `sh` ends up starting.
    pub fn descendant(&mut self, comm: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = descendants(self.pid()).into_iter().find(|p| proc_comm(*p).as_deref() == Some(comm)) {
                return pid;
            }
            assert!(self.is_running(), "{} exited before a process named {comm} appeared", self.what);
            assert!(Instant::now() < deadline, "no process named {comm} under {} after {timeout:?}", self.what);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: signals the process group this guard created (its pgid is the leader's pid).
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system, all threads) the kernel has accounted to `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat has a comm").1.split_whitespace().collect();
    // After the comm: state is field 3 of stat(5), utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// `/proc/PID/comm` without its newline.
pub fn proc_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_owned())
}

pub(crate) fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Every live descendant of `root`, found through the parent links in `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(|p| Some((p, proc_ppid(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

// ---------------------------------------------------------------------------------------------
// CPU time over a window another program names

/// The CPU clocks of some processes (all their threads, to the nanosecond), read every few
/// milliseconds on a thread of its own, each reading stamped with the wall-clock time. The agent
/// names its sampling window only in its stream (the header's start and duration), after the
/// fact; with this log a test compares a window's samples with the CPU time of that window, not
/// of the whole command (start-up and the work after the window included).
pub struct CpuLog {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<CpuReadings>,
}

/// What a [`CpuLog`] read: `(unix time in ns, CPU ns of each process)`, in time order.
pub struct CpuReadings {
    readings: Vec<(u64, Vec<u64>)>,
    /// Readings that failed (a clock that could not be read), for the diagnostics.
    failed: u32,
}

/// How often the clocks are read: a window's ends are known to this, far below a window's
/// length (seconds).
const CPU_LOG_EVERY: Duration = Duration::from_millis(5);

/// Failed readings after which a clock is taken for gone: a second's worth.
const CPU_LOG_GONE_AFTER: u32 = 200;

impl CpuLog {
    /// Starts reading the CPU clocks of `pids` (processes of this machine, alive now).
    pub fn start(pids: &[u32]) -> Self {
        let clocks: Vec<Clock> = pids
            .iter()
            .map(|&pid| {
                let mut id: libc::clockid_t = 0;
                // SAFETY: `id` is a valid out-pointer.
                let found = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) } == 0;
                assert!(found, "process {pid} has no CPU clock (it exited?)");
                Clock::Process(id)
            })
            .collect();
        Self::of(clocks)
    }

    /// Starts reading the CPU time of some threads of process `pid`, alive now, from
    /// `/proc/PID/task/TID/schedstat` (the kernel lets no process read another's thread clocks).
    pub fn start_threads(pid: u32, tids: &[u32]) -> Self {
        let clocks: Vec<Clock> =
            tids.iter().map(|&tid| Clock::Thread(format!("/proc/{pid}/task/{tid}/schedstat"))).collect();
        for clock in &clocks {
            assert!(clock.read().is_some(), "{clock:?} cannot be read (the thread ended?)");
        }
        Self::of(clocks)
    }

    fn of(clocks: Vec<Clock>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut readings = Vec::new();
            let mut failed = 0;
            let read = |readings: &mut Vec<(u64, Vec<u64>)>| {
                let cpu: Option<Vec<u64>> = clocks.iter().map(Clock::read).collect();
                readings.push((clock_ns(libc::CLOCK_REALTIME).expect("the wall clock reads"), cpu?));
                Some(())
            };
            while !stopped.load(Ordering::Relaxed) {
                if read(&mut readings).is_none() {
                    // A clock that fails a second on end is gone (its process or thread ended).
                    if failed >= CPU_LOG_GONE_AFTER {
                        return CpuReadings { readings, failed };
                    }
                    failed += 1;
                }
                std::thread::sleep(CPU_LOG_EVERY);
            }
            // One more as it stops: the last one of the loop may be a sleep (or, on a busy
            // machine, a long wait for the CPU) older than the moment it was asked to stop, which
            // the window it is asked about may reach.
            let _ = read(&mut readings);
            CpuReadings { readings, failed }
        });
        Self { stop, thread }
    }

    /// Stops reading and hands back what was read.
    pub fn finish(self) -> CpuReadings {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the CPU clock reader ended")
    }
}

impl CpuReadings {
    /// Seconds of CPU the `index`th process (or thread) used between two wall-clock instants (unix time in
    /// ms), interpolated between the readings around each. Panics when the log does not cover
    /// them (it was started too late or finished too early).
    pub fn used(&self, index: usize, from_unix_ms: u64, to_unix_ms: u64) -> f64 {
        let at = |ms: u64| -> f64 {
            let t = ms * 1_000_000;
            let after = self.readings.partition_point(|(time, _)| *time < t);
            assert!(
                after > 0 && after < self.readings.len(),
                "the CPU log ({} readings, {} failed, unix time {} to {} ms) does not cover unix time {ms} ms",
                self.readings.len(),
                self.failed,
                self.readings.first().map_or(0, |r| r.0 / 1_000_000),
                self.readings.last().map_or(0, |r| r.0 / 1_000_000)
            );
            let ((t0, c0), (t1, c1)) = (&self.readings[after - 1], &self.readings[after]);
            let (c0, c1) = (c0[index] as f64, c1[index] as f64);
            c0 + (c1 - c0) * (t - t0) as f64 / (*t1 - *t0).max(1) as f64
        };
        (at(to_unix_ms) - at(from_unix_ms)) / 1e9
    }
}

/// One CPU clock a [`CpuLog`] reads.
#[derive(Debug)]
enum Clock {
    /// A process's, all its threads.
    Process(libc::clockid_t),
    /// One thread's: its `schedstat` file.
    Thread(String),
}

impl Clock {
    fn read(&self) -> Option<u64> {
        match self {
            Clock::Process(id) => clock_ns(*id),
            Clock::Thread(schedstat) => {
                std::fs::read_to_string(schedstat).ok()?.split_whitespace().next()?.parse().ok()
            }
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
