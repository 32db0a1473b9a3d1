//! Giving freed memory back to the system.
//!
//! The agent's big allocations are short-lived: an object's unwind sections and rows while its
//! table is built, what blazesym parsed of an object while samples land in it. glibc's malloc
//! keeps what they freed in its arenas (one per thread that allocated), and raises its
//! threshold for serving large blocks from fresh mappings after each one freed, so that the
//! memory stays resident after its use: the peak of every build adds up. musl's allocator (the
//! image's static build) unmaps freed blocks by itself.

/// Returns the free pages of every malloc arena to the system: after a burst of large
/// allocations is freed, not on a hot path (it walks each arena's free lists).
pub fn give_back_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
