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

/// What a profile measures. Each mode counts in one unit (see [`Unit`]), and a graph holds one
/// unit only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileMode {
    /// On-CPU stacks, sampled on the CPU clock.
    #[default]
    Cpu,
    /// Time threads spent blocked (switched out, not runnable), by the stack they blocked at.
    OffCpu,
    /// On-CPU and off-CPU time together: where the wall-clock time of each thread goes.
    Wall,
}

impl ProfileMode {
    /// The mode of profiles before modes existed, left out of CPU stream headers.
    pub fn is_cpu(&self) -> bool {
        *self == ProfileMode::Cpu
    }

    pub const ALL: [ProfileMode; 3] = [ProfileMode::Cpu, ProfileMode::OffCpu, ProfileMode::Wall];

    pub fn name(self) -> &'static str {
        match self {
            ProfileMode::Cpu => "cpu",
            ProfileMode::OffCpu => "off-cpu",
            ProfileMode::Wall => "wall",
        }
    }

    /// The unit a profile of this mode counts in.
    pub fn unit(self) -> Unit {
        match self {
            ProfileMode::Cpu => Unit::CpuSamples,
            ProfileMode::OffCpu => Unit::OffCpuMicros,
            ProfileMode::Wall => Unit::WallMicros,
        }
    }
}

impl fmt::Display for ProfileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProfileMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProfileMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode `{s}`: use cpu, off-cpu or wall"))
    }
}

/// What one count of a profile stands for. Every output says it: the SVG's title and counts,
/// the summary, pprof's sample type, speedscope's unit, a folded file's first line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One sample of the CPU clock: 1/frequency seconds of CPU time.
    #[default]
    CpuSamples,
    /// A microsecond a thread spent off the CPU: blocked, or runnable and waiting (for a CPU,
    /// or held back by its cgroup's CPU limit).
    OffCpuMicros,
    /// A microsecond of a thread's wall-clock time, on or off the CPU.
    WallMicros,
}

impl Unit {
    pub const ALL: [Unit; 3] = [Unit::CpuSamples, Unit::OffCpuMicros, Unit::WallMicros];

    /// The machine-readable name: the summary's `unit`, a folded file's `# unit:` line.
    pub fn name(self) -> &'static str {
        match self {
            Unit::CpuSamples => "cpu-samples",
            Unit::OffCpuMicros => "off-cpu-microseconds",
            Unit::WallMicros => "wall-microseconds",
        }
    }

    /// For people: `CPU samples`, `microseconds off-CPU`, `microseconds of wall-clock time`.
    pub fn describe(self) -> &'static str {
        match self {
            Unit::CpuSamples => "CPU samples",
            Unit::OffCpuMicros => "microseconds off-CPU",
            Unit::WallMicros => "microseconds of wall-clock time",
        }
    }

    /// What a flame graph calls its counts (`1,234 samples`, `1,234 µs off-CPU`).
    pub fn count_name(self) -> &'static str {
        match self {
            Unit::CpuSamples => "samples",
            Unit::OffCpuMicros => "µs off-CPU",
            Unit::WallMicros => "µs wall",
        }
    }

    /// `(type, unit)` of pprof's sample type.
    pub fn pprof_type(self) -> (&'static str, &'static str) {
        match self {
            Unit::CpuSamples => ("samples", "count"),
            Unit::OffCpuMicros => ("off-cpu", "microseconds"),
            Unit::WallMicros => ("wall", "microseconds"),
        }
    }

    /// The unit of a pprof sample type, if it is one of ours.
    pub fn from_pprof_type(kind: &str, unit: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.pprof_type() == (kind, unit))
    }

    /// speedscope's `unit` of a sampled profile's weights.
    pub fn speedscope(self) -> &'static str {
        match self {
            Unit::CpuSamples => "none",
            Unit::OffCpuMicros | Unit::WallMicros => "microseconds",
        }
    }

    /// The first line of a folded file in this unit; none for CPU samples, which every
    /// folded-stack tool assumes.
    pub fn folded_header(self) -> Option<String> {
        (self != Unit::CpuSamples).then(|| format!("{FOLDED_UNIT_PREFIX}{}", self.name()))
    }

    /// The unit a folded file's line declares, if it is a unit line.
    pub fn from_folded_line(line: &str) -> Option<Result<Unit, String>> {
        let name = line.trim().strip_prefix(FOLDED_UNIT_PREFIX)?.trim();
        Some(Unit::ALL.into_iter().find(|u| u.name() == name).ok_or_else(|| {
            format!(
                "unknown unit `{name}`: this kube-eagle knows cpu-samples, off-cpu-microseconds and wall-microseconds"
            )
        }))
    }

    /// Profiles are put together (merged, compared, diffed) only in one unit: the one line
    /// that says why not otherwise.
    pub fn same(self, other: Unit) -> Result<Unit, String> {
        if self == other {
            return Ok(self);
        }
        Err(format!(
            "cannot combine a profile in {} with one in {}: one graph holds one unit; compare profiles taken with the same --mode",
            self.describe(),
            other.describe()
        ))
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// How a folded file says its unit, on its first line.
pub const FOLDED_UNIT_PREFIX: &str = "# unit: ";

/// Blocks shorter than this are not counted off-CPU by default: 1 ms. A thread switching
/// context 50,000 times a second blocks for 20 µs at a time; those blocks are the bulk of the
/// events and barely any of the time, while a wait a user looks for (a lock held, a disk, a
/// peer, a sleep) lasts milliseconds. `--min-block 0` counts every block.
pub const DEFAULT_MIN_BLOCK_US: u64 = 1000;

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
    /// The profile was written, but `--push` could not deliver it to a receiver.
    PushFailed = 11,
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
    /// The Kubernetes namespaces the targets run in, as the CLI resolved them
    /// (`--namespace=NS`, each once). Declared, the agent profiles only containers that the
    /// node's kubelet records in one of them, and the admission policy admits the Job only for
    /// a user who may list pods in each (docs/security.md). Empty: no check (local runs).
    pub namespaces: Vec<String>,
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
    /// Take stacks (the profile); `false` (`--no-stacks`, with `--net` only): the network side
    /// alone, as `kubectl eagle net` asks, with no CPU sampling, unwind tables, runtime
    /// samplers or symbolization, which would cost the node and the targets for nothing.
    pub stacks: bool,
    /// What to measure.
    pub mode: ProfileMode,
    /// Off-CPU blocks shorter than this many microseconds are not counted.
    pub min_block_us: u64,
}

