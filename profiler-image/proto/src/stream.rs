//! Encoding and decoding of the result stream (see the crate docs for the line grammar).
//! One file (about 600 lines with its tests) on purpose: the encoder and the decoder of one
//! format, and the limits both keep, read side by side.

use std::collections::hash_map::{Entry, HashMap};
use std::io::{Read, Write};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde::{Deserialize, Serialize};

use crate::agent::ProfileMode;
use crate::contract::WarningCode;
use crate::folded::push_frame;
use crate::net::{NetLimits, NetPayload};

/// Protocol version written by this build and the only one it decodes.
pub const VERSION: u32 = 1;
const PREFIX: &str = "EAGLE";
const MARKER: &str = "EAGLE1 ";
/// Compressed bytes per payload line. Base64 makes that ~11 KiB of text, under the 16 KiB at
/// which container runtimes split a log line into partial entries.
pub const CHUNK_BYTES: usize = 8 * 1024;

/// Hard limits of a stream, on both sides. The agent keeps its output within them; the CLI
/// refuses (or, for warnings, trims) what exceeds them, so a damaged log, a custom `--image` or
/// a forged run cannot make it allocate without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest line the decoder accepts (and a log reader should read): the header with a
    /// node's targets is the longest record an agent writes, far below this.
    pub line_bytes: usize,
    /// Compressed payload, summed over its chunks.
    pub compressed_bytes: u64,
    /// Payload after inflating: what a trailer may announce.
    pub payload_bytes: u64,
    /// Warnings kept; later ones are counted and summed up in one last warning.
    pub warnings: usize,
    /// The network record (`N`).
    pub net: NetLimits,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        line_bytes: 1 << 20,
        // The agent keeps its payload under `PAYLOAD_BUDGET_BYTES`; twice that leaves room for
        // an older or newer agent without letting a hostile one in.
        compressed_bytes: 2 * PAYLOAD_BUDGET_BYTES as u64,
        payload_bytes: 512 << 20,
        warnings: 10_000,
        net: NetLimits::DEFAULT,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Compressed payload an agent writes at most. Base64 makes it 4/3 larger in the log: 8 MiB,
/// under the kubelet's default log rotation size (10 MiB) with room for the header, progress
/// and warnings. A larger profile keeps its biggest stacks whole and folds the rest (see
/// [`Encoder::payload`]).
pub const PAYLOAD_BUDGET_BYTES: usize = 6 << 20;

/// The frame that stands for stacks folded away to keep a payload within its budget.
pub const FOLDED_AWAY_FRAME: &str = "[stacks folded: stream size limit]";

/// Warning code of a payload whose smallest stacks were folded away.
pub const WARNING_STACKS_FOLDED: WarningCode = WarningCode::StacksFolded;
/// Warning code that stands for the warnings past [`Limits::warnings`].
pub const WARNING_WARNINGS_DROPPED: WarningCode = WarningCode::WarningsDropped;

/// What the agent says about itself and its window, before sampling starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub agent_version: String,
    pub node: String,
    pub kernel: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub frequency_hz: u64,
    /// Each requested target and the processes it resolved to when sampling started.
    pub targets: Vec<TargetReport>,
    /// What the counts measure; absent for CPU, so a CPU stream is what it was before modes.
    #[serde(default, skip_serializing_if = "ProfileMode::is_cpu")]
    pub mode: ProfileMode,
    /// Off-CPU modes: blocks shorter than this were not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_block_us: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReport {
    /// As requested: `pid:42`, `container:<id>`, `pod:<uid>`.
    pub target: String,
    pub pids: Vec<u32>,
}

/// Sent about once a second while sampling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub elapsed_ms: u64,
    pub samples: u64,
    pub processes: u64,
}

/// Something the user should know about the result: a process exited, a stack was lost, a
/// sampler failed for one pid. `code` is stable and machine-readable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub code: WarningCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub message: String,
}

/// Closes the stream; the decoder checks every field against what it received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub samples: u64,
    pub stacks: u64,
    pub chunks: u64,
    pub payload_bytes: u64,
    pub crc32: u32,
    /// Samples the kernel side took but could not keep (stack-map collisions, full maps).
    #[serde(default)]
    pub lost_samples: u64,
    /// Network records (`N`) sent: 0 or 1. Written only when 1, so a CPU-only stream reads as
    /// before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub net: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One aggregated stack of one process.
