//! Native sampling with the eBPF program of `eagle-ebpf`: user and kernel stacks of every
//! thread of the target processes, on every CPU, at a frequency whose mean is the one asked for
//! (the period is dithered: see `cpu_clock.rs`).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aya::maps::{
    Array, ArrayOfMaps, HashMap as BpfHashMap, IterableMap, Map, MapData, PerCpuArray, RingBuf, StackTraceMap,
};
use aya::programs::{BtfTracePoint, PerfEvent, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use eagle_ebpf::{key_flags, names, stack_flags, Counter, OffCpuStart, StackKey, TargetEntry, UserStack};
use eagle_proto::{ProfileMode, Warning, WarningCode, THROTTLED_FRAME, WAITING_FRAME};

use super::cpu_clock::CpuClocks;
use super::kernel_names::{self, KernelNames};
use super::{ProcessEvent, Sampler, SamplerError};
use crate::aggregate::Aggregate;
use crate::discovery::ProcFs;
use crate::mapped_count::MappedCount;
use crate::symbolize::{Frames, PerfMapIssue, Symbols};
use crate::unwind::{UnwindMaps, Unwinder};

/// The outermost frame of a user stack whose unwinding stopped early: what is below it is
/// missing, not absent.
pub const TRUNCATED: &str = "[truncated]";

pub struct EbpfSampler {
    /// The per-CPU clocks that run the sampling program, their periods dithered. First, so that
    /// sampling stops before the maps and programs go.
    clocks: CpuClocks,
    // Owns the programs and their perf/tracepoint links: dropping it detaches everything.
    bpf: Ebpf,
    /// While held, the kernel times every run of every eBPF program
    /// ([`PROGRAM_STATS_ENV`]).
    program_stats: Option<std::os::fd::OwnedFd>,
    targets: BpfHashMap<MapData, u32, TargetEntry>,
    active: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    counts: [BpfHashMap<MapData, StackKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    /// User stacks unwound with tables, by hash.
    user_stacks: [BpfHashMap<MapData, u64, UserStack>; 2],
    /// `None` when stacks are walked by frame pointers only (`EAGLE_UNWIND=frame-pointers`).
    unwinder: Option<Unwinder>,
    buffer: u32,
    /// When the window ends (see [`EbpfSampler::end_window_at`]), and the thread that ends it
    /// then (dropping the sender ends the thread early).
    window_end: Option<(Instant, mpsc::Sender<()>)>,
    process_events: ProcessEvents,
    proc: ProcFs,
    symbols: Symbols,
    /// Names kernel frames without reading `/proc/kallsyms` (see `kernel_names.rs`); `None`
    /// where the kernel refused its program.
    kernel_names: Option<KernelNames>,
    tracked: HashMap<u32, Tracked>,
    /// Forks followed and execs counted by the kernel side (`Change::Targets`); `None`: read
    /// `targets` at every collection.
    targets_changed: Option<MappedCount>,
    /// Processes found gone at the last collection: their last samples may still come with
    /// this one, then what is cached for them is dropped.
    gone: Vec<u32>,
    /// Processes with samples since the last [`EbpfSampler::take_sampled`].
    sampled: HashSet<u32>,
    mode: ProfileMode,
    /// Wall mode: the microseconds one CPU sample stands for.
    sample_us: u64,
    /// Turns weighed counts of CPU samples into samples at the asked frequency.
    to_samples: WeighedSamples,
    min_block_ns: u64,
    offcpu: OffCpuMaps,
    /// Processes whose samples the kernel counts per thread (see [`EbpfSampler::count_by_thread`]).
    by_thread: BpfHashMap<MapData, u32, u32>,
    /// Their CPU samples so far: process -> thread -> stack -> samples.
    thread_stacks: HashMap<u32, ThreadStacks>,
    /// Stacks whose user addresses wait to be named, with their counts in the graph's unit:
    /// names are read in rounds (see `symbolize.rs`, and [`NAME_EVERY`]).
    unnamed: HashMap<RawStack, u64>,
    /// Collections so far.
    collections: u64,
    /// The next collection is the last: it names everything ([`EbpfSampler::name_all_next`]).
    last_collection: bool,
}

/// Collections between two naming rounds (see `symbolize.rs`): 2 s at the agent's 250 ms. An
/// object that gets new addresses in every collection is parsed once per round instead of once
/// per collection; what a round costs is the same parse, so longer rounds only hold the stacks
/// longer (a few KiB).
pub const NAME_EVERY: u64 = 8;
// A DWARF parse outlives the collections between two rounds (see `DWARF_IDLE_BATCHES`).
const _: () = assert!(crate::symbolize::DWARF_IDLE_BATCHES > NAME_EVERY);

/// A stack as the kernel gave it, its user part not named yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RawStack {
    tgid: u32,
    /// The thread whose CPU samples are kept apart ([`EbpfSampler::take_thread_stacks`]).
    thread: Option<u32>,
    /// The unwinder stopped before the stack's outermost frame.
    truncated: bool,
    /// User addresses, innermost first.
    user: Option<Vec<u64>>,
    /// Kernel frames, named, outermost first.
    kernel: Vec<String>,
    /// A wait's frame, above the rest.
    wait: Option<&'static str>,
}

/// One process's CPU samples by thread id, then by stack (outermost frame first).
pub type ThreadStacks = HashMap<u32, HashMap<Vec<String>, u64>>;

/// The maps of off-CPU time: blocks and waits under way, and the stacks of both, kept for the
/// whole run.
struct OffCpuMaps {
    started: BpfHashMap<MapData, u32, OffCpuStart>,
    stacks: StackTraceMap<MapData>,
    user_stacks: BpfHashMap<MapData, u64, UserStack>,
}

#[derive(Debug)]
struct Tracked {
    root: u32,
    alive: bool,
    /// Execs seen so far (the kernel side counts them).
    execs: u32,
    /// When it started (clock ticks since boot), if known: a later process with its pid is
    /// another one.
    start_ticks: Option<u64>,
    /// Tells its exit without reading `/proc` (`ProcFs::exit_watch`); `None`: read it.
    exit_watch: Option<OwnedFd>,
}

impl Tracked {
    fn new(root: u32, alive: bool, execs: u32, start_ticks: Option<u64>, proc: &ProcFs, pid: u32) -> Self {
        let exit_watch = if alive { proc.exit_watch(pid, start_ticks) } else { None };
        Self { root, alive, execs, start_ticks, exit_watch }
    }
}

impl EbpfSampler {
    /// Loads and attaches the program: a perf event per online CPU at `frequency_hz` (CPU and
    /// wall modes), the scheduler's switch event (off-CPU and wall modes), and the fork and
    /// exec tracepoints. Nothing is sampled until [`Sampler::add`].
    /// `stacks: false`: the targets are followed (forks, execs, exits) and nothing is sampled:
    /// no CPU clock, no unwind tables (the network side alone).
    pub fn start(
        frequency_hz: u64,
        proc: ProcFs,
        mode: ProfileMode,
        min_block_us: u64,
        stacks: bool,
    ) -> Result<Self, SamplerError> {
        let object = eagle_ebpf::object().ok_or(SamplerError::NoProgram)?;
        // aya's loader parses the kernel's BTF as it is made: that parse is dropped at once, and
        // the one the tracepoints are attached with made after it, so that two are never held
        // together (they were the agent's peak memory, before any target: 41 MiB against 28).
        let mut unparsed = EbpfLoader::new();
        unparsed.btf(None);
        let btf = if std::env::var_os(FORCE_TRACEFS_ENV).is_some() { None } else { Btf::from_sys_fs().ok() };
        // Bound after `btf`, which it borrows, so that it is dropped first.
        let mut loader = unparsed;
        // Maps this run leaves unused are made of one entry: the kernel allocates a
        // preallocated map whole as it is made (in CPU mode the off-CPU maps were 32 of the
        // agent's 77 MiB of kernel memory). Off-CPU maps: only the scheduler's programs use
        // them; the CPU samples' stack maps: only the CPU clock's, which samples nothing in
        // off-CPU mode or without stacks (as `sampled_cpus` below).
        let mut unused: Vec<&str> = Vec::new();
        if mode == ProfileMode::Cpu {
            unused.extend([names::OFFCPU_START, names::OFFCPU_ALT_SITES, names::OFFCPU_STACKS]);
        }
        if mode == ProfileMode::OffCpu || !stacks {
            unused.extend(names::STACKS);
        }
        for name in unused {
            loader.map_max_entries(name, 1);
        }
        let offset = if btf.is_some() { 0 } else { tracefs::with_tracefs(tracefs::child_pid_offset)?.0 };
        let with_tables = stacks && unwind_with_tables();
        // Start times are read through CO-RE relocations: only with the kernel's BTF.
        let check_identity = u32::from(btf.is_some());
        // Deferring the comparison pays for the stops too short to count. With no minimum every
        // stop counts and is compared anyway: at the switch in that cost a second program's
        // lookups on top (449 against 370 ns of program time a hand-off, docs/performance.md).
        let check_sites_at_switch_in = mode != ProfileMode::Cpu
            && min_block_us > 0
            && btf.as_ref().is_some_and(has_switch_in_tracepoint)
            && !sites_checked_at_switch_out();
        let mut bpf = loader
            .btf(btf.as_ref())
            .override_global(names::UNWIND_WITH_TABLES, &u32::from(with_tables), true)
            .override_global(names::CHECK_IDENTITY, &check_identity, true)
            .override_global(names::NSEC_PER_CLOCK_TICK, &nsec_per_clock_tick(), true)
            .override_global(names::CHILD_PID_OFFSET, &offset, true)
            .override_global(names::MIN_BLOCK_NS, &min_block_us.saturating_mul(1000), true)
            .override_global(names::CHECK_SITES_AT_SWITCH_IN, &u32::from(check_sites_at_switch_in), true)
            .load(object)
            .map_err(|e| classify("load the eBPF program", &e))?;
        // Before any program runs, so that every run is timed.
        let program_stats = program_stats_wanted()
            .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
            .transpose()
            .map_err(|e| classify("time the eBPF programs (BPF_ENABLE_STATS)", &e))?;
        let process_events = match &btf {
            Some(btf) => {
                attach_btf_tracepoints(&mut bpf, btf)?;
                ProcessEvents::BtfTracepoints
            }
            None => tracefs::with_tracefs(|| attach_tracefs_tracepoints(&mut bpf))?.1,
        };
        if mode != ProfileMode::Cpu {
            let Some(btf) = &btf else {
                return Err(SamplerError::Unsupported(format!(
                    "--mode {mode} follows the scheduler through a BTF-typed tracepoint, and this kernel has no BTF (/sys/kernel/btf/vmlinux): use --mode cpu, or a kernel built with CONFIG_DEBUG_INFO_BTF"
                )));
            };
            // The switch-in program first: `offcpu_switch` leaves threads to it from its first
            // run on. (It carries the unwinder a second time; a kernel that refuses it can still
            // profile with the comparison at the switch out.)
            if check_sites_at_switch_in {
                let event = names::SWITCH_IN_TRACEPOINT;
                let or_else = format!("; {CHECK_SITES_ENV}=switch-out does without it");
                let tp: &mut BtfTracePoint = program_mut(&mut bpf, names::SWITCH_IN_PROGRAM)?;
                tp.load(event, btf)
                    .map_err(|e| classify(&format!("load the off-CPU program ({event}){or_else}"), &e))?;
                tp.attach().map_err(|e| classify(&format!("attach to the {event} tracepoint{or_else}"), &e))?;
            }
            for (program, event) in [
                (names::OFFCPU_PROGRAM, "sched_switch"),
                (names::WAKEUP_PROGRAM, "sched_wakeup"),
                (names::WAKEUP_NEW_PROGRAM, "sched_wakeup_new"),
            ] {
                let tp: &mut BtfTracePoint = program_mut(&mut bpf, program)?;
                tp.load(event, btf).map_err(|e| classify(&format!("load the off-CPU program ({event})"), &e))?;
                tp.attach().map_err(|e| classify(&format!("attach to the {event} tracepoint"), &e))?;
            }
        }
        let weights = bpf.take_map(names::SAMPLE_WEIGHT).ok_or_else(|| {
            SamplerError::Failed(format!("map `{}` missing from the eBPF object", names::SAMPLE_WEIGHT))
        })?;
        let weights = PerCpuArray::try_from(weights).map_err(|e| SamplerError::Failed(format!("eBPF map: {e}")))?;
        let sample: &mut PerfEvent = program_mut(&mut bpf, names::SAMPLE_PROGRAM)?;
        sample.load().map_err(|e| classify("load the sampling program", &e))?;
        let cpus = aya::util::online_cpus().map_err(|(what, e)| SamplerError::Failed(format!("{what}: {e}")))?;
        // Off-CPU mode samples nothing on the CPU, nor does a run without stacks.
        let sampled_cpus = if mode == ProfileMode::OffCpu || !stacks { Vec::new() } else { cpus };
        let program = sample.fd().map_err(|e| classify("load the sampling program", &e))?;
        let clocks = CpuClocks::start(program, weights, &sampled_cpus, frequency_hz)
            .map_err(|e| classify(&e.action, &e.source))?;

        // Kernel frames are named only with stacks.
        let kernel_names = if stacks {
            KernelNames::load(&mut bpf).inspect_err(|e| kernel_names::say_why_kallsyms(e)).ok()
        } else {
            None
        };
        let mut take = |name: &str| {
            bpf.take_map(name).ok_or_else(|| SamplerError::Failed(format!("map `{name}` missing from the eBPF object")))
        };
        let conv = |e: aya::maps::MapError| SamplerError::Failed(format!("eBPF map: {e}"));
        let targets = BpfHashMap::try_from(take(names::TARGETS)?).map_err(conv)?;
        let active = Array::try_from(take(names::ACTIVE)?).map_err(conv)?;
        let counters = PerCpuArray::try_from(take(names::COUNTERS)?).map_err(conv)?;
        let counts = [
            BpfHashMap::try_from(take(names::COUNTS[0])?).map_err(conv)?,
            BpfHashMap::try_from(take(names::COUNTS[1])?).map_err(conv)?,
        ];
        let stacks = [
            StackTraceMap::try_from(take(names::STACKS[0])?).map_err(conv)?,
            StackTraceMap::try_from(take(names::STACKS[1])?).map_err(conv)?,
        ];
        let user_stacks = [
            BpfHashMap::try_from(take(names::USER_STACKS[0])?).map_err(conv)?,
            BpfHashMap::try_from(take(names::USER_STACKS[1])?).map_err(conv)?,
        ];
        // Each count mapped on its own (the mappings keep the array alive); `None` where it
        // cannot be: the map it is about is then read at every look.
        let changes = take(names::CHANGES)?;
        let count = |change: eagle_ebpf::Change| match &changes {
            aya::maps::Map::Array(data) => MappedCount::map(data, change as usize).ok(),
            _ => None,
        };
        let unwind_maps = UnwindMaps {
            process_maps: BpfHashMap::try_from(take(names::PROCESS_MAPS)?).map_err(conv)?,
            tables: ArrayOfMaps::try_from(take(names::UNWIND_TABLES)?).map_err(conv)?,
            requests: BpfHashMap::try_from(take(names::UNWIND_REQUESTS)?).map_err(conv)?,
            requests_made: count(eagle_ebpf::Change::Requests),
            doorbell: RingBuf::try_from(take(names::UNWIND_DOORBELL)?).map_err(conv)?,
        };
        let by_thread = BpfHashMap::try_from(take(names::BY_THREAD)?).map_err(conv)?;
        let targets_changed = count(eagle_ebpf::Change::Targets);
        let offcpu = OffCpuMaps {
            started: BpfHashMap::try_from(take(names::OFFCPU_START)?).map_err(conv)?,
            stacks: StackTraceMap::try_from(take(names::OFFCPU_STACKS)?).map_err(conv)?,
            user_stacks: BpfHashMap::try_from(take(names::OFFCPU_USER_STACKS)?).map_err(conv)?,
        };
        let unwinder = if with_tables {
            Some(
                Unwinder::start(unwind_maps)
                    .map_err(|e| SamplerError::Failed(format!("cannot start the unwind table thread: {e}")))?,
            )
        } else {
            None
        };
        Ok(Self {
            clocks,
            bpf,
            program_stats,
            targets,
            active,
            counters,
            counts,
            stacks,
            user_stacks,
            unwinder,
            buffer: 0,
            window_end: None,
            process_events,
            proc,
            symbols: Symbols::new(),
            kernel_names,
            tracked: HashMap::new(),
            targets_changed,
            gone: Vec::new(),
            sampled: HashSet::new(),
            mode,
            sample_us: 1_000_000 / frequency_hz.max(1),
            to_samples: WeighedSamples::default(),
            min_block_ns: min_block_us.saturating_mul(1000),
            offcpu,
            by_thread,
            thread_stacks: HashMap::new(),
            unnamed: HashMap::new(),
            collections: 0,
            last_collection: false,
        })
    }

    /// The next collection is the last of the run: every stack it holds is named and given.
    pub fn name_all_next(&mut self) {
        self.last_collection = true;
    }

    /// Puts a stack whose user addresses are all named into the graph.
    fn add_named(&mut self, stack: RawStack, count: u64, out: &mut Aggregate) {
        let RawStack { tgid, thread, truncated, user, kernel, wait } = stack;
        let mut frames: Vec<String> = Vec::new();
        if truncated {
            frames.push(TRUNCATED.to_owned());
        }
        if let Some(addrs) = &user {
            let names: Vec<Frames> = self.symbols.lookup_user(tgid, addrs);
            let user: Vec<String> = names.iter().rev().flat_map(|f| f.iter().cloned()).collect();
            frames.extend_from_slice(from_thread_entry(&user));
        }
        frames.extend(kernel);
        if frames.is_empty() {
            frames.push(crate::symbolize::UNKNOWN.to_owned());
        }
        if let Some(wait) = wait {
            frames.push(wait.to_owned());
        }
        if let Some(tid) = thread {
            let stacks = self.thread_stacks.entry(tgid).or_default().entry(tid).or_default();
            *stacks.entry(frames.clone()).or_insert(0) += count;
        }
        out.add(tgid, "ebpf", frames, count);
    }

    /// Counts the blocks and waits still under way as the window ended, up to its end: a
    /// thread that waits for the whole window (a worker on an empty queue) is off-CPU all
    /// along, not absent. After the window (the kernel then leaves every block and wait to
    /// this, and its entries stay: each thread keeps one for the run), before the last
    /// collection, which drains the buffer written here. A wait under way is counted whole as
    /// what it began as: throttled if its group was throttled then (the kernel's run queue
    /// cannot be read from here to split it). A block that ended but was left for its thread's
    /// switch in (`site_unchecked`, `woken - since`) is counted too. Stacks whose return
    /// addresses were left to the switch in (`site_unchecked`) are taken as they are: the same
    /// registers, call and state, with the innermost return addresses not compared, for at most
    /// that block and one wait per thread, at the window's edge.
    pub fn close_blocks(&mut self) {
        if self.mode == ProfileMode::Cpu {
            return;
        }
        // The window's end on the kernel's clock (CLOCK_MONOTONIC, as `Instant`).
        let now = monotonic_ns();
        let since_end = self.window_end.as_ref().map_or(Duration::ZERO, |(end, _)| end.elapsed());
        let now = now.saturating_sub(since_end.as_nanos() as u64);
        // A program that saw the window open just before its end may be finishing (a
        // microsecond): it claims what it counts, this reads after it.
        std::thread::sleep(Duration::from_millis(1).saturating_sub(since_end));
        let under_way: Vec<(u32, OffCpuStart)> = self.offcpu.started.iter().filter_map(Result::ok).collect();
        let counts = &mut self.counts[self.buffer as usize];
        for (_, start) in under_way {
            // On a CPU as the window ended, or not a target's.
            if start.since == 0 || !self.tracked.contains_key(&start.key.tgid) {
                continue;
            }
            // A block that ended, left for the switch in that did not come before the window's
            // end (`left` is 0 while still blocked, `woken` 0, and for a preemption's wait,
            // `woken` = `since`).
            let left = start.woken.saturating_sub(start.since);
            if start.site_unchecked != 0 && left > 0 && left >= self.min_block_ns {
                let so_far = counts.get(&start.key, 0).unwrap_or(0);
                let _ = counts.insert(start.key, so_far + left, 0);
            }
            // Blocked still, or waiting since it was woken (its block counted then, or above) or
            // preempted.
            let mut key = start.key;
            let off_cpu = if start.woken == 0 {
                now.saturating_sub(start.since)
            } else {
                key.flags |= if start.throttled_then != 0 { key_flags::THROTTLED } else { key_flags::WAIT };
                now.saturating_sub(start.woken)
            };
            if off_cpu < self.min_block_ns {
                continue;
            }
            // The kernel writes no counts after the window: nothing races this update.
            let so_far = counts.get(&key, 0).unwrap_or(0);
            let _ = counts.insert(key, so_far + off_cpu, 0);
        }
    }

    /// What off-CPU counting did, said once at the end of a run.
    fn offcpu_summary(&self) -> Option<Warning> {
        if self.mode == ProfileMode::Cpu {
            return None;
        }
        let (counted, short) = (self.counter(Counter::OffCpuBlocks), self.counter(Counter::OffCpuShort));
        let (waits, short_waits) = (self.counter(Counter::Waits), self.counter(Counter::WaitsShort));
        let reused = self.counter(Counter::StopSitesReused);
        Some(Warning {
            code: WarningCode::InfoPrecision,
            pid: None,
            message: format!(
                "off-CPU: {counted} blocks and {waits} waits for a CPU of {} or more counted, {short} shorter blocks and {short_waits} shorter waits not (--min-block); {reused} switches stopped where their thread had stopped before (same user registers, system call and state) and reused its stacks",
                human_micros(self.min_block_ns / 1000)
            ),
        })
    }

    /// Ends the sampling window at `end`, to the instant: a thread of its own writes
    /// [`names::WINDOW_ENDED`] into `active` then, and the program takes no sample after it.
    /// Otherwise the window would last until the last collection, which a loaded machine
    /// delays by seconds (symbolizing), and a process's samples would cover more than the
    /// window the stream's header states.
    pub fn end_window_at(&mut self, end: Instant) -> Result<(), SamplerError> {
        let fd = IterableMap::map(&self.active)
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SamplerError::Failed(format!("cannot share the eBPF map `active`: {e}")))?;
        let map = MapData::from_fd(fd).map_err(|e| SamplerError::Failed(format!("eBPF map `active`: {e}")))?;
        let mut active: Array<MapData, u32> =
            Array::try_from(Map::Array(map)).map_err(|e| SamplerError::Failed(format!("eBPF map `active`: {e}")))?;
        let (sender, receiver) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("window end".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) =
                    receiver.recv_timeout(end.saturating_duration_since(Instant::now()))
                {
                    let _ = active.set(0, names::WINDOW_ENDED, 0);
                }
            })
            .map_err(|e| SamplerError::Failed(format!("cannot start the thread that ends the window: {e}")))?;
        self.window_end = Some((end, sender));
        Ok(())
    }

    /// How fork and exec are followed; anything but BTF tracepoints is worth a line to the user.
    pub fn process_events(&self) -> ProcessEvents {
        self.process_events
    }

    /// Counts `pid`'s CPU samples per thread from now on, as well as per process: a JVM read by
    /// Flight Recorder, whose threads outside Java code (compilers, GC) are shown with their
    /// native stacks ([`EbpfSampler::take_thread_stacks`]).
    pub fn count_by_thread(&mut self, pid: u32) {
        // A full map (1024 JVMs on one node) loses only the threads' detail: the samples are
        // still counted per process, and such threads keep their one named frame.
        let _ = self.by_thread.insert(pid, 1, 0);
    }

    /// The CPU samples of `pid` by thread since [`EbpfSampler::count_by_thread`], and counts
    /// them per process only from now on.
    pub fn take_thread_stacks(&mut self, pid: u32) -> ThreadStacks {
        let _ = self.by_thread.remove(&pid);
        self.thread_stacks.remove(&pid).unwrap_or_default()
    }

    /// `pid` runs JIT code named by its perf map (Java, Node): see [`Symbols::set_jit`].
    pub fn mark_jit(&mut self, pid: u32, tag: &'static str) {
        self.symbols.set_jit(pid, tag);
    }

    /// Warnings of the unwinder (objects without tables, budgets), and at the end of a run
    /// (`last`), how many stacks were walked by frame pointers or cut short.
    pub fn take_warnings(&mut self, last: bool) -> Vec<Warning> {
        let mut warnings = self.unwinder.as_ref().map(Unwinder::take_warnings).unwrap_or_default();
        for (pid, issue) in self.symbols.take_perf_map_issues() {
            warnings.push(perf_map_warning(pid, &self.proc.name(pid).unwrap_or_else(|| "?".into()), issue));
        }
        if last {
            warnings.extend(self.offcpu_summary());
            if self.clocks.dither_failed() {
                warnings.push(Warning {
                    code: WarningCode::InfoPrecision,
                    pid: None,
                    message: "the sampling period could not be redrawn during the window (PERF_EVENT_IOC_PERIOD failed): samples of work that repeats in step with the period may lean toward some of its functions".into(),
                });
            }
        }
        if last && self.program_stats.is_some() {
            warnings.push(self.program_costs());
        }
        if last && self.unwinder.is_some() {
            let total = self.counter(Counter::Samples);
            let pending = self.counter(Counter::UnwindPending);
            let truncated = self.counter(Counter::UnwindTruncated);
            if let Some(w) = unwind_summary(total, pending, truncated) {
                warnings.push(w);
            }
        }
        warnings
    }

    /// What each program that ran cost per run, from the kernel's own timing: the part of a
    /// target's slowdown its own events pay (`scripts/bench-overhead.sh`, `PROGRAM_STATS=1`).
    fn program_costs(&self) -> Warning {
        let mut costs: Vec<String> = self
            .bpf
            .programs()
            .filter_map(|(name, program)| Some((name, program.info().ok()?)))
            .filter(|(_, info)| info.run_count() > 0)
            .map(|(name, info)| {
                let each = info.run_time().as_nanos() / u128::from(info.run_count());
                format!("{name} {} runs, {each} ns each", info.run_count())
            })
            .collect();
        costs.sort();
        Warning {
            code: WarningCode::InfoPrecision,
            pid: None,
            message: format!("eBPF programs' own time ({PROGRAM_STATS_ENV}): {}", costs.join("; ")),
        }
    }

    fn counter(&self, c: Counter) -> u64 {
        self.counters.get(&(c as u32), 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// The processes with samples (on the CPU or blocked) since the last call: those whose
    /// names the graph is showing now.
    pub fn take_sampled(&mut self) -> HashSet<u32> {
        std::mem::take(&mut self.sampled)
    }

    /// Whether the process that started as target `pid` still runs, asked of its exit watch
    /// now (one `poll(2)`, no read of `/proc`); `None` where it has none (ask `/proc`).
    pub fn alive_now(&self, pid: u32) -> Option<bool> {
        let t = self.tracked.get(&pid)?;
        if !t.alive {
            return Some(false);
        }
        let watch = t.exit_watch.as_ref()?;
        Some(!crate::discovery::exited(&[watch.as_fd()])[0])
    }

    /// Brings `tracked` in line with the kernel's target set, which the fork tracepoint grows.
    fn sync_targets(&mut self, events: &mut Vec<ProcessEvent>) {
        // New children and execs are in the kernel's map; it is read only when the kernel side
        // counted one since the last read.
        if self.targets_changed.as_mut().is_none_or(MappedCount::moved) {
            let entries: Vec<(u32, TargetEntry)> = self.targets.iter().filter_map(Result::ok).collect();
            for (id, entry) in entries {
                if let Some(t) = self.tracked.get_mut(&id) {
                    if entry.execed != t.execs {
                        t.execs = entry.execed;
                        events.push(ProcessEvent::Execed { pid: id });
                    }
                    continue;
                }
                self.track_found(id, entry, events);
            }
        }
        // Gone, or its pid taken by a later process (whose samples the kernel side drops: it
        // did not start when the target did); a watched one cannot be. The watched ones all
        // asked at once (see `discovery::exited`).
        let mut alive: Vec<u32> = self.tracked.iter().filter(|(_, t)| t.alive).map(|(id, _)| *id).collect();
        alive.sort_unstable();
        let exited: HashMap<u32, bool> = {
            let (ids, fds): (Vec<u32>, Vec<BorrowedFd<'_>>) =
                alive.iter().filter_map(|id| Some((*id, self.tracked[id].exit_watch.as_ref()?.as_fd()))).unzip();
            ids.into_iter().zip(crate::discovery::exited(&fds)).collect()
        };
        for id in alive {
            let gone = match exited.get(&id) {
                Some(exited) => *exited,
                None => !self.proc.is_same_alive(id, self.tracked[&id].start_ticks),
            };
            if !gone {
                continue;
            }
            if let Some(t) = self.tracked.get_mut(&id) {
                t.exit_watch = None;
                t.alive = false;
            }
            let _ = self.targets.remove(&id);
            if let Some(u) = &self.unwinder {
                u.forget(id);
            }
            events.push(ProcessEvent::Exited { pid: id });
        }
    }

    /// A process the kernel side added to `targets` (a child of a target): tracked from now on,
    /// or dropped where it is a thread of one.
    fn track_found(&mut self, id: u32, entry: TargetEntry, events: &mut Vec<ProcessEvent>) {
        match self.proc.tgid_of(id) {
            Some(tgid) if tgid != id => {
                // A thread of a target: its samples already count under its process.
                let _ = self.targets.remove(&id);
            }
            found => {
                let start_ticks = (entry.start != 0).then_some(entry.start);
                let alive = found.is_some() && self.proc.is_same_alive(id, start_ticks);
                self.tracked.insert(id, Tracked::new(entry.root, alive, entry.execed, start_ticks, &self.proc, id));
                events.push(ProcessEvent::Found { pid: id, root: entry.root });
                if !alive {
                    // A short-lived child, gone before we looked.
                    let _ = self.targets.remove(&id);
                    events.push(ProcessEvent::Exited { pid: id });
                }
            }
        }
    }

    /// Which process to read a pid's code from. A forked child that did not exec runs its
    /// root's code at the root's addresses: read there, which does not race the child's exit
    /// (children often live a few milliseconds). Otherwise the process itself, while it lives
    /// or after it exited if its code was kept while it lived.
    fn symbol_source(&self, pid: u32) -> Option<u32> {
        let t = self.tracked.get(&pid)?;
        let readable = |p: u32| self.tracked.get(&p).is_some_and(|t| t.alive) || self.symbols.is_kept(p);
        if t.root != pid && t.execs == 0 && readable(t.root) {
            return Some(t.root);
        }
        readable(pid).then_some(pid)
    }
}

/// A perf map's problem, for the user: what was wrong, and what it costs the graph. Nothing of
/// the file's content is quoted (it may be a host file a link pointed at).
fn perf_map_warning(pid: u32, name: &str, issue: PerfMapIssue) -> Warning {
    match issue {
        PerfMapIssue::Refused(why) => Warning {
            code: WarningCode::PerfMapRefused,
            pid: Some(pid),
            message: format!("{name} ({pid}): its perf map was not read: {why}; its JIT frames show as [unknown]"),
        },
        PerfMapIssue::Lines(problems) => Warning {
            code: WarningCode::PerfMapLines,
            pid: Some(pid),
            message: format!(
                "{name} ({pid}): its perf map has {problems}; JIT frames of those lines may show as [unknown]"
            ),
        },
    }
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn human_micros(us: u64) -> String {
    if us >= 1000 && us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// What the run's native stacks lack, said once at its end: an `info-` line when it is a
/// small part of the samples (a new process's first milliseconds, before its tables were
/// built), a warning when it is enough to change what a flame graph says (over 5 %).
fn unwind_summary(total: u64, pending: u64, truncated: u64) -> Option<Warning> {
    if pending + truncated == 0 || total == 0 {
        return None;
    }
    let share = |n: u64| n as f64 * 100.0 / total as f64;
    let mut parts = Vec::new();
    if pending > 0 {
        parts.push(format!(
            "{pending} ({:.1}%) were taken before their process's unwind tables were ready and were walked by frame pointers (short where the code has none)",
            share(pending)
        ));
    }
    if truncated > 0 {
        parts.push(format!(
            "{truncated} ({:.1}%) stop before their outermost frame (code with neither unwind tables nor frame pointers, an unreadable stack, or over {} frames) and hang under `{TRUNCATED}`",
            share(truncated),
            eagle_ebpf::UNWIND_DEPTH
        ));
    }
    let significant = (pending + truncated) * 20 > total;
    Some(Warning {
        code: if significant { WarningCode::UnwindIncomplete } else { WarningCode::InfoUnwind },
        pid: None,
        message: format!("native stacks: of {total} samples, {}", parts.join("; ")),
    })
}

/// The unit of `/proc/PID/stat`'s start time (USER_HZ), in nanoseconds.
fn nsec_per_clock_tick() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / u64::try_from(ticks_per_second).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Whether user stacks are unwound with `.eh_frame` tables (the default) or walked by frame
/// pointers only: `EAGLE_UNWIND=frame-pointers`, to compare the two or to rule the unwinder out.
fn unwind_with_tables() -> bool {
    std::env::var("EAGLE_UNWIND").map_or(true, |v| v != "frame-pointers")
}

/// Set to 1 to have the kernel time every run of the agent's eBPF programs for as long as it
/// runs (`BPF_ENABLE_STATS`, released with the agent; no sysctl changed) and to say at the end
/// what each cost per run. The timing itself reads the clock twice around every run: for
/// measuring the programs, not for measuring a target's slowdown.
pub const PROGRAM_STATS_ENV: &str = "EAGLE_PROGRAM_STATS";

/// Set to `switch-out` to compare a stop site's return addresses at every switch out, as on a
/// kernel without `sched_exit_tp` (before Linux 6.16): how the tests and the bench exercise and
/// measure that way on a kernel that has it.
pub const CHECK_SITES_ENV: &str = "EAGLE_OFFCPU_CHECK_SITES";

fn sites_checked_at_switch_out() -> bool {
    std::env::var(CHECK_SITES_ENV).is_ok_and(|v| v == "switch-out")
}

/// Whether the kernel has the tracepoint at the end of the scheduler (`sched_exit_tp`, Linux
/// 6.16+), where a switched-in thread runs before it returns to user space.
fn has_switch_in_tracepoint(btf: &Btf) -> bool {
    let typedef = format!("btf_trace_{}", names::SWITCH_IN_TRACEPOINT);
    btf.id_by_type_name_kind(&typedef, aya_obj::btf::BtfKind::Typedef).is_ok()
}

fn program_stats_wanted() -> bool {
    std::env::var(PROGRAM_STATS_ENV).is_ok_and(|v| v == "1")
}

pub(crate) fn program_mut<'a, T>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, SamplerError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = bpf
        .program_mut(name)
        .ok_or_else(|| SamplerError::Failed(format!("program `{name}` missing from the eBPF object")))?;
    program.try_into().map_err(|e| SamplerError::Failed(format!("program `{name}`: {e}")))
}

/// Turns a kernel refusal into a message that says what to do.
pub(crate) fn classify(action: &str, error: &dyn std::error::Error) -> SamplerError {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_lowercase();
    if lower.contains("operation not permitted") || lower.contains("permission denied") {
        SamplerError::PermissionDenied(format!(
            "not permitted to {action} ({chain}): run as root, or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8)"
        ))
    } else if lower.contains("no such file") || lower.contains("invalid argument") && action.contains("perf event") {
        SamplerError::Unsupported(format!("cannot {action} ({chain}): this kernel lacks perf events or BPF support"))
    } else {
        SamplerError::Failed(format!("cannot {action}: {chain}"))
    }
}

/// How the fork and exec tracepoints were attached, which the run reports when it is not the
/// ordinary way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEvents {
    /// BTF-typed tracepoints: no tracefs, no record layout to read. Every kernel with
    /// `/sys/kernel/btf/vmlinux` (5.5 and later, as distributions build them).
    BtfTracepoints,
    /// Classic tracepoints through a tracefs that was already mounted.
    Tracefs,
    /// Classic tracepoints through a tracefs the agent mounted in a private mount namespace of
    /// its own (the host's mounts are untouched), because the kernel has no BTF.
    PrivateTracefs,
}

/// Set (to anything) to attach the classic tracepoints even where BTF exists: how the tests
/// exercise the fallback on a kernel that has BTF.
pub const FORCE_TRACEFS_ENV: &str = "EAGLE_AGENT_FORCE_TRACEFS";

fn attach_btf_tracepoints(bpf: &mut Ebpf, btf: &Btf) -> Result<(), SamplerError> {
    for (program, event) in [(names::FORK_PROGRAM, "sched_process_fork"), (names::EXEC_PROGRAM, "sched_process_exec")] {
        let tp: &mut BtfTracePoint = program_mut(bpf, program)?;
        tp.load(event, btf).map_err(|e| classify("load the fork/exec tracepoints", &e))?;
        tp.attach().map_err(|e| classify("attach to the fork/exec tracepoints", &e))?;
    }
    Ok(())
}

fn attach_tracefs_tracepoints(bpf: &mut Ebpf) -> Result<(), SamplerError> {
    for (program, event) in
        [(names::FORK_TRACEFS_PROGRAM, "sched_process_fork"), (names::EXEC_TRACEFS_PROGRAM, "sched_process_exec")]
    {
        let tp: &mut TracePoint = program_mut(bpf, program)?;
        tp.load().map_err(|e| classify("load the fork/exec tracepoints", &e))?;
        tp.attach("sched", event).map_err(|e| classify("attach to sched tracepoints", &e))?;
    }
    Ok(())
}

/// The fallback for kernels without BTF: tracefs, mounted privately when nobody mounted it.
mod tracefs {
    use super::{ProcessEvents, SamplerError};

    const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    const FORK_FORMAT: &str = "events/sched/sched_process_fork/format";

    fn mounted() -> bool {
        MOUNTS.iter().any(|m| std::path::Path::new(m).join(FORK_FORMAT).exists())
    }

    /// Runs `f` where tracefs is visible: here if it is mounted, else on a thread of its own
    /// that unshares its mount namespace and mounts tracefs there. What `f` opens (the
    /// tracepoints' perf event fds) stays valid after that thread and its mounts are gone.
    pub(super) fn with_tracefs<T: Send>(
        f: impl FnOnce() -> Result<T, SamplerError> + Send,
    ) -> Result<(T, ProcessEvents), SamplerError> {
        if mounted() {
            return f().map(|t| (t, ProcessEvents::Tracefs));
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    private_mount()?;
                    f().map(|t| (t, ProcessEvents::PrivateTracefs))
                })
                .join()
                .unwrap_or_else(|_| Err(SamplerError::Failed("the tracefs thread panicked".into())))
        })
    }

    /// Mounts tracefs at /sys/kernel/tracing in a mount namespace of this thread alone.
    fn private_mount() -> Result<(), SamplerError> {
        let fail = |what: &str| {
            let e = std::io::Error::last_os_error();
            let message = format!(
                "this kernel has no BTF (/sys/kernel/btf/vmlinux) and tracefs is not mounted; mounting it privately failed ({what}: {e}): mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
            );
            if e.raw_os_error() == Some(libc::EPERM) {
                SamplerError::PermissionDenied(message)
            } else {
                SamplerError::Unsupported(message)
            }
        };
        // SAFETY: plain syscalls on constant, NUL-terminated strings; CLONE_NEWNS affects only
        // the calling thread, which unshares its filesystem context with it.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(fail("unshare"));
            }
            // Nothing mounted from here on may propagate back to the host's namespace.
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(fail("make / private"));
            }
            if libc::mount(
                c"tracefs".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
            {
                return Err(fail("mount tracefs"));
            }
        }
        Ok(())
    }

    /// Offset of `child_pid` in the sched_process_fork record: it moved in Linux 6.x.
    pub(super) fn child_pid_offset() -> Result<u32, SamplerError> {
        for mount in MOUNTS {
            let path = std::path::Path::new(mount).join(FORK_FORMAT);
            match std::fs::read_to_string(&path) {
                Ok(format) => {
                    return parse_child_pid_offset(&format).ok_or_else(|| {
                        SamplerError::Unsupported(format!("{} has no child_pid field", path.display()))
                    });
                }
                // tracefs is root's: an unprivileged user gets here first, and must hear so.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(SamplerError::PermissionDenied(format!(
                        "not permitted to read the fork tracepoint ({}: {e}): run as root, or grant CAP_BPF, CAP_PERFMON and read access to tracefs",
                        path.display()
                    )));
                }
                Err(_) => {}
            }
        }
        Err(SamplerError::Unsupported(
            "tracefs has no sched_process_fork tracepoint: this kernel lacks tracepoints".into(),
        ))
    }

    pub(super) fn parse_child_pid_offset(format: &str) -> Option<u32> {
        let line = format.lines().find(|l| l.contains(" child_pid;"))?;
        let offset = line.split(';').find_map(|f| f.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    }
}

