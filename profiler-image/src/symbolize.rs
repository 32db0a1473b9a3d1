//! Addresses to frame names, on the node, with blazesym.
//!
//! User code is named object by object. A process's executable mappings (`/proc/PID/maps`,
//! kept after it exits) turn each address into an offset in a mapped file; the file is opened
//! through the process's own view of it (`/proc/PID/map_files`, so a container's binaries
//! resolve without the host seeing their paths) when a sample first lands in it, held open
//! while a known process maps it (so the last samples of a process that exited are still
//! named), and read by blazesym as an ELF source at `/proc/self/fd/N`. Nothing is read ahead:
//! a node-wide run sees hundreds of processes mapping gigabytes of code, of which the samples
//! touch a few hundred functions. Reading every mapped object when a process was first named
//! (its symbol tables sorted by address and by name) cost a node-wide run 240 MiB.
//!
//! Names come from the ELF symbol tables, and from DWARF where an object carries it (up to
//! [`DWARF_MAX_BYTES`]): there a function inlined at an address is a frame of its own, marked
//! with [`INLINED_SUFFIX`]. Kernel code is named through kallsyms.
//!
//! Locating and naming are apart. Each collection locates its new addresses (the process's
//! mappings read, each address turned into an object and an offset in it, the object opened and
//! held): that needs the process alive, and is cheap. Naming reads the object with blazesym,
//! which parses it first (sorts its symbol table by address, reads the DWARF units the
//! addresses fall in) and drops that parse again when the object goes idle or DWARF passes its
//! budget: on a node-wide run the parse, not the lookup, was 70 % of the agent's CPU, one debug
//! build parsed again in nearly every collection for the few new addresses each brought. So the
//! sampler names in rounds ([`Symbols::name_located`]), every few collections, when a process
//! exits and at the window's end, and each round parses an object once for all the addresses
//! that came meanwhile. JIT code is named at once: its names come from a perf map that grows.
//!
//! Results are cached per process and address: hot loops hit the same few addresses. What
//! blazesym parsed of an object (sorted symbols, DWARF units, and the pages of the file it
//! touched, which count in the agent's resident memory) is dropped once no sample has needed
//! the object for [`IDLE_BATCHES`] batches ([`DWARF_IDLE_BATCHES`] where its DWARF is read):
//! after its first seconds a process's samples land on addresses already named, and a node-wide
//! run maps hundreds of objects.
//!
//! DWARF is read a slice of addresses at a time ([`DWARF_SLICE`]), and what it costs is
//! bounded by what it adds to the agent's resident memory: past [`DWARF_BUDGET_BYTES`] above
//! what the agent held with no DWARF parsed, all parsed DWARF is dropped before the next slice.
//! blazesym keeps every unit, line table and inlined function it parsed while an object is
//! open, and a debug build's first collection can ask for addresses in hundreds of units.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use blazesym::symbolize::evict::{self, Evict};
use blazesym::symbolize::source::{Elf, Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::{MaybeDefault, Pid};
pub use eagle_proto::INLINED_SUFFIX;
use object::elf::FileHeader64;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};

use crate::target_file::{read_in_root, TargetFileError};
use crate::unwind::maps::{self, ExecMapping};

/// Marks a kernel frame, as perf and inferno's palettes do.
pub const KERNEL_SUFFIX: &str = "_[k]";
pub const UNKNOWN: &str = "[unknown]";
/// Objects whose DWARF (`.debug_info`) is larger than this are named from their ELF symbol
/// tables only: the same function names, without inlined frames. blazesym keeps what it parsed
/// of an object's DWARF while the object is open, and the debug builds of big programs carry
/// hundreds of MB of it. `EAGLE_DWARF_MAX_BYTES` overrides it (0: symbol tables only).
pub const DWARF_MAX_BYTES: u64 = 32 << 20;

/// Batches ([`Symbols::end_batch`], one per collection) in which no address of an object was
/// named before what blazesym parsed of it is dropped. A new address in it later costs parsing
/// the object again (a few milliseconds for its symbol table, more for DWARF), which the
/// per-address cache makes rare; holding every object sampled once cost a node-wide run about
/// 100 MiB.
pub const IDLE_BATCHES: u64 = 8;
/// As [`IDLE_BATCHES`], for objects whose DWARF is read: one more than the collections between
/// two naming rounds (`sampler::ebpf::NAME_EVERY`), so that an object with new addresses in
/// every round keeps its parse from one round to the next instead of parsing it again each
/// round (a debug build's symbol table sorted and its units read: 20 to 90 ms); what stays
/// parsed is bounded by [`DWARF_BUDGET_BYTES`] all the same.
pub const DWARF_IDLE_BATCHES: u64 = 9;

/// What parsed DWARF may add to the agent's resident memory before it is dropped (see the
/// module's documentation). `EAGLE_DWARF_BUDGET_BYTES` overrides it.
pub const DWARF_BUDGET_BYTES: u64 = 8 << 20;
/// Addresses of one object named from its DWARF in one call to blazesym: its resident memory
/// is looked at between calls.
pub const DWARF_SLICE: usize = 64;

/// Frames of one address, outermost first (a function, then what was inlined into it).
pub type Frames = Rc<[String]>;

/// A mapped file, by device and inode.
type ObjectKey = (u64, u64);

/// An address located in a mapped file, not named yet.
#[derive(Clone, Debug)]
struct Located {
    object: ObjectKey,
    offset: u64,
    /// The mapping's path, for a `module+0xOFFSET` frame where the object names nothing.
    module: Rc<str>,
}

/// What [`Symbols::locate`] made of an address.
#[derive(Clone, Debug)]
enum Found {
    Named(Frames),
    InObject(Located),
    Nothing,
}

/// A mapped file, held open: blazesym reads it (and caches what it parsed) under
/// `/proc/self/fd/N`, which stays valid after every process mapping it exited.
struct ObjectFile {
    _file: File,
    path: PathBuf,
    /// Whether its DWARF is read (see [`DWARF_MAX_BYTES`]).
    dwarf: bool,
    /// Its separate debug file, where the process's root has one (see [`DebugFile`]).
    debug: Option<DebugFile>,
    /// Its size and times of change when opened (see [`ObjectFile::changed`]).
    stamp: Stamp,
    /// The batch in which blazesym last read it; `None` while blazesym holds nothing of it.
    used_in: Option<u64>,
}

