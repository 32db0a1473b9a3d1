//! What a profiled process hands the profiler is hostile: the agent runs as root and its output
//! reaches the user's terminal and files. Each test plants one such input and checks that the
//! run still does its work and nothing of the input escapes where it should not.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use eagle_tests::{descendants, groundtruth, proc_comm, require_sampling, Eagle, TestDir, Workload};

/// A process named with a terminal escape sequence (the kernel takes its name from the file it
/// runs): no control character reaches the terminal or the profile.
#[test]
fn escape_sequences_in_a_process_name_reach_no_terminal_and_no_file() {
    require_sampling!();
    let dir = TestDir::new("escape_name");
    // ESC ] 0 ; title BEL would retitle the terminal; ESC [ 2 J would clear it.
    let evil = dir.join("\u{1b}]0;pwn\u{7}\u{1b}[2J");
    std::fs::copy(groundtruth(), &evil).expect("copy groundtruth");
    let run = Eagle::cli(&dir)
        .args(["profile", "-d", "2s", "-o", "flame.folded", "--"])
        .arg(&evil)
        .args(["--seconds", "1"])
        .output_file(dir.join("flame.folded"))
        .run();
    run.assert_code(0);
    let folded = std::fs::read(dir.join("flame.folded")).expect("the profile");
    run.check(run.profile().total() > 0, "no samples");
    let controls = |bytes: &[u8]| bytes.iter().filter(|&&b| (b < 0x20 && b != b'\n') || b == 0x7f).count();
    run.check(controls(&run.stderr) == 0, "control characters on the terminal (stderr)");
    run.check(controls(&run.stdout) == 0, "control characters on the terminal (stdout)");
    run.check(controls(&folded) == 0, "control characters in the folded profile");
    run.check(run.stderr().contains("]0;pwn"), "the process is not named at all");
}

/// A target that exits and whose pid another process (of another pid namespace, as another
/// container's would be) gets at once, long before the agent's next look at `/proc`: the kernel
/// side tells the two apart by start time, so the newcomer is never sampled nor named as the
/// target, and the run says the target ended.
#[test]
fn a_reused_pid_is_not_sampled_as_the_target() {
    require_sampling!();
    let dir = TestDir::new("reused_pid");
    let target_binary = dir.join("the-target");
    std::fs::copy(groundtruth(), &target_binary).expect("copy groundtruth");
    let mut target = Workload::start(&mut Command::new(&target_binary));
    let pid = target.pid();

    let profiling = {
        let run = Eagle::cli(&dir)
            .args(["profile", "-d", "8s", "-f", "499", "-o", "flame.folded", &format!("pid/{pid}")])
            .output_file(dir.join("flame.folded"));
        std::thread::spawn(move || run.run())
    };
    wait_until_sampling(Duration::from_secs(30));
    // Let a few collections name the target's own stacks first.
    std::thread::sleep(Duration::from_millis(700));

    // SAFETY: kills the test's own child; `is_running` reaps it, which frees the pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    while target.is_running() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A shell's busy loop: code of another program (dash), which no frame of the target has.
    let reuser = ReusedPid::spawn(pid, &["/bin/sh", "-c", "while :; do :; done"]);
    let run = profiling.join().expect("the profiling thread");
    drop(reuser);

    run.assert_code(0);
    let profile = run.profile();
    let roots: Vec<String> = profile.by_root().into_keys().collect();
    run.check(profile.total() > 0, "no samples of the target before it exited");
    run.check(
        roots == [format!("the-target ({pid})")],
        format!("expected only the target's root `the-target ({pid})`, found {roots:?}"),
    );
    let folded = std::fs::read_to_string(dir.join("flame.folded")).unwrap_or_default();
    run.check(!folded.contains("dash") && !folded.contains("sh ("), "the shell that reused the pid is in the profile");
    let said = run.stderr_lines().into_iter().any(|l| {
        l.starts_with("warning:")
            && l.contains(&format!("process {pid} (the-target) exited"))
            && l.contains("another process")
    });
    run.check(said, "no warning that the target exited and its pid went to another process");
}

