//! From the end of sampling to the SVG on disk, the API requests of a run, the most of them in
//! flight at once, and the CLI's peak RSS, for 1, 50 and 1,000 simulated nodes: the real
//! `kubectl-eagle` (release build) against the API double, whose agents each deliver a
//! realistic profile (2,000 distinct stacks of 12 to 30 frames).
//!
//!   cargo build --release -p kube-eagle --bin kubectl-eagle
//!   EAGLE_KUBECTL_EAGLE=target/release/kubectl-eagle cargo bench -p eagle-tests --bench cluster_fanout
//!
//! "Window end" is the instant the last agent's log ended (its trailer written, its container
//! exited); "SVG on disk" is the output file's modification time. "In flight" counts a watch or
//! a log follow until its stream ends. Goals (issues 4 and 16): <= 1 s for 1 node, <= 3 s for 50,
//! < 10 s and < 500 MiB of RSS for 1,000; requests <= 5 + 4 per node. `EAGLE_FANOUT_REPEATS=N`
//! runs each size N times (plus one to warm up) instead of 5, 5 and 3; `EAGLE_FANOUT_NODES=1000`
//! (or `1,50`) runs only those sizes.

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use eagle_tests::apiserver::{namespace, pod, stack, ApiServer, Fate, Scenario, Stack};

const REPEATS: usize = 5;
/// 1,000 nodes take a minute or so a run on two cores.
const REPEATS_1000: usize = 3;
const STACKS_PER_NODE: usize = 2_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and nextest's discovery
    }
    if std::env::var_os("EAGLE_KUBECTL_EAGLE").is_none() {
        eprintln!("note: EAGLE_KUBECTL_EAGLE unset: timing the debug build next to this bench (slower than a release)");
    }
    println!(
        "{:>5}  {:>11}  {:>18}  {:>18}  {:>8}  {:>11}  {:>9}  {:>13}",
        "nodes",
        "stacks/node",
        "window end -> SVG",
        "window end -> exit",
        "requests",
        "goal 5+4N",
        "in flight",
        "CLI peak RSS"
    );
    // `EAGLE_FANOUT_REPEATS=N`: N runs of each size instead (a quick look; medians of fewer).
    let override_repeats = std::env::var("EAGLE_FANOUT_REPEATS").ok().and_then(|n| n.parse().ok());
    let (repeats, repeats_1000) = override_repeats.map_or((REPEATS, REPEATS_1000), |n: usize| (n.max(1), n.max(1)));
    let only: Option<Vec<usize>> = std::env::var("EAGLE_FANOUT_NODES")
        .ok()
        .map(|list| list.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let mut medians = Vec::new();
    for (nodes, repeats) in [(1usize, repeats), (50, repeats), (1_000, repeats_1000)] {
        if only.as_ref().is_some_and(|only| !only.contains(&nodes)) {
            continue;
        }
        let m = measure(nodes, repeats);
        println!(
            "{nodes:>5}  {STACKS_PER_NODE:>11}  {:>16.3} s  {:>16.3} s  {:>8}  {:>11}  {:>9}  {:>9.1} MiB",
            m.to_svg.as_secs_f64(),
            m.to_exit.as_secs_f64(),
            m.requests,
            5 + 4 * nodes,
            m.peak_in_flight,
            m.peak_rss_kib as f64 / 1024.0
        );
        medians.push((nodes, repeats, m.to_svg));
    }
    if let [(1, _, one), ref larger @ ..] = medians[..] {
        for &(nodes, repeats, to_svg) in larger {
            println!(
                "window end -> SVG against 1 node: {nodes} nodes {:.2}x (median of {repeats} runs)",
                to_svg.as_secs_f64() / one.as_secs_f64()
            );
        }
    }
}

struct Measured {
    to_svg: Duration,
    to_exit: Duration,
    /// Of the last run: requests made, the most in flight at once, the CLI's peak RSS.
    requests: usize,
    peak_in_flight: usize,
    peak_rss_kib: i64,
}

