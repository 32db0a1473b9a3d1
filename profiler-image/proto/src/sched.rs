//! Time a thread was runnable but did not run, as both binaries name it: the frames the agent
//! puts above the stack a thread stopped at, and the cgroup's own CPU-limit counters over the
//! window, which travel as an `info-cgroup-cpu` warning (one per cgroup) with a fixed tail the
//! CLI reads back for the summary. One more note of that code, with no pid and no tail, says
//! which view of the hierarchy the agent read ([`CgroupCpuStat::from_warning`] passes it by).

use crate::{Warning, WarningCode};

/// The innermost frame of time a thread was runnable, not throttled, and waited for a CPU
/// (preempted, or woken and not yet running).
pub const WAITING_FRAME: &str = "[waiting for a CPU]";
/// The innermost frame of time a thread was runnable and held back by its cgroup's CPU limit
/// (the CFS bandwidth controller throttled its group).
pub const THROTTLED_FRAME: &str = "[throttled by its cgroup's CPU limit]";

/// Is `frame` one of the two frames of time runnable but not running?
pub fn is_wait_frame(frame: &str) -> bool {
    frame == WAITING_FRAME || frame == THROTTLED_FRAME
}

/// A warning's message as people read it: an `info-cgroup-cpu` one without the figures kept
/// for the CLI.
pub fn for_people(warning: &Warning) -> &str {
    match warning.message.rfind(TAIL) {
        Some(at) if warning.code == WarningCode::InfoCgroupCpu => &warning.message[..at],
        _ => &warning.message,
    }
}

/// A cgroup's CPU-limit counters over a window (`cpu.stat`): cgroup v1 `nr_periods`,
/// `nr_throttled`, `throttled_time` (ns); v2 `nr_periods`, `nr_throttled`, `throttled_usec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupCpuStat {
    /// The cgroup, as `/proc/PID/cgroup` names it (the cpu controller's path).
    pub cgroup: String,
    /// A process of the profile in it.
    pub pid: u32,
    /// The container of that process (its id as in the cgroup path), when it is in one: how
    /// the CLI names the cgroup by pod.
    pub container: Option<String>,
    /// The limit: `cfs_quota_us` per `cfs_period_us` (v1) or `cpu.max` (v2), in millicores;
    /// `None` when it has none.
    pub limit_millicores: Option<u64>,
    /// Enforcement periods that ran during the window.
    pub nr_periods: u64,
    /// Periods in which the group was throttled.
    pub nr_throttled: u64,
    /// Time the group's run queues spent throttled, summed over CPUs, in microseconds.
    pub throttled_us: u64,
    /// What the profile measured for the group's profiled processes: microseconds their
    /// threads were runnable and throttled ([`THROTTLED_FRAME`]) ...
    pub measured_throttled_us: u64,
    /// ... and runnable and waiting for a CPU ([`WAITING_FRAME`]).
    pub measured_waiting_us: u64,
    /// The nearest group above this one with a CPU limit of its own, when there is one: a
    /// pod's group, which the kubelet limits to the sum of its containers' limits. Each level
    /// is throttled by its own quota and counts only that in its own `cpu.stat`, and their
    /// throttled spans overlap: neither level's counters, nor their sum, is the time the
    /// threads lost to the limits (what the profile measures).
    pub above: Option<LimitedLevel>,
}

/// A limited group's own counters over the window (see [`CgroupCpuStat::above`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitedLevel {
    pub limit_millicores: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_us: u64,
}

const TAIL: &str = " [cgroup-cpu ";

impl CgroupCpuStat {
    /// The warning that carries it: a sentence, then the figures as `key=value` for the CLI.
    pub fn to_warning(&self) -> Warning {
        let limit = match self.limit_millicores {
            Some(m) => format!("limited to {m}m"),
            None => "without a CPU limit".to_owned(),
        };
        let (above, above_figures) = match &self.above {
            Some(a) => (
                format!(
                    "; the group above it (limited to {}m) was throttled in {} of {} periods, {:.3} s",
                    a.limit_millicores,
                    a.nr_throttled,
                    a.nr_periods,
                    a.throttled_us as f64 / 1e6
                ),
                format!(
                    " above_limit_millicores={} above_nr_periods={} above_nr_throttled={} above_throttled_us={}",
                    a.limit_millicores, a.nr_periods, a.nr_throttled, a.throttled_us
                ),
            ),
            None => (String::new(), String::new()),
        };
        Warning {
            code: WarningCode::InfoCgroupCpu,
            pid: Some(self.pid),
            message: format!(
                "cgroup {} ({limit}): throttled in {} of {} periods, {:.3} s in all over the window{above}; its profiled threads were throttled {:.3} s and waited for a CPU {:.3} s{TAIL}nr_periods={} nr_throttled={} throttled_us={} limit_millicores={} measured_throttled_us={} measured_waiting_us={}{}{above_figures} cgroup={}]",
                self.cgroup,
                self.nr_throttled,
                self.nr_periods,
                self.throttled_us as f64 / 1e6,
                self.measured_throttled_us as f64 / 1e6,
                self.measured_waiting_us as f64 / 1e6,
                self.nr_periods,
                self.nr_throttled,
                self.throttled_us,
                self.limit_millicores.map_or_else(|| "none".to_owned(), |m| m.to_string()),
                self.measured_throttled_us,
                self.measured_waiting_us,
                self.container.as_ref().map_or_else(String::new, |id| format!(" container={id}")),
                self.cgroup,
            ),
        }
    }

