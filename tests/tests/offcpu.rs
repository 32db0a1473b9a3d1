//! `kubectl-eagle profile --mode off-cpu|wall` in local mode, end to end: the real binary counts
//! the time real threads spend blocked with eBPF at the scheduler's switch event.
//!
//! The workload is waits (images/waits): its main thread sleeps 60 %, waits on a pipe 30 % and
//! computes 10 % of its wall-clock time, in `sleep_60`, `pipe_30` and `cpu_10`. Its helper
//! thread (which answers the pipe) is off-CPU all along and is left out of the split: the split
//! is judged on the stacks under `main`.
//!
//! How precise a share must be: off-CPU time is measured, not sampled. Each block is counted
//! whole with its duration, so the share of sleeping among the blocks has no sampling noise;
//! what can move it is the window's edges, where one block of either kind may be cut off. The
//! count that matters is the number of rounds: with 30 or more, one 60 ms block is at most 2.2
//! points of the split, inside the 3 points the tests allow. (A busy machine slows the rounds
//! down: cpu_10 needs 10 ms on a CPU; the windows are 10 s.) A block ends when its thread is
//! woken, and the time it then waits for a CPU (or is preempted in cpu_10) is a wait of its own,
//! above the stack under `[waiting for a CPU]`: that time is the machine's load, not the
//! program's, and the split is judged without it (tests/tests/throttle.rs judges waits against
//! their own ground truth). So the main thread's own waits for a CPU do not move the split, and the helper runs
//! at a real-time priority where permitted (see waits.c), so its do not either. cpu_10 computes
//! for 10 ms of the wall clock on a CPU, not of CPU time: on a virtual machine whose host is
//! busy the two differ by the time the host ran another guest, which a wall-clock graph counts
//! (the thread was on its CPU) and the thread's CPU clock does not. In wall mode the 10 % on the CPU is sampled:
//! there the count is the window in sampling periods (a wall graph's microseconds over the
//! period of one sample), the number of samples the graph would have if every microsecond were
//! sampled, which is what `eagle_tests::tolerance` takes.

use eagle_proto::is_wait_frame;
use eagle_tests::{require_sampling, tolerance, waits, Eagle, Profile, Run, TestDir, WAITS_SPLIT};

/// `kubectl-eagle profile ARGS -o OUT -- waits`.
fn profile_waits(dir: &TestDir, out: &str, args: &[&str]) -> Run {
    let waits = waits().to_str().expect("a UTF-8 path");
    Eagle::cli(dir).arg("profile").args(["-o", out]).args(args).args(["--", waits]).output_file(dir.join(out)).run()
}

/// The main thread's time in each of waits' functions, blocked or on the CPU: its waits for a
/// CPU (under `[waiting for a CPU]`), which depend on the machine's load, not on the program,
/// are left out (see the module's docs).
fn main_thread(profile: &Profile) -> Vec<(&'static str, u64)> {
    let main = profile.filter(|frames| frames.contains(&"main") && !frames.iter().any(|f| is_wait_frame(f)));
    WAITS_SPLIT.iter().map(|(f, _)| (*f, main.inclusive(f))).collect()
}

#[track_caller]
fn assert_share(run: &Run, function: &str, got: f64, expected: f64, allowed: f64) {
    run.check(
        (got - expected).abs() <= allowed,
        format!(
            "{function}: {:.1}% where {:.1}% was expected (within {:.1} points)",
            got * 100.0,
            expected * 100.0,
            allowed * 100.0
        ),
    );
}