///
/// The payload is line- and tab-framed, so a record is sanitized on the way in and reads back
/// as: control characters in `container`, `process` and `sampler` become spaces; frames as
/// [`push_frame`](crate::folded::push_frame) writes them (`;` becomes `:`, control characters
/// spaces, an empty frame `[unknown]`); and `Some("-")` as container reads back as `None`, since
/// `-` is how the payload says "no container".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackRecord {
    /// Container id the process belongs to, when the target was a container or pod.
    pub container: Option<String>,
    pub pid: u32,
    pub process: String,
    /// Which sampler produced it: `ebpf`, `py-spy`, ...
    pub sampler: String,
    /// Outermost frame first.
    pub frames: Vec<String>,
    pub count: u64,
}

/// Writes stream lines (without line breaks). Holds no state: the payload is written in one go
/// at the end of the window, so its chunk numbering and trailer come from one call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Encoder;

impl Encoder {
    pub fn header(&self, header: &Header) -> String {
        json_line('H', header)
    }

    pub fn progress(&self, progress: &Progress) -> String {
        json_line('P', progress)
    }

    pub fn warning(&self, warning: &Warning) -> String {
        json_line('W', warning)
    }

    /// The payload chunk lines followed by the trailer line, within [`PAYLOAD_BUDGET_BYTES`].
    pub fn payload(&self, records: &[StackRecord], lost_samples: u64) -> Vec<String> {
        self.payload_within(records, lost_samples, PAYLOAD_BUDGET_BYTES)
    }

    /// [`Encoder::payload`] preceded by the network record, which the trailer counts. The
    /// record is first kept within [`NetLimits::DEFAULT`] ([`NetPayload::fit`]); a
    /// `stacks-folded` warning says so when rows had to be folded.
    pub fn payload_with_net(&self, records: &[StackRecord], lost_samples: u64, net: &NetPayload) -> Vec<String> {
        let mut net = net.clone();
        let folded = net.fit(&NetLimits::DEFAULT);
        let mut lines = Vec::new();
        if folded > 0 {
            lines.push(self.warning(&Warning {
                code: WARNING_STACKS_FOLDED,
                pid: None,
                message: format!(
                    "the network record was larger than the stream allows: its {folded} quietest peer and route rows are folded into one row per process"
                ),
            }));
        }
        lines.push(json_line('N', &net));
        lines.extend(self.payload_counting(records, lost_samples, PAYLOAD_BUDGET_BYTES, 1));
        lines
    }

    /// [`Encoder::payload`] with a budget of `budget` compressed bytes. When the stacks do not
    /// fit, the ones with the most samples are kept whole and each process's others are folded
    /// into one stack `process;[stacks folded: stream size limit]`: every sample still counts,
    /// for the right process, and a `stacks-folded` warning line (first of the returned lines)
    /// says how many stacks and samples lost their detail.
    pub fn payload_within(&self, records: &[StackRecord], lost_samples: u64, budget: usize) -> Vec<String> {
        self.payload_counting(records, lost_samples, budget, 0)
    }

    /// [`Encoder::payload_within`], with a trailer that counts `net` network records.
    fn payload_counting(&self, records: &[StackRecord], lost_samples: u64, budget: usize, net: u64) -> Vec<String> {
        let (text, compressed) = compress(records);
        if compressed.len() <= budget {
            return self.payload_lines(records, &text, compressed, (lost_samples, net), None);
        }
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by(|&a, &b| records[b].count.cmp(&records[a].count).then(a.cmp(&b)));
        // Keep a share of the stacks proportional to how far over the budget the whole is, and
        // shrink it until the result fits (a few rounds at most: sizes scale near linearly).
        let mut keep = (records.len() as f64 * budget as f64 / compressed.len() as f64 * 0.9) as usize;
        loop {
            let (kept, folded_stacks, folded_samples) = fold_smallest(records, &order, keep);
            let (text, compressed) = compress(&kept);
            if compressed.len() <= budget || keep == 0 {
                let warning = Warning {
                    code: WARNING_STACKS_FOLDED,
                    pid: None,
                    message: format!(
                        "the profile was larger than the stream allows ({} compressed bytes): its {folded_stacks} smallest stacks ({folded_samples} samples) are folded into one `{FOLDED_AWAY_FRAME}` stack per process; a shorter window or a lower frequency keeps them whole",
                        budget
                    ),
                };
                return self.payload_lines(&kept, &text, compressed, (lost_samples, net), Some(warning));
            }
            keep = keep * 3 / 4;
        }
    }

