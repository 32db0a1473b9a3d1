//! Native stacks of code built without frame pointers, unwound in the kernel with the tables
//! the agent builds from `.eh_frame` (issue 10): `kubectl-eagle profile` in local mode on the
//! chains workload (images/chains), built with plain `-O2` as distributions build C.
//!
//! A frame-pointer walk of that binary sees the leaf and nothing under it: each chain's share
//! reads 0 and no stack reaches `main`. Unwound with the tables, each chain has its share and
//! the stacks are whole.
//!
//! Needs root (or CAP_BPF and CAP_PERFMON); without, it says `skipped: ...` and returns.

use std::process::Command;

use eagle_tests::{
    chains, chains_without_unwind_tables, require_sampling, tolerance, Eagle, TestDir, Workload, CHAINS_SPLIT,
};

/// The share of the samples whose stack reaches `main`.
fn share_down_to_main(profile: &eagle_tests::Profile) -> f64 {
    profile.count_where(|frames| frames.contains(&"main")) as f64 / profile.total().max(1) as f64
}

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

/// A running process whose binary was deleted after it started (an upgrade in place, a
/// container's layer gone): its tables are read through /proc/PID/map_files, which still
/// reaches the file, and its stacks are whole.
///
/// The process does a fixed amount of work (about 2 s of CPU) and the run ends when it exits:
/// the samples count the CPU it used, however little of it a busy machine gives it per second
/// (a fixed 3 s window got under 200 samples at a load average of 20 on 2 CPUs).
#[test]
fn a_deleted_binary_is_still_unwound() {
    require_sampling!();
    let dir = TestDir::new("chains_deleted");
    let copy = dir.join("chains");
    std::fs::copy(chains(), &copy).expect("copy chains");
    let workload = Workload::start(Command::new(&copy).args(["--rounds", "1000"]));
    std::fs::remove_file(&copy).expect("delete the binary");
    let run = Eagle::cli(&dir)
        .arg("profile")
        .args(["-o", "flame.folded", "-d", "60s", "-f", "499"])
        .arg(format!("pid/{}", workload.pid()))
        .output_file(dir.join("flame.folded"))
        .run();
    drop(workload);
    run.assert_code(0);
    let profile = run.profile();
    run.check(profile.total() >= 300, format!("only {} samples", profile.total()));
    let whole = share_down_to_main(&profile);
    run.check(whole >= 0.95, format!("only {:.1}% of the samples have a stack down to main", whole * 100.0));
    run.check(profile.share("chain_60_outer") > 0.4, "chain_60_outer is not where most samples are");
}

/// Code with neither unwind tables nor frame pointers cannot be unwound: the run goes on, the
/// leaf is still named, the stacks hang under `[truncated]` rather than posing as whole, and a
/// named warning says how many and why.
#[test]
fn code_without_tables_or_frame_pointers_is_marked_truncated_and_said() {
    require_sampling!();
    let dir = TestDir::new("chains_bare");
    let binary = chains_without_unwind_tables().to_str().expect("a UTF-8 path");
    let run = Eagle::cli(&dir)
        .arg("profile")
        .args(["-o", "flame.folded", "-f", "499", "--", binary, "--rounds", "600"])
        .output_file(dir.join("flame.folded"))
        .run();
    run.assert_code(0);
    let profile = run.profile();
    run.check(profile.total() >= 300, format!("only {} samples", profile.total()));
    run.check(
        profile.share("crunch") >= 0.95,
        format!("the leaf crunch has only {:.1}%", profile.share("crunch") * 100.0),
    );
    run.check(profile.share("[truncated]") >= 0.8, "the stacks that could not be unwound are not marked [truncated]");
    run.check(
        run.stderr().lines().any(|l| l.starts_with("warning: native stacks:") && l.contains("[truncated]")),
        "no warning says that the stacks stop early",
    );
}

/// Tables are built for the objects a process runs, not for every object it maps: a process
/// that maps LLVM (1.7 million rows) and never calls into it gets no table for it, and the
/// code it does run is unwound (the program, its libraries: tables built as their first
/// sample asks). A node's processes map much more than they run.
#[test]
fn a_library_mapped_and_never_run_gets_no_table() {
    require_sampling!();
    // clang-19 (scripts/setup.sh) brings it.
    let llvm = "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1";
    let dir = TestDir::new("lazy_tables");
    // Mapped (its constructors run before the agent starts), then a second of sleep, then
    // nothing but Python's own code for 5 s.
    let workload = Workload::start(Command::new("python3").args([
        "-c",
        "import ctypes, sys, time\nctypes.CDLL(sys.argv[1])\ntime.sleep(1)\nend = time.time() + 5\nwhile time.time() < end: pass",
        llvm,
    ]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut eagle = Eagle::cli(&dir)
        .arg("profile")
        .args(["-o", "flame.folded", "-d", "3s", "-f", "499", "--runtime", "native"])
        .arg(format!("pid/{}", workload.pid()))
        .output_file(dir.join("flame.folded"));
    eagle.command_mut().env("EAGLE_UNWIND_DEBUG", "1");
    let run = eagle.run();
    drop(workload);
    run.assert_code(0);
    // `unwind: ... N tables, M rows loaded`, after each build.
    let rows = run
        .stderr_lines()
        .iter()
        .filter_map(|l| {
            l.strip_prefix("unwind: ")?.strip_suffix(" rows loaded")?.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .max();
    let Some(rows) = rows else { panic!("no `unwind: ... rows loaded` line{}", run.diagnostics()) };
    run.check(rows < 1_000_000, format!("{rows} rows loaded: LLVM's table was built, though nothing ran it"));
    let profile = run.profile();
    run.check(profile.total() >= 300, format!("only {} samples", profile.total()));
    let whole = profile.count_where(|frames| frames.iter().any(|f| f.starts_with("_PyEval_EvalFrame") || *f == "main"));
    run.check(
        whole as f64 >= 0.9 * profile.total() as f64,
        format!("only {whole} of {} samples reach the interpreter's loop or main", profile.total()),
    );
}
