//! The time a pushed profile covers, as receivers index it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::run_info::RunInfo;

/// The time a profile covers, in UNIX seconds, as receivers index it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from_unix_s: u64,
    /// After `from_unix_s`, always.
    pub until_unix_s: u64,
}

impl Window {
    /// From the run's start and duration; a profile read from a file that does not say ends now.
    pub fn of(run: &RunInfo, now: SystemTime) -> Window {
        let now_ms = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let duration_ms = run.duration.unwrap_or(Duration::ZERO).as_millis() as u64;
        let start_ms = run.started_unix_ms.unwrap_or(now_ms.saturating_sub(duration_ms));
        let from_unix_s = start_ms / 1000;
        let until_unix_s = start_ms.saturating_add(duration_ms).div_ceil(1000).max(from_unix_s + 1);
        Window { from_unix_s, until_unix_s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_runs_and_never_empty() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let run = RunInfo {
            started_unix_ms: Some(100_500),
            duration: Some(Duration::from_millis(2_000)),
            ..Default::default()
        };
        assert_eq!(Window::of(&run, now), Window { from_unix_s: 100, until_unix_s: 103 });
        assert_eq!(Window::of(&RunInfo::default(), now), Window { from_unix_s: 1_000, until_unix_s: 1_001 });
        let read = RunInfo { duration: Some(Duration::from_secs(30)), ..Default::default() };
        assert_eq!(Window::of(&read, now), Window { from_unix_s: 970, until_unix_s: 1_000 });
    }
}
