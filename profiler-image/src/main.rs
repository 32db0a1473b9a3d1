//! `eagle-agent --target pid:42 --target container:ID --duration-ms 10000 --frequency 99`
//!
//! Runs inside the profiling Job (or by hand on a node). Writes the result stream to stdout and
//! diagnostics to stderr; the exit code says why it failed, in the CLI's numbering.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    use std::io::Write;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use eagle_agent::{AgentConfig, AgentError, Target};
    use eagle_proto::{AgentArgs, AgentCommand, Exit, AGENT_USAGE};

    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }

    let usage = |msg: &str| {
        eprintln!("eagle-agent: {msg}\n{AGENT_USAGE}");
        ExitCode::from(Exit::Usage)
    };
    // A child of the agent itself: reads one JDK Flight Recorder recording apart from the agent
    // (see sampler/jfr.rs).
    if std::env::args().nth(1).as_deref() == Some(eagle_agent::sampler::jfr::READ_SAMPLES_FLAG) {
        return ExitCode::from(eagle_agent::sampler::jfr::serve_read_samples() as u8);
    }
    // For the tests: kernel addresses named by the kernel and by /proc/kallsyms, side by side.
    if std::env::args().nth(1).as_deref() == Some(eagle_agent::sampler::kernel_names::NAME_KERNEL_ADDRESSES_FLAG) {
        return ExitCode::from(
            eagle_agent::sampler::kernel_names::serve_name_kernel_addresses(std::env::args().skip(2)) as u8,
        );
    }
    let args = match AgentArgs::parse(std::env::args().skip(1)) {
        Ok(AgentCommand::Run(args)) => args,
        Ok(AgentCommand::Help) => {
            return usage("profiles CPU of processes, containers or pods and writes the result stream to stdout")
        }
        Ok(AgentCommand::Version) => {
            println!("eagle-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage(&e),
    };
    let mut targets = Vec::new();
    for target in &args.targets {
        match target.parse::<Target>() {
            Ok(t) => targets.push(t),
            Err(e) => return usage(&e.to_string()),
        }
    }
    let mut config = AgentConfig::new(targets, Duration::from_millis(args.duration_ms), args.frequency_hz);
    config.namespaces = args.namespaces;
    if let Some(node) = args.node {
        config.node = node;
    }
    config.runtime = args.runtime;
    config.python_native = args.python_native;
    config.net = args.net;
    config.stacks = args.stacks;
    config.mode = args.mode;
    config.min_block_us = args.min_block_us;
    // SIGTERM (Job deadline, pod deletion) and SIGINT end the window early; the stream is
    // still completed with what was sampled.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut emit = |line: &str| {
        // A closed stdout (log reader gone) must not abort sampling: the Job still finishes.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    match eagle_agent::run(&config, &STOP, &mut emit) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}{e}", eagle_proto::AGENT_ERROR_PREFIX);
            ExitCode::from(match e {
                AgentError::InvalidConfig(_) => Exit::Usage,
                AgentError::NotFound(_) => Exit::NotFound,
                AgentError::Forbidden(_) => Exit::Forbidden,
                AgentError::Sampler(eagle_agent::sampler::SamplerError::PermissionDenied(_)) => Exit::Forbidden,
                AgentError::Sampler(_) => Exit::Failed,
            })
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("eagle-agent runs on Linux only");
    std::process::exit(6);
}
