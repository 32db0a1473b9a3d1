//! Python, read with py-spy's library at instants chosen and weighed by the process's CPU clock.
//!
//! py-spy's own `record` samples on the wall clock, and calls a thread active when the kernel
//! says it is runnable (`R`), which a thread also is while it waits for a CPU: preempted on a
//! busy node or throttled by its CPU limit. A preemption lasts a few milliseconds, so every
//! sample taken during it lands on whatever function was running when it began, in chunks;
//! measured here, a true 10 % read 2 to 15 % from run to run, far more spread than sampling
//! noise. So the agent drives py-spy's library itself: at each instant (randomly spaced, so no
//! periodic work can phase-lock with it) it reads the process's CPU clock and the Python
//! stacks, and weighs each active thread's stack by the CPU time that thread used since the
//! previous instant (`/proc/PID/task/TID/schedstat`; CPython 3.11 and later name each thread's
//! OS id), so an idle thread's stack never takes the CPU of a busy one. Older Pythons name no
//! OS thread: there the process's CPU time since the previous instant (its CPU clock) is
//! shared evenly among the active threads. A sample taken while the process waited weighs
//! nothing, and one at an instant when the process has not run since the previous, or when
//! none of its threads runs, is not taken at all (it would weigh nothing, and pause the
//! process). The result is a [`Distribution`] in CPU nanoseconds; its magnitude comes from eBPF
//! (see [`super::oncpu`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use py_spy::config::{LineNo, LockingStrategy};
use py_spy::{Config, PythonSpy, StackTrace};
use rand::Rng;

use super::oncpu::{Distribution, Recordings};

pub const PY_SUFFIX: &str = " [py]_[j]";

/// Failed reads in a row after which a live process is given up on: a torn read (the
/// interpreter moved on while it was read) fails once, a process that is not Python any more
/// fails every time.
const MAX_FAILURES_IN_A_ROW: u32 = 200;

/// Threads whose CPU time is remembered between reads before those that ended are forgotten.
const MAX_THREADS_REMEMBERED: usize = 4096;

/// How often a process whose CPU clock stands still is asked whether it is still alive: a
/// zombie's clock stands still too, and it is the failed read that finds a process gone.
const LIVENESS_CHECK_WHILE_IDLE: Duration = Duration::from_millis(500);

/// The sampler: one py-spy reading thread per process (see [`Recordings`]).
pub fn sampler(rate_hz: u64) -> Recordings {
    Recordings::new("py-spy", "Python", rate_hz, record)
}

