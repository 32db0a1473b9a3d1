//! Keeps the kernel's unwind tables in step with the target processes, on a thread of its own
//! so that building the table of a big binary never delays a collection.
//!
//! The eBPF program asks for a process (the `unwind_requests` map) on its first sample without
//! an up-to-date entry (a new process, one that exec'd, one that mapped new code) or in an
//! object whose table is not built yet (a lazy mapping, which it marks), and rings a bell
//! (a record in the `unwind_doorbell` ring buffer). The thread sleeps on that ring's descriptor
//! and on an eventfd the agent rings with each command, so that an idle node never wakes it;
//! woken, it looks at a count of requests made (a mapped array, no system call), reads the
//! requests when it moved, reads the process's executable mappings, builds the table of each
//! marked object it has not loaded yet (one per device and inode, shared by build id), lists
//! the others as lazy (only their headers read), and writes the process's mapping list. Until
//! then its samples are walked by frame pointers and counted as pending.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{ArrayOfMaps, HashMap as BpfHashMap, MapData, RingBuf};
use eagle_ebpf::{
    Mapping, ProcessMaps, UnwindRow, MAX_MAPPINGS, MAX_TABLES, REQUEST_OBJECT, REQUEST_REFRESH, TABLE_LAZY,
};
use eagle_proto::{Warning, WarningCode};

use super::maps::{self, ExecMapping};
use super::table::{Object, RowSink, Segment, TableError};
use crate::mapped_count::MappedCount;

/// How often at most the thread looks at the requests: a process whose samples keep asking for
/// code outside its mappings (JIT code) rings the bell at the sampling rate, and each look is a
/// walk of the requests map. A new process waits for its tables at most this long more.
const LOOK_EVERY: Duration = Duration::from_millis(5);
/// A process asking again for code outside its mappings is re-read at most this often (JIT
/// code outside any mapping would otherwise have it re-read on every sample).
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// Threads that evaluate one object's unwind entries at most (the loader's own included): a
/// big binary's table is ready sooner, and the agent leaves the node's other CPUs to its
/// workloads.
const MAX_BUILD_THREADS: usize = 4;

/// Rows loaded at most, over all objects: 8 bytes each in the kernel. A process whose tables
/// would pass it is walked by frame pointers. `EAGLE_UNWIND_MAX_ROWS` overrides it.
pub const DEFAULT_MAX_ROWS: usize = 16 << 20;

/// The eBPF maps the unwinder fills.
pub struct UnwindMaps {
    pub process_maps: BpfHashMap<MapData, u32, ProcessMaps>,
    pub tables: ArrayOfMaps<MapData>,
    pub requests: BpfHashMap<MapData, u32, u32>,
    /// The count of requests made (`Change::Requests`); `None`: read them at every look.
    pub requests_made: Option<MappedCount>,
    /// A record per request made (`unwind_doorbell`): what the thread sleeps on.
    pub doorbell: RingBuf<MapData>,
}

/// What the thread did, for the run's report.
#[derive(Clone, Debug, Default)]
pub struct UnwindStats {
    pub tables: usize,
    pub rows: usize,
    pub processes: usize,
    /// Time spent reading objects and building their tables.
    pub build_time: Duration,
}

#[derive(Default)]
struct Shared {
    warnings: Vec<Warning>,
    stats: UnwindStats,
}

enum Command {
    Build { pid: u32, generation: u32 },
    Forget { pid: u32 },
}

/// The handle the sampler keeps: dropping it stops the thread.
pub struct Unwinder {
    commands: Option<Sender<Command>>,
    /// An eventfd rung after each command and at the end: the thread sleeps on it beside the
    /// kernel side's bell.
    bell: Arc<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl Unwinder {
    pub fn start(maps: UnwindMaps) -> std::io::Result<Self> {
        let max_rows =
            std::env::var("EAGLE_UNWIND_MAX_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX_ROWS);
        let (commands, receiver) = mpsc::channel();
        // SAFETY: eventfd(2) has no preconditions; a descriptor it returns is this one's own.
        let bell = match unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) } {
            -1 => return Err(std::io::Error::last_os_error()),
            fd => Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
        };
        let thread_bell = Arc::clone(&bell);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut loader = Loader::new(maps, max_rows, Arc::clone(&shared));
        let thread = std::thread::Builder::new().name("eagle-unwind".into()).spawn(move || {
            // Until a process's tables are built its samples are frame-pointer walks: on a busy
            // node this thread must not wait behind everything else for its few milliseconds.
            // Without CAP_SYS_NICE this fails, and it runs at the agent's priority.
            // SAFETY: plain system calls on this thread's own id.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) };
            loader.run(&receiver, thread_bell.as_fd())
        })?;
        Ok(Self { commands: Some(commands), bell, shared, thread: Some(thread) })
    }

