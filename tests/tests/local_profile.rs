//! `kubectl-eagle profile` in local mode, end to end: the real binary samples real processes
//! of this machine with eBPF, and each test checks what a user would check in the result.
//!
//! The workload is groundtruth (images/groundtruth), whose CPU time splits 60/30/10 over
//! `cpu_60`, `cpu_30` and `cpu_10`. Other tests and other work on the machine take CPU from it,
//! which lowers the number of samples but not the split; so the tests assert shares, and sample
//! counts only against the CPU time the kernel accounted to the workload in the same run.
//!
//! Every test needs root (or CAP_BPF and CAP_PERFMON); without, it is skipped by the one rule
//! of `eagle_tests::skip` (printed, counted, a failure in CI). Each runs in a directory of its
//! own and is safe to run in parallel. Long (over 600 lines) by its cases: 17 tests, each one
//! situation end to end; the helpers are in `eagle_tests`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use eagle_tests::receiver::Double;
use eagle_tests::{
    check_xml, cpu_seconds, describe_split, groundtruth, require_sampling, svg_text_by_id, tolerance, Eagle, Profile,
    Run, TestDir, Workload, SPLIT,
};

/// `kubectl-eagle profile ARGS -o OUT` in `dir`.
fn profile(dir: &TestDir, out: &str, args: &[&str]) -> Run {
    Eagle::cli(dir).arg("profile").args(["-o", out]).args(args).output_file(dir.join(out)).run()
}

/// `kubectl-eagle profile ARGS -o OUT -- groundtruth GT_ARGS`.
fn profile_groundtruth(dir: &TestDir, out: &str, args: &[&str], gt_args: &[&str]) -> Run {
    let gt = groundtruth().to_str().expect("a UTF-8 path");
    let mut all: Vec<&str> = args.to_vec();
    all.push("--");
    all.push(gt);
    all.extend(gt_args);
    profile(dir, out, &all)
}

/// CPU seconds a `groundtruth --report-cpu` run reported on the CLI's stderr (the command
/// shares it): the whole life of the command, which the CLI sampled from its first instruction.
#[track_caller]
fn reported_cpu(run: &Run) -> f64 {
    let line = run.stderr().lines().find_map(|l| l.strip_prefix("groundtruth: cpu ").map(str::to_owned));
    let cpu = line.and_then(|l| l.split(' ').next()?.parse().ok());
    cpu.unwrap_or_else(|| panic!("groundtruth did not report its CPU time{}", run.diagnostics()))
}

/// The samples at `hz` are the CPU time's worth: a thread or a process missed would show as
/// a half or less, samples counted twice as more.
#[track_caller]
fn assert_samples_match_cpu(run: &Run, samples: u64, cpu: f64, hz: f64) {
    let ratio = samples as f64 / (cpu * hz);
    run.check(
        (0.9..=1.1).contains(&ratio),
        format!(
            "{samples} samples, where the {cpu:.2}s of CPU the command used make {:.0} at {hz} Hz (ratio {ratio:.3})",
            cpu * hz
        ),
    );
}

/// The split holds within `base` (see [`eagle_tests::tolerance`]), judged on enough samples.
#[track_caller]
fn assert_split(run: &Run, profile: &Profile, base: f64) {
    run.check(
        profile.working() >= 250,
        format!("only {} samples in cpu_*: too few to judge a split", profile.working()),
    );
    if let Some(error) = profile.split_error(base) {
        run.check(false, error);
    }
}

