//! Each command end to end through the real binary, and every bad input: one clear line on
//! stderr and the documented exit code (2 usage, 5 no samples, 8 an input that cannot be read).

mod common;

use common::{data_dir, eagle, eagle_with_input, folded, TempDir};

#[test]
fn help_lists_the_ci_commands() {
    let run = eagle(&data_dir(), &["--help"]);
    assert_eq!(run.code, 0);
    for command in ["profile", "check", "diff", "convert"] {
        assert!(run.stdout.contains(command), "{command} in {}", run.stdout);
    }
    let run = eagle(&data_dir(), &["profile", "--help"]);
    for flag in ["--summary", "--max ", "--max-self", "--baseline", "--max-regression", "pprof"] {
        assert!(run.stdout.contains(flag), "{flag} in profile --help");
    }
}

#[test]
fn check_passes_with_exit_0_and_fails_with_exit_1() {
    let data = data_dir();
    let pass = eagle(&data, &["check", "simple.folded", "--max", "serde_json::=30%"]);
    assert_eq!(pass.code, 0, "{pass:?}");
    assert!(pass.stdout.ends_with("check passed: simple.folded (100 samples), 1 rule(s)\n"), "{}", pass.stdout);
    let fail = eagle(&data, &["check", "simple.folded", "--max", "serde_json::=29.9%"]);
    assert_eq!(fail.code, 1, "{fail:?}");
    assert!(fail.stdout.contains("BROKEN  --max serde_json::=29.9%"), "{}", fail.stdout);
}