pub struct Symbols {
    blaze: Symbolizer,
    user: HashMap<u32, HashMap<u64, Frames>>,
    kernel: HashMap<u64, Frames>,
    /// Processes with JIT code named by a perf map that grows while they run: what is unknown
    /// now may be named after the next map dump, so unknowns are not cached; their JIT frames
    /// carry this tag.
    jit: HashMap<u32, &'static str>,
    /// The executable mappings of each process, as last read while it lived.
    maps: HashMap<u32, Vec<ExecMapping>>,
    /// Files in which samples landed, while a process in `maps` maps them; `None` for one
    /// that could not be opened (its frames are `module+0xOFFSET`).
    objects: HashMap<ObjectKey, Option<ObjectFile>>,
    /// Addresses of each process located in an object but not named yet (see the module's
    /// documentation): the object, the offset in it, and the module's name for a frame where
    /// the object names nothing.
    located: HashMap<u32, HashMap<u64, Located>>,
    /// Names by object and offset in it, while the object is in `objects`: a binary that runs
    /// as many processes (a compiler, a test binary, a pool of workers) is named once, not once
    /// per process, and its object goes idle sooner.
    by_offset: HashMap<(ObjectKey, u64), Frames>,
    /// DWARF is read from objects with at most this much of it (see [`DWARF_MAX_BYTES`]).
    dwarf_max_bytes: u64,
    /// See [`DWARF_BUDGET_BYTES`].
    dwarf_budget: u64,
    /// The agent's resident memory before the DWARF held now was parsed; `None` while none is.
    dwarf_baseline: Option<u64>,
    /// Times all parsed DWARF was dropped for the budget, for `EAGLE_SYMBOLIZE_DEBUG=1`.
    dwarf_drops: u64,
    /// Perf map problems not yet taken ([`Symbols::take_perf_map_issues`]), and which process
    /// already had which kind said (once each: the map is read again at every batch).
    perf_map_issues: Vec<(u32, PerfMapIssue)>,
    perf_map_said: HashSet<(u32, bool)>,
    /// Collections so far (see [`IDLE_BATCHES`]).
    batch: u64,
}