    fn payload_lines(
        &self,
        records: &[StackRecord],
        text: &str,
        compressed: Vec<u8>,
        (lost_samples, net): (u64, u64),
        warning: Option<Warning>,
    ) -> Vec<String> {
        let mut lines: Vec<String> = warning.iter().map(|w| self.warning(w)).collect();
        let chunks = compressed.chunks(CHUNK_BYTES).len();
        lines.extend(
            compressed
                .chunks(CHUNK_BYTES)
                .enumerate()
                .map(|(seq, chunk)| format!("{MARKER}D {seq} {}", BASE64.encode(chunk))),
        );
        let trailer = Trailer {
            samples: total_samples(records),
            stacks: records.len() as u64,
            chunks: chunks as u64,
            payload_bytes: text.len() as u64,
            crc32: crc32fast::hash(text.as_bytes()),
            lost_samples,
            net,
        };
        lines.push(json_line('T', &trailer));
        lines
    }
}

/// The payload text of `records` and its deflated bytes.
fn compress(records: &[StackRecord]) -> (String, Vec<u8>) {
    let mut text = String::new();
    for r in records {
        write_record(&mut text, r);
    }
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(text.as_bytes()).expect("writing to a Vec cannot fail");
    (text, deflate.finish().expect("writing to a Vec cannot fail"))
}

/// The `keep` records with the most samples (by `order`), in their original order, then one
/// folded record per process (and container) for the rest; with how many stacks and samples
/// were folded.
fn fold_smallest(records: &[StackRecord], order: &[usize], keep: usize) -> (Vec<StackRecord>, u64, u64) {
    let mut kept_index: Vec<usize> = order[..keep.min(order.len())].to_vec();
    kept_index.sort_unstable();
    let mut kept: Vec<StackRecord> = kept_index.iter().map(|&i| records[i].clone()).collect();
    let mut folded: Vec<StackRecord> = Vec::new();
    let mut slot: HashMap<(u32, Option<&str>, &str), usize> = HashMap::new();
    let (mut stacks, mut samples) = (0u64, 0u64);
    for &i in &order[keep.min(order.len())..] {
        let r = &records[i];
        stacks += 1;
        samples = samples.saturating_add(r.count);
        match slot.entry((r.pid, r.container.as_deref(), r.sampler.as_str())) {
            Entry::Occupied(e) => folded[*e.get()].count = folded[*e.get()].count.saturating_add(r.count),
            Entry::Vacant(e) => {
                e.insert(folded.len());
                folded.push(StackRecord {
                    container: r.container.clone(),
                    pid: r.pid,
                    process: r.process.clone(),
                    sampler: r.sampler.clone(),
                    frames: vec![FOLDED_AWAY_FRAME.to_owned()],
                    count: r.count,
                });
            }
        }
    }
    kept.extend(folded);
    (kept, stacks, samples)
}

/// The sum of the counts, saturating: a sum past `u64::MAX` must not panic (debug) or wrap
/// (release) on either side of the stream, and both sides compute it the same way.
fn total_samples(records: &[StackRecord]) -> u64 {
    records.iter().fold(0u64, |sum, r| sum.saturating_add(r.count))
}

fn json_line<T: Serialize>(kind: char, value: &T) -> String {
    let json = serde_json::to_string(value).expect("stream records serialize");
    format!("{MARKER}{kind} {json}")
}

/// `container \t pid \t process \t sampler \t frame;frame count \n`
fn write_record(out: &mut String, r: &StackRecord) {
    push_field(out, r.container.as_deref().unwrap_or("-"));
    out.push('\t');
    out.push_str(&r.pid.to_string());
    out.push('\t');
    push_field(out, &r.process);
    out.push('\t');
    push_field(out, &r.sampler);
    out.push('\t');
    for (i, f) in r.frames.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        push_frame(out, f);
    }
    out.push(' ');
    out.push_str(&r.count.to_string());
    out.push('\n');
}

/// `s` with every control character (C0, DEL, C1: what starts a terminal escape sequence) as a
/// space, the way payload fields are sanitized on the way in.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn push_field(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| if c.is_control() { ' ' } else { c }));
}

