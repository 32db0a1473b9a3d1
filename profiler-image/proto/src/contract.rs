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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_line_is_the_reason() {
        let message = "noise\neagle-agent: error: first\nmore noise\neagle-agent: error: BPF is not permitted\n";
        assert_eq!(agent_error_in(message), Some("BPF is not permitted"));
        assert_eq!(agent_error_in("no error here"), None);
    }
}
