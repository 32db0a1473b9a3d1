//! Helpers for the end-to-end tests: they run the real `kubectl-eagle` and `eagle-agent`
//! binaries (built by `cargo build --workspace --bins`) against real processes, each test in a
//! directory of its own, and on failure say everything: the command, its exit status, stdout,
//! stderr and the profile it wrote.
//!
//! - [`kubectl_eagle`], [`eagle_agent`]: the built binaries, found beside the test executable.
//! - [`groundtruth`]: the sample workload of `images/groundtruth` (a known 60/30/10 CPU split
//!   over `cpu_60`, `cpu_30`, `cpu_10`), compiled once per source version.
//! - [`TestDir`]: a fresh directory per test, kept (and named) when the test fails.
//! - [`Workload`]: a process (group) that is killed when the guard drops, even on panic.
//! - [`Eagle`] / [`Run`]: one run of a binary with a deadline, and its full diagnostics.
//! - [`Profile`]: a folded profile with the questions a user asks of it (inclusive shares).
//! - [`can_sample`] / [`require_sampling!`]: the root/CAP_BPF precondition, skipped loudly.
//! - [`apiserver`]: a Kubernetes API server double, for the cluster mode without a cluster.

pub mod apiserver;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use eagle_proto::FoldedStacks;

/// The functions of groundtruth's rounds and the share of its CPU time each one takes.
pub const SPLIT: [(&str, f64); 3] = [("cpu_60", 0.60), ("cpu_30", 0.30), ("cpu_10", 0.10)];

/// Standard deviations of sampling noise a share may be off by before a test calls it wrong.
///
/// A share measured from `n` samples is off by about `sqrt(p(1-p)/n)` (binomial: the worst
/// case; a process that runs undisturbed is sampled more evenly than that). At 3.5 standard
/// deviations a correct profiler fails a check about once in 2000.
pub const NOISE_SIGMAS: f64 = 3.5;

/// How far a share measured from `samples` samples may be from `expected`: `base`, or
/// [`NOISE_SIGMAS`] standard deviations of sampling noise when that is wider (a busy machine
/// gives a workload less CPU, hence fewer samples, in the same window).
pub fn tolerance(base: f64, expected: f64, samples: u64) -> f64 {
    base.max(NOISE_SIGMAS * (expected * (1.0 - expected) / samples.max(1) as f64).sqrt())
}

// ---------------------------------------------------------------------------------------------
// Binaries

/// `target/<profile>`: the test executable lives in `target/<profile>/deps/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("the test executable is in a directory");
    let dir = if deps.ends_with("deps") { deps.parent().expect("deps has a parent") } else { deps };
    dir.to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: these tests run the real binaries; build them first with `cargo build --workspace --bins` \
         (the same profile as the tests: add --release for `cargo test --release`)",
        path.display()
    );
    path
}

/// The CLI under test (or `EAGLE_KUBECTL_EAGLE`: the benchmarks time a release build).
pub fn kubectl_eagle() -> PathBuf {
    match std::env::var_os("EAGLE_KUBECTL_EAGLE") {
        Some(bin) => PathBuf::from(bin),
        None => binary("kubectl-eagle"),
    }
}

/// The node-side agent under test.
pub fn eagle_agent() -> PathBuf {
    binary("eagle-agent")
}

/// The repository root (this package is `tests/` in it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// The cluster end-to-end tests (`--run-ignored only`)

/// The cluster the end-to-end tests run against: `EAGLE_E2E_KUBECONFIG`, or `None` (after
/// saying so) when it is not set.
pub fn e2e_kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("EAGLE_E2E_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("skipped: EAGLE_E2E_KUBECONFIG is not set (scripts/test.sh sets it to the lab cluster)");
            None
        }
    }
}

/// The groundtruth image the cluster's nodes have: `EAGLE_E2E_GROUNDTRUTH_IMAGE`, else the lab's.
pub fn e2e_groundtruth_image() -> String {
    std::env::var("EAGLE_E2E_GROUNDTRUTH_IMAGE")
        .unwrap_or_else(|_| format!("lab.local/groundtruth:{}", env!("CARGO_PKG_VERSION")))
}

// ---------------------------------------------------------------------------------------------
// The groundtruth workload

