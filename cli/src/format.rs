//! The output formats a profile can be written in: a value, chosen by `--format` or a file's
//! extension. The writers are in `output/`.

use std::path::Path;

use crate::error::CliError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Interactive flame graph (inferno): search, zoom, tooltips.
    Svg,
    /// Folded stacks, `frame;frame count` per line: input for inferno, flamegraph.pl, `check`.
    Folded,
    /// speedscope JSON (https://www.speedscope.app).
    Speedscope,
    /// pprof (gzipped profile.proto) for `go tool pprof` and Grafana Pyroscope.
    Pprof,
}

impl Format {
    /// The format a file name asks for: `.svg`, `.folded`/`.txt`, `.json`, `.pb.gz`/`.pprof`.
    pub fn from_extension(path: &Path) -> Result<Format, CliError> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.ends_with(".svg") {
            Ok(Format::Svg)
        } else if name.ends_with(".folded") || name.ends_with(".txt") {
            Ok(Format::Folded)
        } else if name.ends_with(".speedscope.json") || name.ends_with(".json") {
            Ok(Format::Speedscope)
        } else if [".pb.gz", ".pb", ".pprof", ".pprof.gz"].iter().any(|ext| name.ends_with(ext)) {
            Ok(Format::Pprof)
        } else {
            Err(CliError::Usage(format!(
                "cannot tell the output format of `{}` from its extension: use .svg, .folded, .txt, .json or .pb.gz, or say --format svg|folded|speedscope|pprof",
                path.display()
            )))
        }
    }
}
