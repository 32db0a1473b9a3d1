//! One unit in one graph: CPU time.
//!
//! Native code is sampled on the CPU clock (eBPF), so a sample is a slice of CPU time. The
//! samplers that read an interpreter's or a JVM's own frames (py-spy, rbspy, JDK Flight Recorder)
//! run on the wall clock: a throttled, preempted or waiting process is sampled as often as a busy
//! one. So their stacks give only the *distribution* of a process's time; its *magnitude* comes
//! from the eBPF sampler, which keeps counting every interpreted process on the CPU clock in the
//! same window at the same frequency. Each such process's stacks are scaled so their total is its
//! eBPF on-CPU sample count ([`Distribution::apportion`]), and the graph stays in one unit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Recorded, RuntimeSampler, SamplerError};

/// How one process's time divides among its stacks, as its runtime's own sampler saw it:
/// relative weights (counts, or CPU nanoseconds), not samples of the graph's unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    weights: HashMap<Vec<String>, f64>,
    /// The sum of the weight of every read, and of its square, for the effective sample count
    /// (weights measured exactly, [`Distribution::add_exact`], are not reads).
    reads: f64,
    squares: f64,
    /// Stacks the runtime's sampler read, for the report.
    pub samples: u64,
    /// Stacks that stand for threads the runtime's sampler does not see (a JVM's compiler and
    /// GC threads: one frame, their name), with the ids of those threads: where eBPF sampled
    /// them, their native stacks take the stack's place ([`Distribution::apportion_threads`]).
    pub threads: HashMap<Vec<String>, Vec<u32>>,
    /// What the sampler knows of why it read nothing, for the report.
    pub note: Option<String>,
    /// The thread with the most reads, and how many, where each thread's reads weigh its own
    /// measured CPU time (Flight Recorder): the split within that thread is as precise as that
    /// many samples, whatever one-off lumps of other threads do to the whole's precision.
    pub busiest_thread: Option<(String, u64)>,
}

impl Distribution {
    /// Adds `weight` to the stack `frames` (outermost first).
    pub fn add(&mut self, frames: Vec<String>, weight: f64) {
        if weight > 0.0 && weight.is_finite() {
            *self.weights.entry(frames).or_insert(0.0) += weight;
            self.reads += weight;
            self.squares += weight * weight;
        }
    }

    /// Adds `weight` to the stack `frames` as a measured quantity, not a read: a thread's CPU
    /// time from its clock, which stands for threads the runtime's sampler does not see. It
    /// takes its share of the graph without making the reads' shares look less precise.
    pub fn add_exact(&mut self, frames: Vec<String>, weight: f64) {
        if weight > 0.0 && weight.is_finite() {
            *self.weights.entry(frames).or_insert(0.0) += weight;
        }
    }

    /// How many unweighted samples the weighted reads are worth for the shares' precision
    /// (Kish's effective sample size, (sum w)^2 / sum w^2): reads of unequal weight say less
    /// than as many equal ones, which is what a share's tolerance must be judged on. Weights
    /// added with [`Distribution::add_exact`] are no reads: they count neither way (one lump of
    /// a compiler thread's CPU time made 800 reads of a JVM look as precise as 90).
    pub fn effective_samples(&self) -> f64 {
        if self.squares > 0.0 {
            self.reads.powi(2) / self.squares
        } else {
            0.0
        }
    }