/// One stack record read in place from a verified payload's text: no allocation per record or
/// frame. The fields are as [`StackRecord`] reads them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackRef<'a> {
    pub container: Option<&'a str>,
    pub pid: u32,
    pub process: &'a str,
    pub sampler: &'a str,
    /// The frames as the payload joins them, outermost first, `;` between them; empty for a
    /// stack without frames.
    pub stack: &'a str,
    pub count: u64,
}

impl<'a> StackRef<'a> {
    /// `container \t pid \t process \t sampler \t frame;frame count`, or `None`.
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.splitn(5, '\t');
        let container = fields.next()?;
        let pid = fields.next()?.parse().ok()?;
        let process = fields.next()?;
        let sampler = fields.next()?;
        let (stack, count) = fields.next()?.rsplit_once(' ')?;
        Some(StackRef {
            container: (container != "-").then_some(container),
            pid,
            process,
            sampler,
            stack,
            count: count.parse().ok()?,
        })
    }

    /// The frames, outermost first.
    pub fn frames(&self) -> impl Iterator<Item = &'a str> {
        // `"".split(';')` would yield one empty frame.
        let stack = self.stack;
        (!stack.is_empty()).then(|| stack.split(';')).into_iter().flatten()
    }

    pub fn to_record(&self) -> StackRecord {
        StackRecord {
            container: self.container.map(str::to_owned),
            pid: self.pid,
            process: self.process.to_owned(),
            sampler: self.sampler.to_owned(),
            frames: self.frames().map(str::to_owned).collect(),
            count: self.count,
        }
    }
}

/// The stack records of a node, kept as the payload text they arrived in, every line of which
/// was checked to be a record: a reader borrows each record ([`Payload::iter`]) instead of the
/// decoder allocating a `String` per frame of every stack (a thousand nodes of 2,000 stacks of
/// 20 frames are 40 million of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    text: String,
    stacks: usize,
}

impl Payload {
    /// The payload of `records` as the encoder writes it (fields and frames sanitized).
    pub fn from_records(records: &[StackRecord]) -> Self {
        let mut text = String::new();
        for r in records {
            write_record(&mut text, r);
        }
        Payload { text, stacks: records.len() }
    }

    /// Checks every line of `text` to be a record, and their counts against the trailer's.
    fn verified(text: String, trailer: &Trailer) -> Result<Self, DecodeError> {
        let mut stacks = 0u64;
        let mut samples = 0u64;
        for (i, line) in text.lines().enumerate() {
            let record = StackRef::parse(line).ok_or_else(|| DecodeError::Corrupt {
                reason: format!("payload line {} is not a stack record", i + 1),
            })?;
            stacks += 1;
            samples = samples.saturating_add(record.count);
        }
        check("stacks", trailer.stacks, stacks)?;
        check("samples", trailer.samples, samples)?;
        Ok(Payload { text, stacks: stacks as usize })
    }

    /// The records, in the order the agent wrote them.
    pub fn iter(&self) -> impl Iterator<Item = StackRef<'_>> {
        self.text.lines().map(|line| StackRef::parse(line).expect("every line was verified to be a record"))
    }

    pub fn len(&self) -> usize {
        self.stacks
    }

    pub fn is_empty(&self) -> bool {
        self.stacks == 0
    }

    /// Each record as an owned [`StackRecord`].
    pub fn to_records(&self) -> Vec<StackRecord> {
        self.iter().map(|r| r.to_record()).collect()
    }
}

