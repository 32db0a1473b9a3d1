//! Reading profiles back: folded stacks (as `profile -o x.folded`, inferno or flamegraph.pl
//! write them, optionally gzipped) and pprof profiles (as `profile -o x.pb.gz` or Go's
//! runtime/pprof write them). `-` reads standard input.

use std::io::Read;
use std::path::Path;

use eagle_proto::folded::ParseError;
use eagle_proto::FoldedStacks;
use flate2::read::MultiGzDecoder;

use crate::error::CliError;
use crate::output::pprof;
use crate::run_info::RunInfo;

/// A profile read from a file.
pub struct Loaded {
    pub folded: FoldedStacks,
    /// What the file says about its run: pprof carries rate, start and duration; folded text
    /// carries nothing.
    pub run: RunInfo,
}

/// A profile file's content, before folded text is parsed.
pub enum Raw {
    Folded(String),
    Parsed(Loaded),
}

/// A profile with samples in it: an empty one is a failed run upstream, never a pass.
pub fn load_samples(path: &Path) -> Result<Loaded, CliError> {
    let loaded = load(path)?;
    if loaded.folded.is_empty() {
        return Err(no_samples(path));
    }
    Ok(loaded)
}

pub fn no_samples(path: &Path) -> CliError {
    CliError::NothingToProfile(format!(
        "the profile `{}` has no samples: was the run idle or did it fail?",
        path.display()
    ))
}

pub fn name_of(path: &Path) -> String {
    if path == Path::new("-") {
        return "stdin".into();
    }
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

pub fn load(path: &Path) -> Result<Loaded, CliError> {
    match read(path)? {
        Raw::Parsed(loaded) => Ok(loaded),
        Raw::Folded(text) => {
            let (folded, unit) = FoldedStacks::parse_with_unit(&text).map_err(|e| parse_error(path, e))?;
            Ok(Loaded { folded, run: RunInfo { unit: Some(unit), ..RunInfo::default() } })
        }
    }
}

fn shown(path: &Path) -> String {
    if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        format!("`{}`", path.display())
    }
}

/// The one line for a malformed line of folded text.
pub fn parse_error(path: &Path, e: ParseError) -> CliError {
    CliError::Io(format!(
        "cannot read the profile {}: line {}: {}; each line must be `frame;frame;... COUNT`",
        shown(path),
        e.line,
        e.reason
    ))
}

pub fn read(path: &Path) -> Result<Raw, CliError> {
    let fail = |why: String| CliError::Io(format!("cannot read the profile {}: {why}", shown(path)));
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| fail(io_reason(&e)))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::with_capacity(bytes.len() * 4);
        MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .map_err(|e| fail(format!("it looks gzipped but does not decompress: {e}")))?;
        bytes = plain;
    }
    // Folded text never holds control characters other than line ends and tabs; a protobuf
    // always does, from its first bytes on (field tags of 0x08, 0x10, 0x12, ...).
    if bytes.iter().take(4096).any(|b| matches!(b, 0..=8 | 14..=31)) {
        let (folded, run) = pprof::decode(&bytes).map_err(|e| fail(format!("not a pprof profile: {e}")))?;
        return Ok(Raw::Parsed(Loaded { folded, run }));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| fail("neither folded stacks (UTF-8 text) nor a pprof profile".to_owned()))?;
    Ok(Raw::Folded(text))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => e.to_string(),
    }
}
