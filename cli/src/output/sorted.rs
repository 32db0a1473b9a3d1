//! Folded text in stack order, the input inferno's flame graph needs, made for large profiles:
//! the stacks are sorted on two threads (sorting dominates rendering a million stacks, and
//! inferno's own sort runs on one), merged, and written with a hand-rolled integer formatter.
//! The result is byte for byte `FoldedStacks::to_text`.
//!
//! [`parse_sorted`] is the path of `convert FILE.folded -o FILE.svg`: it reads folded text
//! exactly as `FoldedStacks::parse` does (the same lines accepted, the same errors at the same
//! line numbers; the tests below hold the two together) but merges duplicate stacks by sorting,
//! on two threads, instead of hashing every stack into a map that would be sorted next anyway.

use eagle_proto::folded::ParseError;
use eagle_proto::FoldedStacks;

/// Below this many stacks a second thread costs more than it saves.
const PARALLEL_FROM: usize = 50_000;

pub fn sorted_text(folded: &FoldedStacks) -> String {
    let mut stacks: Vec<(&str, u64)> = folded.iter().collect();
    sort(&mut stacks);
    text_of(&stacks)
}

/// Merged stacks of folded text, sorted by stack, borrowing the text.
pub fn parse_sorted(text: &str) -> Result<Vec<(&str, u64)>, ParseError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let half = text.len() / 2;
    let split = text[half..].find('\n').map(|i| half + i + 1).filter(|_| threads > 1 && text.len() > 4 << 20);
    let mut stacks = match split {
        None => parse_lines(text)?,
        Some(split) => {
            let (first, second) = text.split_at(split);
            let (a, b) = std::thread::scope(|s| {
                let b = s.spawn(|| parse_lines(second));
                (parse_lines(first), b.join().expect("the parsing thread does not panic"))
            });
            let mut a = a?;
            // `first` ends with a line end: the second part's line 1 follows its last line.
            let b = b.map_err(|e| ParseError { line: e.line + first.bytes().filter(|c| *c == b'\n').count(), ..e })?;
            a.extend(b);
            a
        }
    };
    sort_and_merge(&mut stacks);
    Ok(stacks)
}

/// Folded text of stacks in any order, some of them repeated.
pub fn sorted_text_of(mut stacks: Vec<(&str, u64)>) -> String {
    sort_and_merge(&mut stacks);
    text_of(&stacks)
}

fn sort_and_merge(stacks: &mut Vec<(&str, u64)>) {
    sort(stacks);
    stacks.dedup_by(|next, kept| {
        let same = next.0 == kept.0;
        if same {
            kept.1 = kept.1.saturating_add(next.1);
        }
        same
    });
}

/// The rules of `FoldedStacks::parse`, line by line, without merging.
fn parse_lines(text: &str) -> Result<Vec<(&str, u64)>, ParseError> {
    let mut stacks = Vec::with_capacity(text.len() / 64);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| ParseError { line: i + 1, reason };
        let (stack, count) =
            line.rsplit_once(' ').ok_or_else(|| err("expected `frame;frame;... COUNT`, found no count".into()))?;
        let count: u64 = count.parse().map_err(|_| err(format!("`{count}` is not a sample count")))?;
        if stack.is_empty() {
            return Err(err("empty stack".into()));
        }
        if count > 0 {
            stacks.push((stack, count));
        }
    }
    Ok(stacks)
}

/// Folded text of stacks already sorted and merged.
pub fn text_of(stacks: &[(&str, u64)]) -> String {
    let bytes: usize = stacks.iter().map(|(s, _)| s.len() + 12).sum();
    let mut out = String::with_capacity(bytes);
    let mut digits = [0u8; 20];
    for &(stack, count) in stacks {
        out.push_str(stack);
        out.push(' ');
        out.push_str(format_u64(count, &mut digits));
        out.push('\n');
    }
    out
}

fn sort(stacks: &mut Vec<(&str, u64)>) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if stacks.len() < PARALLEL_FROM || threads < 2 {
        stacks.sort_unstable_by(|a, b| a.0.cmp(b.0));
        return;
    }
    let len = stacks.len();
    let (left, right) = stacks.split_at_mut(len / 2);
    std::thread::scope(|s| {
        s.spawn(|| left.sort_unstable_by(|a, b| a.0.cmp(b.0)));
        right.sort_unstable_by(|a, b| a.0.cmp(b.0));
    });
    let mut merged = Vec::with_capacity(len);
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if left[i].0 <= right[j].0 {
            merged.push(left[i]);
            i += 1;
        } else {
            merged.push(right[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    *stacks = merged;
}

fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_to_text_small_and_large() {
        let mut folded = FoldedStacks::new();
        folded.add(&["main", "b"], 3);
        folded.add(&["main", "a"], u64::MAX);
        folded.add(&["main"], 10);
        assert_eq!(sorted_text(&folded), folded.to_text());
        let mut large = FoldedStacks::new();
        let mut x = 1u64;
        for i in 0..(PARALLEL_FROM as u64 * 2 + 7) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            large.add(&["main", &format!("f{}", x >> 40), &format!("g{}", i % 97)], i % 13 + 1);
        }
        assert_eq!(sorted_text(&large), large.to_text());
    }

    /// `parse_sorted` accepts and refuses exactly what `FoldedStacks::parse` does.
    fn same_as_folded_stacks(text: &str) {
        let ours = parse_sorted(text).map(|s| text_of(&s));
        let theirs = FoldedStacks::parse(text).map(|f| f.to_text());
        assert_eq!(ours, theirs, "{:?}", &text[..text.len().min(200)]);
    }

    #[test]
    fn parses_as_folded_stacks_does() {
        for text in [
            "",
            "\n\n",
            "main;b 3\r\nmain;a 2\r\n\r\nmain;b 4\n  \nmain;a;c 1\nmain 1",
            "main;a 0\nmain;a 2\n",
            "a b c 5\n",
            "main 18446744073709551615\nmain 1\n",
            "main;a 1\nbroken\n",
            "main;a 1\nmain;a x\n",
            "main;a 1\n 5\n",
            "main;a -1\n",
            "main;a 1.5\n",
            "main;a\t2\n",
            "main;a 2 \n",
        ] {
            same_as_folded_stacks(text);
        }
    }

    #[test]
    fn parses_large_inputs_on_two_threads_with_the_right_line_numbers() {
        let mut text = String::new();
        let mut x = 7u64;
        while text.len() < 5 << 20 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            text.push_str(&format!("main;f{};g{} {}\n", x >> 52, (x >> 20) % 31, x % 5));
        }
        same_as_folded_stacks(&text);
        let lines = text.lines().count();
        for bad_line in [3, lines / 2 + 1, lines - 2] {
            let mut broken: Vec<&str> = text.lines().collect();
            broken[bad_line - 1] = "main;oops";
            let broken = broken.join("\n");
            let e = parse_sorted(&broken).unwrap_err();
            assert_eq!(e.line, bad_line);
            same_as_folded_stacks(&broken);
        }
    }
}