    /// Lists `pid`'s mappings now (their objects' tables as loaded already, or lazy), before
    /// its first sample asks.
    pub fn build(&self, pid: u32) {
        self.send(Command::Build { pid, generation: 0 });
    }

    /// `pid` exited or is no longer sampled: its entry goes, and tables no process uses.
    pub fn forget(&self, pid: u32) {
        self.send(Command::Forget { pid });
    }

    fn send(&self, command: Command) {
        if let Some(c) = &self.commands {
            let _ = c.send(command);
            ring(self.bell.as_fd());
        }
    }

    pub fn take_warnings(&self) -> Vec<Warning> {
        self.shared.lock().map(|mut s| std::mem::take(&mut s.warnings)).unwrap_or_default()
    }

    pub fn stats(&self) -> UnwindStats {
        self.shared.lock().map(|s| s.stats.clone()).unwrap_or_default()
    }
}

impl Drop for Unwinder {
    fn drop(&mut self) {
        self.commands.take();
        ring(self.bell.as_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which table an object's rows are: objects with the same build id share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TableKey {
    BuildId(Vec<u8>),
    File(u64, u64),
    Vdso,
}

/// A file (device, inode) as far as it was read.
struct FileEntry {
    segments: Vec<Segment>,
    table: FileTable,
}

enum FileTable {
    /// No table (no unwind info, or it could not be read): frame pointers.
    None,
    Loaded(TableKey),
    /// Unwind information whose rows are built once a sample lands in the object.
    Lazy,
}

/// Where the unwinder finds the rows of a mapping, and its bias.
enum Located {
    Table(TableKey, u64),
    Lazy(u64),
}

struct Loaded {
    slot: u32,
    rows: u32,
    /// Processes whose mapping list points at it.
    users: usize,
}

struct ProcessEntry {
    tables: Vec<TableKey>,
    generation: u32,
    refreshed: Instant,
}

struct Loader {
    maps: UnwindMaps,
    max_rows: usize,
    shared: Arc<Mutex<Shared>>,
    /// Put into freed slots: an array of one row, so the slot's old table is released.
    empty: Option<MapData>,
    files: HashMap<(u64, u64), FileEntry>,
    tables: HashMap<TableKey, Loaded>,
    free_slots: Vec<u32>,
    next_slot: u32,
    rows_loaded: usize,
    processes: HashMap<u32, ProcessEntry>,
    /// Warnings said once per run.
    said: HashSet<String>,
    /// For `EAGLE_UNWIND_DEBUG=1`: when each process became ready, from here.
    started: Instant,
    /// Threads an object's table is built on (see [`build_threads`]).
    threads: usize,
    /// Time spent reading objects and building their rows, and loading them into the kernel,
    /// for `EAGLE_UNWIND_DEBUG=1`.
    read_time: Duration,
    load_time: Duration,
}

impl Loader {
    fn new(maps: UnwindMaps, max_rows: usize, shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            maps,
            max_rows,
            shared,
            empty: create_table(1).ok(),
            files: HashMap::new(),
            tables: HashMap::new(),
            free_slots: Vec::new(),
            next_slot: 1, // 0 means "no table"
            rows_loaded: 0,
            processes: HashMap::new(),
            said: HashSet::new(),
            started: Instant::now(),
            threads: build_threads(),
            read_time: Duration::ZERO,
            load_time: Duration::ZERO,
        }
    }

    fn run(&mut self, commands: &Receiver<Command>, bell: BorrowedFd<'_>) {
        let mut looked: Option<Instant> = None;
        loop {
            sleep_until_rung(&[self.maps.doorbell.as_fd(), bell]);
            drain_eventfd(bell);
            loop {
                match commands.try_recv() {
                    Ok(Command::Build { pid, generation }) => self.build(pid, generation),
                    Ok(Command::Forget { pid }) => self.forget(pid),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if !self.drain_doorbell() {
                continue;
            }
            if let Some(wait) = looked.and_then(|at| LOOK_EVERY.checked_sub(at.elapsed())) {
                // Rung again within LOOK_EVERY: what rings meanwhile is read in the same look.
                std::thread::sleep(wait);
                self.drain_doorbell();
            }
            looked = Some(Instant::now());
            // Drained before the count is read: a request whose record was drained is counted
            // already (the kernel side counts, then rings), and a later one rings again.
            if !self.maps.requests_made.as_mut().is_none_or(MappedCount::moved) {
                continue;
            }
            let requests: Vec<(u32, u32)> = self.maps.requests.iter().filter_map(Result::ok).collect();
            for (pid, request) in requests {
                let _ = self.maps.requests.remove(&pid);
                let refresh = request & REQUEST_REFRESH != 0;
                // A sample in an object whose table is lazy: built at once, as a new process's
                // are (each object asks until its table is in, then never again).
                let object = request & REQUEST_OBJECT != 0;
                let generation = request & !(REQUEST_REFRESH | REQUEST_OBJECT);
                let known = self.processes.get(&pid);
                // Samples taken while a build was under way ask for what it just did.
                if !refresh && !object && known.is_some_and(|p| p.generation == generation) {
                    continue;
                }
                if refresh && !object && known.is_some_and(|p| p.refreshed.elapsed() < REFRESH_EVERY) {
                    continue;
                }
                self.build(pid, generation);
            }
        }
    }

    /// Consumes the bell's records (they carry nothing the requests map does not); whether
    /// there were any.
    fn drain_doorbell(&mut self) -> bool {
        let mut rung = false;
        while self.maps.doorbell.next().is_some() {
            rung = true;
        }
        rung
    }

    fn warn(&mut self, code: WarningCode, pid: Option<u32>, once: String, message: String) {
        if self.said.insert(once) {
            if let Ok(mut s) = self.shared.lock() {
                s.warnings.push(Warning { code, pid, message });
            }
        }
    }

    /// Reads `pid`'s executable mappings and points the kernel at their tables.
    fn build(&mut self, pid: u32, generation: u32) {
        let started = Instant::now();
        (self.read_time, self.load_time) = (Duration::ZERO, Duration::ZERO);
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return; // gone already: its samples stay frame-pointer walks
        };
        let mut mappings = maps::parse(&text);
        if mappings.is_empty() {
            // A zombie (its maps read empty) whose children use its entry: they keep it.
            return;
        }
        if mappings.len() > MAX_MAPPINGS {
            self.warn(
                WarningCode::UnwindMappings,
                Some(pid),
                format!("mappings {pid}"),
                format!(
                    "pid {pid} maps {} executable regions, the unwinder follows {MAX_MAPPINGS}: code in the others is walked by frame pointers",
                    mappings.len()
                ),
            );
            // Keep files (their code has tables) before anonymous regions (JIT code).
            mappings.sort_by_key(|m| (!m.is_file(), m.start));
            mappings.truncate(MAX_MAPPINGS);
            mappings.sort_by_key(|m| m.start);
        }
        // The lazy mappings a sample landed in since the last build (the kernel side marks
        // them): their objects' tables are built now.
        let needed = self.needed_mappings(pid);
        let mut entry =
            ProcessMaps { count: 0, generation, flags: 0, _pad: 0, mappings: [Mapping::default(); MAX_MAPPINGS] };
        let mut used: Vec<TableKey> = Vec::new();
        for (i, m) in mappings.iter().enumerate() {
            let mut mapping = Mapping { start: m.start, end: m.end, bias: 0, table: 0, rows: 0 };
            match self.table_for(pid, m, needed.contains(&(m.start, m.end))) {
                Some(Located::Table(key, bias)) => {
                    if let Some(t) = self.tables.get_mut(&key) {
                        t.users += 1;
                        mapping.table = t.slot;
                        mapping.rows = t.rows;
                        mapping.bias = bias;
                        used.push(key);
                    }
                }
                Some(Located::Lazy(bias)) => {
                    mapping.table = TABLE_LAZY;
                    mapping.bias = bias;
                }
                None => {}
            }
            entry.mappings[i] = mapping;
            entry.count = i as u32 + 1;
        }
        // Samples meanwhile may have marked mappings of the entry this one replaces, and asked
        // (that request is served next): the marks go over, or that build would find none.
        let marked_meanwhile = self.needed_mappings(pid);
        for m in entry.mappings[..entry.count as usize].iter_mut() {
            if m.table == TABLE_LAZY && marked_meanwhile.contains(&(m.start, m.end)) {
                m.rows = 1;
            }
        }
        if let Err(e) = self.maps.process_maps.insert(pid, entry, 0) {
            self.warn(
                WarningCode::UnwindFailed,
                Some(pid),
                format!("insert {pid}"),
                format!(
                    "cannot give the kernel the mappings of pid {pid} ({e}): its stacks are walked by frame pointers"
                ),
            );
        }
        if self.read_time > Duration::ZERO {
            // The objects' unwind sections and rows are in the kernel's maps or freed: a big
            // object's megabytes must not stay resident until the next one's.
            crate::memory::give_back_freed();
        }
        // Release what the process used before only now: what it still maps stays loaded.
        let previous = self.processes.insert(pid, ProcessEntry { tables: used, generation, refreshed: Instant::now() });
        if let Some(previous) = previous {
            self.release(previous.tables);
        }
        if std::env::var_os("EAGLE_UNWIND_DEBUG").is_some() {
            eprintln!(
                "unwind: {:.3}s after start: pid {pid} (generation {generation}) ready, {} mappings, built in {:.3}s (reading objects {:.3}s on up to {} threads, loading tables {:.3}s); {} tables, {} rows loaded",
                self.started.elapsed().as_secs_f64(),
                entry.count,
                started.elapsed().as_secs_f64(),
                self.read_time.as_secs_f64(),
                self.threads,
                self.load_time.as_secs_f64(),
                self.tables.len(),
                self.rows_loaded
            );
        }
        if let Ok(mut s) = self.shared.lock() {
            s.stats.build_time += started.elapsed();
            s.stats.processes = self.processes.len();
            s.stats.tables = self.tables.len();
            s.stats.rows = self.rows_loaded;
        }
    }

    fn forget(&mut self, pid: u32) {
        let _ = self.maps.process_maps.remove(&pid);
        if let Some(p) = self.processes.remove(&pid) {
            self.release(p.tables);
        }
    }

    fn release(&mut self, keys: Vec<TableKey>) {
        for key in keys {
            let Some(t) = self.tables.get_mut(&key) else { continue };
            t.users = t.users.saturating_sub(1);
            if t.users == 0 {
                let t = self.tables.remove(&key).expect("present");
                if let Some(empty) = &self.empty {
                    let _ = self.maps.tables.set(t.slot, empty, 0);
                }
                self.rows_loaded -= t.rows as usize;
                self.free_slots.push(t.slot);
            }
        }
    }

    /// The mappings of `pid`'s entry in the kernel that are lazy and marked needed by a sample.
    fn needed_mappings(&self, pid: u32) -> HashSet<(u64, u64)> {
        match self.maps.process_maps.get(&pid, 0) {
            Ok(entry) => entry.mappings[..(entry.count as usize).min(MAX_MAPPINGS)]
                .iter()
                .filter(|m| m.table == TABLE_LAZY && m.rows != 0)
                .map(|m| (m.start, m.end))
                .collect(),
            Err(_) => HashSet::new(),
        }
    }

    /// Where the unwinder finds the rows of mapping `m` of `pid`, and the mapping's bias:
    /// the object's table, loaded now if `needed` (a sample landed in it) and not yet, or lazy
    /// (only its headers read) while no sample needs it; `None` when its code is walked by
    /// frame pointers (no unwind information, JIT code, the rows budget spent).
    fn table_for(&mut self, pid: u32, m: &ExecMapping, needed: bool) -> Option<Located> {
        let file_key = if m.is_file() {
            (m.dev, m.inode)
        } else if m.path == "[vdso]" {
            (0, 0)
        } else {
            return None; // JIT code, anonymous memory
        };
        if needed && self.files.get(&file_key).is_some_and(|f| matches!(f.table, FileTable::Lazy)) {
            // Read again, rows and all.
            self.files.remove(&file_key);
        }
        if !self.files.contains_key(&file_key) {
            let reading = Instant::now();
            // The rows go into the kernel's map as they are merged (see [`KernelTable`]).
            let mut kernel = KernelTable::new(self.max_rows.saturating_sub(self.rows_loaded));
            let parsed = if m.is_file() {
                // `None`: the process exec'd or exited since its maps were read: nothing learnt
                // about the file; a sample of its new program asks again.
                self.read_file(pid, m, &mut kernel, needed)?
            } else {
                read_vdso(&mut kernel)
            };
            self.read_time += reading.elapsed();
            let entry = match parsed {
                Ok(object) => {
                    let key = if !m.is_file() {
                        TableKey::Vdso
                    } else if let Some(id) = object.build_id.clone().filter(|id| !id.is_empty()) {
                        TableKey::BuildId(id)
                    } else {
                        TableKey::File(m.dev, m.inode)
                    };
                    // Rows are not built for an object whose build id is loaded already, nor
                    // for one no sample needs yet.
                    let table = if self.tables.contains_key(&key) {
                        FileTable::Loaded(key)
                    } else if object.rows_skipped {
                        FileTable::Lazy
                    } else {
                        let loading = Instant::now();
                        let loaded = kernel.finish().and_then(|table| table.map(|t| self.install(t)).transpose());
                        self.load_time += loading.elapsed();
                        match loaded {
                            Ok(None) => FileTable::None, // no rows
                            Ok(Some(Some((slot, rows)))) => {
                                self.tables.insert(key.clone(), Loaded { slot, rows, users: 0 });
                                FileTable::Loaded(key)
                            }
                            Ok(Some(None)) => {
                                self.over_budget(pid, m);
                                FileTable::None
                            }
                            Err(e) => {
                                self.warn(
                                    WarningCode::UnwindFailed,
                                    Some(pid),
                                    format!("load {}", m.path),
                                    format!("cannot load the unwind table of {} into the kernel ({e}): its frames are walked by frame pointers", m.path),
                                );
                                FileTable::None
                            }
                        }
                    };
                    FileEntry { segments: object.segments, table }
                }
                Err(TableError::OverBudget) => {
                    self.over_budget(pid, m);
                    FileEntry { segments: Vec::new(), table: FileTable::None }
                }
                Err(TableError::Sink(e)) => {
                    self.warn(
                        WarningCode::UnwindFailed,
                        Some(pid),
                        format!("load {}", m.path),
                        format!("cannot load the unwind table of {} into the kernel ({e}): its frames are walked by frame pointers", m.path),
                    );
                    FileEntry { segments: Vec::new(), table: FileTable::None }
                }
                Err(error) => {
                    self.warn(
                        WarningCode::UnwindTable,
                        Some(pid),
                        format!("table {}", m.path),
                        format!(
                            "no unwind table for {} (pid {pid}): {error}; its frames are walked by frame pointers",
                            m.path
                        ),
                    );
                    FileEntry { segments: Vec::new(), table: FileTable::None }
                }
            };
            self.files.insert(file_key, entry);
        }
        let file = &self.files[&file_key];
        let object = Object { segments: file.segments.clone(), ..Object::default() };
        let bias = object.bias(m.start, m.end, m.offset)?;
        match &file.table {
            FileTable::None => None,
            FileTable::Lazy => Some(Located::Lazy(bias)),
            FileTable::Loaded(key) if self.tables.contains_key(key) => Some(Located::Table(key.clone(), bias)),
            FileTable::Loaded(_) => {
                // Released since it was read: read it again.
                self.files.remove(&file_key);
                self.table_for(pid, m, needed)
            }
        }
    }

    /// Reads an object through the process's own view of it (so a container's files are
    /// found, and a file deleted since it was mapped too).
    /// `None` when the mapping is gone.
    /// `needed`: a sample landed in it, and its rows are built (unless its build id has a
    /// table loaded already); else only its segments and build id are read.
    fn read_file(
        &self,
        pid: u32,
        m: &ExecMapping,
        sink: &mut dyn RowSink,
        needed: bool,
    ) -> Option<Result<Object, TableError>> {
        // A regular file only: a mapped device's open is never run.
        let file = crate::target_file::open_mapped_file(pid, m.start, m.end)?;
        // Read through a cache of the parts asked for, not mapped: a file truncated while it
        // is read must give an error, not a SIGBUS.
        let cache = object::ReadCache::new(file);
        // The same library under another path (another container's copy) has the same build
        // id: its table is loaded already, and only its segments are needed.
        let loaded = |id: &[u8]| !id.is_empty() && self.tables.contains_key(&TableKey::BuildId(id.to_vec()));
        Some(Object::parse_into(&cache, self.threads, |id| loaded(id) || !needed, sink))
    }

    /// Puts a table filled by [`KernelTable`] into a free slot: its slot and rows, `None` when
    /// no slot is free.
    fn install(&mut self, (map, rows): (MapData, u32)) -> std::io::Result<Option<(u32, u32)>> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None if self.next_slot < MAX_TABLES => {
                self.next_slot += 1;
                self.next_slot - 1
            }
            None => return Ok(None),
        };
        if let Err(e) = self.maps.tables.set(slot, &map, 0) {
            self.free_slots.push(slot);
            return Err(std::io::Error::other(e.to_string()));
        }
        // The outer map holds the table now; our descriptor can go.
        drop(map);
        self.rows_loaded += rows as usize;
        Ok(Some((slot, rows)))
    }
}

