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
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident memory (`/proc/self/statm`), in bytes; 0 if it cannot be read.
pub fn resident_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = text.split_ascii_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64
}

/// Drops this process's resident pages of the shared, read-only file mappings whose file
/// (device, inode, as `/proc/PID/maps` shows them) `drop` picks: blazesym maps each object it
/// reads whole, and every page its parsing touched stays resident in the agent as long as the
/// object is open, although most are not read again. The pages stay in the page cache, so the
/// next access reads them back without I/O (a minor fault), and the mapping's contents are
/// unchanged: this is only the agent no longer holding them.
pub fn unmap_file_pages(drop: impl Fn(u64, u64) -> bool) {
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else { return };
    for (start, end) in shared_read_only_files(&text, drop) {
        // SAFETY: the range is a whole mapping of this process, shared, read-only and backed
        // by a file: MADV_DONTNEED only unmaps its pages, whose contents the file gives again
        // on the next access. Nothing is written through it, so nothing is lost.
        unsafe {
            libc::madvise(start as *mut libc::c_void, (end - start) as usize, libc::MADV_DONTNEED);
        }
    }
}

/// The ranges of the `r--s` file mappings in a `/proc/self/maps` text whose file `drop` picks.
fn shared_read_only_files(text: &str, drop: impl Fn(u64, u64) -> bool) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (range, perms, _offset, device, inode) =
                (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            if perms != "r--s" {
                return None;
            }
            let (major, minor) = device.split_once(':')?;
            let dev = (u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?;
            let inode: u64 = inode.parse().ok()?;
            if inode == 0 || !drop(dev, inode) {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
            (start < end).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn only_shared_read_only_mappings_of_the_chosen_files() {
        let text = "\
7f0000000000-7f0000010000 r--s 00000000 fd:01 1234 /usr/lib/libbig.so
7f0000010000-7f0000020000 r--p 00000000 fd:01 1234 /usr/lib/libbig.so
7f0000020000-7f0000030000 r--s 00000000 fd:01 99 /other
7f0000030000-7f0000040000 r--s 00000000 00:0e 0 anon_inode:bpf-map
garbage
";
        let ranges = shared_read_only_files(text, |dev, inode| dev == (0xfd << 32 | 1) && inode == 1234);
        assert_eq!(ranges, vec![(0x7f0000000000, 0x7f0000010000)]);
    }

    /// A shared mapping of a file, read, its pages dropped, read again: the same bytes, and
    /// they were no longer resident in between.
    #[test]
    fn dropped_pages_read_back_the_same() {
        let mut file = tempfile_in_tmp();
        let bytes: Vec<u8> = (0..64 * 4096).map(|i| (i % 251) as u8).collect();
        file.write_all(&bytes).expect("write");
        let len = bytes.len();
        // SAFETY: a fresh read-only shared mapping of a file this test owns and does not change.
        let map =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        assert_ne!(map, libc::MAP_FAILED);
        // SAFETY: the mapping is `len` bytes, readable, and lives until the munmap below.
        let view = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
        assert_eq!(view, bytes.as_slice());
        let resident = || {
            let mut pages = vec![0u8; len / 4096];
            // SAFETY: `pages` has one byte per page of the mapping.
            assert_eq!(unsafe { libc::mincore(map, len, pages.as_mut_ptr()) }, 0);
            pages.iter().filter(|p| **p & 1 == 1).count()
        };
        let meta = file.metadata().expect("stat");
        let (dev, inode) = (std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta));
        // /proc/PID/maps shows the device as major:minor in hex.
        let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
        unmap_file_pages(|d, i| d == (major << 32 | minor) && i == inode);
        let rss_file = || {
            std::fs::read_to_string("/proc/self/smaps")
                .expect("smaps")
                .split("\n")
                .skip_while(|l| !l.starts_with(&format!("{:x}-", map as usize)))
                .find_map(|l| {
                    l.strip_prefix("Rss:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap())
                })
        };
        assert_eq!(rss_file(), Some(0), "pages still resident in this process");
        assert!(resident() > 0, "the page cache keeps them");
        assert_eq!(view, bytes.as_slice());
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(map, len) };
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path =
            std::env::temp_dir().join(format!("eagle-memory-{}-{:?}", std::process::id(), std::thread::current().id()));
        let file = std::fs::File::options().read(true).write(true).create_new(true).open(&path).expect("create");
        let _ = std::fs::remove_file(&path);
        file
    }
}
