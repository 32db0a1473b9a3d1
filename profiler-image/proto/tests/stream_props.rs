//! Properties of the result stream: whatever the records, the stream round-trips (after the
//! documented sanitization), and whatever happens to the log on its way (cut short, lines lost,
//! doubled, moved or damaged, noise mixed in), the decoder either returns exactly what the agent
//! sent or an error: never a silently different result.

mod common;

use eagle_proto::stream::{printable, TargetReport};
use eagle_proto::{
    DecodeError, Decoder, Encoder, Event, Header, NodeResult, Payload, Progress, StackRecord, Trailer, Warning,
    WarningCode,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

// ---------------------------------------------------------------------------------------------
// Strategies

/// Strings that stress the payload's framing: plain names, its separators, control
/// characters, any unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_:<>(). \\[\\]-]{0,16}",
        2 => "[a-z;\t\r\n \\-]{0,10}",
        2 => "\\PC{0,8}",
        2 => vec(any::<char>(), 0..8).prop_map(String::from_iter),
        1 => select(&["", "-", " ", ";", "\t", "\0", "\u{85}", "\u{2028}", "[unknown]", " 12", "a 1\nb"][..])
            .prop_map(str::to_owned),
    ]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..1000u64, 1 => any::<u64>()]
}

fn record() -> impl Strategy<Value = StackRecord> {
    (proptest::option::of(text()), any::<u32>(), text(), text(), vec(text(), 0..6), count()).prop_map(
        |(container, pid, process, sampler, frames, count)| StackRecord {
            container,
            pid,
            process,
            sampler,
            frames,
            count,
        },
    )
}

/// Splitmix64: cheap, seeded, good enough to make frames deflate cannot shrink.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Enough records with random symbol names for a payload of 2 to 4 chunks.
fn bulk_records() -> impl Strategy<Value = Vec<StackRecord>> {
    (any::<u64>(), 450..900usize).prop_map(|(mut seed, n)| {
        (0..n)
            .map(|i| {
                let depth = 1 + splitmix(&mut seed) % 4;
                let frames = (0..depth).map(|_| format!("fn_{:016x}", splitmix(&mut seed))).collect();
                StackRecord {
                    container: (i % 3 != 0).then(|| format!("{:016x}", i % 7)),
                    pid: 1000 + (i % 5) as u32,
                    process: format!("proc{}", i % 5),
                    sampler: "ebpf".into(),
                    frames,
                    count: 1 + splitmix(&mut seed) % 1000,
                }
            })
            .collect()
    })
}

fn header() -> impl Strategy<Value = Header> {
    let target = (text(), vec(any::<u32>(), 0..3)).prop_map(|(target, pids)| TargetReport { target, pids });
    (text(), text(), text(), any::<u64>(), any::<u64>(), any::<u64>(), vec(target, 0..3)).prop_map(
        |(agent_version, node, kernel, started_unix_ms, duration_ms, frequency_hz, targets)| Header {
            agent_version,
            node,
            kernel,
            started_unix_ms,
            duration_ms,
            frequency_hz,
            targets,
            ..Header::default()
        },
    )
}

#[derive(Clone, Debug)]
enum Note {
    Progress(Progress),
    Warning(Warning),
}

fn note() -> impl Strategy<Value = Note> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(elapsed_ms, samples, processes)| {
            Note::Progress(Progress { elapsed_ms, samples, processes })
        }),
        (text(), proptest::option::of(any::<u32>()), text()).prop_map(|(code, pid, message)| Note::Warning(Warning {
            code: WarningCode::from(code.as_str()),
            pid,
            message
        })),
    ]
}

/// What the agent sent and what the decoder must give back.
#[derive(Clone, Debug)]
struct Sent {
    lines: Vec<String>,
    expected: NodeResult,
}