impl Default for Symbols {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbols {
    pub fn new() -> Self {
        Self {
            // Inlined functions come with code information (blazesym reports them only with
            // it), which costs a look at the line table of each unit a sample lands in. File
            // and line themselves are not used.
            blaze: Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .build(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            jit: HashMap::new(),
            maps: HashMap::new(),
            objects: HashMap::new(),
            located: HashMap::new(),
            by_offset: HashMap::new(),
            dwarf_max_bytes: std::env::var("EAGLE_DWARF_MAX_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DWARF_MAX_BYTES),
            dwarf_budget: std::env::var("EAGLE_DWARF_BUDGET_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DWARF_BUDGET_BYTES),
            dwarf_baseline: None,
            dwarf_drops: 0,
            perf_map_issues: Vec::new(),
            perf_map_said: HashSet::new(),
            batch: 0,
        }
    }

    /// Ends a collection: what blazesym parsed of objects no sample needed in the last
    /// [`IDLE_BATCHES`] collections is dropped, and the memory it freed given back. Of the
    /// others, the pages of the files blazesym touched (symbol tables sorted, DWARF read) are
    /// left to the page cache: they are read again, without I/O, where a later batch needs them.
    pub fn end_batch(&mut self) {
        self.batch += 1;
        let mut evicted = false;
        for object in self.objects.values_mut().flatten() {
            let idle = if object.dwarf { DWARF_IDLE_BATCHES } else { IDLE_BATCHES };
            if object.used_in.is_some_and(|batch| self.batch - batch > idle) {
                object.evict(&mut self.blaze);
                evicted = true;
            }
        }
        if evicted {
            crate::memory::give_back_freed();
        }
        if !self.objects.values().flatten().any(|o| o.dwarf && o.used_in.is_some()) {
            self.dwarf_baseline = None;
        }
        unmap_pages_of(&self.parsed(false));
    }

    /// The objects blazesym holds parsed now; `dwarf`: only those whose DWARF it reads.
    /// Their separate debug files' keys are in it too, for their pages to be unmapped.
    fn parsed(&self, dwarf: bool) -> HashSet<ObjectKey> {
        self.objects
            .iter()
            .filter_map(|(k, o)| Some((k, o.as_ref()?)))
            .filter(|(_, o)| o.used_in.is_some() && (o.dwarf || !dwarf))
            .flat_map(|(k, o)| std::iter::once(*k).chain(o.debug.as_ref().map(|d| d.key)))
            .collect()
    }

    /// Problems with perf maps found since the last call, each process and kind once.
    pub fn take_perf_map_issues(&mut self) -> Vec<(u32, PerfMapIssue)> {
        std::mem::take(&mut self.perf_map_issues)
    }

    fn note_perf_map(&mut self, pid: u32, issue: Option<PerfMapIssue>) {
        let Some(issue) = issue else { return };
        if self.perf_map_said.insert((pid, matches!(issue, PerfMapIssue::Refused(_)))) {
            self.perf_map_issues.push((pid, issue));
        }
    }

    /// Names user addresses of `pid`, reading them from `via` (the process itself while it
    /// lives, or the process it was forked from). Unresolvable code becomes `module+0xOFFSET`,
    /// never a blank frame. [`Symbols::locate_user`] then [`Symbols::name_located`] for `pid`.
    pub fn user(&mut self, pid: u32, via: Option<u32>, addrs: &[u64]) -> Vec<Frames> {
        self.locate_user(pid, via, addrs);
        self.name_located(|p| p == pid);
        self.lookup_user(pid, addrs)
    }

    /// Locates the addresses of `pid` not named yet, reading them from `via` (see
    /// [`Symbols::user`]): what needs no object read (vDSO, anonymous memory, an object and
    /// offset named before, JIT code in the perf map) is named now; the rest waits for
    /// [`Symbols::name_located`], its object held open meanwhile.
    pub fn locate_user(&mut self, pid: u32, via: Option<u32>, addrs: &[u64]) {
        let known = |a: &u64| {
            self.user.get(&pid).is_some_and(|c| c.contains_key(a))
                || self.located.get(&pid).is_some_and(|l| l.contains_key(a))
        };
        let mut missing: Vec<u64> = addrs.iter().copied().filter(|a| !known(a)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return;
        }
        let jit = self.jit.get(&pid).copied();
        let resolved = match via {
            Some(via) => {
                self.read_maps(via);
                let (resolved, issue) = self.locate(via, &missing, jit);
                self.note_perf_map(pid, issue);
                resolved
            }
            None => vec![Found::Nothing; missing.len()],
        };
        for (addr, found) in missing.iter().zip(resolved) {
            match found {
                Found::Named(frames) => {
                    self.user.entry(pid).or_default().insert(*addr, frames);
                }
                Found::InObject(at) => {
                    self.located.entry(pid).or_default().insert(*addr, at);
                }
                Found::Nothing if jit.is_some() && via.is_some() => {} // retried after the next map dump
                Found::Nothing => {
                    self.user.entry(pid).or_default().insert(*addr, Rc::from(vec![UNKNOWN.to_owned()]));
                }
            }
        }
    }

    /// Names the located addresses of the processes `which` picks, each object read once for
    /// all of them (see the module's documentation).
    pub fn name_located(&mut self, which: impl Fn(u32) -> bool) {
        let pids: Vec<u32> = self.located.keys().copied().filter(|p| which(*p)).collect();
        if pids.is_empty() {
            return;
        }
        let mut by_object: HashMap<ObjectKey, Vec<u64>> = HashMap::new();
        for pid in &pids {
            for at in self.located[pid].values() {
                if !self.by_offset.contains_key(&(at.object, at.offset)) {
                    by_object.entry(at.object).or_default().push(at.offset);
                }
            }
        }
        for (key, mut offsets) in by_object {
            offsets.sort_unstable();
            offsets.dedup();
            let batch = self.batch;
            let named = match self.objects.get_mut(&key) {
                Some(Some(object)) => {
                    if (object.dwarf || object.debug.is_some()) && object.changed() {
                        object.evict(&mut self.blaze);
                        object.dwarf = false;
                        object.debug = None;
                    }
                    object.used_in = Some(batch);
                    let (path, dwarf) = (object.path.clone(), object.dwarf);
                    let debug = object.debug.as_ref().map(|d| (d.path.clone(), d.addresses_of(&offsets)));
                    if dwarf {
                        self.name_with_dwarf(key, &path, &offsets)
                    } else if let Some((debug_path, addresses)) = debug {
                        self.name_by_debug_file(&path, &debug_path, &offsets, &addresses)
                    } else {
                        self.name(&path, false, &offsets)
                    }
                }
                // Closed meanwhile (its process unmapped it): named by module and offset below.
                _ => Vec::new(),
            };
            for (n, offset) in offsets.into_iter().enumerate() {
                if let Some(Some(frames)) = named.get(n) {
                    self.by_offset.insert((key, offset), frames.clone());
                }
            }
        }
        for pid in pids {
            let located = self.located.remove(&pid).unwrap_or_default();
            let cache = self.user.entry(pid).or_default();
            for (addr, at) in located {
                // Stripped or unreadable code: the module and the offset in it.
                let frames = self
                    .by_offset
                    .get(&(at.object, at.offset))
                    .cloned()
                    .unwrap_or_else(|| Rc::from(vec![format!("{}+{:#x}", module_name(&at.module), at.offset)]));
                cache.insert(addr, frames);
            }
        }
        // Objects held open only for these addresses (see `release_unmapped`): one pass over
        // the known mappings a round.
        self.release_unmapped();
    }

    /// Whether addresses of `pid` wait to be named ([`Symbols::name_located`]).
    pub fn has_located(&self, pid: u32) -> bool {
        self.located.get(&pid).is_some_and(|l| !l.is_empty())
    }

    /// Frames of addresses already named (by [`Symbols::user`]); others are `[unknown]`.
    pub fn lookup_user(&self, pid: u32, addrs: &[u64]) -> Vec<Frames> {
        let unknown: Frames = Rc::from(vec![UNKNOWN.to_owned()]);
        let cache = self.user.get(&pid);
        addrs.iter().map(|a| cache.and_then(|c| c.get(a)).cloned().unwrap_or_else(|| unknown.clone())).collect()
    }

    /// Marks `pid` as running JIT code named by its perf map; `tag` is appended to JIT frames.
    pub fn set_jit(&mut self, pid: u32, tag: &'static str) {
        self.jit.insert(pid, tag);
    }

    /// Whether every address of `pid` is already named (so an exited process needs nothing new).
    pub fn knows_all(&self, pid: u32, addrs: &[u64]) -> bool {
        self.user.get(&pid).is_some_and(|c| addrs.iter().all(|a| c.contains_key(a)))
    }

    /// Names the kernel addresses not named yet with `namer` (the kernel's own lookup, see
    /// `sampler/kernel_names.rs`), in one go; what it does not name is left to
    /// [`Symbols::kernel`], which reads `/proc/kallsyms`.
    pub fn name_kernel(&mut self, addrs: &[u64], namer: impl FnOnce(&[u64]) -> Option<Vec<Option<String>>>) {
        let mut missing: Vec<u64> = addrs.iter().copied().filter(|a| !self.kernel.contains_key(a)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return;
        }
        let Some(names) = namer(&missing) else { return };
        for (addr, name) in missing.iter().zip(names) {
            if let Some(name) = name {
                self.kernel.insert(*addr, Rc::from(vec![format!("{name}{KERNEL_SUFFIX}")]));
            }
        }
    }

    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Frames> {
        let mut missing: Vec<u64> = addrs.iter().copied().filter(|a| !self.kernel.contains_key(a)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let src = Source::Kernel(Kernel {
                kallsyms: MaybeDefault::Default,
                vmlinux: MaybeDefault::None,
                debug_syms: false,
                ..Kernel::default()
            });
            let syms = self.blaze.symbolize(&src, Input::AbsAddr(&missing)).unwrap_or_default();
            for (i, addr) in missing.iter().enumerate() {
                let name = match syms.get(i) {
                    Some(Symbolized::Sym(s)) => format!("{}{KERNEL_SUFFIX}", s.name),
                    _ => format!("{UNKNOWN}{KERNEL_SUFFIX}"),
                };
                self.kernel.insert(*addr, Rc::from(vec![name]));
            }
        }
        addrs.iter().map(|a| self.kernel[a].clone()).collect()
    }

    /// Reads `pid`'s executable mappings again (they may have grown), kept for naming its code
    /// after it exits; if the process is gone, what was read before stays.
    fn read_maps(&mut self, pid: u32) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
        let mappings = maps::parse(&text);
        // A process that has exited but is not reaped yet (or whose leader thread has) reads
        // as no mappings at all: it is gone, not unmapped, and its addresses located so far
        // are still to be named from the files it mapped.
        if mappings.is_empty() {
            return;
        }
        let files = |maps: &[ExecMapping]| -> HashSet<ObjectKey> {
            maps.iter().filter(|m| m.is_file()).map(|m| (m.dev, m.inode)).collect()
        };
        let unmapped_some = self.maps.get(&pid).is_some_and(|old| !files(old).is_subset(&files(&mappings)));
        self.maps.insert(pid, mappings);
        // Most reads find the same files (or more): then nothing can be released.
        if unmapped_some {
            self.release_unmapped();
        }
    }

    /// Whether `pid`'s code can be read although it may have exited (see [`Symbols::read_maps`]).
    pub fn is_kept(&self, pid: u32) -> bool {
        self.maps.contains_key(&pid)
    }

    /// Drops what is cached for a process that is gone and whose samples are all named; its
    /// pid may be reused by another program.
    pub fn forget(&mut self, pid: u32) {
        self.user.remove(&pid);
        self.located.remove(&pid);
        if self.maps.remove(&pid).is_some() {
            self.release_unmapped();
        }
    }

    /// Closes the files no known process maps any more, and drops what blazesym parsed of them;
    /// a file with addresses located in it and not named yet stays open until they are.
    fn release_unmapped(&mut self) {
        let mapped: HashSet<ObjectKey> = self
            .maps
            .values()
            .flatten()
            .filter(|m| m.is_file())
            .map(|m| (m.dev, m.inode))
            .chain(self.located.values().flat_map(|l| l.values().map(|at| at.object)))
            .collect();
        let unmapped: Vec<ObjectKey> = self.objects.keys().filter(|k| !mapped.contains(k)).copied().collect();
        if !unmapped.is_empty() {
            // The same device and inode may be another file later.
            self.by_offset.retain(|(key, _), _| mapped.contains(key));
        }
        for key in unmapped {
            if let Some(Some(mut object)) = self.objects.remove(&key) {
                if object.used_in.is_some() {
                    object.evict(&mut self.blaze);
                }
            }
        }
    }

    /// Whether the file of mapping `m` of `pid` is open, opening it at its first use.
    fn open_object(&mut self, pid: u32, m: &ExecMapping) -> bool {
        let dwarf_max_bytes = self.dwarf_max_bytes;
        self.objects.entry((m.dev, m.inode)).or_insert_with(|| ObjectFile::open(pid, m, dwarf_max_bytes)).is_some()
    }

    /// Where each of `addrs` of `pid` is (see [`Symbols::locate_user`]), with the perf map's
    /// problems where `jit_tag` says the process has one.
    fn locate(&mut self, pid: u32, addrs: &[u64], jit_tag: Option<&str>) -> (Vec<Found>, Option<PerfMapIssue>) {
        let mut out: Vec<Found> = vec![Found::Nothing; addrs.len()];
        let mut vdso: Vec<usize> = Vec::new();
        let mappings = self.maps.get(&pid).cloned().unwrap_or_default();
        for (i, addr) in addrs.iter().enumerate() {
            let at = mappings.partition_point(|m| m.start <= *addr);
            let Some(m) = at.checked_sub(1).map(|at| &mappings[at]).filter(|m| *addr < m.end) else { continue };
            if m.is_file() {
                let (object, offset) = ((m.dev, m.inode), addr - m.start + m.offset);
                out[i] = match self.by_offset.get(&(object, offset)).cloned() {
                    Some(frames) => Found::Named(frames),
                    None if self.open_object(pid, m) => {
                        Found::InObject(Located { object, offset, module: Rc::from(m.path.as_str()) })
                    }
                    // Gone, or no regular file: the module and the offset in it.
                    None => Found::Named(Rc::from(vec![format!("{}+{offset:#x}", module_name(&m.path))])),
                };
            } else if m.path == "[vdso]" {
                vdso.push(i);
            }
        }
        if !vdso.is_empty() {
            let mut process = Process::new(Pid::from(pid));
            process.perf_map = false;
            // No file a mapping might name is followed (see `DebugSections`); blazesym reads the
            // vDSO from the agent's own, which has no DWARF either way.
            process.debug_syms = false;
            let vdso_addrs: Vec<u64> = vdso.iter().map(|&i| addrs[i]).collect();
            let syms = self.blaze.symbolize(&Source::Process(process), Input::AbsAddr(&vdso_addrs)).unwrap_or_default();
            for (n, i) in vdso.into_iter().enumerate() {
                if let Some(Symbolized::Sym(sym)) = syms.get(n) {
                    out[i] = Found::Named(frames_of(&sym.name, sym.inlined.iter().map(|f| f.name.as_ref())));
                }
            }
        }
        // JIT code, named by the runtime's perf map.
        let mut issue = None;
        if let Some(tag) = jit_tag {
            match PerfMap::read(pid) {
                Ok(map) => {
                    for (i, addr) in addrs.iter().enumerate() {
                        if matches!(out[i], Found::Nothing) {
                            if let Some(name) = map.find(*addr) {
                                out[i] = Found::Named(Rc::from(vec![format!("{name}{tag}")]));
                            }
                        }
                    }
                    issue = map.problems.any().then_some(PerfMapIssue::Lines(map.problems));
                }
                // No map (yet), or the process is gone: nothing the process did wrong.
                Err(TargetFileError::Missing { .. } | TargetFileError::Unreadable { .. }) => {}
                Err(refused) => issue = Some(PerfMapIssue::Refused(refused)),
            }
        }
        (out, issue)
    }

    /// Names `offsets` in the object blazesym reads at `path`, from its DWARF if `dwarf`;
    /// `None` where it finds no name.
    fn name(&self, path: &Path, dwarf: bool, offsets: &[u64]) -> Vec<Option<Frames>> {
        self.name_input(path, dwarf, Input::FileOffset(offsets))
    }

    fn name_input(&self, path: &Path, dwarf: bool, input: Input<&[u64]>) -> Vec<Option<Frames>> {
        let mut source = Elf::new(path);
        source.debug_syms = dwarf;
        let count = input.as_inner_ref().len();
        let syms = self.blaze.symbolize(&Source::Elf(source), input).unwrap_or_default();
        (0..count)
            .map(|n| match syms.get(n) {
                Some(Symbolized::Sym(sym)) => Some(frames_of(&sym.name, sym.inlined.iter().map(|f| f.name.as_ref()))),
                _ => None,
            })
            .collect()
    }

    /// Names `offsets` of the object at `path` from its separate debug file's symbol table
    /// (`addresses`: where each offset is in it), and those it does not name from the object's
    /// own.
    fn name_by_debug_file(
        &self,
        path: &Path,
        debug_path: &Path,
        offsets: &[u64],
        addresses: &[Option<u64>],
    ) -> Vec<Option<Frames>> {
        let at: Vec<(usize, u64)> = addresses.iter().enumerate().filter_map(|(n, a)| Some((n, (*a)?))).collect();
        let virtual_addresses: Vec<u64> = at.iter().map(|(_, a)| *a).collect();
        let mut named = vec![None; offsets.len()];
        for ((n, _), frames) in at.iter().zip(self.name_input(debug_path, false, Input::VirtOffset(&virtual_addresses)))
        {
            named[*n] = frames;
        }
        let rest: Vec<usize> = (0..offsets.len()).filter(|n| named[*n].is_none()).collect();
        if !rest.is_empty() {
            let rest_offsets: Vec<u64> = rest.iter().map(|n| offsets[*n]).collect();
            for (n, frames) in rest.into_iter().zip(self.name(path, false, &rest_offsets)) {
                named[n] = frames;
            }
        }
        named
    }

    /// [`Symbols::name`] from DWARF, [`DWARF_SLICE`] addresses at a time, dropping all parsed
    /// DWARF between slices where it passed its budget.
    fn name_with_dwarf(&mut self, key: ObjectKey, path: &Path, offsets: &[u64]) -> Vec<Option<Frames>> {
        let mut named = Vec::with_capacity(offsets.len());
        for slice in offsets.chunks(DWARF_SLICE) {
            let baseline = *self.dwarf_baseline.get_or_insert_with(crate::memory::resident_bytes);
            if let Some(Some(object)) = self.objects.get_mut(&key) {
                object.used_in = Some(self.batch);
            }
            named.extend(self.name(path, true, slice));
            // A budget of 0 holds nothing parsed from one slice to the next.
            if self.dwarf_budget == 0 {
                self.drop_dwarf();
                continue;
            }
            let limit = baseline.saturating_add(self.dwarf_budget);
            if crate::memory::resident_bytes() > limit {
                // Most of what a slice adds is often the pages of the file it touched, not the
                // units parsed: letting go of those first keeps the parse, which the next slice
                // and round would otherwise do again (a debug build's symbol table sorted, its
                // units read), for minor faults on the pages read again.
                unmap_pages_of(&self.parsed(true));
                if crate::memory::resident_bytes() > limit {
                    self.drop_dwarf();
                }
            }
        }
        named
    }

    /// Drops what blazesym parsed of every object whose DWARF it read, and the pages of them it
    /// touched.
    fn drop_dwarf(&mut self) {
        let dropped = self.parsed(true);
        for key in &dropped {
            if let Some(Some(object)) = self.objects.get_mut(key) {
                object.evict(&mut self.blaze);
            }
        }
        crate::memory::give_back_freed();
        unmap_pages_of(&dropped);
        self.dwarf_baseline = None;
        self.dwarf_drops += 1;
        if std::env::var_os("EAGLE_SYMBOLIZE_DEBUG").is_some() {
            eprintln!(
                "symbolize: batch {}: parsed DWARF of {} object(s) dropped ({} times so far), resident {:.1} MiB",
                self.batch,
                dropped.len(),
                self.dwarf_drops,
                crate::memory::resident_bytes() as f64 / 1048576.0
            );
        }
    }
}

/// Unmaps this process's pages of `objects`' files (blazesym's mappings of them), which stay in
/// the page cache; what blazesym parsed of them stays.
fn unmap_pages_of(objects: &HashSet<ObjectKey>) {
    if !objects.is_empty() {
        crate::memory::unmap_file_pages(|dev, inode| objects.contains(&(dev, inode)));
    }
}

/// The frames of one address: the function, then each function inlined into it, outermost
/// first, marked.
fn frames_of<'a>(function: &str, inlined: impl Iterator<Item = &'a str>) -> Frames {
    let mut frames = vec![function.to_owned()];
    frames.extend(inlined.map(|name| format!("{name}{INLINED_SUFFIX}")));
    Rc::from(frames)
}

impl ObjectFile {
    /// Opens the file of mapping `m` through `pid`'s view of it; `None` when the mapping is
    /// gone or is not a regular file.
    fn open(pid: u32, m: &ExecMapping, dwarf_max_bytes: u64) -> Option<Self> {
        // What a hostile process maps executable is not known to be a file yet.
        let file = crate::target_file::open_mapped_file(pid, m.start, m.end)?;
        let sections = DebugSections::of(&file);
        let dwarf = dwarf_max_bytes > 0
            && sections.read
            && !sections.points_elsewhere
            && sections.info_bytes <= dwarf_max_bytes;
        let debug = if sections.points_elsewhere { DebugFile::find(pid, &sections) } else { None };
        let stamp = Stamp::of(&file)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Some(Self { _file: file, path, dwarf, debug, stamp, used_in: None })
    }

