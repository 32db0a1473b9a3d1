//! The executable mappings of a process, from `/proc/PID/maps`.

/// One executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// Device and inode of the mapped file; both 0 for anonymous memory (JIT code, the vDSO).
    pub dev: u64,
    pub inode: u64,
    /// The path as the kernel shows it (`[vdso]`, `/usr/lib/...`, `... (deleted)`), or empty.
    pub path: String,
}

impl ExecMapping {
    pub fn is_file(&self) -> bool {
        self.inode != 0
    }
}

/// The executable mappings in a `/proc/PID/maps` text, in address order. Lines that do not
/// parse are skipped: the text comes from the kernel, but a format change must not crash.
pub fn parse(text: &str) -> Vec<ExecMapping> {
    let mut mappings: Vec<ExecMapping> = text.lines().filter_map(parse_line).collect();
    mappings.sort_by_key(|m| m.start);
    mappings
}

fn parse_line(line: &str) -> Option<ExecMapping> {
    // start-end perms offset major:minor inode [path]
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let dev = (u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start().to_owned();
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    (start < end).then_some(ExecMapping { start, end, offset, dev, inode, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_mappings_only_with_their_files() {
        let text = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234 /usr/bin/xz
55d0c0a02000-55d0c0a10000 r-xp 00002000 fd:01 1234 /usr/bin/xz
7ffd1b7f0000-7ffd1b7f2000 r-xp 00000000 00:00 0                          [vdso]
7f00000000-7f00001000 rwxp 00000000 00:00 0 
garbage line
7f10000000-7f10001000 r-xp 00001000 08:02 99 /tmp/a lib (deleted)
";
        let m = parse(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].start, 0x7f00000000);
        assert_eq!(m[1].path, "/tmp/a lib (deleted)");
        assert_eq!((m[1].dev, m[1].inode, m[1].offset), ((8 << 32) | 2, 99, 0x1000));
        assert_eq!(m[2].path, "/usr/bin/xz");
        assert!(!m[3].is_file() && m[3].path == "[vdso]");
    }
}
