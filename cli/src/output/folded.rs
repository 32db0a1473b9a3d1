//! Folded stacks, sorted: the lingua franca of flame graph tools.

use eagle_proto::{FoldedStacks, Unit};

/// CPU samples as every tool expects them; other units with their `# unit:` line first.
pub fn render(folded: &FoldedStacks, unit: Unit) -> Vec<u8> {
    folded.to_text_in(unit).into_bytes()
}
