//! Real result-stream logs in `tests/data/stream/`, written once by the encoder and kept as files,
//! so a change that stops old logs from decoding, or decodes them differently, fails here.
//!
//! `NAME.log` decodes to `NAME.folded` (records as `process;frame;frame count`, sorted) and
//! `NAME.meta` (everything else), or fails with an error whose message contains `NAME.err`.

mod common;

use common::{assert_text_eq, data_dir, decode, decode_by_line, read, render_folded, render_meta, stems};
use eagle_proto::{Decoder, Encoder, Event};

fn fixture(name: &str, ext: &str) -> std::path::PathBuf {
    data_dir("stream").join(format!("{name}.{ext}"))
}

fn check_ok(name: &str) {
    let log = read(&fixture(name, "log"));
    let result = decode(&log).unwrap_or_else(|e| panic!("{name}.log does not decode: {e}"));
    assert_eq!(decode_by_line(&log), Ok(result.clone()), "{name}.log: feed_line disagrees with feed_text");
    assert_text_eq(&format!("{name}.folded"), &read(&fixture(name, "folded")), &render_folded(&result.records()));
    assert_text_eq(&format!("{name}.meta"), &read(&fixture(name, "meta")), &render_meta(&result));
}

fn check_err(name: &str) {
    let log = read(&fixture(name, "log"));
    let expected = read(&fixture(name, "err"));
    let expected = expected.trim_end();
    assert!(!expected.is_empty(), "{name}.err is empty");
    let error = match decode(&log) {
        Ok(result) => {
            panic!("{name}.log decoded ({} records) but should fail with: {expected}", result.records().len())
        }
        Err(e) => e,
    };
    let message = error.to_string();
    assert!(message.contains(expected), "{name}.log failed with\n  {message}\nwhich does not contain\n  {expected}");
    assert_eq!(decode_by_line(&log), Err(error), "{name}.log: feed_line disagrees with feed_text");
}

/// One test per fixture, and the list of names, so that a fixture without a test is noticed.
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

/// Logs that decode.
mod ok {
    fixtures!(check_ok:
        good,                          // noise interleaved everywhere, 3 chunks, 2 warnings
        good_crlf,                     // every line ends in CRLF
        empty_payload,                 // no stacks: still one chunk and a trailer
        sanitized,                     // separators, control characters, unicode, empty frames
        trailer_without_lost_samples,  // an older agent's trailer
        unknown_fields,                // a newer agent's extra JSON fields are ignored
    );
}

/// Logs that must be refused.
mod err {
    fixtures!(check_err:
        empty,
        noise_only,
        truncated,
        truncated_before_payload,
        log_rotated,
        chunk_missing,
        chunks_reordered,
        last_chunk_missing,
        chunk_number_not_a_number,
        corrupt_base64,
        corrupt_deflate,
        crc_mismatch,
        payload_not_records,
        payload_not_utf8,
        bytes_after_deflate_end,
        payload_longer_than_announced,
        trailer_payload_bytes_mismatch,
        trailer_chunks_mismatch,
        trailer_stacks_mismatch,
        trailer_samples_mismatch,
        second_header,
        two_runs,
        record_before_header,
        record_after_trailer,
        version_eagle2,
        malformed_json,
        malformed_trailer,
        unknown_record_type,
    );
}

#[test]
fn every_fixture_has_a_test_and_one_expectation() {
    let dir = data_dir("stream");
    let logs = stems(&dir, "log");
    let listed: std::collections::BTreeSet<String> =
        ok::NAMES.iter().chain(err::NAMES).map(|n| n.to_string()).collect();
    assert_eq!(logs, listed, "the .log files and the tests in this file differ");
    for ext in ["folded", "meta", "err"] {
        for stem in stems(&dir, ext) {
            assert!(logs.contains(&stem), "{stem}.{ext} has no {stem}.log");
        }
    }
    for name in ok::NAMES {
        assert!(!fixture(name, "err").exists(), "{name} is expected to decode but has a .err");
    }
    for name in err::NAMES {
        assert!(!fixture(name, "folded").exists(), "{name} is expected to fail but has a .folded");
    }
}

/// The big fixture must keep exercising what it is there for.
#[test]
fn good_log_is_multi_chunk_and_noisy() {
    let log = read(&fixture("good", "log"));
    let mut decoder = Decoder::new();
    let mut chunks = 0;
    let mut noise = 0;
    for line in log.lines() {
        match decoder.feed_line(line).expect("good.log decodes") {
            Some(Event::Chunk(_)) => chunks += 1,
            Some(_) => {}
            None => noise += 1,
        }
    }
    assert!(chunks >= 3, "good.log has {chunks} chunks");
    assert!(noise >= 10, "good.log has {noise} noise lines");
    assert!(log.contains('\u{fffd}'), "good.log lost its invalid UTF-8 noise line");
}

/// Everything but the deflate bytes must be written exactly as the old agent wrote it: the JSON
/// lines, and the payload text (re-encoding the decoded records gives the same trailer, whose
/// byte count and CRC are those of the payload text). Deflate output may change with the
/// compressor's version without breaking anything, so the `D` lines are not compared.
#[test]
fn encoder_still_writes_good_log() {
    let log = read(&fixture("good", "log"));
    let mut decoder = Decoder::new();
    let mut trailer_line = None;
    for line in log.lines() {
        let again = match decoder.feed_line(line).expect("good.log decodes") {
            Some(Event::Header(h)) => Encoder.header(&h),
            Some(Event::Progress(p)) => Encoder.progress(&p),
            Some(Event::Warning(w)) => Encoder.warning(&w),
            Some(Event::Trailer(_)) => {
                trailer_line = Some(line.to_owned());
                continue;
            }
            Some(Event::Chunk(_) | Event::Net) | None => continue,
        };
        assert_eq!(again, line);
    }
    let result = decoder.finish().expect("good.log decodes");
    let payload = Encoder.payload(&result.records(), result.trailer.lost_samples);
    assert_eq!(payload.len() as u64, result.trailer.chunks + 1);
    assert_eq!(payload.last(), trailer_line.as_ref());
}
