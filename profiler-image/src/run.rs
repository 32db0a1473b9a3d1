//! One agent run: resolve the targets, route each process to the sampler of its runtime,
//! sample for the window, and write the result stream.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eagle_proto::stream::TargetReport;
use eagle_proto::{Encoder, Header, Progress, Warning, WarningCode};

use crate::aggregate::Aggregate;
use crate::discovery::{ProcFs, ProcessInfo};
use crate::runtime::{self, ProcessTraits, Runtime};
use crate::sampler::ebpf::{EbpfSampler, ProcessEvents, FORCE_TRACEFS_ENV};
use crate::sampler::interpreter::{self, InterpreterSampler, Tool};
use crate::sampler::jit::{self, PerfMapRequests};
use crate::sampler::{ProcessEvent, Sampler, SamplerError};
use crate::target::Target;

/// Highest sampling frequency accepted: a limit the CLI shares (eagle-proto).
pub use eagle_proto::MAX_FREQUENCY_HZ;
/// How often samples are drained and symbolized: short enough that a process that exits is
/// usually named before it goes.
const COLLECT_EVERY: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub targets: Vec<Target>,
    pub duration: Duration,
    pub frequency_hz: u64,
    /// Node name for the header (hostname by default).
    pub node: String,
    /// Treat every process as this runtime instead of detecting it.
    pub runtime: Option<Runtime>,
    /// Python: add native (C extension) frames to the interpreted ones.
    pub python_native: bool,
}

impl AgentConfig {
    pub fn new(targets: Vec<Target>, duration: Duration, frequency_hz: u64) -> Self {
        Self { targets, duration, frequency_hz, node: default_node_name(), runtime: None, python_native: false }
    }
}

/// Why the agent could not produce a result at all. Partial results are not errors: they are
/// written, with warnings saying what is missing.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
}

/// What the run did, beyond the stream it wrote.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub samples: u64,
    pub stopped_early: bool,
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), AgentError> {
        if self.targets.is_empty() {
            return Err(AgentError::InvalidConfig("no targets: name at least one pid, container or pod".into()));
        }
        if self.duration.is_zero() {
            return Err(AgentError::InvalidConfig("the duration must be longer than 0".into()));
        }
        if !(1..=MAX_FREQUENCY_HZ).contains(&self.frequency_hz) {
            return Err(AgentError::InvalidConfig(format!(
                "frequency {} Hz is out of range: use 1 to {MAX_FREQUENCY_HZ} Hz (99 is a good default)",
                self.frequency_hz
            )));
        }
        Ok(())
    }
}

