//! The HTTP server of `images/http` run under `kubectl-eagle` (`net`, `profile --net`), and its
//! load generator: what the network tests (net_local.rs, net_loss.rs) each started their own way.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::NetNamespace;
use crate::{kubectl_eagle, repo_root};

/// `kubectl-eagle ARGS -- [nsenter -t NS -n] python3 images/http/server.py SERVER_ARGS`, started
/// and waited for until the server listens.
/// Dropped before [`ServerUnderEagle::wait`] (a failed assert), it stops the server and
/// `kubectl-eagle`: a run without `-d` would otherwise go on, as root, holding the port.
pub struct ServerUnderEagle {
    eagle: Option<Child>,
    ready: PathBuf,
}

impl ServerUnderEagle {
    /// Starts `kubectl-eagle` with `eagle_args` (`net -o FILE`, `profile ... --net FILE`) on the
    /// server, in `namespace` when given, with `server_args` (`--port`, `--delay-ms`...); the
    /// server's ready file is `ready` (it writes its pid there once it listens). Returns once it
    /// listens. stdout and stderr are kept for [`ServerUnderEagle::wait`].
    pub fn start<E: AsRef<OsStr>>(
        eagle_args: impl IntoIterator<Item = E>,
        namespace: Option<&NetNamespace>,
        server_args: &[&str],
        ready: &Path,
    ) -> ServerUnderEagle {
        let mut command = Command::new(kubectl_eagle());
        command.args(eagle_args).arg("--");
        if let Some(ns) = namespace {
            command.args(["nsenter", "-t", &ns.pid(), "-n"]);
        }
        let eagle = command
            .arg("python3")
            .arg(repo_root().join("images/http/server.py"))
            .args(server_args)
            .arg("--ready-file")
            .arg(ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl-eagle starts");
        let server = ServerUnderEagle { eagle: Some(eagle), ready: ready.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Stops the server (SIGTERM), which ends a window without `-d`.
    pub fn stop(&self) {
        let pid = std::fs::read_to_string(&self.ready).unwrap();
        let stopped = Command::new("kill").args(["-TERM", pid.trim()]).status().unwrap();
        assert!(stopped.success(), "cannot stop the server (pid {pid})");
    }

    /// Waits for `kubectl-eagle` to end: its exit, stdout and stderr.
    pub fn wait(mut self) -> Output {
        self.eagle.take().expect("waited once").wait_with_output().expect("kubectl-eagle ends")
    }
}

impl Drop for ServerUnderEagle {
    fn drop(&mut self) {
        let Some(mut eagle) = self.eagle.take() else { return };
        if let Ok(pid) = std::fs::read_to_string(&self.ready) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        // SIGTERM ends the window as Ctrl-C does; then no more waiting.
        let _ = Command::new("kill").args(["-TERM", &eagle.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(eagle.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = eagle.kill();
        let _ = eagle.wait();
    }
}

/// Runs the load generator (`images/http/load.py ARGS`, in `namespace` when given) and returns
/// what it measured itself (its JSON).
pub fn load(namespace: Option<&NetNamespace>, args: &[&str]) -> Value {
    let script = repo_root().join("images/http/load.py");
    let mut command = match namespace {
        Some(ns) => ns.command("python3"),
        None => Command::new("python3"),
    };
    let out = command.arg(script).args(args).output().expect("the load generator runs");
    assert!(out.status.success(), "load.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("load.py prints JSON")
}