/// The share of `profile`'s samples whose stack has one of groundtruth's functions.
fn named_share(profile: &Profile) -> f64 {
    let named = profile.count_where(|frames| SPLIT.iter().any(|(f, _)| frames.contains(f)));
    named as f64 / profile.total().max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// What the profile shows

/// The headline promise: a profile of a program shows where its CPU goes, in the right
/// proportions and under the right names.
///
/// groundtruth does a fixed amount of work (`--rounds`, about 4 s of CPU) and is profiled until
/// it exits, so the number of samples, and with it the precision, does not depend on how busy
/// the machine is; at 999 Hz that is about 4000 samples, where 3 percentage points are 3.5
/// standard deviations of sampling noise for the 60% share.
#[test]
fn groundtruth_split_is_60_30_10() {
    require_sampling!();
    let dir = TestDir::new("groundtruth_split");
    let run = profile_groundtruth(&dir, "flame.folded", &["-f", "999"], &["--rounds", "1300", "--report-cpu"]);
    run.assert_code(0);
    let profile = run.profile();
    let (samples, _) = run.wrote();
    // The command's end is the end of the run, not a warning.
    run.check(!run.stderr().contains("warning"), "a warning, although the command ended as it should");
    assert_samples_match_cpu(&run, samples, reported_cpu(&run), 999.0);
    run.check(
        profile.total() == samples,
        format!("the file holds {} samples, the CLI said {samples}", profile.total()),
    );
    run.check(profile.total() >= 2000, format!("only {} samples of ~4s of CPU at 999 Hz", profile.total()));
    // The command was started through a shell that exec'd it: the process carries its own name.
    let roots: Vec<String> = profile.by_root().into_keys().collect();
    run.check(
        roots.len() == 1 && roots[0].starts_with("groundtruth ("),
        format!("expected one root `groundtruth (PID)`, found {roots:?}"),
    );
    run.check(
        named_share(&profile) >= 0.97,
        format!("only {:.1}% of the samples are in cpu_*", named_share(&profile) * 100.0),
    );
    for (f, want) in SPLIT {
        let got = profile.share(f);
        let within = tolerance(0.03, want, profile.total());
        run.check(
            (got - want).abs() <= within,
            format!(
                "{f}: inclusive share {:.1}%, expected {:.0}% +- {:.1} ({})",
                got * 100.0,
                want * 100.0,
                within * 100.0,
                describe_split(&profile.split())
            ),
        );
    }
}

/// The SVG a user opens: a well-formed document whose title says what was profiled, for how
/// long, at what rate and from how many samples, with the functions in it.
#[test]
fn svg_names_target_window_rate_and_functions() {
    require_sampling!();
    let dir = TestDir::new("svg");
    let run = profile_groundtruth(&dir, "flame.svg", &["-d", "2s", "-f", "499"], &[]);
    run.assert_code(0);
    let (samples, _) = run.wrote();
    let svg = std::fs::read_to_string(dir.join("flame.svg")).expect("the SVG was written");
    run.check(svg.starts_with("<?xml") && svg.contains("<svg"), "not an SVG document");
    if let Err(e) = check_xml(&svg) {
        run.check(false, format!("the SVG is not well-formed XML: {e}"));
    }
    let title = svg_text_by_id(&svg, "title").unwrap_or_default();
    let subtitle = svg_text_by_id(&svg, "subtitle").unwrap_or_default();
    let header = format!("{title} | {subtitle}");
    run.check(
        title.contains(&groundtruth().display().to_string()),
        format!("the title does not name the command: {header}"),
    );
    run.check(subtitle.contains("at 499 Hz"), format!("the subtitle does not give the rate: {header}"));
    run.check(
        subtitle.contains(&format!("{samples} samples")),
        format!("the subtitle does not count {samples} samples: {header}"),
    );
    // The window as measured, `2s` or `2.3s`: the time sampling actually ran.
    let window = subtitle.split(" at ").next().unwrap_or_default();
    let seconds: Option<f64> = window.strip_suffix('s').and_then(|n| n.parse().ok());
    run.check(
        seconds.is_some_and(|s| (1.9..=4.0).contains(&s)),
        format!("the subtitle does not start with the ~2s window: {header}"),
    );
    for (f, _) in SPLIT {
        run.check(svg.contains(&format!("<title>{f} (")), format!("no frame named {f} in the SVG"));
    }
}

/// Every thread is sampled: a two-thread process yields the samples of its whole CPU time
/// (two CPUs' worth per second when the machine has them to give), and the split holds for the
/// process as a whole.
///
/// The command does a fixed amount of work and reports the CPU time it used; it is sampled
/// from its first instruction to its exit, so the samples must add up to that CPU time.
#[test]
fn threads_are_all_sampled() {
    require_sampling!();
    let dir = TestDir::new("threads");
    let run = profile_groundtruth(
        &dir,
        "flame.folded",
        &["-f", "499"],
        &["--threads", "2", "--rounds", "650", "--report-cpu"],
    );
    run.assert_code(0);
    let profile = run.profile();
    let cpu = reported_cpu(&run);
    let wall = run.elapsed.as_secs_f64();
    eprintln!("2 threads: {cpu:.2}s of CPU in {wall:.2}s ({:.2} CPUs), {} samples", cpu / wall, profile.total());
    assert_samples_match_cpu(&run, profile.total(), cpu, 499.0);
    assert_split(&run, &profile, 0.03);
}

/// Short-lived forked children are followed from their first instruction and named, even
/// though each one exits long before the agent could read its /proc entry.
#[test]
fn forked_children_are_followed_and_named() {
    require_sampling!();
    let dir = TestDir::new("fork");
    // A child every 20 ms doing 4 rounds (about 15 ms of CPU): under one CPU in all, so the
    // children do not pile up on a small machine, and each lives far less than the agent's
    // 250 ms between collections.
    let workload = Workload::groundtruth(&["--fork-every", "20", "--child-rounds", "4"]);
    let parent = format!("groundtruth ({})", workload.pid());
    let run = profile(&dir, "flame.folded", &["-d", "4s", "-f", "499", &format!("pid/{}", workload.pid())]);
    run.assert_code(0);
    let profile = run.profile();
    let roots = profile.by_root();
    let children = profile.filter(|frames| frames[0] != parent);
    let child_roots: Vec<&String> = roots.keys().filter(|r| **r != parent).collect();
    run.check(
        child_roots.len() >= 20,
        format!("only {} child processes sampled in 4s of a fork every 20ms", child_roots.len()),
    );
    let unnamed: Vec<&&String> =
        child_roots.iter().filter(|r| !(r.starts_with("groundtruth (") && r.ends_with(')'))).collect();
    run.check(unnamed.is_empty(), format!("children without their process name: {unnamed:?}"));
    run.check(children.total() >= 300, format!("only {} samples in the children", children.total()));
    run.check(
        named_share(&children) >= 0.95,
        format!("only {:.1}% of the children's samples are named cpu_*", named_share(&children) * 100.0),
    );
    assert_split(&run, &children, 0.05);
}

/// A command that ends before the window does: the run ends with it, says so, and the profile
/// of its life is whole.
#[test]
fn target_exiting_mid_window_ends_the_run_early() {
    require_sampling!();
    let dir = TestDir::new("exits_early");
    let run = profile_groundtruth(&dir, "flame.folded", &["-d", "8s", "-f", "999"], &["--seconds", "2"]);
    run.assert_code(0);
    // 2s, and the start and end of a run, which on a busy machine can take a second or two.
    run.check(
        run.elapsed < Duration::from_millis(6000),
        format!("the run took {:.1}s: it did not end with its target", run.elapsed.as_secs_f64()),
    );
    let stderr = run.stderr();
    let said =
        stderr.lines().any(|l| l.starts_with("warning:") && l.contains("exited") && l.contains("of the 8.0s window"));
    run.check(said, "no warning that the target exited before the window ended");
    // Named as the program it exec'd, not as the shell that started it.
    let named = stderr.lines().any(|l| l.starts_with("warning: process ") && l.contains(" (groundtruth) exited"));
    run.check(named, "no warning naming groundtruth as the process that exited");
    let profile = run.profile();
    run.check(profile.total() >= 300, format!("only {} samples of 2s at 999 Hz", profile.total()));
    let unknown = profile.count_where(|frames| frames.last() == Some(&"[unknown]"));
    run.check(
        named_share(&profile) >= 0.97,
        format!(
            "only {:.1}% of the samples are named cpu_* ({unknown} samples end in an [unknown] frame)",
            named_share(&profile) * 100.0
        ),
    );
    assert_split(&run, &profile, 0.03);
}

/// A binary without symbols still gives a usable graph: its frames are `module+0xOFFSET`,
/// never blank.
#[test]
fn stripped_binary_frames_are_module_offsets() {
    require_sampling!();
    let dir = TestDir::new("stripped");
    let stripped = dir.join("groundtruth-stripped");
    std::fs::copy(groundtruth(), &stripped).unwrap();
    let strip = Command::new("strip").arg("--strip-all").arg(&stripped).status().expect("run strip (binutils)");
    assert!(strip.success(), "strip failed");
    let out = Command::new("nm").arg(&stripped).output().expect("run nm");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("cpu_60"), "the copy still has symbols");
    let run = profile(&dir, "flame.folded", &["-d", "2s", "-f", "499", "--", stripped.to_str().unwrap()]);
    run.assert_code(0);
    let profile = run.profile();
    let frames = profile.frames();
    run.check(!frames.iter().any(|f| f.trim().is_empty()), "a blank frame");
    run.check(!frames.contains("cpu_60"), "cpu_60 is named although the binary has no symbols");
    let with_offsets = profile.count_where(|frames| frames.iter().any(|f| is_module_offset(f, "groundtruth-stripped")));
    run.check(
        with_offsets as f64 >= 0.95 * profile.total() as f64,
        format!("only {with_offsets} of {} samples have a `groundtruth-stripped+0x...` frame", profile.total()),
    );
}