    /// Whether the file changed since it was opened. blazesym parses a file afresh when its size
    /// or time of change do, and a process that can write the file it mapped could add a debug
    /// link after [`DebugSections`] looked: such a file is named from its symbol tables from then
    /// on. A change in the middle of one call to blazesym is not seen.
    fn changed(&self) -> bool {
        Stamp::of(&self._file).is_none_or(|now| now != self.stamp)
    }

    /// Drops what blazesym parsed of it (and of its debug file).
    fn evict(&mut self, blaze: &mut Symbolizer) {
        let _ = blaze.evict(&Evict::Elf(evict::Elf::new(&self.path)));
        if let Some(debug) = &self.debug {
            let _ = blaze.evict(&Evict::Elf(evict::Elf::new(&debug.path)));
        }
        self.used_in = None;
    }
}

/// A file's size and the times of its last change, as blazesym compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(u64, i64, i64, i64, i64);

impl Stamp {
    fn of(file: &File) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        Some(Self(m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
    }
}

/// Where a distribution keeps separate debug files by build ID (Debian's `-dbg` and `-dbgsym`
/// packages, Fedora's `debuginfo`): `.build-id/XX/REST.debug` below it.
const DEBUG_FILE_DIR: &str = "/usr/lib/debug";

/// An object's separate debug file, found by the object's build ID under [`DEBUG_FILE_DIR`]
/// inside the root of a process of the host's mount namespace that maps it
/// (`target_file::open_regular_in_root`: no link leaves that root, a FIFO or device is never
/// opened) and holding the same build ID. It names the object's code first (its symbol table has
/// the static functions the dynamic symbols lack), the object's own symbols the rest; its DWARF
/// is not read (a distribution's is compressed, and often in a supplementary file besides). This
/// is the debug link blazesym would follow, taken where it is safe to.
struct DebugFile {
    _file: File,
    path: PathBuf,
    key: ObjectKey,
    /// The object's loadable segments, (file offset, size in the file, virtual address): a
    /// debug file's code sections hold no bytes, so a file offset in the object is turned into
    /// the virtual address its symbols are at.
    segments: Vec<(u64, u64, u64)>,
}

impl DebugFile {
    fn find(pid: u32, object: &DebugSections) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let id = object.build_id.as_deref().filter(|id| id.len() >= 2)?;
        // Only a process of the host's own mount namespace (init's; the agent's own where init's
        // cannot be read, as in a sandbox): an object is named once for every process that maps
        // it, and containers share their images' files, so a debug file in one container's root
        // would name another tenant's frames.
        let namespace = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok().map(|m| m.ino());
        let host = namespace("1").or_else(|| namespace("self"));
        if host.is_none() || namespace(&pid.to_string()) != host {
            return None;
        }
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let path = format!("{DEBUG_FILE_DIR}/.build-id/{}/{}.debug", hex(&id[..1]), hex(&id[1..]));
        let file = crate::target_file::open_regular_in_root(Path::new("/proc"), pid, &path).ok()?;
        let sections = DebugSections::of(&file);
        if sections.build_id.as_deref() != Some(id) {
            return None;
        }
        let meta = file.metadata().ok()?;
        // As `/proc/PID/maps` shows a device, which the pages to unmap are found by.
        let dev = (u64::from(libc::major(meta.dev())) << 32) | u64::from(libc::minor(meta.dev()));
        // A prelinked object's segments moved, its debug file's did not: the debug file's own
        // addresses, segment by segment, where it has as many.
        let segments = if sections.segments.len() == object.segments.len() {
            object
                .segments
                .iter()
                .zip(&sections.segments)
                .map(|(&(off, size, _), &(_, _, vaddr))| (off, size, vaddr))
                .collect()
        } else {
            object.segments.clone()
        };
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Some(Self { _file: file, path, key: (dev, meta.ino()), segments })
    }

