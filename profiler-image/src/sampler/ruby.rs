//! Ruby, read with rbspy's library, each stack weighed by the CPU time of the thread it shows.
//!
//! rbspy's `record` counts wall-clock samples of the thread that holds the interpreter lock,
//! also while it waits for a CPU; on a busy machine a true 60 % read 31 to 62 % from run to
//! run. Here rbspy's sampler hands each stack over as it reads it, at random instants this
//! module sets, and the stack weighs the CPU time its own thread used (see [`ThreadWeights`]):
//! stacks read while the thread waited weigh nothing.
//!
//! rbspy reads one stack per read: that of the thread the interpreter calls running, which is
//! the last to have taken the interpreter lock. A thread that releases it to burn CPU in C
//! (zlib's deflate, say) leaves the name to whichever thread took the lock last, maybe one
//! that only wakes to sleep again: weighed by the process's CPU clock, as this module did
//! before, a thread that waited in `sleep` read 95 % of a process whose other thread compressed
//! (its true share: 3 %). rbspy names the thread by its `pthread_t`, which
//! [`NativeThreadIds`] turns into the kernel's thread id. Where that cannot be done (a C library
//! other than glibc), each stack weighs the process's CPU time since the read before
//! ([`ReceiptWeights`]). The magnitude comes from eBPF (see `oncpu.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rand::Rng;

use super::native_thread::NativeThreadIds;
use super::oncpu::{Distribution, Recordings};
use super::python::ProcessCpuClock;

pub const RB_SUFFIX: &str = " [rb]_[j]";

/// The frame that stands for a thread whose stacks rbspy never read while it used the CPU (it
/// ran C code without the interpreter lock, or it is not a Ruby thread): where eBPF sampled
/// it, its native stacks go under it.
pub const OUTSIDE_RUBY: &str = "(thread outside Ruby code)";

/// Per-thread weights are used when at most one read in this many could not name its thread.
const MAX_UNTOLD_READS_IN: u64 = 10;

/// The sampler: one rbspy reading thread per process (see [`Recordings`]).
pub fn sampler(rate_hz: u64) -> Recordings {
    Recordings::new("rbspy", "Ruby", rate_hz, record)
}

