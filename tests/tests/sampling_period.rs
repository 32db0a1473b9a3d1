//! The sampler's period against work that repeats in step with it.
//!
//! A sampler firing at a fixed period finds a loop whose period is a multiple of its own at the
//! same point every time, and its graph then shows whichever function runs there: groundtruth's
//! rounds (about 2 ms here) sampled at a fixed 499 Hz read 52.6/42.0/5.4 instead of 60/30/10.
//! The sampler therefore redraws each CPU's period at random every few periods
//! (`profiler-image/src/sampler/cpu_clock.rs`). lockstep (images/lockstep) is the worst case:
//! it follows the clock, so a fixed period at its frequency sees one function only (99.9 %,
//! measured before the redraws).

use eagle_tests::{lockstep, require_sampling, tolerance, Eagle, Run, TestDir, SPLIT};

/// The CPU time lockstep's `--report-cpu` says each of `cpu_60`, `cpu_30`, `cpu_10` got, as
/// shares: the truth, which other work on the machine can move away from 60/30/10 by taking the
/// CPU at some points of the cycle more than at others.
#[track_caller]
fn reported_split(run: &Run) -> [f64; 3] {
    let line = run.stderr().lines().find_map(|l| l.strip_prefix("lockstep: ").map(str::to_owned));
    let line = line.unwrap_or_else(|| panic!("lockstep did not report its CPU time{}", run.diagnostics()));
    let seconds: Vec<f64> = line.split(' ').skip(1).step_by(2).filter_map(|s| s.parse().ok()).collect();
    assert_eq!(seconds.len(), 3, "cannot read `{line}`");
    let total: f64 = seconds.iter().sum();
    [seconds[0] / total, seconds[1] / total, seconds[2] / total]
}

/// The split of work that repeats exactly at the sampling period holds within sampling noise
/// (3.5 standard deviations, see `eagle_tests::tolerance`), at two frequencies: the period is
/// redrawn in blocks whose length follows the frequency.
#[test]
fn work_in_step_with_the_sampling_period_reads_true() {
    require_sampling!();
    for hz in ["499", "99"] {
        let dir = TestDir::new(&format!("lockstep_{hz}"));
        let program = lockstep().to_str().expect("a UTF-8 path");
        // A fixed amount of CPU time, so the sample count does not depend on how busy the
        // machine is: about 500 samples at 99 Hz, 1,250 at 499 Hz.
        let cpu_seconds = if hz == "99" { "5" } else { "2.5" };
        let run = Eagle::cli(&dir)
            .args(["profile", "-o", "flame.folded", "-f", hz, "--", program])
            .args(["--hz", hz, "--cpu-seconds", cpu_seconds, "--report-cpu"])
            .output_file(dir.join("flame.folded"))
            .run();
        run.assert_code(0);
        let profile = run.profile();
        let n = profile.working();
        run.check(n >= 250, format!("only {n} samples in cpu_* at {hz} Hz: too few to judge a split"));
        let truth = reported_split(&run);
        for (((function, _), (_, got)), want) in SPLIT.iter().zip(profile.split()).zip(truth) {
            let allowed = tolerance(0.0, want, n);
            run.check(
                (got - want).abs() <= allowed,
                format!(
                    "at {hz} Hz, {function} reads {:.1}% of {n} samples where it used {:.1}% of the CPU time (+- {:.1} allowed)",
                    got * 100.0,
                    want * 100.0,
                    allowed * 100.0
                ),
            );
        }
    }
}
