//! Expected-output files ("snapshots"), one rule for the unit tests of `cli/src` (which include
//! this file) and the integration tests of `cli/tests`: the actual output is always compared
//! with the file. With `EAGLE_BLESS=1` a file that differs (or is missing) is rewritten and the
//! test still FAILS, naming it: a bless run never passes by writing what it then compares
//! against; the next run, without `EAGLE_BLESS`, passes once the diff is reviewed.

use std::path::Path;

pub fn assert_snapshot(expected: &Path, actual: &str) {
    let want = std::fs::read_to_string(expected).ok();
    if want.as_deref() == Some(actual) {
        return;
    }
    if std::env::var_os("EAGLE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(expected, actual).unwrap_or_else(|e| panic!("cannot bless {}: {e}", expected.display()));
        panic!(
            "blessed {}: it {}; review `git diff` and run again without EAGLE_BLESS",
            expected.display(),
            if want.is_some() { "differed and was rewritten" } else { "was missing and is written" }
        );
    }
    match want {
        None => panic!("{} is missing (EAGLE_BLESS=1 writes it)", expected.display()),
        Some(want) => panic!(
            "{} differs (EAGLE_BLESS=1 rewrites it)\n--- expected\n{want}\n--- actual\n{actual}",
            expected.display()
        ),
    }
}
