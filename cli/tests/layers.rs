//! The CLI's modules in layers, kept so by reading their sources:
//!
//! - clap is seen only at the edge (the binary `main.rs`, the library's root `lib.rs`, `args/`): every argument struct lives there and
//!   is turned once into a typed plan; nothing below imports `args` or `clap`;
//! - `commands::*` (one module per subcommand, thin glue) are imported by the edge only;
//! - the modules import each other without a cycle.
//!
//! Edges come from `crate::`, `super::` and `self::` paths (in `use` lines and inline), and from
//! a parent module naming one of its children (`plan::job_for_node` in `cluster/mod.rs`). A
//! file's `#[cfg(test)] mod tests` is left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`cluster::plan`; the crate root is ``) -> source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                // A unit-test module kept in a file of its own (`#[cfg(test)] #[path = "x_tests.rs"]`)
                // is test code: tests may reach anywhere.
                if stem.ends_with("_tests") {
                    continue;
                }
                // `main.rs` is the thin binary over the library: the edge, outside the module tree.
                if prefix.is_empty() && stem == "main" {
                    continue;
                }
                let mut p = prefix.to_vec();
                if !(stem == "mod" || (prefix.is_empty() && stem == "lib")) {
                    p.push(stem.to_owned());
                }
                out.insert(p.join("::"), path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The source without its unit-test module (private or shared with sibling tests) and comments.
fn code_of(text: &str) -> String {
    let test_module = ["mod tests", "pub(super) mod tests", "pub(crate) mod tests"]
        .iter()
        .filter_map(|m| text.find(&format!("#[cfg(test)]\n{m}")))
        .min();
    let text = match test_module {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate`, `super`, `self` or a child module's name, with the
/// groups of `use a::{b, c::d}` expanded.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let bytes: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if starts_word && (bytes[i].is_alphabetic() || bytes[i] == '_') {
            let (expanded, end) = parse_path(&bytes, i);
            for p in expanded {
                let head = p[0].as_str();
                if p.len() > 1 && (matches!(head, "crate" | "super" | "self") || children.contains(head)) {
                    out.push(p);
                }
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses `a::b::{c, d::e}` at `at`: the paths it names and where it ends.
fn parse_path(s: &[char], at: usize) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    let mut i = at;
    loop {
        let start = i;
        while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        if i == start {
            break;
        }
        segments.push(s[start..i].iter().collect::<String>());
        if s.get(i) == Some(&':') && s.get(i + 1) == Some(&':') {
            i += 2;
            if s.get(i) == Some(&'{') {
                i += 1;
                let mut out = Vec::new();
                loop {
                    while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
                        i += 1;
                    }
                    if i >= s.len() || s[i] == '}' {
                        return (out, i + 1);
                    }
                    let (inner, end) = parse_path(s, i);
                    for p in inner {
                        let mut full = segments.clone();
                        full.extend(p);
                        out.push(full);
                    }
                    // Skip ` as name` and anything else up to the next item.
                    i = end;
                    while i < s.len() && s[i] != ',' && s[i] != '}' {
                        i += 1;
                    }
                }
            }
            continue;
        }
        break;
    }
    (vec![segments], i)
}

/// The module a path from `from` leads to: the longest known module on it.
fn resolve(from: &str, path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut base: Vec<String> = if from.is_empty() { Vec::new() } else { from.split("::").map(String::from).collect() };
    let mut rest = path;
    match path[0].as_str() {
        "crate" => {
            base.clear();
            rest = &path[1..];
        }
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    let mut found = None;
    let mut at = base.clone();
    if known.contains_key(&at.join("::")) {
        found = Some(at.join("::"));
    }
    for segment in rest {
        at.push(segment.clone());
        if known.contains_key(&at.join("::")) {
            found = Some(at.join("::"));
        } else {
            break;
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut graph = BTreeMap::new();
    for (module, file) in &known {
        let prefix = if module.is_empty() { String::new() } else { format!("{module}::") };
        let children: BTreeSet<String> = known
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).filter(|_| k != module))
            .filter(|rest| !rest.contains("::") && !rest.is_empty())
            .map(String::from)
            .collect();
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let edges: BTreeSet<String> = paths(&code, &children)
            .iter()
            .map(|p| {
                if children.contains(p[0].as_str()) {
                    let mut full = vec!["self".to_owned()];
                    full.extend(p.iter().cloned());
                    full
                } else {
                    p.clone()
                }
            })
            .filter_map(|p| resolve(module, &p, &known))
            .filter(|to| to != module)
            .collect();
        graph.insert(module.clone(), edges);
    }
    graph
}

fn shown(module: &str) -> &str {
    if module.is_empty() {
        "lib"
    } else {
        module
    }
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    // Depth-first search with colors; a grey node reached again closes a cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node, 1);
        stack.push(node);
        for next in &graph[node] {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| *n == next).unwrap();
                    let mut cycle: Vec<&str> = stack[from..].iter().map(|n| shown(n)).collect();
                    cycle.push(shown(next));
                    cycles.push(cycle.join(" -> "));
                }
                Some(_) => {}
                None => visit(next, graph, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(node, 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            visit(node, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles among cli/src modules:\n  {}", cycles.join("\n  "));
}

#[test]
fn clap_args_and_commands_stay_at_the_edge() {
    let graph = graph();
    let is_edge = |module: &str| module.is_empty() || module == "args" || module.starts_with("args::");
    let mut wrong = Vec::new();
    for (module, edges) in &graph {
        if is_edge(module) {
            continue;
        }
        for to in edges {
            if is_edge(to) || (to.starts_with("commands") && !module.starts_with("commands")) {
                wrong.push(format!("{} imports {to}", shown(module)));
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (module, file) in modules(&src) {
        if is_edge(&module) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        if code.contains("clap::") || code.contains("use clap") {
            wrong.push(format!("{} uses clap", shown(&module)));
        }
    }
    assert!(
        wrong.is_empty(),
        "only main.rs, lib.rs and args/ may see clap and the commands:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_graph_reader_sees_grouped_and_inline_paths() {
    let children = BTreeSet::from(["plan".to_owned()]);
    let code = "use crate::{a::B, c::{d, e::F as G}};\nlet x = super::x::y(); plan::job(); notplan::x();";
    let found: Vec<String> = paths(code, &children).iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["crate::a::B", "crate::c::d", "crate::c::e::F", "super::x::y", "plan::job"]);
}