fn is_module_offset(frame: &str, module: &str) -> bool {
    frame
        .strip_prefix(module)
        .and_then(|r| r.strip_prefix("+0x"))
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Time spent in the kernel on a program's behalf shows as kernel frames (`_[k]`) on top of the
/// user frames that made the system calls.
#[test]
fn syscalls_show_kernel_frames_above_user_frames() {
    require_sampling!();
    let dir = TestDir::new("syscalls");
    let run = profile_groundtruth(&dir, "flame.folded", &["-d", "3s", "-f", "499"], &["--syscalls"]);
    run.assert_code(0);
    let profile = run.profile();
    let is_kernel = |f: &str| f.ends_with("_[k]");
    let in_kernel = profile.count_where(|frames| frames.iter().any(|f| is_kernel(f)));
    run.check(
        in_kernel as f64 >= 0.5 * profile.total() as f64,
        format!("only {in_kernel} of {} samples of a syscall loop have a kernel frame", profile.total()),
    );
    // Each system call shows as its kernel implementation under the libc wrapper that made it
    // (`write` or its alias `__write`; glibc keeps no frame pointer, so the wrapper's caller
    // may not show).
    for (call, kernel) in [("getppid", "getppid"), ("write", "sys_write")] {
        let through = profile.count_where(|frames| {
            let Some(first) = frames.iter().position(|f| is_kernel(f)) else { return false };
            frames[first - 1].contains(call) && frames[first..].iter().any(|f| f.contains(kernel))
        });
        run.check(through > 0, format!("no kernel `*{kernel}*` frames under a `{call}` wrapper"));
    }
    // The kernel part of a stack is its leaf end: no user frame above a kernel frame.
    let misordered = profile.count_where(|frames| {
        frames.iter().position(|f| is_kernel(f)).is_some_and(|first| frames[first..].iter().any(|f| !is_kernel(f)))
    });
    run.check(misordered == 0, format!("{misordered} samples with a user frame above a kernel frame"));
}

/// `sh -c SCRIPT` in a mount namespace of its own, whose mounts the host does not see.
fn in_private_mount_namespace(script: &str) -> Workload {
    Workload::start(Command::new("unshare").args(["--mount", "--propagation", "private", "--fork", "sh", "-c", script]))
}

/// A process in a mount namespace of its own, whose binary the host cannot see (a container's,
/// typically): its code is read through the process itself and named.
#[test]
fn binary_invisible_to_the_host_is_named() {
    require_sampling!();
    let dir = TestDir::new("mount_ns");
    let private = dir.join("private");
    std::fs::create_dir(&private).unwrap();
    let script = format!(
        "mount -t tmpfs eagle-test {p} && cp {gt} {p}/gt-hidden && exec {p}/gt-hidden --rounds 1000",
        p = private.display(),
        gt = groundtruth().display()
    );
    let mut workload = in_private_mount_namespace(&script);
    let pid = workload.descendant("gt-hidden", Duration::from_secs(10));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(!exe.exists(), "{} is visible on the host: the test would not test anything", exe.display());
    // A fixed amount of work (about 3 s of CPU): the run ends when it does.
    let run = profile(&dir, "flame.folded", &["-d", "30s", "-f", "499", &format!("pid/{pid}")]);
    run.assert_code(0);
    let profile = run.profile();
    run.check(profile.by_root().contains_key(&format!("gt-hidden ({pid})")), format!("no root `gt-hidden ({pid})`"));
    run.check(
        named_share(&profile) >= 0.97,
        format!("only {:.1}% of the samples are named cpu_*", named_share(&profile) * 100.0),
    );
    assert_split(&run, &profile, 0.03);
}

/// A stripped binary whose symbols are in a separate debug file, as a distribution ships them
/// (`objcopy --only-keep-debug`, `strip`, a debug link; the file under
/// `/usr/lib/debug/.build-id/` by build ID). In the host's own `/usr/lib/debug`, the agent finds
/// it and names the binary's functions from it. In the root of a process of another mount
/// namespace only (here one where `/usr/lib/debug` is a fresh tmpfs), it does not: an object is
/// named once for every process that maps it, and a container's debug file could otherwise name
/// another's frames.
#[test]
fn a_stripped_binary_is_named_from_its_debug_file_on_the_host_only() {
    require_sampling!();
    let dir = TestDir::new("debug_file");
    // A build ID of this run's own, so that no other file answers for it.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let id = format!("{:024x}{:08x}{:08x}", nanos, std::process::id(), 0xea61e);
    let mut note = Vec::new();
    for word in [4u32, 20, 3] {
        note.extend_from_slice(&word.to_le_bytes());
    }
    note.extend_from_slice(b"GNU\0");
    note.extend((0..20).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()));
    std::fs::write(dir.join("build-id.note"), note).unwrap();
    let (binary, debug) = (dir.join("gt-stripped"), dir.join("gt-stripped.debug"));
    std::fs::copy(groundtruth(), &binary).unwrap();
    let run_tool = |tool: &str, args: &[&std::ffi::OsStr]| {
        let status = Command::new(tool).args(args).status().unwrap_or_else(|e| panic!("{tool} (binutils): {e}"));
        assert!(status.success(), "{tool} {args:?} failed");
    };
    let note_arg = format!("--update-section=.note.gnu.build-id={}", dir.join("build-id.note").display());
    run_tool("objcopy", &[note_arg.as_ref(), binary.as_os_str()]);
    run_tool("objcopy", &["--only-keep-debug".as_ref(), binary.as_os_str(), debug.as_os_str()]);
    run_tool("strip", &["--strip-all".as_ref(), binary.as_os_str()]);
    let link_arg = format!("--add-gnu-debuglink={}", debug.display());
    run_tool("objcopy", &[link_arg.as_ref(), binary.as_os_str()]);
    let installed = std::path::PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]));
    assert!(!installed.exists(), "{} exists already", installed.display());
    let profile_of = |pid: u32| {
        let run = profile(&dir, "flame.folded", &["-d", "30s", "-f", "499", &format!("pid/{pid}")]);
        run.assert_code(0);
        run
    };

    // Only in the process's own mount namespace: not read.
    // A mount point for it: an empty directory is left on a host that had none.
    std::fs::create_dir_all("/usr/lib/debug").unwrap();
    let script = format!(
        "mount -t tmpfs eagle-test /usr/lib/debug && mkdir -p {parent} && cp {debug} {installed} && exec {binary} --rounds 300",
        parent = installed.parent().unwrap().display(),
        debug = debug.display(),
        installed = installed.display(),
        binary = binary.display(),
    );
    let mut workload = in_private_mount_namespace(&script);
    let run = profile_of(workload.descendant("gt-stripped", Duration::from_secs(10)));
    let profile = run.profile();
    run.check(profile.total() > 0, "no samples");
    run.check(
        named_share(&profile) == 0.0,
        format!(
            "{:.1}% of the samples are named from a debug file in another mount namespace",
            named_share(&profile) * 100.0
        ),
    );
    drop(workload);

    // In the host's: read.
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(&debug, &installed).unwrap();
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir(self.0.parent().unwrap());
        }
    }
    let _installed = Removed(installed);
    let mut workload = Workload::start(Command::new(&binary).args(["--rounds", "1000"]));
    let run = profile_of(workload.pid());
    let profile = run.profile();
    run.check(
        named_share(&profile) >= 0.97,
        format!("only {:.1}% of the samples are named cpu_*", named_share(&profile) * 100.0),
    );
    assert_split(&run, &profile, 0.03);
    let _ = &mut workload;
}