/// Why a node's stream cannot be trusted. Every variant says what the user sees and, where it
/// helps, what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no result stream in the log (the agent wrote nothing it could decode)")]
    Empty,
    #[error("line {line}: stream version {version} is not understood by this kubectl-eagle (it reads version {VERSION}): use the same version for the CLI and the agent image")]
    UnsupportedVersion { line: usize, version: String },
    #[error("line {line}: a `{kind}` record came before the header: the start of the log is missing (rotated by the kubelet, or the stream is larger than its log limit)")]
    NoHeader { line: usize, kind: char },
    #[error("line {line}: a second header (two agent runs in one log?)")]
    DuplicateHeader { line: usize },
    #[error("line {line}: record after the trailer")]
    AfterTrailer { line: usize },
    #[error("line {line}: malformed `{kind}` record: {reason}")]
    Malformed { line: usize, kind: char, reason: String },
    #[error("line {line}: payload chunk {found} where chunk {expected} was due (lines lost or reordered)")]
    ChunkOutOfOrder { line: usize, expected: u64, found: u64 },
    #[error("the stream ended without its trailer after {chunks} payload chunks: the log was cut short (agent killed, deadline hit, or log rotated)")]
    Truncated { chunks: u64 },
    #[error("the trailer announces {expected} {what} but {found} arrived: the log is damaged")]
    Mismatch { what: &'static str, expected: u64, found: u64 },
    #[error("the payload is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("line {line}: {what} exceeds the stream's limit of {limit} bytes: this is no stream an eagle-agent of this version writes (a custom --image, or a damaged log)")]
    TooLarge { line: usize, what: &'static str, limit: u64 },
}

/// The trailer of the last stream in the tail of a log (say `tailLines=5`), without decoding
/// the rest: enough to tell how many samples a finished agent delivered, cheaply. The stream
/// itself is only trusted once [`Decoder::finish`] has verified it.
pub fn trailer_in_tail(tail: &str) -> Option<Trailer> {
    tail.lines().rev().find_map(|line| {
        let payload = line.trim_end_matches(['\r', '\n']).strip_prefix(MARKER)?.strip_prefix("T ")?;
        serde_json::from_str(payload).ok()
    })
}

/// One thing the decoder understood, for live progress display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Header(Header),
    Progress(Progress),
    Warning(Warning),
    Chunk(u64),
    /// The network record arrived (it is in [`NodeResult::net`]).
    Net,
    Trailer(Trailer),
}

/// Everything one agent run delivered, verified against its trailer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeResult {
    pub header: Header,
    pub warnings: Vec<Warning>,
    pub last_progress: Option<Progress>,
    /// The stacks, read in place ([`Payload::iter`]).
    pub stacks: Payload,
    pub trailer: Trailer,
    /// The network side of the window, when the agent was asked for it.
    pub net: Option<NetPayload>,
}

impl NodeResult {
    pub fn samples(&self) -> u64 {
        self.trailer.samples
    }

    /// The stacks as owned records (a copy: [`NodeResult::stacks`] reads them in place).
    pub fn records(&self) -> Vec<StackRecord> {
        self.stacks.to_records()
    }

    /// The warnings to show a user: an info record followed by a later one about the same
    /// process (which exec'd another program since) is left out, so each process is reported
    /// once, under the program it ran last.
    pub fn shown_warnings(&self) -> impl Iterator<Item = &Warning> {
        self.warnings.iter().enumerate().filter_map(|(i, w)| {
            let superseded = w.code.is_info()
                && w.pid.is_some()
                && self.warnings[i + 1..].iter().any(|later| later.code == w.code && later.pid == w.pid);
            (!superseded).then_some(w)
        })
    }
}