/// Reads `pid` until `stop` or its exit.
fn record(pid: u32, rate_hz: u64, stop: &AtomicBool) -> Result<Distribution, String> {
    let config = Config {
        // Suspends the process while its frames are read, as py-spy does by default: reading a
        // running interpreter gives torn stacks.
        blocking: LockingStrategy::Lock,
        lineno: LineNo::NoLine,
        collect_thread_names: false,
        include_idle: false,
        ..Config::default()
    };
    // py-spy opens a shared libpython by the path the process maps it at (see the check).
    crate::target_file::mapped_files_at_their_paths(std::path::Path::new("/proc"), pid, "/libpython")
        .map_err(|e| format!("py-spy is not started on this process: {e}"))?;
    let mut spy = PythonSpy::retry_new(pid as py_spy::Pid, &config, 5)
        .map_err(|e| format!("py-spy cannot read this Python process: {}", one_line(&e)))?;
    let clock = ProcessCpuClock::of(pid).ok_or("its CPU clock cannot be read (it exited?)")?;
    let period = 1.0 / rate_hz.max(1) as f64;
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut due = Duration::ZERO;
    let mut last_cpu = clock.now_ns().ok_or("it exited")?;
    let mut failures = 0;
    let mut last_error = String::new();
    let mut distribution = Distribution::default();
    let mut threads = ThreadClocks::of(pid);
    let mut checked_alive = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Spaced at random between half and one and a half periods: no periodic work can
        // phase-lock with it, and a read's weight (the CPU time since the previous read) varies
        // less than with exponential gaps, whose squared weights would halve the effective
        // number of samples.
        due += Duration::from_secs_f64(period * rng.random_range(0.5..1.5));
        let now = started.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(100) {
            // Far behind (the agent was starved): start the schedule afresh rather than
            // sampling back to back, on a fixed period, to catch up.
            due = now;
        }
        let Some(cpu) = clock.now_ns() else { break };
        if cpu == last_cpu {
            // Not one of its threads ran since the last read: every stack read now would weigh
            // nothing (a stack weighs its thread's CPU time since then), and the read would
            // pause the process (every thread stopped and resumed by ptrace) for nothing. Most
            // Python processes on a node are idle most of the time, and were read 99 times a
            // second all the same.
            if checked_alive.elapsed() >= LIVENESS_CHECK_WHILE_IDLE {
                checked_alive = Instant::now();
                if !crate::discovery::ProcFs::default().is_alive(pid) {
                    break;
                }
            }
            continue;
        }
        if threads.running_now() == Some(false) {
            // Not one thread runs now (nor waits for a CPU): py-spy would find every stack idle,
            // and such a read weighs nothing; it only brings every thread's clock up to date,
            // which this did. Reading anyway would also keep the process busy: being stopped
            // and resumed costs it a few microseconds of CPU, which the next instant saw as a
            // reason to read it again, and so on (826 reads in 10 s of a sleeping Python).
            last_cpu = cpu;
            continue;
        }
        let traces = match spy.get_stack_traces() {
            Ok(traces) => traces,
            Err(e) => {
                // Exited, or a zombie its parent has not reaped yet (a command the CLI started
                // is reaped only after the window): either way nothing is left to read, and
                // counting failures up to the limit would take 200 periods (minutes at 1 Hz).
                if !crate::discovery::ProcFs::default().is_alive(pid) {
                    break;
                }
                failures += 1;
                last_error = one_line(&e);
                if failures >= MAX_FAILURES_IN_A_ROW {
                    if distribution.samples > 0 {
                        // It was Python and is not any more: it exec'd another program, which
                        // the agent learns at its next collection (under load, after these
                        // failures). What was read before is the Python part, and is kept.
                        break;
                    }
                    return Err(format!("py-spy failed {failures} times in a row reading it: {last_error}"));
                }
                continue;
            }
        };
        failures = 0;
        distribution.samples += 1;
        let spent = cpu.saturating_sub(last_cpu);
        last_cpu = cpu;
        let active: Vec<&StackTrace> = traces.iter().filter(|t| t.active && !t.frames.is_empty()).collect();
        // Each thread's CPU clock right after the read, while the read's pause has just brought
        // it up to date: a stack weighs what its own thread used, so an idle thread's stack
        // never takes the CPU of a busy one.
        let mut per_thread: Vec<(&StackTrace, Option<u64>)> = Vec::with_capacity(active.len());
        for trace in &active {
            per_thread.push((trace, trace.os_thread_id.and_then(|tid| threads.spent_since_last(tid))));
        }
        for trace in traces.iter().filter(|t| !t.active) {
            // Idle now, but it may run before the next read: its clock must be current then.
            if let Some(tid) = trace.os_thread_id {
                threads.spent_since_last(tid);
            }
        }
        if per_thread.iter().all(|(_, spent)| spent.is_some()) {
            for (trace, spent) in per_thread {
                distribution.add(frames(trace), spent.unwrap_or(0) as f64);
            }
            continue;
        }
        // A Python before 3.11 names no thread's OS id: which of several active threads used
        // the CPU is not known, so the process's CPU time is shared evenly.
        if spent == 0 || active.is_empty() {
            continue;
        }
        let weight = spent as f64 / active.len() as f64;
        for trace in active {
            distribution.add(frames(trace), weight);
        }
    }
    if distribution.is_empty() && distribution.samples == 0 && !last_error.is_empty() {
        return Err(format!("py-spy could not read it: {last_error}"));
    }
    Ok(distribution)
}