impl Sampler for EbpfSampler {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn add(&mut self, pid: u32) -> Result<(), SamplerError> {
        let start_ticks = self.proc.start_ticks(pid);
        self.targets
            .insert(pid, TargetEntry { root: pid, execed: 0, start: start_ticks.unwrap_or(0) }, 0)
            .map_err(|e| SamplerError::Failed(format!("cannot add pid {pid} to the target set: {e}")))?;
        self.tracked.insert(pid, Tracked::new(pid, true, 0, start_ticks, &self.proc, pid));
        if let Some(u) = &self.unwinder {
            u.build(pid);
        }
        Ok(())
    }

    fn remove(&mut self, pid: u32) {
        let _ = self.targets.remove(&pid);
        if let Some(u) = &self.unwinder {
            u.forget(pid);
        }
        self.tracked.remove(&pid);
    }

    fn collect(&mut self, out: &mut Aggregate, events: &mut Vec<ProcessEvent>) -> Result<(), SamplerError> {
        // Flip, let samples that already chose the old buffer land, then drain it alone.
        let idle = self.buffer as usize;
        self.buffer ^= 1;
        // Once the window has ended, no buffer takes samples any more.
        let ended = self.window_end.as_ref().is_some_and(|(end, _)| Instant::now() >= *end);
        let next = if ended { names::WINDOW_ENDED } else { self.buffer };
        self.active.set(0, next, 0).map_err(|e| SamplerError::Failed(format!("flip buffers: {e}")))?;
        std::thread::sleep(Duration::from_millis(1));

        let entries: Vec<(StackKey, u64)> = self.counts[idle].iter().filter_map(Result::ok).collect();
        for (key, _) in &entries {
            let _ = self.counts[idle].remove(key);
        }
        // Each stack read once; user stacks as the addresses to name (see `user_addrs`). The
        // stacks of CPU samples are in this buffer's maps; those of blocks (`OFFCPU`) in the
        // off-CPU maps, which are never cleared: a block's stack outlives buffer flips.
        let mut user_traces: HashMap<(bool, i32), Vec<u64>> = HashMap::new();
        let mut kernel_traces: HashMap<(bool, i32), Vec<u64>> = HashMap::new();
        // Unwound with tables: the addresses and whether the walk stopped early.
        let mut unwound: HashMap<(bool, u64), (Vec<u64>, bool)> = HashMap::new();
        for (key, _) in &entries {
            let off = is_offcpu(key);
            if key.flags & key_flags::UNWOUND != 0 && !unwound.contains_key(&(off, key.user_stack_hash)) {
                let map = if off { &self.offcpu.user_stacks } else { &self.user_stacks[idle] };
                let (ips, truncated) = match map.get(&key.user_stack_hash, 0) {
                    Ok(stack) => {
                        let len = (stack.len as usize).min(stack.ips.len());
                        (stack.ips[..len].to_vec(), stack.flags & stack_flags::TRUNCATED != 0)
                    }
                    Err(_) => (Vec::new(), true),
                };
                unwound.insert((off, key.user_stack_hash), (user_addrs(&ips), truncated));
            }
        }
        for (key, _) in &entries {
            let off = is_offcpu(key);
            let stacks = if off { &self.offcpu.stacks } else { &self.stacks[idle] };
            for (id, traces, user) in
                [(key.user_stack_id, &mut user_traces, true), (key.kernel_stack_id, &mut kernel_traces, false)]
            {
                if id >= 0 && !traces.contains_key(&(off, id)) {
                    let ips: Vec<u64> = stacks
                        .get(&(id as u32), 0)
                        .map(|t| t.frames().iter().map(|f| f.ip).collect())
                        .unwrap_or_default();
                    traces.insert((off, id), if user { user_addrs(&ips) } else { ips });
                }
            }
        }
        let ids: Vec<u32> = self.stacks[idle].stack_ids().filter_map(Result::ok).collect();
        for id in ids {
            let _ = self.stacks[idle].remove(&id);
        }
        let hashes: Vec<u64> = self.user_stacks[idle].keys().filter_map(Result::ok).collect();
        for hash in hashes {
            let _ = self.user_stacks[idle].remove(&hash);
        }

        self.sync_targets(events);

        // Each process's new addresses located in one batch; named in rounds (every
        // NAME_EVERY collections, at the last, and for processes that exited, whose maps are
        // dropped at the next), each object parsed once a round.
        let mut by_pid: HashMap<u32, Vec<u64>> = HashMap::new();
        for (key, _) in &entries {
            if let Some(addrs) = user_addresses(key, &user_traces, &unwound) {
                by_pid.entry(key.tgid).or_default().extend(addrs);
            }
        }
        for (pid, addrs) in &by_pid {
            if !self.symbols.knows_all(*pid, addrs) {
                let via = self.symbol_source(*pid);
                self.symbols.locate_user(*pid, via, addrs);
            }
        }
        self.collections += 1;
        let round = self.collections.is_multiple_of(NAME_EVERY) || self.last_collection || ended;
        let exited: Vec<u32> = events
            .iter()
            .filter_map(|e| if let ProcessEvent::Exited { pid } = e { Some(*pid) } else { None })
            .chain(self.gone.iter().copied())
            .collect();
        self.symbols.name_located(|pid| round || exited.contains(&pid));

        self.sampled.extend(entries.iter().map(|(key, _)| key.tgid));
        let kernel_addrs: Vec<u64> = kernel_traces.values().flatten().copied().collect();
        let (bpf, namer) = (&self.bpf, &mut self.kernel_names);
        self.symbols.name_kernel(&kernel_addrs, |addrs| {
            namer.as_mut()?.name(bpf, addrs).inspect_err(|e| kernel_names::say_why_kallsyms(e)).ok()
        });
        for (key, count) in entries {
            let off = is_offcpu(&key);
            let truncated = key.flags & key_flags::UNWOUND != 0
                && unwound.get(&(off, key.user_stack_hash)).is_some_and(|(_, t)| *t);
            let user = user_addresses(&key, &user_traces, &unwound).map(<[u64]>::to_vec);
            let mut kernel = Vec::new();
            if key.kernel_stack_id >= 0 {
                let names = self.symbols.kernel(&kernel_traces[&(off, key.kernel_stack_id)]);
                // A block's kernel stack was taken inside the switch event: its innermost
                // frames are the tracing machinery and this program, not the blocked thread.
                let from =
                    if off { names.iter().take_while(|f| f.iter().any(|n| is_tracing_frame(n))).count() } else { 0 };
                kernel.extend(names[from..].iter().rev().flat_map(|f| f.iter().cloned()));
            }
            // Runnable but not running: above the stack the thread stopped at.
            let wait = if key.flags & key_flags::THROTTLED != 0 {
                Some(THROTTLED_FRAME)
            } else if key.flags & key_flags::WAIT != 0 {
                Some(WAITING_FRAME)
            } else {
                None
            };
            // One unit per graph: CPU samples, or microseconds (blocks are counted in
            // nanoseconds; a CPU sample in wall mode is its period). CPU samples are counted
            // weighed by their CPU's period (`cpu_clock.rs`), in SAMPLE_UNITs each.
            let count = match (off, self.mode) {
                (true, _) => (count + 500) / 1000,
                (false, ProfileMode::Wall) => count * self.sample_us / eagle_ebpf::SAMPLE_UNIT,
                (false, _) => self.to_samples.samples(count),
            };
            let thread = (key.tid != 0 && !off).then_some(key.tid);
            let stack = RawStack { tgid: key.tgid, thread, truncated, user, kernel, wait };
            *self.unnamed.entry(stack).or_insert(0) += count;
        }
        // Every stack whose addresses are all named now goes into the graph, and in a round
        // every stack of the processes named: JIT code the perf map does not name yet is
        // never cached (see `Symbols::locate_user`), and shows as unknown.
        let (named, waiting): (HashMap<RawStack, u64>, HashMap<RawStack, u64>) =
            std::mem::take(&mut self.unnamed).into_iter().partition(|(stack, _)| {
                round
                    || exited.contains(&stack.tgid)
                    || stack.user.as_deref().is_none_or(|addrs| self.symbols.knows_all(stack.tgid, addrs))
            });
        self.unnamed = waiting;
        for (stack, count) in named {
            self.add_named(stack, count, out);
        }
        for pid in std::mem::take(&mut self.gone) {
            self.symbols.forget(pid);
        }
        self.symbols.end_batch();
        self.gone = events
            .iter()
            .filter_map(|e| if let ProcessEvent::Exited { pid } = e { Some(*pid) } else { None })
            .collect();
        Ok(())
    }

