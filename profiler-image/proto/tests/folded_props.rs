//! Properties of the folded-stack model: what `add` builds, `to_text` writes and `parse` reads
//! back unchanged; a bad line is reported with its own line number.

use eagle_proto::FoldedStacks;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

fn frame() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_:<>(). \\[\\]-]{0,16}",
        2 => "[a-z;\t\r\n ]{0,8}",
        2 => vec(any::<char>(), 0..8).prop_map(String::from_iter),
        1 => select(&["", " ", ";", "\u{b}", "\u{85}", " 12"][..]).prop_map(str::to_owned),
    ]
}

fn stacks() -> impl Strategy<Value = Vec<(Vec<String>, u64)>> {
    vec((vec(frame(), 0..6), prop_oneof![4 => 0..100u64, 1 => any::<u64>()]), 0..20)
}

fn build(stacks: &[(Vec<String>, u64)]) -> FoldedStacks {
    let mut folded = FoldedStacks::new();
    for (frames, count) in stacks {
        folded.add(frames, *count);
    }
    folded
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn text_round_trips(stacks in stacks()) {
        let folded = build(&stacks);
        let text = folded.to_text();
        prop_assert_eq!(FoldedStacks::parse(&text), Ok(folded));
        prop_assert_eq!(text.lines().count(), FoldedStacks::parse(&text).unwrap().len());
    }

    /// Each frame stays one frame and each stack one line, whatever the frame names hold.
    #[test]
    fn add_keeps_frames_apart(frames in vec(frame(), 1..6), count in 1..1000u64) {
        let mut folded = FoldedStacks::new();
        folded.add(&frames, count);
        let text = folded.to_text();
        prop_assert_eq!(text.lines().count(), 1);
        prop_assert!(!text.trim_end_matches('\n').chars().any(char::is_control), "{:?}", text);
        let (stack, n) = text.trim_end_matches('\n').rsplit_once(' ').unwrap();
        prop_assert_eq!(n, count.to_string());
        prop_assert_eq!(stack.split(';').count(), frames.len());
    }

    #[test]
    fn merge_adds_up(a in stacks(), b in stacks()) {
        let (fa, fb) = (build(&a), build(&b));
        let mut merged = fa.clone();
        merged.merge(fb.clone());
        // Stacks without frames and zero counts are not kept; sums saturate.
        let total = a
            .iter()
            .chain(&b)
            .filter(|(frames, _)| !frames.is_empty())
            .fold(0u64, |sum, (_, count)| sum.saturating_add(*count));
        prop_assert_eq!(merged.total(), total);
        let both = build(&a.iter().chain(&b).cloned().collect::<Vec<_>>());
        prop_assert_eq!(merged.to_text(), both.to_text());
        let sorted = merged.sorted();
        prop_assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// A malformed line among good ones is reported with its own number, blank lines counted.
    #[test]
    fn bad_line_reports_its_number(
        good in vec(prop_oneof!["[a-z]{1,5}(;[a-z]{1,5}){0,3} [0-9]{1,4}", Just(String::new())], 0..20),
        bad in prop_oneof![
            Just("no_count".to_owned()),
            Just("main;x 1.5".to_owned()),
            Just("main;x -1".to_owned()),
            Just(" 12".to_owned()),
            Just("main;x 12 ".to_owned()),
            "[a-z;]{1,8} [a-z]{1,3}",
        ],
        at in any::<Index>(),
        crlf in any::<bool>(),
    ) {
        let mut lines = good;
        let at = at.index(lines.len() + 1);
        lines.insert(at, bad);
        let end = if crlf { "\r\n" } else { "\n" };
        let text: String = lines.iter().map(|l| format!("{l}{end}")).collect();
        let error = FoldedStacks::parse(&text).unwrap_err();
        prop_assert_eq!(error.line, at + 1);
        let prefix = format!("line {}: ", at + 1);
        prop_assert!(error.to_string().starts_with(&prefix), "{}", error);
    }
}