/// py-spy's frames, innermost first, as the graph's `func (file.py) [py]`, outermost first.
fn frames(trace: &StackTrace) -> Vec<String> {
    trace
        .frames
        .iter()
        .rev()
        .map(|f| {
            let file = f.short_filename.as_deref().unwrap_or(&f.filename);
            if file.is_empty() {
                format!("{}{PY_SUFFIX}", f.name)
            } else {
                format!("{} ({file}){PY_SUFFIX}", f.name)
            }
        })
        .collect()
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// The CPU time of each thread of another process, from `/proc/PID/task/TID/schedstat` (the
/// kernel lets no process read another's thread CPU clocks). Its first field is the time the
/// scheduler has accounted, brought up to date whenever the thread stops running, as it does
/// while py-spy reads the process.
///
/// Asked at the sampling rate of every Python process that used the CPU, so each file it reads
/// is kept open and read again (see [`ProcFile`]), and the process's threads are listed again
/// only when their count changed or a thread's file says it is gone: opening each file at
/// each read, and listing the threads each time, cost a Python that wakes every millisecond
/// about 1 % of a core of the agent's.
struct ThreadClocks {
    pid: u32,
    /// CPU nanoseconds of each thread at the previous read.
    last: HashMap<u64, u64>,
    /// `/proc/PID/stat`, for the count of threads.
    process_stat: Option<ProcFile>,
    /// The threads as last listed, and whether the list is known to be stale.
    tids: Vec<u64>,
    stale: bool,
    /// Threads' files kept open, up to [`MAX_OPEN_THREAD_FILES`].
    open: HashMap<(u64, ThreadFile), KeptFile>,
}

/// Files kept open per Python process at most, and over all of them: past these, a thread's
/// file is opened at each read (a process of thousands of threads, or a node of hundreds of
/// Python processes, must not take the descriptors the agent's exit watches and the objects
/// being named need).
const MAX_OPEN_THREAD_FILES: usize = 64;
const MAX_OPEN_THREAD_FILES_IN_ALL: usize = 1024;

/// Thread files kept open now, over every Python process.
static OPEN_THREAD_FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A [`ProcFile`] counted in [`OPEN_THREAD_FILES`] while it is kept.
struct KeptFile(ProcFile);

impl KeptFile {
    /// `file`, kept if there is room, per process (`kept_here` files already) and in all;
    /// else `None` (and the file is closed).
    fn keep(file: ProcFile, kept_here: usize) -> Option<Self> {
        if kept_here >= MAX_OPEN_THREAD_FILES {
            return None;
        }
        if OPEN_THREAD_FILES.fetch_add(1, Ordering::Relaxed) >= MAX_OPEN_THREAD_FILES_IN_ALL {
            OPEN_THREAD_FILES.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Self(file))
    }
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        OPEN_THREAD_FILES.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ThreadFile {
    Stat,
    Schedstat,
}

impl ThreadClocks {
    fn of(pid: u32) -> Self {
        Self { pid, last: HashMap::new(), process_stat: None, tids: Vec::new(), stale: true, open: HashMap::new() }
    }

    /// CPU nanoseconds thread `tid` used since it was last asked about: `Some(0)` the first
    /// time, `None` when the process has no such thread (the id comes from the process's own
    /// memory: it may be stale, or a lie).
    fn spent_since_last(&mut self, tid: u64) -> Option<u64> {
        let now: u64 =
            self.read_thread(tid, ThreadFile::Schedstat, |text| text.split_whitespace().next()?.parse().ok())?;
        if self.last.len() >= MAX_THREADS_REMEMBERED && !self.last.contains_key(&tid) {
            // A process that starts threads by the thousand: forget those that ended.
            let pid = self.pid;
            self.last.retain(|t, _| std::path::Path::new(&format!("/proc/{pid}/task/{t}")).exists());
        }
        let before = self.last.insert(tid, now);
        Some(before.map_or(0, |b| now.saturating_sub(b)))
    }

    /// Whether a thread of the process is running or waiting for a CPU (`R`), which is what
    /// py-spy calls active; when none is, every thread's clock is brought up to date, as a read
    /// that found them all idle would. `None` when the threads cannot be read (it exited).
    fn running_now(&mut self) -> Option<bool> {
        let count = self.thread_count()?;
        if self.stale || count != self.tids.len() {
            self.list_threads()?;
        }
        if self.any_thread_running() {
            return Some(true);
        }
        if self.stale {
            // A listed thread ended: another may have started in its place (the count the
            // same), and be running now. Listed again before answering that none runs.
            self.list_threads()?;
            if self.any_thread_running() {
                return Some(true);
            }
        }
        if self.tids.is_empty() {
            return None;
        }
        for i in 0..self.tids.len() {
            self.spent_since_last(self.tids[i]);
        }
        Some(false)
    }

    /// Whether a listed thread is running or waiting for a CPU; a thread that ended since the
    /// list was made marks it stale.
    fn any_thread_running(&mut self) -> bool {
        for i in 0..self.tids.len() {
            // The state follows the command name, which may hold spaces and parentheses.
            let running = self
                .read_thread(self.tids[i], ThreadFile::Stat, |stat| Some(stat.rsplit_once(") ")?.1.starts_with('R')));
            match running {
                Some(true) => return true,
                Some(false) => {}
                None => self.stale = true,
            }
        }
        false
    }

    /// The process's count of threads (`/proc/PID/stat` field 20); `None` once it is gone.
    fn thread_count(&mut self) -> Option<usize> {
        if self.process_stat.is_none() {
            self.process_stat = ProcFile::open(&format!("/proc/{}/stat", self.pid));
        }
        let mut buf = [0u8; PROC_TEXT_MAX];
        let stat = self.process_stat.as_ref()?.read(&mut buf)?;
        stat.rsplit_once(") ")?.1.split_whitespace().nth(17)?.parse().ok()
    }

    fn list_threads(&mut self) -> Option<()> {
        self.tids = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        self.stale = false;
        let listed: std::collections::HashSet<u64> = self.tids.iter().copied().collect();
        self.open.retain(|(tid, _), _| listed.contains(tid));
        Some(())
    }

    /// `parse` of the text of thread `tid`'s `file`, read through the file kept open for it
    /// (opened now while there is room); `None` when the thread is gone or the text is not as
    /// expected.
    fn read_thread<T>(&mut self, tid: u64, file: ThreadFile, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        let mut buf = [0u8; PROC_TEXT_MAX];
        if let Some(open) = self.open.get(&(tid, file)) {
            let text = open.0.read(&mut buf);
            if text.is_none() {
                self.open.remove(&(tid, file));
            }
            return parse(text?);
        }
        let name = match file {
            ThreadFile::Stat => "stat",
            ThreadFile::Schedstat => "schedstat",
        };
        let opened = ProcFile::open(&format!("/proc/{}/task/{tid}/{name}", self.pid))?;
        let value = parse(opened.read(&mut buf)?);
        if let Some(kept) = KeptFile::keep(opened, self.open.len()) {
            self.open.insert((tid, file), kept);
        }
        value
    }
}

/// The longest text of a `/proc` file read here (`stat` is about 300 bytes, with a command
/// name of at most 64).
const PROC_TEXT_MAX: usize = 1024;

/// A file of `/proc` kept open and read again from its start: procfs makes its text afresh at
/// each read from offset 0, so a read is one system call (`pread`) where opening it again was
/// five (open, statx, two reads, close).
struct ProcFile(std::fs::File);

impl ProcFile {
    fn open(path: &str) -> Option<Self> {
        std::fs::File::open(path).ok().map(Self)
    }

    /// The file's text now; `None` once its task is gone (`ESRCH`), or when the text is empty,
    /// fills `buf` (it may be cut), or is not UTF-8.
    fn read<'b>(&self, buf: &'b mut [u8]) -> Option<&'b str> {
        use std::os::unix::fs::FileExt;
        let n = self.0.read_at(buf, 0).ok()?;
        if n == 0 || n == buf.len() {
            return None;
        }
        std::str::from_utf8(&buf[..n]).ok()
    }
}

