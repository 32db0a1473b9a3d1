//! Every command in the docs runs as written: each script, file, package, test and benchmark
//! that a command in a code block of README.md or docs/*.md names exists, seen from the
//! workspace root, where a reader types it. (A command that once named a path relative to the
//! wrong directory panicked for the first user who ran it.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use eagle_tests::repo_root;

/// The command lines of the fenced code blocks of `text`, comments removed.
fn command_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_block = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let command = line.split("  #").next().unwrap_or_default().trim();
            if !command.is_empty() && !command.starts_with('#') {
                out.push((i + 1, command.to_owned()));
            }
        }
    }
    out
}

fn packages(root: &Path) -> BTreeSet<(String, PathBuf)> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("workspace manifest");
    let members = manifest.split("members = [").nth(1).and_then(|m| m.split(']').next()).expect("members");
    members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|dir| {
            let toml = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).expect("member manifest");
            let name = toml
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_owned())
                .expect("package name");
            (name, root.join(dir))
        })
        .collect()
}

/// What is wrong with one command line, if anything.
fn problems(root: &Path, packages: &BTreeSet<(String, PathBuf)>, command: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut found = Vec::new();
    for word in &words {
        let path = word.trim_start_matches("./");
        let is_repo_path = ["scripts/", "cli/", "tests/", "images/", "profiler-image/", "profiler-ebpf/", "docs/"]
            .iter()
            .any(|p| path.starts_with(p));
        if is_repo_path && !path.contains(['*', '$', '<', '>', '|']) {
            let file = root.join(path.trim_end_matches([',', ')', ';']));
            if !file.exists() {
                found.push(format!("`{path}` does not exist"));
            } else if path.ends_with(".sh") && !is_executable(&file) {
                found.push(format!("`{path}` is not executable"));
            }
        }
    }
    if words.contains(&"cargo") {
        let after = |flag: &str| words.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
        if let Some(package) = after("-p") {
            match packages.iter().find(|(name, _)| name == package) {
                None => found.push(format!("no workspace package `{package}`")),
                Some((_, dir)) => {
                    for (flag, sub) in [("--bench", "benches"), ("--test", "tests")] {
                        if let Some(target) = after(flag) {
                            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
                            let declared = manifest.contains(&format!("name = \"{target}\""));
                            if !declared && !dir.join(sub).join(format!("{target}.rs")).is_file() {
                                found.push(format!("package `{package}` has no {flag} `{target}`"));
                            }
                        }
                    }
                }
            }
        }
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[test]
fn every_documented_command_names_things_that_exist() {
    let root = repo_root();
    let packages = packages(&root);
    let mut docs: Vec<PathBuf> = vec![root.join("README.md")];
    docs.extend(
        std::fs::read_dir(root.join("docs"))
            .expect("docs/")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let mut wrong = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("a doc");
        for (line, command) in command_lines(&text) {
            checked += 1;
            for problem in problems(&root, &packages, &command) {
                wrong.push(format!("{}:{line}: {problem}\n    {command}", doc.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} command lines found in the docs: is the parser broken?");
    assert!(wrong.is_empty(), "documented commands that cannot run as written:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_catches_what_it_is_for() {
    let root = repo_root();
    let packages = packages(&root);
    assert!(problems(&root, &packages, "scripts/test.sh").is_empty());
    assert_eq!(problems(&root, &packages, "scripts/nope.sh"), ["`scripts/nope.sh` does not exist"]);
    assert!(problems(&root, &packages, "cargo bench -p eagle-tests --bench cluster_fanout").is_empty());
    assert_eq!(
        problems(&root, &packages, "cargo bench -p eagle-tests --bench nope"),
        ["package `eagle-tests` has no --bench `nope`"]
    );
    assert_eq!(problems(&root, &packages, "cargo test -p nope"), ["no workspace package `nope`"]);
}

/// The benchmark command of docs/performance.md, run as written from the workspace root,
/// names the CLI by a path relative to that root: the tests' helper resolves it there.
#[test]
fn a_relative_cli_path_is_taken_from_the_workspace_root() {
    let root = repo_root();
    let built = eagle_tests::target_dir().join("kubectl-eagle");
    let relative = built.strip_prefix(&root).expect("the target dir is inside the workspace");
    // nextest runs each test in a process of its own: the variable stays here.
    std::env::set_var("EAGLE_KUBECTL_EAGLE", relative);
    assert_eq!(eagle_tests::kubectl_eagle(), built);
}