impl Sent {
    fn new(header: Header, notes: Vec<Note>, records: Vec<StackRecord>, lost_samples: u64) -> Self {
        let mut lines = vec![Encoder.header(&header)];
        let mut warnings = Vec::new();
        let mut last_progress = None;
        for note in notes {
            match note {
                Note::Progress(p) => {
                    lines.push(Encoder.progress(&p));
                    last_progress = Some(p);
                }
                Note::Warning(w) => {
                    lines.push(Encoder.warning(&w));
                    warnings.push(w);
                }
            }
        }
        let payload = Encoder.payload(&records, lost_samples);
        let chunks = payload.len() as u64 - 1;
        lines.extend(payload);
        // Byte count and CRC are those of the payload text, which this test does not redo.
        let written: Trailer = serde_json::from_str(lines.last().unwrap().strip_prefix("EAGLE1 T ").unwrap()).unwrap();
        let trailer = Trailer {
            samples: records.iter().fold(0u64, |sum, r| sum.saturating_add(r.count)),
            stacks: records.len() as u64,
            chunks,
            lost_samples,
            ..written
        };
        let records: Vec<StackRecord> = records.iter().map(sanitized).collect();
        // Text that reaches a terminal reads back without control characters.
        let header = Header {
            agent_version: printable(&header.agent_version),
            node: printable(&header.node),
            kernel: printable(&header.kernel),
            targets: header
                .targets
                .iter()
                .map(|t| TargetReport { target: printable(&t.target), pids: t.pids.clone() })
                .collect(),
            ..header
        };
        let warnings = warnings
            .into_iter()
            .map(|w| Warning {
                message: printable(&w.message),
                code: match w.code {
                    WarningCode::Other(c) => WarningCode::Other(printable(&c)),
                    code => code,
                },
                ..w
            })
            .collect();
        Sent {
            lines,
            expected: NodeResult {
                header,
                warnings,
                last_progress,
                stacks: Payload::from_records(&records),
                trailer,
                net: None,
            },
        }
    }

    fn text(&self) -> String {
        join(&self.lines)
    }

    fn kinds(&self) -> Vec<char> {
        self.lines.iter().map(|l| kind(l)).collect()
    }

    fn indices_of(&self, kinds: &str) -> Vec<usize> {
        self.kinds().iter().enumerate().filter(|(_, k)| kinds.contains(**k)).map(|(i, _)| i).collect()
    }

    fn trailer_index(&self) -> usize {
        self.lines.len() - 1
    }
}

fn sent_with(records: impl Strategy<Value = Vec<StackRecord>>) -> impl Strategy<Value = Sent> {
    (header(), vec(note(), 0..5), records, count())
        .prop_map(|(header, notes, records, lost)| Sent::new(header, notes, records, lost))
}

fn sent() -> impl Strategy<Value = Sent> {
    sent_with(vec(record(), 0..12))
}

fn sent_small_or_big() -> impl Strategy<Value = Sent> {
    sent_with(prop_oneof![3 => vec(record(), 0..12), 1 => bulk_records()])
}

fn sent_multi_chunk() -> impl Strategy<Value = Sent> {
    sent_with(bulk_records())
}

/// Lines that are not ours: anything without a line break that does not start with
/// `EAGLE<digits><space>`, with some near misses.
fn noise() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[^\n]{0,40}",
        1 => "(EAGLE|eagle|EAGLE1|EAGLES| EAGLE1|EAGLE 1|EAGLE1\t|xEAGLE1 )[^\n]{0,20}",
        1 => select(&["", "EAGLE", "EAGLE1", "EAGLE1\tD 0 AAAA", "EAGLE 1 T {}", "EAGLEONE H {}", "\r"][..])
            .prop_map(str::to_owned),
    ]
    .prop_filter("a protocol line is not noise", |l| !is_protocol(l))
}

// ---------------------------------------------------------------------------------------------
// The model: what the decoder must do, written independently of it