/// Samples the targets for the configured window and writes every stream line to `emit`.
///
/// `stop` ends the window early (Ctrl-C, SIGTERM from a deadline); what was sampled until then
/// is still written, with a warning. A pid that does not exist is an error; a container or pod
/// without processes yet is watched for the whole window.
pub fn run(config: &AgentConfig, stop: &AtomicBool, emit: &mut dyn FnMut(&str)) -> Result<Summary, AgentError> {
    config.validate()?;
    let proc = ProcFs::default();
    let resolved = proc.resolve(&config.targets);
    let missing: Vec<String> = resolved
        .iter()
        .filter(|(t, pids)| matches!(t, Target::Pid(_)) && pids.is_empty())
        .map(|(t, _)| t.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(AgentError::NotFound(format!(
            "no such process: {} (is it running, and in this pid namespace?)",
            missing.join(", ")
        )));
    }

    let ebpf = EbpfSampler::start(config.frequency_hz, proc.clone())?;
    let encoder = Encoder;
    let started = Instant::now();
    let mut run = Run {
        proc,
        config: config.clone(),
        ebpf,
        interpreters: HashMap::new(),
        perf_maps: PerfMapRequests::new(),
        jvms: Vec::new(),
        processes: HashMap::new(),
        requested: HashSet::new(),
        warnings: Vec::new(),
    };
    if let Some(how) = match run.ebpf.process_events() {
        ProcessEvents::BtfTracepoints => None,
        ProcessEvents::Tracefs => Some("through the tracefs mounted on this machine"),
        ProcessEvents::PrivateTracefs => Some("through a tracefs the agent mounted privately"),
    } {
        run.warnings.push(Warning {
            code: WarningCode::SamplerFallback,
            pid: None,
            message: format!(
                "new processes are followed {how}, not by BTF-typed tracepoints: this kernel offers no BTF (/sys/kernel/btf/vmlinux), or {FORCE_TRACEFS_ENV} is set"
            ),
        });
    }
    // Every sampler starts on the processes known now, together: one window for all.
    for pid in resolved.values().flatten() {
        run.add(*pid, true);
    }
    emit(&encoder.header(&Header {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        node: config.node.clone(),
        kernel: kernel_release(),
        started_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        duration_ms: config.duration.as_millis() as u64,
        frequency_hz: config.frequency_hz,
        targets: resolved.iter().map(|(t, pids)| TargetReport { target: t.to_string(), pids: pids.clone() }).collect(),
    }));
    for (target, pids) in &resolved {
        if pids.is_empty() {
            emit(&encoder.warning(&Warning {
                code: WarningCode::NoProcesses,
                pid: None,
                message: format!("{target} has no processes yet; watching for them during the window"),
            }));
        }
    }

    let watches_groups = config.targets.iter().any(|t| !matches!(t, Target::Pid(_)));
    let mut aggregate = Aggregate::default();
    let mut last_progress = Instant::now();
    let mut ended = None;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= config.duration {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            ended = Some(format!(
                "stopped by a signal after {:.1}s of the {:.1}s window",
                elapsed.as_secs_f64(),
                config.duration.as_secs_f64()
            ));
            break;
        }
        std::thread::sleep(COLLECT_EVERY.min(config.duration - elapsed));
        run.collect(&mut aggregate, started)?;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            if watches_groups {
                // New processes in the target containers (exec'd in, restarted).
                for pid in run.proc.resolve(&config.targets).into_values().flatten() {
                    if !run.processes.contains_key(&pid) {
                        run.add(pid, true);
                    }
                }
            }
            run.refresh_names();
            run.refresh_perf_maps();
            emit(&encoder.progress(&Progress {
                elapsed_ms: started.elapsed().as_millis() as u64,
                samples: run.samples(),
                processes: run.live() as u64,
            }));
            for w in run.warnings.drain(..) {
                emit(&encoder.warning(&w));
            }
        }
        if !watches_groups && run.live() == 0 {
            let at = started.elapsed().as_secs_f64();
            ended = Some(format!(
                "every target process exited after {at:.1}s: the profile covers {at:.1}s of the {:.1}s window",
                config.duration.as_secs_f64()
            ));
            break;
        }
    }
    // A last map dump names what the JIT compiled since the previous one.
    run.refresh_perf_maps();
    run.collect(&mut aggregate, started)?;
    run.refresh_names();
    run.finish(&mut aggregate);
    if let Some(message) = &ended {
        run.warnings.push(Warning { code: WarningCode::EndedEarly, pid: None, message: message.clone() });
    }
    let unwind_warnings = run.ebpf.take_warnings(true);
    run.warnings.extend(unwind_warnings);
    let lost = run.ebpf.lost_samples();
    if lost > 0 {
        let total = run.ebpf.samples().max(1);
        run.warnings.push(Warning {
            code: WarningCode::SamplesLost,
            pid: None,
            message: format!(
                "{lost} of {total} samples ({:.1}%) lost to stack-map collisions or full maps",
                lost as f64 * 100.0 / total as f64
            ),
        });
    }
    for w in run.warnings.drain(..) {
        emit(&encoder.warning(&w));
    }
    let samples = aggregate.samples();
    let records = aggregate.into_records(&run.processes);
    for line in encoder.payload(&records, lost) {
        emit(&line);
    }
    Ok(Summary { samples, stopped_early: ended.is_some() })
}

/// The samplers of one run and the process bookkeeping: names for the payload, routing by
/// runtime, warnings for the user.
struct Run {
    proc: ProcFs,
    config: AgentConfig,
    ebpf: EbpfSampler,
    /// One sampler per interpreted runtime, started on its first process; `None` once its
    /// tool turned out to be missing (reported once).
    interpreters: HashMap<Runtime, Option<InterpreterSampler>>,
    perf_maps: PerfMapRequests,
    /// JVMs whose perf map is refreshed while sampling.
    jvms: Vec<u32>,
    processes: HashMap<u32, ProcessInfo>,
    requested: HashSet<u32>,
    warnings: Vec<Warning>,
}