    fn live(&self) -> usize {
        self.tracked.values().filter(|t| t.alive).count()
    }

    /// CPU samples, counted blocks and counted waits.
    fn samples(&self) -> u64 {
        self.counter(Counter::Samples) + self.counter(Counter::OffCpuBlocks) + self.counter(Counter::Waits)
    }

    fn lost_samples(&self) -> u64 {
        self.counter(Counter::StackLost) + self.counter(Counter::CountsFull) + self.counter(Counter::OffCpuLost)
    }
}

/// Kernel frames of the tracing path that ran an eBPF program: `bpf_prog_<tag>_offcpu_switch`,
/// `bpf_trace_run4`, `__bpf_trace_sched_switch`.
fn is_tracing_frame(name: &str) -> bool {
    ["bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_"].iter().any(|p| name.starts_with(p))
}

/// Weighed counts of CPU samples into whole samples at the asked frequency: each stack's count
/// rounded up or down at random in proportion to its remainder, so that no stack is biased
/// (always down would lose a sample's fraction per stack and collection, and drop every stack
/// of a single sample taken at a short period).
struct WeighedSamples {
    rng: rand::rngs::StdRng,
}

impl Default for WeighedSamples {
    fn default() -> Self {
        Self { rng: rand::SeedableRng::from_rng(&mut rand::rng()) }
    }
}

