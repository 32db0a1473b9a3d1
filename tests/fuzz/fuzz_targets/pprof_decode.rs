//! pprof profiles as `check`, `diff`, `convert` and `--baseline` read them (someone else's
//! profiler may have written them, or an attacker). Whatever decodes must write back to a
//! profile that decodes to the same stacks.
#![no_main]

use std::io::Read;

use flate2::read::MultiGzDecoder;
use kube_eagle::output::pprof;
use kube_eagle::output::Labels;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((stacks, run)) = pprof::decode(data) {
        let written = pprof::render(&stacks, &Labels::default(), &run);
        let mut plain = Vec::new();
        MultiGzDecoder::new(&written[..]).read_to_end(&mut plain).expect("our own gzip decompresses");
        let (again, _) = pprof::decode(&plain).expect("a written profile decodes");
        assert_eq!(again.total(), stacks.total());
        assert_eq!(again.len(), stacks.len());
    }
});
