//! Java with no JVM flags: whole Java stacks from JDK Flight Recorder, started at run time
//! through the HotSpot attach mechanism (`jattach PID jcmd JFR.start ...`), read back from the
//! recording handed over by `JFR.dump` while it still runs (then `JFR.stop` discards it).
//!
//! A JVM started plainly runs JIT code without frame pointers, so a native stack walk ends in
//! the JIT leaf; Flight Recorder walks Java frames itself. Its execution samples are taken on
//! a timer in threads that run Java code, so they give each thread's distribution over stacks;
//! the magnitude is CPU time: each thread's samples weigh the CPU time the thread used in the
//! window (`/proc/PID/task/TID/schedstat`), and the process's total is scaled to its eBPF
//! on-CPU samples (see `oncpu.rs`). Threads JFR does not sample (GC, JIT compiler, threads in
//! native code) appear under their thread name.
//!
//! A JVM must never be harmed: attach works by SIGQUIT, which ends a JVM that does not handle
//! it (`-Xrs`) and makes one that disabled attach (`-XX:+DisableAttachMechanism`) print a
//! thread dump; such JVMs are refused before anything is sent. A JVM that refuses or fails is
//! reported once and never asked again. Every recording has a `duration` backstop, is stopped
//! on every exit path, and its file is deleted after it is read.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::oncpu::Distribution;
use super::{Recorded, RuntimeSampler, SamplerError};

pub const JAVA_SUFFIX: &str = " [java]_[j]";
/// Larger recordings are not read: a window of execution samples is a few MiB.
const MAX_RECORDING_BYTES: u64 = 256 << 20;
/// How long one attach request may take: a JVM stuck in a safepoint must not stall the run.
/// Starting a recording on a starved JVM took up to 10 s on a two-core machine with a load of 15.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// Free space each directory Flight Recorder writes into ([`jfr_writes_in`]) must have before
/// the recording is asked for: the dump goes through its repository (`java.io.tmpdir` unless
/// moved) and then to its file in `/tmp`, each at most the recording's memory (`memorysize`,
/// 10 MiB by default), with room to spare.
const MIN_FREE_BYTES: u64 = 64 << 20;

/// The longest window sampled every millisecond: a memory-only recording holds what fits in
/// JDK 17's `memorysize` (10 MiB by default), which the worst case (five busy Java threads
/// sampled each millisecond, about 11 bytes a sample) fills in about three minutes.
const MAX_WINDOW_AT_1_MS: Duration = Duration::from_secs(120);

pub struct JfrSampler {
    jattach: PathBuf,
    /// `method-profiling` of JDK 17's default settings: `max` samples every 1 ms, `high`
    /// every 10 ms (JDK 11 ignores the option and samples every 20 ms).
    profiling: &'static str,
    /// Backstop: the JVM ends the recording by itself if the agent dies without stopping it.
    backstop: Duration,
    running: HashMap<u32, Recording>,
    ended: Vec<Recorded>,
}

struct Recording {
    name: String,
    /// CPU time of each thread when the recording was asked for (the attach can take seconds:
    /// the threads' shares are those of the window, as the eBPF magnitude is).
    cpu_at_start: HashMap<u32, u64>,
    /// CPU time of each thread when the window ended, once it has.
    cpu_at_end: Option<HashMap<u32, u64>>,
    /// Each thread's id in the JVM's own PID namespace (as JFR names it) -> the node's (as its
    /// CPU clock is read), listed when the CPU clocks are read: a thread that ends between the
    /// window's end and the dump keeps its samples and its CPU time under one id.
    node_ids: HashMap<u32, u32>,
    /// Where Flight Recorder writes in the JVM's root when asked for the recording: the dump's
    /// file in `/tmp`, its repository in `java.io.tmpdir` or where `-XX:FlightRecorderOptions`
    /// puts it.
    writes_in: Vec<String>,
    period_ns: f64,
    /// How long `JFR.start` took to answer (up to [`ATTACH_TIMEOUT`] on a starved JVM).
    starting: Duration,
}