const GROUNDTRUTH_FLAGS: [&str; 6] = ["-O2", "-g", "-fno-omit-frame-pointer", "-static", "-pthread", "-Wall"];

/// The groundtruth binary, compiled from `images/groundtruth/groundtruth.c` with frame pointers
/// and DWARF (clang-19, else clang).
///
/// Built once per test run: the `OnceLock` covers the tests of one process, and since nextest
/// runs each test in a process of its own, the binary is also kept in `target/eagle-tests/`
/// under a hash of its source, compiler and flags, and reused while they do not change. It is
/// built in a directory of this process and renamed into place, so concurrent tests never see
/// a half-written binary.
pub fn groundtruth() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_c("images/groundtruth/groundtruth.c", "groundtruth", &GROUNDTRUTH_FLAGS))
}

/// Built the way distributions build C: plain `-O2` (no frame pointers on x86-64), linked
/// against the system's shared libc.
const CHAINS_FLAGS: [&str; 3] = ["-O2", "-g", "-Wall"];

/// The chains binary (`images/chains/chains.c`): one leaf, `crunch`, reached through
/// `chain_60_outer`, `chain_30_outer` and `chain_10_outer` at 60/30/10 % of its CPU time, built
/// without frame pointers. Built and cached as [`groundtruth`] is.
pub fn chains() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_c("images/chains/chains.c", "chains", &CHAINS_FLAGS))
}

/// chains built with neither unwind tables for its own code nor frame pointers: what an
/// unwinder cannot follow, and must say so about.
pub fn chains_without_unwind_tables() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_c(
            "images/chains/chains.c",
            "chains-bare",
            &["-O2", "-g", "-Wall", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"],
        )
    })
}

/// The chains of [`chains`] and the share of its CPU time each one takes.
pub const CHAINS_SPLIT: [(&str, f64); 3] =
    [("chain_60_outer", 0.60), ("chain_30_outer", 0.30), ("chain_10_outer", 0.10)];