impl WeighedSamples {
    fn samples(&mut self, weighed: u64) -> u64 {
        let (whole, rest) = (weighed / eagle_ebpf::SAMPLE_UNIT, weighed % eagle_ebpf::SAMPLE_UNIT);
        whole + u64::from(rand::Rng::random_range(&mut self.rng, 0..eagle_ebpf::SAMPLE_UNIT) < rest)
    }
}

fn is_offcpu(key: &StackKey) -> bool {
    key.flags & key_flags::OFFCPU != 0
}

/// The user addresses of a sample or block: unwound with tables, or walked by frame pointers.
fn user_addresses<'a>(
    key: &StackKey,
    walked: &'a HashMap<(bool, i32), Vec<u64>>,
    unwound: &'a HashMap<(bool, u64), (Vec<u64>, bool)>,
) -> Option<&'a [u64]> {
    let off = is_offcpu(key);
    if key.flags & key_flags::UNWOUND != 0 {
        unwound.get(&(off, key.user_stack_hash)).map(|(a, _)| a.as_slice())
    } else if key.user_stack_id >= 0 {
        walked.get(&(off, key.user_stack_id)).map(Vec::as_slice)
    } else {
        None
    }
}

/// Functions where a thread's code begins: the C library's process and thread start routines.
/// Nothing calls them but the kernel.
const THREAD_ENTRIES: [&str; 9] = [
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "clone",
    "clone3",
    "__clone",
    "start_thread",
    "thread_start",
];

