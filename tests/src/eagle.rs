//! One run of a binary with a deadline, and its full diagnostics on failure.

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use eagle_proto::{Decoder, Event, NodeResult};

use crate::{eagle_agent, kubectl_eagle, raise_priority, Profile, TestDir};

// ---------------------------------------------------------------------------------------------
// Running the binaries

/// A command line for one of the binaries under test, run with a deadline.
pub struct Eagle {
    pub(crate) command: Command,
    pub(crate) timeout: Duration,
    /// A file the run writes (the profile): shown in the diagnostics.
    pub(crate) output: Option<PathBuf>,
}

impl Eagle {
    /// `kubectl-eagle ARGS` in `dir`.
    pub fn cli(dir: &TestDir) -> Self {
        Self::new(kubectl_eagle(), dir.path())
    }

    /// `eagle-agent ARGS` in `dir`.
    pub fn agent(dir: &TestDir) -> Self {
        Self::new(eagle_agent(), dir.path())
    }

    pub fn new(program: impl AsRef<Path>, dir: &Path) -> Self {
        let mut command = Command::new(program.as_ref());
        command.current_dir(dir);
        Self { command, timeout: Duration::from_secs(60), output: None }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.command.args(args);
        self
    }

    /// The run is killed (and the test fails) if it takes longer than this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The profile file this run writes, shown in the diagnostics.
    pub fn output_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Some(path.into());
        self
    }

    /// Access to the underlying command (environment, a wrapper's arguments, ...).
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Runs to completion (or the deadline) and collects everything it said.
    pub fn run(mut self) -> Run {
        let commandline = format!("{:?}", self.command);
        let started = Instant::now();
        let mut child = raise_priority(&mut self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {commandline}: {e}"));
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped")));
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the binary") {
                break status;
            }
            if started.elapsed() > self.timeout {
                timed_out = true;
                // SAFETY: the run's own process group: the binary and whatever it started.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                break child.wait().expect("wait for the killed binary");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        let run = Run {
            commandline,
            status,
            elapsed,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
            output: self.output,
        };
        assert!(!timed_out, "the run did not end within {:?} and was killed\n{}", self.timeout, run.diagnostics());
        run
    }
}

/// What one run of a binary did.
pub struct Run {
    pub commandline: String,
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub output: Option<PathBuf>,
}

impl Run {
    /// The exit code; a death by signal fails the test with the diagnostics.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("the binary died by a signal ({:?})\n{}", self.status, self.diagnostics()))
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The non-blank lines of stderr.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr().lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    }

    /// Everything about the run, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n---- command\n{}", self.commandline);
        let _ = writeln!(s, "---- exit status: {} after {:.2}s", self.status, self.elapsed.as_secs_f64());
        let _ = writeln!(s, "---- stdout ({} bytes)\n{}", self.stdout.len(), clip(&self.stdout()));
        let _ = writeln!(s, "---- stderr\n{}", clip(&self.stderr()));
        if let Some(path) = &self.output {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let _ = writeln!(
                        s,
                        "---- {} ({} bytes)\n{}",
                        path.display(),
                        bytes.len(),
                        clip(&String::from_utf8_lossy(&bytes))
                    );
                }
                Err(e) => {
                    let _ = writeln!(s, "---- {}: {e}", path.display());
                }
            }
        }
        s
    }

    /// Fails the test, with the diagnostics, unless the run exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        let got = self.code();
        assert_eq!(got, code, "expected exit code {code}, got {got}{}", self.diagnostics());
        self
    }

    /// Fails with the diagnostics unless `condition` holds.
    #[track_caller]
    pub fn check(&self, condition: bool, what: impl std::fmt::Display) -> &Self {
        assert!(condition, "{what}{}", self.diagnostics());
        self
    }

    /// The profile this run wrote to its output file.
    #[track_caller]
    pub fn profile(&self) -> Profile {
        let path = self.output.as_ref().expect("the run names its output file (Eagle::output_file)");
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}{}", path.display(), self.diagnostics()));
        Profile::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not folded stacks: {e}{}", path.display(), self.diagnostics()))
    }

    /// The agent's result stream (its stdout) decoded line by line, as the CLI decodes a pod
    /// log: the events in order and the verified result. Any line that is not the stream's, or
    /// that does not decode or verify, fails the test with the diagnostics.
    #[track_caller]
    pub fn stream(&self) -> (Vec<Event>, NodeResult) {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        for line in self.stdout().lines() {
            match decoder.feed_line(line) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => panic!("a line on stdout that is not the stream's: {line:?}{}", self.diagnostics()),
                Err(e) => panic!("the stream does not decode: {e}{}", self.diagnostics()),
            }
        }
        let result =
            decoder.finish().unwrap_or_else(|e| panic!("the stream does not verify: {e}{}", self.diagnostics()));
        (events, result)
    }

    /// The sample and stack counts of the CLI's closing line: `wrote PATH (N samples, M stacks)`.
    #[track_caller]
    pub fn wrote(&self) -> (u64, u64) {
        let stderr = self.stderr();
        let parsed = stderr.lines().filter_map(|l| l.strip_prefix("wrote ")).find_map(|l| {
            let inner = l.rsplit_once(" (")?.1;
            let mut numbers = inner.split(", ").map(|part| part.split(' ').next()?.parse::<u64>().ok());
            Some((numbers.next()??, numbers.next()??))
        });
        parsed.unwrap_or_else(|| panic!("no `wrote PATH (N samples, M stacks)` line on stderr{}", self.diagnostics()))
    }
}

/// Long outputs are cut in the middle so a failure message stays readable.
pub(crate) fn clip(text: &str) -> String {
    const KEEP: usize = 6000;
    if text.len() <= 2 * KEEP {
        return text.to_owned();
    }
    let head = floor_boundary(text, KEEP);
    let tail = floor_boundary(text, text.len() - KEEP);
    format!("{}\n[... {} bytes cut ...]\n{}", &text[..head], tail - head, &text[tail..])
}

pub(crate) fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