fn build_c(source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let source = repo_root().join(source);
    let text = std::fs::read(&source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    let compiler = ["clang-19", "clang"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .unwrap_or_else(|| panic!("{name} needs clang (clang-19 or clang on PATH): apt-get install clang-19"));
    let mut hasher = std::hash::DefaultHasher::new();
    (&text, compiler, flags).hash(&mut hasher);
    // The binary keeps its name (it is the process name in profiles); its directory is keyed.
    let cache = target_dir().join("eagle-tests");
    let home = cache.join(format!("{name}-{:016x}", hasher.finish()));
    let binary = home.join(name);
    if binary.is_file() {
        return binary;
    }
    let scratch = cache.join(format!("build-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("create the {name} build directory: {e}"));
    let out = scratch.join(name);
    let result = Command::new(compiler).args(flags).arg("-o").arg(&out).arg(&source).output().expect("run clang");
    assert!(
        result.status.success(),
        "building {name} failed: {compiler} {} -o {} {}\n{}",
        flags.join(" "),
        out.display(),
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    // Renaming the directory is atomic; if a concurrent test got there first, use its build.
    if std::fs::rename(&scratch, &home).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    assert!(binary.is_file(), "{} missing after building it", binary.display());
    binary
}

// ---------------------------------------------------------------------------------------------
// Preconditions

/// Whether this process may load eBPF programs and open perf events: root, or CAP_BPF with
/// CAP_PERFMON (or CAP_SYS_ADMIN). `Err` says what is missing.
pub fn can_sample() -> Result<(), String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let euid: u32 = field("Uid:").and_then(|v| v.split_whitespace().nth(1)?.parse().ok()).unwrap_or(u32::MAX);
    let caps = field("CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(format!(
            "sampling needs root or CAP_BPF+CAP_PERFMON, and this test runs as uid {euid} with capabilities {caps:#x}: \
             run the tests as root (sudo -E cargo nextest run -p eagle-tests)"
        ))
    }
}

/// Returns from the test, saying so on stderr, when this process cannot sample; with
/// `EAGLE_TESTS_REQUIRE_BPF=1` (CI) the test fails instead, so a mis-set-up runner cannot pass
/// by skipping everything.
#[macro_export]
macro_rules! require_sampling {
    () => {
        if let Err(reason) = $crate::can_sample() {
            if std::env::var_os("EAGLE_TESTS_REQUIRE_BPF").is_some_and(|v| v == "1") {
                panic!("EAGLE_TESTS_REQUIRE_BPF=1 but {reason}");
            }
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Test directories

/// A directory of one test's own under the system temp dir: removed when the test passes, kept
/// and named on stderr when it fails, for a look at what the run left.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join("eagle-tests").join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test directory kept for a look: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// A process started for a test, in a process group of its own: dropping the guard kills the
/// whole group (its forked children and helpers too) and reaps it, also when the test panics.
pub struct Workload {
    child: Child,
    what: String,
}

/// Scheduling priority of the workloads and of the binaries under test, when this process may
/// raise it (root): a measurement whose precision depends on the CPU the workload gets should
/// not be at the mercy of whatever else the machine runs (a build, another test suite). It
/// changes how much CPU the processes get, never how it splits.
pub const NICE: i32 = -5;

fn raise_priority(command: &mut Command) -> &mut Command {
    // SAFETY: setpriority(2) is async-signal-safe; failing (not root) leaves the default.
    unsafe {
        command.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
            Ok(())
        })
    }
}

impl Workload {
    pub fn start(command: &mut Command) -> Self {
        let what = format!("{command:?}");
        let child = raise_priority(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the workload {what}: {e}"));
        Self { child, what }
    }

    /// groundtruth with these arguments.
    pub fn groundtruth(args: &[&str]) -> Self {
        Self::start(Command::new(groundtruth()).args(args))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the workload is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until a descendant of the workload named `comm` (its `/proc/PID/comm`) runs, and
    /// returns its pid: the process a wrapper such as `unshare` or `sh` ends up starting.
    pub fn descendant(&mut self, comm: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = descendants(self.pid()).into_iter().find(|p| proc_comm(*p).as_deref() == Some(comm)) {
                return pid;
            }
            assert!(self.is_running(), "{} exited before a process named {comm} appeared", self.what);
            assert!(Instant::now() < deadline, "no process named {comm} under {} after {timeout:?}", self.what);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: signals the process group this guard created (its pgid is the leader's pid).
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system, all threads) the kernel has accounted to `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat has a comm").1.split_whitespace().collect();
    // After the comm: state is field 3 of stat(5), utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// `/proc/PID/comm` without its newline.
pub fn proc_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_owned())
}

fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Every live descendant of `root`, found through the parent links in `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(|p| Some((p, proc_ppid(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

// ---------------------------------------------------------------------------------------------
// Running the binaries

/// A command line for one of the binaries under test, run with a deadline.
pub struct Eagle {
    command: Command,
    timeout: Duration,
    /// A file the run writes (the profile): shown in the diagnostics.
    output: Option<PathBuf>,
}

impl Eagle {
    /// `kubectl-eagle ARGS` in `dir`.
    pub fn cli(dir: &TestDir) -> Self {
        Self::new(kubectl_eagle(), dir.path())
    }

    /// `eagle-agent ARGS` in `dir`.
    pub fn agent(dir: &TestDir) -> Self {
        Self::new(eagle_agent(), dir.path())
    }

    pub fn new(program: impl AsRef<Path>, dir: &Path) -> Self {
        let mut command = Command::new(program.as_ref());
        command.current_dir(dir);
        Self { command, timeout: Duration::from_secs(60), output: None }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.command.args(args);
        self
    }

    /// The run is killed (and the test fails) if it takes longer than this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The profile file this run writes, shown in the diagnostics.
    pub fn output_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Some(path.into());
        self
    }

    /// Access to the underlying command (environment, a wrapper's arguments, ...).
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Runs to completion (or the deadline) and collects everything it said.
    pub fn run(mut self) -> Run {
        let commandline = format!("{:?}", self.command);
        let started = Instant::now();
        let mut child = raise_priority(&mut self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {commandline}: {e}"));
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped")));
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the binary") {
                break status;
            }
            if started.elapsed() > self.timeout {
                timed_out = true;
                // SAFETY: the run's own process group: the binary and whatever it started.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                break child.wait().expect("wait for the killed binary");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        let run = Run {
            commandline,
            status,
            elapsed,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
            output: self.output,
        };
        assert!(!timed_out, "the run did not end within {:?} and was killed\n{}", self.timeout, run.diagnostics());
        run
    }
}

/// What one run of a binary did.
pub struct Run {
    pub commandline: String,
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub output: Option<PathBuf>,
}

impl Run {
    /// The exit code; a death by signal fails the test with the diagnostics.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("the binary died by a signal ({:?})\n{}", self.status, self.diagnostics()))
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The non-blank lines of stderr.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr().lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    }

    /// Everything about the run, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n---- command\n{}", self.commandline);
        let _ = writeln!(s, "---- exit status: {} after {:.2}s", self.status, self.elapsed.as_secs_f64());
        let _ = writeln!(s, "---- stdout ({} bytes)\n{}", self.stdout.len(), clip(&self.stdout()));
        let _ = writeln!(s, "---- stderr\n{}", clip(&self.stderr()));
        if let Some(path) = &self.output {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let _ = writeln!(
                        s,
                        "---- {} ({} bytes)\n{}",
                        path.display(),
                        bytes.len(),
                        clip(&String::from_utf8_lossy(&bytes))
                    );
                }
                Err(e) => {
                    let _ = writeln!(s, "---- {}: {e}", path.display());
                }
            }
        }
        s
    }

    /// Fails the test, with the diagnostics, unless the run exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        let got = self.code();
        assert_eq!(got, code, "expected exit code {code}, got {got}{}", self.diagnostics());
        self
    }

    /// Fails with the diagnostics unless `condition` holds.
    #[track_caller]
    pub fn check(&self, condition: bool, what: impl std::fmt::Display) -> &Self {
        assert!(condition, "{what}{}", self.diagnostics());
        self
    }

    /// The profile this run wrote to its output file.
    #[track_caller]
    pub fn profile(&self) -> Profile {
        let path = self.output.as_ref().expect("the run names its output file (Eagle::output_file)");
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}{}", path.display(), self.diagnostics()));
        Profile::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not folded stacks: {e}{}", path.display(), self.diagnostics()))
    }

    /// The sample and stack counts of the CLI's closing line: `wrote PATH (N samples, M stacks)`.
    #[track_caller]
    pub fn wrote(&self) -> (u64, u64) {
        let stderr = self.stderr();
        let parsed = stderr.lines().filter_map(|l| l.strip_prefix("wrote ")).find_map(|l| {
            let inner = l.rsplit_once(" (")?.1;
            let mut numbers = inner.split(", ").map(|part| part.split(' ').next()?.parse::<u64>().ok());
            Some((numbers.next()??, numbers.next()??))
        });
        parsed.unwrap_or_else(|| panic!("no `wrote PATH (N samples, M stacks)` line on stderr{}", self.diagnostics()))
    }
}

/// Long outputs are cut in the middle so a failure message stays readable.
fn clip(text: &str) -> String {
    const KEEP: usize = 6000;
    if text.len() <= 2 * KEEP {
        return text.to_owned();
    }
    let head = floor_boundary(text, KEEP);
    let tail = floor_boundary(text, text.len() - KEEP);
    format!("{}\n[... {} bytes cut ...]\n{}", &text[..head], tail - head, &text[tail..])
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// Profiles

/// A folded profile, parsed with the project's own model (`eagle_proto::FoldedStacks`).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub folded: FoldedStacks,
}

impl Profile {
    pub fn parse(text: &str) -> Result<Self, eagle_proto::folded::ParseError> {
        FoldedStacks::parse(text).map(|folded| Self { folded })
    }

    pub fn total(&self) -> u64 {
        self.folded.total()
    }

    /// Stacks as frame lists, outermost first, with their counts.
    pub fn stacks(&self) -> impl Iterator<Item = (Vec<&str>, u64)> {
        self.folded.iter().map(|(stack, count)| (stack.split(';').collect(), count))
    }

    /// Samples whose stack satisfies `keep`.
    pub fn count_where(&self, keep: impl Fn(&[&str]) -> bool) -> u64 {
        self.stacks().filter(|(frames, _)| keep(frames)).map(|(_, c)| c).sum()
    }

    /// Samples whose stack contains a frame named exactly `frame`.
    pub fn inclusive(&self, frame: &str) -> u64 {
        self.count_where(|frames| frames.contains(&frame))
    }

    /// The inclusive share of `frame`: the fraction of all samples with it on the stack.
    pub fn share(&self, frame: &str) -> f64 {
        ratio(self.inclusive(frame), self.total())
    }

    /// Only the stacks that satisfy `keep`.
    pub fn filter(&self, keep: impl Fn(&[&str]) -> bool) -> Profile {
        let mut folded = FoldedStacks::new();
        for (frames, count) in self.stacks().filter(|(f, _)| keep(f)) {
            folded.add(&frames, count);
        }
        Profile { folded }
    }

    /// Stacks grouped by their root frame (`groundtruth (4242)` with `--group-by process`).
    pub fn by_root(&self) -> BTreeMap<String, Profile> {
        let mut roots: BTreeMap<String, Profile> = BTreeMap::new();
        for (frames, count) in self.stacks() {
            roots.entry(frames[0].to_owned()).or_default().folded.add(&frames, count);
        }
        roots
    }

    /// Every distinct frame name.
    pub fn frames(&self) -> std::collections::BTreeSet<&str> {
        self.folded.iter().flat_map(|(stack, _)| stack.split(';')).collect()
    }

    /// The groundtruth split as found: each of [`SPLIT`]'s functions with its share of the
    /// samples that are in any of them (samples elsewhere, such as process start-up or the
    /// parent of forked children, do not dilute it).
    pub fn split(&self) -> Vec<(&'static str, f64)> {
        let working = self.working();
        SPLIT.iter().map(|(f, _)| (*f, ratio(self.inclusive(f), working))).collect()
    }

    /// Samples in any of the split's functions.
    pub fn working(&self) -> u64 {
        self.count_where(|frames| SPLIT.iter().any(|(f, _)| frames.contains(f)))
    }

    /// `None` if every function of the split is within [`tolerance`]`(base, ...)` of its
    /// expected share (`base` is a fraction: 0.03 is 3 percentage points), else what is off.
    pub fn split_error(&self, base: f64) -> Option<String> {
        let found = self.split();
        let n = self.working();
        let off: Vec<String> = SPLIT
            .iter()
            .zip(&found)
            .filter(|((_, want), (_, got))| (got - want).abs() > tolerance(base, *want, n))
            .map(|((f, want), (_, got))| {
                format!(
                    "{f} at {:.1}% (expected {:.0}% +- {:.1})",
                    got * 100.0,
                    want * 100.0,
                    tolerance(base, *want, n) * 100.0
                )
            })
            .collect();
        (!off.is_empty()).then(|| {
            format!("the split is off: {} (all: {}; {n} samples in them)", off.join(", "), describe_split(&found))
        })
    }
}

/// `cpu_60 60.2%, cpu_30 29.8%, cpu_10 10.0%`
pub fn describe_split(split: &[(&str, f64)]) -> String {
    split.iter().map(|(f, s)| format!("{f} {:.1}%", s * 100.0)).collect::<Vec<_>>().join(", ")
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

// ---------------------------------------------------------------------------------------------
// XML

/// Checks that `text` is well-formed enough to be XML: one root element, every tag closed in
/// order, comments, CDATA, processing instructions and the doctype closed. Not a validator:
/// it catches the truncated, unescaped or mis-nested output a renderer bug produces.
pub fn check_xml(text: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = text;
    let mut at = 0usize;
    while let Some(lt) = rest.find('<') {
        let (between, tail) = rest.split_at(lt);
        if open.is_empty() && !between.trim().is_empty() {
            return Err(format!("text outside the root element at byte {at}"));
        }
        at += lt;
        let (skip, kind) = if tail.starts_with("<!--") {
            (tail.find("-->").map(|i| i + 3), "comment")
        } else if tail.starts_with("<![CDATA[") {
            (tail.find("]]>").map(|i| i + 3), "CDATA section")
        } else if tail.starts_with("<?") {
            (tail.find("?>").map(|i| i + 2), "processing instruction")
        } else if tail.starts_with("<!") {
            (tail.find('>').map(|i| i + 1), "declaration")
        } else {
            let end = tag_end(tail).ok_or_else(|| format!("unclosed tag at byte {at}"))?;
            let tag = &tail[1..end];
            if let Some(closing) = tag.strip_prefix('/') {
                let name = closing.trim();
                match open.pop() {
                    Some(expected) if expected == name => {}
                    Some(expected) => return Err(format!("</{name}> at byte {at} closes <{expected}>")),
                    None => return Err(format!("</{name}> at byte {at} closes nothing")),
                }
            } else {
                let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or_default();
                if name.is_empty() {
                    return Err(format!("a tag without a name at byte {at}"));
                }
                if open.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            (Some(end + 1), "tag")
        };
        let skip = skip.ok_or_else(|| format!("unclosed {kind} at byte {at}"))?;
        rest = &tail[skip..];
        at += skip;
    }
    if !open.is_empty() {
        return Err(format!("unclosed elements at the end: {}", open.join(" > ")));
    }
    if !rest.trim().is_empty() {
        return Err("text after the root element".into());
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

/// The `>` that ends the tag starting at `tail[0]`, skipping quoted attribute values.
fn tag_end(tail: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in tail.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

/// The text of the first element with `id="ID"` (inferno's `title` and `subtitle`), unescaped.
pub fn svg_text_by_id(svg: &str, id: &str) -> Option<String> {
    let start = svg.find(&format!("id=\"{id}\""))?;
    let open_end = start + svg[start..].find('>')? + 1;
    let close = open_end + svg[open_end..].find('<')?;
    Some(unescape_xml(&svg[open_end..close]))
}

pub fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_checker_accepts_what_is_well_formed() {
        let ok = r#"<?xml version="1.0"?><!DOCTYPE svg><svg a="x>y"><!-- c <b> --><g><title>a &amp; b</title><rect/></g><script><![CDATA[ if (a < b) {} ]]></script></svg>"#;
        assert_eq!(check_xml(ok), Ok(()));
    }

    #[test]
    fn xml_checker_rejects_what_is_not() {
        for bad in [
            "<svg><g></svg>",
            "<svg></svg><svg></svg>",
            "<svg><g>",
            "<svg><!-- x </svg>",
            "<svg a=\"1></svg>",
            "x<svg/>",
            "<svg></g></svg>",
        ] {
            assert!(check_xml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_count_exact_frame_names() {
        let p = Profile::parse(
            "gt (1);main;cpu_60 6\ngt (1);main;cpu_30 3\ngt (1);main;cpu_10;k_[k] 1\ngt (1);main;cpu_600 5\n",
        )
        .unwrap();
        assert_eq!(p.total(), 15);
        assert_eq!(p.inclusive("cpu_60"), 6);
        assert_eq!(p.inclusive("cpu_10"), 1);
        assert_eq!(p.split(), vec![("cpu_60", 0.6), ("cpu_30", 0.3), ("cpu_10", 0.1)]);
        assert_eq!(p.split_error(0.001), None);
        let skewed = Profile::parse("gt (1);cpu_60 5000\ngt (1);cpu_30 4000\ngt (1);cpu_10 1000\n").unwrap();
        assert!(skewed.split_error(0.03).is_some_and(|e| e.contains("cpu_60 at 50.0%")));
        assert_eq!(p.by_root().len(), 1);
    }

    #[test]
    fn tolerance_widens_with_few_samples_only() {
        assert_eq!(tolerance(0.03, 0.6, 100_000), 0.03);
        let few = tolerance(0.03, 0.6, 400);
        assert!((few - 3.5 * (0.24f64 / 400.0).sqrt()).abs() < 1e-12 && few > 0.08);
    }

    #[test]
    fn wrote_line_is_parsed() {
        let run = Run {
            commandline: String::new(),
            status: std::process::Command::new("true").status().unwrap(),
            elapsed: Duration::ZERO,
            stdout: Vec::new(),
            stderr: b"warning: x\nwrote /tmp/a (b).folded (1486 samples, 9 stacks)\n".to_vec(),
            output: None,
        };
        assert_eq!(run.wrote(), (1486, 9));
    }
}
