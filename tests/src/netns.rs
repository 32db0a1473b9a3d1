//! Network namespaces the network tests create, so that their traffic (and the loss they inject)
//! stays out of the machine's own namespace.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A network namespace held by a `sleep` of its own, ended (with any veth end in it) on drop.
pub struct NetNamespace {
    holder: Child,
}

impl NetNamespace {
    /// A new namespace, returned once its holder is in it: never configure the test's own
    /// namespace by mistake.
    pub fn new() -> Self {
        let holder = Command::new("unshare").args(["--net", "sleep", "600"]).spawn().expect("unshare starts");
        let ns = NetNamespace { holder };
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let theirs = std::fs::read_link(format!("/proc/{}/ns/net", ns.pid()));
            if theirs.as_ref().is_ok_and(|t| *t != ours) {
                break;
            }
            assert!(Instant::now() < deadline, "unshare --net made no namespace of its own");
            std::thread::sleep(Duration::from_millis(10));
        }
        ns
    }

    /// The holder's pid, as `nsenter -t` takes it.
    pub fn pid(&self) -> String {
        self.holder.id().to_string()
    }

    /// `nsenter -t PID -n PROGRAM`: PROGRAM in this namespace (nsenter execs it: same pid).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid(), "-n", program]);
        cmd
    }

    /// Runs PROGRAM ARGS in this namespace; panics with its stderr unless it succeeds.
    pub fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().expect("nsenter runs");
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A counter of this namespace's `/proc/net/FILE` (`snmp`, `netstat`): the value under `name`
    /// in the lines that start with `prefix` (`Tcp:`, `TcpExt:`).
    pub fn counter(&self, file: &str, prefix: &str, name: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/net/{file}", self.pid())).unwrap();
        let mut lines = text.lines().filter(|l| l.starts_with(prefix));
        let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
        let at = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no {name}"));
        values.split_whitespace().nth(at).unwrap().parse().unwrap()
    }
}

impl Default for NetNamespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
