//! The agent's command line, written by the CLI (into each Job's container args) and read by
//! `eagle-agent`: one type, one [`AgentArgs::to_args`] and one [`AgentArgs::parse`], so the two
//! binaries cannot drift apart. Also what else both must agree on about the agent: the runtimes
//! `--runtime` names, and the exit codes.

use std::fmt;
use std::str::FromStr;

/// The runtimes the agent tells apart, each routed to its sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// C, C++, Rust and everything else compiled ahead of time.
    Native,
    Go,
    Python,
    Java,
    Ruby,
    Node,
}

impl Runtime {
    pub const ALL: [Runtime; 6] =
        [Runtime::Native, Runtime::Go, Runtime::Python, Runtime::Java, Runtime::Ruby, Runtime::Node];

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Go => "go",
            Runtime::Python => "python",
            Runtime::Java => "java",
            Runtime::Ruby => "ruby",
            Runtime::Node => "node",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "native" | "c" | "cpp" | "rust" => Runtime::Native,
            "go" => Runtime::Go,
            "python" | "py" => Runtime::Python,
            "java" | "jvm" => Runtime::Java,
            "ruby" | "rb" => Runtime::Ruby,
            "node" | "nodejs" | "js" => Runtime::Node,
            _ => return Err(format!("unknown runtime `{s}`: use native, go, python, java, ruby or node")),
        })
    }
}

/// The exit codes of both binaries (README "Exit codes"): the agent's pod ends with the code
/// the CLI would use for the same failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// A `check` threshold was broken.
    CheckFailed = 1,
    /// Bad arguments (also clap's own code).
    Usage = 2,
    /// The target does not exist: no such pid, resource, namespace, command.
    NotFound = 3,
    /// Not permitted: not root / no CAP_BPF locally, RBAC forbids in the cluster.
    Forbidden = 4,
    /// The target exists but there was nothing to sample (no running process, no samples).
    NothingToProfile = 5,
    /// Profiling failed everywhere: no result at all.
    Failed = 6,
    /// A result was written but it is partial (some nodes failed, or stopped early).
    Partial = 7,
    /// The output could not be written, or an input file could not be read.
    Io = 8,
    /// The cluster could not be reached or configured (kubeconfig, API server).
    Cluster = 9,
    /// A node already runs as many profiling runs as `--max-per-node` allows.
    Busy = 10,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// What the agent is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentArgs {
    /// `pid:N`, `container:ID` or `pod:UID`, as the agent's `Target` parses them.
    pub targets: Vec<String>,
    pub duration_ms: u64,
    pub frequency_hz: u64,
    /// The node's name for the header; `None`: the agent's own (`NODE_NAME`, the hostname).
    pub node: Option<String>,
    /// Every process is this runtime, not detected.
    pub runtime: Option<Runtime>,
    /// py-spy `--native`: C frames in Python stacks.
    pub python_native: bool,
    /// `--net`: the network side of the window too (TCP per peer, HTTP/1.x per route).
    pub net: bool,
}

impl Default for AgentArgs {
    fn default() -> Self {
        AgentArgs {
            targets: Vec::new(),
            duration_ms: 30_000,
            frequency_hz: 99,
            node: None,
            runtime: None,
            python_native: false,
            net: false,
        }
    }
}

/// What a command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCommand {
    Run(AgentArgs),
    Help,
    Version,
}

pub const AGENT_USAGE: &str = "usage: eagle-agent --target pid:N|container:ID|pod:UID [...] [--duration-ms MS] [--frequency HZ] [--node NAME] [--runtime RUNTIME] [--python-native] [--net]";

impl AgentArgs {
    /// The command line that asks for `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for target in &self.targets {
            args.extend(["--target".to_owned(), target.clone()]);
        }
        args.extend([
            "--duration-ms".to_owned(),
            self.duration_ms.to_string(),
            "--frequency".to_owned(),
            self.frequency_hz.to_string(),
        ]);
        if let Some(node) = &self.node {
            args.extend(["--node".to_owned(), node.clone()]);
        }
        if let Some(runtime) = self.runtime {
            args.extend(["--runtime".to_owned(), runtime.name().to_owned()]);
        }
        if self.python_native {
            args.push("--python-native".to_owned());
        }
        if self.net {
            args.push("--net".to_owned());
        }
        args
    }

    /// Reads a command line (without the program name); the error is one line for the user.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<AgentCommand, String> {
        let mut out = AgentArgs::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--help" | "-h" => return Ok(AgentCommand::Help),
                "--version" => return Ok(AgentCommand::Version),
                "--python-native" => {
                    out.python_native = true;
                    continue;
                }
                "--net" => {
                    out.net = true;
                    continue;
                }
                _ => {}
            }
            let Some(value) = args.next() else { return Err(format!("{flag} needs a value")) };
            match flag.as_str() {
                "--target" => out.targets.push(value),
                "--duration-ms" => {
                    out.duration_ms =
                        value.parse().map_err(|_| format!("--duration-ms `{value}` is not a number of milliseconds"))?
                }
                "--frequency" => {
                    out.frequency_hz =
                        value.parse().map_err(|_| format!("--frequency `{value}` is not a number of Hz"))?
                }
                "--node" => out.node = Some(value),
                "--runtime" => out.runtime = Some(value.parse()?),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(AgentCommand::Run(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn what_the_cli_writes_the_agent_reads() {
        let args = AgentArgs {
            targets: strings(&["container:abc", "pid:42"]),
            duration_ms: 1500,
            frequency_hz: 199,
            node: Some("node-a".into()),
            runtime: Some(Runtime::Python),
            python_native: true,
            net: true,
        };
        assert_eq!(AgentArgs::parse(args.to_args()), Ok(AgentCommand::Run(args.clone())));
        for runtime in Runtime::ALL {
            let args = AgentArgs { runtime: Some(runtime), ..AgentArgs::default() };
            assert_eq!(AgentArgs::parse(args.to_args()), Ok(AgentCommand::Run(args)));
        }
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        assert_eq!(AgentArgs::parse(strings(&["--target"])), Err("--target needs a value".to_owned()));
        assert!(AgentArgs::parse(strings(&["--duration-ms", "ten"])).unwrap_err().contains("milliseconds"));
        assert!(AgentArgs::parse(strings(&["--runtime", "cobol"])).unwrap_err().contains("unknown runtime"));
        assert_eq!(AgentArgs::parse(strings(&["--bogus", "x"])), Err("unknown flag --bogus".to_owned()));
        assert_eq!(AgentArgs::parse(strings(&["--version"])), Ok(AgentCommand::Version));
        assert_eq!(AgentArgs::parse(Vec::new()), Ok(AgentCommand::Run(AgentArgs::default())));
    }
}
