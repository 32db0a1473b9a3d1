//! A count the eBPF program keeps in a `BPF_F_MMAPABLE` array of one `u32`, read through a
//! shared mapping: the agent looks at it as often as it likes without a system call, and reads
//! the hash map the count is about only when it moved (iterating a hash map is a system call
//! per entry and a walk of its buckets, and an idle agent did little else).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::MapData;

pub struct MappedCount {
    page: *const AtomicU32,
    len: usize,
}

// SAFETY: the mapping is only read, atomically, and unmapped once, by its owner.
unsafe impl Send for MappedCount {}

impl MappedCount {
    /// Maps the first page of `array` (a `BPF_F_MMAPABLE` array whose first value is the count).
    pub fn map(array: &MapData) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        // SAFETY: a fresh read-only shared mapping of the first page of a BPF_F_MMAPABLE array
        // (the kernel rounds its value area up to a page).
        let page = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, array.fd().as_fd().as_raw_fd(), 0)
        };
        if page == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { page: page.cast(), len })
    }

    /// The count now. The eBPF program adds to it after the change it counts: a change made
    /// after this read is counted after it too, and seen at the next look.
    pub fn now(&self) -> u32 {
        // SAFETY: the mapping lives as long as `self`; the value is 4-byte aligned at its start,
        // and the eBPF program changes it only with atomic adds.
        unsafe { (*self.page).load(Ordering::Acquire) }
    }
}

impl Drop for MappedCount {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer referred to.
        unsafe { libc::munmap(self.page as *mut libc::c_void, self.len) };
    }
}
