//! Interactive SVG flame graphs through inferno.

use eagle_proto::{FoldedStacks, Unit};
use inferno::flamegraph::{self, color::MultiPalette, Palette};

use super::labels::Labels;
use crate::error::CliError;

pub fn render(folded: &FoldedStacks, labels: &Labels, unit: Unit) -> Result<Vec<u8>, CliError> {
    // Sorted here, on two threads: inferno need not sort again.
    render_sorted(&super::sorted::sorted_text(folded), labels, unit)
}

/// The flame graph of folded text that is already sorted and merged.
pub fn render_sorted(text: &str, labels: &Labels, unit: Unit) -> Result<Vec<u8>, CliError> {
    let mut options = flamegraph::Options::default();
    options.title = labels.title.clone();
    options.subtitle = Some(labels.subtitle.clone()).filter(|s| !s.is_empty());
    // Every frame's tooltip says what its count is: `(1,234 µs off-CPU, 12%)`.
    options.count_name = unit.count_name().into();
    // The Java palette colors `_[k]` kernel frames apart from user code, and C++/Rust paths
    // apart from plain C, which keeps mixed graphs readable.
    options.colors = Palette::Multi(MultiPalette::Java);
    options.hash = true;
    options.no_sort = true;
    let mut svg = Vec::with_capacity(1 << 20);
    flamegraph::from_lines(&mut options, text.lines(), &mut svg)
        .map_err(|e| CliError::Failed(format!("cannot render the flame graph: {e}")))?;
    Ok(svg)
}
