//! Files the agent reads on behalf of a target process (a JIT's perf map), which that process
//! controls. The agent runs as root with the host's view of every mount; the target may be
//! anyone's container. So such a file is:
//! - resolved inside the target's own root (`openat2` with `RESOLVE_IN_ROOT`): no `..` or
//!   symlink leaves it, and no magic link (`/proc/self/fd/N`) is followed;
//! - not a symbolic link itself (`O_NOFOLLOW`): a runtime writes these files, it does not link
//!   them, and a link may point at any file of a root the process shares (the host's, in local
//!   mode);
//! - opened for reading only once it is known to be a regular file (an `O_PATH` descriptor
//!   first): a FIFO cannot hang the agent, a device's open never runs, `/dev/zero` cannot fill
//!   its memory;
//! - owned by one of the target's own uids: a process cannot name another user's file (root's
//!   included, unless it runs as root), or a host file reached through a shared root, as its own;
//! - read up to a size cap, the excess refused rather than allocated.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetFileError {
    #[error("{path} does not exist")]
    Missing { path: String },
    #[error(
        "{path} is not a regular file (a FIFO, device, directory or a link that leaves the process's root): refused"
    )]
    NotRegular { path: String },
    #[error("{path} is a symbolic link: refused (a runtime writes this file itself; a link may point at a file that is not the process's)")]
    Symlink { path: String },
    #[error("{path} belongs to uid {owner}, not to the process's user (uid {process}): refused")]
    ForeignOwner { path: String, owner: u32, process: u32 },
    #[error("{path} is larger than {limit} bytes: refused")]
    TooLarge { path: String, limit: u64 },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}, which the process maps, is {why} there: refused")]
    NotTheMappedFile { path: String, why: &'static str },
}

/// Reads `path` (absolute, as the process sees it) inside the root of process `pid`, at most
/// `limit` bytes; see the module docs for what is refused.
pub fn read_in_root(proc_root: &Path, pid: u32, path: &str, limit: u64) -> Result<Vec<u8>, TargetFileError> {
    let unreadable = |e: std::io::Error| TargetFileError::Unreadable { path: path.to_owned(), reason: e.to_string() };
    let owner = process_uids(proc_root, pid).ok_or_else(|| TargetFileError::Unreadable {
        path: path.to_owned(),
        reason: format!("process {pid} is gone"),
    })?;
    // A runtime writes these files itself, it does not link them.
    let (file, meta) = regular_in_root(proc_root, pid, path, true)?;
    if !owner.contains(&meta.uid()) {
        return Err(TargetFileError::ForeignOwner { path: path.to_owned(), owner: meta.uid(), process: owner[1] });
    }
    if meta.len() > limit {
        return Err(TargetFileError::TooLarge { path: path.to_owned(), limit });
    }
    // The file may grow between fstat and read: the cap holds for what is read, too.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > limit {
        return Err(TargetFileError::TooLarge { path: path.to_owned(), limit });
    }
    Ok(bytes)
}

/// Checks that every file `pid` maps whose path (as `/proc/PID/maps` shows it) contains `marker`
/// is found at that path inside the process's root, through no symbolic link, as the very file
/// mapped (same device and inode). py-spy and rbspy open an interpreter's shared library as
/// `/proc/PID/root` followed by that path: a blocking open that follows links from the agent's
/// own root, so the process could rename the file it mapped and leave a FIFO (which hangs the
/// reader, and the agent waiting for it), a link to a device or a host file in its place. This
/// check opens nothing: `O_PATH` does not run a device's or FIFO's open. A swap after it and
/// before the library's open (py-spy reads the maps again and retries up to 5 times) is not
/// caught; `oncpu::Recording` bounds what a hang costs. Opening `/proc/PID/map_files/RANGE`
/// instead would take patching both libraries.
pub fn mapped_files_at_their_paths(proc_root: &Path, pid: u32, marker: &str) -> Result<(), TargetFileError> {
    let maps_path = proc_root.join(format!("{pid}/maps"));
    let unreadable =
        |path: &str, e: std::io::Error| TargetFileError::Unreadable { path: path.to_owned(), reason: e.to_string() };
    let maps = std::fs::read_to_string(&maps_path).map_err(|e| unreadable("its memory map", e))?;
    let mut root = None;
    // Both libraries take the library among the executable mappings only.
    for m in crate::unwind::maps::parse(&maps) {
        let path = m.path.as_str();
        if !path.starts_with('/') || !path.contains(marker) {
            continue;
        }
        let mapped = std::fs::metadata(proc_root.join(format!("{pid}/map_files/{:x}-{:x}", m.start, m.end)))
            .map_err(|e| unreadable(path, e))?;
        let root = match &root {
            Some(root) => root,
            None => root.insert(File::open(proc_root.join(format!("{pid}/root"))).map_err(|e| unreadable(path, e))?),
        };
        let refused = |why| TargetFileError::NotTheMappedFile { path: path.to_owned(), why };
        // py-spy and rbspy read the maps with proc-maps, which rebuilds a path from its
        // whitespace-separated words: `/a  b/libpython3.so` is opened as `/a b/libpython3.so`,
        // which this check would not have looked at.
        if path.split_whitespace().collect::<Vec<_>>().join(" ") != path {
            return Err(refused("a path with runs of white space, which the reader would not open as written"));
        }
        let no_links = libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_SYMLINKS;
        let found = open_path_in_root(root, path.trim_start_matches('/'), no_links, true).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => refused("not found (deleted or renamed since)"),
                // A link on the way (RESOLVE_NO_SYMLINKS), or a magic one.
                Some(libc::ELOOP) => refused("reached through a symbolic link"),
                _ => unreadable(path, e),
            }
        })?;
        let meta = found.metadata().map_err(|e| unreadable(path, e))?;
        if !meta.file_type().is_file() {
            return Err(refused("not a regular file (a FIFO, a device or a directory)"));
        }
        if (meta.dev(), meta.ino()) != (mapped.dev(), mapped.ino()) {
            return Err(refused("another file than the one mapped (replaced since)"));
        }
    }
    Ok(())
}