impl Default for AgentArgs {
    fn default() -> Self {
        AgentArgs {
            targets: Vec::new(),
            namespaces: Vec::new(),
            duration_ms: 30_000,
            frequency_hz: 99,
            node: None,
            runtime: None,
            python_native: false,
            net: false,
            stacks: true,
            mode: ProfileMode::Cpu,
            min_block_us: DEFAULT_MIN_BLOCK_US,
        }
    }
}

/// How a declared namespace is written: one argument, `--namespace=NS`.
pub const NAMESPACE_FLAG: &str = "--namespace=";

/// A namespace's name as Kubernetes allows it (an RFC 1123 label): lowercase letters, digits
/// and `-`, 1 to 63 characters, a letter or digit at both ends.
pub fn is_namespace_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// What a command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCommand {
    Run(AgentArgs),
    Help,
    Version,
}

pub const AGENT_USAGE: &str = "usage: eagle-agent --target pid:N|container:ID|pod:UID [...] [--namespace=NS ...] [--duration-ms MS] [--frequency HZ] [--node NAME] [--runtime RUNTIME] [--python-native] [--mode cpu|off-cpu|wall] [--min-block-us US] [--net [--no-stacks]]";

impl AgentArgs {
    /// The command line that asks for `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for target in &self.targets {
            args.extend(["--target".to_owned(), target.clone()]);
        }
        // One argument each, `=` joined: the admission policy's CEL reads each declared
        // namespace from one list element (`a.substring(12)`), which it could not do for a
        // value that follows its flag.
        for namespace in &self.namespaces {
            args.push(format!("{NAMESPACE_FLAG}{namespace}"));
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
        if !self.stacks {
            args.push("--no-stacks".to_owned());
        }
        // Written only when not the default, so the Jobs of a CPU profile stay as they were.
        if self.mode != ProfileMode::Cpu {
            args.extend(["--mode".to_owned(), self.mode.name().to_owned()]);
        }
        if self.min_block_us != DEFAULT_MIN_BLOCK_US {
            args.extend(["--min-block-us".to_owned(), self.min_block_us.to_string()]);
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
                "--no-stacks" => {
                    out.stacks = false;
                    continue;
                }
                _ => {}
            }
            if let Some(namespace) = flag.strip_prefix(NAMESPACE_FLAG) {
                if !is_namespace_name(namespace) {
                    return Err(format!("--namespace `{namespace}` is not a Kubernetes namespace name"));
                }
                out.namespaces.push(namespace.to_owned());
                continue;
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
                "--mode" => out.mode = value.parse()?,
                "--min-block-us" => {
                    out.min_block_us = value
                        .parse()
                        .map_err(|_| format!("--min-block-us `{value}` is not a number of microseconds"))?
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if !out.stacks && !out.net {
            return Err("--no-stacks without --net leaves nothing to measure".to_owned());
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
            namespaces: strings(&["shop", "kube-system"]),
            duration_ms: 1500,
            frequency_hz: 199,
            node: Some("node-a".into()),
            runtime: Some(Runtime::Python),
            python_native: true,
            net: true,
            stacks: true,
            mode: ProfileMode::Wall,
            min_block_us: 250,
        };
        assert_eq!(AgentArgs::parse(args.to_args()), Ok(AgentCommand::Run(args.clone())));
        let net_only = AgentArgs { stacks: false, ..args.clone() };
        assert_eq!(AgentArgs::parse(net_only.to_args()), Ok(AgentCommand::Run(net_only)));
        let nothing = AgentArgs { stacks: false, net: false, ..args.clone() };
        assert!(AgentArgs::parse(nothing.to_args()).unwrap_err().contains("nothing to measure"));
        for mode in ProfileMode::ALL {
            let args = AgentArgs { mode, ..AgentArgs::default() };
            assert_eq!(AgentArgs::parse(args.to_args()), Ok(AgentCommand::Run(args)));
        }
        // A CPU profile's command line is what it was before modes existed.
        assert!(!AgentArgs::default().to_args().iter().any(|a| a == "--mode" || a == "--min-block-us"));
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
        assert!(AgentArgs::parse(strings(&["--mode", "gpu"])).unwrap_err().contains("off-cpu"));
        assert!(AgentArgs::parse(strings(&["--min-block-us", "1ms"])).unwrap_err().contains("microseconds"));
        assert_eq!(AgentArgs::parse(strings(&["--bogus", "x"])), Err("unknown flag --bogus".to_owned()));
        assert_eq!(AgentArgs::parse(strings(&["--version"])), Ok(AgentCommand::Version));
        for bad in ["--namespace=", "--namespace=Shop", "--namespace=-a", "--namespace=a_b", "--namespace=a/../b"] {
            assert!(
                AgentArgs::parse(strings(&[bad])).unwrap_err().contains("not a Kubernetes namespace name"),
                "{bad}"
            );
        }
        assert!(is_namespace_name(&"a".repeat(63)) && !is_namespace_name(&"a".repeat(64)));
        assert_eq!(AgentArgs::parse(Vec::new()), Ok(AgentCommand::Run(AgentArgs::default())));
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn every_unit_reads_back_from_what_it_writes() {
        for unit in Unit::ALL {
            let (kind, name) = unit.pprof_type();
            assert_eq!(Unit::from_pprof_type(kind, name), Some(unit));
            if let Some(line) = unit.folded_header() {
                assert_eq!(Unit::from_folded_line(&line), Some(Ok(unit)));
            }
        }
        assert_eq!(Unit::from_folded_line("main;f 3"), None);
        assert!(Unit::from_folded_line("# unit: furlongs").unwrap().unwrap_err().contains("furlongs"));
    }

    #[test]
    fn units_do_not_mix() {
        assert_eq!(Unit::WallMicros.same(Unit::WallMicros), Ok(Unit::WallMicros));
        let refused = Unit::CpuSamples.same(Unit::OffCpuMicros).unwrap_err();
        assert!(
            refused.contains("CPU samples") && refused.contains("microseconds off-CPU") && refused.contains("--mode")
        );
        assert!(!refused.contains('\n'));
    }

    #[test]
    fn a_header_without_a_mode_is_a_cpu_profile() {
        let mode: ProfileMode = serde_json::from_str("\"off-cpu\"").unwrap();
        assert_eq!(mode, ProfileMode::OffCpu);
        assert_eq!(ProfileMode::default().unit(), Unit::CpuSamples);
    }
}
