//! A count the eBPF program keeps in a `BPF_F_MMAPABLE` array of `u64`s (`changes`), read
//! through a shared mapping: the agent looks at it as often as it likes without a system call, and reads
//! the hash map the count is about only when it moved (iterating a hash map is a system call
//! per entry and a walk of its buckets, and an idle agent did little else).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;

pub struct MappedCount {
    /// The count, in the mapping at `base`.
    page: *const AtomicU64,
    base: *mut libc::c_void,
    len: usize,
    /// The count at the last [`MappedCount::moved`].
    seen: u64,
}

// SAFETY: the mapping is only read, atomically, and unmapped once, by its owner.
unsafe impl Send for MappedCount {}

impl MappedCount {
    /// Maps the first page of `array` (a `BPF_F_MMAPABLE` array of `u64`: elements of arrays
    /// are laid out 8 bytes apart at least), for the count at `index` (in that page).
    pub fn map(array: &MapData, index: usize) -> std::io::Result<Self> {
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
        let at = index * std::mem::size_of::<u64>();
        if at + std::mem::size_of::<u64>() > len {
            // SAFETY: the mapping made above, not referred to.
            unsafe { libc::munmap(page, len) };
            return Err(std::io::Error::other(format!("count {index} is past the first page")));
        }
        // SAFETY: `at` is within the mapping (checked above) and 8-byte aligned.
        Ok(Self { page: unsafe { page.cast::<u8>().add(at) }.cast(), base: page, len, seen: 0 })
    }

    /// The count now. The eBPF program adds to it after the change it counts: a change made
    /// after this read is counted after it too, and seen at the next look.
    /// Whether the count moved since the last call (since 0 at the first): the map it is about
    /// is to be read.
    pub fn moved(&mut self) -> bool {
        let now = self.now();
        let moved = now != self.seen;
        self.seen = now;
        moved
    }

    fn now(&self) -> u64 {
        // SAFETY: the mapping lives as long as `self`; the value is within it, 8-byte aligned,
        // and the eBPF program changes it only with atomic adds.
        unsafe { (*self.page).load(Ordering::Acquire) }
    }
}

impl Drop for MappedCount {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer referred to.
        unsafe { libc::munmap(self.base, self.len) };
    }
}