    /// Where each file offset of the object is in the debug file; `None` outside its segments.
    fn addresses_of(&self, offsets: &[u64]) -> Vec<Option<u64>> {
        offsets
            .iter()
            .map(|&offset| {
                self.segments.iter().find_map(|&(start, size, vaddr)| {
                    (offset >= start && offset - start < size).then(|| vaddr.checked_add(offset - start)).flatten()
                })
            })
            .collect()
    }
}

/// What an object's section headers say of its DWARF.
struct DebugSections {
    /// The size of its `.debug_info` (0 when it has none, or is no 64-bit ELF file: blazesym
    /// then says what it can).
    info_bytes: u64,
    /// Whether it names another file to read DWARF from: a `.gnu_debuglink` (a file name and a
    /// checksum), a `.gnu_debugaltlink` or a `.debug_sup` (a supplementary file, by path). Such
    /// an object is named from its symbol tables only. blazesym would look the file up in the
    /// agent's own filesystem: under `/usr/lib/debug`, beside the path the object has in the
    /// agent's view (`/proc/self/fd/N` itself where that path is not there), or at the path as
    /// written. Those are names the profiled process chose, and the agent is root with the
    /// host's `/proc`: a FIFO there hangs it, a device can act on being opened, and a large
    /// file is read whole for its checksum.
    points_elsewhere: bool,
    /// Its GNU build ID (`.note.gnu.build-id`).
    build_id: Option<Vec<u8>>,
    /// Its loadable segments: (file offset, size in the file, virtual address).
    segments: Vec<(u64, u64, u64)>,
    /// Whether its headers were read: where they were not (no 64-bit ELF file as the `object`
    /// crate reads one, an extended section count), nothing above is known, and its DWARF is
    /// not read, as blazesym would read it more leniently and follow what it names.
    read: bool,
}

impl DebugSections {
    fn of(file: &File) -> Self {
        let mut out =
            Self { info_bytes: 0, points_elsewhere: false, build_id: None, segments: Vec::new(), read: false };
        let data = object::ReadCache::new(file);
        let Ok(header) = FileHeader64::<object::Endianness>::parse(&data) else { return out };
        let Ok(endian) = header.endian() else { return out };
        // A count of 0 (or of 0xffff segments) stands for one kept in the first section header,
        // up to 2^32 entries that the reader would hold: none are that big.
        if header.e_shnum.get(endian) == 0 || header.e_phnum.get(endian) == 0xffff {
            return out;
        }
        let Ok(sections) = header.sections(endian, &data) else { return out };
        for section in sections.iter() {
            match sections.section_name(endian, section) {
                Ok(b".debug_info" | b".zdebug_info") => out.info_bytes += section.sh_size(endian),
                Ok(b".gnu_debuglink" | b".gnu_debugaltlink" | b".debug_sup") => out.points_elsewhere = true,
                // A build ID note is 36 bytes; a large one is no build ID, and would be read whole.
                Ok(b".note.gnu.build-id") if section.sh_size(endian) <= 4096 => {
                    if let Ok(Some(mut notes)) = section.notes(endian, &data) {
                        while let Ok(Some(note)) = notes.next() {
                            if note.name() == b"GNU" && note.n_type(endian) == object::elf::NT_GNU_BUILD_ID {
                                out.build_id = Some(note.desc().to_vec());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let Ok(headers) = header.program_headers(endian, &data) {
            out.segments = headers
                .iter()
                .filter(|h| h.p_type(endian) == object::elf::PT_LOAD)
                .map(|h| (h.p_offset(endian), h.p_filesz(endian), h.p_vaddr(endian)))
                .collect();
        }
        out.read = true;
        out
    }
}

fn module_name(path: &str) -> String {
    let name = Path::new(path).file_name().map_or_else(|| path.into(), |n| n.to_string_lossy());
    // " (deleted)" when the binary was replaced on disk while running
    name.trim_end_matches(" (deleted)").to_owned()
}

/// A perf map (`/tmp/perf-PID.map`: `START SIZE NAME` per line, hex, `0x` optional), as JIT
/// runtimes write it for profilers. Read through `/proc/PID/root`, so a container's map is found
/// in its own mount namespace, under its own pid.
pub struct PerfMap {
    /// (start, end, name), sorted by start.
    entries: Vec<(u64, u64, String)>,
    /// What was wrong with its lines.
    pub problems: LineProblems,
}

/// Lines of a perf map that were not taken as they stood, by why. A hostile process writes
/// what it likes; the user should know its JIT frames may be wrong or missing, and why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineProblems {
    /// Not `START SIZE NAME` in hex, an empty name or a size of 0: skipped.
    pub malformed: usize,
    /// `START + SIZE` past the address space: skipped.
    pub overflowing: usize,
    /// Names with control characters (terminal escape sequences): kept, with them escaped.
    pub escaped: usize,
    /// Names longer than [`PerfMap::MAX_NAME`]: kept, cut.
    pub cut: usize,
}

impl LineProblems {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

impl std::fmt::Display for LineProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.malformed, "not `START SIZE NAME` (skipped)"),
            (self.overflowing, "with START + SIZE past the address space (skipped)"),
            (self.escaped, "with control characters in the name (escaped)"),
            (self.cut, "with a name over 1024 bytes (cut)"),
        ];
        let said: Vec<String> =
            parts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} line(s) {what}")).collect();
        f.write_str(&said.join(", "))
    }
}

impl PerfMap {
    /// Perf maps larger than this are refused: a JIT writes some hundred bytes per compiled
    /// method, so this is hundreds of thousands of methods, and a larger file is more likely
    /// hostile than real.
    pub const MAX_BYTES: u64 = 64 << 20;
    /// Longer names are cut: a JIT's longest signatures are a few hundred bytes.
    pub const MAX_NAME: usize = 1024;

