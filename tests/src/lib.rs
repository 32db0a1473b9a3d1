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
//! - [`skip`] / [`skip_unless!`] / [`require_sampling!`]: one rule for a test that cannot run
//!   here: only a missing capability skips; the skip is printed, counted, and fails in CI.
//! - [`apiserver`]: a Kubernetes API server double, for the cluster mode without a cluster.
//! - [`cluster`]: for the tests against a real cluster, [`cluster::TestNamespace`] (a namespace
//!   of the test's own, its workloads and the `kubectl-eagle` commands run in it, removed on
//!   drop), and why the cluster runs no pods (pods, nodes, events), for failure messages.
//! - [`receiver`]: a recorded-request double of an HTTP receiver, for `--push`.
//! - [`tcp_proxy`]: a TCP proxy in front of a real API server, that a test kills mid-run.
//!
//! Modules: this file (binaries, the e2e cluster, groundtruth, preconditions, the skip rule,
//! test directories), `workload`, `eagle` (Eagle, Run), `profile`, `xml`, `apiserver/`, `receiver`,
//! `netns` and `http_server` (the network tests' namespaces and server under kubectl-eagle).

pub mod apiserver;
pub mod cluster;
mod eagle;
pub mod http_server;
pub mod netns;
mod profile;
pub mod receiver;
pub mod tcp_proxy;
mod workload;
mod xml;

pub use eagle::*;
pub use profile::*;
pub use workload::*;
pub use xml::*;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The functions of groundtruth's rounds and the share of its CPU time each one takes.
pub const SPLIT: [(&str, f64); 3] = [("cpu_60", 0.60), ("cpu_30", 0.30), ("cpu_10", 0.10)];

/// Standard deviations of sampling noise a share may be off by before a test calls it wrong.
///
/// A share measured from `n` samples is off by about `sqrt(p(1-p)/n)` (binomial: the worst
/// case; a process that runs undisturbed is sampled more evenly than that). At 3.5 standard
/// deviations a correct profiler fails a check about once in 2000.
pub const NOISE_SIGMAS: f64 = 3.5;

/// Fails unless what kube-eagle says (`got`) is within `share` (relative) of a ground truth
/// measured apart (`truth`: what the `net` tests' client measured itself, a cgroup's counter).
pub fn within(what: &str, got: f64, truth: f64, share: f64) {
    let error = (got - truth).abs() / truth;
    assert!(
        error <= share,
        "{what}: kube-eagle says {got:.3}, the ground truth (measured apart) is {truth:.3} ({:.1}% off, {:.0}% allowed)",
        error * 100.0,
        share * 100.0
    );
}

/// How far a share measured from `samples` samples may be from `expected`: `base`, or
/// [`NOISE_SIGMAS`] standard deviations of sampling noise when that is wider (a busy machine
/// gives a workload less CPU, hence fewer samples, in the same window).
pub fn tolerance(base: f64, expected: f64, samples: u64) -> f64 {
    let effective = (samples.max(1) as f64 / WEIGHED_VARIANCE).max(1.0);
    base.max(NOISE_SIGMAS * (expected * (1.0 - expected) / effective).sqrt())
}

/// The relative tolerance of a ratio of two sample counts, `a` over `b`: `base`, or the noise of
/// both counts at [`NOISE_SIGMAS`] (each count's relative noise about `sqrt(v / n)`, with `v`
/// [`WEIGHED_VARIANCE`]), whichever is wider.
pub fn ratio_tolerance(base: f64, a: u64, b: u64) -> f64 {
    let noise = WEIGHED_VARIANCE * (1.0 / a.max(1) as f64 + 1.0 / b.max(1) as f64);
    base.max(NOISE_SIGMAS * noise.sqrt())
}

/// How many times more a share varies than independent samples would make it: CPU samples are
/// weighed by their CPU's redrawn period (profiler-image/src/sampler/cpu_clock.rs, 0.56 to 6.7
/// times the asked one), and unequal weights make a count stand for fewer samples. Simulated
/// with the sampler's own draw and weights at 499 and 199 Hz, loaded or not, on a 2 ms round:
/// 1.46 to 1.65, no bias (2026-12-02). The figures "as independent samples do" in cpu_clock.rs
/// were measured before the weights.
pub const WEIGHED_VARIANCE: f64 = 1.6;

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

/// The CLI under test (or `EAGLE_KUBECTL_EAGLE`: the benchmarks time a release build). A relative
/// path is taken from the workspace root, where the docs' commands are typed: cargo runs tests
/// and benches from their package's directory instead.
pub fn kubectl_eagle() -> PathBuf {
    match std::env::var_os("EAGLE_KUBECTL_EAGLE") {
        Some(bin) => {
            let path = repo_root().join(bin);
            assert!(path.is_file(), "EAGLE_KUBECTL_EAGLE names {}, which is no file", path.display());
            path
        }
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
            skip("EAGLE_E2E_KUBECONFIG is not set (scripts/test.sh sets it to the lab cluster)");
            None
        }
    }
}