impl JfrSampler {
    /// `None` when jattach is not installed.
    pub fn new(window: Duration) -> Option<Self> {
        let jattach = std::env::var_os("EAGLE_JATTACH").map(PathBuf::from).or_else(|| which::which("jattach").ok())?;
        // Flight Recorder samples on a fixed period, whatever rate was asked: its samples give
        // each thread's distribution, the eBPF samples the magnitude. At `high` (10 ms, 10.2 ms
        // as kept) a loop whose period divides it falls in step with the sampler: the ground
        // truth's round of 2.55 ms is a quarter of it, and at 99 Hz its 60 % read 52.8 to 67.1 %
        // over 25 runs, 4 to 5 times the variance of independent samples. At `max` (1 ms) the
        // same runs read within 0.4 points; the JVM's CPU was the same, the sampled thread's
        // progress about 1.5 % lower (docs/performance.md, "Flight Recorder at 1 ms at every
        // rate"). Its samples fill the in-memory recording ten times as fast: past
        // [`MAX_WINDOW_AT_1_MS`], `high` keeps the whole window in it.
        let profiling = if window <= MAX_WINDOW_AT_1_MS { "max" } else { "high" };
        Some(Self {
            jattach,
            profiling,
            backstop: window + Duration::from_secs(120),
            running: HashMap::new(),
            ended: Vec::new(),
        })
    }

    fn jcmd(&self, pid: u32, command: &str) -> Result<String, String> {
        jattach(&self.jattach, pid, command)
    }

    /// The recording dumped to a file while it still runs (`JFR.dump`), the file read (inside
    /// the JVM's own root) and deleted, then the recording stopped without a file (`JFR.stop`,
    /// which discards it). A dump that hands over nothing is asked for once more: a stop closes
    /// the recording, and its memory with it, so nothing could be asked for after it.
    fn stop_and_read(&mut self, pid: u32, recording: Recording) -> Result<Distribution, String> {
        let file = format!("/tmp/{}.jfr", recording.name);
        // Before the recording is dumped, which takes the JVM's CPU time too.
        let cpu_at_end = recording.cpu_at_end.clone().unwrap_or_else(|| thread_cpu(pid));
        let mut node_ids = recording.node_ids.clone();
        if recording.cpu_at_end.is_none() {
            node_ids.extend(threads_in_namespace(pid));
        }
        // The dump runs Java code in the JVM (its Attach Listener) while the recording still
        // samples it: those stacks are the agent's doing, after the window, and are left out.
        let asked_unix_ns = unix_ns_now();
        let read = self.dump_and_read(pid, &recording, &file).and_then(|first| {
            if !first.1.is_empty() {
                return Ok(first);
            }
            std::thread::sleep(Duration::from_millis(200));
            self.dump_and_read(pid, &recording, &file)
        });
        // Whatever the dumps did, nothing runs on (if this fails too, the recording's duration
        // ends it).
        let _ = self.jcmd(pid, &format!("JFR.stop name={}", recording.name));
        let (said, bytes) = read?;
        let size = bytes.len();
        // JFR names each sample's thread by the id the JVM got from gettid(), in its own PID
        // namespace: in a container, not the id the threads' CPU clocks are read by.
        let mut samples = read_samples(bytes)?;
        samples.retain(|(_, unix_ns, _)| *unix_ns <= asked_unix_ns);
        for (tid, _, _) in &mut samples {
            *tid = node_ids.get(tid).copied().unwrap_or(*tid);
        }
        if samples.is_empty() {
            // An idle JVM, or a starved one whose recording started late. Its threads' CPU time
            // alone would show every thread, those in Java code too, as outside Java code: if it
            // used the CPU, its native stacks are what is known (see `Run::settle`).
            let mut nothing = Distribution::default();
            nothing.note = Some(format!(
                "starting Flight Recorder took {:.1} s of the window; its recording has {size} bytes; JFR.dump said: {}",
                recording.starting.as_secs_f64(),
                first_line(&said)
            ));
            return Ok(nothing);
        }
        Ok(weigh(samples, &recording, &cpu_at_end, |tid| thread_name(pid, tid)))
    }