/// Waits until this test's `kubectl-eagle` samples: it attaches the fork and exec tracepoints
/// first, then opens one CPU clock perf event per CPU (`sampler/cpu_clock.rs`), so an open perf
/// event means sampling began.
fn wait_until_sampling(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let perf_events = |p: u32| {
            std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, |fds| {
                fds.filter_map(Result::ok)
                    .filter(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[perf_event]")
                    })
                    .count()
            })
        };
        let sampling = descendants(std::process::id())
            .into_iter()
            .any(|p| proc_comm(p).as_deref() == Some("kubectl-eagle") && perf_events(p) >= 1);
        if sampling {
            return;
        }
        assert!(Instant::now() < deadline, "kubectl-eagle attached no perf event within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process started with a chosen pid, as pid 1 of a new pid namespace: clone3 with `set_tid`
/// picks a free pid at each level (this test's namespace: the pid its target left; the new one:
/// 1), without touching any namespace's pid counter. Killed and reaped on drop.
struct ReusedPid {
    pid: libc::pid_t,
}

impl ReusedPid {
    fn spawn(pid: u32, command: &[&str]) -> Self {
        /// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
        }
        // Everything the child needs is prepared before the clone: after it, only execve.
        let args: Vec<CString> = command.iter().map(|a| CString::new(*a).expect("no NUL")).collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        let set_tid: [libc::pid_t; 2] = [1, pid as libc::pid_t];
        let args = CloneArgs {
            flags: libc::CLONE_NEWPID as u64,
            exit_signal: libc::SIGCHLD as u64,
            set_tid: set_tid.as_ptr() as u64,
            set_tid_size: set_tid.len() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: a fork-like clone (no CLONE_VM): the child has its own copy of memory and only
        // calls execve (async-signal-safe) with the pointers prepared above, or _exit.
        let child = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) };
        if child == 0 {
            // SAFETY: see above.
            unsafe {
                libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        assert!(
            child > 0,
            "clone3 with pid {pid} failed: {} (a process took the pid first?)",
            std::io::Error::last_os_error()
        );
        assert_eq!(child, i64::from(pid), "clone3 gave another pid");
        Self { pid: child as libc::pid_t }
    }
}

impl Drop for ReusedPid {
    fn drop(&mut self) {
        // SAFETY: kills and reaps the child this guard created.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Processes named `node` (groundtruth under that name: the agent reads a perf map for Node.js
/// JIT code) whose `/tmp/perf-PID.map` is hostile: a link to a host file, a link to a file
/// that looks like a perf map, a FIFO, a 2 GiB sparse file, another user's file, and lines that
/// overflow or carry escape sequences. Each is refused or cleaned with a warning that names the
/// problem, once per process; the run ends on time, nothing of the files reaches the output,
/// and the CLI's memory stays far below the sparse file's size.
#[test]
fn hostile_perf_maps_are_named_in_warnings_and_never_read_through() {
    require_sampling!();
    let dir = TestDir::new("hostile_perf_maps");
    let node = dir.join("node");
    std::fs::copy(groundtruth(), &node).expect("copy groundtruth");
    let nodes: Vec<Workload> = (0..6).map(|_| Workload::start(&mut Command::new(&node))).collect();
    let maps = RemovedOnDrop(nodes.iter().map(|w| PathBuf::from(format!("/tmp/perf-{}.map", w.pid()))).collect());
    let secret = dir.join("secret.map");
    // If any of these were read, every address would be named by them.
    std::fs::write(&secret, "0 7fffffffffff HOST_SECRET_FRAME\n").unwrap();
    symlink("/etc/shadow", &maps.0[0]).unwrap();
    symlink(&secret, &maps.0[1]).unwrap();
    let fifo = CString::new(maps.0[2].as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    std::fs::File::create(&maps.0[3]).unwrap().set_len(2 << 30).unwrap();
    std::fs::write(&maps.0[4], "0 7fffffffffff FOREIGN_SECRET_FRAME\n").unwrap();
    std::os::unix::fs::chown(&maps.0[4], Some(65534), Some(65534)).unwrap();
    std::fs::write(&maps.0[5], "ffffffffffffff00 1000 wraps\n10 10 \u{1b}]0;pwn\u{7}\u{1b}[2J\nnot a map line\n")
        .unwrap();

    let mut run = Eagle::cli(&dir).args(["profile", "-d", "3s", "-f", "199", "-o", "flame.folded"]);
    for w in &nodes {
        run = run.arg(format!("pid/{}", w.pid()));
    }
    let run = run.output_file(dir.join("flame.folded")).timeout(Duration::from_secs(60)).run();
    run.assert_code(0);
    run.check(run.profile().total() > 0, "no samples");

    let stderr = run.stderr();
    let said = |i: usize, what: &str| {
        let pid = nodes[i].pid();
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("warning:") && l.contains(&format!("node ({pid}): its perf map")))
            .collect();
        run.check(lines.len() == 1, format!("expected one perf map warning for pid {pid}, got {lines:?}"));
        run.check(lines.iter().any(|l| l.contains(what)), format!("the warning for pid {pid} does not say `{what}`"));
    };
    said(0, "is a symbolic link");
    said(1, "is a symbolic link");
    said(2, "is not a regular file");
    said(3, "is larger than");
    said(4, "belongs to uid 65534");
    said(5, "1 line(s) with START + SIZE past the address space");
    said(5, "with control characters in the name (escaped)");

    let folded = std::fs::read_to_string(dir.join("flame.folded")).unwrap_or_default();
    for leak in ["HOST_SECRET_FRAME", "FOREIGN_SECRET_FRAME", "root:"] {
        run.check(!folded.contains(leak) && !stderr.contains(leak), format!("`{leak}` reached the output"));
    }
    let controls = |bytes: &[u8]| bytes.iter().filter(|&&b| (b < 0x20 && b != b'\n') || b == 0x7f).count();
    run.check(controls(&run.stderr) == 0, "control characters on the terminal (stderr)");
    run.check(controls(folded.as_bytes()) == 0, "control characters in the folded profile");
    // The largest child this test waited for (kubectl-eagle, with the agent in-process).
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let peak_mib = usage.ru_maxrss / 1024;
    run.check(peak_mib < 512, format!("kubectl-eagle peaked at {peak_mib} MiB: it read the sparse file?"));
}

/// A binary whose sections point elsewhere for its debug information: a `.gnu_debuglink` by a
/// name beside the binary and a `.gnu_debugaltlink` (a supplementary file, dwz's) by an absolute
/// path, both FIFOs here. A symbolizer that follows them opens files the binary chose, in the
/// agent's own filesystem, as root: a FIFO hangs it, a device may act on being opened. The agent
/// never opens them: the run ends on time, and the binary is named from its symbol table.
#[test]
fn debug_links_of_a_binary_are_never_followed() {
    require_sampling!();
    let dir = TestDir::new("debug_links");
    let binary = dir.join("linked");
    std::fs::copy(groundtruth(), &binary).expect("copy groundtruth");
    let (link, altlink) = (dir.join("linked.debug"), dir.join("supplement.debug"));
    // objcopy reads the link's file for its checksum: a plain file first, a FIFO after.
    std::fs::write(&link, b"not debug information").unwrap();
    let mut altlink_section = altlink.as_os_str().as_bytes().to_vec();
    altlink_section.push(0);
    altlink_section.extend_from_slice(&[0xab; 20]); // the supplementary file's build ID
    std::fs::write(dir.join("altlink.section"), &altlink_section).unwrap();
    let objcopy = Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", link.display()))
        .arg(format!("--add-section=.gnu_debugaltlink={}", dir.join("altlink.section").display()))
        .arg(&binary)
        .status()
        .expect("objcopy (binutils, which scripts/setup.sh installs)");
    assert!(objcopy.success(), "objcopy failed");
    std::fs::remove_file(&link).unwrap();
    for fifo in [&link, &altlink] {
        let path = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    let run = Eagle::cli(&dir)
        .args(["profile", "-d", "2s", "-o", "flame.folded", "--"])
        .arg(&binary)
        .args(["--seconds", "1"])
        .output_file(dir.join("flame.folded"))
        .timeout(Duration::from_secs(60))
        .run();
    run.assert_code(0);
    let profile = run.profile();
    run.check(profile.total() > 0, "no samples");
    run.check(profile.share("cpu_60") > 0.0, "cpu_60 is not named (from the symbol table)");
}

/// A Python process that maps a library by a name py-spy takes for a shared libpython, deletes
/// it, and leaves a FIFO where py-spy then looks for it (`PATH (deleted)`, as the kernel shows
/// such a mapping): py-spy opens an interpreter's library by that path, as root, following
/// links, and a FIFO would hang its reader and the agent waiting for it. The agent checks the
/// path first (inside the process's root, through no link, the very file mapped) and says why
/// it does not read the process; the run ends on time with the native stacks.
#[test]
fn an_interpreter_library_swapped_for_a_fifo_is_never_opened() {
    require_sampling!();
    let dir = TestDir::new("swapped_libpython");
    let script = r#"
import ctypes, os, shutil, sys
here = sys.argv[1]
lib = os.path.join(here, "libpython3.99.so.1.0")
# Any shared library will do: the name is what makes py-spy take it for libpython.
libm = next(l.split()[-1] for l in open("/proc/self/maps") if "/libm.so" in l)
shutil.copy(libm, lib)
ctypes.CDLL(lib)
os.unlink(lib)
os.mkfifo(lib + " (deleted)")
open(os.path.join(here, "ready"), "w").close()
while True:
    sum(range(1000))
"#;
    let mut python = Workload::start(Command::new("python3").arg("-c").arg(script).arg(dir.path()));
    let ready = dir.join("ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(python.is_running(), "the Python process ended before it was ready");
        assert!(Instant::now() < deadline, "the Python process was not ready within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }

    let run = Eagle::cli(&dir)
        .args(["profile", "-d", "2s", "-o", "flame.folded", &format!("pid/{}", python.pid())])
        .output_file(dir.join("flame.folded"))
        .timeout(Duration::from_secs(60))
        .run();
    run.assert_code(0);
    run.check(run.profile().total() > 0, "no samples");
    let stderr = run.stderr();
    run.check(
        stderr.lines().any(|l| {
            l.starts_with("warning:")
                && l.contains("py-spy is not started")
                && l.contains("libpython3.99.so.1.0 (deleted), which the process maps, is not a regular file")
        }),
        "no warning says why py-spy did not read the process",
    );
}

/// Files removed when the test ends, also when it fails.
struct RemovedOnDrop(Vec<PathBuf>);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
