//! Time runnable but not running, end to end with the real binary: throttled by a cgroup's CPU
//! limit, and waiting for a CPU.
//!
//! The workload is runq (images/runq), whose threads never block: a thread of it is on a CPU or
//! runnable all along. Neither case is sampled: each wait is measured whole, from the switch
//! (or wake-up) to the switch back in, so there is no sampling noise to derive a tolerance
//! from; what can differ from the ground truth is where the two clocks start and stop.
//!
//! - Throttling: one spinning thread in a cgroup limited to 200m (cgroup v1 `cfs_quota_us =
//!   20000` per `cfs_period_us = 100000`, made by the test and removed after it). The kernel's
//!   own count is the cgroup's `throttled_time` over the window, which the agent reads as the
//!   window starts and ends (`info-cgroup-cpu`, the summary's `cgroups`); the time the profile
//!   shows under `[throttled by its cgroup's CPU limit]` must be within 10 % of it. The two
//!   differ at the window's edges only: the cgroup adds a throttled period when it ends (one
//!   under way at the start counts whole, one under way at the end not at all), the profile
//!   counts from the start to the end (a period of 100 ms at most at either edge; the window
//!   is 15 s, in which a 200m busy loop is throttled seconds even on a loaded machine).
//! - Waiting for a CPU: two spinning threads pinned to one CPU, each on the CPU about half the
//!   time (less on a busy machine, whose other work shares that CPU too). The ground truth is
//!   each thread's own wall-clock time minus its CPU time, which runq prints at its end: the
//!   profile, which covers the command's whole life, must show that within 3 % of the threads'
//!   wall-clock time (the start-up and exit of threads, a few milliseconds, are all the clocks
//!   may disagree on).

use eagle_proto::{THROTTLED_FRAME, WAITING_FRAME};
use eagle_tests::{require_sampling, runq, skip, ContainerCgroupView, Eagle, LimitedCgroup, Run, TestDir, Workload};

fn summary(dir: &TestDir) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary written"))
        .expect("summary is JSON")
}

/// Microseconds under each of the two frames, innermost, among stacks through `spin`.
fn runnable_time(run: &Run) -> (u64, u64) {
    let profile = run.profile();
    let under = |leaf: &str| profile.count_where(|f| f.last() == Some(&leaf) && f.contains(&"spin"));
    (under(THROTTLED_FRAME), under(WAITING_FRAME))
}

#[test]
fn throttled_time_matches_the_cgroups_own_count() {
    require_sampling!();
    let cgroup = match LimitedCgroup::create(200) {
        Ok(c) => c,
        Err(reason) => return skip(&reason),
    };
    throttled_time_of_a_200m_loop(cgroup, None);
}

/// As a Job's agent sees the cgroups (hostPID, privileged): the hierarchies under
/// /sys/fs/cgroup are its own group bound there, so the workload's group does not show, and
/// `/proc/1/root` may be refused (it is on this machine, and was on the lab, where cluster runs
/// had an empty `cgroups`). The agent mounts the hierarchy itself, says so, and reads the
/// workload's counters as it does with the whole view.
#[test]
fn throttled_time_is_read_where_the_agent_sees_only_its_own_group() {
    require_sampling!();
    let (cgroup, view) = match LimitedCgroup::create(200).and_then(|c| Ok((c, ContainerCgroupView::create()?))) {
        Ok(both) => both,
        Err(reason) => return skip(&reason),
    };
    let run = throttled_time_of_a_200m_loop(cgroup, Some(&view));
    run.check(
        run.stderr().contains("through a private, read-only mount of the cpu hierarchy")
            && run.stderr().contains(&format!("shows {}", view.path)),
        "the run says which view of the cgroups it read, and what it saw instead",
    );
}

