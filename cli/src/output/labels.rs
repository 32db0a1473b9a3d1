//! What a rendered profile says about itself, for every format.

use eagle_proto::Unit;

/// What a rendered profile says about itself.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub title: String,
    /// One line under the title: window, rate, samples; and PARTIAL when it is.
    pub subtitle: String,
}

/// A profile's title: what was profiled and what the counts are. Every sampler's stacks, eBPF's,
/// py-spy's, rbspy's and Flight Recorder's, are weighed in CPU time: the title says so, since a
/// reader used to wall-clock samplers would read a waiting Python process otherwise.
pub fn title(what: &str, unit: Unit) -> String {
    match unit {
        Unit::CpuSamples => format!("kube-eagle: {what}, CPU time (samples)"),
        Unit::OffCpuMicros => format!("kube-eagle: {what}, off-CPU time (microseconds blocked)"),
        Unit::WallMicros => format!("kube-eagle: {what}, wall-clock time (microseconds on and off CPU)"),
    }
}

/// A total in its unit: `1234 samples`, `1234 µs off-CPU`.
pub fn amount(total: u64, unit: Unit) -> String {
    format!("{total} {}", unit.count_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_say_the_unit() {
        assert_eq!(title("pid/1", Unit::CpuSamples), "kube-eagle: pid/1, CPU time (samples)");
        assert!(
            title("pid/1", Unit::OffCpuMicros).contains("off-CPU")
                && title("pid/1", Unit::OffCpuMicros).contains("microseconds")
        );
        assert!(title("pid/1", Unit::WallMicros).contains("wall-clock"));
        assert_eq!(amount(12, Unit::OffCpuMicros), "12 µs off-CPU");
    }
}