/// The directory `path` (absolute, as the process sees it) inside the root of `pid`, as an
/// `O_PATH` descriptor to work in with `*at` calls: links are resolved within that root, so a
/// hostile container cannot point the agent at a directory of the node.
pub fn open_dir_in_root(proc_root: &Path, pid: u32, path: &str) -> std::io::Result<File> {
    let root = File::open(proc_root.join(format!("{pid}/root")))?;
    let relative = path.trim_start_matches('/');
    openat2(
        &root,
        if relative.is_empty() { "." } else { relative },
        (libc::O_DIRECTORY | libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// The regular file `path` (absolute, as the process sees it) inside the root of `pid`, open for
/// reading: links are followed within that root only (a distribution's debug files are often
/// links), no magic link is, and it is opened for reading only if it is regular (see
/// `reopen_if_regular`). Its owner and size are not checked: it is mapped, not read whole, and
/// system files are root's.
pub fn open_regular_in_root(proc_root: &Path, pid: u32, path: &str) -> Result<File, TargetFileError> {
    regular_in_root(proc_root, pid, path, false).map(|(file, _)| file)
}

/// `path` inside the root of `pid`, open for reading if it is a regular file (see
/// `reopen_if_regular`), with its status; `no_final_link`: the file itself may not be a link.
fn regular_in_root(
    proc_root: &Path,
    pid: u32,
    path: &str,
    no_final_link: bool,
) -> Result<(File, std::fs::Metadata), TargetFileError> {
    let unreadable = |e: std::io::Error| TargetFileError::Unreadable { path: path.to_owned(), reason: e.to_string() };
    let root = File::open(proc_root.join(format!("{pid}/root"))).map_err(unreadable)?;
    let found = open_path_in_root(&root, path.trim_start_matches('/'), libc::RESOLVE_NO_MAGICLINKS, no_final_link)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => TargetFileError::Missing { path: path.to_owned() },
            // ELOOP: a magic link.
            Some(libc::ELOOP) => TargetFileError::Symlink { path: path.to_owned() },
            // EXDEV: a path that would leave the root.
            Some(libc::EXDEV) => TargetFileError::NotRegular { path: path.to_owned() },
            _ => unreadable(e),
        })?;
    let meta = found.metadata().map_err(unreadable)?;
    // With `no_final_link`, a link is opened as itself (`O_PATH | O_NOFOLLOW`).
    if meta.file_type().is_symlink() {
        return Err(TargetFileError::Symlink { path: path.to_owned() });
    }
    let file = reopen_if_regular(&found, &meta)
        .map_err(unreadable)?
        .ok_or_else(|| TargetFileError::NotRegular { path: path.to_owned() })?;
    Ok((file, meta))
}

/// The file a process maps at `start`-`end`, through `/proc/PID/map_files` (valid after the file
/// was deleted or replaced, and inside the process's own mount namespace), open for reading if
/// it is a regular file; `None` if it is gone or is not one (a mapped device: its driver's open
/// is never run).
pub fn open_mapped_file(pid: u32, start: u64, end: u64) -> Option<File> {
    let found = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
        .ok()?;
    let meta = found.metadata().ok()?;
    reopen_if_regular(&found, &meta).ok().flatten()
}

/// `found` (an `O_PATH` descriptor, `meta` its status) opened for reading, non-blocking, if it is
/// a regular file; `None` if it is not. Opening a FIFO blocks, and opening a device runs its
/// driver's open, which may act (a watchdog starts counting): only an `O_PATH` descriptor is
/// taken before the file's type is known, and a regular file is then opened again through it.
fn reopen_if_regular(found: &File, meta: &std::fs::Metadata) -> std::io::Result<Option<File>> {
    if !meta.file_type().is_file() {
        return Ok(None);
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", found.as_raw_fd()))?;
    // The same file, not another one put at the magic link's path meanwhile (it cannot be).
    let reopened = file.metadata()?;
    if (reopened.dev(), reopened.ino()) != (meta.dev(), meta.ino()) || !reopened.file_type().is_file() {
        return Ok(None);
    }
    Ok(Some(file))
}

/// `relative` inside `root` as an `O_PATH` descriptor, resolved in the root with `resolve` besides;
/// `nofollow`: a link as the last component is the link itself.
fn open_path_in_root(root: &File, relative: &str, resolve: u64, nofollow: bool) -> std::io::Result<File> {
    let nofollow = if nofollow { libc::O_NOFOLLOW } else { 0 };
    openat2(root, relative, (libc::O_PATH | libc::O_CLOEXEC | nofollow) as u64, libc::RESOLVE_IN_ROOT | resolve)
}

/// Real, effective, saved and filesystem uid of `pid`.
fn process_uids(proc_root: &Path, pid: u32) -> Option<[u32; 4]> {
    let status = std::fs::read_to_string(proc_root.join(format!("{pid}/status"))).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(|v| v.parse::<u32>().ok());
    Some([ids.next()??, ids.next()??, ids.next()??, ids.next()??])
}

fn openat2(root: &File, relative: &str, flags: u64, resolve: u64) -> std::io::Result<File> {
    let path = std::ffi::CString::new(relative).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `open_how` is plain old data; zeroed is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags;
    how.resolve = resolve;
    // SAFETY: a valid directory fd, a NUL-terminated path and a pointer to `how` with its size,
    // as openat2(2) takes them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const PROC: &str = "/proc";

    fn here() -> u32 {
        std::process::id()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("eagle-target-file-{name}-{}", here()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(path: &Path, limit: u64) -> Result<Vec<u8>, TargetFileError> {
        read_in_root(Path::new(PROC), here(), path.to_str().unwrap(), limit)
    }

    #[test]
    fn a_regular_file_of_the_process_is_read() {
        let dir = scratch("regular");
        std::fs::write(dir.join("perf.map"), b"1000 10 f\n").unwrap();
        assert_eq!(read(&dir.join("perf.map"), 1 << 20).unwrap(), b"1000 10 f\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_blocking() {
        let dir = scratch("special");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read(&fifo, 1 << 20), Err(TargetFileError::NotRegular { .. })));
        assert!(matches!(read(Path::new("/dev/zero"), 1 << 20), Err(TargetFileError::NotRegular { .. })));
        assert!(matches!(read(&dir, 1 << 20), Err(TargetFileError::NotRegular { .. })));
        symlink("/dev/zero", dir.join("zero.map")).unwrap();
        assert!(matches!(read(&dir.join("zero.map"), 1 << 20), Err(TargetFileError::Symlink { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn magic_links_are_not_followed() {
        // /proc/self/root is a magic link: inside a root, it would lead anywhere.
        let err = read(Path::new("/proc/self/root/etc/hostname"), 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                TargetFileError::Symlink { .. }
                    | TargetFileError::NotRegular { .. }
                    | TargetFileError::Unreadable { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        // As root (the agent's case) every file is readable: ownership is what tells.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to give a file away");
            return;
        }
        let dir = scratch("owner");
        let file = dir.join("perf.map");
        std::fs::write(&file, b"1000 10 f\n").unwrap();
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
        assert!(matches!(read(&file, 1 << 20), Err(TargetFileError::ForeignOwner { owner: 65534, .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = scratch("large");
        std::fs::write(dir.join("big.map"), vec![b'x'; 4096]).unwrap();
        assert_eq!(
            read(&dir.join("big.map"), 1000),
            Err(TargetFileError::TooLarge { path: dir.join("big.map").to_str().unwrap().into(), limit: 1000 })
        );
        assert!(matches!(read(&dir.join("none.map"), 1000), Err(TargetFileError::Missing { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A symlink in the path is resolved inside the process's root: `..` cannot climb above it;
    /// the file itself being a link is refused. Shown with a process whose root is a directory
    /// of ours (chroot in a child).
    #[test]
    fn a_symlink_cannot_leave_the_process_root() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to chroot");
            return;
        }
        let dir = scratch("chroot");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(dir.join("secret"), b"host file\n").unwrap();
        std::fs::create_dir_all(root.join("maps")).unwrap();
        std::fs::write(root.join("maps/inside.map"), b"1000 10 f\n").unwrap();
        symlink("../../secret", root.join("tmp/up.map")).unwrap();
        symlink("/etc/hostname", root.join("tmp/abs.map")).unwrap();
        // Directories that are links: resolved in the root, where `..` stops at its top.
        symlink("../../..", root.join("up")).unwrap();
        symlink("/maps", root.join("tmp/maps")).unwrap();
        let c_root = std::ffi::CString::new(root.to_str().unwrap()).unwrap();
        // SAFETY: fork in a test; the child only makes async-signal-safe calls on memory
        // prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::chroot(c_root.as_ptr());
                libc::pause();
                libc::_exit(0);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let result_up = read_in_root(Path::new(PROC), pid as u32, "/tmp/up.map", 1 << 20);
        let result_abs = read_in_root(Path::new(PROC), pid as u32, "/tmp/abs.map", 1 << 20);
        let result_climb = read_in_root(Path::new(PROC), pid as u32, "/up/secret", 1 << 20);
        let result_inside = read_in_root(Path::new(PROC), pid as u32, "/tmp/maps/inside.map", 1 << 20);
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert!(matches!(result_up, Err(TargetFileError::Symlink { .. })), "{result_up:?}");
        assert!(matches!(result_abs, Err(TargetFileError::Symlink { .. })), "{result_abs:?}");
        assert!(matches!(result_climb, Err(TargetFileError::Missing { .. })), "{result_climb:?}");
        assert_eq!(result_inside.as_deref(), Ok(&b"1000 10 f\n"[..]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Maps `path` into this process (readable and executable, as a library is) until the
    /// returned guard drops.
    struct Mapped(*mut libc::c_void);
    impl Mapped {
        fn of(path: &Path) -> Self {
            let file = File::open(path).unwrap();
            // SAFETY: a fresh mapping of a file this test made, unmapped on drop.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(at, libc::MAP_FAILED);
            Self(at)
        }
    }
    impl Drop for Mapped {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `of`.
            unsafe { libc::munmap(self.0, 4096) };
        }
    }

    #[test]
    fn a_debug_file_may_be_a_link_but_must_be_a_regular_file() {
        let dir = scratch("regular");
        std::fs::write(dir.join("file.debug"), b"\x7fELF").unwrap();
        symlink(dir.join("file.debug"), dir.join("link.debug")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo.debug").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let open = |name: &str| open_regular_in_root(Path::new(PROC), here(), dir.join(name).to_str().unwrap());
        assert!(open("file.debug").is_ok());
        assert!(open("link.debug").is_ok(), "a link inside the root is followed");
        assert!(matches!(open("fifo.debug"), Err(TargetFileError::NotRegular { .. })), "a FIFO, at once");
        assert!(matches!(open("none.debug"), Err(TargetFileError::Missing { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_mapped_library_is_checked_at_its_path() {
        let check = || mapped_files_at_their_paths(Path::new(PROC), here(), "/libeaglecheck");
        let dir = scratch("mapped");
        let lib = dir.join("libeaglecheck.so");
        std::fs::write(&lib, [7u8; 4096]).unwrap();
        let mapped = Mapped::of(&lib);
        assert_eq!(check(), Ok(()), "the very file, at its path");

        let refused =
            |why: &str| matches!(check(), Err(TargetFileError::NotTheMappedFile { why: w, .. }) if w.contains(why));
        // Renamed: the kernel shows the mapping at its new name, where it is.
        std::fs::rename(&lib, dir.join("libeaglecheck.so.moved")).unwrap();
        assert_eq!(check(), Ok(()), "renamed: the kernel shows the new name");
        drop(mapped);

        // Deleted: shown as `PATH (deleted)`, where nothing is, then another file, then a FIFO.
        std::fs::write(&lib, [7u8; 4096]).unwrap();
        let mapped = Mapped::of(&lib);
        std::fs::remove_file(&lib).unwrap();
        assert!(refused("not found"), "{:?}", check());
        let shown = format!("{} (deleted)", lib.display());
        std::fs::write(&shown, [8u8; 4096]).unwrap();
        assert!(refused("another file"), "{:?}", check());
        std::fs::remove_file(&shown).unwrap();
        let fifo = std::ffi::CString::new(shown).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(refused("not a regular file"), "{:?}", check());
        drop(mapped);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
