//! JIT runtimes sampled natively: the JIT's code is named through the perf map the runtime
//! writes (`/tmp/perf-PID.map`, read through `/proc/PID/root` by the symbolizer).
//!
//! A JVM writes the map on request, through the HotSpot attach mechanism (`jattach PID jcmd
//! Compiler.perfmap`); the request is repeated while sampling, since the map is a snapshot and
//! the JIT keeps compiling. Node.js writes it itself when started with `--perf-basic-prof`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const JAVA_SUFFIX: &str = " [java]_[j]";
pub const JS_SUFFIX: &str = " [js]_[j]";

/// Requests perf map dumps from JVMs.
pub struct PerfMapRequests {
    jattach: Option<PathBuf>,
}

impl PerfMapRequests {
    pub fn new() -> Self {
        Self { jattach: std::env::var_os("EAGLE_JATTACH").map(PathBuf::from).or_else(|| which::which("jattach").ok()) }
    }

    pub fn available(&self) -> bool {
        self.jattach.is_some()
    }

    /// Asks the JVM `pid` to write its perf map now. Bounded: a JVM stuck in a safepoint must
    /// not stall sampling of everything else.
    pub fn request(&self, pid: u32) -> Result<(), String> {
        let jattach = self.jattach.as_ref().ok_or("jattach is not installed")?;
        super::jfr::attach_allowed(pid)?;
        let mut child = Command::new(jattach)
            .args([&pid.to_string(), "jcmd", "Compiler.perfmap"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", jattach.display()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let out = child.wait_with_output().map(|o| o.stdout).unwrap_or_default();
                    let said = String::from_utf8_lossy(&out);
                    return Err(format!("jattach {pid} jcmd Compiler.perfmap failed ({status}): {}", said.trim()));
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("jattach {pid} did not answer within 5 s"));
                }
            }
        }
    }
}

impl Default for PerfMapRequests {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a Node.js process writes its perf map (`--perf-basic-prof` or
/// `--perf-basic-prof-only-functions`), from its command line.
pub fn node_writes_perf_map(cmdline: &[u8]) -> bool {
    cmdline.split(|b| *b == 0).any(|arg| arg.starts_with(b"--perf-basic-prof") || arg.starts_with(b"--perf-prof"))
}

/// Whether a JVM keeps frame pointers in JIT code, so stacks walk through Java frames.
pub fn jvm_preserves_frame_pointers(cmdline: &[u8]) -> bool {
    cmdline.split(|b| *b == 0).any(|arg| arg == b"-XX:+PreserveFramePointer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flags_from_the_command_line() {
        assert!(node_writes_perf_map(b"node\0--perf-basic-prof\0app.js\0"));
        assert!(!node_writes_perf_map(b"node\0app.js\0"));
        assert!(jvm_preserves_frame_pointers(b"java\0-XX:+PreserveFramePointer\0-jar\0a.jar\0"));
        assert!(!jvm_preserves_frame_pointers(b"java\0-jar\0a.jar\0"));
    }
}
