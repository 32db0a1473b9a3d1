//! Local mode on a machine as it comes: nothing mounted by hand. Where PID 1 is no init system
//! (a minimal VM, a container, CI), tracefs is not mounted, and the sampler must not need it.
//!
//! Each test runs the real `kubectl-eagle` in a private mount namespace of its own whose tracefs
//! mounts (if the machine has any) are removed first, so the test means the same on a developer's
//! machine, where tracefs may be mounted, as on a fresh one.

use std::time::Duration;

use eagle_tests::{kubectl_eagle, require_sampling, Eagle, Run, TestDir, Workload};

/// `kubectl-eagle ARGS` without tracefs, then how many tracefs mounts its namespace has after it.
fn without_tracefs(dir: &TestDir, out: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
    let script = r#"
        for m in /sys/kernel/debug/tracing /sys/kernel/tracing; do umount "$m" 2>/dev/null; done
        if grep -q ' tracefs ' /proc/self/mountinfo; then echo "test: tracefs still mounted" >&2; exit 99; fi
        "$@"; rc=$?
        echo "tracefs mounts after the run: $(grep -c ' tracefs ' /proc/self/mountinfo)" >&2
        exit $rc"#;
    let mut eagle = Eagle::new("unshare", dir.path())
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(kubectl_eagle())
        .args(args)
        .timeout(Duration::from_secs(60))
        .output_file(dir.join(out));
    for (k, v) in env {
        eagle.command_mut().env(k, v);
    }
    eagle.run()
}

/// Profiles a parent that forks a short-lived child every 20 ms, for 3 s.
fn profile_forking_workload(dir: &TestDir, env: &[(&str, &str)]) -> (Run, usize) {
    let workload = Workload::groundtruth(&["--fork-every", "20", "--child-rounds", "4"]);
    let pid = format!("pid/{}", workload.pid());
    let run =
        without_tracefs(dir, "flame.folded", env, &["profile", "-d", "3s", "-f", "499", "-o", "flame.folded", &pid]);
    run.assert_code(0);
    let parent = format!("groundtruth ({})", workload.pid());
    let children = run.profile().by_root().keys().filter(|r| **r != parent).count();
    // A child every 20 ms for 3 s: most of them are followed from their first instruction by the
    // fork tracepoint, which is what must work without tracefs.
    run.check(children >= 15, format!("only {children} forked children sampled in 3s of a fork every 20ms"));
    run.check(
        run.stderr().contains("tracefs mounts after the run: 0"),
        "the run left a tracefs mount in its mount namespace",
    );
    (run, children)
}

#[test]
fn profiles_and_follows_children_without_tracefs() {
    require_sampling!();
    let dir = TestDir::new("no_tracefs");
    let (run, _) = profile_forking_workload(&dir, &[]);
    run.check(
        !run.stderr().contains("sampler-fallback") && !run.stderr().contains("not by BTF-typed tracepoints"),
        "a kernel with BTF fell back to tracefs",
    );
}

/// On a kernel without BTF the classic tracepoints need tracefs: the agent mounts it in a mount
/// namespace of its own thread, says so, and leaves the caller's mounts as they were.
#[test]
fn without_btf_the_agent_mounts_tracefs_privately() {
    require_sampling!();
    let dir = TestDir::new("private_tracefs");
    let (run, _) = profile_forking_workload(&dir, &[("EAGLE_AGENT_FORCE_TRACEFS", "1")]);
    run.check(
        run.stderr().contains("through a tracefs the agent mounted privately"),
        "no warning that the fork tracepoint went through a privately mounted tracefs",
    );
}