// ---------------------------------------------------------------------------------------------
// Targets

/// Two groundtruth processes doing a fixed amount of work (about 2.5 s of CPU each) and then
/// exiting: profiled by pid for a window longer than that, the run ends when both have exited,
/// so the number of samples does not depend on how busy the machine is.
fn fixed_work_pair() -> (Workload, Workload) {
    (Workload::groundtruth(&["--rounds", "850"]), Workload::groundtruth(&["--rounds", "850"]))
}

/// Two running processes at once: `--group-by process` (the default) keeps each under its own
/// `name (pid)` root, each with its own split and its own CPU time's worth of samples.
#[test]
fn two_pids_each_under_their_own_root() {
    require_sampling!();
    let dir = TestDir::new("two_pids");
    let (a, b) = fixed_work_pair();
    let targets = [format!("pid/{}", a.pid()), format!("pid/{}", b.pid())];
    let cpu_before = [cpu_seconds(a.pid()), cpu_seconds(b.pid())];
    let run = profile(&dir, "flame.folded", &["-d", "30s", "-f", "499", &targets[0], &targets[1]]);
    // Both have exited (zombies until the guards drop): their CPU times are final.
    let cpu = [cpu_seconds(a.pid()) - cpu_before[0], cpu_seconds(b.pid()) - cpu_before[1]];
    run.assert_code(0);
    let profile = run.profile();
    let roots = profile.by_root();
    let names: Vec<&String> = roots.keys().collect();
    run.check(roots.len() == 2, format!("expected two roots, found {names:?}"));
    let cpu_total = cpu[0] + cpu[1];
    for (pid, cpu) in [a.pid(), b.pid()].into_iter().zip(cpu) {
        let Some(one) = roots.get(&format!("groundtruth ({pid})")) else {
            run.check(false, format!("no root `groundtruth ({pid})` among {names:?}"));
            return;
        };
        // Each process gets the samples of its own CPU time: its share of both, within noise.
        let share = one.total() as f64 / profile.total() as f64;
        run.check(
            (share - cpu / cpu_total).abs() <= 0.1,
            format!(
                "pid {pid} has {:.0}% of the samples but used {:.0}% of the CPU ({cpu:.2}s of {cpu_total:.2}s)",
                share * 100.0,
                cpu / cpu_total * 100.0
            ),
        );
        assert_split(&run, one, 0.03);
    }
}

