//! Addresses to frame names, on the node, with blazesym: user code through the process's own
//! view of its files (`/proc/PID/map_files`, so container binaries resolve without the host
//! seeing their paths), kernel code through kallsyms.
//!
//! Results are cached per process and address: hot loops hit the same few addresses, and the
//! cache is what still names a process's frames after it exits.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use blazesym::normalize::{Normalizer, UserMeta};
use blazesym::symbolize::source::{Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::{MaybeDefault, Pid};

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
            let resolved = match via {
                Some(via) => resolve_user(&self.blaze, &self.normalizer, via, &missing),
                None => vec![None; missing.len()],
            };
            let cache = self.user.entry(pid).or_default();
            for (addr, frames) in missing.iter().zip(resolved) {
                let frames = frames.unwrap_or_else(|| Rc::from(vec![UNKNOWN.to_owned()]));
                cache.insert(*addr, frames);
            }
        }
        let cache = &self.user[&pid];
        addrs.iter().map(|a| cache[a].clone()).collect()
    }

    /// Whether every address of `pid` is already named (so an exited process needs nothing new).
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

    /// Drops what is cached for a process that is gone and whose samples are all named.
    pub fn forget(&mut self, pid: u32) {
        self.user.remove(&pid);
    }
}

fn resolve_user(blaze: &Symbolizer, normalizer: &Normalizer, pid: u32, addrs: &[u64]) -> Vec<Option<Frames>> {
    let mut process = Process::new(Pid::from(pid));
    process.perf_map = true; // JIT runtimes that write /tmp/perf-PID.map
    let syms = match blaze.symbolize(&Source::Process(process), Input::AbsAddr(addrs)) {
        Ok(s) => s,
        Err(_) => return vec![None; addrs.len()], // process gone: caller falls back to [unknown]
    };
    let mut out: Vec<Option<Frames>> = syms
        .into_iter()
        .map(|s| match s {
            Symbolized::Sym(sym) => {
                let mut frames = Vec::with_capacity(1 + sym.inlined.len());
                frames.push(sym.name.into_owned());
                frames.extend(sym.inlined.iter().map(|f| f.name.to_string()));
                Some(Rc::from(frames))
            }
            Symbolized::Unknown(_) => None,
        })
        .collect();
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
    out
}

fn module_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    // " (deleted)" when the binary was replaced on disk while running
    Some(name.trim_end_matches(" (deleted)").to_owned())
}
