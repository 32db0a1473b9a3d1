//! From the end of sampling to the SVG on disk, and the API requests of a run, for 1 node and
//! for 50 simulated nodes: the real `kubectl-eagle` (release build) against the API double,
//! whose agents each deliver a realistic profile (2,000 distinct stacks of 12 to 30 frames).
//!
//!   cargo build --release -p kube-eagle --bin kubectl-eagle
//!   EAGLE_KUBECTL_EAGLE=target/release/kubectl-eagle cargo bench -p eagle-tests --bench cluster_fanout
//!
//! "Window end" is the instant the last agent's log ended (its trailer written, its container
//! exited); "SVG on disk" is the output file's modification time. Goals (issue 4): <= 1 s for
//! 1 node, <= 3 s for 50; requests <= 5 + 4 per node.

use std::time::{Duration, SystemTime};

use eagle_tests::apiserver::{namespace, pod, stack, ApiServer, Fate, Scenario, Stack};

const REPEATS: usize = 5;
const STACKS_PER_NODE: usize = 2_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and nextest's discovery
    }
    if std::env::var_os("EAGLE_KUBECTL_EAGLE").is_none() {
        eprintln!("note: EAGLE_KUBECTL_EAGLE unset: timing the debug build next to this bench (slower than a release)");
    }
    println!(
        "{:>5}  {:>11}  {:>18}  {:>16}  {:>8}  {:>11}",
        "nodes", "stacks/node", "window end -> SVG", "window end -> exit", "requests", "goal 5+4N"
    );
    let mut medians = Vec::new();
    for nodes in [1usize, 50] {
        let (to_svg, to_exit, requests) = measure(nodes);
        println!(
            "{nodes:>5}  {STACKS_PER_NODE:>11}  {:>16.3} s  {:>16.3} s  {requests:>8}  {:>11}",
            to_svg.as_secs_f64(),
            to_exit.as_secs_f64(),
            5 + 4 * nodes
        );
        medians.push(to_svg);
    }
    println!(
        "50 nodes vs 1 node, window end -> SVG: {:.2}x (median of {REPEATS} runs each)",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}

/// Medians of window end -> SVG and -> exit over [`REPEATS`] runs, and the requests of one run.
fn measure(nodes: usize) -> (Duration, Duration, usize) {
    let stacks = realistic_stacks();
    let mut world = vec![namespace("bench"), namespace("kube-eagle")];
    for i in 0..nodes {
        world.push(pod("bench", &format!("app-{i:02}")).on(&format!("node-{i:02}")).running("app").build());
    }
    let mut to_svg = Vec::new();
    let mut to_exit = Vec::new();
    let mut requests = 0;
    for _ in 0..=REPEATS {
        let server = ApiServer::start(
            world.clone(),
            Scenario::new().default_fate(Fate::Profile(stacks.clone())).agent_line_gap(Duration::from_millis(1)),
        );
        let out = server.dir().join("out.svg");
        let run = server.run(&["namespace/bench", "-n", "bench", "-d", "1s", "-o", out.to_str().unwrap()]);
        let exited = SystemTime::now();
        assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.transcript());
        let ended = server.last_log_end().expect("the agents' logs ended");
        let written = std::fs::metadata(&out).and_then(|m| m.modified()).expect("the SVG is written");
        to_svg.push(written.duration_since(ended).unwrap_or_default());
        to_exit.push(exited.duration_since(ended).unwrap_or_default());
        requests = server.requests().len();
    }
    // The first run warms the page cache and the allocator: left out.
    (median(&mut to_svg[1..].to_vec()), median(&mut to_exit[1..].to_vec()), requests)
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
