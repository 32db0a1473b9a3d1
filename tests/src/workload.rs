//! Workloads a test starts: processes (groups) killed when their guard drops, even on panic.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::groundtruth;

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