#[test]
fn off_cpu_time_splits_between_sleeping_and_waiting_on_a_pipe() {
    require_sampling!();
    let dir = TestDir::new("offcpu-split");
    let run = profile_waits(&dir, "off.folded", &["--mode", "off-cpu", "-d", "10s"]);
    run.assert_code(0);
    let text = std::fs::read_to_string(dir.join("off.folded")).expect("the profile was written");
    run.check(text.starts_with("# unit: off-cpu-microseconds\n"), "the folded file says its unit on its first line");
    run.check(run.stderr().contains("µs off-CPU"), "the closing line counts microseconds off-CPU");
    let profile = run.profile();
    let split = main_thread(&profile);
    let (sleep, pipe) = (split[0].1 as f64, split[1].1 as f64);
    let blocked = sleep + pipe;
    // A round is 100 ms: 90 ms of it blocked. Fewer rounds than 40 would let the window's
    // edges move the split (see the module's docs).
    let rounds = blocked / 90_000.0;
    run.check(rounds >= 30.0, format!("only {rounds:.0} rounds of blocks under main: too few to judge a split"));
    // Computing is not blocking: at most a stray page fault under cpu_10 (its preemptions are
    // waits, left out).
    run.check((split[2].1 as f64) < 0.01 * blocked, format!("{} µs off-CPU in cpu_10, which never blocks", split[2].1));
    // Off-CPU time includes waits for a CPU, always above the stack where the thread stopped.
    run.check(
        profile.count_where(|f| f.iter().rev().skip(1).any(|n| is_wait_frame(n))) == 0,
        "a wait's frame is the innermost of its stack",
    );
    let allowed = 0.03;
    assert_share(&run, "sleep_60", sleep / blocked, 60.0 / 90.0, allowed);
    assert_share(&run, "pipe_30", pipe / blocked, 30.0 / 90.0, allowed);
    // The blocks are charged to where they blocked, kernel frames included.
    run.check(
        profile.count_where(|f| {
            f.contains(&"sleep_60") && f.iter().any(|n| n.contains("nanosleep") && n.ends_with("_[k]"))
        }) > 0,
        "sleep_60's blocks show the kernel's nanosleep frames",
    );
    run.check(
        !profile.frames().iter().any(|f| f.starts_with("bpf_prog_") || f.starts_with("bpf_trace_run")),
        "the tracing path (bpf_prog_*, bpf_trace_run*) is no frame of a block",
    );
}

/// The same read() on the same pipe, from one helper (`ask_and_wait`) that two functions call
/// at the same depth: the thread stops with the same registers in the same system call each
/// time, and the profiler, which reuses a thread's last stacks when it stops where it stopped
/// before, must still tell pipe_20's 20 ms waits from pipe_10's 10 ms ones by their return
/// addresses. (Reusing on registers alone charged all of it to whichever came first.)
///
/// On a kernel with `sched_exit_tp` (Linux 6.16+) the return addresses are compared when the
/// thread runs again (`offcpu_switch_in`), only for blocks long enough to count, as all of these
/// are; this test runs that way, the way of older kernels (at every switch out), and with
/// `--min-block 0` (every stop counts, so the agent compares at the switch out then too).
#[test]
fn blocks_at_the_same_registers_from_two_callers_split_by_caller() {
    same_registers_from_two_callers("offcpu-same-site", None, None);
}

/// The same, with the return addresses compared at every switch out
/// (`EAGLE_OFFCPU_CHECK_SITES=switch-out`), as on a kernel without `sched_exit_tp`.
#[test]
fn blocks_at_the_same_registers_from_two_callers_split_by_caller_checked_at_switch_out() {
    same_registers_from_two_callers("offcpu-same-site-out", Some("switch-out"), None);
}

/// The same with no minimum duration: every stop counts, so the agent compares at the switch
/// out even where the kernel has `sched_exit_tp` (deferring would spare nothing and cost a
/// second program's work).
#[test]
fn blocks_at_the_same_registers_from_two_callers_split_by_caller_with_no_minimum() {
    same_registers_from_two_callers("offcpu-same-site-all", None, Some("0"));
}

/// Whether this kernel has the tracepoint at the end of the scheduler (its BTF names it).
fn kernel_has_sched_exit_tp() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux")
        .is_ok_and(|btf| btf.windows(b"btf_trace_sched_exit_tp".len()).any(|w| w == b"btf_trace_sched_exit_tp"))
}