/// A user stack (outermost frame first) from its thread's entry on: a frame outside it is no
/// caller, but what a frame-pointer walk read past code built without frame pointers (libc's
/// start-up in a static binary showed `register_tm_clones` above `__libc_start_call_main`).
fn from_thread_entry(frames: &[String]) -> &[String] {
    match frames.iter().position(|f| THREAD_ENTRIES.contains(&f.as_str())) {
        Some(entry) => &frames[entry..],
        None => frames,
    }
}

/// A stack's addresses as symbolization wants them: every frame but the innermost holds a
/// return address, one past its call; step back into the call so the caller is named, not
/// whatever follows the call.
fn user_addrs(ips: &[u64]) -> Vec<u64> {
    // A frame-pointer walk that reaches code built without frame pointers (libc's start-up,
    // for one) reads stack data as return addresses. A value outside user space, or in its
    // first page, is no code address: the walk has left the chain there, and what it found
    // from there on is noise, not frames (`perf` shows it as `[unknown]`).
    // The leaf itself is what the CPU ran: kept even when odd (the vsyscall page).
    let walked = ips.iter().skip(1).position(|&ip| !is_user_code_address(ip)).map_or(ips.len(), |i| i + 1);
    ips[..walked].iter().enumerate().map(|(i, &ip)| if i == 0 { ip } else { ip.saturating_sub(1) }).collect()
}

