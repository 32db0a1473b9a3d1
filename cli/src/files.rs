//! Files the CLI writes: checked before any sampling, written beside the destination and
//! renamed into place, `-` being stdout.

use std::io::Write;
use std::path::Path;

use crate::error::CliError;

/// Writes a file other than the profile (a summary) the same safe way, `-` being stdout.
pub fn write_file(path: &Path, bytes: &[u8], what: &str) -> Result<(), CliError> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(bytes)
            .and_then(|_| out.flush())
            .map_err(|e| CliError::Io(format!("cannot write the {what} to stdout: {e}")));
    }
    write_atomically(path, bytes, what)
}

/// Checks that `path` can be written, before any sampling: a typo must not cost a window.
pub fn check_writable(path: &Path, what: &str) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |why: String| Err(CliError::Io(format!("cannot write the {what} to `{}`: {why}", path.display())));
    match std::fs::metadata(dir) {
        Err(e) => return fail(format!("directory `{}`: {e}", dir.display())),
        Ok(m) if !m.is_dir() => return fail(format!("`{}` is not a directory", dir.display())),
        Ok(_) => {}
    }
    if path.is_dir() {
        return fail("it is a directory".into());
    }
    // Probe with a real file: permission bits say nothing about read-only mounts, and root
    // passes every permission check. A fresh random name, created exclusively, removed on drop.
    match tempfile::Builder::new().prefix(".kubectl-eagle-probe-").tempfile_in(dir) {
        Ok(_) => Ok(()),
        Err(e) => fail(e.to_string()),
    }
}

/// Writes a fresh temporary file beside the destination and renames it into place, so a failed
/// or interrupted write never leaves a truncated graph where the previous one was. The
/// temporary file has a random name and is created exclusively (`O_EXCL`, no symlink followed):
/// run as root into a shared directory, another user cannot redirect the write by planting a
/// link where a predictable name would be. The rename replaces a link at `path` itself, never
/// what it points to.
pub fn write_atomically(path: &Path, bytes: &[u8], what: &str) -> Result<(), CliError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| CliError::Io(format!("cannot write the {what} to `{}`: {e}", path.display()));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut tmp =
        tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir).map_err(fail)?;
    tmp.write_all(bytes).and_then(|_| tmp.as_file().sync_data()).map_err(fail)?;
    // A new file is 0600; an output is as readable as any file the user writes.
    set_default_permissions(tmp.as_file()).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// 0666 less the umask, as `File::create` would have made it.
fn set_default_permissions(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only swaps the process's mask; it is set back at once.
    let mask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    file.set_permissions(std::fs::Permissions::from_mode(0o666 & !(mask as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("eagle-files-{name}-")).tempdir().expect("a temp dir")
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_followed() {
        let dir = scratch("symlink");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("flame.svg");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_atomically(&out, b"<svg/>", "output").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the write went through the link");
        assert!(std::fs::symlink_metadata(&out).unwrap().file_type().is_file());
        assert_eq!(std::fs::read(&out).unwrap(), b"<svg/>");
    }

    #[test]
    fn nothing_is_left_beside_the_output_and_it_is_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("leftovers");
        let out = dir.path().join("flame.folded");
        write_atomically(&out, b"a;b 1\n", "output").unwrap();
        check_writable(&out, "output").unwrap();
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, ["flame.folded"]);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap().trim();
        assert_eq!(mode, 0o666 & !u32::from_str_radix(umask, 8).unwrap(), "mode {mode:o} with umask {umask}");
    }

    /// The temporary name is not predictable: two writes use different ones, so a link planted
    /// at one cannot catch the next.
    #[test]
    fn a_link_planted_at_the_old_predictable_name_is_never_written_through() {
        let dir = scratch("planted");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("flame.svg");
        let old_name = dir.path().join(format!(".flame.svg.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();
        write_atomically(&out, b"<svg/>", "output").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&out).unwrap(), b"<svg/>");
    }
}
