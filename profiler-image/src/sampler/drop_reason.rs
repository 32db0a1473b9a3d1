//! Names of the kernel's drop reasons (`enum skb_drop_reason`, the third argument of
//! `skb:kfree_skb`), read from the running kernel's BTF: the enum grows and is renumbered
//! between versions (6.18 has about 130 values), so no table compiled into the agent would be
//! right on every node.
//!
//! Written by hand: aya's `Btf` parses the same data but keeps enum variants and the string
//! table to itself, and `btf-rs` is LGPL. Only the type section's layout is needed to walk to
//! one enum: each type is a 12-byte header and a tail whose length its kind fixes
//! (include/uapi/linux/btf.h).

use std::collections::HashMap;

/// The enum's name in the kernel, and the prefix its values' names share.
const ENUM: &str = "skb_drop_reason";
const PREFIXES: [&str; 2] = ["SKB_DROP_REASON_", "SKB_"];
/// The high 16 bits of a reason name the subsystem that defined it (mac80211, openvswitch),
/// whose own enums this one does not hold.
const SUBSYSTEM_SHIFT: u32 = 16;

/// Reason number -> name, for this kernel.
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    /// Reads them from `/sys/kernel/btf/vmlinux`; empty (every reason said by number) when the
    /// kernel has no BTF or no such enum.
    pub fn from_kernel() -> DropReasons {
        std::fs::read("/sys/kernel/btf/vmlinux").ok().and_then(|btf| DropReasons::parse(&btf)).unwrap_or_default()
    }

    /// Finds `enum skb_drop_reason` in raw BTF.
    pub fn parse(btf: &[u8]) -> Option<DropReasons> {
        let u32_at = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(btf.get(at..at + 4)?.try_into().ok()?)) };
        if btf.get(0..2)? != [0x9f, 0xeb] {
            return None; // not little-endian BTF: the nodes this agent is built for are
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types = btf.get(header_len + type_off..header_len + type_off + type_len)?;
        let strings = btf.get(header_len + str_off..header_len + str_off + str_len)?;
        let name = |offset: u32| -> Option<&str> {
            let tail = strings.get(offset as usize..)?;
            std::str::from_utf8(&tail[..tail.iter().position(|&b| b == 0)?]).ok()
        };
        let field = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(types.get(at..at + 4)?.try_into().ok()?)) };
        let mut at = 0;
        while at + 12 <= types.len() {
            let (name_off, info) = (field(at)?, field(at + 4)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let tail = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
                _ => return None,             // a kind newer than this reader
            };
            if kind == 6 && name(name_off) == Some(ENUM) {
                let mut names = HashMap::new();
                for v in 0..vlen {
                    let entry = at + 12 + v * 8;
                    let (Some(text), Some(value)) = (name(field(entry)?), field(entry + 4)) else { continue };
                    let short = PREFIXES.iter().find_map(|p| text.strip_prefix(p)).unwrap_or(text);
                    names.insert(value, short.to_owned());
                }
                return Some(DropReasons { names });
            }
            at += 12 + tail;
        }
        None
    }

    /// `NO_SOCKET`, or `reason N` (`subsystem S reason N` for another subsystem's).
    pub fn name(&self, reason: u32) -> String {
        if let Some(name) = self.names.get(&reason) {
            return name.clone();
        }
        match reason >> SUBSYSTEM_SHIFT {
            0 => format!("reason {reason}"),
            subsystem => format!("subsystem {subsystem} reason {}", reason & 0xffff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This kernel's enum: the reasons the network view meets most are named as the kernel
    /// names them, whatever their numbers on this version.
    #[test]
    fn this_kernels_reasons_are_named() {
        let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("skipped: no BTF");
            return;
        };
        let reasons = DropReasons::parse(&btf).expect("enum skb_drop_reason in this kernel's BTF");
        let named: Vec<&str> = reasons.names.values().map(String::as_str).collect();
        for expected in ["NOT_SPECIFIED", "NO_SOCKET", "TCP_CSUM", "SOCKET_FILTER"] {
            assert!(named.contains(&expected), "{expected} missing from {named:?}");
        }
        assert!(reasons.names.len() > 50, "{}", reasons.names.len());
        assert_eq!(reasons.name(u32::MAX >> 1), "subsystem 32767 reason 65535");
    }

    #[test]
    fn hostile_or_foreign_btf_names_nothing() {
        assert!(DropReasons::parse(b"").is_none());
        assert!(DropReasons::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]).is_none());
        assert_eq!(DropReasons::default().name(7), "reason 7");
    }
}