/// `--group-by none` merges the processes into one view of the code.
#[test]
fn two_pids_merged_with_group_by_none() {
    require_sampling!();
    let dir = TestDir::new("group_by_none");
    let (a, b) = fixed_work_pair();
    let targets = [format!("pid/{}", a.pid()), format!("pid/{}", b.pid())];
    let run =
        profile(&dir, "flame.folded", &["-d", "30s", "-f", "499", "--group-by", "none", &targets[0], &targets[1]]);
    run.assert_code(0);
    let profile = run.profile();
    let with_process = profile.count_where(|frames| frames.iter().any(|f| f.starts_with("groundtruth (")));
    run.check(with_process == 0, format!("{with_process} samples still under a process frame"));
    // The same code of both processes is one stack: the hot path of cpu_60 is a single line
    // holding nearly all of its samples (a sample now and then unwinds oddly).
    // cpu_60's own frame is the innermost real call; functions inlined into it (`_[i]`) may follow.
    let ends_in_cpu_60 =
        |stack: &str| stack.split(';').rfind(|f| !f.ends_with(eagle_proto::INLINED_SUFFIX)) == Some("cpu_60");
    let mut hot: Vec<u64> = profile.folded.iter().filter(|(s, _)| ends_in_cpu_60(s)).map(|(_, c)| c).collect();
    hot.sort_unstable_by(|a, b| b.cmp(a));
    let all: u64 = hot.iter().sum();
    run.check(
        hot.first().is_some_and(|top| *top as f64 >= 0.95 * all as f64),
        format!("cpu_60's samples are spread over {} stacks ({hot:?}); merged, they are one", hot.len()),
    );
    assert_split(&run, &profile, 0.03);
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// pprof's messages as the CLI writes them, to read what a receiver got.
#[path = "../../cli/src/output/pprof_proto.rs"]
mod pprof_proto;

/// `--push pyroscope`: the receiver gets the very profile written to the file, under the
/// service name asked for, with no Kubernetes labels on a local process.
#[test]
fn pushed_profile_is_the_written_one() {
    require_sampling!();
    let dir = TestDir::new("push");
    let double = Double::start(200, "");
    let (run, _workload) =
        profile_busy(&dir, "flame.folded", &["--push", "pyroscope", &double.url, "--push-service", "groundtruth"]);
    run.assert_code(0);
    let requests = double.requests();
    run.check(requests.len() == 1, format!("one push expected, the receiver got {}", requests.len()));
    let r = &requests[0];
    run.check(r.path == "/ingest" && r.query["name"] == "groundtruth", format!("pushed to {} {:?}", r.path, r.query));
    run.check(r.query["sampleRate"] == "499", format!("sampleRate {:?}", r.query.get("sampleRate")));
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut body).unwrap();
    let pushed = <pprof_proto::Profile as prost::Message>::decode(&body[..]).expect("a pprof body");
    let name = |id: u64| {
        let function = pushed.function.iter().find(|f| f.id == id).expect("a function per id");
        pushed.string_table[function.name as usize].as_str()
    };
    // A location's lines are its inlined functions first and the real call last (pprof's
    // encoding of inlining); the folded text marks the inlined ones `_[i]`.
    let mut stacks = eagle_proto::FoldedStacks::new();
    for sample in &pushed.sample {
        let mut frames: Vec<String> = Vec::new();
        for id in sample.location_id.iter().rev() {
            let location = pushed.location.iter().find(|l| l.id == *id).expect("a location per id");
            let (call, inlined) = location.line.split_last().expect("a line per location");
            frames.push(name(call.function_id).to_string());
            frames.extend(
                inlined.iter().rev().map(|line| format!("{}{}", name(line.function_id), eagle_proto::INLINED_SUFFIX)),
            );
        }
        let frames: Vec<&str> = frames.iter().map(String::as_str).collect();
        stacks.add(&frames, sample.value[0] as u64);
    }
    let written = run.profile();
    run.check(stacks.to_text() == written.folded.to_text(), "the pushed stacks differ from the written ones");
}