/// An object's table does not fit in what is left of the rows budget (or no slot is free):
/// its frames are walked by frame pointers for the rest of the run (it is not read again at
/// each sample that lands in it), the process's other objects keep their tables.
impl Loader {
    fn over_budget(&mut self, pid: u32, m: &ExecMapping) {
        self.warn(
            WarningCode::UnwindBudget,
            Some(pid),
            format!("budget {}", m.path),
            format!(
                "the unwind table of {} (pid {pid}) does not fit in the {} rows the agent loads at most (EAGLE_UNWIND_MAX_ROWS): its frames are walked by frame pointers, short where it was built without them",
                m.path, self.max_rows
            ),
        );
    }
}

/// How many threads build one object's table: `EAGLE_UNWIND_BUILD_THREADS` (1 builds it on the
/// loader's thread alone, to compare), else one per CPU, at most [`MAX_BUILD_THREADS`].
fn build_threads() -> usize {
    std::env::var("EAGLE_UNWIND_BUILD_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_BUILD_THREADS))
        .clamp(1, MAX_BUILD_THREADS)
}

/// An object's table in the kernel, written as the builder merges its rows: a kernel array
/// filled through short-lived mappings of a few pages of it, so that neither the table nor a
/// mapping of all of it is ever in the agent's memory (libLLVM's is 10 MiB). Its size is not
/// known until the last row: the array is made for the builder's estimate, moved into one half
/// as big again when that is passed, and into one of exactly its rows at the end when more
/// than an eighth of it is left over (the kernel searches only the rows it is told of).
struct KernelTable {
    map: Option<MapData>,
    /// Rows the array holds, and rows written.
    capacity: usize,
    rows: usize,
    /// Rows the agent may still load, over all objects.
    budget: usize,
    expected: usize,
}

/// Rows of a table that one array starts with when there is no estimate.
const FIRST_CAPACITY: usize = 1 << 12;

impl KernelTable {
    fn new(budget: usize) -> Self {
        Self { map: None, capacity: 0, rows: 0, budget, expected: FIRST_CAPACITY }
    }

    /// The array and its rows; `None` when there are none.
    fn finish(mut self) -> Result<Option<(MapData, u32)>, std::io::Error> {
        let Some(map) = self.map.take() else { return Ok(None) };
        if self.rows == 0 {
            return Ok(None);
        }
        let map = if self.capacity - self.rows > self.capacity / 8 {
            let exact = create_table(self.rows)?;
            copy_rows(&map, &exact, self.rows)?;
            exact
        } else {
            map
        };
        Ok(Some((map, self.rows as u32)))
    }

    fn grow(&mut self, needed: usize) -> std::io::Result<()> {
        let capacity = needed.max(self.capacity + self.capacity / 2).max(self.expected).min(self.budget.max(needed));
        let map = create_table(capacity)?;
        if let Some(old) = &self.map {
            copy_rows(old, &map, self.rows)?;
        }
        self.map = Some(map);
        self.capacity = capacity;
        Ok(())
    }
}

impl RowSink for KernelTable {
    fn expect(&mut self, rows: usize) {
        self.expected = rows.max(1);
    }

    fn write(&mut self, rows: &[UnwindRow]) -> Result<(), TableError> {
        if rows.is_empty() {
            return Ok(()); // the end of an object whose rows were all written, or one with none
        }
        let needed = self.rows + rows.len();
        if needed > self.budget {
            return Err(TableError::OverBudget);
        }
        let failed = |e: std::io::Error| TableError::Sink(e.to_string());
        if needed > self.capacity {
            self.grow(needed).map_err(failed)?;
        }
        let map = self.map.as_ref().expect("an array once grown");
        with_rows(map, self.rows, rows.len(), libc::PROT_WRITE, |memory| memory.copy_from_slice(rows))
            .map_err(failed)?;
        self.rows = needed;
        Ok(())
    }

    fn clear(&mut self) {
        self.rows = 0;
    }
}

/// A kernel array of `rows` rows, its elements filled through mappings of its memory
/// ([`with_rows`]) rather than one system call each.
fn create_table(rows: usize) -> std::io::Result<MapData> {
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    const BPF_F_MMAPABLE: u32 = 1 << 10;
    const BPF_F_INNER_MAP: u32 = 1 << 12;
    let row_size = std::mem::size_of::<UnwindRow>();
    let rows = u32::try_from(rows).map_err(|_| std::io::Error::other("too many rows for one table"))?;
    let definition =
        aya_obj::Map::new_from_params(BPF_MAP_TYPE_ARRAY, 4, row_size as u32, rows, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
    MapData::create(definition, "eagle_unwind", None).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Runs `f` on rows `first..first + count` of array `map`, mapped for the time of the call
/// (`PROT_WRITE` to write them, `PROT_READ` to read them): only their pages are mapped.
fn with_rows<T>(
    map: &MapData,
    first: usize,
    count: usize,
    protection: libc::c_int,
    f: impl FnOnce(&mut [UnwindRow]) -> T,
) -> std::io::Result<T> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let row_size = std::mem::size_of::<UnwindRow>();
    let start = first * row_size / page * page;
    let end = ((first + count) * row_size).div_ceil(page) * page;
    if count == 0 {
        return Ok(f(&mut []));
    }
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: a fresh shared mapping of pages `start..end` of the map's value area, which holds
    // at least `first + count` rows (the kernel rounds it up to pages); nothing else refers to
    // it. PROT_READ is added: the kernel maps no write-only pages.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            end - start,
            protection | libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            start as libc::off_t,
        )
    };
    if memory == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `memory` is valid for `end - start` bytes, of which the rows asked for are at
    // `first * row_size - start`, aligned (8-byte rows in a page-aligned mapping); rows are plain
    // `repr(C)` data with no padding, laid out as the kernel's array elements. The slice does
    // not outlive the mapping.
    let result = unsafe {
        let rows = memory.cast::<u8>().add(first * row_size - start).cast::<UnwindRow>();
        f(std::slice::from_raw_parts_mut(rows, count))
    };
    // SAFETY: the mapping made above, no longer referred to.
    unsafe { libc::munmap(memory, end - start) };
    Ok(result)
}

