//! One agent run: resolve the targets, route each process to the sampler of its runtime,
//! sample for the window, and write the result stream.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eagle_proto::stream::TargetReport;
use eagle_proto::{
    CgroupCpuStat, Encoder, Header, ProfileMode, Progress, Warning, WarningCode, THROTTLED_FRAME, WAITING_FRAME,
};

use crate::cgroup_cpu::{self, CgroupCpuWatch};

use crate::aggregate::Aggregate;
use crate::discovery::{ProcFs, ProcessInfo};
use crate::runtime::{self, ProcessTraits, Runtime};
use crate::sampler::ebpf::{EbpfSampler, ProcessEvents, FORCE_TRACEFS_ENV};
use crate::sampler::interpreter::{self, InterpreterSampler, Tool};
use crate::sampler::jfr::{self, JfrSampler};
use crate::sampler::jit::{self, PerfMapRequests};
use crate::sampler::net::NetCollector;
use crate::sampler::oncpu::{Distribution, OnCpu};
use crate::sampler::{self, ProcessEvent, RuntimeSampler, Sampler, SamplerError};
use crate::target::Target;

/// Highest sampling frequency accepted: a limit the CLI shares (eagle-proto).
pub use eagle_proto::MAX_FREQUENCY_HZ;
/// How often samples are drained and symbolized: short enough that a process that exits is
/// usually named before it goes.
const COLLECT_EVERY: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a JVM may take to install its signal handlers (and so be attachable) after it
/// started.
const JVM_STARTUP: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub targets: Vec<Target>,
    /// The namespaces a cluster run declared: each target must be a container the node's
    /// kubelet places in one of them ([`crate::kubelet_record`]). Empty: no check.
    pub namespaces: Vec<String>,
    pub duration: Duration,
    pub frequency_hz: u64,
    /// Node name for the header (hostname by default).
    pub node: String,
    /// Treat every process as this runtime instead of detecting it.
    pub runtime: Option<Runtime>,
    /// Python: add native (C extension) frames to the interpreted ones.
    pub python_native: bool,
    /// Also count the targets' TCP traffic per peer and their HTTP/1.x requests.
    pub net: bool,
    /// Take stacks; `false`: the network side alone (`kubectl eagle net`): no CPU sampling,
    /// no unwind tables, no runtime sampler attached to a target, nothing symbolized. The eBPF
    /// program still follows the targets' forks, execs and exits.
    pub stacks: bool,
    /// What to measure.
    pub mode: ProfileMode,
    /// Off-CPU blocks shorter than this are not counted.
    pub min_block_us: u64,
}