/// A busy groundtruth profiled for a second into `out`, with `extra` arguments.
fn profile_busy(dir: &TestDir, out: &str, extra: &[&str]) -> (Run, Workload) {
    let workload = Workload::groundtruth(&[]);
    let mut args = vec!["-d", "1s", "-f", "499"];
    args.extend(extra);
    let target = format!("pid/{}", workload.pid());
    args.push(&target);
    let run = profile(dir, out, &args);
    (run, workload)
}

#[test]
fn output_folded_and_txt_by_extension() {
    require_sampling!();
    let dir = TestDir::new("out_folded");
    for out in ["flame.folded", "flame.txt"] {
        let (run, _workload) = profile_busy(&dir, out, &[]);
        run.assert_code(0);
        let profile = run.profile();
        let (samples, stacks) = run.wrote();
        run.check(
            profile.total() == samples && profile.folded.len() as u64 == stacks,
            format!("{out} disagrees with the CLI's counts"),
        );
        run.check(profile.inclusive("cpu_60") > 0, format!("{out} has no cpu_60"));
    }
}

/// speedscope's file format: schema, shared frames, one sampled profile whose weights sum to
/// the samples taken.
#[test]
fn output_speedscope_json() {
    require_sampling!();
    let dir = TestDir::new("out_speedscope");
    let (run, _workload) = profile_busy(&dir, "profile.json", &[]);
    run.assert_code(0);
    let (samples, stacks) = run.wrote();
    let text = std::fs::read_to_string(dir.join("profile.json")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}{}", run.diagnostics()));
    run.check(json["$schema"] == "https://www.speedscope.app/file-format-schema.json", "wrong $schema");
    let frames = json["shared"]["frames"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = frames.iter().filter_map(|f| f["name"].as_str()).collect();
    run.check(names.len() == frames.len() && !names.is_empty(), "frames without names");
    for (f, _) in SPLIT {
        run.check(names.contains(&f), format!("no frame {f}"));
    }
    let profiles = json["profiles"].as_array().cloned().unwrap_or_default();
    run.check(profiles.len() == 1 && profiles[0]["type"] == "sampled", "expected one sampled profile");
    let p = &profiles[0];
    let sample_list = p["samples"].as_array().cloned().unwrap_or_default();
    let weights: Vec<u64> =
        p["weights"].as_array().cloned().unwrap_or_default().iter().filter_map(|w| w.as_u64()).collect();
    run.check(
        sample_list.len() == weights.len() && weights.len() as u64 == stacks,
        "samples and weights do not pair up, one per stack",
    );
    run.check(
        weights.iter().sum::<u64>() == samples,
        format!("weights sum to {}, not the {samples} samples", weights.iter().sum::<u64>()),
    );
    run.check(p["endValue"].as_u64() == Some(samples), "endValue is not the sample count");
    let in_range = sample_list
        .iter()
        .flat_map(|s| s.as_array().cloned().unwrap_or_default())
        .all(|i| i.as_u64().is_some_and(|i| (i as usize) < frames.len()));
    run.check(in_range, "a sample refers to a frame that does not exist");
}

/// A command is started through a shell that execs it: it is reported under its own name, as
/// the graph names it, not as `sh`.
#[test]
fn a_command_is_reported_under_the_name_it_runs() {
    require_sampling!();
    let dir = TestDir::new("command_name");
    let run = profile_groundtruth(&dir, "flame.folded", &["-d", "2s"], &["--seconds", "1"]);
    run.assert_code(0);
    let reports: Vec<String> = run.stderr_lines().into_iter().filter(|l| l.contains("sampled by")).collect();
    run.check(
        reports.len() == 1 && reports[0].starts_with("groundtruth ("),
        format!("the command is reported as {reports:?}, not once as groundtruth"),
    );
    run.check(
        run.profile().by_root().keys().all(|root| root.starts_with("groundtruth (")),
        "the graph names another process",
    );
}

/// `-o -` writes folded stacks to stdout, and only them.
#[test]
fn output_dash_is_folded_on_stdout() {
    require_sampling!();
    let dir = TestDir::new("out_stdout");
    let workload = Workload::groundtruth(&[]);
    let run = Eagle::cli(&dir)
        .args(["profile", "-d", "1s", "-f", "499", "-o", "-", &format!("pid/{}", workload.pid())])
        .run();
    run.assert_code(0);
    let profile = Profile::parse(&run.stdout())
        .unwrap_or_else(|e| panic!("stdout is not folded stacks: {e}{}", run.diagnostics()));
    let (samples, _) = run.wrote();
    run.check(profile.total() == samples && samples > 0, "stdout does not hold the samples");
    run.check(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a file was written although the output is stdout",
    );
}

/// `--format` wins over the extension.
#[test]
fn format_flag_overrides_the_extension() {
    require_sampling!();
    let dir = TestDir::new("format_flag");
    let (run, _workload) = profile_busy(&dir, "flame.svg", &["--format", "folded"]);
    run.assert_code(0);
    let text = std::fs::read_to_string(dir.join("flame.svg")).unwrap();
    run.check(!text.contains("<svg"), "flame.svg is an SVG although --format folded was given");
    run.profile();
    let (run, _workload) = profile_busy(&dir, "profile.out", &["--format", "speedscope"]);
    run.assert_code(0);
    let json: Result<serde_json::Value, _> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("profile.out")).unwrap());
    run.check(json.is_ok_and(|j| j["$schema"].is_string()), "profile.out is not speedscope JSON");
}

