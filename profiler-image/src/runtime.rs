//! Which runtime a process runs, so the right sampler handles it without the user naming a
//! language: from its executable, command line and mapped libraries.

use crate::discovery::ProcFs;

/// The runtimes the agent tells apart (and `--runtime` names): a contract with the CLI.
pub use eagle_proto::Runtime;

/// What detection looks at, read once from /proc.
#[derive(Clone, Debug, Default)]
pub struct ProcessTraits {
    /// Basename of /proc/PID/exe.
    pub exe: String,
    /// Paths of the mapped files (/proc/PID/maps).
    pub mapped: Vec<String>,
    /// Whether the executable has a `.go.buildinfo` section.
    pub go_buildinfo: bool,
}

impl ProcessTraits {
    pub fn read(proc: &ProcFs, pid: u32) -> Self {
        let base = proc.path().join(pid.to_string());
        let exe = std::fs::read_link(base.join("exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_owned()))
            .unwrap_or_default();
        let mapped = std::fs::read_to_string(base.join("maps"))
            .map(|maps| {
                let mut paths: Vec<String> =
                    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).map(str::to_owned).collect();
                paths.dedup();
                paths
            })
            .unwrap_or_default();
        // Through /proc/PID/exe: the binary as the process sees it, in its own mount namespace.
        let go_buildinfo = has_go_buildinfo(&base.join("exe"));
        Self { exe, mapped, go_buildinfo }
    }
}

/// Decides the runtime from what a process looks like.
pub fn detect(t: &ProcessTraits) -> Runtime {
    let maps_lib = |needle: &str| t.mapped.iter().any(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with(needle)));
    if maps_lib("libjvm.so") {
        return Runtime::Java;
    }
    let exe = t.exe.as_str();
    if exe.starts_with("python") || maps_lib("libpython") {
        return Runtime::Python;
    }
    if exe.starts_with("ruby") || maps_lib("libruby") {
        return Runtime::Ruby;
    }
    if exe == "node" || exe == "nodejs" || maps_lib("libnode.so") {
        return Runtime::Node;
    }
    if t.go_buildinfo {
        return Runtime::Go;
    }
    Runtime::Native
}

/// Looks for the `.go.buildinfo` section that every Go binary since 1.13 carries.
fn has_go_buildinfo(exe: &std::path::Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(exe) else { return false };
    let mut ehdr = [0u8; 64];
    if f.read_exact(&mut ehdr).is_err() || &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 {
        return false; // only 64-bit ELF
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(&ehdr, 0x28), u16_at(&ehdr, 0x3a), u16_at(&ehdr, 0x3c), u16_at(&ehdr, 0x3e));
    if shentsize != 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return false;
    }
    let mut sections = vec![0u8; (shentsize * shnum) as usize];
    if f.seek(SeekFrom::Start(shoff)).is_err() || f.read_exact(&mut sections).is_err() {
        return false;
    }
    let strtab = &sections[(shstrndx * 64) as usize..][..64];
    let (str_off, str_size) = (u64_at(strtab, 0x18), u64_at(strtab, 0x20).min(1 << 20));
    let mut names = vec![0u8; str_size as usize];
    if f.seek(SeekFrom::Start(str_off)).is_err() || f.read_exact(&mut names).is_err() {
        return false;
    }
    sections.chunks(64).any(|s| {
        let name = u32_at(s, 0) as usize;
        names.get(name..).is_some_and(|n| n.starts_with(b".go.buildinfo\0"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits(exe: &str, mapped: &[&str]) -> ProcessTraits {
        ProcessTraits { exe: exe.into(), mapped: mapped.iter().map(|s| s.to_string()).collect(), go_buildinfo: false }
    }

    #[test]
    fn detects_runtimes_from_exe_and_libraries() {
        assert_eq!(detect(&traits("python3.11", &["/usr/lib/libc.so.6"])), Runtime::Python);
        assert_eq!(detect(&traits("uwsgi", &["/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"])), Runtime::Python);
        assert_eq!(detect(&traits("java", &["/usr/lib/jvm/java-17/lib/server/libjvm.so"])), Runtime::Java);
        // A launcher that embeds the JVM is still Java.
        assert_eq!(detect(&traits("kafka-server", &["/opt/jdk/lib/server/libjvm.so"])), Runtime::Java);
        assert_eq!(detect(&traits("ruby", &[])), Runtime::Ruby);
        assert_eq!(detect(&traits("puma", &["/usr/lib/libruby.so.3.1"])), Runtime::Ruby);
        assert_eq!(detect(&traits("node", &[])), Runtime::Node);
        assert_eq!(detect(&traits("nginx", &["/usr/lib/libc.so.6"])), Runtime::Native);
        let go = ProcessTraits { go_buildinfo: true, ..traits("server", &[]) };
        assert_eq!(detect(&go), Runtime::Go);
    }

    #[test]
    fn reads_this_process() {
        let me = ProcessTraits::read(&ProcFs::default(), std::process::id());
        assert!(!me.exe.is_empty());
        assert!(!me.mapped.is_empty());
        assert!(!me.go_buildinfo, "a Rust test binary is not Go");
        assert_eq!(detect(&me), Runtime::Native);
    }

    #[test]
    fn override_names() {
        assert_eq!("python".parse::<Runtime>(), Ok(Runtime::Python));
        assert!("cobol".parse::<Runtime>().is_err());
    }
}