impl AgentConfig {
    pub fn new(targets: Vec<Target>, duration: Duration, frequency_hz: u64) -> Self {
        Self {
            targets,
            namespaces: Vec::new(),
            duration,
            frequency_hz,
            node: default_node_name(),
            runtime: None,
            python_native: false,
            net: false,
            stacks: true,
            mode: ProfileMode::Cpu,
            min_block_us: eagle_proto::DEFAULT_MIN_BLOCK_US,
        }
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
    /// A target outside what the run may profile (a namespace it did not declare).
    #[error("{0}")]
    Forbidden(String),
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

/// A target found at the start that exited before the samplers could take it (loading the
/// eBPF program takes a while): nothing of it is in the graph, and the report says why.
fn gone_before_sampling(pid: u32) -> Warning {
    Warning {
        code: WarningCode::ProcessExited,
        pid: Some(pid),
        message: format!(
            "process {pid} exited before sampling began (between finding it and starting the samplers): nothing of it is in the graph"
        ),
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
    if !config.namespaces.is_empty() {
        let dir = crate::kubelet_record::record_dir(&proc);
        let record = crate::kubelet_record::read_record(&dir).map_err(|e| {
            AgentError::Forbidden(format!(
                "cannot read the kubelet's record of this node's containers ({}: {e}), so the containers of the declared namespaces cannot be told from others: nothing was profiled",
                dir.display()
            ))
        })?;
        crate::kubelet_record::check_declared(&config.targets, &config.namespaces, &record)
            .map_err(AgentError::Forbidden)?;
    }
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

    let ebpf = EbpfSampler::start(config.frequency_hz, proc.clone(), config.mode, config.min_block_us, config.stacks)?;
    let mut net = if config.net { Some(NetCollector::start(true)?) } else { None };
    // Loading the programs parsed the kernel's BTF (tens of MB, freed now): not resident
    // through the window.
    crate::memory::give_back_freed();
    let encoder = Encoder;
    let started = Instant::now();
    // The window's start as the header states it: now, not when the header is written, after
    // every sampler was added (attaching Flight Recorder took 4 s of a 6 s window on a loaded
    // machine, and the header named a window that ended 4 s after the samples did).
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut run = Run {
        proc,
        config: config.clone(),
        ebpf,
        interpreters: HashMap::new(),
        interpreted: HashMap::new(),
        recorded: HashMap::new(),
        perf_maps: PerfMapRequests::new(),
        jvms: Vec::new(),
        starting_jvms: Vec::new(),
        processes: HashMap::new(),
        requested: HashSet::new(),
        warnings: Vec::new(),
        // Off the CPU, time held back by a CPU limit is part of the graph: the cgroups' own
        // counters are reported beside it.
        cgroups: (config.mode != ProfileMode::Cpu).then(|| CgroupCpuWatch::new(ProcFs::default())),
    };
    // Samples are counted from each process's `add` below to this instant, which the header
    // states as the window, whenever the last collection comes.
    run.ebpf.end_window_at(started + config.duration)?;
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
    if let Some(said) = run.cgroups.as_ref().and_then(|c| c.view().to_warning()) {
        run.warnings.push(said);
    }
    // Every sampler starts on the processes known now, together: one window for all.
    for pid in resolved.values().flatten() {
        if !run.add(*pid, true) {
            // The header names it as a target: its absence from the graph must be explained.
            run.warnings.push(gone_before_sampling(*pid));
        }
    }
    watch_network(&mut net, &run)?;
    let mut aggregate = Aggregate::default();
    emit(&encoder.header(&Header {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        node: config.node.clone(),
        kernel: kernel_release(),
        started_unix_ms,
        duration_ms: config.duration.as_millis() as u64,
        frequency_hz: config.frequency_hz,
        targets: resolved.iter().map(|(t, pids)| TargetReport { target: t.to_string(), pids: pids.clone() }).collect(),
        mode: config.mode,
        min_block_us: (config.mode != ProfileMode::Cpu).then_some(config.min_block_us),
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
    let mut last_progress = Instant::now();
    let mut ended = None;
    // The cgroups' counters as the window ends, read before the collection that follows it
    // (which may take seconds of symbolizing on a loaded machine).
    let mut at_window_end = None;
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
        if at_window_end.is_none() && started.elapsed() >= config.duration {
            at_window_end = Some(run.cgroup_stats());
        }
        run.collect(&mut aggregate, started)?;
        if let Some(net) = &mut net {
            net.poll();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            if watches_groups {
                // New processes in the target containers (exec'd in, restarted).
                for pid in run.proc.resolve(&config.targets).into_values().flatten() {
                    if !run.processes.contains_key(&pid) {
                        // One that exited since this look was never announced: nothing to say.
                        run.add(pid, true);
                    }
                }
            }
            let sampled = run.ebpf.take_sampled();
            run.refresh_names(|pid| sampled.contains(&pid));
            watch_network(&mut net, &run)?;
            run.refresh_perf_maps();
            run.attach_started_jvms();
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
    // The runtimes' samplers measure what their recordings weigh up to now, not up to the
    // last collection below (seconds of symbolizing on a loaded machine).
    for sampler in run.interpreters.values_mut().flatten() {
        sampler.window_ended();
    }
    // A last map dump names what the JIT compiled since the previous one.
    run.refresh_perf_maps();
    for pid in std::mem::take(&mut run.starting_jvms) {
        run.warnings.push(Warning {
            code: WarningCode::SamplerFallback,
            pid: Some(pid),
            message: format!(
                "java ({pid}): it did not handle SIGQUIT yet when the window ended (still starting?): sampled natively, only the JIT's leaves without -XX:+PreserveFramePointer"
            ),
        });
    }
    run.ebpf.close_blocks();
    run.ebpf.name_all_next();
    let mut cgroup_stats = at_window_end.unwrap_or_else(|| run.cgroup_stats());
    run.collect(&mut aggregate, started)?;
    run.refresh_names(|_| true);
    run.finish(&mut aggregate);
    if let Some(watch) = &run.cgroups {
        let throttled = aggregate.leaf_totals(THROTTLED_FRAME);
        let waiting = aggregate.leaf_totals(WAITING_FRAME);
        cgroup_cpu::add_measured(&mut cgroup_stats, watch, &throttled, &waiting);
    }
    run.warnings.extend(cgroup_stats.iter().map(CgroupCpuStat::to_warning));
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
    let lines = match net {
        Some(net) => {
            let (net, unreadable) = net.finish(started.elapsed().as_millis() as u64, &run.processes);
            for why in unreadable {
                emit(&encoder.warning(&Warning {
                    code: WarningCode::SamplerFailed,
                    pid: None,
                    message: format!("listen-queue overflows not counted for {why}"),
                }));
            }
            if net.lost_events > 0 {
                emit(&encoder.warning(&Warning {
                    code: WarningCode::SamplesLost,
                    pid: None,
                    message: format!(
                        "{} network events were not counted (the kernel side's maps or ring buffer were full)",
                        net.lost_events
                    ),
                }));
            }
            encoder.payload_with_net(&aggregate.into_records(&run.processes), lost, &net)
        }
        None => encoder.payload(&aggregate.into_records(&run.processes), lost),
    };
    for line in lines {
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
    /// One sampler per runtime that has its own (py-spy, rbspy), started on its first process;
    /// `None` once its tool turned out to be missing (reported once).
    interpreters: HashMap<Runtime, Option<Box<dyn RuntimeSampler>>>,
    /// Processes whose frames come from their runtime's own sampler, and what eBPF saw of
    /// them on the CPU meanwhile: the magnitude their stacks are scaled to (see `oncpu`).
    interpreted: HashMap<u32, Interpreted>,
    /// Recordings that ended before the window did (the process exited, or the sampler gave
    /// up on it), kept until the window's last eBPF samples are in.
    recorded: HashMap<u32, Result<Distribution, String>>,
    perf_maps: PerfMapRequests,
    /// JVMs whose perf map is refreshed while sampling.
    jvms: Vec<u32>,
    /// JVMs too young to handle SIGQUIT yet (`profile -- java ...`): sampled natively, and
    /// handed to Flight Recorder as soon as they can be attached to.
    starting_jvms: Vec<u32>,
    processes: HashMap<u32, ProcessInfo>,
    requested: HashSet<u32>,
    warnings: Vec<Warning>,
    /// Off-CPU and wall modes: the CPU-limit counters of the processes' cgroups.
    cgroups: Option<CgroupCpuWatch>,
}

impl Run {
    fn cgroup_stats(&self) -> Vec<CgroupCpuStat> {
        self.cgroups.as_ref().map(CgroupCpuWatch::finish).unwrap_or_default()
    }

    /// Starts sampling `pid`; `false` when it is gone already (it exited since it was found).
    fn add(&mut self, pid: u32, requested: bool) -> bool {
        let Some(info) = self.proc.info(pid) else { return false };
        if requested {
            self.requested.insert(pid);
        }
        let runtime = self.config.runtime.unwrap_or_else(|| runtime::detect(&ProcessTraits::read(&self.proc, pid)));
        let result = self.route(pid, runtime, false);
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.watch(pid);
        }
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
        true
    }

    /// Hands a process to the sampler of its runtime. eBPF samples every process, also those
    /// whose frames another sampler reads: their on-CPU count is the magnitude of their stacks,
    /// and their native stacks the fallback. `in_ebpf`: eBPF follows it already (a forked child).
    fn route(&mut self, pid: u32, runtime: Runtime, in_ebpf: bool) -> Result<&'static str, SamplerError> {
        if !in_ebpf {
            self.ebpf.add(pid)?;
        }
        if !self.config.stacks {
            // Nothing is asked of the process itself: no Flight Recorder, no perf map.
            return Ok("nothing (no stacks: the network side only)");
        }
        if matches!(runtime, Runtime::Java | Runtime::Ruby) {
            // Its threads outside Java code (compilers, GC) are shown with their native stacks,
            // which only eBPF sees: counted per thread from now on, while Flight Recorder is
            // being attached too (which keeps the compilers busy with its own Java code). So
            // are a Ruby process's threads that use the CPU without the interpreter lock.
            self.ebpf.count_by_thread(pid);
        }
        // Why the runtime's own sampler could not take it, when it could not.
        let mut refused = None;
        if let Some(sampler) = self.interpreter(runtime) {
            let name = sampler.name();
            match sampler.add(pid) {
                Ok(()) => {
                    self.interpreted.insert(pid, Interpreted { runtime, sampler: name, on_cpu: OnCpu::default() });
                    if runtime == Runtime::Java {
                        // Its native stacks, the fallback, name JIT code from a perf map if
                        // one is there.
                        self.ebpf.mark_jit(pid, jit::JAVA_SUFFIX);
                    }
                    return Ok(name);
                }
                // A JVM that has only just started does not handle SIGQUIT yet: asked again
                // once it does.
                Err(SamplerError::Unsupported(e))
                    if runtime == Runtime::Java
                        && e == jfr::NO_SIGQUIT
                        && jfr::process_age(pid).is_some_and(|age| age < JVM_STARTUP) =>
                {
                    self.ebpf.mark_jit(pid, jit::JAVA_SUFFIX);
                    self.starting_jvms.push(pid);
                    return Ok("ebpf, until it can be attached to");
                }
                // A JVM's refusal is said once, below, with what native sampling shows of it.
                Err(e) if runtime == Runtime::Java => refused = Some(format!("Flight Recorder is unavailable ({e})")),
                Err(e) => self.warnings.push(Warning {
                    code: WarningCode::SamplerFailed,
                    pid: Some(pid),
                    message: format!("{name} for {pid}: {e}; sampling it natively instead"),
                }),
            }
        }
        // Sampled natively: its samples are counted per process again.
        drop(self.ebpf.take_thread_stacks(pid));
        match runtime {
            Runtime::Java => {
                self.ebpf.mark_jit(pid, jit::JAVA_SUFFIX);
                let cmdline = std::fs::read(self.proc.path().join(format!("{pid}/cmdline"))).unwrap_or_default();
                let mut hint = refused.map_or_else(String::new, |why| format!("{why}; "));
                hint.push_str("Java is sampled natively with the JIT's perf map");
                // A JVM that refused attach is not asked again, for a perf map either.
                let attach_refused = ["SIGQUIT", "-Xrs", "DisableAttachMechanism"].iter().any(|w| hint.contains(w));
                if attach_refused {
                    hint.push_str(" (not asked for either; Java frames show as [unknown])");
                } else {
                    match self.perf_maps.request(pid) {
                        // Asked again while sampling.
                        Ok(()) => self.jvms.push(pid),
                        Err(e) => hint.push_str(&format!(" (unavailable: {e}; Java frames show as [unknown])")),
                    }
                }
                if !jit::jvm_preserves_frame_pointers(&cmdline) {
                    hint.push_str(", and only the JIT's leaves without -XX:+PreserveFramePointer");
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

    /// Hands JVMs that were too young to attach to over to Flight Recorder once they handle
    /// SIGQUIT; one that still does not after [`JVM_STARTUP`] is reported and stays native.
    fn attach_started_jvms(&mut self) {
        for pid in std::mem::take(&mut self.starting_jvms) {
            if !self.proc.is_alive(pid) {
                continue;
            }
            let ready = jfr::attach_allowed(pid).is_ok();
            let young = jfr::process_age(pid).is_some_and(|age| age < JVM_STARTUP);
            if !ready && young {
                self.starting_jvms.push(pid);
                continue;
            }
            let name = self.proc.name(pid).unwrap_or_default();
            match self.route(pid, Runtime::Java, true) {
                Ok(sampler) => self.info(pid, format!("{name} ({pid}): java, sampled by {sampler}")),
                Err(e) => self.warnings.push(Warning {
                    code: WarningCode::SamplerFailed,
                    pid: Some(pid),
                    message: format!("{name} ({pid}): {e}"),
                }),
            }
        }
    }

    fn refresh_perf_maps(&mut self) {
        // A JVM that stops answering is not asked again: no retry storm.
        let processes = &self.processes;
        let alive = |pid: u32| self.proc.is_same_alive(pid, processes.get(&pid).and_then(|p| p.start_ticks));
        self.jvms.retain(|pid| alive(*pid) && self.perf_maps.request(*pid).is_ok());
    }

    /// The sampler of a runtime that has its own, started on first use.
    fn interpreter(&mut self, runtime: Runtime) -> Option<&mut Box<dyn RuntimeSampler>> {
        // Those samplers read where a runtime is while it runs, which off-CPU and wall
        // profiles do not count in: their processes show native stacks (said once).
        if self.config.mode != ProfileMode::Cpu {
            if matches!(runtime, Runtime::Python | Runtime::Ruby | Runtime::Java)
                && self.interpreters.insert(runtime, None).is_none()
            {
                self.warnings.push(Warning {
                    code: WarningCode::SamplerFallback,
                    pid: None,
                    message: format!(
                        "{runtime} processes show native stacks in --mode {}: the {runtime} sampler reads stacks on the CPU only, so interpreted frames are not named off-CPU",
                        self.config.mode
                    ),
                });
            }
            return None;
        }
        let tool: Tool = match runtime {
            // py-spy's library, in the agent; its separate program only for native frames.
            Runtime::Python if !self.config.python_native => {
                return self
                    .interpreters
                    .entry(runtime)
                    .or_insert_with(|| Some(Box::new(sampler::python::sampler(self.config.frequency_hz))))
                    .as_mut();
            }
            Runtime::Python => interpreter::PY_SPY,
            // rbspy's library, in the agent.
            Runtime::Ruby => {
                return self
                    .interpreters
                    .entry(runtime)
                    .or_insert_with(|| Some(Box::new(sampler::ruby::sampler(self.config.frequency_hz))))
                    .as_mut();
            }
            Runtime::Java => {
                if !self.interpreters.contains_key(&runtime) {
                    let sampler = JfrSampler::new(self.config.duration);
                    if sampler.is_none() {
                        self.warnings.push(Warning {
                            code: WarningCode::SamplerMissing,
                            pid: None,
                            message: "jattach is not installed: Java processes are sampled natively, and show whole Java stacks only when started with -XX:+PreserveFramePointer; install it (`apt-get install jattach`) or use the eagle-agent image, which has it".into(),
                        });
                    }
                    self.interpreters.insert(runtime, sampler.map(|s| Box::new(s) as Box<dyn RuntimeSampler>));
                }
                return self.interpreters.get_mut(&runtime).and_then(Option::as_mut);
            }
            _ => return None,
        };
        if !self.interpreters.contains_key(&runtime) {
            let sampler = match InterpreterSampler::find(tool) {
                Some(binary) => InterpreterSampler::new(tool, binary, self.config.frequency_hz, self.config.python_native)
                    .map(|s| Box::new(s) as Box<dyn RuntimeSampler>)
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
        let mut fresh = Aggregate::default();
        self.ebpf.collect(&mut fresh, &mut events)?;
        self.warnings.extend(self.ebpf.take_warnings(false));
        for (pid, sampler, frames, count) in fresh.into_entries() {
            match self.interpreted.get_mut(&pid) {
                Some(p) => p.on_cpu.add(frames, count),
                None => aggregate.add(pid, sampler, frames, count),
            }
        }
        for sampler in self.interpreters.values_mut().flatten() {
            self.recorded.extend(sampler.ended());
        }
        self.handle(events, started, aggregate);
        Ok(())
    }

    fn finish(&mut self, aggregate: &mut Aggregate) {
        for sampler in self.interpreters.values_mut().flatten() {
            self.recorded.extend(sampler.finish());
        }
        let mut pids: Vec<u32> = self.interpreted.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let process = self.interpreted.remove(&pid).expect("listed above");
            let recorded = self.recorded.remove(&pid).unwrap_or_else(|| Err("no recording".into()));
            self.settle(pid, process, recorded, aggregate);
        }
    }

    /// Puts an interpreted process's stacks into the graph, in CPU time: the runtime sampler's
    /// distribution scaled to the process's eBPF on-CPU samples; its native stacks when the
    /// runtime sampler got nothing.
    fn settle(&mut self, pid: u32, process: Interpreted, recorded: Result<Distribution, String>, out: &mut Aggregate) {
        let Interpreted { sampler, on_cpu, .. } = process;
        let threads = self.ebpf.take_thread_stacks(pid);
        let why = match recorded {
            Ok(d) if !d.is_empty() => {
                for (frames, count) in d.apportion_threads(on_cpu.samples, &threads) {
                    out.add(pid, sampler, frames, count);
                }
                let name = self.processes.get(&pid).map_or("?", |p| p.name.as_str()).to_owned();
                // The stream's counts are the CPU clock's; the shares among them are as precise
                // as the weighted reads they come from.
                let effective = d.effective_samples().min(on_cpu.samples as f64);
                let within = d.busiest_thread.as_ref().map_or(String::new(), |(thread, reads)| {
                    format!("; the split within its busiest thread, {thread}, as precise as {reads} samples")
                });
                self.warnings.push(Warning {
                    code: WarningCode::InfoPrecision,
                    pid: Some(pid),
                    message: format!(
                        "{name} ({pid}): {} stacks read by {sampler}, weighed by CPU time: shares as precise as {effective:.0} samples{within}",
                        d.samples
                    ),
                });
                return;
            }
            // Idle all along: no stacks, and no CPU time to show.
            Ok(_) if on_cpu.samples == 0 => return,
            Ok(d) if d.samples == 0 => match &d.note {
                Some(why) => format!("{sampler} read no stack in the window ({why})"),
                None => format!("{sampler} read no stack in the window"),
            },
            Ok(d) => format!("{sampler} read {} stacks but none while it used the CPU", d.samples),
            Err(why) => why,
        };
        let name = self.processes.get(&pid).map_or("?", |p| p.name.as_str()).to_owned();
        self.warnings.push(Warning {
            code: WarningCode::SamplerFailed,
            pid: Some(pid),
            message: format!("{name} ({pid}): {why}; its native stacks are shown instead"),
        });
        for (frames, count) in on_cpu.native {
            out.add(pid, "ebpf", frames, count);
        }
    }

    fn live(&self) -> usize {
        self.ebpf.live() + self.interpreters.values().flatten().map(|p| p.live()).sum::<usize>()
    }

    /// Samples on the CPU clock so far, of every process (interpreted ones included: their
    /// stacks are scaled to these).
    fn samples(&self) -> u64 {
        self.ebpf.samples()
    }

    /// Names change on exec (read then, see [`Run::handle`]) and when a process renames itself
    /// (`prctl(PR_SET_NAME)`, as libuv's `process.title` does): keep the latest name of each
    /// live process in `which`, and never take the name of a later process that reuses the pid
    /// of one that ended. During the window `which` is the processes sampled since the last
    /// refresh: only they gained samples under their name (reading every target's name each
    /// second was most of an idle agent's reads of `/proc`); at the end, every process.
    fn refresh_names(&mut self, which: impl Fn(u32) -> bool) {
        for (pid, info) in self.processes.iter_mut().filter(|(pid, _)| which(**pid)) {
            // The sampler's exit watch where it has one, before a read of `/proc`.
            let alive = self.ebpf.alive_now(*pid).unwrap_or_else(|| self.proc.is_same_alive(*pid, info.start_ticks));
            if !alive {
                continue;
            }
            if let Some(name) = self.proc.name(*pid) {
                info.name = name;
            }
        }
    }

    /// A process that became an interpreter (a child that exec'd python, a launcher shell) gets
    /// that interpreter's sampler; one that exec'd away from an interpreter ends its recording,
    /// which is settled with the on-CPU samples seen until then, and is sampled natively on.
    fn reroute(&mut self, pid: u32, execed: bool, aggregate: &mut Aggregate) {
        if let Some(current) = self.interpreted.get(&pid) {
            if !execed {
                return;
            }
            // Its recording read the program it ran before the exec.
            let runtime = current.runtime;
            let process = self.interpreted.remove(&pid).expect("looked up above");
            let recorded = self
                .interpreters
                .get_mut(&runtime)
                .and_then(|s| s.as_mut()?.stop(pid))
                .or_else(|| self.recorded.remove(&pid))
                .unwrap_or_else(|| Err("no recording".into()));
            self.settle(pid, process, recorded, aggregate);
        }
        if !self.proc.is_same_alive(pid, self.processes.get(&pid).and_then(|p| p.start_ticks)) {
            return;
        }
        let runtime = self.config.runtime.unwrap_or_else(|| runtime::detect(&ProcessTraits::read(&self.proc, pid)));
        let name = self.proc.name(pid).unwrap_or_default();
        if self.interpreter(runtime).is_none() {
            // Still sampled natively, but now running another program (`profile -- CMD` starts
            // CMD through a shell): report a requested process under the name it has now, as
            // the graph names it. (Its children are not reported one by one.)
            if execed && self.requested.contains(&pid) && !name.is_empty() {
                self.route_and_report(pid, runtime, &name);
            }
            return;
        }
        self.route_and_report(pid, runtime, &name);
    }

    /// Routes `pid` to the sampler of `runtime` again (after an exec) and says which one took
    /// it, or why none could.
    fn route_and_report(&mut self, pid: u32, runtime: Runtime, name: &str) {
        match self.route(pid, runtime, true) {
            Ok(sampler) => self.info(pid, format!("{name} ({pid}): {runtime}, sampled by {sampler}")),
            Err(e) => self.warnings.push(Warning {
                code: WarningCode::SamplerFailed,
                pid: Some(pid),
                message: format!("{name} ({pid}): {e}"),
            }),
        }
    }

    fn handle(&mut self, events: Vec<ProcessEvent>, started: Instant, aggregate: &mut Aggregate) {
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
                            start_ticks: None,
                        })
                    });
                    let Some(info) = info else { continue };
                    self.processes.insert(pid, info);
                    if let Some(cgroups) = &mut self.cgroups {
                        cgroups.watch(pid);
                    }
                    self.reroute(pid, false, aggregate);
                }
                ProcessEvent::Execed { pid } => {
                    // Named now, not at the next refresh: a command started through a shell
                    // may exit before that, and would be reported and graphed as `sh`.
                    if let (Some(info), Some(name)) = (self.processes.get_mut(&pid), self.proc.name(pid)) {
                        info.name = name;
                    }
                    self.reroute(pid, true, aggregate)
                }
                ProcessEvent::Exited { pid } if self.requested.contains(&pid) => {
                    let name = self.processes.get(&pid).map_or("?", |p| p.name.as_str());
                    // Its pid may already belong to another process (of another container):
                    // that one is not sampled, and the user should know why the pid lives on.
                    let reused = if self.proc.is_alive(pid) {
                        "; its pid now belongs to another process, which is not sampled"
                    } else {
                        ""
                    };
                    self.warnings.push(Warning {
                        code: WarningCode::ProcessExited,
                        pid: Some(pid),
                        message: format!(
                            "process {pid} ({name}) exited after {:.1}s{reused}",
                            started.elapsed().as_secs_f64()
                        ),
                    });
                }
                ProcessEvent::Exited { .. } => {}
            }
        }
    }
}

/// A process whose frames its runtime's own sampler reads.
struct Interpreted {
    runtime: Runtime,
    sampler: &'static str,
    on_cpu: OnCpu,
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

/// Counts the network of every process the run knows (the kernel adds their children itself).
fn watch_network(net: &mut Option<NetCollector>, run: &Run) -> Result<(), AgentError> {
    if let Some(net) = net {
        for pid in run.processes.keys() {
            net.add(*pid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use eagle_proto::WarningCode;

    #[test]
    fn a_target_gone_before_sampling_is_a_named_warning() {
        let warning = super::gone_before_sampling(4242);
        assert_eq!(warning.code, WarningCode::ProcessExited);
        assert_eq!(warning.pid, Some(4242));
        assert!(warning.message.starts_with("process 4242 exited before sampling began"), "{}", warning.message);
    }
}
