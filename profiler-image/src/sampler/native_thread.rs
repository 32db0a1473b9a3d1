//! The kernel's id of a thread of another process, from its `pthread_t`.
//!
//! rbspy names the thread of each stack it reads by its `pthread_t` (Ruby's
//! `native_thread_data.thread_id`), which is glibc's thread descriptor (`struct pthread *`),
//! not the kernel's thread id that `/proc/PID/task/TID` and eBPF know. glibc keeps that id in
//! the descriptor, at an offset that changes with its version and architecture, and says
//! where for debuggers: `libthread_db`, which gdb loads, reads the symbol
//! `_thread_db_pthread_tid` of the process's own C library (three 32-bit words: the field's
//! size in bits, its count, its offset in `struct pthread`). This module does the same: the
//! offset comes from the library the process maps, read through the process's own view of it
//! (`/proc/PID/map_files`, so a container's glibc is the one read), and the id from the
//! process's memory at the descriptor plus that offset.
//!
//! The id glibc keeps is the one the kernel gave the thread in the process's own PID
//! namespace: in a container, not the id `/proc` and eBPF know it by on the node. Such ids
//! are turned into the node's through [`ThreadsInNamespace`] (each thread's `NSpid`).
//!
//! The process's memory is hostile input: an id read there counts only if it is one of the
//! process's own threads, so a lie can at worst move the process's CPU time among its own
//! threads. A C library without the symbol (musl, a static binary) gives no mapping, and the
//! caller weighs by the process's CPU clock instead.

use std::collections::HashMap;
use std::fs::File;
use std::time::{Duration, Instant};

use object::{Object, ObjectSection, ObjectSymbol};
use remoteprocess::ProcessMemory;

/// glibc's description of `struct pthread`'s `tid` field, for libthread_db.
const TID_DESCRIPTOR: &str = "_thread_db_pthread_tid";

/// Larger offsets are not believed: `struct pthread` is about 2 KiB in glibc 2.36.
const MAX_TID_OFFSET: u32 = 64 << 10;

/// Reads the kernel thread id behind a `pthread_t` of one process.
pub struct NativeThreadIds {
    tid_offset: usize,
    memory: remoteprocess::Process,
    threads: ThreadsInNamespace,
}

impl NativeThreadIds {
    /// The mapping for `pid`, or why there is none (its C library does not describe its threads).
    pub fn of(pid: u32) -> Result<Self, String> {
        let maps =
            std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("cannot read its maps: {e}"))?;
        let mut tried = Vec::new();
        for m in crate::unwind::maps::parse(&maps) {
            let name = m.path.rsplit('/').next().unwrap_or_default();
            if !m.is_file()
                || !(name.starts_with("libc.so") || name.starts_with("libc-") || name.starts_with("libpthread"))
            {
                continue;
            }
            let Some(file) = crate::target_file::open_mapped_file(pid, m.start, m.end) else { continue };
            match tid_offset(&file) {
                Some(offset) => {
                    let memory = remoteprocess::Process::new(pid as remoteprocess::Pid)
                        .map_err(|e| format!("cannot read its memory: {e}"))?;
                    let threads = ThreadsInNamespace::of(pid);
                    return Ok(Self { tid_offset: offset as usize, memory, threads });
                }
                None => tried.push(name.to_owned()),
            }
        }
        Err(if tried.is_empty() {
            "it maps no glibc (musl or a static binary), which would say where a thread keeps its id".to_owned()
        } else {
            format!("its C library ({}) does not say where a thread keeps its id", tried.join(", "))
        })
    }

    /// The node's id of the thread whose descriptor is at `pthread`, if it is a live thread of
    /// the process.
    pub fn tid(&mut self, pthread: usize) -> Option<u32> {
        let address = pthread.checked_add(self.tid_offset)?;
        let tid: i32 = self.memory.copy_struct(address).ok()?;
        let tid = u32::try_from(tid).ok().filter(|t| *t > 0)?;
        self.threads.on_node(tid)
    }
}

/// The threads of one process by the ids it knows them by, in its own PID namespace (what
/// `gettid()` returned to it: the ids glibc and the JVM keep), each with the id `/proc` gives it
/// here. Outside a container the two are the same.
pub struct ThreadsInNamespace {
    pid: u32,
    node_ids: HashMap<u32, u32>,
    looked: Option<Instant>,
}

/// How often the threads are listed again at most: ids read from a hostile process's memory
/// may name no thread at every read, and each listing reads a file per thread.
const RELIST_AFTER: Duration = Duration::from_millis(100);

impl ThreadsInNamespace {
    /// The threads of `pid` now (none if it is gone).
    pub fn of(pid: u32) -> Self {
        let mut threads = Self { pid, node_ids: HashMap::new(), looked: None };
        threads.refresh();
        threads
    }

    /// The node's id of the thread that its process knows as `own_id`, if it is a live thread of
    /// the process. A thread started since the last look is found by looking again (at most
    /// every [`RELIST_AFTER`]).
    pub fn on_node(&mut self, own_id: u32) -> Option<u32> {
        let pid = self.pid;
        let alive = move |tid: &u32| std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists();
        if let Some(tid) = self.node_ids.get(&own_id).copied().filter(alive) {
            return Some(tid);
        }
        if self.looked.is_some_and(|at| at.elapsed() < RELIST_AFTER) {
            return None;
        }
        self.refresh();
        self.node_ids.get(&own_id).copied().filter(alive)
    }