/// Copies the first `rows` rows of array `from` into `to`, a few pages at a time.
fn copy_rows(from: &MapData, to: &MapData, rows: usize) -> std::io::Result<()> {
    const ROWS_AT_ONCE: usize = 1 << 15;
    let mut first = 0;
    while first < rows {
        let count = ROWS_AT_ONCE.min(rows - first);
        with_rows(from, first, count, libc::PROT_READ, |source| {
            with_rows(to, first, count, libc::PROT_WRITE, |target| target.copy_from_slice(source))
        })??;
        first += count;
    }
    Ok(())
}

/// The vDSO is the same in every process of this kernel: read ours.
fn read_vdso(sink: &mut dyn RowSink) -> Result<Object, TableError> {
    let not_found = |what: String| TableError::NotElf(what);
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if base == 0 {
        return Err(not_found("no vDSO in this process".into()));
    }
    let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| not_found(e.to_string()))?;
    let size = text
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .and_then(|l| {
            let (start, end) = l.split(' ').next()?.split_once('-')?;
            Some(u64::from_str_radix(end, 16).ok()? - u64::from_str_radix(start, 16).ok()?)
        })
        .ok_or_else(|| not_found("no [vdso] line in /proc/self/maps".into()))?;
    // SAFETY: the kernel maps the vDSO readable at `base` for `size` bytes for the life of
    // the process, and nothing writes it.
    let image = unsafe { std::slice::from_raw_parts(base as *const u8, size as usize) };
    Object::parse_into(image, 1, |_| false, sink)
}

