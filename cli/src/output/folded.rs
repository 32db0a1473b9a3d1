//! Folded stacks, sorted: the lingua franca of flame graph tools.

use eagle_proto::FoldedStacks;

pub fn render(folded: &FoldedStacks) -> Vec<u8> {
    folded.to_text().into_bytes()
}