/// x86-64 and arm64 user space (48-bit virtual addresses), above the never-mapped first page.
fn is_user_code_address(ip: u64) -> bool {
    (0x1000..0x0000_8000_0000_0000).contains(&ip)
}

#[cfg(test)]
mod tests {
    #[test]
    fn incomplete_stacks_are_an_info_line_until_they_matter() {
        assert!(super::unwind_summary(1000, 0, 0).is_none());
        let small = super::unwind_summary(1000, 20, 1).expect("said");
        assert_eq!(small.code, eagle_proto::WarningCode::InfoUnwind);
        assert!(small.message.contains("20 (2.0%)") && small.message.contains("1 (0.1%)"), "{}", small.message);
        assert_eq!(super::unwind_summary(1000, 40, 20).expect("said").code, eagle_proto::WarningCode::UnwindIncomplete);
    }

    #[test]
    fn the_tracing_path_is_no_part_of_a_block() {
        assert!(super::is_tracing_frame("bpf_prog_47caeab29ceadefe_offcpu_switch_[k]"));
        assert!(super::is_tracing_frame("bpf_trace_run4_[k]"));
        assert!(!super::is_tracing_frame("__schedule_[k]"));
        assert!(!super::is_tracing_frame("bpf_map_lookup_elem"));
    }