// ---------------------------------------------------------------------------------------------
// Bad input: one clear line, a documented exit code, no panic

/// The exit codes as `kubectl-eagle profile --help` documents them (cli/src/error.rs).
const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const FORBIDDEN: i32 = 4;
const IO: i32 = 8;

#[test]
fn exit_codes_are_documented_in_help() {
    let dir = TestDir::new("help");
    let run = Eagle::cli(&dir).args(["profile", "--help"]).run();
    run.assert_code(0);
    let help = run.stdout().replace('\n', " ");
    for documented in ["2 usage", "3 not found", "4 not permitted", "8 output not writable"] {
        run.check(help.contains(documented), format!("`--help` does not document exit code `{documented}`"));
    }
}

/// Asserts the run failed the way a user should see: `code`, and exactly one error line that
/// contains `phrase` (clap adds its `For more information, try '--help'.` hint to its own).
#[track_caller]
fn assert_clear_error(run: &Run, code: i32, phrase: &str) {
    run.assert_code(code);
    let lines = run.stderr_lines();
    let error_lines: Vec<&String> = lines.iter().filter(|l| !l.starts_with("For more information")).collect();
    run.check(error_lines.len() == 1, format!("expected one error line, found {}", error_lines.len()));
    run.check(
        error_lines[0].contains("error:") && error_lines[0].contains(phrase),
        format!("the error line does not say `{phrase}`"),
    );
    run.check(!run.stderr().contains("panicked"), "it panicked");
    run.check(run.stdout.is_empty(), "something on stdout");
}

