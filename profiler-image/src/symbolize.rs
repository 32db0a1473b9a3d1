//! Addresses to frame names, on the node, with blazesym: user code through the process's own
//! view of its files (`/proc/PID/map_files`, so container binaries resolve without the host
//! seeing their paths), kernel code through kallsyms.
//!
//! Results are cached per process and address: hot loops hit the same few addresses. A process's
//! memory map and binaries are kept while it lives, so that the addresses of its last samples,
//! collected after it exited, are still named.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use blazesym::normalize::{Normalizer, UserMeta};
use blazesym::symbolize::cache::{self, Cache};
use blazesym::symbolize::evict::{self, Evict};
use blazesym::symbolize::source::{Kernel, Process, Source};
use blazesym::symbolize::{Input, Reason, Symbolized, Symbolizer};
use blazesym::{MaybeDefault, Pid};

use crate::target_file::{read_in_root, TargetFileError};

/// Marks a kernel frame, as perf and inferno's palettes do.
pub const KERNEL_SUFFIX: &str = "_[k]";
pub const UNKNOWN: &str = "[unknown]";

/// Frames of one address, outermost first (a function, then what was inlined into it).
pub type Frames = Rc<[String]>;

pub struct Symbols {
    blaze: Symbolizer,
    normalizer: Normalizer,
    user: HashMap<u32, HashMap<u64, Frames>>,
    kernel: HashMap<u64, Frames>,
    /// Processes with JIT code named by a perf map that grows while they run: what is unknown
    /// now may be named after the next map dump, so unknowns are not cached; their JIT frames
    /// carry this tag.
    jit: HashMap<u32, &'static str>,
    /// Processes whose memory map and binaries (`/proc/PID/map_files/...`, pinned open in
    /// blazesym's caches) are kept, so that their code is still read after they exit.
    kept: HashMap<u32, Vec<PathBuf>>,
    /// Perf map problems not yet taken ([`Symbols::take_perf_map_issues`]), and which process
    /// already had which kind said (once each: the map is read again at every batch).
    perf_map_issues: Vec<(u32, PerfMapIssue)>,
    perf_map_said: HashSet<(u32, bool)>,
}

