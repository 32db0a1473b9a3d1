//! Runtimes, detected per process and profiled with the real toolchains: Go (native, eBPF),
//! py-spy for Python, the JIT's perf map for Java (Java 17 here) and Node.js, rbspy for Ruby.
//! Each workload spends known shares of CPU in known functions (images/).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use eagle_proto::FoldedStacks;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eagle-runtimes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real interpreter binary (not a version manager's shim script), or why there is none.
fn python() -> Result<PathBuf, String> {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output();
    match out {
        Ok(o) if o.status.success() => Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
        _ => Err("python3 is not installed".into()),
    }
}

fn has_py_spy() -> bool {
    Command::new("py-spy").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Kills the workload when the test ends, however it ends.
struct Workload(Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command, warmup: Duration) -> Workload {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(warmup);
    Workload(child)
}

/// [`start`], returning once the process has used `cpu` of CPU time (or after four times that
/// in wall time): a JIT's tiers are what the split's truth assumes settled, and a loaded machine
/// gives a process a fraction of the wall-clock warm-up (Node.js read cpu10 at 14.8 % of 784
/// samples, 1.5 s after its start, while a build ran beside it).
fn start_warm(cmd: &mut Command, cpu: Duration) -> Workload {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let used = || Duration::from_secs_f64(eagle_tests::cpu_seconds(pid));
    let deadline = std::time::Instant::now() + cpu * 4;
    while used() < cpu && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Workload(child)
}

fn profile(args: &[&str], env_path: Option<&str>) -> Output {
    let mut cmd = Command::new(eagle_tests::kubectl_eagle());
    cmd.arg("profile").args(args);
    if let Some(path) = env_path {
        cmd.env("PATH", path);
    }
    let out = cmd.output().unwrap();
    eprintln!("kubectl-eagle profile {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// Inclusive share, in percent, of samples with a frame for which `matches` holds.
fn share(folded: &FoldedStacks, matches: impl Fn(&str) -> bool) -> f64 {
    let hits: u64 = folded.iter().filter(|(s, _)| s.split(';').any(&matches)).map(|(_, c)| c).sum();
    hits as f64 * 100.0 / folded.total().max(1) as f64
}

fn read(path: &Path) -> FoldedStacks {
    FoldedStacks::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The known split (60/30/10 %) within the project's rule for every runtime
/// ([`eagle_tests::tolerance`]: 3 points, or the sampling noise of the samples there are).
/// How precise the agent says an interpreted process's shares are: its stacks were read by the
/// runtime's sampler and weighed by CPU time, and reads of unequal weight are worth fewer
/// samples (`info-precision`: Kish's effective sample size). The tolerance is judged on that.
/// Where each thread's reads weigh that thread's measured CPU time (Flight Recorder), the agent
/// also says how precise the split within the busiest thread is: the known splits here are all
/// within one thread, so that is the figure they are judged on (one read of a thread that
/// started Flight Recorder can carry a sixth of a JVM's time and make the whole look as precise
/// as 13 samples, but it does not make the main thread's split any less precise).
fn reported_precision(stderr: &[u8]) -> Option<u64> {
    let figure = |s: &str| s.split(' ').next()?.parse().ok();
    String::from_utf8_lossy(stderr).lines().find_map(|l| {
        let (_, rest) = l.split_once("shares as precise as ")?;
        match rest.split_once("within its busiest thread, ") {
            Some((_, thread)) => figure(thread.split_once("as precise as ")?.1),
            None => figure(rest),
        }
    })
}

/// [`assert_split`] of an interpreted process, with the precision its run reported.
fn assert_interpreted_split(folded: &FoldedStacks, names: [&str; 3], stderr: &[u8]) {
    assert_split_within(folded, names, reported_precision(stderr));
}

fn assert_split(folded: &FoldedStacks, names: [&str; 3]) {
    assert_split_within(folded, names, None)
}

fn assert_split_within(folded: &FoldedStacks, names: [&str; 3], precision: Option<u64>) {
    // Shares among the samples of the interpreted code itself: the process's other threads
    // (a JVM's compiler and GC threads) are not part of the known split.
    let in_code = |s: &str| names.iter().any(|n| s.contains(n));
    let code: FoldedStacks = {
        let mut f = FoldedStacks::new();
        for (stack, count) in folded.iter().filter(|(s, _)| s.split(';').any(in_code)) {
            f.add_joined(stack.to_owned(), count);
        }
        f
    };
    // A floor, not the tolerance (which widens with fewer samples): on a two-core machine with a
    // load of 15, a JVM got 84 samples in 8 s at 99 Hz.
    assert!(code.total() >= 50, "{} samples in the known functions: too few to judge", code.total());
    // All three shares first: a failure names one, and the others tell where its samples went.
    let shares: Vec<f64> = names.iter().map(|name| share(&code, |f| f.contains(name))).collect();
    eprintln!("split: {shares:.1?} of {} samples (precision {precision:?})", code.total());
    for ((name, expected), got) in names.iter().zip([60.0, 30.0, 10.0]).zip(shares) {
        let samples = precision.map_or(code.total(), |p| p.min(code.total()));
        let tolerance = eagle_tests::tolerance(0.03, expected / 100.0, samples) * 100.0;
        assert!(
            (got - expected).abs() <= tolerance,
            "{name}: {got:.1}% of {} samples (as precise as {samples}), expected {expected}±{tolerance:.1}",
            code.total()
        );
    }
}

/// The Python ground truth at `hz`: py-spy's library reads the frames, and the process's CPU
/// clock weighs each read, so time the process spent waiting for a CPU (on this shared machine)
/// does not pile onto the function it waited in.
fn python_split_at(hz: &str, window: &str) {
    let Ok(python) = python() else {
        eagle_tests::skip("needs python3");
        return;
    };
    let dir = temp_dir(&format!("python-{hz}"));
    let w = start(
        Command::new(&python).arg(eagle_tests::repo_root().join("images/python/groundtruth.py")),
        Duration::from_millis(500),
    );
    let pid = format!("pid/{}", w.0.id());
    let out_path = dir.join("py.folded");
    let out = profile(&[&pid, "-d", window, "-f", hz, "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let folded = read(&out_path);
    assert!(folded.iter().all(|(s, _)| s.contains(" [py]")), "every stack is Python, tagged [py]");
    assert!(folded.iter().any(|(s, _)| s.contains("cpu_60 (groundtruth.py) [py]")));
    assert_interpreted_split(&folded, ["cpu_60 (", "cpu_30 (", "cpu_10 ("], &out.stderr);
}

#[test]
fn python_is_detected_and_profiled_with_real_function_names() {
    python_split_at("499", "4s");
}

#[test]
fn python_split_holds_at_99_hz() {
    python_split_at("99", "8s");
}

/// One unit in one graph: a Python process that gets half a CPU weighs half a CPU, beside a
/// native process on the same CPU, as their CPU clocks say over the sampling window (a
/// wall-clock sampler gives the Python process twice the native one's width: it is runnable
/// all the time). The agent is run on its own, whose stream's header says when the window
/// began: py-spy's reads pause the Python process in the window only, so the CPU time of the
/// whole command (the agent's start-up, seconds on a loaded machine, included) splits
/// differently from the window's.
#[test]
fn python_weighs_the_cpu_time_it_used_beside_native_code() {
    let Ok(python) = python() else {
        eagle_tests::skip("needs python3");
        return;
    };
    let dir = eagle_tests::TestDir::new("python-cpu");
    // Both on one CPU: each gets about half of it, whatever else runs on the machine.
    let py = start(
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(&python)
            .arg(eagle_tests::repo_root().join("images/python/groundtruth.py")),
        Duration::from_millis(300),
    );
    let sh = start(Command::new("taskset").args(["-c", "0", "sh", "-c", "while :; do :; done"]), Duration::ZERO);
    std::thread::sleep(Duration::from_millis(200));
    let (py_pid, sh_pid) = (py.0.id(), sh.0.id());
    let cpu_log = eagle_tests::CpuLog::start(&[py_pid, sh_pid]);
    let run = eagle_tests::Eagle::agent(&dir)
        .args(["--target", &format!("pid:{py_pid}"), "--target", &format!("pid:{sh_pid}")])
        .args(["--duration-ms", "4000", "--frequency", "499"])
        .run();
    let cpu_log = cpu_log.finish();
    run.assert_code(0);
    let (_, result) = run.stream();
    let h = &result.header;
    let window = (h.started_unix_ms, h.started_unix_ms + h.duration_ms);
    let used = (cpu_log.used(0, window.0, window.1), cpu_log.used(1, window.0, window.1));
    let sampled = |pid: u32| result.records().iter().filter(|r| r.pid == pid).map(|r| r.count).sum::<u64>();
    let (py_samples, sh_samples) = (sampled(py_pid), sampled(sh_pid));
    run.check(
        result.records().iter().any(|r| r.pid == py_pid && r.sampler == "py-spy"),
        "the Python process's stacks come from py-spy",
    );
    run.check(py_samples > 0 && sh_samples > 0, format!("both sampled: python {py_samples}, sh {sh_samples}"));
    // Python's share of the two, in samples and in CPU time over the window, within the
    // project's tolerance for the samples there are.
    let samples = py_samples + sh_samples;
    let sampled_share = py_samples as f64 / samples as f64;
    let cpu_share = used.0 / (used.0 + used.1);
    let tolerance = eagle_tests::tolerance(0.03, cpu_share, samples);
    eprintln!(
        "python: {:.1}% of {samples} samples, {:.1}±{:.1}% of the window's CPU time",
        sampled_share * 100.0,
        cpu_share * 100.0,
        tolerance * 100.0
    );
    run.check(
        (sampled_share - cpu_share).abs() <= tolerance,
        format!(
            "python's share: {:.1}% of the samples ({py_samples}/{samples}), {:.1}±{:.1}% of the CPU time in the window ({:.3}s python, {:.3}s sh)",
            sampled_share * 100.0,
            cpu_share * 100.0,
            tolerance * 100.0,
            used.0,
            used.1
        ),
    );
}

/// Each stack weighs the CPU time of the thread it shows: a Python process with one busy thread
/// (`cpu_busy`) and two that wait (`idle_wait`, waking every millisecond, so py-spy sometimes
/// finds them runnable) shows the waiting threads at ~0 %, not at the share of the process's
/// CPU time an even split among the runnable threads would give them. At 99 Hz: each read
/// stops every thread of the process (py-spy's lock, against torn stacks), which costs a
/// waiting thread about 35 us of CPU each time; at 499 Hz the two waiting threads really
/// used 5 % of the process's CPU time that way, and the graph shows it.
#[test]
fn python_threads_weigh_their_own_cpu_time() {
    let Ok(python) = python() else {
        eagle_tests::skip("needs python3");
        return;
    };
    let dir = temp_dir("python-threads");
    let w = start(
        Command::new(&python).arg(eagle_tests::repo_root().join("images/python/threads.py")),
        Duration::from_millis(500),
    );
    let out_path = dir.join("threads.folded");
    let out = profile(&[&format!("pid/{}", w.0.id()), "-d", "6s", "-f", "99", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let folded = read(&out_path);
    let samples = reported_precision(&out.stderr).map_or(folded.total(), |p| p.min(folded.total()));
    assert!(samples >= 50, "{} samples (as precise as {samples}): too few to judge", folded.total());
    let idle = share(&folded, |f| f.starts_with("idle_wait ("));
    let busy = share(&folded, |f| f.starts_with("cpu_busy ("));
    let tolerance = eagle_tests::tolerance(0.03, 0.0, samples) * 100.0;
    assert!(idle <= tolerance, "idle_wait: {idle:.1}% of {} samples, expected 0+{tolerance:.1}", folded.total());
    assert!(
        busy >= 100.0 - tolerance,
        "cpu_busy: {busy:.1}% of {} samples, expected 100-{tolerance:.1}",
        folded.total()
    );
}

#[test]
fn go_is_detected_and_named_from_its_symbol_table() {
    if !Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()) {
        eagle_tests::skip("needs go (scripts/setup.sh installs golang-go)");
        return;
    }
    let dir = temp_dir("go");
    let bin = dir.join("groundtruth-go");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(eagle_tests::repo_root().join("images/go"))
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .status()
        .unwrap();
    assert!(build.success(), "go build images/go");
    let w = start(&mut Command::new(&bin), Duration::from_millis(300));
    let pid = format!("pid/{}", w.0.id());
    let out_path = dir.join("go.folded");
    let out = profile(&[&pid, "-d", "3s", "-f", "499", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains(": go, sampled by ebpf"), "detected as Go");
    let folded = read(&out_path);
    assert!(
        folded.iter().any(|(s, _)| s.contains("runtime.main;main.main;main.cpu60;main.spin")),
        "whole Go stacks, named from the binary's symbol table"
    );
    assert_split(&folded, ["main.cpu60", "main.cpu30", "main.cpu10"]);
}

fn has_java() -> bool {
    let has = |c: &str| Command::new(c).arg("-version").output().is_ok_and(|o| o.status.success());
    let jattach = Command::new("jattach").output().is_ok();
    if !has("javac") || !has("java") || !jattach {
        eagle_tests::skip("needs javac, java and jattach (scripts/setup.sh installs them)");
        return false;
    }
    true
}

/// images/java compiled into `dir`.
fn compile_java(dir: &Path) {
    let javac = Command::new("javac")
        .arg("-d")
        .arg(dir)
        .arg(eagle_tests::repo_root().join("images/java/GroundTruth.java"))
        .status()
        .unwrap();
    assert!(javac.success());
}

/// Recordings of Flight Recorder still running in the JVM `pid` (`JFR.check`).
fn jfr_recordings(pid: u32) -> String {
    let out = Command::new("jattach").args([&pid.to_string(), "jcmd", "JFR.check"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("Recording ")).collect::<Vec<_>>().join("\n")
}

/// A JVM started plainly, as in production (no -XX:+PreserveFramePointer): whole Java stacks
/// from Flight Recorder, attached at run time, weighed in CPU time; no recording or file left.
fn java_split_at(hz: &str, window: &str) {
    if !has_java() {
        return;
    }
    let dir = temp_dir(&format!("java-{hz}"));
    compile_java(&dir);
    // Warm up: the split holds once the JIT has compiled the hot methods (at 3 s its compiler
    // threads were still busy, and the first profile read cpu60 2.6 points high).
    let w = start(Command::new("java").arg("-cp").arg(&dir).arg("GroundTruth"), Duration::from_secs(6));
    let pid = w.0.id();
    let out_path = dir.join("java.folded");
    let out = profile(&[&format!("pid/{pid}"), "-d", window, "-f", hz, "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(": java, sampled by jfr"), "the report says which sampler ran: {stderr}");
    let folded = read(&out_path);
    assert!(
        folded.iter().any(|(s, _)| s.contains("GroundTruth.main(java.lang.String[]) [java]_[j];GroundTruth.cpu60(long) [java]_[j];GroundTruth.spin(long) [java]")),
        "whole Java stacks, named and tagged"
    );
    assert_interpreted_split(&folded, ["GroundTruth.cpu60", "GroundTruth.cpu30", "GroundTruth.cpu10"], &out.stderr);
    assert_eq!(jfr_recordings(pid), "", "no recording left running in the JVM");
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("eagle-")
                && e.file_name().to_string_lossy().ends_with(&format!("-{pid}.jfr"))
        })
        .collect();
    assert!(left.is_empty(), "the recording's file is deleted: {left:?}");
}

/// 8 s, as at 99 Hz: starting Flight Recorder takes seconds of a starved JVM's window and of its
/// CPU time (at a load of 18, a 4 s window left fewer than 50 samples in the known functions).
#[test]
fn java_started_plainly_shows_whole_stacks_from_flight_recorder() {
    java_split_at("499", "8s");
}

#[test]
fn java_split_holds_at_99_hz() {
    java_split_at("99", "8s");
}

/// Flight Recorder samples each thread that runs Java code on a timer, also while it waits for a
/// CPU: its samples give each thread's stacks, and each thread's weighs the CPU time the thread
/// used (images/java/Threads.java: a `busy` thread and a `bursty` one that works about a fifth of
/// the time). Each function must read its thread's share of the two threads' CPU time in the
/// window (their `schedstat`), within the project's tolerance for the samples of the graph:
/// each function is all of its thread's Java code, and a thread's share comes from its clock,
/// not from Flight Recorder's samples. The agent is run on its own, whose stream's header says
/// when the window began; at 499 Hz and for 10 s, so that a JVM that gets a tenth of a CPU on a
/// loaded machine still has samples to judge (starting a recording took it over 6 s at a load
/// of 15).
#[test]
fn java_threads_weigh_their_own_cpu_time() {
    if !has_java() {
        return;
    }
    let dir = eagle_tests::TestDir::new("java-threads-cpu");
    let javac = Command::new("javac")
        .arg("-d")
        .arg(dir.path())
        .arg(eagle_tests::repo_root().join("images/java/Threads.java"))
        .status()
        .unwrap();
    assert!(javac.success());
    // In the test's directory: attaching makes the JVM create `.attach_pid<PID>` in its own.
    let w = start(
        Command::new("java").arg("-cp").arg(dir.path()).arg("Threads").current_dir(dir.path()),
        Duration::from_secs(2),
    );
    let pid = w.0.id();
    let busy = thread_named(pid, "busy", Duration::from_secs(20)).expect("Threads.java names its threads");
    let bursty = thread_named(pid, "bursty", Duration::from_secs(20)).expect("Threads.java names its threads");
    let cpu_log = eagle_tests::CpuLog::start_threads(pid, &[busy, bursty]);
    let run = eagle_tests::Eagle::agent(&dir)
        .args(["--target", &format!("pid:{pid}"), "--duration-ms", "10000", "--frequency", "499"])
        .run();
    let cpu_log = cpu_log.finish();
    run.assert_code(0);
    let (_, result) = run.stream();
    run.check(
        result.records().iter().any(|r| r.pid == pid && r.sampler == "jfr"),
        "the JVM's stacks come from Flight Recorder",
    );
    let h = &result.header;
    let window = (h.started_unix_ms, h.started_unix_ms + h.duration_ms);
    let (busy_cpu, bursty_cpu) = (cpu_log.used(0, window.0, window.1), cpu_log.used(1, window.0, window.1));
    let (in_busy, in_bursty) = (samples_in(&result, pid, "Threads.busy("), samples_in(&result, pid, "Threads.bursty("));
    let samples = in_busy + in_bursty;
    run.check(samples >= 50, format!("{samples} samples in the two threads' functions: too few to judge"));
    let precision = samples;
    let expected = bursty_cpu / (busy_cpu + bursty_cpu);
    let got = in_bursty as f64 / samples.max(1) as f64;
    let tolerance = eagle_tests::tolerance(0.03, expected, precision);
    eprintln!(
        "bursty: {:.1}% of {samples} samples (as precise as {precision}), its share of the CPU time {:.1}±{:.1}% ({bursty_cpu:.3}s of {:.3}s)",
        got * 100.0,
        expected * 100.0,
        tolerance * 100.0,
        busy_cpu + bursty_cpu
    );
    run.check(
        (got - expected).abs() <= tolerance,
        format!(
            "Threads.bursty: {:.1}% of {samples} samples (as precise as {precision}), expected its thread's share of the CPU time, {:.1}±{:.1}% (busy {busy_cpu:.3}s, bursty {bursty_cpu:.3}s)",
            got * 100.0,
            expected * 100.0,
            tolerance * 100.0
        ),
    );
    assert_eq!(jfr_recordings(pid), "", "no recording left running in the JVM");
}

/// A JVM's threads outside Java code (its JIT compilers, its GC, Flight Recorder's sampler),
/// which Flight Recorder does not sample, are shown under their names with the native stacks
/// eBPF took of each, not as one opaque frame. Attaching Flight Recorder loads its Java code,
/// so the compiler threads of a plain `java` are busy in the window.
#[test]
fn jvm_threads_outside_java_code_show_their_names_and_native_stacks() {
    if !has_java() {
        return;
    }
    let dir = temp_dir("java-threads");
    compile_java(&dir);
    let w = start(Command::new("java").arg("-cp").arg(&dir).arg("GroundTruth"), Duration::from_secs(1));
    let pid = w.0.id();
    let out_path = dir.join("threads.folded");
    let out = profile(&[&format!("pid/{pid}"), "-d", "8s", "-f", "499", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(": java, sampled by jfr"), "Flight Recorder took the JVM in the window: {stderr}");
    let folded = read(&out_path);
    let outside: Vec<(&str, u64)> =
        folded.iter().filter(|(s, _)| s.contains("(JVM thread outside Java code)")).collect();
    let compiling = outside.iter().filter(|(s, _)| {
        let frames: Vec<&str> = s.split(';').collect();
        let thread = frames.iter().position(|f| f.ends_with("(JVM thread outside Java code)"));
        thread.is_some_and(|i| {
            frames[i].contains("CompilerThre") && frames[i + 1..].iter().any(|f| f.starts_with("CompileBroker::"))
        })
    });
    assert!(
        compiling.count() > 0,
        "a compiler thread, named, with the native frames of its compiler under it: {outside:#?}"
    );
    assert!(
        !folded.iter().any(|(s, _)| s.contains("[java]") && s.contains("(JVM thread outside Java code)")),
        "no Java frame under a thread Flight Recorder did not sample"
    );
}

/// A JVM that would die of SIGQUIT (-Xrs), or that disabled attach, is never sent anything:
/// reported once, sampled natively, and alive after the run.
#[test]
fn a_jvm_that_cannot_be_attached_is_left_alone_and_sampled_natively() {
    if !has_java() {
        return;
    }
    let dir = temp_dir("java-xrs");
    compile_java(&dir);
    for (flag, said) in [("-Xrs", "started with -Xrs"), ("-XX:+DisableAttachMechanism", "DisableAttachMechanism:")] {
        let mut w =
            start(Command::new("java").args([flag, "-cp"]).arg(&dir).arg("GroundTruth"), Duration::from_secs(1));
        let pid = w.0.id();
        let out_path = dir.join("refused.folded");
        let out = profile(&[&format!("pid/{pid}"), "-d", "2s", "-f", "499", "-o", out_path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.matches(said).count(), 1, "{flag}: reported once: {stderr}");
        assert!(matches!(w.0.try_wait(), Ok(None)), "{flag}: the JVM is alive");
        assert!(read(&out_path).total() > 20, "{flag}: sampled natively");
    }
}

/// `profile -- java ...` (no window: until the command exits) ends when the JVM does. The JVM
/// is the CLI's child and stays a zombie until the run ends and reaps it; Flight Recorder's
/// sampler took the zombie for a live JVM and the run never ended.
#[test]
fn a_jvm_run_by_the_profile_ends_the_run_when_it_exits() {
    if !has_java() {
        return;
    }
    let dir = temp_dir("java-command");
    compile_java(&dir);
    let out_path = dir.join("command.folded");
    let mut eagle = Command::new(eagle_tests::kubectl_eagle())
        .args(["profile", "-o", out_path.to_str().unwrap(), "--", "java", "-cp"])
        .arg(&dir)
        .args(["GroundTruth", "--rounds", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = eagle.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = eagle.kill();
            panic!("kubectl-eagle profile -- java ... still ran 120 s after it started");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut eagle.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("sampled by jfr"), "Flight Recorder took the JVM: {stderr}");
    assert!(read(&out_path).total() > 0, "{stderr}");
}

/// A profile interrupted (Ctrl-C) while Flight Recorder runs still stops the recording.
#[test]
fn an_interrupted_profile_leaves_no_recording_in_the_jvm() {
    if !has_java() {
        return;
    }
    let dir = temp_dir("java-interrupted");
    compile_java(&dir);
    let w = start(Command::new("java").arg("-cp").arg(&dir).arg("GroundTruth"), Duration::from_secs(2));
    let pid = w.0.id();
    let mut eagle = Command::new(eagle_tests::kubectl_eagle())
        .args(["profile", &format!("pid/{pid}"), "-d", "60s", "-o"])
        .arg(dir.join("interrupted.folded"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while jfr_recordings(pid).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!jfr_recordings(pid).is_empty(), "Flight Recorder started");
    // SAFETY: signalling a child of this test.
    unsafe { libc::kill(eagle.id() as libc::pid_t, libc::SIGINT) };
    let status = eagle.wait().unwrap();
    assert!(status.code().is_some(), "kubectl-eagle ended by itself after Ctrl-C: {status}");
    assert_eq!(jfr_recordings(pid), "", "no recording left running in the JVM");
}

/// A JVM that exits in the middle of the window: named in the report, its samples until then
/// kept (natively), the rest of the run unaffected.
#[test]
fn a_jvm_that_dies_during_the_window_is_reported() {
    if !has_java() {
        return;
    }
    let dir = temp_dir("java-dies");
    compile_java(&dir);
    let jvm = start(Command::new("java").arg("-cp").arg(&dir).arg("GroundTruth"), Duration::from_secs(2));
    let sh = start(Command::new("sh").args(["-c", "while :; do :; done"]), Duration::ZERO);
    let jvm_pid = jvm.0.id();
    let killer = std::thread::spawn(move || {
        // After Flight Recorder started (about a second), before the window ends.
        std::thread::sleep(Duration::from_millis(2500));
        drop(jvm);
    });
    let out_path = dir.join("dies.folded");
    let out = profile(
        &[&format!("pid/{jvm_pid}"), &format!("pid/{}", sh.0.id()), "-d", "4s", "-o", out_path.to_str().unwrap()],
        None,
    );
    killer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Named in the report: gone before or while Flight Recorder started, or during the window.
    assert!(stderr.contains(&format!("process {jvm_pid} (java) exited")), "{stderr}");
    let folded = read(&out_path);
    assert!(share(&folded, |f| f.starts_with(&format!("sh ({})", sh.0.id()))) > 20.0, "the shell is still profiled");
    assert!(share(&folded, |f| f.ends_with(&format!("({jvm_pid})"))) > 5.0, "the JVM's time until it died is kept");
}

#[test]
fn two_runtimes_in_one_run_make_one_graph() {
    let Ok(python) = python() else {
        eagle_tests::skip("needs python3");
        return;
    };
    let dir = temp_dir("mixed");
    let py = start(
        Command::new(&python).arg(eagle_tests::repo_root().join("images/python/groundtruth.py")),
        Duration::from_millis(300),
    );
    let sh = start(Command::new("sh").args(["-c", "while :; do :; done"]), Duration::from_millis(100));
    let out_path = dir.join("mixed.folded");
    let (a, b) = (format!("pid/{}", py.0.id()), format!("pid/{}", sh.0.id()));
    let out = profile(&[&a, &b, "-d", "3s", "-f", "99", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let folded = read(&out_path);
    let py_share = share(&folded, |f| f.ends_with("[py]_[j]"));
    let native_share = share(&folded, |f| f.starts_with(&format!("sh ({})", sh.0.id())));
    assert!(py_share > 20.0 && native_share > 20.0, "both appear: python {py_share:.0}%, sh {native_share:.0}%");
}

#[test]
fn python_native_frames_with_native_flag() {
    let (Ok(python), true) = (python(), has_py_spy()) else {
        eagle_tests::skip("needs python3 and py-spy");
        return;
    };
    let dir = temp_dir("native");
    let w = start(
        Command::new(&python).arg(eagle_tests::repo_root().join("images/python/groundtruth.py")).arg("--zlib"),
        Duration::from_millis(300),
    );
    let pid = format!("pid/{}", w.0.id());
    let out_path = dir.join("native.folded");
    let out = profile(&[&pid, "-d", "3s", "-f", "99", "--native", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let folded = read(&out_path);
    assert!(share(&folded, |f| f.starts_with("compress_loop (")) > 80.0, "the Python caller is kept");
    // py-spy names the C code under the Python frame: zlib's deflate.
    assert!(
        share(&folded, |f| f.contains("deflate") || f.contains("zlib_compress") || f.contains("compress (")) > 50.0
    );
}

#[test]
fn a_missing_sampler_is_reported_and_the_others_still_run() {
    let Ok(python) = python() else {
        eagle_tests::skip("needs python3");
        return;
    };
    let dir = temp_dir("missing");
    let py = start(
        Command::new(&python).arg(eagle_tests::repo_root().join("images/python/groundtruth.py")),
        Duration::from_millis(300),
    );
    let sh = start(Command::new("sh").args(["-c", "while :; do :; done"]), Duration::from_millis(100));
    let out_path = dir.join("missing.folded");
    let (a, b) = (format!("pid/{}", py.0.id()), format!("pid/{}", sh.0.id()));
    // A PATH without py-spy, whose separate program reads native frames (`--native`).
    let out = profile(
        &[&a, &b, "-d", "2s", "--native", "-o", out_path.to_str().unwrap()],
        Some("/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("py-spy is not installed") && stderr.contains("pip install py-spy"), "{stderr}");
    let folded = read(&out_path);
    assert!(share(&folded, |f| f.starts_with(&format!("sh ({})", sh.0.id()))) > 20.0, "the shell is still profiled");
    assert!(
        share(&folded, |f| f.starts_with(&format!("python3 ({})", py.0.id()))
            || f.contains(&format!("({})", py.0.id())))
            > 5.0,
        "and python natively"
    );
}

#[test]
fn node_js_frames_come_from_its_perf_map_and_a_hint_otherwise() {
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eagle_tests::skip("needs node");
        return;
    }
    let dir = temp_dir("node");
    let script = eagle_tests::repo_root().join("images/node/groundtruth.js");
    let w = start_warm(
        // In the temp dir: V8 leaves its isolate-*.log files in the working directory.
        Command::new("node")
            .args(["--perf-basic-prof", "--interpreted-frames-native-stack"])
            .arg(&script)
            .current_dir(&dir),
        Duration::from_millis(1500),
    );
    let pid = format!("pid/{}", w.0.id());
    let out_path = dir.join("node.folded");
    let out = profile(&[&pid, "-d", "3s", "-f", "499", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let folded = read(&out_path);
    assert!(folded.iter().any(|(s, _)| s.contains("cpu60") && s.contains("[js]")), "JS frames named and tagged");
    assert_split(&folded, ["cpu60", "cpu30", "cpu10"]);
    drop(w);

    // Without the flag V8 writes no map: native frames only, and the report says what to add.
    let _bare = start(Command::new("node").arg(&script).current_dir(&dir), Duration::from_millis(500));
    let pid = format!("pid/{}", _bare.0.id());
    let out = profile(&[&pid, "-d", "1s", "-o", dir.join("bare.folded").to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--perf-basic-prof"));
}

/// The Ruby ground truth at `hz`: rbspy's library reads the frames, each stack weighed by the
/// process's CPU clock.
fn ruby_split_at(hz: &str, window: &str) {
    if !Command::new("ruby").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eagle_tests::skip("needs ruby (scripts/setup.sh installs it)");
        return;
    }
    let dir = temp_dir(&format!("ruby-{hz}"));
    let w = start(
        Command::new("ruby").arg(eagle_tests::repo_root().join("images/ruby/groundtruth.rb")),
        Duration::from_millis(500),
    );
    let pid = format!("pid/{}", w.0.id());
    let out_path = dir.join("rb.folded");
    let out = profile(&[&pid, "-d", window, "-f", hz, "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains(": ruby, sampled by rbspy"));
    let folded = read(&out_path);
    assert!(folded.iter().any(|(s, _)| s.contains("cpu_60 (groundtruth.rb) [rb]")), "Ruby frames named and tagged");
    assert_interpreted_split(&folded, ["cpu_60", "cpu_30", "cpu_10"], &out.stderr);
}

#[test]
fn ruby_is_detected_and_profiled_with_rbspy() {
    ruby_split_at("499", "4s");
}

#[test]
fn ruby_split_holds_at_99_hz() {
    ruby_split_at("99", "8s");
}

/// The thread of process `pid` whose kernel name is `name`, once it has one (a loaded machine
/// took over 500 ms to start Ruby and name its thread), waiting up to `patience`.
fn thread_named(pid: u32, name: &str, patience: Duration) -> Option<u32> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let found = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.find_map(|t| {
            let tid = t.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            (comm.trim() == name).then_some(tid)
        });
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How precise the agent says an interpreted process's shares are, from its stream.
fn stream_precision(result: &eagle_proto::NodeResult) -> Option<u64> {
    result
        .warnings
        .iter()
        .find_map(|w| w.message.split_once("shares as precise as ")?.1.strip_suffix(" samples")?.parse().ok())
}

/// Samples of process `pid` in the agent's stream with a frame that starts with `name`.
fn samples_in(result: &eagle_proto::NodeResult, pid: u32, name: &str) -> u64 {
    result
        .records()
        .iter()
        .filter(|r| r.pid == pid && r.frames.iter().any(|f| f.starts_with(name)))
        .map(|r| r.count)
        .sum()
}

/// Each Ruby stack weighs the CPU time of the thread it shows (images/ruby/threads.rb): the main
/// thread compresses (zlib's deflate, without the interpreter lock) and a `waiter` thread wakes
/// every millisecond to sleep again. rbspy reads the thread that took the interpreter lock last,
/// mostly the waiter, in `sleep`: weighed by the process's CPU clock, `idle_wait` read 95 % of
/// a process whose waiter used 3 % of its CPU time. Each function must read its thread's share
/// of the two threads' CPU time in the window (their `schedstat`), within the project's
/// tolerance for the samples of the graph: each function is all of its thread's Ruby code, and
/// a thread's share comes from its clock, not from reads (the precision the agent reports, 8 to
/// 22 samples here, is that of the split within the main thread, read about once in 30 reads).
/// The agent is run on its own, whose stream's header says when the window began; at 499 Hz and
/// for 10 s, so that a process that gets a tenth of a CPU on a loaded machine still has samples
/// to judge (at a load of 30, 6 s gave it 47).
#[test]
fn ruby_threads_weigh_their_own_cpu_time() {
    if !Command::new("ruby").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eagle_tests::skip("needs ruby (scripts/setup.sh installs it)");
        return;
    }
    let dir = eagle_tests::TestDir::new("ruby-threads");
    let w = start(
        Command::new("ruby").arg(eagle_tests::repo_root().join("images/ruby/threads.rb")),
        Duration::from_millis(500),
    );
    let pid = w.0.id();
    let waiter =
        thread_named(pid, "waiter", Duration::from_secs(20)).expect("threads.rb names its waiting thread `waiter`");
    let cpu_log = eagle_tests::CpuLog::start_threads(pid, &[pid, waiter]);
    let run = eagle_tests::Eagle::agent(&dir)
        .args(["--target", &format!("pid:{pid}"), "--duration-ms", "10000", "--frequency", "499"])
        .run();
    let cpu_log = cpu_log.finish();
    run.assert_code(0);
    let (_, result) = run.stream();
    let h = &result.header;
    let window = (h.started_unix_ms, h.started_unix_ms + h.duration_ms);
    let (main_cpu, waiter_cpu) = (cpu_log.used(0, window.0, window.1), cpu_log.used(1, window.0, window.1));
    let (compress, idle) = (samples_in(&result, pid, "compress ("), samples_in(&result, pid, "idle_wait ("));
    run.check(
        result.records().iter().any(|r| r.pid == pid && r.sampler == "rbspy"),
        "the Ruby process's stacks come from rbspy",
    );
    let samples = compress + idle;
    run.check(samples >= 50, format!("{samples} samples in the two threads' functions: too few to judge"));
    let precision = samples;
    eprintln!("the agent's precision of the split within a thread: {:?} samples", stream_precision(&result));
    let expected = waiter_cpu / (main_cpu + waiter_cpu);
    let got = idle as f64 / samples as f64;
    let tolerance = eagle_tests::tolerance(0.03, expected, precision);
    eprintln!(
        "idle_wait: {:.1}% of {samples} samples (as precise as {precision}), the waiter's share of the CPU time {:.1}±{:.1}% ({waiter_cpu:.3}s of {:.3}s)",
        got * 100.0,
        expected * 100.0,
        tolerance * 100.0,
        main_cpu + waiter_cpu
    );
    run.check(
        (got - expected).abs() <= tolerance,
        format!(
            "idle_wait: {:.1}% of {samples} samples (as precise as {precision}), expected the waiter's share of the CPU time, {:.1}±{:.1}% (compress: {compress} samples, main thread {main_cpu:.3}s, waiter {waiter_cpu:.3}s)",
            got * 100.0,
            expected * 100.0,
            tolerance * 100.0
        ),
    );
}

/// A program that looks like Python (its executable is called python3) but that py-spy cannot
/// read, as a Python built without symbols: named in the report, sampled natively, the run
/// unaffected.
#[test]
fn a_python_that_py_spy_cannot_read_is_reported_and_sampled_natively() {
    let dir = temp_dir("fake-python");
    let fake = dir.join("python3");
    std::fs::copy("/bin/sh", &fake).unwrap();
    let w = start(Command::new(&fake).args(["-c", "while :; do :; done"]), Duration::from_millis(200));
    let pid = w.0.id();
    let out_path = dir.join("fake.folded");
    let out = profile(&[&format!("pid/{pid}"), "-d", "2s", "-f", "499", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("({pid}): py-spy cannot read this Python process")), "{stderr}");
    assert!(stderr.contains("its native stacks are shown instead"), "{stderr}");
    // However busy the machine, a spinning process gets some CPU in 2 s at 499 Hz.
    assert!(read(&out_path).total() > 20, "sampled natively");
}

/// A process that changes runtime by exec, Python into a shell: its Python part is read by
/// py-spy and weighed until the exec, its native part sampled by eBPF after it.
#[test]
fn a_process_that_execs_from_python_into_native_code_keeps_both_parts() {
    let Ok(python) = python() else {
        eagle_tests::skip("needs python3");
        return;
    };
    let dir = temp_dir("exec");
    // Python for 4 s of wall time: on a loaded machine the profiler may take a second or two
    // to start.
    let script = "import os, time\ndef python_part():\n    t = time.time()\n    while time.time() - t < 4:\n        pass\npython_part()\nos.execv('/bin/sh', ['sh', '-c', 'while :; do :; done'])\n";
    let w = start(Command::new(&python).args(["-c", script]), Duration::from_millis(300));
    let pid = w.0.id();
    let out_path = dir.join("exec.folded");
    let out = profile(&[&format!("pid/{pid}"), "-d", "7s", "-f", "499", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let folded = read(&out_path);
    let python_part = share(&folded, |f| f.starts_with("python_part (") && f.ends_with("[py]_[j]"));
    let native_part = folded.iter().filter(|(s, _)| !s.contains("[py]")).map(|(_, c)| c).sum::<u64>();
    assert!(python_part > 15.0, "the Python part, weighed: {python_part:.0}%");
    assert!(native_part as f64 > folded.total() as f64 * 0.15, "the native part after the exec");
}

/// A workload started by `unshare --pid --kill-child` in a PID namespace of its own, as in a
/// container: the ids it gives its threads (gettid(), which glibc and the JVM keep) are not
/// those of the node. `--kill-child`: the workload ends with `unshare`, however the test ends.
/// Returns `unshare` (to drop) and the workload's pid as seen here.
fn start_in_pid_namespace(args: &[&std::ffi::OsStr], warmup: Duration) -> Option<(Workload, u32)> {
    let unshare = Command::new("unshare")
        .args(["--pid", "--kill-child", "--"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let outer = unshare.id();
    let w = Workload(unshare);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let inner = loop {
        let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            break pid;
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(warmup);
    Some((w, inner))
}

/// A JVM in its own PID namespace, as in a pod: Flight Recorder names each sample's thread by
/// the id the JVM knows it by, which the agent turns into the node's to weigh it by that
/// thread's CPU time. Taken as the node's, the thread running main() showed twice: its Java
/// stacks weighed by their count, and its CPU time again as a thread outside Java code.
#[test]
fn a_jvm_in_its_own_pid_namespace_is_weighed_by_its_threads_cpu_time() {
    if !has_java() {
        return;
    }
    let dir = temp_dir("java-pidns");
    compile_java(&dir);
    let Some((_w, pid)) = start_in_pid_namespace(
        &["java".as_ref(), "-cp".as_ref(), dir.as_os_str(), "GroundTruth".as_ref()],
        Duration::from_secs(6),
    ) else {
        eagle_tests::skip("unshare --pid cannot start a workload here");
        return;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")), "pid 1 of its namespace: {status}");
    let out_path = dir.join("pidns.folded");
    let out = profile(&[&format!("pid/{pid}"), "-d", "4s", "-f", "499", "-o", out_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(": java, sampled by jfr"), "{stderr}");
    let folded = read(&out_path);
    assert_interpreted_split(&folded, ["GroundTruth.cpu60", "GroundTruth.cpu30", "GroundTruth.cpu10"], &out.stderr);
    let main_outside = share(&folded, |f| f == "java (JVM thread outside Java code)");
    let tolerance = eagle_tests::tolerance(0.03, 0.0, folded.total()) * 100.0;
    assert!(
        main_outside <= tolerance,
        "the thread running main() is also {main_outside:.1}% of {} samples as a thread outside Java code",
        folded.total()
    );
    assert_eq!(jfr_recordings(pid), "", "no recording left running in the JVM");
}

/// Ruby threads in their own PID namespace, as in a pod (images/ruby/threads.rb, see
/// `ruby_threads_weigh_their_own_cpu_time`): the thread id glibc keeps is the namespace's,
/// turned into the node's. Without that no read named a thread of the process, the stacks
/// were weighed by the process's clock, and `idle_wait` read 95 %.
#[test]
fn ruby_threads_in_their_own_pid_namespace_weigh_their_own_cpu_time() {
    if !Command::new("ruby").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eagle_tests::skip("needs ruby (scripts/setup.sh installs it)");
        return;
    }
    let dir = temp_dir("ruby-pidns");
    let script = eagle_tests::repo_root().join("images/ruby/threads.rb");
    let Some((_w, pid)) = start_in_pid_namespace(&["ruby".as_ref(), script.as_os_str()], Duration::from_millis(500))
    else {
        eagle_tests::skip("unshare --pid cannot start a workload here");
        return;
    };
    let waiter =
        thread_named(pid, "waiter", Duration::from_secs(20)).expect("threads.rb names its waiting thread `waiter`");
    // The truth is the waiter's share of the process's CPU time over the window, by the threads'
    // own clocks: about 3 % on an idle machine, more where other work starves the busy thread.
    let cpu_log = eagle_tests::CpuLog::start_threads(pid, &[pid, waiter]);
    let (out_path, summary_path) = (dir.join("threads.folded"), dir.join("threads.json"));
    let out = profile(
        &[
            &format!("pid/{pid}"),
            "-d",
            "6s",
            "-f",
            "499",
            "-o",
            out_path.to_str().unwrap(),
            "--summary",
            summary_path.to_str().unwrap(),
        ],
        None,
    );
    let returned = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let cpu_log = cpu_log.finish();
    assert_eq!(out.status.code(), Some(0));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let start = summary["started_unix_ms"].as_u64().expect("the summary says when the window started");
    // The window as the summary gives it, or up to the profile's return if that came first.
    let end = returned.min(start + summary["duration_ms"].as_u64().expect("and how long it was"));
    let (main_cpu, waiter_cpu) = (cpu_log.used(0, start, end), cpu_log.used(1, start, end));
    let expected = waiter_cpu / (main_cpu + waiter_cpu);
    let folded = read(&out_path);
    assert!(folded.total() >= 50, "{} samples: too few to judge", folded.total());
    let idle = share(&folded, |f| f.starts_with("idle_wait (")) / 100.0;
    let tolerance = eagle_tests::tolerance(0.03, expected, folded.total());
    eprintln!(
        "idle_wait: {:.1}% of {} samples; the waiter's share of the CPU time {:.1}% ({waiter_cpu:.3}s of {:.3}s)",
        idle * 100.0,
        folded.total(),
        expected * 100.0,
        main_cpu + waiter_cpu
    );
    assert!(
        (idle - expected).abs() <= tolerance,
        "idle_wait: {:.1}% of {} samples, expected the waiter's share of the CPU time, {:.1}±{:.1}% (main thread {main_cpu:.3}s, waiter {waiter_cpu:.3}s)",
        idle * 100.0,
        folded.total(),
        expected * 100.0,
        tolerance * 100.0
    );
}