    /// The map of `pid`, read as the hostile input it may be (see [`crate::target_file`]).
    pub fn read(pid: u32) -> Result<Self, TargetFileError> {
        let proc = Path::new("/proc");
        let gone =
            || TargetFileError::Unreadable { path: format!("/proc/{pid}/status"), reason: "process gone".into() };
        let status = std::fs::read_to_string(proc.join(format!("{pid}/status"))).map_err(|_| gone())?;
        // The pid inside the process's own pid namespace names the file.
        let ns_pid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("NStgid:"))
            .and_then(|v| v.split_whitespace().last()?.parse().ok())
            .ok_or_else(gone)?;
        let bytes = read_in_root(proc, pid, &format!("/tmp/perf-{ns_pid}.map"), Self::MAX_BYTES)?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    pub fn parse(text: &str) -> Self {
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let mut problems = LineProblems::default();
        let mut entries: Vec<(u64, u64, String)> = text
            .lines()
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let fields = (parts.next().and_then(hex), parts.next().and_then(hex), parts.next().map(str::trim));
                let (Some(start), Some(size), Some(name)) = fields else {
                    problems.malformed += 1;
                    return None;
                };
                if size == 0 || name.is_empty() {
                    problems.malformed += 1;
                    return None;
                }
                // A hostile map may say anything: an end past the address space is no code.
                let Some(end) = start.checked_add(size) else {
                    problems.overflowing += 1;
                    return None;
                };
                let mut name = name;
                if name.len() > Self::MAX_NAME {
                    problems.cut += 1;
                    let mut at = Self::MAX_NAME;
                    while !name.is_char_boundary(at) {
                        at -= 1;
                    }
                    name = &name[..at];
                }
                let name = if name.chars().any(char::is_control) {
                    problems.escaped += 1;
                    escape_controls(name)
                } else {
                    name.to_owned()
                };
                Some((start, end, name))
            })
            .collect();
        // Later lines win for the same start: the JIT reuses code memory.
        entries.reverse();
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        Self { entries, problems }
    }

