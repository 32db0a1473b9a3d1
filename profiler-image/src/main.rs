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

    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }

    let usage = |msg: &str| {
        eprintln!("eagle-agent: {msg}\nusage: eagle-agent --target pid:N|container:ID|pod:UID [...] [--duration-ms MS] [--frequency HZ] [--node NAME] [--runtime RUNTIME] [--python-native]");
        ExitCode::from(2)
    };
    // A child of the agent itself: reads one JDK Flight Recorder recording apart from the agent
    // (see sampler/jfr.rs).
    if std::env::args().nth(1).as_deref() == Some(eagle_agent::sampler::jfr::READ_SAMPLES_FLAG) {
        return ExitCode::from(eagle_agent::sampler::jfr::serve_read_samples() as u8);
    }
    let mut config = AgentConfig::new(Vec::new(), Duration::from_secs(30), 99);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return usage("profiles CPU of processes, containers or pods and writes the result stream to stdout");
        }
        if flag == "--python-native" {
            config.python_native = true;
            continue;
        }
        if flag == "--version" {
            println!("eagle-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        let Some(value) = args.next() else { return usage(&format!("{flag} needs a value")) };
        match flag.as_str() {
            "--target" => match value.parse::<Target>() {
                Ok(t) => config.targets.push(t),
                Err(e) => return usage(&e.to_string()),
            },
            "--duration-ms" => match value.parse() {
                Ok(ms) => config.duration = Duration::from_millis(ms),
                Err(_) => return usage(&format!("--duration-ms `{value}` is not a number of milliseconds")),
            },
            "--frequency" => match value.parse() {
                Ok(hz) => config.frequency_hz = hz,
                Err(_) => return usage(&format!("--frequency `{value}` is not a number of Hz")),
            },
            "--node" => config.node = value,
            "--runtime" => match value.parse() {
                Ok(r) => config.runtime = Some(r),
                Err(e) => return usage(&e),
            },
            _ => return usage(&format!("unknown flag {flag}")),
        }
    }
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
            eprintln!("eagle-agent: error: {e}");
            ExitCode::from(match e {
                AgentError::InvalidConfig(_) => 2,
                AgentError::NotFound(_) => 3,
                AgentError::Sampler(eagle_agent::sampler::SamplerError::PermissionDenied(_)) => 4,
                AgentError::Sampler(_) => 6,
            })
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("eagle-agent runs on Linux only");
    std::process::exit(6);
}
