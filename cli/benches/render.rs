//! Merge + render of 1 M folded lines: `kubectl-eagle convert IN.folded -o OUT.svg` against
//! `inferno-flamegraph IN.folded > OUT.svg`, the same input, alternating, in one run. The goal
//! (issue 6) is no slower than 1.1x inferno. Both are whole processes: read, merge duplicate
//! stacks, sort, lay out, write the SVG.
//!
//! `cli/benches/vs-inferno.sh` installs inferno-flamegraph into a cache if it is missing and
//! runs this; by hand: `cargo bench -p kube-eagle --bench render` with inferno-flamegraph on
//! PATH or in INFERNO_FLAMEGRAPH. EAGLE_BENCH_LINES (default 1000000) and EAGLE_BENCH_RUNS
//! (default 5) size it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: deterministic, so every run profiles the same input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Folded stacks shaped like a busy service's: a call tree (each frame chooses among a few
/// callees of its caller), depths 3 to 16, a hierarchy prefix of a few pods and processes on
/// a third of them, and about a fifth of the lines repeating an earlier stack (as two nodes'
/// results do), unsorted.
fn generate(path: &Path, lines: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let names: Vec<String> = (0..4000)
        .map(|i| match i % 4 {
            0 => format!("app::h{}::serve", i / 4),
            1 => format!("serde_json::de::p{}", i / 4),
            2 => format!("HashMap<K,V>::op{}", i / 4),
            _ => format!("sys_{}_[k]", i / 4),
        })
        .collect();
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut recent: Vec<String> = Vec::new();
    for n in 0..lines {
        let stack = if n > 0 && rng.below(5) == 0 {
            recent[rng.below(recent.len() as u64) as usize].clone()
        } else {
            let mut s = String::with_capacity(256);
            if rng.below(3) == 0 {
                let pod = rng.below(4);
                s.push_str(&format!(
                    "namespace/shop;deployment/api;pod/api-7d9f8-{pod:05};container/app;api ({});",
                    100 + pod
                ));
            }
            let depth = 3 + rng.below(14);
            let mut frame = rng.below(8);
            for d in 0..depth {
                if d > 0 {
                    s.push(';');
                }
                s.push_str(&names[frame as usize]);
                frame = (frame.wrapping_mul(31).wrapping_add(7 + rng.below(6))) % names.len() as u64;
            }
            if recent.len() < 4096 {
                recent.push(s.clone());
            } else {
                let i = rng.below(4096) as usize;
                recent[i] = s.clone();
            }
            s
        };
        writeln!(out, "{stack} {}", 1 + rng.below(20)).unwrap();
    }
    out.flush().unwrap();
}

fn find_inferno() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFERNO_FLAMEGRAPH") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("inferno-flamegraph"))
        .find(|p| p.is_file());
    on_path
}

/// User + system CPU time of the children waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

fn time(mut command: Command, stdout: Option<&Path>) -> Took {
    if let Some(path) = stdout {
        command.stdout(File::create(path).unwrap());
    } else {
        command.stdout(Stdio::null());
    }
    command.stderr(Stdio::null());
    let cpu = children_cpu();
    let started = Instant::now();
    let status = command.status().unwrap();
    let took = Took { wall: started.elapsed(), cpu: children_cpu() - cpu };
    assert!(status.success(), "{command:?} failed: {status}");
    took
}

fn median(v: &[Took], key: fn(&Took) -> Duration) -> f64 {
    let mut v: Vec<Duration> = v.iter().map(key).collect();
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn main() {
    let lines = env_number("EAGLE_BENCH_LINES", 1_000_000);
    let runs = env_number("EAGLE_BENCH_RUNS", 5).max(1);
    let dir = std::env::temp_dir().join(format!("kube-eagle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // EAGLE_BENCH_INPUT keeps the input (made if missing) for profiling by hand.
    let input = std::env::var_os("EAGLE_BENCH_INPUT").map_or_else(|| dir.join("input.folded"), PathBuf::from);
    if !input.exists() {
        generate(&input, lines);
    }
    let text = std::fs::read_to_string(&input).unwrap();
    let samples: u64 = text.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok()).sum();
    let distinct =
        text.lines().filter_map(|l| l.rsplit_once(' ')).map(|(s, _)| s).collect::<std::collections::HashSet<_>>().len();
    println!(
        "input: {} folded lines ({distinct} distinct stacks), {samples} samples, {:.1} MB",
        text.lines().count(),
        text.len() as f64 / 1e6
    );
    drop(text);

    let eagle = env!("CARGO_BIN_EXE_kubectl-eagle");
    let ours = || {
        let mut c = Command::new(eagle);
        c.args(["convert", input.to_str().unwrap(), "-o", dir.join("eagle.svg").to_str().unwrap()]);
        c
    };
    let inferno = find_inferno();
    if inferno.is_none() {
        println!("inferno-flamegraph not found (PATH, INFERNO_FLAMEGRAPH): cli/benches/vs-inferno.sh installs it");
    }
    // The same with --summary: the stacks then go through FoldedStacks (a hash map, as `profile`
    // merges node results) and are analysed for the summary too.
    let summarised = || {
        let mut c = ours();
        c.args(["--summary", dir.join("summary.json").to_str().unwrap()]);
        c
    };
    let (mut eagle_times, mut summary_times, mut inferno_times) = (Vec::new(), Vec::new(), Vec::new());
    let show = |t: &Took| format!("{:.3}s ({:.3}s CPU)", t.wall.as_secs_f64(), t.cpu.as_secs_f64());
    for run in 0..runs {
        let e = time(ours(), None);
        eagle_times.push(e);
        let s = time(summarised(), None);
        summary_times.push(s);
        let mut line = format!("run {}: kubectl-eagle {}, with --summary {}", run + 1, show(&e), show(&s));
        if let Some(path) = &inferno {
            let mut c = Command::new(path);
            c.arg(&input);
            let i = time(c, Some(&dir.join("inferno.svg")));
            inferno_times.push(i);
            line.push_str(&format!(", inferno-flamegraph {}", show(&i)));
        }
        println!("{line}");
    }
    let wall = |v: &[Took]| median(v, |t| t.wall);
    let cpu = |v: &[Took]| median(v, |t| t.cpu);
    println!("median of {runs}:");
    println!("  kubectl-eagle convert -> svg    {:.3}s wall, {:.3}s CPU", wall(&eagle_times), cpu(&eagle_times));
    println!("  ... with --summary              {:.3}s wall, {:.3}s CPU", wall(&summary_times), cpu(&summary_times));
    if !inferno_times.is_empty() {
        let (i_wall, i_cpu) = (wall(&inferno_times), cpu(&inferno_times));
        println!("  inferno-flamegraph             {i_wall:.3}s wall, {i_cpu:.3}s CPU");
        let ratio = wall(&eagle_times) / i_wall;
        println!(
            "ratio kubectl-eagle / inferno-flamegraph: {ratio:.2}x wall ({}), {:.2}x CPU; with --summary {:.2}x wall, {:.2}x CPU",
            if ratio <= 1.1 { "goal met: <= 1.1x" } else { "goal missed: > 1.1x" },
            cpu(&eagle_times) / i_cpu,
            wall(&summary_times) / i_wall,
            cpu(&summary_times) / i_cpu
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
