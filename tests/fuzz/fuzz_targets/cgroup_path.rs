//! `/proc/PID/cgroup` of any process on the node, which a container can shape by its own cgroup
//! names: the parser that maps it to a container or pod must never panic, and a container id it
//! finds is one it can match.
#![no_main]

use eagle_agent::discovery::{cgroup_matches, container_id};
use eagle_agent::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(id) = container_id(&text) {
        assert!(cgroup_matches(&text, &Target::Container(id)));
    }
    let _ = cgroup_matches(&text, &Target::Pod("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0".into()));
});