impl Run {
    fn add(&mut self, pid: u32, requested: bool) {
        let Some(info) = self.proc.info(pid) else { return };
        if requested {
            self.requested.insert(pid);
        }
        let runtime = self.config.runtime.unwrap_or_else(|| runtime::detect(&ProcessTraits::read(&self.proc, pid)));
        let result = self.route(pid, runtime);
        let name = info.name.clone();
        self.processes.insert(pid, info);
        match result {
            Ok(sampler) => self.info(pid, format!("{name} ({pid}): {runtime}, sampled by {sampler}")),
            Err(e) => self.warnings.push(Warning {
                code: WarningCode::SamplerFailed,
                pid: Some(pid),
                message: format!("{name} ({pid}): {e}"),
            }),
        }
    }

    /// Hands a process to the sampler of its runtime; native sampling is the fallback.
    fn route(&mut self, pid: u32, runtime: Runtime) -> Result<&'static str, SamplerError> {
        if let Some(sampler) = self.interpreter(runtime) {
            let name = sampler.name();
            match sampler.add(pid) {
                Ok(()) => return Ok(name),
                Err(e) => self.warnings.push(Warning {
                    code: WarningCode::SamplerFailed,
                    pid: Some(pid),
                    message: format!("{name} for {pid}: {e}; sampling it natively instead"),
                }),
            }
        }
        self.ebpf.add(pid)?;
        match runtime {
            Runtime::Java => {
                self.ebpf.mark_jit(pid, jit::JAVA_SUFFIX);
                self.jvms.push(pid);
                let cmdline = std::fs::read(self.proc.path().join(format!("{pid}/cmdline"))).unwrap_or_default();
                let mut hint = String::from(
                    "async-profiler is not in this image: Java is sampled natively with the JIT's perf map",
                );
                if let Err(e) = self.perf_maps.request(pid) {
                    hint.push_str(&format!(" (unavailable: {e}; Java frames show as [unknown])"));
                }
                if !jit::jvm_preserves_frame_pointers(&cmdline) {
                    hint.push_str("; start the JVM with -XX:+PreserveFramePointer to see whole Java stacks, not only their leaves");
                }
                self.warnings.push(Warning {
                    code: WarningCode::SamplerFallback,
                    pid: Some(pid),
                    message: format!("java ({pid}): {hint}"),
                });
                Ok("ebpf+perf-map")
            }
            Runtime::Node => {
                self.ebpf.mark_jit(pid, jit::JS_SUFFIX);
                let cmdline = std::fs::read(self.proc.path().join(format!("{pid}/cmdline"))).unwrap_or_default();
                if !jit::node_writes_perf_map(&cmdline) {
                    self.warnings.push(Warning {
                        code: WarningCode::SamplerFallback,
                        pid: Some(pid),
                        message: format!("node ({pid}): JavaScript frames need `node --perf-basic-prof`; without it only native frames are named"),
                    });
                }
                Ok("ebpf+perf-map")
            }
            _ => Ok("ebpf"),
        }
    }

    fn refresh_perf_maps(&mut self) {
        self.jvms.retain(|pid| self.proc.is_alive(*pid));
        for pid in &self.jvms {
            let _ = self.perf_maps.request(*pid);
        }
    }

    /// The sampler of an interpreted runtime, started on first use.
    fn interpreter(&mut self, runtime: Runtime) -> Option<&mut InterpreterSampler> {
        let tool: Tool = match runtime {
            Runtime::Python => interpreter::PY_SPY,
            Runtime::Ruby => interpreter::RBSPY,
            _ => return None,
        };
        if !self.interpreters.contains_key(&runtime) {
            let sampler = match InterpreterSampler::find(tool) {
                Some(binary) => InterpreterSampler::new(tool, binary, self.config.frequency_hz, self.config.python_native)
                    .map_err(|e| e.to_string()),
                None => Err(format!(
                    "{} is not installed: {runtime} processes show interpreter frames only; install it ({}) or use the eagle-agent image, which has it",
                    tool.name, tool.install
                )),
            };
            let sampler = sampler
                .map_err(|why| {
                    self.warnings.push(Warning { code: WarningCode::SamplerMissing, pid: None, message: why })
                })
                .ok();
            self.interpreters.insert(runtime, sampler);
        }
        self.interpreters.get_mut(&runtime).and_then(Option::as_mut)
    }

    fn info(&mut self, pid: u32, message: String) {
        self.warnings.push(Warning { code: WarningCode::InfoSampler, pid: Some(pid), message });
    }

    fn collect(&mut self, aggregate: &mut Aggregate, started: Instant) -> Result<(), AgentError> {
        let mut events = Vec::new();
        self.ebpf.collect(aggregate, &mut events)?;
        self.warnings.extend(self.ebpf.take_warnings(false));
        for p in self.interpreters.values_mut().flatten() {
            p.collect(aggregate, &mut events)?;
            for (pid, message) in p.take_warnings() {
                self.warnings.push(Warning { code: WarningCode::SamplerFailed, pid: Some(pid), message });
            }
        }
        self.handle(events, started);
        Ok(())
    }

    fn finish(&mut self, aggregate: &mut Aggregate) {
        for p in self.interpreters.values_mut().flatten() {
            p.finish(aggregate);
            for (pid, message) in p.take_warnings() {
                self.warnings.push(Warning { code: WarningCode::SamplerFailed, pid: Some(pid), message });
            }
        }
    }

    fn live(&self) -> usize {
        self.ebpf.live() + self.interpreters.values().flatten().map(|p| p.live()).sum::<usize>()
    }

    fn samples(&self) -> u64 {
        self.ebpf.samples() + self.interpreters.values().flatten().map(|p| p.samples()).sum::<u64>()
    }

    /// Names change on exec (a shell that execs the command, a launcher script): keep the
    /// latest name of every live process.
    fn refresh_names(&mut self) {
        for (pid, info) in self.processes.iter_mut() {
            if let Some(name) = self.proc.name(*pid) {
                info.name = name;
            }
        }
    }

    /// A process that became an interpreter (a child that exec'd python, a launcher shell)
    /// goes from native sampling to that interpreter's sampler.
    fn reroute_interpreted(&mut self, pid: u32) {
        if !self.proc.is_alive(pid) {
            return;
        }
        let runtime = self.config.runtime.unwrap_or_else(|| runtime::detect(&ProcessTraits::read(&self.proc, pid)));
        if matches!(runtime, Runtime::Python | Runtime::Ruby) && self.interpreter(runtime).is_some() {
            self.ebpf.remove(pid);
            let name = self.proc.name(pid).unwrap_or_default();
            match self.route(pid, runtime) {
                Ok(sampler) => self.info(pid, format!("{name} ({pid}): {runtime}, sampled by {sampler}")),
                Err(e) => self.warnings.push(Warning {
                    code: WarningCode::SamplerFailed,
                    pid: Some(pid),
                    message: format!("{name} ({pid}): {e}"),
                }),
            }
        }
    }

    fn handle(&mut self, events: Vec<ProcessEvent>, started: Instant) {
        for event in events {
            match event {
                ProcessEvent::Found { pid, root } => {
                    // A child gone before it could be read inherits its parent's name and
                    // container: it was forked from it.
                    let info = self.proc.info(pid).or_else(|| {
                        self.processes.get(&root).map(|r| ProcessInfo {
                            pid,
                            name: r.name.clone(),
                            container: r.container.clone(),
                        })
                    });
                    let Some(info) = info else { continue };
                    self.processes.insert(pid, info);
                    self.reroute_interpreted(pid);
                }
                ProcessEvent::Execed { pid } => {
                    // Named now, not at the next refresh: a command started through a shell
                    // may exit before that, and would be reported and graphed as `sh`.
                    if let (Some(info), Some(name)) = (self.processes.get_mut(&pid), self.proc.name(pid)) {
                        info.name = name;
                    }
                    self.reroute_interpreted(pid)
                }
                ProcessEvent::Exited { pid } if self.requested.contains(&pid) => {
                    let name = self.processes.get(&pid).map_or("?", |p| p.name.as_str());
                    self.warnings.push(Warning {
                        code: WarningCode::ProcessExited,
                        pid: Some(pid),
                        message: format!("process {pid} ({name}) exited after {:.1}s", started.elapsed().as_secs_f64()),
                    });
                }
                ProcessEvent::Exited { .. } => {}
            }
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The node name for the header: `NODE_NAME` (set from the downward API in a Job), else the
/// hostname.
pub fn default_node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| "localhost".into())
}