/// A busy loop in `cgroup` (limited to 200m) profiled off the CPU, from the whole view of the cgroups or
/// confined to a container's `view`; checks the summary's `cgroups` against the graph.
fn throttled_time_of_a_200m_loop(cgroup: LimitedCgroup, view: Option<&ContainerCgroupView>) -> Run {
    let dir = TestDir::new("throttle-200m");
    // At the highest priority of the fair class, so that the loop gets its 20 ms of each period
    // however busy the machine (a starved loop is not throttled: it never reaches its quota).
    // Not a real-time class: those are not throttled by CFS bandwidth at all.
    let runq = runq().to_str().expect("a UTF-8 path");
    let workload =
        Workload::start(std::process::Command::new("nice").args(["-n", "-20", runq, "spin", "--seconds", "60"]));
    cgroup.add(workload.pid());
    let pid = workload.pid().to_string();
    let path = cgroup.path.clone();
    let mut eagle = Eagle::cli(&dir)
        .arg("profile")
        .arg(format!("pid/{pid}"))
        .args(["--mode", "off-cpu", "-d", "15s", "-o", "off.folded", "--summary", "summary.json"])
        .output_file(dir.join("off.folded"));
    if let Some(view) = view {
        view.confine(eagle.command_mut());
    }
    let run = eagle.run();
    drop(workload);
    drop(cgroup);
    run.assert_code(0);
    let summary = summary(&dir);
    let cgroups = summary["cgroups"].as_array().cloned().unwrap_or_default();
    let Some(ours) = cgroups.iter().find(|c| c["cgroup"] == path.as_str()) else {
        run.check(false, format!("the summary names the workload's cgroup: {}", summary["cgroups"]));
        return run;
    };
    run.check(ours["limit_millicores"] == 200, format!("the cgroup's limit reads 200m: {ours}"));
    let kernel = ours["throttled_seconds"].as_f64().expect("throttled_seconds");
    let measured = ours["measured_throttled_seconds"].as_f64().expect("measured_throttled_seconds");
    let (throttled_us, _) = runnable_time(&run);
    run.check(
        (throttled_us as f64 / 1e6 - measured).abs() < 0.001,
        format!("the summary's measured {measured:.3} s is the graph's {throttled_us} µs above spin"),
    );
    eprintln!(
        "throttled: {measured:.3} s by the profile, {kernel:.3} s by the cgroup's throttled_time; waiting for a CPU {} s",
        ours["measured_waiting_seconds"]
    );
    // A busy loop limited to 200m is throttled whenever it gets its 20 ms of a period: most of
    // the window on an idle machine, less where real-time work (benchmarks under `chrt`) takes
    // the CPUs first (once 5 ms in 15 s, the loop waiting for a CPU 12.9 s of them). The
    // comparison needs throttling to have happened, not an amount of it: the two counts differ
    // by at most the periods under way at the window's edges, which a starved loop does not
    // reach either.
    run.check(kernel > 0.0, format!("the cgroup was not throttled at all in a 15 s window: {ours}"));
    run.check(
        (measured - kernel).abs() <= 0.10 * kernel,
        format!(
            "throttled {measured:.3} s by the profile, {kernel:.3} s by the cgroup's throttled_time: not within 10 %"
        ),
    );
    run.check(ours["nr_throttled"].as_u64().is_some_and(|n| n > 0), format!("nr_throttled over the window: {ours}"));
    run.check(
        run.stderr().contains("throttled in") && !run.stderr().contains("[cgroup-cpu"),
        "the cgroup's counters are said on stderr, for people",
    );
    run
}

#[test]
fn two_threads_on_one_cpu_each_wait_about_half_the_time() {
    require_sampling!();
    let dir = TestDir::new("runq-pinned");
    let runq = runq().to_str().expect("a UTF-8 path");
    let run = Eagle::cli(&dir)
        .arg("profile")
        .args(["--mode", "wall", "--min-block", "0", "-o", "wall.folded"])
        .args(["--", runq, "spin", "--threads", "2", "--cpu", "0", "--seconds", "8"])
        .output_file(dir.join("wall.folded"))
        .run();
    run.assert_code(0);
    // runq: thread I cpu S s wall S s
    let threads: Vec<(f64, f64)> = run
        .stderr_lines()
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.strip_prefix("runq: thread ")?.split_whitespace().collect();
            Some((f.get(2)?.parse().ok()?, f.get(5)?.parse().ok()?))
        })
        .collect();
    run.check(threads.len() == 2, format!("runq reported its two threads: {threads:?}"));
    let wall: f64 = threads.iter().map(|(_, w)| w).sum();
    let expected: f64 = threads.iter().map(|(cpu, w)| w - cpu).sum();
    let (throttled_us, waiting_us) = runnable_time(&run);
    let measured = (throttled_us + waiting_us) as f64 / 1e6;
    eprintln!("waiting: {measured:.3} s by the profile, {expected:.3} s by runq's clocks, of {wall:.3} s");
    run.check(
        (measured - expected).abs() <= 0.03 * wall,
        format!(
            "the threads waited {measured:.3} s by the profile and {expected:.3} s by their own clocks (wall {wall:.3} s less CPU): not within 3 % of {wall:.3} s"
        ),
    );
    // Each thread shares its CPU with the other: at least about half its time is waiting.
    run.check(expected >= 0.45 * wall, format!("the pinned threads waited only {expected:.3} s of {wall:.3} s"));
    run.check(
        throttled_us == 0 || (throttled_us as f64) < 0.01 * wall * 1e6,
        "nothing limits runq here: no throttling",
    );
}