/// Medians of window end -> SVG and -> exit over `repeats` runs (after one to warm up), and the
/// requests, peak in flight and peak RSS of the largest run.
fn measure(nodes: usize, repeats: usize) -> Measured {
    let stacks = realistic_stacks();
    let mut world = vec![namespace("bench"), namespace("kube-eagle")];
    for i in 0..nodes {
        world.push(pod("bench", &format!("app-{i:03}")).on(&format!("node-{i:03}")).running("app").build());
    }
    let mut to_svg = Vec::new();
    let mut to_exit = Vec::new();
    let (mut requests, mut peak_in_flight, mut peak_rss_kib) = (0, 0, 0);
    for _ in 0..=repeats {
        let server = ApiServer::start(
            world.clone(),
            Scenario::new().default_fate(Fate::Profile(stacks.clone())).agent_line_gap(Duration::from_millis(1)),
        );
        let out = server.dir().join("out.svg");
        let (code, rss_kib) =
            run_measured(&server, &["namespace/bench", "-n", "bench", "-d", "1s", "-o", out.to_str().unwrap()]);
        let exited = SystemTime::now();
        let stderr = std::fs::read_to_string(server.dir().join("stderr")).unwrap_or_default();
        assert_eq!(code, Some(0), "{stderr}\n{}", server.transcript());
        let ended = server.last_log_end().expect("the agents' logs ended");
        let written = std::fs::metadata(&out).and_then(|m| m.modified()).expect("the SVG is written");
        to_svg.push(written.duration_since(ended).unwrap_or_default());
        to_exit.push(exited.duration_since(ended).unwrap_or_default());
        requests = requests.max(server.requests().len());
        peak_in_flight = peak_in_flight.max(server.peak_requests_in_flight());
        peak_rss_kib = peak_rss_kib.max(rss_kib);
    }
    // The first run warms the page cache and the allocator: left out.
    Measured {
        to_svg: median(&mut to_svg[1..].to_vec()),
        to_exit: median(&mut to_exit[1..].to_vec()),
        requests,
        peak_in_flight,
        peak_rss_kib,
    }
}

/// Runs `kubectl-eagle profile ARGS` (stderr to the server's directory) and returns its exit
/// code and peak RSS in KiB: the kernel's high-water mark of the CLI's own memory (`VmHWM`),
/// read every 5 ms while it runs. Not wait4(2)'s `ru_maxrss`: the kernel carries the RSS of
/// the address space a process had when it called exec into it, here this bench's, which
/// holds the API double and every simulated agent's log (gigabytes at 1,000 nodes).
// The child is reaped by wait4(2) with WNOHANG, between two reads of its status.
#[allow(clippy::zombie_processes)]
fn run_measured(server: &ApiServer, args: &[&str]) -> (Option<i32>, i64) {
    let child = server
        .command_for("profile", args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(server.dir().join("stderr")).expect("stderr file"))
        .spawn()
        .expect("start kubectl-eagle");
    let pid = child.id() as libc::pid_t;
    let status_file = format!("/proc/{pid}/status");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak_kib = 0;
    loop {
        // Gone once the process has exited: the last read stands, at most 5 ms before its end.
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().as_deref().and_then(high_water_kib) {
            peak_kib = peak_kib.max(hwm);
        }
        let mut status = 0;
        // SAFETY: wait4(2) on our own child, writing into a local that outlives the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, std::ptr::null_mut()) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            return (code, peak_kib);
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on our own child; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("kubectl-eagle still ran after 300 s: killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `VmHWM:   123456 kB` of /proc/PID/status.
fn high_water_kib(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Distinct stacks shaped like a service's: a few entry points, shared middle layers, many
/// leaves; counts skewed so that a few stacks hold most samples.
fn realistic_stacks() -> Vec<Stack> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..STACKS_PER_NODE)
        .map(|i| {
            let depth = 12 + (next() % 19) as usize;
            let frames: Vec<String> = (0..depth)
                .map(|d| match d {
                    0 => "_start".to_owned(),
                    1 => "main".to_owned(),
                    2 => format!("handler_{}", next() % 8),
                    _ if d + 1 == depth => format!("leaf_{i}"),
                    _ => format!("layer{d}::step_{}", next() % 6),
                })
                .collect();
            stack(&frames.join(";"), 1 + 1000 / (1 + i as u64))
        })
        .collect()
}