    /// `JFR.dump` of the recording `name` to `file` (as the JVM sees it), its answer and the
    /// file's bytes. Refused when the JVM's `/tmp` is nearly full: Flight Recorder shuts the JVM
    /// down when a write fails for want of space (JDK 17: "An irrecoverable error in Jfr.
    /// Shutting down VM...").
    fn dump_and_read(&self, pid: u32, recording: &Recording, file: &str) -> Result<(String, Vec<u8>), String> {
        for dir in &recording.writes_in {
            if let Some(free) = free_bytes_in_root(pid, dir) {
                if free < MIN_FREE_BYTES {
                    return Err(format!(
                        "its {dir} has {} MiB free: Flight Recorder ends a JVM whose disk fills while it writes, so the recording was not asked for; free {} MiB there",
                        free >> 20,
                        MIN_FREE_BYTES >> 20
                    ));
                }
            }
        }
        let name = &recording.name;
        let dumped = self.jcmd(pid, &format!("JFR.dump name={name} filename={file}"));
        let said = match dumped {
            Ok(said) => said,
            Err(e) => {
                let _ = remove_in_root(pid, file);
                return Err(if jvm_alive(pid) {
                    format!("the JVM did not hand over its recording: {e}")
                } else {
                    "the JVM exited during the window: its recording went with it".to_owned()
                });
            }
        };
        // Resolved in the JVM's root, owned by its user, a regular file, size-capped.
        let bytes = crate::target_file::read_in_root(std::path::Path::new("/proc"), pid, file, MAX_RECORDING_BYTES);
        let _ = remove_in_root(pid, file);
        let bytes = bytes.map_err(|e| format!("the recording could not be read: {e}"))?;
        Ok((said, bytes))
    }
}

impl RuntimeSampler for JfrSampler {
    fn name(&self) -> &'static str {
        "jfr"
    }

    fn add(&mut self, pid: u32) -> Result<(), SamplerError> {
        attach_allowed(pid).map_err(SamplerError::Unsupported)?;
        let name = format!("eagle-{}-{pid}", std::process::id());
        let cpu_at_start = thread_cpu(pid);
        let asked = Instant::now();
        // Only memory buffers (disk=false): nothing is written into the target until the
        // recording is handed over, and nothing stays there after.
        let command = format!(
            "JFR.start name={name} settings=default method-profiling={} disk=false duration={}s",
            self.profiling,
            self.backstop.as_secs()
        );
        let said = match self.jcmd(pid, &command) {
            Ok(said) => said,
            Err(e) => {
                // It may still start once the JVM gets to it: ask for it to be stopped, once.
                let _ = self.jcmd(pid, &format!("JFR.stop name={name}"));
                return Err(SamplerError::Unsupported(e));
            }
        };
        if !said.contains("Started recording") {
            // Started or not, make sure nothing runs on.
            let _ = self.jcmd(pid, &format!("JFR.stop name={name}"));
            return Err(SamplerError::Unsupported(format!("the JVM did not start a recording: {}", first_line(&said))));
        }
        let period_ns = if self.profiling == "max" { 1e6 } else { 1e7 };
        let starting = asked.elapsed();
        let node_ids = threads_in_namespace(pid);
        let writes_in = jfr_writes_in(&jvm_flags(pid));
        self.running
            .insert(pid, Recording { name, cpu_at_start, cpu_at_end: None, node_ids, writes_in, period_ns, starting });
        Ok(())
    }

    fn stop(&mut self, pid: u32) -> Option<Result<Distribution, String>> {
        let recording = self.running.remove(&pid)?;
        Some(self.stop_and_read(pid, recording))
    }

    fn ended(&mut self) -> Vec<Recorded> {
        let gone: Vec<u32> = self.running.keys().copied().filter(|pid| !jvm_alive(*pid)).collect();
        for pid in gone {
            self.running.remove(&pid);
            self.ended.push((pid, Err("the JVM exited during the window: its recording went with it".into())));
        }
        std::mem::take(&mut self.ended)
    }

    fn window_ended(&mut self) {
        for (pid, recording) in &mut self.running {
            recording.cpu_at_end = Some(thread_cpu(*pid));
            // Threads started in the window; those that ended keep their earlier entry.
            recording.node_ids.extend(threads_in_namespace(*pid));
        }
    }

    fn finish(&mut self) -> Vec<Recorded> {
        let pids: Vec<u32> = self.running.keys().copied().collect();
        let mut done = std::mem::take(&mut self.ended);
        for pid in pids {
            let recording = self.running.remove(&pid).expect("listed above");
            done.push((pid, self.stop_and_read(pid, recording)));
        }
        done
    }

    fn live(&self) -> usize {
        self.running.len()
    }
}