#[test]
fn check_reads_standard_input_and_pprof() {
    let data = data_dir();
    let text = std::fs::read(data.join("simple.folded")).unwrap();
    let run = eagle_with_input(&data, &["check", "-", "--max-self", "^compute$=50%"], &text);
    assert_eq!(run.code, 0, "{run:?}");
    let tmp = TempDir::new("check-pprof");
    assert_eq!(eagle(&data, &["convert", "simple.folded", "-o", &tmp.arg("p.pprof")]).code, 0);
    let run = eagle(&data, &["check", &tmp.arg("p.pprof"), "--max-self", "^compute$=49%"]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn check_writes_its_results_into_the_summary() {
    let data = data_dir();
    let tmp = TempDir::new("check-summary");
    let run = eagle(
        &data,
        &[
            "check",
            "regression.folded",
            "--baseline",
            "regression.base.folded",
            "--max-regression",
            "3pp",
            "--summary",
            &tmp.arg("s.json"),
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path("s.json")).unwrap()).unwrap();
    assert_eq!(summary["schema_version"], 1);
    let checks = &summary["checks"];
    assert_eq!(checks["passed"], false);
    assert_eq!(checks["baseline"], "regression.base.folded");
    let broken: Vec<&str> = checks["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["broken"] == true)
        .map(|r| r["function"].as_str().unwrap())
        .collect();
    assert_eq!(broken, ["serde_json::de::from_str", "serde_json::de::parse_object"]);
}

#[test]
fn diff_writes_a_differential_flame_graph_of_normalised_stable_stacks() {
    let data = data_dir();
    let tmp = TempDir::new("diff");
    let run = eagle(&data, &["diff", "regression.base.folded", "regression.folded", "-o", &tmp.arg("d.folded")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("+20.00pp serde_json::de::from_str (10.00% -> 30.00%)"), "{}", run.stderr);
    let text = std::fs::read_to_string(tmp.path("d.folded")).unwrap();
    // Pod names and pids differ between the runs: dropped, so the stacks line up. The base (100
    // samples) is scaled to the new run's 200.
    assert_eq!(
        text,
        "namespace/ci;deployment/api;container/app;api;main;handler;compute 140 100\n\
         namespace/ci;deployment/api;container/app;api;main;handler;regex::Regex::is_match 16 16\n\
         namespace/ci;deployment/api;container/app;api;main;handler;serde_json::de::from_str;serde_json::de::parse_object 20 60\n\
         namespace/ci;deployment/api;container/app;api;main;idle_loop 24 24\n"
    );
    let run =
        eagle(&data, &["diff", "regression.base.folded", "regression.folded", "-o", &tmp.arg("d.svg"), "--code-only"]);
    assert_eq!(run.code, 0, "{run:?}");
    let svg = std::fs::read_to_string(tmp.path("d.svg")).unwrap();
    assert!(
        svg.contains("kube-eagle diff: regression.base.folded -&gt; regression.folded")
            || svg.contains("regression.base.folded")
    );
    // Differential graphs color by change: red for what grew.
    assert!(svg.contains("rgb(255,"), "red frames in the differential graph");
    assert!(!svg.contains(">namespace/ci"), "--code-only drops the hierarchy");
}

#[test]
fn convert_picks_the_format_from_the_extension_or_the_flag() {
    let data = data_dir();
    let tmp = TempDir::new("convert");
    for (file, magic) in [("a.svg", &b"<?xml"[..]), ("a.json", b"{"), ("a.pb.gz", b"\x1f\x8b"), ("a.txt", b"main;")] {
        let run = eagle(&data, &["convert", "simple.folded", "-o", &tmp.arg(file)]);
        assert_eq!(run.code, 0, "{file}: {run:?}");
        assert!(std::fs::read(tmp.path(file)).unwrap().starts_with(magic), "{file}");
    }
    let run = eagle(&data, &["convert", "simple.folded", "-o", &tmp.arg("x.out"), "--format", "pprof"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(std::fs::read(tmp.path("x.out")).unwrap().starts_with(b"\x1f\x8b"));
    let run = eagle(&data, &["convert", "simple.folded", "-o", "-"]);
    assert_eq!(run.stdout, folded(&data.join("simple.folded")).to_text());
}

#[test]
fn profile_checks_its_flags_before_sampling() {
    let data = data_dir();
    // Nothing is sampled (no privileges needed): the rules are refused first.
    let run = eagle(&data, &["profile", "pid/1", "-d", "1s", "-o", "/tmp/x.folded", "--max", "a(=5%"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.error_line().contains("`a(` is not a valid regex"), "{run:?}");
    let run = eagle(
        &data,
        &["profile", "pid/1", "-o", "/tmp/x.folded", "--baseline", "nope.folded", "--max-regression", "3pp"],
    );
    assert_eq!(run.code, 8, "{run:?}");
    assert!(run.error_line().contains("nope.folded"), "{run:?}");
    let run = eagle(&data, &["profile", "pid/1", "-o", "/tmp/x.folded", "--summary", "/nonexistent-dir/s.json"]);
    assert_eq!(run.code, 8, "{run:?}");
    assert!(run.error_line().contains("cannot write the summary"), "{run:?}"); // --min-block filters blocks, which a CPU profile has none of.
    let run = eagle(&data, &["profile", "pid/1", "-o", "/tmp/x.folded", "--min-block", "5ms"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.error_line().contains("--mode off-cpu"), "{run:?}");
    let run = eagle(&data, &["profile", "pid/1", "-o", "/tmp/x.folded", "--mode", "gpu"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn off_cpu_profiles_keep_their_unit_through_convert_and_check() {
    let data = data_dir();
    let tmp = TempDir::new("units");
    std::fs::write(
        tmp.path("off.folded"),
        "# unit: off-cpu-microseconds\nw (1);main;sleep_60 600000\nw (1);main;pipe_30 300000\n",
    )
    .unwrap();
    std::fs::write(tmp.path("cpu.folded"), "w (1);main;cpu_10 10\n").unwrap();
    // pprof carries the unit as its sample type, and reads it back.
    let run = eagle(&data, &["convert", &tmp.arg("off.folded"), "-o", &tmp.arg("off.pb.gz")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("900000 µs off-CPU"), "{run:?}");
    let run = eagle(&data, &["convert", &tmp.arg("off.pb.gz"), "-o", "-"]);
    assert!(run.stdout.starts_with("# unit: off-cpu-microseconds\n"), "{run:?}");
    let run = eagle(&data, &["convert", &tmp.arg("off.folded"), "-o", &tmp.arg("off.json")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(std::fs::read_to_string(tmp.path("off.json")).unwrap().contains("\"unit\":\"microseconds\""));
    let run = eagle(&data, &["convert", &tmp.arg("off.folded"), "-o", &tmp.arg("off.svg")]);
    assert!(std::fs::read_to_string(tmp.path("off.svg")).unwrap().contains("µs off-CPU"), "{run:?}");
    let run = eagle(&data, &["check", &tmp.arg("off.pb.gz"), "--max", "sleep_60=50%"]);
    assert_eq!(run.code, 1, "{run:?}");
    let run = eagle(&data, &["diff", &tmp.arg("cpu.folded"), &tmp.arg("off.pb.gz"), "-o", &tmp.arg("d.svg")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.error_line().contains("cannot combine a profile in CPU samples with one in microseconds off-CPU"));
}

/// A real local profile with --summary and inline checks. It needs a machine that may sample
/// (root or CAP_BPF + CAP_PERFMON): elsewhere it is skipped (printed, counted, and a failure in
/// CI). A run that fails (exit 6: the sampler broke) is a failure here, never a skip.
#[test]
fn profile_writes_the_summary_and_runs_the_checks_on_the_fresh_profile() {
    eagle_tests::require_sampling!();
    let tmp = TempDir::new("profile-inline");
    let busy = "i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done";
    let args = [
        "profile",
        "-d",
        "1s",
        "-o",
        &tmp.arg("p.pb.gz"),
        "--summary",
        &tmp.arg("s.json"),
        "--max-self",
        ".=0.5%",
        "--",
        "sh",
        "-c",
        busy,
    ];
    let run = eagle(&tmp.0, &args);
    // Any code frame at all breaks a 0.5% self budget over every function.
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("BROKEN  --max-self .=0.5%"), "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path("s.json")).unwrap()).unwrap();
    assert_eq!(summary["frequency_hz"], 99);
    assert_eq!(summary["partial"], false);
    assert_eq!(summary["nodes"].as_array().unwrap().len(), 1);
    assert!(summary["total_samples"].as_u64().unwrap() > 0);
    assert_eq!(summary["checks"]["passed"], false);
    let (stacks, profile) = common::pprof_stacks(&std::fs::read(tmp.path("p.pb.gz")).unwrap());
    assert_eq!(stacks.total(), summary["total_samples"].as_u64().unwrap());
    assert!(profile.duration_nanos > 0 && profile.time_nanos > 0);
}

#[test]
fn go_tool_pprof_reads_the_output() {
    let go = std::process::Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
    eagle_tests::skip_unless!(go, "no go toolchain here (scripts/setup.sh installs golang-go)");
    let data = data_dir();
    let tmp = TempDir::new("go-pprof");
    assert_eq!(eagle(&data, &["convert", "hierarchy.folded", "-o", &tmp.arg("p.pb.gz"), "-f", "99"]).code, 0);
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-tagfocus", "pod=api-7d9f8-x1abc", &tmp.arg("p.pb.gz")])
        .env("HOME", &tmp.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Type: cpu"), "{stdout}");
    // 40 of all 125 samples are this pod's in serde_json, at 99 Hz: 40 x 10.1 ms.
    assert!(stdout.contains("404.04ms 32.00%"), "{stdout}");
    assert!(stdout.contains("serde_json::from_slice"), "{stdout}");
}

/// (arguments, exit code, what the one line on stderr says)
const BAD_INPUTS: &[(&[&str], i32, &str)] = &[
    (&["check", "missing.folded", "--max", "a=1%"], 8, "cannot read the profile `missing.folded`: no such file"),
    (&["check", "malformed.folded", "--max", "a=1%"], 8, "`malformed.folded`: line 3: `lots` is not a sample count"),
    (&["check", "nocount.folded", "--max", "a=1%"], 8, "`nocount.folded`: line 2: expected `frame;frame;... COUNT`"),
    (&["check", "simple.folded", "--max", "serde(=15%"], 2, "`serde(` is not a valid regex: unclosed group"),
    (&["check", "simple.folded", "--max", "serde"], 2, "--max `serde`: write REGEX=PERCENT"),
    (&["check", "simple.folded", "--max-self", "serde=fifteen"], 2, "`fifteen` is not a share"),
    (&["check", "simple.folded", "--max", "serde=101%"], 2, "`101%` is not a share"),
    (&["check", "simple.folded", "--baseline", "simple.folded", "--max-regression", "3%"], 2, "percentage points"),
    (&["check", "simple.folded", "--max-regression", "3pp"], 2, "add --baseline"),
    (&["check", "simple.folded", "--baseline", "simple.folded"], 2, "needs a rule to compare with"),
    (&["check", "simple.folded"], 2, "nothing to check"),
    (
        &["check", "simple.folded", "--baseline", "missing.folded", "--max-regression", "1pp"],
        8,
        "`missing.folded`: no such file",
    ),
    (&["check", "empty.folded", "--max", "a=1%"], 5, "has no samples"),
    (&["check", "garbage.pb.gz", "--max", "a=1%"], 8, "looks gzipped but does not decompress"),
    (&["convert", "simple.folded", "-o", "out.png"], 2, "cannot tell the output format of `out.png`"),
    (&["convert", "missing.folded", "-o", "out.svg"], 8, "no such file"),
    (&["diff", "simple.folded", "missing.folded"], 8, "`missing.folded`: no such file"),
    (&["diff", "simple.folded", "simple.folded", "-o", "d.json"], 2, "a diff is written as .svg"),
];

#[test]
fn bad_inputs_give_one_line_and_their_exit_code() {
    let tmp = TempDir::new("bad-inputs");
    std::fs::copy(data_dir().join("simple.folded"), tmp.path("simple.folded")).unwrap();
    std::fs::write(tmp.path("malformed.folded"), "main;a 1\nmain;b 2\nmain;c lots\n").unwrap();
    std::fs::write(tmp.path("nocount.folded"), "main;a 1\nmain;b\n").unwrap();
    std::fs::write(tmp.path("empty.folded"), "\n").unwrap();
    std::fs::write(tmp.path("garbage.pb.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
    for (args, code, says) in BAD_INPUTS {
        let run = eagle(&tmp.0, args);
        assert_eq!(run.code, *code, "{args:?}: {run:?}");
        let line = run.error_line();
        assert!(line.starts_with("kubectl-eagle: error: "), "{args:?}: {line}");
        assert!(line.contains(says), "{args:?}: `{line}` should say `{says}`");
    }
}

/// `check` on a network report (`net --format json`): the p99 of matching routes and the
/// retransmission share of each peer (2 of ~100 segments here), as `net` judges them.
#[test]
fn check_judges_a_network_report() {
    let data = data_dir();
    let run = eagle(&data, &["check", "net.json", "--max-p99", "http:/api/.*=100ms", "--max-retransmits", "3%"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("ok     --max-p99 http:/api/.*=100ms: python3 GET /api/items/{n} (31126): p99 84.0ms"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("/health"), "the regex is anchored: {run:?}");
    assert!(
        run.stderr.contains("ok     --max-retransmits 3%: python3 (31126) -> 10.0.0.7: 2.00% of ~100 segments"),
        "{run:?}"
    );
    let run = eagle(&data, &["check", "net.json", "--max-p99", "http:/api/.*=50ms"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("BROKEN --max-p99 http:/api/.*=50ms"), "{run:?}");
    let text = std::fs::read(data.join("net.json")).unwrap();
    let run = eagle_with_input(&data, &["check", "-", "--max-retransmits", "1%"], &text);
    assert_eq!(run.code, 1, "{run:?}");
    // A profile is no network report, and the two kinds of rules are not mixed: one line each.
    for args in [
        &["check", "simple.folded", "--max-p99", "http:/.*=1s"][..],
        &["check", "net.json", "--max-p99", "http:/.*=1s", "--max", "x=1%"][..],
        &["check", "net.json", "--max-p99", "/api=1s"][..],
    ] {
        let run = eagle(&data, args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
    }
}
