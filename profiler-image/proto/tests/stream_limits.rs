//! The stream's hard limits: what the agent keeps within them, and what the decoder does with a
//! stream (damaged, or forged by a custom image) that exceeds them.

use std::io::Write as _;

use base64::Engine as _;
use eagle_proto::stream::{FOLDED_AWAY_FRAME, WARNING_STACKS_FOLDED, WARNING_WARNINGS_DROPPED};
use eagle_proto::{DecodeError, Decoder, Encoder, Header, Limits, StackRecord, Trailer, Warning, WarningCode};

fn header_line() -> String {
    Encoder.header(&Header { node: "n1".into(), ..Header::default() })
}

/// `n` distinct stacks of two processes; stack `i` has `1 + i % 97` samples. Frames are hashes,
/// so the payload compresses poorly, as real symbol names of big programs do.
fn records(n: usize) -> Vec<StackRecord> {
    (0..n)
        .map(|i| StackRecord {
            container: Some(format!("c{}", i % 2)),
            pid: 100 + (i % 2) as u32,
            process: format!("p{}", i % 2),
            sampler: "ebpf".into(),
            frames: (0..8)
                .map(|d| format!("f{:016x}", (i as u64 * 8 + d).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                .collect(),
            count: 1 + (i % 97) as u64,
        })
        .collect()
}

fn decode(lines: &[String], limits: Limits) -> Result<eagle_proto::NodeResult, DecodeError> {
    let mut decoder = Decoder::with_limits(limits);
    for line in lines {
        if decoder.feed_line(line).is_err() {
            break;
        }
    }
    decoder.finish()
}

#[test]
fn a_payload_over_its_budget_folds_its_smallest_stacks_and_keeps_every_sample() {
    let records = records(20_000);
    let total: u64 = records.iter().map(|r| r.count).sum();
    let budget = 64 * 1024;
    let mut lines = vec![header_line()];
    lines.extend(Encoder.payload_within(&records, 3, budget));
    let compressed: usize = lines
        .iter()
        .filter_map(|l| l.strip_prefix("EAGLE1 D "))
        .map(|l| base64::engine::general_purpose::STANDARD.decode(l.split_once(' ').unwrap().1).unwrap().len())
        .sum();
    assert!(compressed <= budget, "{compressed} compressed bytes for a budget of {budget}");

    let result = decode(&lines, Limits::DEFAULT).expect("a folded payload decodes");
    assert_eq!(result.records().iter().map(|r| r.count).sum::<u64>(), total, "samples lost by folding");
    assert_eq!(result.trailer.lost_samples, 3);
    let warning = result.warnings.iter().find(|w| w.code == WARNING_STACKS_FOLDED).expect("a stacks-folded warning");
    assert!(warning.message.contains("smallest stacks"), "{}", warning.message);
    // One folded stack per process, each under its own process.
    let decoded = result.records();
    let folded: Vec<&StackRecord> = decoded.iter().filter(|r| r.frames == [FOLDED_AWAY_FRAME]).collect();
    assert_eq!(folded.len(), 2, "one folded stack per process");
    for f in folded {
        assert_eq!(f.process, format!("p{}", f.pid - 100));
    }
    // The biggest stacks are the ones kept whole.
    let mut kept: Vec<u64> =
        result.records().iter().filter(|r| r.frames != [FOLDED_AWAY_FRAME]).map(|r| r.count).collect();
    let mut all: Vec<u64> = records.iter().map(|r| r.count).collect();
    kept.sort_unstable_by(|a, b| b.cmp(a));
    all.sort_unstable_by(|a, b| b.cmp(a));
    assert!(!kept.is_empty() && kept.len() < all.len(), "{} of {} stacks kept", kept.len(), all.len());
    assert_eq!(kept[..], all[..kept.len()], "the kept stacks are not the biggest ones");
}

#[test]
fn a_payload_within_its_budget_is_written_whole() {
    let records = records(100);
    let lines = Encoder.payload(&records, 0);
    assert!(!lines.iter().any(|l| l.starts_with("EAGLE1 W")), "no warning for a payload that fits");
    let mut all = vec![header_line()];
    all.extend(lines);
    assert_eq!(decode(&all, Limits::DEFAULT).unwrap().records(), records);
}

#[test]
fn a_line_over_the_limit_is_refused_with_its_number() {
    let limits = Limits { line_bytes: 1000, ..Limits::DEFAULT };
    let long = format!("EAGLE1 W {{\"code\":\"x\",\"message\":\"{}\"}}", "a".repeat(2000));
    let err = decode(&[header_line(), long], limits).unwrap_err();
    assert_eq!(err, DecodeError::TooLarge { line: 2, what: "a line", limit: 1000 });
    assert!(err.to_string().contains("custom --image"), "{err}");
}

#[test]
fn a_compressed_payload_over_the_limit_is_refused() {
    let limits = Limits { compressed_bytes: 10_000, ..Limits::DEFAULT };
    let mut lines = vec![header_line()];
    lines.extend(Encoder.payload(&records(5_000), 0));
    match decode(&lines, limits) {
        Err(DecodeError::TooLarge { what: "the compressed payload", limit: 10_000, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// A deflate bomb: 1,000 times its size in zeros, its trailer announcing 1 GiB. The decoder
/// refuses it from the trailer alone, before inflating anything.
#[test]
fn a_compression_bomb_is_refused_before_it_is_inflated() {
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..16 {
        deflate.write_all(&zeros).unwrap();
    }
    let bomb = deflate.finish().unwrap();
    let mut lines = vec![header_line()];
    for (seq, chunk) in bomb.chunks(8192).enumerate() {
        lines.push(format!("EAGLE1 D {seq} {}", base64::engine::general_purpose::STANDARD.encode(chunk)));
    }
    let trailer = Trailer {
        samples: 1,
        stacks: 1,
        chunks: bomb.chunks(8192).len() as u64,
        payload_bytes: 1 << 30,
        ..Trailer::default()
    };
    lines.push(format!("EAGLE1 T {}", serde_json::to_string(&trailer).unwrap()));
    match decode(&lines, Limits::DEFAULT) {
        Err(DecodeError::TooLarge { what: "the payload the trailer announces", .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Lying about the size instead makes it corrupt, after inflating one byte past the lie.
    let last = lines.len() - 1;
    let small = Trailer { payload_bytes: 1000, ..trailer };
    lines[last] = format!("EAGLE1 T {}", serde_json::to_string(&small).unwrap());
    match decode(&lines, Limits::DEFAULT) {
        Err(DecodeError::Corrupt { reason }) => assert!(reason.contains("more than the 1000 bytes"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn warnings_past_the_limit_are_counted_not_kept() {
    let limits = Limits { warnings: 3, ..Limits::DEFAULT };
    let mut lines = vec![header_line()];
    for i in 0..10 {
        lines.push(Encoder.warning(&Warning {
            code: WarningCode::ProcessExited,
            pid: Some(i),
            message: "gone".into(),
        }));
    }
    lines.extend(Encoder.payload(&records(1), 0));
    let result = decode(&lines, limits).unwrap();
    assert_eq!(result.warnings.len(), 4);
    let last = result.warnings.last().unwrap();
    assert_eq!(last.code, WARNING_WARNINGS_DROPPED);
    assert!(last.message.starts_with("7 more warnings"), "{}", last.message);
}

/// A process reported again after an exec is shown once, under the program it ran last.
#[test]
fn a_process_reported_again_after_an_exec_is_shown_once() {
    use eagle_proto::WarningCode;
    let info = |pid: u32, name: &str| Warning {
        code: WarningCode::InfoSampler,
        pid: Some(pid),
        message: format!("{name} ({pid}): native, sampled by ebpf"),
    };
    let mut lines = vec![header_line()];
    for w in [info(7, "sh"), info(8, "other"), info(7, "groundtruth")] {
        lines.push(Encoder.warning(&w));
    }
    lines.extend(Encoder.payload(&records(1), 0));
    let result = decode(&lines, Limits::DEFAULT).unwrap();
    let shown: Vec<&str> = result.shown_warnings().map(|w| w.message.as_str()).collect();
    assert_eq!(shown, ["other (8): native, sampled by ebpf", "groundtruth (7): native, sampled by ebpf"]);
}