    pub fn total(&self) -> f64 {
        self.weights.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Splits `n` samples over the stacks in proportion to their weights, exactly: each stack
    /// gets the floor of its share, and the samples left over go to the largest remainders
    /// (Hamilton's method), so the counts sum to `n` and none is off by a whole sample.
    pub fn apportion(&self, n: u64) -> Vec<(Vec<String>, u64)> {
        let total = self.total();
        if n == 0 || total <= 0.0 {
            return Vec::new();
        }
        // Sorted so that ties go the same way in every run.
        let mut stacks: Vec<(&Vec<String>, f64)> = self.weights.iter().map(|(s, w)| (s, *w)).collect();
        stacks.sort_by(|a, b| a.0.cmp(b.0));
        let mut shares: Vec<(usize, u64, f64)> = stacks
            .iter()
            .enumerate()
            .map(|(i, (_, w))| {
                let exact = w / total * n as f64;
                let floor = exact.floor();
                (i, floor as u64, exact - floor)
            })
            .collect();
        let given: u64 = shares.iter().map(|s| s.1).sum();
        let mut left = n.saturating_sub(given);
        let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
        by_remainder.sort_by(|&a, &b| shares[b].2.total_cmp(&shares[a].2).then(a.cmp(&b)));
        for i in by_remainder.into_iter().cycle() {
            if left == 0 {
                break;
            }
            shares[i].1 += 1;
            left -= 1;
        }
        shares.into_iter().filter(|s| s.1 > 0).map(|(i, count, _)| (stacks[i].0.clone(), count)).collect()
    }
}

impl Distribution {
    /// [`Distribution::apportion`], with each stack that stands for threads (see
    /// [`Distribution::threads`]) replaced by those threads' native stacks under it, sharing its
    /// samples in proportion to the eBPF samples of each (`native`: thread -> stack -> samples).
    /// A thread eBPF did not sample keeps its one frame.
    pub fn apportion_threads(
        &self,
        n: u64,
        native: &HashMap<u32, HashMap<Vec<String>, u64>>,
    ) -> Vec<(Vec<String>, u64)> {
        let mut out = Vec::new();
        for (frames, count) in self.apportion(n) {
            let mut seen = Distribution::default();
            for tid in self.threads.get(&frames).into_iter().flatten() {
                for (stack, samples) in native.get(tid).into_iter().flatten() {
                    seen.add(frames.iter().chain(stack).cloned().collect(), *samples as f64);
                }
            }
            if seen.is_empty() {
                out.push((frames, count));
            } else {
                out.extend(seen.apportion(count));
            }
        }
        out
    }
}

/// What the eBPF sampler saw of one interpreted process: its on-CPU samples (the magnitude)
/// and their native stacks, kept as the fallback for when the runtime's own sampler fails.
#[derive(Clone, Debug, Default)]
pub struct OnCpu {
    pub samples: u64,
    pub native: HashMap<Vec<String>, u64>,
}

impl OnCpu {
    pub fn add(&mut self, frames: Vec<String>, count: u64) {
        self.samples += count;
        *self.native.entry(frames).or_insert(0) += count;
    }
}

/// One reading thread per process, as the library-driven samplers (py-spy's, rbspy's) run them:
/// each records a [`Distribution`] until it is told to stop or its process ends.
pub struct Recordings {
    /// The tool that reads, for thread names and messages.
    tool: &'static str,
    /// The runtime it reads, for messages.
    what: &'static str,
    rate_hz: u64,
    /// Reads one process at `rate_hz` until told to stop or the process ends.
    record: RecordFn,
    running: HashMap<u32, Recording>,
    /// Processes whose reader did not stop when told, and was left behind: not read again.
    left_behind: HashSet<u32>,
}

/// How a library-driven sampler reads one process: `(pid, rate_hz, stop)`.
pub type RecordFn = fn(u32, u64, &AtomicBool) -> Result<Distribution, String>;

struct Recording {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Distribution, String>>,
}

/// How long the readers told to stop at the window's end are waited for, together. A reader stops
/// at its next read, within a period and a half (1.5 s at 1 Hz); one that has not by then is
/// blocked in a library call (an open of a file the process swapped in, see
/// `target_file::mapped_files_at_their_paths`), and is left behind rather than holding up the
/// run's result.
const READER_STOP_WAIT: Duration = Duration::from_secs(10);

/// How a reader told to stop ended.
enum Ended {
    Read(Result<Distribution, String>),
    Panicked,
    /// It did not stop by the deadline, and was left behind: dropping its handle detached the
    /// thread, which ends with the agent.
    LeftBehind,
}

impl Recording {
    /// Tells the reader to stop and waits for it until `deadline` at most.
    fn end_by(self, deadline: Instant) -> Ended {
        self.stop.store(true, Ordering::Relaxed);
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return Ended::LeftBehind;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.thread.join().map_or(Ended::Panicked, Ended::Read)
    }
}

impl Recordings {
    pub fn new(tool: &'static str, what: &'static str, rate_hz: u64, record: RecordFn) -> Self {
        Self { tool, what, rate_hz, record, running: HashMap::new(), left_behind: HashSet::new() }
    }