/// Feeds on log lines, one at a time, and checks the grammar as it goes.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    line: usize,
    warnings_dropped: u64,
    header: Option<Header>,
    warnings: Vec<Warning>,
    last_progress: Option<Progress>,
    compressed: Vec<u8>,
    chunks: u64,
    trailer: Option<Trailer>,
    net: Option<NetPayload>,
    error: Option<DecodeError>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: Limits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// Decodes one line. Lines that are not ours yield `Ok(None)`. After the first error every
    /// later call returns that error again, and so does [`Decoder::finish`].
    pub fn feed_line(&mut self, line: &str) -> Result<Option<Event>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.line += 1;
        let decoded = if line.len() > self.limits.line_bytes {
            Err(DecodeError::TooLarge { line: self.line, what: "a line", limit: self.limits.line_bytes as u64 })
        } else {
            self.decode(line.trim_end_matches(['\r', '\n']))
        };
        match decoded {
            Ok(ev) => Ok(ev),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Feeds every line of `text`; stops at the first error.
    pub fn feed_text(&mut self, text: &str) -> Result<(), DecodeError> {
        text.lines().try_for_each(|l| self.feed_line(l).map(drop))
    }

    fn decode(&mut self, line: &str) -> Result<Option<Event>, DecodeError> {
        let at = self.line;
        let Some(rest) = line.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let version: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if version.is_empty() || !rest[version.len()..].starts_with(' ') {
            return Ok(None); // "EAGLES ..." is someone else's text
        }
        if version != VERSION.to_string() {
            return Err(DecodeError::UnsupportedVersion { line: at, version });
        }
        let body = &line[MARKER.len()..];
        let mut parts = body.splitn(2, ' ');
        let kind = parts.next().unwrap_or_default();
        let payload = parts.next().unwrap_or_default();
        let kind = match kind {
            "H" => 'H',
            "P" => 'P',
            "W" => 'W',
            "D" => 'D',
            "T" => 'T',
            "N" => 'N',
            other => {
                return Err(DecodeError::Malformed {
                    line: at,
                    kind: '?',
                    reason: format!("unknown record type `{other}`"),
                })
            }
        };
        // A second header is reported as such even after a trailer: that is exactly the log of
        // two agent runs, which is what the error's hint says.
        if kind == 'H' && self.header.is_some() {
            return Err(DecodeError::DuplicateHeader { line: at });
        }
        if self.trailer.is_some() {
            return Err(DecodeError::AfterTrailer { line: at });
        }
        if kind == 'H' {
            let mut h: Header = parse_json(at, kind, payload)?;
            // What the agent reports of its node and targets ends up on a terminal.
            for field in [&mut h.agent_version, &mut h.node, &mut h.kernel] {
                *field = printable(field);
            }
            for t in &mut h.targets {
                t.target = printable(&t.target);
            }
            self.header = Some(h.clone());
            return Ok(Some(Event::Header(h)));
        }
        if self.header.is_none() {
            return Err(DecodeError::NoHeader { line: at, kind });
        }
        match kind {
            'P' => {
                let p: Progress = parse_json(at, kind, payload)?;
                self.last_progress = Some(p.clone());
                Ok(Some(Event::Progress(p)))
            }
            'W' => {
                let mut w: Warning = parse_json(at, kind, payload)?;
                // Messages carry process names, which the profiled processes choose: no escape
                // sequence of theirs reaches the user's terminal.
                w.message = printable(&w.message);
                if let WarningCode::Other(code) = &mut w.code {
                    *code = printable(code);
                }
                if self.warnings.len() < self.limits.warnings {
                    self.warnings.push(w.clone());
                } else {
                    self.warnings_dropped += 1;
                }
                Ok(Some(Event::Warning(w)))
            }
            'D' => {
                let malformed = |reason: &str| DecodeError::Malformed { line: at, kind, reason: reason.to_owned() };
                let (seq, data) = payload.split_once(' ').ok_or_else(|| malformed("expected `SEQ BASE64`"))?;
                let seq: u64 = seq.parse().map_err(|_| malformed("chunk number is not a number"))?;
                if seq != self.chunks {
                    return Err(DecodeError::ChunkOutOfOrder { line: at, expected: self.chunks, found: seq });
                }
                let bytes = BASE64.decode(data).map_err(|e| malformed(&format!("bad base64: {e}")))?;
                if (self.compressed.len() + bytes.len()) as u64 > self.limits.compressed_bytes {
                    return Err(DecodeError::TooLarge {
                        line: at,
                        what: "the compressed payload",
                        limit: self.limits.compressed_bytes,
                    });
                }
                self.compressed.extend_from_slice(&bytes);
                self.chunks += 1;
                Ok(Some(Event::Chunk(seq)))
            }
            'N' => {
                let malformed = |reason: String| DecodeError::Malformed { line: at, kind, reason };
                if self.net.is_some() {
                    return Err(malformed("a second network record".into()));
                }
                if payload.len() > self.limits.net.record_bytes {
                    return Err(DecodeError::TooLarge {
                        line: at,
                        what: "the network record",
                        limit: self.limits.net.record_bytes as u64,
                    });
                }
                let mut net: NetPayload = parse_json(at, kind, payload)?;
                net.validate(&self.limits.net).map_err(malformed)?;
                self.net = Some(net);
                Ok(Some(Event::Net))
            }
            _ => {
                let t: Trailer = parse_json(at, kind, payload)?;
                if t.payload_bytes > self.limits.payload_bytes {
                    return Err(DecodeError::TooLarge {
                        line: at,
                        what: "the payload the trailer announces",
                        limit: self.limits.payload_bytes,
                    });
                }
                self.trailer = Some(t.clone());
                Ok(Some(Event::Trailer(t)))
            }
        }
    }

    /// Verifies the stream against its trailer and returns what it carried.
    pub fn finish(self) -> Result<NodeResult, DecodeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let header = self.header.ok_or(DecodeError::Empty)?;
        let trailer = self.trailer.ok_or(DecodeError::Truncated { chunks: self.chunks })?;
        check("payload chunks", trailer.chunks, self.chunks)?;
        check("network records", trailer.net, u64::from(self.net.is_some()))?;
        let text = inflate(&self.compressed, trailer.payload_bytes)?;
        check("payload bytes", trailer.payload_bytes, text.len() as u64)?;
        let crc = crc32fast::hash(text.as_bytes());
        if crc != trailer.crc32 {
            return Err(DecodeError::Corrupt {
                reason: format!("checksum {crc:08x} does not match the trailer's {:08x}", trailer.crc32),
            });
        }
        let stacks = Payload::verified(text, &trailer)?;
        let mut warnings = self.warnings;
        if self.warnings_dropped > 0 {
            warnings.push(Warning {
                code: WARNING_WARNINGS_DROPPED,
                pid: None,
                message: format!(
                    "{} more warnings were not kept (at most {} are)",
                    self.warnings_dropped, self.limits.warnings
                ),
            });
        }
        Ok(NodeResult { header, warnings, last_progress: self.last_progress, stacks, trailer, net: self.net })
    }
}

