//! What `kubectl-eagle` and `eagle-agent` must agree on beyond the stream itself: limits, and
//! the line by which an agent that fails says why.

/// Highest sampling frequency accepted. Above a few kHz the sampling itself dominates the
/// target's CPU; the kernel also caps it (`kernel.perf_event_max_sample_rate`). The CLI refuses
/// more at parse time, the agent again at start.
pub const MAX_FREQUENCY_HZ: u64 = 10_000;

/// How a failing agent's last line on stderr starts: the pod's termination message falls back
/// to the log's end, and the CLI reads the reason from the line with this prefix.
pub const AGENT_ERROR_PREFIX: &str = "eagle-agent: error: ";

/// The agent's failure in a termination message (or a log's end): the last line that carries
/// [`AGENT_ERROR_PREFIX`], without it.
pub fn agent_error_in(message: &str) -> Option<&str> {
    message.lines().rev().find_map(|l| l.strip_prefix(AGENT_ERROR_PREFIX))
}

/// What a warning of the stream is about. The agent sends these; the CLI acts on some of them
/// (an early end marks the result partial; `info-*` codes are reports, not warnings). On the
/// wire it is the kebab-case name; a code this build does not know (a newer agent's) is kept
/// as [`WarningCode::Other`], so the stream still decodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WarningCode {
    /// No process of the targets was found at start.
    NoProcesses,
    /// The window ended before its time (a signal, the profiled command exited).
    EndedEarly,
    /// Samples counted but not recorded (their stack was lost).
    SamplesLost,
    /// A sampler failed for a process (or at start).
    SamplerFailed,
    /// A process was sampled natively because its runtime's sampler could not run.
    SamplerFallback,
    /// A sampler's tool is not installed.
    SamplerMissing,
    /// A target process exited during the window.
    ProcessExited,
    /// A report, not a warning: which runtime and sampler a process got.
    InfoSampler,
    /// The encoder folded the smallest stacks away to stay within the stream's size limit.
    StacksFolded,
    /// Warnings beyond the stream's limit were dropped (counted in this one).
    WarningsDropped,
    /// A report, not a warning: how many native stacks were not unwound whole (a small share).
    InfoUnwind,
    /// Over 5 % of the native stacks were not unwound whole.
    UnwindIncomplete,
    /// An object's unwind table could not be built (a damaged `.eh_frame`, not x86-64...).
    UnwindTable,
    /// A process's unwind tables did not fit in the agent's budget.
    UnwindBudget,
    /// A process maps more executable regions than the unwinder follows.
    UnwindMappings,
    /// The kernel refused an unwind table or a process's mappings.
    UnwindFailed,
    /// A report, not a warning: how precise a process's shares are when its stacks were read
    /// by its runtime's sampler and weighed by CPU time (as many unweighted samples as).
    InfoPrecision,
    /// A JIT's perf map was refused (a symbolic link, not a regular file, too large, another
    /// user's): its JIT frames are unnamed.
    PerfMapRefused,
    /// Lines of a JIT's perf map were skipped (malformed, overflowing) or changed (control
    /// characters escaped, names cut).
    PerfMapLines,
    /// A report, not a warning: a cgroup's own CPU-limit counters over the window
    /// (`sched::CgroupCpuStat`), in off-CPU and wall modes.
    InfoCgroupCpu,
    Other(String),
}

impl WarningCode {
    const KNOWN: [(WarningCode, &'static str); 20] = [
        (WarningCode::NoProcesses, "no-processes"),
        (WarningCode::EndedEarly, "ended-early"),
        (WarningCode::SamplesLost, "samples-lost"),
        (WarningCode::SamplerFailed, "sampler-failed"),
        (WarningCode::SamplerFallback, "sampler-fallback"),
        (WarningCode::SamplerMissing, "sampler-missing"),
        (WarningCode::ProcessExited, "process-exited"),
        (WarningCode::InfoSampler, "info-sampler"),
        (WarningCode::StacksFolded, "stacks-folded"),
        (WarningCode::WarningsDropped, "warnings-dropped"),
        (WarningCode::InfoUnwind, "info-unwind"),
        (WarningCode::UnwindIncomplete, "unwind-incomplete"),
        (WarningCode::UnwindTable, "unwind-table"),
        (WarningCode::UnwindBudget, "unwind-budget"),
        (WarningCode::UnwindMappings, "unwind-mappings"),
        (WarningCode::UnwindFailed, "unwind-failed"),
        (WarningCode::InfoPrecision, "info-precision"),
        (WarningCode::PerfMapRefused, "perf-map-refused"),
        (WarningCode::PerfMapLines, "perf-map-lines"),
        (WarningCode::InfoCgroupCpu, "info-cgroup-cpu"),
    ];

    pub fn as_str(&self) -> &str {
        match self {
            WarningCode::Other(code) => code,
            known => Self::KNOWN.iter().find(|(c, _)| c == known).map(|(_, name)| *name).unwrap_or_default(),
        }
    }

    /// `info-*`: something the agent reports, shown without the word "warning".
    pub fn is_info(&self) -> bool {
        self.as_str().starts_with("info-")
    }
}

impl Default for WarningCode {
    fn default() -> Self {
        WarningCode::Other(String::new())
    }
}

impl From<&str> for WarningCode {
    fn from(name: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(c, _)| c.clone())
            .unwrap_or_else(|| WarningCode::Other(name.to_owned()))
    }
}

impl std::fmt::Display for WarningCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for WarningCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for WarningCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(WarningCode::from(name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_line_is_the_reason() {
        let message = "noise\neagle-agent: error: first\nmore noise\neagle-agent: error: BPF is not permitted\n";
        assert_eq!(agent_error_in(message), Some("BPF is not permitted"));
        assert_eq!(agent_error_in("no error here"), None);
    }

    #[test]
    fn warning_codes_round_trip_and_keep_unknown_ones() {
        for (code, name) in WarningCode::KNOWN {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<WarningCode>(&format!("\"{name}\"")).unwrap(), code);
        }
        let newer: WarningCode = serde_json::from_str("\"info-something-new\"").unwrap();
        assert_eq!(newer, WarningCode::Other("info-something-new".into()));
        assert!(newer.is_info() && WarningCode::InfoSampler.is_info() && !WarningCode::EndedEarly.is_info());
    }
}