    /// The mapping as it stood at the last look, own id to node id.
    pub fn known(&self) -> &HashMap<u32, u32> {
        &self.node_ids
    }

    fn refresh(&mut self) {
        self.looked = Some(Instant::now());
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else { return };
        self.node_ids = tasks
            .filter_map(Result::ok)
            .filter_map(|t| {
                let tid: u32 = t.file_name().to_str()?.parse().ok()?;
                let status = std::fs::read_to_string(t.path().join("status")).ok()?;
                Some((innermost_id(&status).unwrap_or(tid), tid))
            })
            .collect();
    }
}

/// The id a task has in the innermost PID namespace it belongs to: the last field of `NSpid`
/// in its `/proc/.../status` (the fields go from the reader's namespace inwards; kernels before
/// 4.1 have no such line).
fn innermost_id(status: &str) -> Option<u32> {
    let ids = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    ids.split_whitespace().next_back()?.parse().ok()
}

/// The offset of `tid` in `struct pthread`, from the library's `_thread_db_pthread_tid`.
fn tid_offset(file: &File) -> Option<u32> {
    // Read through a cache of the parts asked for, not mapped: a file truncated while it is
    // read gives an error, not a SIGBUS.
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let symbol = elf.dynamic_symbols().chain(elf.symbols()).find(|s| s.name() == Ok(TID_DESCRIPTOR))?;
    let address = symbol.address();
    let section = elf.sections().find(|s| s.address() <= address && address - s.address() + 12 <= s.size())?;
    let words = section.data_range(address, 12).ok()??;
    let word = |i: usize| {
        let bytes: [u8; 4] = words[i * 4..i * 4 + 4].try_into().expect("4 bytes");
        if elf.is_little_endian() {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    descriptor_offset([word(0), word(1), word(2)])
}

/// A libthread_db field descriptor (size in bits, count, offset) of a 32-bit thread id.
fn descriptor_offset([bits, _count, offset]: [u32; 3]) -> Option<u32> {
    (bits == 32 && offset < MAX_TID_OFFSET).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_in_a_pid_namespace_is_known_by_its_innermost_id() {
        assert_eq!(innermost_id("Name:\tjava\nNSpid:\t48213\t7\nNSpgid:\t1\n"), Some(7));
        assert_eq!(innermost_id("NSpid:\t48213\t310\t7\n"), Some(7), "nested namespaces");
        assert_eq!(innermost_id("NSpid:\t48213\n"), Some(48213), "the reader's own namespace");
        assert_eq!(innermost_id("Name:\tjava\n"), None, "kernels before 4.1");
        assert_eq!(innermost_id("NSpid:\t48213\tx\n"), None);
    }

    /// Outside a container a thread is known by the same id inside and out.
    #[test]
    fn this_process_knows_its_threads_by_the_ids_proc_gives_them() {
        // SAFETY: no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        let mut threads = ThreadsInNamespace::of(std::process::id());
        assert_eq!(threads.known().get(&me), Some(&me));
        let (sender, receiver) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: no preconditions.
            sender.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = stopped.recv();
        });
        let new = receiver.recv().unwrap();
        std::thread::sleep(RELIST_AFTER);
        assert_eq!(threads.on_node(new), Some(new), "a thread started since is found");
        assert_eq!(threads.on_node(u32::MAX), None);
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn a_descriptor_of_a_32_bit_id_gives_its_offset() {
        assert_eq!(descriptor_offset([32, 1, 720]), Some(720));
        assert_eq!(descriptor_offset([64, 1, 720]), None, "a thread id is 32 bits");
        assert_eq!(descriptor_offset([32, 1, u32::MAX]), None);
    }

    /// This test's own threads: each `pthread_self()` leads to the kernel id `gettid()` gives.
    #[test]
    fn finds_the_kernel_id_of_a_pthread_of_a_glibc_process() {
        let mut ids = match NativeThreadIds::of(std::process::id()) {
            Ok(ids) => ids,
            Err(e) if cfg!(target_env = "gnu") => panic!("glibc describes its threads: {e}"),
            Err(_) => return,
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: no preconditions.
            let (pthread, tid) = unsafe { (libc::pthread_self() as usize, libc::gettid() as u32) };
            sender.send((pthread, tid)).unwrap();
            std::thread::sleep(RELIST_AFTER * 3);
        });
        let (pthread, tid) = receiver.recv().unwrap();
        // Started after the threads were listed: found at the next listing.
        std::thread::sleep(RELIST_AFTER);
        assert_eq!(ids.tid(pthread), Some(tid));
        // SAFETY: no preconditions.
        let (me, my_tid) = unsafe { (libc::pthread_self() as usize, libc::gettid() as u32) };
        assert_eq!(ids.tid(me), Some(my_tid));
        assert_eq!(ids.tid(0), None, "an unreadable descriptor is no thread");
        thread.join().unwrap();
    }
}
