//! Local mode: the agent's samplers run in this process against processes of this machine,
//! through the same result stream a cluster run decodes.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eagle_agent::sampler::SamplerError;
use eagle_agent::{AgentConfig, AgentError};
use eagle_proto::{Decoder, Event, NodeResult, Warning, WarningCode};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::CliError;

/// Set by SIGINT/SIGTERM: ends the window early; what was sampled is still written.
pub static STOP: AtomicBool = AtomicBool::new(false);

pub fn install_signal_handlers() {
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// A window without a fixed end (a command profiled until it exits) still needs a bound.
const UNTIL_EXIT: Duration = Duration::from_secs(24 * 3600);

pub struct LocalRun {
    pub pids: Vec<u32>,
    /// Started and profiled from its first instruction.
    pub command: Vec<String>,
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub runtime: Option<eagle_proto::Runtime>,
    pub native: bool,
    /// The network side too (`net`, `profile --net`).
    pub net: bool,
    /// Stacks too; `false`: the network side alone (`net`).
    pub stacks: bool,
    pub mode: eagle_proto::ProfileMode,
    pub min_block_us: u64,
}

pub struct LocalResult {
    pub result: NodeResult,
    pub elapsed: Duration,
    pub interrupted: bool,
}

pub fn profile(run: &LocalRun) -> Result<LocalResult, CliError> {
    let mut child = if run.command.is_empty() { None } else { Some(GatedChild::spawn(&run.command)?) };
    let mut targets: Vec<eagle_agent::Target> = run.pids.iter().map(|p| eagle_agent::Target::Pid(*p)).collect();
    if let Some(c) = &child {
        targets.push(eagle_agent::Target::Pid(c.child.id()));
    }
    let duration = run.duration.unwrap_or(if child.is_some() { UNTIL_EXIT } else { Duration::from_secs(30) });
    let config = AgentConfig {
        runtime: run.runtime,
        python_native: run.native,
        net: run.net,
        stacks: run.stacks,
        mode: run.mode,
        min_block_us: run.min_block_us,
        ..AgentConfig::new(targets, duration, run.frequency_hz)
    };

    let (tx, rx) = mpsc::channel::<String>();
    let agent =
        std::thread::spawn(move || eagle_agent::run(&config, &STOP, &mut |line| drop(tx.send(line.to_owned()))));

    // Without a window the command's exit is how the run ends, not news: no warning for it.
    let until_exit = run.duration.is_none() && child.is_some();
    let command_pid = child.as_ref().map(|c| c.child.id());
    let expected_end = |w: &Warning| {
        until_exit
            && !STOP.load(Ordering::Relaxed)
            && (w.code == WarningCode::EndedEarly || (w.code == WarningCode::ProcessExited && w.pid == command_pid))
    };

    let bar = progress_bar(run.duration);
    let started = Instant::now();
    let mut decoder = Decoder::new();
    let mut decode_error = None;
    for line in rx {
        match decoder.feed_line(&line) {
            Ok(Some(Event::Header(_))) => {
                // Sampling is armed: let the command run.
                if let Some(c) = &mut child {
                    c.release();
                }
            }
            Ok(Some(Event::Progress(p))) => {
                bar.set_position(p.elapsed_ms);
                bar.set_message(format!("{} samples, {} processes", p.samples, p.processes));
            }
            Ok(Some(Event::Warning(w))) if w.code.is_info() || expected_end(&w) => {}
            Ok(Some(Event::Warning(w))) => bar.suspend(|| eprintln!("warning: {}", w.message)),
            Ok(_) => {}
            Err(e) => decode_error = decode_error.or(Some(e)),
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let agent_result = agent
        .join()
        .map_err(|_| CliError::Failed("the sampler crashed; please report this with the command you ran".into()))?;
    if let Some(c) = child.take() {
        c.stop();
    }
    agent_result.map_err(agent_error)?;
    if let Some(e) = decode_error {
        return Err(CliError::Failed(format!("internal error: the local result stream does not decode: {e}")));
    }
    let mut result = decoder
        .finish()
        .map_err(|e| CliError::Failed(format!("internal error: the local result stream does not decode: {e}")))?;
    // Which sampler took which process: the user never named a language, so say it.
    for w in result.shown_warnings().filter(|w| w.code.is_info()) {
        eprintln!("{}", eagle_proto::for_people(w));
    }
    result.warnings.retain(|w| !expected_end(w));
    Ok(LocalResult { result, elapsed, interrupted: STOP.load(Ordering::Relaxed) })
}

fn progress_bar(duration: Option<Duration>) -> ProgressBar {
    let bar = match duration {
        Some(d) => ProgressBar::new(d.as_millis() as u64).with_style(
            ProgressStyle::with_template("{spinner} sampling [{bar:30}] {elapsed}/{duration} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} sampling until the command exits {elapsed} {msg}")
                .expect("valid template"),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn agent_error(e: AgentError) -> CliError {
    match e {
        AgentError::InvalidConfig(m) => CliError::Usage(m),
        AgentError::NotFound(m) => CliError::NotFound(m),
        AgentError::Forbidden(m) => CliError::Forbidden(m),
        AgentError::Sampler(SamplerError::PermissionDenied(m)) => {
            CliError::Forbidden(format!("{m}; for example: sudo kubectl-eagle profile ..."))
        }
        AgentError::Sampler(e) => CliError::Failed(e.to_string()),
    }
}

/// A command held before `exec` until sampling is armed, so its first instruction is seen.
///
/// `std::process::Command::spawn` returns only once the child has exec'd, so the gate cannot
/// sit in `pre_exec`; a shell waits on the gate instead and then `exec`s the command, which
/// keeps the pid the sampler was given.
struct GatedChild {
    child: Child,
    gate: Option<std::io::PipeWriter>,
}

/// The shell reads one line from fd 3; EOF (the CLI gave up) means: do not run the command.
const GATE_SCRIPT: &str = "read -r _ <&3 && exec 3<&- && exec \"$@\"";

impl GatedChild {
    fn spawn(argv: &[String]) -> Result<Self, CliError> {
        let program = which::which(&argv[0]).map_err(|_| {
            CliError::NotFound(format!("cannot start `{}`: no such command (not a file, and not on PATH)", argv[0]))
        })?;
        // Both ends close on exec; the child gets its own copy of the read end as fd 3 below.
        let (reader, gate) = std::io::pipe().map_err(|e| CliError::Failed(format!("cannot create a pipe: {e}")))?;
        let read_fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(GATE_SCRIPT).arg("kubectl-eagle").arg(&program).args(&argv[1..]);
        // SAFETY: only dup2(2) and fcntl(2), both async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if read_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(read_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // The child has its own copy of the read end now.
        drop(reader);
        match spawned {
            Ok(child) => Ok(Self { child, gate: Some(gate) }),
            Err(e) => Err(CliError::Failed(format!("cannot start `{}`: {e}", argv[0]))),
        }
    }

    fn release(&mut self) {
        use std::io::Write;
        if let Some(mut gate) = self.gate.take() {
            let _ = gate.write_all(b"go\n");
        }
    }

    /// Whether the command has exited. py-spy's reader runs in this process, the command's
    /// parent, and its ptrace wait on a read racing the exit reaps the command itself: then
    /// waiting fails (ECHILD), which also means it exited, and its pid may already be reused.
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Ends the command if the window ended before it did: SIGTERM, then SIGKILL after 2 s.
    fn stop(mut self) {
        self.release();
        if self.exited() {
            return;
        }
        // SAFETY: signalling our own child by pid. Not reaped: `stop` runs after the samplers
        // ended, so nothing else waits for it between the check and the signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatedChild {
    fn drop(&mut self) {
        // An error before the window: never leave the command waiting at the gate.
        if self.gate.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