/// Inflates the payload, reading at most one byte more than the trailer announces (a damaged or
/// hostile stream must not make the CLI inflate gigabytes) and refusing bytes after the end of
/// the deflate stream, which the encoder never writes.
fn inflate(compressed: &[u8], announced: u64) -> Result<String, DecodeError> {
    let corrupt = |reason: String| DecodeError::Corrupt { reason };
    let mut inflater = flate2::bufread::DeflateDecoder::new(compressed);
    let mut bytes = Vec::new();
    (&mut inflater)
        .take(announced.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(format!("cannot inflate: {e}")))?;
    if bytes.len() as u64 > announced {
        return Err(corrupt(format!("it inflates to more than the {announced} bytes the trailer announces")));
    }
    let consumed = inflater.total_in();
    if consumed != compressed.len() as u64 {
        return Err(corrupt(format!(
            "{} bytes follow the end of the deflate stream",
            compressed.len() as u64 - consumed
        )));
    }
    String::from_utf8(bytes).map_err(|e| corrupt(format!("it is not UTF-8 text: {e}")))
}

fn check(what: &'static str, expected: u64, found: u64) -> Result<(), DecodeError> {
    if expected == found {
        Ok(())
    } else {
        Err(DecodeError::Mismatch { what, expected, found })
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(line: usize, kind: char, payload: &str) -> Result<T, DecodeError> {
    serde_json::from_str(payload).map_err(|e| DecodeError::Malformed { line, kind, reason: e.to_string() })
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    #[test]
    fn the_trailer_is_found_in_a_tail_with_other_lines_around_it() {
        let record = StackRecord {
            container: None,
            pid: 7,
            process: "p".into(),
            sampler: "ebpf".into(),
            frames: vec!["main".into()],
            count: 3,
        };
        let mut lines = Encoder.payload(&[record], 0);
        lines.push("eagle-agent: done".into());
        let tail = lines.join("\n") + "\n";
        let trailer = trailer_in_tail(&tail).expect("a trailer");
        assert_eq!((trailer.samples, trailer.stacks), (3, 1));
        assert_eq!(trailer_in_tail("eagle-agent: error: no BPF\n"), None);
        assert_eq!(trailer_in_tail("EAGLE1 T {not json"), None);
        assert_eq!(trailer_in_tail("EAGLE2 T {}"), None);
    }

    #[test]
    fn a_payload_lends_its_records_as_they_were_written() {
        let records = vec![
            StackRecord {
                container: Some("abc".into()),
                pid: 7,
                process: "p".into(),
                sampler: "ebpf".into(),
                frames: vec!["main".into(), "hot".into()],
                count: 3,
            },
            StackRecord {
                container: None,
                pid: 8,
                process: "q".into(),
                sampler: "py-spy".into(),
                frames: Vec::new(),
                count: 1,
            },
        ];
        let mut lines = vec![Encoder.header(&Header::default())];
        lines.extend(Encoder.payload(&records, 0));
        let mut decoder = Decoder::new();
        decoder.feed_text(&lines.join("\n")).unwrap();
        let result = decoder.finish().unwrap();
        let lent: Vec<StackRef> = result.stacks.iter().collect();
        assert_eq!(lent[0].container, Some("abc"));
        assert_eq!((lent[0].stack, lent[0].frames().collect::<Vec<_>>()), ("main;hot", vec!["main", "hot"]));
        assert_eq!((lent[1].container, lent[1].stack, lent[1].frames().count()), (None, "", 0));
        assert_eq!(result.records(), records);
        assert_eq!(result.stacks, Payload::from_records(&records));
    }
}