fn record(pid: u32, rate_hz: u64, stop: &AtomicBool) -> Result<Distribution, String> {
    let clock = ProcessCpuClock::of(pid).ok_or("its CPU clock cannot be read (it exited?)")?;
    // rbspy's sampler reads on a fixed schedule, which phase-locks with periodic work. Asked
    // for far more than it can do, it reads again as soon as its last stack was handed over;
    // over a channel with no room, that is when this loop takes it: the loop sets the pace,
    // at random instants, as `python.rs` does. A stack received now was read just after the
    // previous receipt.
    const FLAT_OUT_HZ: u32 = 100_000;
    // Pauses the process while it is read (rbspy's default), so stacks are not torn.
    // rbspy opens a shared libruby by the path the process maps it at (see the check).
    crate::target_file::mapped_files_at_their_paths(std::path::Path::new("/proc"), pid, "/libruby")
        .map_err(|e| format!("rbspy is not started on this process: {e}"))?;
    let sampler = rbspy::sampler::Sampler::new(pid as rbspy::Pid, FLAT_OUT_HZ, true, None, false, None, false);
    let (traces, trace_receiver) = std::sync::mpsc::sync_channel(0);
    let (results, result_receiver) = std::sync::mpsc::channel();
    sampler.start(traces, results).map_err(|e| format!("rbspy cannot read this Ruby process: {e}"))?;
    let period = 1.0 / rate_hz.max(1) as f64;
    let mut rng = rand::rng();
    // Weighed both ways: by the process's clock always, per thread where the process's C
    // library says how to tell a thread's kernel id.
    let mut by_process = Distribution::default();
    let mut weights = ReceiptWeights::default();
    let mut by_thread =
        NativeThreadIds::of(pid).ok().map(|ids| (ids, ThreadWeights::default(), Distribution::default()));
    let mut untold = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            sampler.stop();
        } else {
            std::thread::sleep(Duration::from_secs_f64(period * rng.random_range(0.5..1.5)));
        }
        match trace_receiver.recv_timeout(Duration::from_millis(500)) {
            Ok(trace) => {
                let spent = weights.received(clock.now_ns());
                let frames: Vec<String> =
                    trace.trace.iter().rev().map(|f| format!("{}{RB_SUFFIX}", rbspy_frame(&f.to_string()))).collect();
                by_process.samples += 1;
                if let Some((ids, weights, distribution)) = &mut by_thread {
                    let tid = trace.thread_id.and_then(|pthread| ids.tid(pthread));
                    untold += u64::from(tid.is_none());
                    let spent = weights.received(tid, |tid| thread_cpu_ns(pid, tid), || all_threads_cpu_ns(pid));
                    distribution.samples += 1;
                    if !frames.is_empty() {
                        distribution.add(frames.clone(), spent as f64);
                    }
                }
                if !frames.is_empty() {
                    by_process.add(frames, spent as f64);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let distribution = match by_thread {
        // Per thread when (nearly) every read named a thread of the process: a Ruby whose
        // thread rbspy cannot name would otherwise show all its time outside Ruby code.
        Some((_, weights, mut distribution)) if untold * MAX_UNTOLD_READS_IN <= distribution.samples => {
            for (tid, spent) in weights.unread(&all_threads_cpu_ns(pid)) {
                let frames = vec![format!("{} {OUTSIDE_RUBY}", thread_name(pid, tid))];
                distribution.threads.entry(frames.clone()).or_default().push(tid);
                distribution.add_exact(frames, spent as f64);
            }
            distribution
        }
        _ => by_process,
    };
    drain_result(&result_receiver, distribution)
}

/// What each stack received from rbspy weighs: the process's CPU time between the two receipts
/// before it. rbspy reads a stack as soon as the previous one was taken, so the stack received
/// now was read at the last receipt, and weighs the CPU time the process used since the read
/// before it (read at the receipt before that).
///
/// The first two stacks weigh nothing: when the first one was read is not known (rbspy read it
/// as soon as it had found the interpreter, after an attach that took 40 to 190 ms of the
/// process's CPU in debug builds here), so there is no read before the second to measure from.
/// Measuring from the start of the recording instead gave the second stack all the CPU time
/// of rbspy's attach: 17 to 60 times an ordinary read's weight, up to 8 % of an 8 s window's
/// CPU time on one stack, and a reported precision of 24 samples instead of about 300.
#[derive(Debug, Default)]
struct ReceiptWeights {
    /// The CPU clock at the last two receipts, the older first.
    before_last: Option<u64>,
    last: Option<u64>,
}

impl ReceiptWeights {
    /// The weight of the stack received now, when the process's CPU clock reads `now_ns`
    /// (`None`: it could not be read, and the stacks it bounds weigh nothing).
    fn received(&mut self, now_ns: Option<u64>) -> u64 {
        let spent = match (self.before_last, self.last) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        (self.before_last, self.last) = (self.last, now_ns);
        spent
    }
}

/// What each stack received from rbspy weighs when the thread it shows is known: the CPU time
/// that thread used since the previous stack of it was received (or, the first time, since the
/// recording's second receipt), read from `/proc/PID/task/TID/schedstat` at the receipt.
///
/// A stack is read just after the previous receipt, so this is the thread's CPU time from
/// around its previous read to one period after this one, not up to this read: knowing it up
/// to the read would need every thread's clock at every receipt (the stack's thread is known
/// only once it arrives), a file read per thread per sample. Either way a read stands for the
/// time around it, and the instants are random, so no stack gains by the shift.
///
/// The first stack weighs nothing: it was read during rbspy's attach, at an unknown instant.
/// At its receipt every thread's clock is noted: the window's start for each thread (a thread
/// started later starts at 0).
#[derive(Debug, Default)]
struct ThreadWeights {
    /// Each thread's CPU clock when the first stack was received; `None` before.
    start: Option<HashMap<u32, u64>>,
    /// Each thread's CPU clock when its stack was last received.
    charged: HashMap<u32, u64>,
}

impl ThreadWeights {
    /// The weight of a stack received now, of thread `tid` (`None`: it could not be told, and
    /// the stack weighs nothing); `clock` reads one thread's CPU nanoseconds, `clocks` all of
    /// them.
    fn received(
        &mut self,
        tid: Option<u32>,
        clock: impl Fn(u32) -> Option<u64>,
        clocks: impl Fn() -> HashMap<u32, u64>,
    ) -> u64 {
        let Some(start) = &self.start else {
            self.start = Some(clocks());
            return 0;
        };
        let Some(tid) = tid else { return 0 };
        let Some(now) = clock(tid) else { return 0 };
        let since = self.charged.get(&tid).or_else(|| start.get(&tid)).copied().unwrap_or(0);
        self.charged.insert(tid, now);
        now.saturating_sub(since)
    }

    /// The threads no stack was received of that used CPU time in the window, and how much
    /// (`end`: every thread's clock now).
    fn unread(&self, end: &HashMap<u32, u64>) -> Vec<(u32, u64)> {
        let Some(start) = &self.start else { return Vec::new() };
        let read: HashSet<&u32> = self.charged.keys().collect();
        let mut unread: Vec<(u32, u64)> = end
            .iter()
            .filter(|(tid, _)| !read.contains(tid))
            .map(|(tid, now)| (*tid, now.saturating_sub(start.get(tid).copied().unwrap_or(0))))
            .filter(|(_, spent)| *spent > 0)
            .collect();
        unread.sort_unstable();
        unread
    }
}

/// One thread's CPU nanoseconds so far (`schedstat`'s first field).
fn thread_cpu_ns(pid: u32, tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Every thread's CPU nanoseconds so far.
fn all_threads_cpu_ns(pid: u32) -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return HashMap::new() };
    tasks
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| Some((tid, thread_cpu_ns(pid, tid)?)))
        .collect()
}