/// The CPU clock of another process (all its threads), precise to the nanosecond: the kernel
/// brings a running thread's time up to date when it is read.
pub struct ProcessCpuClock(libc::clockid_t);

impl ProcessCpuClock {
    pub fn of(pid: u32) -> Option<Self> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: `id` is a valid out-pointer.
        (unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) } == 0).then_some(Self(id))
    }

    /// CPU time used so far; `None` once the process is gone.
    pub fn now_ns(&self) -> Option<u64> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid out-pointer.
        if unsafe { libc::clock_gettime(self.0, &mut ts) } != 0 {
            return None;
        }
        Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_another_process_cpu_clock() {
        let mut child = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let clock = ProcessCpuClock::of(child.id()).unwrap();
        let before = clock.now_ns().unwrap();
        // However long a loaded machine makes the shell wait for 20 ms of CPU.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut after = before;
        while after < before + 20_000_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            after = clock.now_ns().unwrap();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(after >= before + 20_000_000, "a spinning shell used CPU: {before} -> {after}");
        assert!(clock.now_ns().is_none(), "a reaped process has no clock");
    }

    /// `python3 -c CODE`, once its interpreter is set up (py-spy cannot read one that is not
    /// yet): when it used under a tenth of a CPU over 100 ms, past its start-up.
    fn python_started(code: &str) -> std::process::Child {
        let child = std::process::Command::new("python3")
            .args(["-c", code])
            .spawn()
            .expect("python3 (scripts/setup.sh installs it)");
        let clock = ProcessCpuClock::of(child.id()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = clock.now_ns().unwrap_or(0);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = clock.now_ns().unwrap_or(last);
            if now.saturating_sub(last) < 10_000_000 {
                break;
            }
            last = now;
        }
        child
    }

    /// Thread states and clocks read through files kept open are current at each read, a
    /// thread started later is listed, and a process gone is told.
    #[test]
    fn thread_clocks_read_again_from_kept_files_follow_new_threads() {
        let mut child = python_started(
            "import threading, time\ntime.sleep(1)\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()",
        );
        let mut threads = ThreadClocks::of(child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut running = threads.running_now();
        while running != Some(true) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            running = threads.running_now();
        }
        assert_eq!(running, Some(true), "a spinning thread is seen running");
        assert_eq!(threads.tids.len(), 2, "the thread started later is listed: {:?}", threads.tids);
        let spinner = *threads.tids.iter().find(|t| **t != u64::from(child.id())).unwrap();
        threads.spent_since_last(spinner);
        assert!(threads.open.contains_key(&(spinner, ThreadFile::Schedstat)), "its schedstat is kept open");
        // However long a loaded machine makes it wait for 20 ms of CPU.
        let mut spent = 0;
        while spent < 20_000_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            spent += threads.spent_since_last(spinner).unwrap();
        }
        assert!(spent >= 20_000_000, "a file kept open reads the clock as it is now: {spent} ns");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(threads.running_now(), None, "a reaped process has no threads");
    }

    /// An idle Python is not read (nor paused) while it does not run, and the reader still
    /// sees it exit while it is a zombie (the test does not reap it), not at the window's end.
    #[test]
    fn an_idle_python_is_not_read_and_its_exit_is_still_seen() {
        let mut child = python_started("import time; time.sleep(5)");
        let pid = child.id();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            let _ = done.send(record(pid, 99, &stop));
        });
        // Never told to stop: the reader must end by itself once the process has exited.
        let read = result.recv_timeout(Duration::from_secs(30)).expect("the reader ended by itself");
        // The reader's ptrace waits run in this process, the parent: a read racing the exit
        // may reap the child itself (ECHILD here), which also means it had exited.
        let exited = match child.try_wait() {
            Ok(status) => status.is_some(),
            Err(e) => e.raw_os_error() == Some(libc::ECHILD),
        };
        let _ = child.wait();
        assert!(exited, "the reader ended before its process did");
        let distribution = read.expect("py-spy read it");
        // At 99 Hz for 5 s, about 500 reads if every instant were read.
        assert!(distribution.samples <= 20, "{} reads of an idle process", distribution.samples);
    }

    /// A Python that wakes every millisecond uses the CPU between nearly every two instants,
    /// but runs at few of them: it is read only at those (before, at every instant, and each
    /// read's stop and resume kept even a sleeping process "busy").
    #[test]
    fn a_python_that_mostly_sleeps_is_read_only_when_it_runs() {
        let mut child = python_started("import time\nwhile True: time.sleep(0.001)");
        let pid = child.id();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reader = std::thread::spawn(move || record(pid, 99, &flag));
        let window = Duration::from_secs(4);
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let read = reader.join().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let distribution = read.expect("py-spy read it");
        // About 400 instants; the sleeper runs at a few percent of them (more on a busy machine,
        // where it also waits for a CPU, which counts as running): half is far above that.
        assert!(distribution.samples < 200, "{} reads in {window:?} at 99 Hz", distribution.samples);
    }
}