impl Default for Symbols {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbols {
    pub fn new() -> Self {
        Self {
            blaze: Symbolizer::builder()
                .enable_code_info(false)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .build(),
            normalizer: Normalizer::builder().enable_build_ids(false).build(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            jit: HashMap::new(),
            kept: HashMap::new(),
            perf_map_issues: Vec::new(),
            perf_map_said: HashSet::new(),
        }
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
    /// never a blank frame.
    pub fn user(&mut self, pid: u32, via: Option<u32>, addrs: &[u64]) -> Vec<Frames> {
        let cache = self.user.entry(pid).or_default();
        let missing: Vec<u64> = {
            let mut m: Vec<u64> = addrs.iter().copied().filter(|a| !cache.contains_key(a)).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if !missing.is_empty() {
            let jit = self.jit.get(&pid).copied();
            if let Some(via) = via {
                self.keep(via);
            }
            let resolved = match via {
                Some(via) => {
                    let (resolved, issue) = resolve_user(&self.blaze, &self.normalizer, via, &missing, jit);
                    self.note_perf_map(pid, issue);
                    resolved
                }
                None => vec![None; missing.len()],
            };
            let cache = self.user.entry(pid).or_default();
            for (addr, frames) in missing.iter().zip(resolved) {
                match frames {
                    Some(frames) => {
                        cache.insert(*addr, frames);
                    }
                    None if jit.is_some() && via.is_some() => {} // retried after the next map dump
                    None => {
                        cache.insert(*addr, Rc::from(vec![UNKNOWN.to_owned()]));
                    }
                }
            }
        }
        let unknown: Frames = Rc::from(vec![UNKNOWN.to_owned()]);
        let cache = &self.user[&pid];
        addrs.iter().map(|a| cache.get(a).cloned().unwrap_or_else(|| unknown.clone())).collect()
    }

    /// Whether every address of `pid` is already named (so an exited process needs nothing new).
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

    pub fn knows_all(&self, pid: u32, addrs: &[u64]) -> bool {
        self.user.get(&pid).is_some_and(|c| addrs.iter().all(|a| c.contains_key(a)))
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

    /// Keeps `pid`'s memory map and the binaries mapped into it, read now while it lives, for
    /// naming its code after it exits. Refreshed at each call (the map may have grown); if the
    /// process is gone, what was kept before stays.
    fn keep(&mut self, pid: u32) {
        let mut process = cache::Process::new(Pid::from(pid));
        process.cache_perf_map = false;
        if self.blaze.cache(&Cache::Process(process)).is_err() {
            return;
        }
        let kept = self.kept.entry(pid).or_default();
        for path in mapped_code(pid) {
            if !kept.contains(&path) && self.blaze.cache(&Cache::Elf(cache::Elf::new(&path))).is_ok() {
                kept.push(path);
            }
        }
    }

    /// Whether `pid`'s code can be read although it may have exited (see [`Symbols::keep`]).
    pub fn is_kept(&self, pid: u32) -> bool {
        self.kept.contains_key(&pid)
    }

    /// Drops what is cached for a process that is gone and whose samples are all named; its
    /// pid may be reused by another program.
    pub fn forget(&mut self, pid: u32) {
        self.user.remove(&pid);
        if let Some(paths) = self.kept.remove(&pid) {
            let _ = self.blaze.evict(&Evict::Process(evict::Process::new(Pid::from(pid))));
            for path in paths {
                let _ = self.blaze.evict(&Evict::Elf(evict::Elf::new(path)));
            }
        }
    }
}

fn resolve_user(
    blaze: &Symbolizer,
    normalizer: &Normalizer,
    pid: u32,
    addrs: &[u64],
    jit_tag: Option<&str>,
) -> (Vec<Option<Frames>>, Option<PerfMapIssue>) {
    let mut process = Process::new(Pid::from(pid));
    // Perf maps are read by `PerfMap` below: blazesym 0.2.7 rejects the `0x` addresses that
    // HotSpot writes, and one bad map line fails the whole batch.
    process.perf_map = false;
    let source = Source::Process(process);
    let syms = match blaze.symbolize(&source, Input::AbsAddr(addrs)) {
        Ok(s) => s,
        // One unreadable module fails a whole batch: retry address by address so it costs
        // only its own frames. A process that is gone fails every one of them.
        Err(_) => addrs
            .iter()
            .map(|a| {
                blaze.symbolize_single(&source, Input::AbsAddr(*a)).unwrap_or(Symbolized::Unknown(Reason::IgnoredError))
            })
            .collect(),
    };
    let mut out: Vec<Option<Frames>> = syms
        .into_iter()
        .map(|s| match s {
            Symbolized::Sym(sym) => {
                let mut frames = Vec::with_capacity(1 + sym.inlined.len());
                // Perf-map symbols have no module: they are JIT code.
                match (sym.module.is_none(), jit_tag) {
                    (true, Some(tag)) => frames.push(format!("{}{tag}", sym.name)),
                    _ => frames.push(sym.name.into_owned()),
                }
                frames.extend(sym.inlined.iter().map(|f| f.name.to_string()));
                Some(Rc::from(frames))
            }
            Symbolized::Unknown(_) => None,
        })
        .collect();
    // JIT code, named by the runtime's perf map.
    let mut issue = None;
    if let Some(tag) = jit_tag {
        match PerfMap::read(pid) {
            Ok(map) => {
                for (i, addr) in addrs.iter().enumerate() {
                    if out[i].is_none() {
                        out[i] = map.find(*addr).map(|name| Rc::from(vec![format!("{name}{tag}")]));
                    }
                }
                issue = map.problems.any().then_some(PerfMapIssue::Lines(map.problems));
            }
            // No map (yet), or the process is gone: nothing the process did wrong.
            Err(TargetFileError::Missing { .. } | TargetFileError::Unreadable { .. }) => {}
            Err(refused) => issue = Some(PerfMapIssue::Refused(refused)),
        }
    }
    // Stripped or unreadable code: name the module and the offset in it.
    let unknown: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
    if !unknown.is_empty() {
        let unknown_addrs: Vec<u64> = unknown.iter().map(|&i| addrs[i]).collect();
        if let Ok(norm) = normalizer.normalize_user_addrs(Pid::from(pid), &unknown_addrs) {
            for (&i, (offset, meta)) in unknown.iter().zip(norm.outputs.iter()) {
                let module = match norm.meta.get(*meta) {
                    Some(UserMeta::Elf(elf)) => module_name(&elf.path),
                    _ => None,
                };
                if let Some(module) = module {
                    out[i] = Some(Rc::from(vec![format!("{module}+{offset:#x}")]));
                }
            }
        }
    }
    (out, issue)
}

/// The `/proc/PID/map_files/START-END` entries of `pid`'s executable file mappings, named the
/// way blazesym names them.
fn mapped_code(pid: u32) -> Vec<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            // START-END PERMS OFFSET DEV INODE PATH
            let mut fields = line.split_whitespace();
            let (range, perms, path) = (fields.next()?, fields.next()?, fields.nth(3)?);
            let (start, end) = range.split_once('-')?;
            let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
            (perms.contains('x') && path.starts_with('/'))
                .then(|| PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")))
        })
        .collect()
}

fn module_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    // " (deleted)" when the binary was replaced on disk while running
    Some(name.trim_end_matches(" (deleted)").to_owned())
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
    use super::{LineProblems, PerfMap};

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