fn thread_name(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("thread {tid}"))
}

/// rbspy writes `name - /path/file.rb:LINE`; the graph wants one frame per function, named like
/// py-spy's: `name (file.rb)`. C functions it cannot name become `[c function]`.
fn rbspy_frame(frame: &str) -> String {
    let Some((name, location)) = frame.rsplit_once(" - ") else { return frame.to_owned() };
    if name.starts_with("(unknown) [c function]") {
        return "[c function]".to_owned();
    }
    let file =
        location
            .rsplit_once(':')
            .map_or(location, |(f, line)| if line.bytes().all(|b| b.is_ascii_digit()) { f } else { location });
    let file = file.rsplit('/').next().unwrap_or(file);
    format!("{name} ({file})")
}

/// rbspy's own verdict on the recording once its sampler ended.
fn drain_result(
    results: &Receiver<Result<(), anyhow::Error>>,
    distribution: Distribution,
) -> Result<Distribution, String> {
    // The sampler's thread sends its verdict as it ends; it panics if nobody is left to take
    // it, so wait for it (its trace channel is closed, so it is ending).
    match results.recv_timeout(Duration::from_secs(2)) {
        Ok(Err(e)) if distribution.samples == 0 => Err(format!("rbspy cannot read this Ruby process: {e:#}")),
        _ => Ok(distribution),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_two_stacks_weigh_nothing_and_then_the_interval_before_the_last_receipt() {
        let mut weights = super::ReceiptWeights::default();
        // The first stack was read at an unknown time during rbspy's attach; the second just
        // after the first receipt, with no read before it to measure from.
        assert_eq!(weights.received(Some(150_000_000)), 0);
        assert_eq!(weights.received(Some(160_000_000)), 0);
        // The third was read at the second receipt: the CPU time between the first two.
        assert_eq!(weights.received(Some(172_000_000)), 10_000_000);
        assert_eq!(weights.received(None), 12_000_000);
        assert_eq!(weights.received(Some(190_000_000)), 0, "an unreadable clock weighs nothing");
        assert_eq!(weights.received(Some(200_000_000)), 0);
        assert_eq!(weights.received(Some(210_000_000)), 10_000_000);
    }

    #[test]
    fn a_stack_weighs_what_its_own_thread_used_since_its_last_stack() {
        use std::collections::HashMap;
        let mut weights = super::ThreadWeights::default();
        let clocks = |busy: u64, idle: u64| HashMap::from([(1, busy), (2, idle), (3, 7)]);
        // The first stack, read during the attach, weighs nothing; every thread's clock is noted.
        assert_eq!(weights.received(Some(1), |_| None, || clocks(100, 10)), 0);
        // The busy thread: what it used since the start, then since its own last stack.
        assert_eq!(weights.received(Some(1), |_| Some(150), || unreachable!()), 50);
        assert_eq!(weights.received(Some(1), |_| Some(170), || unreachable!()), 20);
        // The idle thread's stack weighs its own time, however much the busy one used meanwhile.
        assert_eq!(weights.received(Some(2), |_| Some(12), || unreachable!()), 2);
        assert_eq!(weights.received(Some(1), |_| Some(400), || unreachable!()), 230);
        // A thread that cannot be told, or whose clock is gone, weighs nothing.
        assert_eq!(weights.received(None, |_| Some(1_000), || unreachable!()), 0);
        assert_eq!(weights.received(Some(2), |_| None, || unreachable!()), 0);
        // A thread born in the window counts from 0.
        assert_eq!(weights.received(Some(4), |_| Some(30), || unreachable!()), 30);
        // At the end: threads never read that used the CPU; thread 3 did not.
        let end = HashMap::from([(1, 500), (2, 13), (3, 7), (4, 31), (5, 90)]);
        assert_eq!(weights.unread(&end), vec![(5, 90)]);
    }

    #[test]
    fn rbspy_frames_become_one_per_function() {
        assert_eq!(super::rbspy_frame("cpu_60 - /app/groundtruth.rb:12"), "cpu_60 (groundtruth.rb)");
        assert_eq!(super::rbspy_frame("block in <main> - /app/x.rb:20"), "block in <main> (x.rb)");
        assert_eq!(super::rbspy_frame("(unknown) [c function] - (unknown)"), "[c function]");
        assert_eq!(super::rbspy_frame("plain"), "plain");
    }
}
