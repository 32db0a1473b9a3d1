//! What a profiled process hands the profiler is hostile: the agent runs as root and its output
//! reaches the user's terminal and files. Each test plants one such input and checks that the
//! run still does its work and nothing of the input escapes where it should not.

use eagle_tests::{groundtruth, require_sampling, Eagle, TestDir};

/// A process named with a terminal escape sequence (the kernel takes its name from the file it
/// runs): no control character reaches the terminal or the profile.
#[test]
fn escape_sequences_in_a_process_name_reach_no_terminal_and_no_file() {
    require_sampling!();
    let dir = TestDir::new("escape_name");
    // ESC ] 0 ; title BEL would retitle the terminal; ESC [ 2 J would clear it.
    let evil = dir.join("\u{1b}]0;pwn\u{7}\u{1b}[2J");
    std::fs::copy(groundtruth(), &evil).expect("copy groundtruth");
    let run = Eagle::cli(&dir)
        .args(["profile", "-d", "2s", "-o", "flame.folded", "--"])
        .arg(&evil)
        .args(["--seconds", "1"])
        .output_file(dir.join("flame.folded"))
        .run();
    run.assert_code(0);
    let folded = std::fs::read(dir.join("flame.folded")).expect("the profile");
    run.check(run.profile().total() > 0, "no samples");
    let controls = |bytes: &[u8]| bytes.iter().filter(|&&b| (b < 0x20 && b != b'\n') || b == 0x7f).count();
    run.check(controls(&run.stderr) == 0, "control characters on the terminal (stderr)");
    run.check(controls(&run.stdout) == 0, "control characters on the terminal (stdout)");
    run.check(controls(&folded) == 0, "control characters in the folded profile");
    run.check(run.stderr().contains("]0;pwn"), "the process is not named at all");
}