/// Is the JVM still running? A JVM that exited may stay a zombie (its /proc entry kept) until
/// its parent reaps it, and that parent may be the CLI waiting for this run to end
/// (`kubectl eagle profile -- java ...`): a zombie has ended, or the run never would.
fn jvm_alive(pid: u32) -> bool {
    crate::discovery::ProcFs::default().is_alive(pid)
}

impl Drop for JfrSampler {
    /// A run that ends without `finish` (an error, a panic) still leaves no recording running.
    fn drop(&mut self) {
        for (pid, recording) in std::mem::take(&mut self.running) {
            let _ = self.jcmd(pid, &format!("JFR.stop name={}", recording.name));
        }
    }
}

/// Why a JVM is not attached to when it does not handle SIGQUIT (yet, when it has only just
/// started).
pub const NO_SIGQUIT: &str = "it does not handle SIGQUIT: attaching would end it, so it is not asked";

/// Whether the attach mechanism may be used on `pid`, before anything is sent to it.
pub fn attach_allowed(pid: u32) -> Result<(), String> {
    let flags = jvm_flags(pid);
    let has = |flag: &[u8]| flags.split(|b| *b == 0 || *b == b' ' || *b == b'=').any(|f| f == flag);
    if has(b"-Xrs") {
        return Err("it was started with -Xrs: SIGQUIT, which attaching sends, would end it, so it is not asked".into());
    }
    if has(b"-XX:+DisableAttachMechanism") {
        return Err("it was started with -XX:+DisableAttachMechanism: it cannot be asked for a recording".into());
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("cannot read it: {e}"))?;
    if !handles_sigquit(&status) {
        return Err(NO_SIGQUIT.into());
    }
    Ok(())
}

/// The JVM's command line and environment (JAVA_TOOL_OPTIONS and JDK_JAVA_OPTIONS carry flags
/// too), NUL-separated as /proc gives them.
fn jvm_flags(pid: u32) -> Vec<u8> {
    let mut flags = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    flags.extend(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
    flags
}

/// The directories, in the JVM's root, that Flight Recorder writes into when a recording is
/// dumped: `/tmp` (the dump's file), and its repository: `java.io.tmpdir` (`/tmp` unless set)
/// or `repository=` of `-XX:FlightRecorderOptions`. Relative paths name the JVM's working
/// directory, which is not looked at: only absolute ones are checked.
fn jfr_writes_in(flags: &[u8]) -> Vec<String> {
    let mut dirs = vec!["/tmp".to_owned()];
    for word in flags.split(|b| *b == 0 || *b == b' ').filter_map(|w| std::str::from_utf8(w).ok()) {
        let dir = word.strip_prefix("-Djava.io.tmpdir=").or_else(|| {
            let options = word.strip_prefix("-XX:FlightRecorderOptions")?;
            let (_, rest) = options.split_once("repository=")?;
            Some(rest.split(',').next().unwrap_or(rest))
        });
        if let Some(dir) = dir.filter(|d| d.starts_with('/')) {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_owned());
            }
        }
    }
    dirs
}

