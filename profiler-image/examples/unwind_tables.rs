//! Times the unwind table builder (`eagle_agent::unwind::table`) on real objects, as the agent
//! reads them (through object's `ReadCache`): on one thread and on the agent's default number
//! of threads, interleaved, so that both see the same machine. The figures in
//! docs/performance.md ("A process mapping a lot of code") come from it:
//!
//! ```text
//! cargo run --release -p eagle-agent --example unwind_tables -- [--reps N] [--threads N] OBJECT...
//! ```
//!
//! Each repetition prints, per thread count, the wall time to build all objects' rows and the
//! CPU time it took (the process's, over all threads).

use std::time::{Duration, Instant};

use eagle_agent::unwind::table::Object;

fn main() {
    let mut reps = 3;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let mut objects = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match arg.as_str() {
            "--reps" => reps = number("--reps"),
            "--threads" => threads = number("--threads"),
            _ => objects.push(arg),
        }
    }
    assert!(!objects.is_empty(), "usage: unwind_tables [--reps N] [--threads N] OBJECT...");
    for rep in 1..=reps {
        for n in [1, threads] {
            let (cpu_before, started) = (cpu_time(), Instant::now());
            let rows: usize = objects.iter().map(|path| build(path, n)).sum();
            let (wall, cpu) = (started.elapsed(), cpu_time() - cpu_before);
            println!(
                "rep {rep}: {n} thread(s): {:.3} s wall, {:.3} s CPU for {} objects, {rows} rows",
                wall.as_secs_f64(),
                cpu.as_secs_f64(),
                objects.len()
            );
        }
    }
}

fn build(path: &str, threads: usize) -> usize {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cache = object::ReadCache::new(file);
    let object = Object::parse_on(&cache, threads, |_| false).unwrap_or_else(|e| panic!("{path}: {e}"));
    object.rows.len()
}

fn cpu_time() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; the clock exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