fn same_registers_from_two_callers(name: &str, check_sites: Option<&str>, min_block: Option<&str>) {
    require_sampling!();
    let dir = TestDir::new(name);
    let waits = waits().to_str().expect("a UTF-8 path");
    let mut eagle = Eagle::cli(&dir)
        .arg("profile")
        .args(["--mode", "off-cpu", "-d", "6s", "-o", "off.folded"])
        .args(min_block.map(|m| ["--min-block", m]).iter().flatten())
        .args(["--", waits, "--same-site"])
        .output_file(dir.join("off.folded"));
    // The programs' own cost, as the benches read it (it changes nothing else), which also
    // says which programs ran.
    eagle.command_mut().env("EAGLE_PROGRAM_STATS", "1");
    if let Some(check_sites) = check_sites {
        eagle.command_mut().env("EAGLE_OFFCPU_CHECK_SITES", check_sites);
    }
    let run = eagle.run();
    run.assert_code(0);
    let costs = run.stderr_lines().into_iter().find(|l| l.contains("eBPF programs' own time"));
    run.check(
        costs.as_deref().is_some_and(|l| l.contains("offcpu_switch ") && l.contains("offcpu_wakeup ")),
        format!("EAGLE_PROGRAM_STATS=1 says what the scheduler's programs cost per run: {costs:?}"),
    );
    let at_switch_in = check_sites.is_none() && min_block != Some("0") && kernel_has_sched_exit_tp();
    run.check(
        costs.as_deref().is_some_and(|l| l.contains("offcpu_switch_in ") == at_switch_in),
        format!("the switch-in program runs exactly when sites are checked there ({at_switch_in}): {costs:?}"),
    );
    let profile = run.profile();
    let main = profile.filter(|frames| frames.contains(&"main") && !frames.iter().any(|f| is_wait_frame(f)));
    let (long, short) = (main.inclusive("pipe_20") as f64, main.inclusive("pipe_10") as f64);
    let blocked = long + short;
    // A round is 30 ms, all of it blocked; 40 rounds put one cut-off block of either at most
    // 1.7 points of the split.
    let rounds = blocked / 30_000.0;
    run.check(rounds >= 40.0, format!("only {rounds:.0} rounds of blocks under main: too few to judge a split"));
    run.check(
        main.inclusive("ask_and_wait") as f64 >= 0.99 * blocked,
        "both wait in ask_and_wait, under their own caller",
    );
    let allowed = 0.03;
    assert_share(&run, "pipe_20", long / blocked, 2.0 / 3.0, allowed);
    assert_share(&run, "pipe_10", short / blocked, 1.0 / 3.0, allowed);
}

#[test]
fn wall_clock_time_splits_sleep_pipe_and_cpu() {
    require_sampling!();
    let dir = TestDir::new("offcpu-wall");
    let hz = 499;
    let run = profile_waits(
        &dir,
        "wall.folded",
        &["--mode", "wall", "-f", &hz.to_string(), "-d", "10s", "--summary", "summary.json"],
    );
    run.assert_code(0);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary written"))
            .expect("summary is JSON");
    run.check(summary["unit"] == "wall-microseconds", format!("summary unit {}", summary["unit"]));
    run.check(summary["title"].as_str().is_some_and(|t| t.contains("wall-clock")), "the title says wall-clock");
    let profile = run.profile();
    let split = main_thread(&profile);
    let total: u64 = split.iter().map(|(_, t)| t).sum();
    let rounds = total as f64 / 100_000.0;
    run.check(rounds >= 30.0, format!("only {rounds:.0} rounds under main: too few to judge a split"));
    // In sampling periods: what the on-CPU share was sampled from (see the module's docs).
    let periods = total * hz / 1_000_000;
    for ((function, expected), (_, time)) in WAITS_SPLIT.iter().zip(&split) {
        let allowed = tolerance(0.03, *expected, periods);
        assert_share(&run, function, *time as f64 / total as f64, *expected, allowed);
    }
}

#[test]
fn checks_work_on_an_off_cpu_profile_and_units_do_not_mix() {
    require_sampling!();
    let dir = TestDir::new("offcpu-check");
    profile_waits(&dir, "off.folded", &["--mode", "off-cpu", "-d", "3s"]).assert_code(0);
    // Over half of the off-CPU time is sleep_60's (the helper thread's waits are the rest).
    let check = |rule: &str| Eagle::cli(&dir).args(["check", "off.folded", "--max", rule]).run();
    check("sleep_60=90%").assert_code(0);
    let broken = check("sleep_60=5%");
    broken.assert_code(1);
    broken.check(broken.stdout().contains("sleep_60"), "the broken rule names sleep_60");

    // A CPU profile of the same program is not compared with it: one line says why.
    std::fs::write(dir.join("cpu.folded"), "waits (1);main;cpu_10 50\n").expect("write");
    let diff = Eagle::cli(&dir).args(["diff", "cpu.folded", "off.folded", "-o", "d.svg"]).run();
    diff.assert_code(2);
    diff.check(
        diff.stderr().contains("cannot combine a profile in CPU samples with one in microseconds off-CPU"),
        "diff refuses profiles of different units",
    );
    let regression =
        Eagle::cli(&dir).args(["check", "off.folded", "--baseline", "cpu.folded", "--max-regression", "3pp"]).run();
    regression.assert_code(2);
    regression.check(regression.stderr().lines().filter(|l| l.contains("cannot combine")).count() == 1, "one line");
}