    /// Reads back what [`CgroupCpuStat::to_warning`] wrote; `None` for any other warning.
    pub fn from_warning(warning: &Warning) -> Option<CgroupCpuStat> {
        if warning.code != WarningCode::InfoCgroupCpu {
            return None;
        }
        let message = warning.message.strip_suffix(']')?;
        let at = message.rfind(TAIL)?;
        // The cgroup comes last: a path may hold spaces.
        let (figures, cgroup) = message[at + TAIL.len()..].split_once(" cgroup=")?;
        let mut stat = CgroupCpuStat { cgroup: cgroup.to_owned(), pid: warning.pid?, ..CgroupCpuStat::default() };
        let mut above = LimitedLevel::default();
        let mut above_limited = false;
        for pair in figures.split(' ') {
            let (key, value) = pair.split_once('=')?;
            match key {
                "nr_periods" => stat.nr_periods = value.parse().ok()?,
                "nr_throttled" => stat.nr_throttled = value.parse().ok()?,
                "throttled_us" => stat.throttled_us = value.parse().ok()?,
                "limit_millicores" => stat.limit_millicores = value.parse().ok(),
                "measured_throttled_us" => stat.measured_throttled_us = value.parse().ok()?,
                "measured_waiting_us" => stat.measured_waiting_us = value.parse().ok()?,
                "container" => stat.container = Some(value.to_owned()),
                "above_limit_millicores" => {
                    above.limit_millicores = value.parse().ok()?;
                    above_limited = true;
                }
                "above_nr_periods" => above.nr_periods = value.parse().ok()?,
                "above_nr_throttled" => above.nr_throttled = value.parse().ok()?,
                "above_throttled_us" => above.throttled_us = value.parse().ok()?,
                _ => {}
            }
        }
        stat.above = above_limited.then_some(above);
        Some(stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_stat_round_trips_through_its_warning() {
        let stat = CgroupCpuStat {
            cgroup: "/kubepods/burstable/pod1 (x)/abc".into(),
            pid: 42,
            container: Some("3f4e5d6c7b8a".into()),
            limit_millicores: Some(200),
            nr_periods: 100,
            nr_throttled: 80,
            throttled_us: 7_912_345,
            measured_throttled_us: 7_850_000,
            measured_waiting_us: 512,
            above: None,
        };
        let warning = stat.to_warning();
        assert!(
            warning.message.contains("limited to 200m") && warning.message.contains("7.912 s"),
            "{}",
            warning.message
        );
        assert_eq!(CgroupCpuStat::from_warning(&warning), Some(stat.clone()));
        assert!(for_people(&warning).ends_with("waited for a CPU 0.001 s"), "{}", for_people(&warning));
        let unlimited = CgroupCpuStat { limit_millicores: None, container: None, ..stat.clone() };
        assert_eq!(CgroupCpuStat::from_warning(&unlimited.to_warning()), Some(unlimited));
        let in_a_limited_pod = CgroupCpuStat {
            above: Some(LimitedLevel {
                limit_millicores: 200,
                nr_periods: 99,
                nr_throttled: 40,
                throttled_us: 4_000_001,
            }),
            ..stat.clone()
        };
        let warning = in_a_limited_pod.to_warning();
        assert!(
            for_people(&warning)
                .contains("the group above it (limited to 200m) was throttled in 40 of 99 periods, 4.000 s;"),
            "{}",
            warning.message
        );
        assert_eq!(CgroupCpuStat::from_warning(&warning), Some(in_a_limited_pod));
        let other = Warning { code: WarningCode::InfoSampler, pid: Some(1), message: "x".into() };
        assert_eq!(CgroupCpuStat::from_warning(&other), None);
    }
}
