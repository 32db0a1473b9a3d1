//! Ruby, read with rbspy's library, each stack weighed by the process's CPU clock.
//!
//! rbspy's `record` counts wall-clock samples of the thread that holds the interpreter lock,
//! also while it waits for a CPU; on a busy machine a true 60 % read 31 to 62 % from run to
//! run. Here rbspy's sampler hands each stack over as it reads it, at random instants this
//! module sets, and the stack weighs the CPU time the process used since the previous one (the
//! process's CPU clock): stacks read while the process waited weigh nothing. The magnitude
//! comes from eBPF (see `oncpu.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rand::Rng;

use super::oncpu::{Distribution, Recordings};
use super::python::ProcessCpuClock;

pub const RB_SUFFIX: &str = " [rb]_[j]";

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
    let sampler = rbspy::sampler::Sampler::new(pid as rbspy::Pid, FLAT_OUT_HZ, true, None, false, None, false);
    let (traces, trace_receiver) = std::sync::mpsc::sync_channel(0);
    let (results, result_receiver) = std::sync::mpsc::channel();
    sampler.start(traces, results).map_err(|e| format!("rbspy cannot read this Ruby process: {e}"))?;
    let period = 1.0 / rate_hz.max(1) as f64;
    let mut rng = rand::rng();
    let mut distribution = Distribution::default();
    let mut weights = ReceiptWeights::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            sampler.stop();
        } else {
            std::thread::sleep(Duration::from_secs_f64(period * rng.random_range(0.5..1.5)));
        }
        match trace_receiver.recv_timeout(Duration::from_millis(500)) {
            Ok(trace) => {
                let spent = weights.received(clock.now_ns());
                distribution.samples += 1;
                let frames: Vec<String> =
                    trace.trace.iter().rev().map(|f| format!("{}{RB_SUFFIX}", rbspy_frame(&f.to_string()))).collect();
                if !frames.is_empty() {
                    distribution.add(frames, spent as f64);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
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
    fn rbspy_frames_become_one_per_function() {
        assert_eq!(super::rbspy_frame("cpu_60 - /app/groundtruth.rb:12"), "cpu_60 (groundtruth.rb)");
        assert_eq!(super::rbspy_frame("block in <main> - /app/x.rb:20"), "block in <main> (x.rb)");
        assert_eq!(super::rbspy_frame("(unknown) [c function] - (unknown)"), "[c function]");
        assert_eq!(super::rbspy_frame("plain"), "plain");
    }
}
