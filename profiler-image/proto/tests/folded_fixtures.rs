//! Folded-stack files in `tests/data/folded/`: `NAME.txt` parses to `NAME.expected` (the
//! normalized text: merged, sorted) or fails with an error whose message contains `NAME.err`,
//! which starts with the line number the error must report.

mod common;

use common::{assert_text_eq, data_dir, read, stems};
use eagle_proto::FoldedStacks;

fn fixture(name: &str, ext: &str) -> std::path::PathBuf {
    data_dir("folded").join(format!("{name}.{ext}"))
}

fn check_ok(name: &str) {
    let input = read(&fixture(name, "txt"));
    let folded = FoldedStacks::parse(&input).unwrap_or_else(|e| panic!("{name}.txt does not parse: {e}"));
    let text = folded.to_text();
    assert_text_eq(&format!("{name}.expected"), &read(&fixture(name, "expected")), &text);
    // The normalized text is itself valid input, and a fixed point.
    let again = FoldedStacks::parse(&text).unwrap_or_else(|e| panic!("{name}: to_text() does not parse: {e}"));
    assert_eq!(again, folded, "{name}: parse(to_text()) differs");
}

fn check_err(name: &str) {
    let input = read(&fixture(name, "txt"));
    let expected = read(&fixture(name, "err"));
    let expected = expected.trim_end();
    let error = match FoldedStacks::parse(&input) {
        Ok(f) => panic!("{name}.txt parsed ({} stacks) but should fail with: {expected}", f.len()),
        Err(e) => e,
    };
    let message = error.to_string();
    assert!(message.contains(expected), "{name}.txt failed with\n  {message}\nwhich does not contain\n  {expected}");
    let line: usize = expected
        .strip_prefix("line ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name}.err must start with `line N:`"));
    assert_eq!(error.line, line, "{name}: ParseError::line");
}

macro_rules! fixtures {
    ($check:ident: $($name:ident),+ $(,)?) => {
        pub const NAMES: &[&str] = &[$(stringify!($name)),+];
        $(
            #[test]
            fn $name() {
                super::$check(stringify!($name));
            }
        )+
    };
}

mod ok {
    fixtures!(check_ok:
        merged,            // duplicates add up, blank and whitespace-only lines are skipped
        crlf,
        spaces_in_frames,  // the count is after the last space
        unicode,           // sorted by bytes
        zero_counts,       // dropped
        saturating,        // a sum past u64::MAX stays at u64::MAX instead of overflowing
        empty,
        blank_lines_only,
    );
}

mod err {
    fixtures!(check_err:
        no_count,
        bad_count,
        negative_count,
        fractional_count,
        count_too_big,
        empty_stack,       // line numbers count blank lines
        trailing_space,
        crlf_bad_count,
        tab_before_count,
    );
}

#[test]
fn every_fixture_has_a_test_and_one_expectation() {
    let dir = data_dir("folded");
    let inputs = stems(&dir, "txt");
    let listed: std::collections::BTreeSet<String> =
        ok::NAMES.iter().chain(err::NAMES).map(|n| n.to_string()).collect();
    assert_eq!(inputs, listed, "the .txt files and the tests in this file differ");
    for name in ok::NAMES {
        assert!(fixture(name, "expected").exists() && !fixture(name, "err").exists(), "{name}: want only a .expected");
    }
    for name in err::NAMES {
        assert!(fixture(name, "err").exists() && !fixture(name, "expected").exists(), "{name}: want only a .err");
    }
}

#[test]
fn total_saturates() {
    let folded = FoldedStacks::parse(&read(&fixture("saturating", "txt"))).unwrap();
    assert_eq!(folded.total(), u64::MAX);
    let mut merged = folded.clone();
    merged.merge(folded);
    assert_eq!(merged.sorted(), vec![("main;cold", 2), ("main;hot", u64::MAX)]);
}
