//! Interpreted runtimes sampled by their own tools as separate programs: py-spy's program for
//! Python when native (C extension) frames are asked for (`--native` needs py-spy's unwinder,
//! which its library is built without here; `python.rs` has the default, and `ruby.rs` reads
//! Ruby through rbspy's library). One `record` per process, started together with the other
//! samplers so every process shares the same window, ended by SIGINT (the tool then writes
//! what it has). It reads the interpreter's own frame objects, so the graph shows Python
//! functions, not the C loop of the interpreter. Their counts are wall-clock samples: they give the distribution only,
//! weighed by eBPF's on-CPU samples of the same process (`oncpu.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::oncpu::Distribution;
use super::{Recorded, RuntimeSampler, SamplerError};

/// A sampling tool for one interpreter.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub name: &'static str,
    /// Environment variable that points at the binary, before PATH is searched.
    pub env: &'static str,
    /// Appended to every frame: ` [py]` stays visible; `_[j]` is the annotation inferno strips
    /// and colors as interpreted/JIT code (as `_[k]` is kernel).
    pub suffix: &'static str,
    /// How to get it, for the report when it is missing.
    pub install: &'static str,
    args: fn(pid: u32, rate_hz: u64, output: &std::path::Path, native: bool) -> Vec<String>,
    /// The tool's frame text as the graph shows it.
    frame: fn(&str) -> String,
}

pub const PY_SPY: Tool = Tool {
    name: "py-spy",
    env: "EAGLE_PY_SPY",
    suffix: " [py]_[j]",
    install: "`pip install py-spy`",
    args: |pid, rate, output, native| {
        let mut a: Vec<String> =
            ["record", "--pid", &pid.to_string(), "--rate", &rate.to_string()].into_iter().map(String::from).collect();
        // Ended by SIGINT at the end of the window; the duration is only a backstop.
        a.extend(["--duration", "86400", "--nolineno", "--format", "raw", "--output"].map(String::from));
        a.push(output.display().to_string());
        if native {
            a.push("--native".into());
        }
        a
    },
    // Already `func (file.py)` with --nolineno.
    frame: str::to_owned,
};

pub struct InterpreterSampler {
    tool: Tool,
    binary: PathBuf,
    rate_hz: u64,
    native: bool,
    dir: PathBuf,
    running: HashMap<u32, Child>,
}

impl InterpreterSampler {
    /// Finds the tool (its environment variable, then PATH); `None` when it is not installed.
    pub fn find(tool: Tool) -> Option<PathBuf> {
        std::env::var_os(tool.env).map(PathBuf::from).filter(|p| p.exists()).or_else(|| which::which(tool.name).ok())
    }

    pub fn new(tool: Tool, binary: PathBuf, rate_hz: u64, native: bool) -> Result<Self, SamplerError> {
        let dir = std::env::temp_dir().join(format!("eagle-agent-{}-{}", std::process::id(), tool.name));
        std::fs::create_dir_all(&dir).map_err(|e| {
            SamplerError::Failed(format!("{} needs a writable temporary directory ({}): {e}", tool.name, dir.display()))
        })?;
        Ok(Self { tool, binary, rate_hz, native, dir, running: HashMap::new() })
    }

    fn output(&self, pid: u32) -> PathBuf {
        self.dir.join(format!("{pid}.folded"))
    }

    /// Reads what the tool wrote for `pid`, or why it failed.
    fn harvest(&mut self, pid: u32, mut child: Child) -> Result<Distribution, String> {
        let status = child.wait();
        let output = self.output(pid);
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        let _ = std::fs::remove_file(&output);
        let log = std::fs::read_to_string(self.dir.join(format!("{pid}.log"))).unwrap_or_default();
        let mut distribution = Distribution::default();
        for line in text.lines() {
            let Some((stack, count)) = line.rsplit_once(' ') else { continue };
            let Ok(count) = count.parse::<u64>() else { continue };
            let frames = stack.split(';').map(|f| format!("{}{}", (self.tool.frame)(f), self.tool.suffix)).collect();
            distribution.add(frames, count as f64);
            distribution.samples += count;
        }
        if distribution.is_empty() {
            let said =
                log.lines().rev().find(|l| !l.trim().is_empty() && !l.contains("Wrote raw")).unwrap_or("no output");
            let how = status.map(|s| s.to_string()).unwrap_or_default();
            return Err(format!("{} got no samples ({how}): {}", self.tool.name, said.trim()));
        }
        Ok(distribution)
    }

    /// Ends one recording: the tools write what they have on SIGINT.
    fn end(&mut self, pid: u32, deadline: Instant) -> Option<Result<Distribution, String>> {
        let mut child = self.running.remove(&pid)?;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        Some(self.harvest(pid, child))
    }

    fn interrupt(child: &Child) {
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    }
}

impl RuntimeSampler for InterpreterSampler {
    fn name(&self) -> &'static str {
        self.tool.name
    }

    fn add(&mut self, pid: u32) -> Result<(), SamplerError> {
        if self.running.contains_key(&pid) {
            let _ = self.stop(pid);
        }
        let log = std::fs::File::create(self.dir.join(format!("{pid}.log")))
            .map_err(|e| SamplerError::Failed(format!("{} log: {e}", self.tool.name)))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args((self.tool.args)(pid, self.rate_hz, &self.output(pid), self.native))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| SamplerError::Failed(e.to_string()))?)
            .stderr(log);
        let child =
            cmd.spawn().map_err(|e| SamplerError::Failed(format!("cannot start {}: {e}", self.binary.display())))?;
        self.running.insert(pid, child);
        Ok(())
    }

    fn stop(&mut self, pid: u32) -> Option<Result<Distribution, String>> {
        Self::interrupt(self.running.get(&pid)?);
        self.end(pid, Instant::now() + Duration::from_secs(10))
    }

    fn ended(&mut self) -> Vec<Recorded> {
        // A recording that ended by itself: its process exited (or the tool failed).
        let ended: Vec<u32> =
            self.running.iter_mut().filter_map(|(p, c)| matches!(c.try_wait(), Ok(Some(_))).then_some(*p)).collect();
        ended.into_iter().filter_map(|pid| Some((pid, self.end(pid, Instant::now())?))).collect()
    }

    fn finish(&mut self) -> Vec<Recorded> {
        for child in self.running.values() {
            Self::interrupt(child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let pids: Vec<u32> = self.running.keys().copied().collect();
        let done = pids.into_iter().filter_map(|pid| Some((pid, self.end(pid, deadline)?))).collect();
        let _ = std::fs::remove_dir_all(&self.dir);
        done
    }

    fn live(&self) -> usize {
        self.running.len()
    }
}

impl Drop for InterpreterSampler {
    fn drop(&mut self) {
        for child in self.running.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
