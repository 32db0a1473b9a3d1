//! Fixture-driven tests, inferno style: every `tests/data/NAME.folded` is run through the real
//! binary, and what it writes is compared with the files beside it:
//! - `NAME.summary.json`: the `--summary` of `convert NAME.folded -f 99`;
//! - `NAME.check` (arguments of `check`, one per line) and `NAME.check.expected` (`exit N`,
//!   then the table `check` prints);
//! - every output format, read back independently: folded, pprof (decoded with the prost
//!   structs, checked against profile.proto's rules), speedscope (validated against
//!   `speedscope.schema.json`), SVG.
//!
//! `EAGLE_BLESS=1 cargo nextest run -p kube-eagle --test fixtures` rewrites the expected files;
//! review their diff before committing it.

mod common;

use common::{assert_expected, data_dir, eagle, folded, pprof_stacks, speedscope_stacks, TempDir};

macro_rules! fixtures {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                fixture($name);
            }
        )*
    };
}

fixtures! {
    simple => "simple",
    hierarchy => "hierarchy",
    recursion => "recursion",
    names => "names",
    messy => "messy",
    regression => "regression",
}

fn fixture(name: &str) {
    let data = data_dir();
    let input = format!("{name}.folded");
    let expected = folded(&data.join(&input));
    let tmp = TempDir::new(&format!("fixture-{name}"));

    // Summary, and folded output: the input merged and sorted.
    let run = eagle(
        &data,
        &["convert", &input, "-o", &tmp.arg("out.folded"), "-f", "99", "--summary", &tmp.arg("summary.json")],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let summary = std::fs::read_to_string(tmp.path("summary.json")).unwrap();
    let summary = summary.replace(
        &format!("\"generator\": \"kube-eagle {}\"", env!("CARGO_PKG_VERSION")),
        "\"generator\": \"kube-eagle VERSION\"",
    );
    assert_expected(&data.join(format!("{name}.summary.json")), &summary);
    assert_eq!(std::fs::read_to_string(tmp.path("out.folded")).unwrap(), expected.to_text());

    // Check results.
    let rules = data.join(format!("{name}.check"));
    if rules.exists() {
        let rules = std::fs::read_to_string(rules).unwrap();
        let mut args = vec!["check", input.as_str()];
        args.extend(rules.lines().filter(|l| !l.is_empty()));
        let run = eagle(&data, &args);
        assert!(run.code == 0 || run.code == 1, "{run:?}");
        assert_expected(&data.join(format!("{name}.check.expected")), &format!("exit {}\n{}", run.code, run.stdout));
    }

    // pprof, decoded again and compared, with cpu/nanoseconds from the rate.
    let run = eagle(&data, &["convert", &input, "-o", &tmp.arg("out.pb.gz"), "-f", "99"]);
    assert_eq!(run.code, 0, "{run:?}");
    let (stacks, profile) = pprof_stacks(&std::fs::read(tmp.path("out.pb.gz")).unwrap());
    assert_eq!(stacks.to_text(), expected.to_text(), "pprof holds the same stacks");
    let s = |i: i64| profile.string_table[i as usize].clone();
    let types: Vec<(String, String)> = profile.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
    assert_eq!(types, [("samples".into(), "count".into()), ("cpu".into(), "nanoseconds".into())]);
    assert_eq!(profile.period, 1_000_000_000 / 99);
    assert!(profile.sample.iter().all(|x| x.value[1] == x.value[0] * profile.period));
    // Reading the pprof back gives the folded stacks again.
    let run = eagle(&data, &["convert", &tmp.arg("out.pb.gz"), "-o", &tmp.arg("back.folded")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(tmp.path("back.folded")).unwrap(), expected.to_text());

    // speedscope, validated against its schema.
    let run = eagle(&data, &["convert", &input, "-o", &tmp.arg("out.json")]);
    assert_eq!(run.code, 0, "{run:?}");
    let stacks = speedscope_stacks(&std::fs::read(tmp.path("out.json")).unwrap());
    assert_eq!(stacks.to_text(), expected.to_text(), "speedscope holds the same stacks");

    // SVG: inferno's, titled, with the total.
    let run = eagle(&data, &["convert", &input, "-o", &tmp.arg("out.svg"), "--title", "fixture"]);
    assert_eq!(run.code, 0, "{run:?}");
    let svg = std::fs::read_to_string(tmp.path("out.svg")).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(">fixture<"), "title");
    assert!(svg.contains(&format!("{} samples", expected.total())), "the total in the subtitle");
}
