//! Folded stacks as `check`, `diff`, `convert` and `--baseline` read them from a file. Whatever
//! parses must print back to text that parses to the same stacks.
#![no_main]

use eagle_proto::FoldedStacks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(stacks) = FoldedStacks::parse(text) {
        let again = FoldedStacks::parse(&stacks.to_text()).expect("printed folded stacks parse");
        assert_eq!(again.total(), stacks.total());
        assert_eq!(again.len(), stacks.len());
    }
});
