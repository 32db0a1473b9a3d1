//! How the value types are spelled on the command line. They are plain enums of the modules
//! that use them (`format`, `placement`); clap learns their names here, at the edge.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::format::Format;
use crate::placement::GroupBy;

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Svg, Format::Folded, Format::Speedscope, Format::Pprof]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Format::Svg => PossibleValue::new("svg").help("Interactive flame graph (inferno): search, zoom, tooltips"),
            Format::Folded => PossibleValue::new("folded")
                .help("Folded stacks, `frame;frame count` per line: input for inferno, flamegraph.pl, `check`"),
            Format::Speedscope => PossibleValue::new("speedscope").help("speedscope JSON (https://www.speedscope.app)"),
            Format::Pprof => PossibleValue::new("pprof")
                .help("pprof (gzipped profile.proto) for `go tool pprof` and Grafana Pyroscope"),
        })
    }
}

impl ValueEnum for GroupBy {
    fn value_variants<'a>() -> &'a [Self] {
        &[GroupBy::None, GroupBy::Namespace, GroupBy::Workload, GroupBy::Pod, GroupBy::Container, GroupBy::Process]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            GroupBy::None => "none",
            GroupBy::Namespace => "namespace",
            GroupBy::Workload => "workload",
            GroupBy::Pod => "pod",
            GroupBy::Container => "container",
            GroupBy::Process => "process",
        }))
    }
}