    pub fn find(&self, addr: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.0 <= addr).checked_sub(1)?;
        let (start, end, name) = &self.entries[i];
        (*start <= addr && addr < *end).then_some(name.as_str())
    }
}

/// `name` with each control character written as its code (`\x1b`): visible, and inert on a
/// terminal.
fn escape_controls(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// What was wrong with a process's perf map, said once per process and kind.
#[derive(Debug, PartialEq, Eq)]
pub enum PerfMapIssue {
    /// The file was refused (a link, not a regular file, too large, another user's).
    Refused(TargetFileError),
    /// Some of its lines were skipped or changed.
    Lines(LineProblems),
}

#[cfg(test)]
mod tests {
    use super::{LineProblems, PerfMap, Symbols, DWARF_IDLE_BATCHES, DWARF_SLICE, IDLE_BATCHES};

    #[inline(never)]
    fn named_by_its_symbol() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn objects_idle_for_some_batches_are_dropped_and_read_again_when_needed() {
        let pid = std::process::id();
        let addr = named_by_its_symbol as *const () as usize as u64;
        let mut symbols = Symbols::new();
        // Idleness alone: parsing this test binary's DWARF can add more than the memory budget,
        // which drops it at once (`dwarf_dropped_between_slices_names_the_same`).
        symbols.dwarf_budget = u64::MAX;
        let name = |symbols: &mut Symbols| symbols.user(pid, Some(pid), &[addr])[0].join(";");
        let first = name(&mut symbols);
        assert!(first.contains("named_by_its_symbol"), "{first}");
        let held = |symbols: &Symbols| symbols.objects.values().flatten().filter(|o| o.used_in.is_some()).count();
        assert_eq!(held(&symbols), 1);
        // This test binary has DWARF unless built without debug information.
        let dwarf = symbols.objects.values().flatten().any(|o| o.dwarf);
        let idle = if dwarf { DWARF_IDLE_BATCHES } else { IDLE_BATCHES };
        for _ in 0..idle {
            symbols.end_batch();
        }
        assert_eq!(held(&symbols), 1, "dropped before it was idle for {idle} batches");
        symbols.end_batch();
        assert_eq!(held(&symbols), 0, "still held after {} idle batches", idle + 1);
        // Another process of the same binary (here: this one, forgotten) is named from what
        // was named by object and offset, without reading the object again.
        symbols.user.remove(&pid);
        assert_eq!(name(&mut symbols), first);
        assert_eq!(held(&symbols), 0);
        // Once no process maps it, all of it goes; a new address reads it again.
        symbols.forget(pid);
        assert!(symbols.objects.is_empty() && symbols.by_offset.is_empty());
        assert_eq!(name(&mut symbols), first);
        assert_eq!(held(&symbols), 1);
    }

    /// Addresses named from DWARF with no budget (everything parsed dropped after each slice)
    /// have the names they have when it is all kept.
    #[test]
    fn dwarf_dropped_between_slices_names_the_same() {
        let pid = std::process::id();
        let start = named_by_its_symbol as *const () as usize as u64;
        // Addresses across many functions of this binary, more than a few slices.
        let addrs: Vec<u64> = (0..DWARF_SLICE as u64 * 3).map(|i| start + i * 64).collect();
        let mut kept = Symbols::new();
        kept.dwarf_budget = u64::MAX;
        let mut dropped = Symbols::new();
        dropped.dwarf_budget = 0;
        let names = |symbols: &mut Symbols| -> Vec<String> {
            symbols.user(pid, Some(pid), &addrs).iter().map(|f| f.join(";")).collect()
        };
        let expected = names(&mut kept);
        assert!(expected[0].contains("named_by_its_symbol"), "{}", expected[0]);
        assert_eq!(names(&mut dropped), expected);
        if dropped.objects.values().flatten().any(|o| o.dwarf) {
            assert!(dropped.dwarf_drops >= 3, "dropped {} times", dropped.dwarf_drops);
            assert_eq!(kept.dwarf_drops, 0);
            assert!(!dropped.objects.values().flatten().any(|o| o.used_in.is_some()), "DWARF still held");
        }
    }

    /// Addresses located over several collections are named in one round, their object
    /// parsed once for all, with the names they get one by one.
    #[test]
    fn located_addresses_are_named_in_one_round_as_one_by_one() {
        let pid = std::process::id();
        let start = named_by_its_symbol as *const () as usize as u64;
        let addrs: Vec<u64> = (0..8u64).map(|i| start + i * 256).collect();
        let mut one_by_one = Symbols::new();
        let expected: Vec<String> = addrs.iter().map(|a| one_by_one.user(pid, Some(pid), &[*a])[0].join(";")).collect();
        let mut rounds = Symbols::new();
        // Every parse of a DWARF object dropped at once: each naming of it counts one drop.
        rounds.dwarf_budget = 0;
        for (n, addr) in addrs.iter().enumerate() {
            rounds.locate_user(pid, Some(pid), &[*addr]);
            assert!(!rounds.knows_all(pid, &[*addr]) && rounds.has_located(pid), "address {n} named before its round");
            rounds.end_batch();
        }
        rounds.name_located(|p| p == pid);
        assert!(!rounds.has_located(pid));
        let got: Vec<String> = rounds.lookup_user(pid, &addrs).iter().map(|f| f.join(";")).collect();
        assert_eq!(got, expected);
        if rounds.objects.values().flatten().any(|o| o.dwarf) {
            assert_eq!(rounds.dwarf_drops, 1, "the object was parsed once for the round");
        }
        // Another process's addresses are not named by a round for this one.
        rounds.locate_user(pid, Some(pid), &[start + 4096]);
        rounds.name_located(|p| p != pid);
        assert!(rounds.has_located(pid));
    }

    /// A process that exits between the collection that located its addresses and the round
    /// that names them reads as no mappings at all until it is reaped: its code is still named
    /// from the files it mapped.
    #[test]
    fn addresses_located_before_an_exit_are_named_after_it() {
        let start = named_by_its_symbol as *const () as usize as u64;
        let mut one_by_one = Symbols::new();
        let pid = std::process::id();
        let expected = one_by_one.user(pid, Some(pid), &[start])[0].join(";");
        assert!(expected.contains("named_by_its_symbol"), "{expected}");
        let mut go: [libc::c_int; 2] = [0; 2];
        // SAFETY: a pipe into a local array; the child only reads it and exits (both safe to
        // call after a fork of a threaded process), with this binary's mappings.
        assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let mut byte = 0u8;
            unsafe {
                libc::close(go[1]);
                libc::read(go[0], (&raw mut byte).cast(), 1);
                libc::_exit(0);
            }
        }
        unsafe { libc::close(go[0]) };
        let child = child as u32;
        let mut symbols = Symbols::new();
        symbols.locate_user(child, Some(child), &[start]);
        assert!(symbols.has_located(child));
        // The child exits and stays a zombie (not reaped) while its maps are read again.
        unsafe { libc::close(go[1]) };
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !zombie() {
            assert!(std::time::Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        symbols.locate_user(child, Some(child), &[start + 1]);
        symbols.name_located(|p| p == child);
        let got = symbols.lookup_user(child, &[start])[0].join(";");
        unsafe { libc::waitpid(child as libc::pid_t, std::ptr::null_mut(), 0) };
        assert_eq!(got, expected);
        // Named and the process forgotten: nothing is held for it.
        symbols.forget(child);
        assert!(symbols.objects.is_empty() && symbols.by_offset.is_empty());
    }

    #[test]
    fn hostile_lines_are_counted_and_names_made_inert() {
        let text = "ffffffffffffff00 1000 wraps\n\
                    not a line\n\
                    10 0 empty\n\
                    20 10 \u{1b}]0;pwn\u{7}evil\n\
                    \n\
                    30 10 ok\n";
        let map = PerfMap::parse(text);
        assert_eq!(map.problems, LineProblems { malformed: 2, overflowing: 1, escaped: 1, cut: 0 });
        assert_eq!(map.find(0x20), Some("\\x1b]0;pwn\\x07evil"));
        assert_eq!(map.find(0x30), Some("ok"));
        let said = map.problems.to_string();
        assert!(
            said.contains("2 line(s) not `START SIZE NAME`") && said.contains("1 line(s) with START + SIZE"),
            "{said}"
        );
        let long = format!("40 10 {}é\n", "a".repeat(PerfMap::MAX_NAME - 1));
        let map = PerfMap::parse(&long);
        assert_eq!(map.problems.cut, 1);
        assert_eq!(map.find(0x40).map(str::len), Some(PerfMap::MAX_NAME - 1));
        assert!(!PerfMap::parse("30 10 ok\n").problems.any());
    }

    #[test]
    fn perf_maps_of_hotspot_and_node() {
        let hotspot = "0x00007f7fc0ec7620 0x0000000000000158 long GroundTruth.spin(long)\n\
                       0x00007f7fb9401740 0x00000000000001c0 long GroundTruth.cpu60(long)\n";
        let map = PerfMap::parse(hotspot);
        assert_eq!(map.find(0x7f7fc0ec7620 + 0x10), Some("long GroundTruth.spin(long)"));
        assert_eq!(map.find(0x7f7fb9401740), Some("long GroundTruth.cpu60(long)"));
        assert_eq!(map.find(0x7f7fb9401740 + 0x1c0), None);
        assert_eq!(map.find(1), None);
        // An end past the address space is dropped, not wrapped around.
        assert_eq!(PerfMap::parse("ffffffffffffff00 1000 wraps\n10 10 ok\n").find(0x10), Some("ok"));
        assert_eq!(PerfMap::parse("ffffffffffffff00 1000 wraps\n").find(0x0), None);
        let node = "3ef414c0 398 RegExp:[{(]\n3ef418a0 884 LazyCompile:~main /app/server.js:1\n";
        assert_eq!(PerfMap::parse(node).find(0x3ef418a0 + 4), Some("LazyCompile:~main /app/server.js:1"));
    }
}
