//! Native stacks of code built without frame pointers, unwound in the kernel with the tables
//! the agent builds from `.eh_frame` (issue 10): `kubectl-eagle profile` in local mode on the
//! chains workload (images/chains), built with plain `-O2` as distributions build C.
//!
//! A frame-pointer walk of that binary sees the leaf and nothing under it: each chain's share
//! reads 0 and no stack reaches `main`. Unwound with the tables, each chain has its share and
//! the stacks are whole.
//!
//! Needs root (or CAP_BPF and CAP_PERFMON); without, it says `skipped: ...` and returns.

use eagle_tests::{chains, require_sampling, tolerance, Eagle, TestDir, CHAINS_SPLIT};

/// The headline: three call chains into one shared leaf, each at its share of the CPU time
/// within 3 points (or the sampling noise of the run, if wider), and at least 95 % of the
/// samples with a stack complete down to `main`.
///
/// chains does a fixed amount of work (about 4 s of CPU) and is profiled from its first
/// instruction to its exit at 999 Hz: about 4000 samples. The first ones, taken before the
/// agent built the new program's tables (a few milliseconds of CPU), are walked by frame
/// pointers and count against both figures.
#[test]
fn chains_without_frame_pointers_split_60_30_10_down_to_main() {
    require_sampling!();
    let dir = TestDir::new("chains_split");
    let binary = chains().to_str().expect("a UTF-8 path");
    let run = Eagle::cli(&dir)
        .arg("profile")
        .args(["-o", "flame.folded", "-f", "999", "--", binary, "--rounds", "2000"])
        .output_file(dir.join("flame.folded"))
        .run();
    run.assert_code(0);
    let profile = run.profile();
    let total = profile.total();
    run.check(total >= 2000, format!("only {total} samples of ~4s of CPU at 999 Hz"));
    let whole = profile.count_where(|frames| frames.contains(&"main")) as f64 / total.max(1) as f64;
    run.check(whole >= 0.95, format!("only {:.1}% of the samples have a stack down to main", whole * 100.0));
    for (chain, want) in CHAINS_SPLIT {
        let got = profile.share(chain);
        let within = tolerance(0.03, want, total);
        run.check(
            (got - want).abs() <= within,
            format!(
                "{chain}: {:.1}% of the samples, expected {:.0}% +- {:.1}",
                got * 100.0,
                want * 100.0,
                within * 100.0
            ),
        );
    }
    // Every chain reaches the leaf through its own inner function: the unwinder followed each
    // frame, not a lucky guess from the leaf's caller's caller.
    for (chain, _) in CHAINS_SPLIT {
        let inner = chain.replace("outer", "inner");
        let through = profile.count_where(|f| f.windows(3).any(|w| w[0] == chain && w[1] == inner && w[2] == "crunch"));
        run.check(through * 2 > profile.inclusive(chain), format!("{chain} does not reach crunch through {inner}"));
    }
}