/// The documented sanitization of a record (see `StackRecord`).
fn sanitized(r: &StackRecord) -> StackRecord {
    let field = |s: &str| -> String { s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect() };
    let frame = |f: &String| -> String {
        if f.is_empty() {
            "[unknown]".into()
        } else {
            f.chars()
                .map(|c| match c {
                    ';' => ':',
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect()
        }
    };
    StackRecord {
        container: r.container.as_deref().map(field).filter(|c| c != "-"),
        pid: r.pid,
        process: field(&r.process),
        sampler: field(&r.sampler),
        frames: r.frames.iter().map(frame).collect(),
        count: r.count,
    }
}

fn is_protocol(line: &str) -> bool {
    let line = line.trim_end_matches(['\r', '\n']);
    line.strip_prefix("EAGLE").is_some_and(|rest| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(' ')
    })
}

/// `H`, `P`, `W`, `D`, `T` for our lines, `-` for noise.
fn kind(line: &str) -> char {
    if is_protocol(line) {
        line.split(' ').nth(1).and_then(|k| k.chars().next()).unwrap_or('?')
    } else {
        '-'
    }
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn decode(text: &str) -> Result<NodeResult, DecodeError> {
    common::decode(text)
}

// ---------------------------------------------------------------------------------------------
// Round trip

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(sent in sent()) {
        prop_assert_eq!(decode(&sent.text()), Ok(sent.expected.clone()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn events_come_in_stream_order(sent in sent()) {
        let mut decoder = Decoder::new();
        let mut next_chunk = 0;
        for (line, kind) in sent.lines.iter().zip(sent.kinds()) {
            let event = decoder.feed_line(line).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match (kind, event) {
                ('H', Some(Event::Header(h))) => prop_assert_eq!(&h, &sent.expected.header),
                ('P', Some(Event::Progress(_))) | ('W', Some(Event::Warning(_))) => {}
                ('D', Some(Event::Chunk(seq))) => {
                    prop_assert_eq!(seq, next_chunk);
                    next_chunk += 1;
                }
                ('T', Some(Event::Trailer(t))) => prop_assert_eq!(&t, &sent.expected.trailer),
                (kind, event) => prop_assert!(false, "`{}` line gave {:?}", kind, event),
            }
        }
        prop_assert_eq!(decoder.finish(), Ok(sent.expected));
    }

    /// Every line is one line, and payload lines stay under the 16 KiB at which runtimes split.
    #[test]
    fn encoded_lines_are_single_and_chunks_short(sent in sent()) {
        for line in &sent.lines {
            prop_assert!(!line.contains(['\n', '\r']), "{:?}", line);
            prop_assert!(is_protocol(line));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn round_trip_multi_chunk(sent in sent_multi_chunk()) {
        let chunks = sent.indices_of("D");
        prop_assert!(chunks.len() >= 2, "only {} chunks", chunks.len());
        for &i in &chunks {
            prop_assert!(sent.lines[i].len() < 16 * 1024, "chunk line of {} bytes", sent.lines[i].len());
        }
        prop_assert_eq!(decode(&sent.text()), Ok(sent.expected.clone()));
    }

    #[test]
    fn swapped_chunks_fail(sent in sent_multi_chunk(), a in any::<Index>(), b in any::<Index>()) {
        let chunks = sent.indices_of("D");
        prop_assert!(chunks.len() >= 2, "only {} chunks", chunks.len());
        let (a, b) = (chunks[a.index(chunks.len())], chunks[b.index(chunks.len())]);
        prop_assume!(a != b);
        let mut lines = sent.lines.clone();
        lines.swap(a, b);
        let (first, second) = (a.min(b), a.max(b));
        let expected = first as u64 - chunks[0] as u64;
        let found = second as u64 - chunks[0] as u64;
        prop_assert_eq!(
            decode(&join(&lines)),
            Err(DecodeError::ChunkOutOfOrder { line: first + 1, expected, found })
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Noise and line endings

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn noise_anywhere_is_ignored(sent in sent(), noise in vec((any::<Index>(), noise()), 0..12)) {
        let mut lines = sent.lines.clone();
        for (at, line) in noise {
            lines.insert(at.index(lines.len() + 1), line);
        }
        prop_assert_eq!(decode(&join(&lines)), Ok(sent.expected));
    }

    #[test]
    fn crlf_line_endings_are_ignored(sent in sent()) {
        let crlf: String = sent.lines.iter().map(|l| format!("{l}\r\n")).collect();
        prop_assert_eq!(decode(&crlf), Ok(sent.expected.clone()));
        prop_assert_eq!(common::decode_by_line(&crlf), Ok(sent.expected));
    }

    /// Errors say which log line is wrong, counting the noise lines: the user looks it up there.
    #[test]
    fn error_line_numbers_count_noise(sent in sent(), noise in vec((any::<Index>(), noise()), 0..12)) {
        let mut lines = sent.lines.clone();
        for (at, line) in noise {
            lines.insert(at.index(lines.len() + 1), line);
        }
        let header = lines[lines.iter().position(|l| kind(l) == 'H').unwrap()].clone();
        let at = lines.iter().position(|l| kind(l) == 'T').unwrap();
        lines[at] = header;
        prop_assert_eq!(decode(&join(&lines)), Err(DecodeError::DuplicateHeader { line: at + 1 }));
    }
}

// ---------------------------------------------------------------------------------------------
// Damage

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A log cut at any line boundary before the trailer is refused, and says it was cut.
    #[test]
    fn cut_at_any_line_boundary_fails(sent in sent_small_or_big(), noise in vec((any::<Index>(), noise()), 0..6)) {
        let mut lines = sent.lines.clone();
        for (at, line) in noise {
            lines.insert(at.index(lines.len() + 1), line);
        }
        let trailer = lines.iter().position(|l| kind(l) == 'T').unwrap();
        for cut in 0..=trailer {
            let kept = &lines[..cut];
            let chunks = kept.iter().filter(|l| kind(l) == 'D').count() as u64;
            let expected = if kept.iter().any(|l| kind(l) == 'H') {
                DecodeError::Truncated { chunks }
            } else {
                DecodeError::Empty
            };
            prop_assert_eq!(decode(&join(kept)), Err(expected), "cut before line {}", cut + 1);
        }
    }

    /// Also in the middle of a line (a log cut by size is cut anywhere).
    #[test]
    fn cut_anywhere_before_the_end_of_the_trailer_fails(sent in sent_small_or_big(), at in any::<Index>()) {
        let text = sent.text();
        let end = text.len() - 1; // the trailer's line break is not needed
        let cut = (0..=at.index(end)).rev().find(|&i| text.is_char_boundary(i)).unwrap();
        let result = decode(&text[..cut]);
        prop_assert!(result.is_err(), "cut at byte {} of {} decoded", cut, end);
    }

    /// The stream minus any one of its header, chunk or trailer lines is refused.
    #[test]
    fn lost_line_fails(sent in sent_small_or_big(), which in any::<Index>()) {
        let essential = sent.indices_of("HDT");
        let lost = essential[which.index(essential.len())];
        let mut lines = sent.lines.clone();
        lines.remove(lost);
        prop_assert!(decode(&join(&lines)).is_err(), "without line {} ({})", lost + 1, sent.kinds()[lost]);
    }

    /// Losing progress or warning lines loses only those: the records are whole.
    #[test]
    fn lost_progress_or_warning_keeps_the_records(sent in sent(), which in any::<Index>()) {
        let notes = sent.indices_of("PW");
        prop_assume!(!notes.is_empty());
        let mut lines = sent.lines.clone();
        lines.remove(notes[which.index(notes.len())]);
        let result = decode(&join(&lines)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(result.records(), sent.expected.records());
        prop_assert_eq!(result.trailer, sent.expected.trailer);
    }

    /// A header, chunk or trailer line seen twice is refused.
    #[test]
    fn doubled_line_fails(sent in sent_small_or_big(), which in any::<Index>(), to in any::<Index>()) {
        let essential = sent.indices_of("HDT");
        let doubled = essential[which.index(essential.len())];
        let mut lines = sent.lines.clone();
        let copy = lines[doubled].clone();
        lines.insert(to.index(lines.len() + 1), copy);
        prop_assert!(decode(&join(&lines)).is_err(), "line {} ({}) doubled", doubled + 1, sent.kinds()[doubled]);
    }

    /// Moving one line elsewhere: if the order of header, chunks and trailer changed, or a line
    /// now comes before the header or after the trailer, the stream is refused; if only progress
    /// and warnings moved between header and trailer, the records are whole.
    #[test]
    fn moved_line_fails_or_keeps_the_records(sent in sent_small_or_big(), from in any::<Index>(), to in any::<Index>()) {
        let mut lines = sent.lines.clone();
        let line = lines.remove(from.index(lines.len()));
        lines.insert(to.index(lines.len() + 1), line);
        let order = |lines: &[String]| -> Vec<String> { lines.iter().filter(|l| "HDT".contains(kind(l))).cloned().collect() };
        let harmless = order(&lines) == order(&sent.lines)
            && lines.first().map(|l| kind(l)) == Some('H')
            && lines.last().map(|l| kind(l)) == Some('T');
        match decode(&join(&lines)) {
            Ok(result) => {
                prop_assert!(harmless, "a damaging move decoded");
                prop_assert_eq!(result.records(), sent.expected.records());
            }
            Err(e) => prop_assert!(!harmless, "a harmless move failed: {}", e),
        }
    }

    /// One character of a chunk line changed (to anything, a line break included) never changes
    /// the result: the decoder refuses it or, when the change gave another deflate encoding of
    /// the same text (see `one_character_changes_of_a_chunk`), returns exactly what was sent.
    #[test]
    fn changed_chunk_character_never_changes_the_result(
        sent in sent_small_or_big(),
        which in any::<Index>(),
        at in any::<Index>(),
        to in any::<char>(),
    ) {
        let chunks = sent.indices_of("D");
        let line = chunks[which.index(chunks.len())];
        let chars: Vec<char> = sent.lines[line].chars().collect();
        let at = at.index(chars.len());
        prop_assume!(chars[at] != to);
        let mut lines = sent.lines.clone();
        lines[line] = chars[..at].iter().chain([&to]).chain(&chars[at + 1..]).collect();
        match decode(&join(&lines)) {
            Err(_) => {}
            Ok(result) => prop_assert_eq!(result, sent.expected, "character {} of line {} changed to {:?}", at, line + 1, to),
        }
    }

    /// After the first error the decoder keeps it, whatever comes next.
    #[test]
    fn errors_are_sticky(sent in sent(), more in vec(prop_oneof![noise(), Just(String::new())], 0..4), which in any::<Index>()) {
        let mut decoder = Decoder::new();
        let mut lines = sent.lines.clone();
        lines.insert(0, sent.lines[sent.trailer_index()].clone()); // a trailer before the header
        let first = decoder.feed_line(&lines[0]).unwrap_err();
        prop_assert_eq!(&first, &DecodeError::NoHeader { line: 1, kind: 'T' });
        let rest = sent.lines.iter().chain(&more);
        for line in rest.skip(which.index(2)) {
            prop_assert_eq!(decoder.feed_line(line), Err(first.clone()));
        }
        prop_assert_eq!(decoder.finish(), Err(first));
    }
}

/// Every single-character change of a small chunk line, exhaustively. The checksum covers the
/// payload text, not the deflate bytes, so a change that leaves the text as it was passes: the
/// unused bits of the last byte, or a back-reference redirected to an identical earlier string.
/// Those must give back exactly what was sent; every other change must be refused.
#[test]
fn one_character_changes_of_a_chunk() {
    let records: Vec<StackRecord> = (0..6)
        .map(|i| StackRecord {
            container: (i % 2 == 0).then(|| format!("c{i}")),
            pid: 100 + i,
            process: format!("proc{i}"),
            sampler: "ebpf".into(),
            frames: vec!["main".into(), format!("work{i}"), "[k] do_syscall_64".into()],
            count: u64::from(i) * 7 + 1,
        })
        .collect();
    let sent = Sent::new(Header::default(), Vec::new(), records, 3);
    let chunk = sent.indices_of("D")[0];
    let original = sent.lines[chunk].clone();
    let replacements: Vec<char> =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ !\n\té".chars().collect();
    let (mut refused, mut same) = (0, 0);
    for (at, was) in original.char_indices() {
        for &to in replacements.iter().filter(|&&c| c != was) {
            let mut lines = sent.lines.clone();
            lines[chunk].replace_range(at..at + was.len_utf8(), to.encode_utf8(&mut [0; 4]));
            match decode(&join(&lines)) {
                Err(_) => refused += 1,
                Ok(result) => {
                    assert_eq!(result, sent.expected, "byte {at} of the chunk line changed to {to:?}");
                    same += 1;
                }
            }
        }
    }
    assert!(refused > 50 * same, "{refused} changes refused, {same} accepted");
}