/// The lab's `scripts/lab/node.sh` (it stops and starts a node's kubelet) when the end-to-end
/// cluster is the lab's (`EAGLE_E2E_KUBECONFIG` is `$EAGLE_LAB/admin.kubeconfig`), else `None`:
/// a test that needs to break a node can do it only there.
pub fn e2e_lab_node_script() -> Option<PathBuf> {
    let kubeconfig = std::fs::canonicalize(std::env::var_os("EAGLE_E2E_KUBECONFIG")?).ok()?;
    let lab = std::env::var_os("EAGLE_LAB").unwrap_or_else(|| "/var/lib/kube-eagle/lab".into());
    let lab_kubeconfig = std::fs::canonicalize(Path::new(&lab).join("admin.kubeconfig")).ok()?;
    (kubeconfig == lab_kubeconfig).then(|| repo_root().join("scripts/lab/node.sh"))
}

/// An image with `sleep` the cluster's nodes have: `EAGLE_E2E_IDLE_IMAGE`, else the lab's busybox.
pub fn e2e_idle_image() -> String {
    std::env::var("EAGLE_E2E_IDLE_IMAGE").unwrap_or_else(|_| "lab.local/busybox:1.35".into())
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

/// The lockstep binary (`images/lockstep/lockstep.c`): splits its CPU time 60/30/10 over
/// `cpu_60`, `cpu_30` and `cpu_10` by the phase of the clock in each period of a frequency it is
/// given, the worst case for a sampler with a fixed period. Built and cached as [`groundtruth`]
/// is.
pub fn lockstep() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_c("images/lockstep/lockstep.c", "lockstep", &CHAINS_FLAGS))
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

/// The inlined binary (`images/inlined/inlined.c`), built as release code is (`-O2`) with
/// debug information: `round_of_work` spends 60 % of its CPU time in `mix_60` and `step`,
/// which the compiler inlined into it, and 40 % in `mix_40`, which it calls. Built and cached
/// as [`groundtruth`] is.
pub fn inlined() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_c("images/inlined/inlined.c", "inlined", &CHAINS_FLAGS))
}

/// The waits binary (`images/waits/waits.c`), built as distributions build C (plain `-O2`):
/// its main thread sleeps 60 %, waits on a pipe 30 % and computes 10 % of its wall-clock time,
/// in `sleep_60`, `pipe_30` and `cpu_10`. Built and cached as [`groundtruth`] is.
pub fn waits() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_c("images/waits/waits.c", "waits", &["-O2", "-g", "-Wall", "-pthread"]))
}

/// runq (images/runq): busy threads that never block (`spin`), and two threads handing a byte
/// back and forth (`pingpong`).
pub fn runq() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_c("images/runq/runq.c", "runq", &["-O2", "-g", "-Wall", "-pthread"]))
}

/// The functions of waits' main thread and the share of its wall-clock time each one takes.
pub const WAITS_SPLIT: [(&str, f64); 3] = [("sleep_60", 0.60), ("pipe_30", 0.30), ("cpu_10", 0.10)];

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

// ---------------------------------------------------------------------------------------------
// Skips: one rule for every test that cannot run here

/// Whether a skipped test fails: in CI (`CI=true`) and under `scripts/test.sh`
/// (`EAGLE_TESTS_REQUIRE_BPF=1`), where every capability the tests need is set up, so a
/// mis-set-up runner cannot pass by skipping.
pub fn skips_fail() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    set("EAGLE_TESTS_REQUIRE_BPF") || set("CI")
}

/// Where skips are counted: one line per skipped test, `target/<profile>/eagle-skips.txt`,
/// which `scripts/test.sh` empties before the tests and reports after them.
pub fn skips_file() -> PathBuf {
    target_dir().join("eagle-skips.txt")
}

/// A test that cannot run here because a capability is missing (a privilege, a tool, a
/// cluster). Only that may skip, never a failure: a run that went wrong is asserted on. The
/// skip is printed (`skipped: REASON`), counted in [`skips_file`], and fails the test where
/// [`skips_fail`]. The caller returns after it (see [`skip_unless!`]).
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if skips_fail() {
        panic!("{test} cannot run here, and skips fail this run (EAGLE_TESTS_REQUIRE_BPF=1 or CI): {reason}");
    }
    eprintln!("skipped: {reason}");
    use std::io::Write as _;
    let line = format!("{test}: {reason}\n");
    let counted = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skips_file())
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = counted {
        eprintln!("(the skip could not be counted in {}: {e})", skips_file().display());
    }
}

/// `skip_unless!(condition, "reason")`: skips (see [`skip`]) and returns from the test unless
/// the capability is there. The reason is built only when it is needed.
#[macro_export]
macro_rules! skip_unless {
    ($available:expr, $($reason:tt)+) => {
        if !$available {
            $crate::skip(&format!($($reason)+));
            return;
        }
    };
}

/// Returns from the test when this process cannot sample (root or CAP_BPF+CAP_PERFMON): a
/// [`skip`], printed, counted, and a failure under `EAGLE_TESTS_REQUIRE_BPF=1` or in CI.
#[macro_export]
macro_rules! require_sampling {
    () => {
        if let Err(reason) = $crate::can_sample() {
            $crate::skip(&reason);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        // 400 weighed samples stand for 400 / WEIGHED_VARIANCE independent ones.
        assert!((few - 3.5 * (0.24f64 * WEIGHED_VARIANCE / 400.0).sqrt()).abs() < 1e-12 && few > 0.1);
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
