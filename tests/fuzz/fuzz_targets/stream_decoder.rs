//! The result stream decoder, fed a pod log as it may arrive: any bytes, any lines. It must
//! never panic, and what it accepts must be within its limits.
#![no_main]

use eagle_proto::{Decoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Small limits, so that the fuzzer reaches them.
    let limits = Limits {
        line_bytes: 4096,
        compressed_bytes: 64 * 1024,
        payload_bytes: 1 << 20,
        warnings: 8,
        net: eagle_proto::NetLimits::DEFAULT,
    };
    let mut decoder = Decoder::with_limits(limits);
    for line in text.split_inclusive('\n') {
        if decoder.feed_line(line).is_err() {
            break;
        }
    }
    if let Ok(result) = decoder.finish() {
        assert!(result.warnings.len() <= 9);
        let bytes: usize = result.stacks.iter().map(|r| r.frames().map(str::len).sum::<usize>()).sum();
        assert!(bytes as u64 <= limits.payload_bytes);
    }
});