/// Sleeps until one of `fds` is readable (a signal or an error wakes it too: the caller looks
/// at everything either way).
fn sleep_until_rung(fds: &[BorrowedFd<'_>]) {
    if let Err(e) = crate::discovery::readable(fds, -1) {
        if e.kind() != std::io::ErrorKind::Interrupted {
            // Not expected with descriptors this thread owns; never a busy loop all the same.
            std::thread::sleep(LOOK_EVERY);
        }
    }
}

/// Rings an eventfd bell.
fn ring(bell: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to a descriptor borrowed for the call. A full
    // counter (EAGAIN) is rung already.
    unsafe { libc::write(bell.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Resets an eventfd bell (non-blocking: nothing to read is no wait).
fn drain_eventfd(bell: BorrowedFd<'_>) {
    let mut count = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live buffer from a descriptor borrowed for the call.
    unsafe { libc::read(bell.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(from: u32, count: u32) -> Vec<UnwindRow> {
        (from..from + count).map(|pc| UnwindRow { pc, cfa_offset: (pc % 7) as u16, kind: 1, rbp_offset: 0 }).collect()
    }

    fn read_back(map: &MapData, count: usize) -> Vec<UnwindRow> {
        with_rows(map, 0, count, libc::PROT_READ, |rows| rows.to_vec()).expect("mapped")
    }

    /// Rows written a piece at a time, past the estimate (the array moved into bigger ones),
    /// are the kernel's table, in an array of exactly their number when the estimate was far off.
    #[test]
    fn rows_written_in_pieces_are_the_kernels_table() {
        if create_table(1).is_err() {
            eprintln!("skipped: no permission to create BPF maps");
            return;
        }
        let mut table = KernelTable::new(1 << 20);
        table.expect(1000);
        let all = rows(0, 5000);
        // Pieces that do not start or end on a page (512 rows).
        for piece in all.chunks(333) {
            table.write(piece).expect("written");
        }
        let (map, count) = table.finish().expect("finished").expect("rows");
        assert_eq!(count, 5000);
        assert_eq!(read_back(&map, 5000), all);

        // An estimate far above: the array left is exactly the rows.
        let mut table = KernelTable::new(1 << 20);
        table.expect(100_000);
        table.write(&all[..10]).expect("written");
        let (map, count) = table.finish().expect("finished").expect("rows");
        assert_eq!(count, 10);
        assert_eq!(read_back(&map, 10), all[..10]);
        assert!(
            with_rows(&map, 0, 4096, libc::PROT_READ, |_| ()).is_err(),
            "more than a page of rows in a 10-row array"
        );

        // Cleared (rows out of order, written again sorted), and none at all.
        let mut table = KernelTable::new(1 << 20);
        table.write(&all[..100]).expect("written");
        table.clear();
        table.write(&all[200..250]).expect("written");
        let (map, count) = table.finish().expect("finished").expect("rows");
        assert_eq!((count, read_back(&map, 50)), (50, all[200..250].to_vec()));
        let mut table = KernelTable::new(10);
        table.write(&[]).expect("nothing written");
        assert!(table.finish().expect("finished").is_none());
    }

    #[test]
    fn rows_past_the_budget_are_refused() {
        if create_table(1).is_err() {
            eprintln!("skipped: no permission to create BPF maps");
            return;
        }
        let mut table = KernelTable::new(100);
        table.write(&rows(0, 60)).expect("written");
        assert_eq!(table.write(&rows(60, 60)), Err(TableError::OverBudget));
    }
}