/// How long ago `pid` started; `None` if that cannot be read.
pub fn process_age(pid: u32) -> Option<Duration> {
    let started_ticks = crate::discovery::ProcFs::default().start_ticks(pid)?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split(' ').next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Duration::from_secs_f64((uptime - started_ticks as f64 / ticks_per_second).max(0.0)))
}

/// Whether `SigCgt` of /proc/PID/status has SIGQUIT (3): the JVM's attach listener is
/// started by SIGQUIT, whose default action ends the process.
fn handles_sigquit(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGQUIT - 1)) != 0)
}

/// Runs one jcmd command through jattach, bounded in time; its output, or why it failed.
pub fn jattach(binary: &std::path::Path, pid: u32, command: &str) -> Result<String, String> {
    let mut child = Command::new(binary)
        .args([&pid.to_string(), "jcmd", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the JVM did not answer within {} s", ATTACH_TIMEOUT.as_secs()));
            }
        }
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() && !said.contains("JVM response code = 1") {
        Ok(said)
    } else {
        let why = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no answer").trim().to_owned();
        Err(format!("jattach {pid} jcmd {}: {why}", command.split(' ').next().unwrap_or_default()))
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("Connected") && !l.starts_with("JVM response"))
        .unwrap_or("")
}

/// CPU time of every thread of `pid` so far, in ns (`schedstat`'s first field).
fn thread_cpu(pid: u32) -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return HashMap::new() };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, stat.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

fn thread_name(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("thread {tid}"))
}

/// One execution sample: the OS thread it was taken in, when (Unix nanoseconds), and its
/// frames, outermost first.
type Sample = (u32, i64, Vec<String>);

fn unix_ns_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// The flag that makes `eagle-agent` read a recording from stdin and print its samples.
pub const READ_SAMPLES_FLAG: &str = "--read-jfr-samples";
/// Address space of the process that reads a recording: a crafted recording can ask the
/// reader for any allocation, which aborts a process; bounded, and in a process of its own.
const READER_ADDRESS_SPACE: u64 = 2 << 30;
const READER_TIMEOUT: Duration = Duration::from_secs(30);

/// The recording's execution samples. The recording was written by the target, so it is
/// hostile input: in the agent's own binary it is read by a child process with a bounded
/// address space and time (a crafted file can at worst end that child); embedded in another
/// program (local mode, profiling the user's own processes) it is read in-process.
fn read_samples(bytes: Vec<u8>) -> Result<Vec<Sample>, String> {
    let exe = std::env::current_exe().ok().filter(|e| e.file_name().is_some_and(|n| n == "eagle-agent"));
    let Some(exe) = exe else {
        return std::panic::catch_unwind(|| execution_samples(&bytes))
            .map_err(|_| "the recording is malformed".to_owned())?;
    };
    let mut child = Command::new(exe)
        .arg(READ_SAMPLES_FLAG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the recording's reader: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&bytes);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stdout).take(MAX_RECORDING_BYTES * 4).read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + READER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("reading the recording took over {} s", READER_TIMEOUT.as_secs()));
            }
        }
    };
    let _ = writer.join();
    let text = reader.join().unwrap_or_default();
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = (&mut stderr).take(4096).read_to_string(&mut said);
    }
    if !status.success() {
        let why = said.lines().next().unwrap_or("it crashed");
        return Err(format!("the recording could not be read ({status}): {why}"));
    }
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (tid, unix_ns, stack) = (fields.next()?, fields.next()?, fields.next()?);
            Some((tid.parse().ok()?, unix_ns.parse().ok()?, stack.split(';').map(str::to_owned).collect()))
        })
        .collect())
}

