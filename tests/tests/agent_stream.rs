//! The `eagle-agent` binary on its own, as a profiling Job runs it: its stdout is the result
//! stream that the CLI decodes from a pod log, so these tests decode it with the same
//! `eagle_proto::Decoder` and check what the CLI relies on.

use std::time::Duration;

use eagle_proto::{Decoder, Event, NodeResult};
use eagle_tests::{cpu_seconds, require_sampling, Eagle, Profile, Run, TestDir, Workload};

/// Decodes the agent's stdout line by line, as the CLI does with a pod log; returns the events
/// in order and the verified result.
fn decode(run: &Run) -> (Vec<Event>, NodeResult) {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for line in run.stdout().lines() {
        match decoder.feed_line(line) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => panic!("a line on stdout that is not the stream's: {line:?}{}", run.diagnostics()),
            Err(e) => panic!("the stream does not decode: {e}{}", run.diagnostics()),
        }
    }
    let result = decoder.finish().unwrap_or_else(|e| panic!("the stream does not verify: {e}{}", run.diagnostics()));
    (events, result)
}

/// Records of a result as folded stacks, with each process as its root.
fn folded(result: &NodeResult) -> Profile {
    let mut profile = Profile::default();
    for r in &result.records {
        let mut frames = vec![format!("{} ({})", r.process, r.pid)];
        frames.extend(r.frames.iter().cloned());
        profile.folded.add(&frames, r.count);
    }
    profile
}

#[test]
fn stream_of_a_pid_has_header_progress_payload_and_trailer() {
    require_sampling!();
    let dir = TestDir::new("agent_pid");
    let workload = Workload::groundtruth(&["--threads", "2"]);
    let pid = workload.pid();
    let cpu_before = cpu_seconds(pid);
    let run = Eagle::agent(&dir)
        .args(["--target", &format!("pid:{pid}"), "--duration-ms", "2000", "--frequency", "199", "--node", "test-node"])
        .timeout(Duration::from_secs(30))
        .run();
    run.assert_code(0);
    let (events, result) = decode(&run);

    run.check(matches!(events.first(), Some(Event::Header(_))), "the stream does not start with its header");
    run.check(matches!(events.last(), Some(Event::Trailer(_))), "the stream does not end with its trailer");
    let h = &result.header;
    run.check(h.node == "test-node" && h.frequency_hz == 199 && h.duration_ms == 2000, format!("header: {h:?}"));
    run.check(h.agent_version == env!("CARGO_PKG_VERSION"), format!("agent version {}", h.agent_version));
    run.check(!h.kernel.is_empty() && h.started_unix_ms > 0, format!("header: {h:?}"));
    run.check(
        h.targets.len() == 1 && h.targets[0].target == format!("pid:{pid}") && h.targets[0].pids == [pid],
        format!("header targets: {:?}", h.targets),
    );

    let progress: Vec<_> =
        events.iter().filter_map(|e| if let Event::Progress(p) = e { Some(p.clone()) } else { None }).collect();
    run.check(!progress.is_empty(), "no progress in a 2s window");
    run.check(
        progress.windows(2).all(|w| w[0].elapsed_ms < w[1].elapsed_ms && w[0].samples <= w[1].samples),
        "progress goes backwards",
    );
    // Once a second, while sampling: within the agent's own lifetime, one process each time.
    let lifetime = run.elapsed.as_millis() as u64;
    run.check(progress.iter().all(|p| p.processes == 1 && p.elapsed_ms < lifetime), format!("progress: {progress:?}"));

    let t = &result.trailer;
    let summed: u64 = result.records.iter().map(|r| r.count).sum();
    run.check(
        t.samples == summed && t.stacks == result.records.len() as u64,
        format!("trailer {t:?} vs {summed} samples in the records"),
    );
    run.check(
        result.records.iter().all(|r| r.pid == pid && r.process == "groundtruth" && r.sampler == "ebpf"),
        "records of another process or sampler",
    );
    run.check(result.records.iter().all(|r| r.container.is_none()), "a host process placed in a container");
    let warnings: Vec<_> = result.warnings.iter().filter(|w| !w.code.is_info()).collect();
    run.check(warnings.is_empty(), format!("warnings: {warnings:?}"));
    // 2 threads for 2 s at 199 Hz: up to ~800 samples; a busy machine gives fewer, so the
    // count is checked against the CPU time the process had, and the split's tolerance
    // follows the count.
    let cpu = cpu_seconds(pid) - cpu_before;
    let ratio = t.samples as f64 / (cpu * 199.0);
    run.check(
        (0.65..=1.1).contains(&ratio),
        format!(
            "{} samples, where the {cpu:.2}s of CPU the process used during the run make {:.0}",
            t.samples,
            cpu * 199.0
        ),
    );
    let profile = folded(&result);
    run.check(profile.working() >= 100, format!("only {} samples in cpu_*", profile.working()));
    if let Some(error) = profile.split_error(0.03) {
        run.check(false, error);
    }
}

#[test]
fn stream_of_a_container_without_processes_is_complete_and_empty() {
    require_sampling!();
    let dir = TestDir::new("agent_no_container");
    let id = "0123456789abcdef".repeat(4);
    let run = Eagle::agent(&dir)
        .args(["--target", &format!("container:containerd://{id}"), "--duration-ms", "1000", "--frequency", "99"])
        .timeout(Duration::from_secs(30))
        .run();
    run.assert_code(0);
    let (_, result) = decode(&run);
    let targets = &result.header.targets;
    run.check(
        targets.len() == 1 && targets[0].target == format!("container:{id}") && targets[0].pids.is_empty(),
        format!("header targets: {targets:?}"),
    );
    let codes: Vec<&str> = result.warnings.iter().map(|w| w.code.as_str()).collect();
    run.check(codes == ["no-processes"], format!("warnings: {:?}", result.warnings));
    run.check(result.warnings[0].message.contains(&id), "the warning does not name the container");
    run.check(
        result.trailer.samples == 0 && result.records.is_empty() && result.trailer.stacks == 0,
        format!("trailer: {:?}", result.trailer),
    );
}

#[test]
fn agent_refuses_bad_arguments_with_usage() {
    let dir = TestDir::new("agent_usage");
    for args in [
        &["--target", "pid:0"][..],
        &["--target", "pid:1", "--frequency", "many"],
        &["--bogus", "x"],
        &["--frequency", "99"],
    ] {
        let run = Eagle::agent(&dir).args(args).timeout(Duration::from_secs(20)).run();
        run.assert_code(2);
        run.check(run.stdout.is_empty(), "a stream was written for a bad command line");
        run.check(!run.stderr().contains("panicked"), "it panicked");
    }
}