    #[test]
    fn a_stack_starts_at_its_thread_entry() {
        let stack = |s: &str| s.split(';').map(str::to_owned).collect::<Vec<String>>();
        // A frame-pointer walk past libc's start-up (static binary): the bogus caller goes.
        let walked = stack("register_tm_clones;__libc_start_call_main;main;cpu_60");
        assert_eq!(super::from_thread_entry(&walked), &walked[1..]);
        // An unwound stack keeps every real start routine.
        let whole = stack("_start;__libc_start_main;__libc_start_call_main;main;cpu_60");
        assert_eq!(super::from_thread_entry(&whole), &whole[..]);
        let thread = stack("clone3;start_thread;worker;cpu_60");
        assert_eq!(super::from_thread_entry(&thread), &thread[..]);
        // A stack without a known entry (Go, a truncated walk) is left as it is.
        let go = stack("runtime.goexit;main.main;main.cpu60");
        assert_eq!(super::from_thread_entry(&go), &go[..]);
    }

    #[test]
    fn a_walk_that_left_the_frame_chain_ends_there() {
        // cpu_60 <- main <- __libc_start_call_main, then stack data read as addresses.
        let ips = [0x4016d4, 0x401ba5, 0x4020d4, 0xbe55_2274_c085_4800, 0x401600];
        assert_eq!(super::user_addrs(&ips), vec![0x4016d4, 0x401ba4, 0x4020d3]);
        assert_eq!(super::user_addrs(&[0x7f00_0000_1000, 0x10]), vec![0x7f00_0000_1000]);
    }

    #[test]
    fn child_pid_offset_old_and_new_layouts() {
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(super::tracefs::parse_child_pid_offset(new), Some(20));
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;\n\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(super::tracefs::parse_child_pid_offset(old), Some(44));
    }
}
