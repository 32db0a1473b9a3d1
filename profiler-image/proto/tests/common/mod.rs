//! Shared by the fixture tests: where the fixtures live, how a decoded stream is rendered for
//! comparison, and a line diff for when it does not match (after inferno's `tests/common`).

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use eagle_proto::{DecodeError, Decoder, NodeResult, StackRecord};

/// `tests/data/<kind>`.
pub fn data_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(kind)
}

/// Reads a fixture, failing the test with the path if it is missing.
pub fn read(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // Pod logs are bytes: noise lines may be anything, so the fixtures may hold invalid UTF-8.
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The stems of the files in `dir` whose name ends in `.ext`.
pub fn stems(dir: &Path, ext: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| p.file_stem().expect("file stem").to_string_lossy().into_owned())
        .collect()
}

/// Decodes a whole log with [`Decoder::feed_text`], as the CLI does with a fetched log.
pub fn decode(log: &str) -> Result<NodeResult, DecodeError> {
    let mut decoder = Decoder::new();
    // An error here is kept by the decoder and returned again by `finish`.
    let _ = decoder.feed_text(log);
    decoder.finish()
}

/// Decodes a log one raw line at a time (line breaks left on, as a follower of a live log may
/// pass them), which must agree with [`decode`].
pub fn decode_by_line(log: &str) -> Result<NodeResult, DecodeError> {
    let mut decoder = Decoder::new();
    for line in log.split_inclusive('\n') {
        if decoder.feed_line(line).is_err() {
            break;
        }
    }
    decoder.finish()
}

/// The records as folded lines, `process;frame;frame count`, one per record (not merged, so a
/// lost or doubled record shows), sorted.
pub fn render_folded(records: &[StackRecord]) -> String {
    let mut lines: Vec<String> = records
        .iter()
        .map(|r| {
            let mut line = r.process.clone();
            for frame in &r.frames {
                line.push(';');
                line.push_str(frame);
            }
            format!("{line} {}", r.count)
        })
        .collect();
    lines.sort();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Everything of a result that the folded rendering leaves out.
pub fn render_meta(result: &NodeResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "header: {}", json(&result.header));
    for w in &result.warnings {
        let _ = writeln!(out, "warning: {}", json(w));
    }
    match &result.last_progress {
        Some(p) => {
            let _ = writeln!(out, "last progress: {}", json(p));
        }
        None => out.push_str("last progress: none\n"),
    }
    let _ = writeln!(out, "trailer: {}", json(&result.trailer));
    let _ = writeln!(out, "records: {}", result.records().len());
    let distinct = |field: &dyn Fn(&StackRecord) -> String| {
        let values: BTreeSet<String> = result.records().iter().map(field).collect();
        values.into_iter().collect::<Vec<_>>().join(" ")
    };
    let _ = writeln!(out, "containers: {}", distinct(&|r| format!("{:?}", r.container)));
    let pids: BTreeSet<u32> = result.records().iter().map(|r| r.pid).collect();
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = writeln!(out, "pids: {}", pids.join(" "));
    let _ = writeln!(out, "samplers: {}", distinct(&|r| format!("{:?}", r.sampler)));
    out
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("stream records serialize")
}

/// Panics with a line diff if `actual` is not `expected`.
#[track_caller]
pub fn assert_text_eq(what: &str, expected: &str, actual: &str) {
    if expected != actual {
        panic!("{what} differs (- expected, + actual):\n{}", line_diff(expected, actual));
    }
}

/// A unified-style line diff with two lines of context, from a longest common subsequence.
pub fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..]
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 2;
    let near_change =
        |k: usize| ops[k.saturating_sub(CONTEXT)..(k + CONTEXT + 1).min(ops.len())].iter().any(|(op, _)| *op != ' ');
    let mut out = String::new();
    let mut elided = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            let _ = writeln!(out, "{op} {line:?}");
            elided = false;
        } else if !elided {
            out.push_str("  ...\n");
            elided = true;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        let _ = writeln!(
            out,
            "(final line break: expected {}, actual {})",
            expected.ends_with('\n'),
            actual.ends_with('\n')
        );
    }
    out
}