    /// How long `stop` and `add`, on the collection loop, wait for a reader: two periods and a
    /// little, so that one blocked reader does not stall the loop for long.
    fn stop_wait(&self) -> Duration {
        (Duration::from_secs_f64(2.0 / self.rate_hz.max(1) as f64) + Duration::from_millis(100)).min(READER_STOP_WAIT)
    }

    /// Ends `recording` of `pid` by `deadline`, saying so where its reader was left behind.
    fn end(&mut self, pid: u32, recording: Recording, deadline: Instant) -> Result<Distribution, String> {
        let asked = Instant::now();
        match recording.end_by(deadline) {
            Ended::Read(result) => result,
            Ended::Panicked => Err(format!("{}'s reader panicked on this process", self.tool)),
            Ended::LeftBehind => {
                self.left_behind.insert(pid);
                Err(format!(
                    "{tool}'s reader did not stop within {:.1} s (blocked in a call of {tool}'s library): its samples of this process are lost, and it is not read again",
                    deadline.saturating_duration_since(asked).as_secs_f64(),
                    tool = self.tool
                ))
            }
        }
    }
}

impl RuntimeSampler for Recordings {
    fn name(&self) -> &'static str {
        self.tool
    }

    /// Starts reading `pid` on a thread of its own (ending a recording it had).
    fn add(&mut self, pid: u32) -> Result<(), SamplerError> {
        if let Some(old) = self.running.remove(&pid) {
            let deadline = Instant::now() + self.stop_wait();
            let _ = self.end(pid, old, deadline);
        }
        if self.left_behind.contains(&pid) {
            return Err(SamplerError::Failed(format!(
                "{}'s earlier reader of {} process {pid} is still blocked: not read again",
                self.tool, self.what
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (record, rate_hz) = (self.record, self.rate_hz);
        let thread = std::thread::Builder::new()
            .name(format!("{} {pid}", self.tool))
            .spawn(move || record(pid, rate_hz, &flag))
            .map_err(|e| {
                SamplerError::Failed(format!("cannot start a thread to read {} process {pid}: {e}", self.what))
            })?;
        self.running.insert(pid, Recording { stop, thread });
        Ok(())
    }

    fn stop(&mut self, pid: u32) -> Option<Result<Distribution, String>> {
        let recording = self.running.remove(&pid)?;
        let deadline = Instant::now() + self.stop_wait();
        Some(self.end(pid, recording, deadline))
    }

    /// Recordings whose thread ended by itself (the process exited, or could not be read).
    fn ended(&mut self) -> Vec<Recorded> {
        let done: Vec<u32> = self.running.iter().filter(|(_, r)| r.thread.is_finished()).map(|(p, _)| *p).collect();
        done.into_iter().map(|pid| (pid, self.stop(pid).expect("listed above"))).collect()
    }

    /// Every reader stops at its next read; [`RuntimeSampler::finish`] collects them.
    fn window_ended(&mut self) {
        for r in self.running.values() {
            r.stop.store(true, Ordering::Relaxed);
        }
    }

    fn finish(&mut self) -> Vec<Recorded> {
        for r in self.running.values() {
            r.stop.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + READER_STOP_WAIT;
        let running: Vec<(u32, Recording)> = self.running.drain().collect();
        running.into_iter().map(|(pid, r)| (pid, self.end(pid, r, deadline))).collect()
    }

    fn live(&self) -> usize {
        self.running.len()
    }
}

impl Drop for Recordings {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(name: &str) -> Vec<String> {
        vec!["main".to_owned(), name.to_owned()]
    }

    /// A reader blocked in its library (an open that never returns) is left behind at its
    /// deadline, with what happened said, and the run goes on.
    #[test]
    fn a_reader_that_does_not_stop_is_left_behind() {
        fn blocked(_: u32, _: u64, _: &AtomicBool) -> Result<Distribution, String> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(Distribution::default())
        }
        let mut recordings = Recordings::new("spy", "Snake", 99, blocked);
        recordings.add(1).unwrap();
        let asked = Instant::now();
        let error = recordings.stop(1).expect("a recording").expect_err("a blocked reader has no result");
        assert!(asked.elapsed() < Duration::from_secs(1), "stop waits two periods and a little");
        assert!(error.contains("spy's reader did not stop within 0.1 s"), "{error}");
        let again = recordings.add(1).expect_err("a process whose reader is blocked is not read again");
        assert!(again.to_string().contains("still blocked"), "{again}");
    }

    #[test]
    fn apportion_is_exact_and_proportional() {
        let mut d = Distribution::default();
        d.add(stack("a"), 6.0);
        d.add(stack("b"), 3.0);
        d.add(stack("c"), 1.0);
        let counts: HashMap<_, _> = d.apportion(1001).into_iter().collect();
        assert_eq!(counts.values().sum::<u64>(), 1001);
        assert_eq!(counts[&stack("a")], 601); // 600.6 has the largest remainder
        assert_eq!(counts[&stack("b")], 300);
        assert_eq!(counts[&stack("c")], 100);
    }

    #[test]
    fn apportion_of_thirds_sums_to_n() {
        let mut d = Distribution::default();
        for s in ["a", "b", "c"] {
            d.add(stack(s), 1.0);
        }
        let counts = d.apportion(2);
        assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 2);
        assert_eq!(counts.len(), 2, "no stack gets a sample it did not earn");
        assert_eq!(d.apportion(2), counts, "ties go the same way every time");
    }

    #[test]
    fn threads_outside_the_runtime_get_their_native_stacks() {
        let mut d = Distribution::default();
        d.add(stack("java"), 6.0);
        let compiler = vec!["C2 CompilerThre (JVM thread outside Java code)".to_owned()];
        let gc = vec!["GC Thread#0 (JVM thread outside Java code)".to_owned()];
        d.add(compiler.clone(), 3.0);
        d.threads.insert(compiler.clone(), vec![11, 12]);
        d.add(gc.clone(), 1.0);
        d.threads.insert(gc.clone(), vec![13]);
        let native = HashMap::from([
            (11, HashMap::from([(vec!["start_thread".to_owned(), "C2Compiler::compile_method".to_owned()], 2)])),
            (12, HashMap::from([(vec!["start_thread".to_owned(), "Matcher::match".to_owned()], 1)])),
            // A Java thread's native stacks are not used: Flight Recorder read its frames.
            (20, HashMap::from([(vec!["start_thread".to_owned(), "JavaMain".to_owned()], 50)])),
        ]);
        let counts: HashMap<_, _> = d.apportion_threads(100, &native).into_iter().collect();
        assert_eq!(counts.values().sum::<u64>(), 100);
        assert_eq!(counts[&stack("java")], 60);
        let under = |leaf: &str| [compiler[0].clone(), "start_thread".to_owned(), leaf.to_owned()].to_vec();
        assert_eq!(counts[&under("C2Compiler::compile_method")], 20);
        assert_eq!(counts[&under("Matcher::match")], 10);
        assert_eq!(counts[&gc], 10, "a thread eBPF did not sample keeps its named frame");
        assert_eq!(counts.len(), 4);
    }

    #[test]
    fn measured_weights_take_their_share_but_are_no_reads() {
        let mut d = Distribution::default();
        for _ in 0..100 {
            d.add(stack("a"), 1.0);
        }
        d.add_exact(stack("thread"), 100.0);
        assert_eq!(d.effective_samples(), 100.0);
        let counts: HashMap<_, _> = d.apportion(10).into_iter().collect();
        assert_eq!(counts[&stack("thread")], 5);
    }

    #[test]
    fn nothing_to_apportion() {
        let mut d = Distribution::default();
        assert!(d.apportion(10).is_empty());
        d.add(stack("a"), f64::NAN);
        d.add(stack("a"), -1.0);
        assert!(d.is_empty(), "nonsense weights are ignored");
        d.add(stack("a"), 1e-9);
        assert!(d.apportion(0).is_empty());
        assert_eq!(d.apportion(5), vec![(stack("a"), 5)]);
    }
}