/// One test per bad input: `(name, arguments, exit code, phrase in the error)`. `{dir}` is the
/// test's directory.
macro_rules! bad_input {
    ($($name:ident: [$($arg:expr),*], $code:expr, $phrase:expr;)*) => {$(
        #[test]
        fn $name() {
            let dir = TestDir::new(stringify!($name));
            let args: Vec<String> = vec![$($arg.replace("{dir}", &dir.path().display().to_string())),*];
            let run = Eagle::cli(&dir).arg("profile").args(&args).timeout(Duration::from_secs(20)).run();
            assert_clear_error(&run, $code, $phrase);
            let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            run.check(written.is_empty(), format!("files were left behind: {written:?}"));
        }
    )*};
}

bad_input! {
    error_no_such_pid: ["-d", "1s", "-o", "x.svg", "pid/999999999"], NOT_FOUND, "no such process";
    error_zero_duration: ["-d", "0", "pid/1"], USAGE, "duration must be longer than 0";
    error_zero_frequency: ["-f", "0", "pid/1"], USAGE, "'--frequency <HZ>'";
    error_frequency_too_high: ["-f", "1000000", "pid/1"], USAGE, "1..=10000";
    error_unknown_extension: ["-o", "flame.png", "pid/1"], USAGE, "cannot tell the output format";
    error_unwritable_output: ["-o", "{dir}/missing/flame.svg", "pid/1"], IO, "cannot write the output";
    error_empty_target_list: ["-d", "1s"], USAGE, "nothing to profile";
    error_command_not_found: ["-d", "1s", "-o", "x.svg", "--", "./no-such-command"], NOT_FOUND, "no such command";
    error_not_a_target: ["4242"], USAGE, "not a target";
}

/// Without privileges: the one line says it is not permitted and what to do, exit code 4.
#[test]
fn error_not_permitted_without_privileges() {
    if !Path::new("/usr/bin/setpriv").exists() && !Path::new("/bin/setpriv").exists() {
        eagle_tests::skip("setpriv (util-linux) is not installed");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eagle_tests::skip("dropping to an unprivileged user needs root");
        return;
    }
    let dir = TestDir::new("not_permitted");
    // The unprivileged user may write the output (that would be exit code 8 instead) and run a
    // copy of the binary (the build directory may be closed to it).
    let cli = dir.join("kubectl-eagle");
    std::fs::copy(eagle_tests::kubectl_eagle(), &cli).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let me = format!("pid/{}", std::process::id());
    let run = Eagle::new("setpriv", dir.path())
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&cli)
        .args(["profile", "-d", "1s", "-o", "flame.svg", &me])
        .timeout(Duration::from_secs(20))
        .run();
    assert_clear_error(&run, FORBIDDEN, "not permitted");
    run.check(run.stderr().contains("run as root"), "the error does not say what to do");
    run.check(!dir.join("flame.svg").exists(), "an output was written");
}