/// The child side of [`read_samples`]: a recording on stdin, `TID<TAB>frame;frame...` lines on
/// stdout. Returns the process's exit code.
pub fn serve_read_samples() -> i32 {
    use std::io::Write;
    let limit = libc::rlimit { rlim_cur: READER_ADDRESS_SPACE, rlim_max: READER_ADDRESS_SPACE };
    // SAFETY: a valid rlimit for this process.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_RECORDING_BYTES + 1).read_to_end(&mut bytes) {
        eprintln!("cannot read the recording: {e}");
        return 1;
    }
    match execution_samples(&bytes) {
        Ok(samples) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (tid, unix_ns, frames) in samples {
                let _ = writeln!(out, "{tid}\t{unix_ns}\t{}", frames.join(";"));
            }
            i32::from(out.flush().is_err())
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// The execution samples of a recording.
fn execution_samples(bytes: &[u8]) -> Result<Vec<Sample>, String> {
    use jfrs::reader::JfrReader;
    let mut reader = JfrReader::new(std::io::Cursor::new(bytes));
    let mut samples = Vec::new();
    for chunk in reader.chunks() {
        let (mut chunk_reader, chunk) = chunk.map_err(|e| format!("the recording is malformed: {e}"))?;
        // An event's time is in ticks of the chunk's clock, from the chunk's start.
        let header = &chunk.header;
        let unix_ns = |ticks: i64| -> i64 {
            let per_second = header.ticks_per_second.max(1) as i128;
            let since_start = (ticks as i128 - header.start_ticks as i128) * 1_000_000_000 / per_second;
            (header.start_time_nanos as i128 + since_start).clamp(i64::MIN as i128, i64::MAX as i128) as i64
        };
        for event in chunk_reader.events(&chunk).flatten() {
            if event.class.name() != "jdk.ExecutionSample" {
                continue;
            }
            let value = event.value();
            let tid = value
                .get_field("sampledThread")
                .and_then(|t| t.get_field("osThreadId"))
                .and_then(|v| i64::try_from(v.value).ok())
                .unwrap_or(0);
            let ticks = value.get_field("startTime").and_then(|v| i64::try_from(v.value).ok()).unwrap_or(0);
            let Some(frames) =
                value.get_field("stackTrace").and_then(|s| s.get_field("frames")).and_then(|f| f.as_iter())
            else {
                continue;
            };
            let mut names: Vec<String> = frames
                .map(|frame| {
                    let method = frame.get_field("method");
                    let symbol = |field: &str| -> Option<String> {
                        let m = method.as_ref()?;
                        let s = m.get_field(field)?.get_field("string")?;
                        <&str>::try_from(s.value).ok().map(str::to_owned)
                    };
                    let class = method
                        .as_ref()
                        .and_then(|m| m.get_field("type"))
                        .and_then(|t| t.get_field("name"))
                        .and_then(|n| n.get_field("string"))
                        .and_then(|s| <&str>::try_from(s.value).ok().map(str::to_owned));
                    java_frame(
                        class.as_deref().unwrap_or("?"),
                        symbol("name").as_deref().unwrap_or("?"),
                        symbol("descriptor").as_deref().unwrap_or(""),
                    )
                })
                .collect();
            if names.is_empty() {
                continue;
            }
            names.reverse();
            samples.push((u32::try_from(tid).unwrap_or(0), unix_ns(ticks), names));
        }
    }
    Ok(samples)
}

/// `java/util/HashMap`, `get`, `(Ljava/lang/Object;)Ljava/lang/Object;` as the graph's
/// `java.util.HashMap.get(java.lang.Object) [java]`: the perf map's naming, without the return
/// type.
fn java_frame(class: &str, method: &str, descriptor: &str) -> String {
    let class = class.replace('/', ".");
    let params = descriptor.strip_prefix('(').and_then(|d| d.split_once(')')).map_or("", |(p, _)| p);
    let mut types = Vec::new();
    let mut rest = params;
    while !rest.is_empty() {
        let dims = rest.len() - rest.trim_start_matches('[').len();
        rest = &rest[dims..];
        let (name, after) = match rest.as_bytes().first() {
            Some(b'L') => match rest.split_once(';') {
                Some((c, after)) => (c[1..].replace('/', "."), after),
                None => (rest[1..].replace('/', "."), ""),
            },
            Some(&b) => {
                let name = match b {
                    b'Z' => "boolean",
                    b'B' => "byte",
                    b'C' => "char",
                    b'S' => "short",
                    b'I' => "int",
                    b'J' => "long",
                    b'F' => "float",
                    b'D' => "double",
                    b'V' => "void",
                    _ => "?",
                };
                (name.to_owned(), &rest[1..])
            }
            None => break,
        };
        types.push(name + &"[]".repeat(dims));
        rest = after;
    }
    format!("{class}.{method}({}){JAVA_SUFFIX}", types.join(", "))
}

/// The recording's samples as CPU time: each thread's samples share the CPU time the thread
/// used in the window; threads that used CPU but were never sampled (GC, compiler, native
/// code) appear under their name.
fn weigh(
    samples: Vec<Sample>,
    recording: &Recording,
    cpu_at_end: &HashMap<u32, u64>,
    name: impl Fn(u32) -> String,
) -> Distribution {
    let mut per_thread: HashMap<u32, Vec<Vec<String>>> = HashMap::new();
    let mut distribution = Distribution::default();
    distribution.samples = samples.len() as u64;
    for (tid, _, frames) in samples {
        per_thread.entry(tid).or_default().push(frames);
    }
    let used = |tid: u32| -> Option<f64> {
        let end = *cpu_at_end.get(&tid)?;
        Some(end.saturating_sub(recording.cpu_at_start.get(&tid).copied().unwrap_or(0)) as f64)
    };
    distribution.busiest_thread = per_thread
        .iter()
        .max_by_key(|(tid, stacks)| (stacks.len(), std::cmp::Reverse(**tid)))
        .map(|(tid, stacks)| (name(*tid), stacks.len() as u64));
    for (tid, stacks) in &per_thread {
        // A thread gone before the end: what its samples say, at the sampling period each.
        let cpu = used(*tid).unwrap_or(stacks.len() as f64 * recording.period_ns);
        let each = cpu / stacks.len() as f64;
        for frames in stacks {
            distribution.add(frames.clone(), each);
        }
    }
    for tid in cpu_at_end.keys().filter(|t| !per_thread.contains_key(t)) {
        if let Some(cpu) = used(*tid).filter(|c| *c > 0.0) {
            let frames = vec![format!("{} (JVM thread outside Java code)", name(*tid))];
            distribution.threads.entry(frames.clone()).or_default().push(*tid);
            distribution.add_exact(frames, cpu);
        }
    }
    distribution
}

/// Free bytes (for an unprivileged user) of the file system holding `dir` inside the root of
/// `pid`; `None` if that cannot be read.
fn free_bytes_in_root(pid: u32, dir: &str) -> Option<u64> {
    let dir = crate::target_file::open_dir_in_root(Path::new("/proc"), pid, dir).ok()?;
    // SAFETY: statvfs is plain integers; all zero is a valid value to be overwritten.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a correctly sized statvfs.
    if unsafe { libc::fstatvfs(dir.as_raw_fd(), &mut stat) } != 0 {
        return None;
    }
    // A filesystem of the target's may claim anything: no overflow, at most "very much".
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The JVM's thread ids in its own PID namespace and the node's (the same outside containers).
fn threads_in_namespace(pid: u32) -> HashMap<u32, u32> {
    super::native_thread::ThreadsInNamespace::of(pid).known().clone()
}

fn remove_in_root(pid: u32, path: &str) -> std::io::Result<()> {
    let (dir, file) = path.rsplit_once('/').unwrap_or(("/", path));
    let dir = crate::target_file::open_dir_in_root(Path::new("/proc"), pid, dir)?;
    let file = CString::new(file).map_err(std::io::Error::other)?;
    // SAFETY: valid directory fd and NUL-terminated name.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), file.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_recorder_writes_in_tmp_and_where_its_flags_say() {
        assert_eq!(jfr_writes_in(b"java\0-cp\0.\0App\0"), ["/tmp"]);
        let flags = b"java\0-Djava.io.tmpdir=/data/tmp\0-XX:FlightRecorderOptions:repository=/jfr,memorysize=64m\0App\0JAVA_TOOL_OPTIONS=-Djava.io.tmpdir=/tmp -Xmx1g\0";
        assert_eq!(jfr_writes_in(flags), ["/tmp", "/data/tmp", "/jfr"]);
        // A relative repository names the working directory, which is not looked at.
        assert_eq!(jfr_writes_in(b"-XX:FlightRecorderOptions=repository=rel\0"), ["/tmp"]);
    }

    #[test]
    fn java_frames_read_like_the_perf_map() {
        assert_eq!(java_frame("GroundTruth", "cpu60", "(J)J"), "GroundTruth.cpu60(long) [java]_[j]");
        assert_eq!(
            java_frame("java/util/HashMap", "put", "(Ljava/lang/Object;[[ILjava/lang/String;Z)V"),
            "java.util.HashMap.put(java.lang.Object, int[][], java.lang.String, boolean) [java]_[j]"
        );
        assert_eq!(java_frame("A", "run", "()V"), "A.run() [java]_[j]");
        assert_eq!(java_frame("A", "odd", "(Lbroken)V"), "A.odd(broken) [java]_[j]");
        assert_eq!(java_frame("A", "odd", "garbage"), "A.odd() [java]_[j]");
    }

    #[test]
    fn this_process_is_young() {
        let age = process_age(std::process::id()).unwrap();
        assert!(age < Duration::from_secs(600), "{age:?}");
    }

    #[test]
    fn sigquit_must_be_caught() {
        // A JVM: SIGQUIT (bit 2) caught.
        assert!(handles_sigquit("Name:\tjava\nSigCgt:\t0000000101005ccd\n"));
        // Started with -Xrs, or not a JVM at all.
        assert!(!handles_sigquit("SigCgt:\t0000000000000000\n"));
        assert!(!handles_sigquit("SigCgt:\tzz\n"));
        assert!(!handles_sigquit(""));
    }

    #[test]
    fn samples_weigh_their_threads_cpu_time() {
        let recording = Recording {
            name: "r".into(),
            cpu_at_start: HashMap::from([(1, 0), (2, 100), (3, 0)]),
            cpu_at_end: None,
            node_ids: HashMap::new(),
            writes_in: vec!["/tmp".into()],
            period_ns: 1e6,
            starting: Duration::ZERO,
        };
        let end = HashMap::from([(1, 3_000), (2, 1_100), (3, 500)]);
        let a = || vec!["main".to_owned(), "a".to_owned()];
        let b = || vec!["worker".to_owned(), "b".to_owned()];
        // Thread 1: 3 samples for 3000 ns; thread 2: 1 sample for 1000 ns; thread 3 unsampled.
        let samples = vec![(1, 0, a()), (1, 0, a()), (1, 0, a()), (2, 0, b())];
        let d = weigh(samples, &recording, &end, |tid| format!("T{tid}"));
        let counts: HashMap<_, _> = d.apportion(45).into_iter().collect();
        assert_eq!(counts[&a()], 30);
        assert_eq!(counts[&b()], 10);
        let t3 = vec!["T3 (JVM thread outside Java code)".to_owned()];
        assert_eq!(counts[&t3], 5);
        assert_eq!(d.threads, HashMap::from([(t3, vec![3])]), "its native stacks can take its place");
        assert_eq!(d.busiest_thread, Some(("T1".to_owned(), 3)), "the split within thread 1 is 3 reads' worth");
    }

    #[test]
    fn free_space_is_read_inside_the_process_root() {
        let free = free_bytes_in_root(std::process::id(), "/tmp").expect("this process's /tmp");
        assert!(free > 0);
        assert_eq!(free_bytes_in_root(std::process::id(), "/no/such/dir"), None);
    }

    #[test]
    fn a_garbage_recording_is_an_error_not_a_crash() {
        assert!(execution_samples(b"FLR\0\x00\x02\x00\x01garbage").is_err() || execution_samples(b"").is_ok());
        assert!(execution_samples(b"not a recording").is_err());
    }
}
