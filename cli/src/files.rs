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
    // passes every permission check.
    let probe = dir.join(format!(".kubectl-eagle-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => fail(e.to_string()),
    }
}

/// Writes beside the destination and renames, so a failed or interrupted write never leaves a
/// truncated graph where the previous one was.
pub fn write_atomically(path: &Path, bytes: &[u8], what: &str) -> Result<(), CliError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::Io(format!("cannot write the {what} to `{}`: {e}", path.display()))
    })
}
