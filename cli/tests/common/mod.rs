//! Helpers of the integration tests: run the real binary, temporary directories, fixture files
//! (with `EAGLE_BLESS=1` to rewrite the expected ones), and independent readers of the output
//! formats: pprof decoded with the CLI's own prost structs, speedscope checked against its
//! JSON schema.

#![allow(dead_code)] // each test binary uses a part

#[path = "snapshot.rs"]
mod snapshot;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use eagle_proto::FoldedStacks;
use serde_json::Value;

#[path = "../../src/output/pprof_proto.rs"]
pub mod pprof_proto;

pub const BIN: &str = env!("CARGO_BIN_EXE_kubectl-eagle");

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The one line a failure prints, asserted to be one line.
    pub fn error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected on stderr, got: {}", self.stderr);
        lines[0]
    }
}

/// Runs `kubectl-eagle ARGS` in `cwd`, with `stdin` as its standard input.
pub fn eagle_with_input(cwd: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the kubectl-eagle binary runs");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn eagle(cwd: &Path, args: &[&str]) -> Run {
    eagle_with_input(cwd, args, b"")
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kube-eagle-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    pub fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compares `actual` with the expected file (see `snapshot.rs` for `EAGLE_BLESS=1`).
pub fn assert_expected(expected: &Path, actual: &str) {
    snapshot::assert_snapshot(expected, actual)
}

/// The folded stacks of a file, merged and sorted: what every output must hold.
pub fn folded(path: &Path) -> FoldedStacks {
    FoldedStacks::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Decodes a gzipped pprof file with the CLI's prost structs, checks the rules of
/// profile.proto that readers rely on, and rebuilds folded stacks from it independently of the
/// CLI's own decoder: labels first (namespace, workload, pod, container, process), then the
/// locations root first.
pub fn pprof_stacks(gz: &[u8]) -> (FoldedStacks, pprof_proto::Profile) {
    use prost::Message;
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "pprof files are gzipped");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut bytes).unwrap();
    let p = pprof_proto::Profile::decode(&bytes[..]).expect("a valid profile.proto");
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(p.string_table[0], "", "string_table[0] must be empty");
    let ids = |v: Vec<u64>| {
        assert!(v.iter().all(|id| *id != 0), "ids are nonzero");
        let set: HashSet<u64> = v.iter().copied().collect();
        assert_eq!(set.len(), v.len(), "ids are unique");
        set
    };
    let functions = ids(p.function.iter().map(|f| f.id).collect());
    let names: HashSet<&str> = p.function.iter().map(|f| s(f.name)).collect();
    assert_eq!(names.len(), p.function.len(), "functions are deduplicated by name");
    let locations = ids(p.location.iter().map(|l| l.id).collect());
    let mappings = ids(p.mapping.iter().map(|m| m.id).collect());
    for l in &p.location {
        assert!(l.mapping_id == 0 || mappings.contains(&l.mapping_id));
        assert!(l.line.iter().all(|line| functions.contains(&line.function_id)));
    }
    let function_name = |id: u64| s(p.function.iter().find(|f| f.id == id).unwrap().name);
    let keys =
        [("namespace", "namespace/"), ("workload", ""), ("pod", "pod/"), ("container", "container/"), ("process", "")];
    let mut folded = FoldedStacks::new();
    for sample in &p.sample {
        assert_eq!(sample.value.len(), p.sample_type.len(), "one value per sample type");
        let mut frames: Vec<String> = Vec::new();
        for (key, prefix) in keys {
            if let Some(l) = sample.label.iter().find(|l| s(l.key) == key) {
                frames.push(format!("{prefix}{}", s(l.str)));
            }
        }
        for id in sample.location_id.iter().rev() {
            assert!(locations.contains(id), "sample names a missing location {id}");
            let loc = p.location.iter().find(|l| l.id == *id).unwrap();
            frames.extend(loc.line.iter().rev().map(|line| function_name(line.function_id).to_owned()));
        }
        folded.add(&frames, sample.value[0] as u64);
    }
    (folded, p)
}

/// A small JSON Schema interpreter for the keywords the schemas in tests/data use: type,
/// const, enum, required, properties, items, anyOf and local $ref. Any other keyword is a test
/// bug, not something to skip silently.
pub fn schema_errors(root: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let object = schema.as_object().expect("a schema is an object");
    for key in object.keys() {
        assert!(
            [
                "$schema",
                "$comment",
                "$ref",
                "definitions",
                "type",
                "const",
                "enum",
                "required",
                "properties",
                "items",
                "anyOf"
            ]
            .contains(&key.as_str()),
            "schema keyword `{key}` is not interpreted here"
        );
    }
    if let Some(r) = object.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/definitions/").expect("local refs only");
        return schema_errors(root, &root["definitions"][name], value, at);
    }
    if let Some(t) = object.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            other => panic!("type `{other}`"),
        };
        if !ok {
            errors.push(format!("{at}: expected {t}, found {value}"));
            return errors;
        }
    }
    if let Some(c) = object.get("const") {
        if c != value {
            errors.push(format!("{at}: expected {c}, found {value}"));
        }
    }
    if let Some(e) = object.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            errors.push(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    for key in object.get("required").and_then(Value::as_array).into_iter().flatten() {
        let key = key.as_str().unwrap();
        if value.get(key).is_none() {
            errors.push(format!("{at}: `{key}` is required"));
        }
    }
    for (key, sub) in object.get("properties").and_then(Value::as_object).into_iter().flatten() {
        if let Some(v) = value.get(key) {
            errors.extend(schema_errors(root, sub, v, &format!("{at}.{key}")));
        }
    }
    if let (Some(items), Some(array)) = (object.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            errors.extend(schema_errors(root, items, v, &format!("{at}[{i}]")));
        }
    }
    if let Some(any) = object.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|s| schema_errors(root, s, value, at).is_empty()) {
            errors.push(format!("{at}: matches none of anyOf"));
        }
    }
    errors
}

/// Validates a speedscope file against tests/data/speedscope.schema.json and the rules the
/// schema cannot say (indices in range, one weight per sample), and rebuilds its stacks.
pub fn speedscope_stacks(json: &[u8]) -> FoldedStacks {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("speedscope.schema.json")).unwrap()).unwrap();
    let file: Value = serde_json::from_slice(json).expect("speedscope output is JSON");
    let errors = schema_errors(&schema, &schema, &file, "$");
    assert!(errors.is_empty(), "speedscope schema violations:\n{}", errors.join("\n"));
    let frames: Vec<&str> =
        file["shared"]["frames"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    let profile = &file["profiles"][0];
    let samples = profile["samples"].as_array().unwrap();
    let weights = profile["weights"].as_array().unwrap();
    assert_eq!(samples.len(), weights.len(), "one weight per sample");
    let mut folded = FoldedStacks::new();
    for (stack, weight) in samples.iter().zip(weights) {
        let names: Vec<&str> = stack
            .as_array()
            .unwrap()
            .iter()
            .map(|i| *frames.get(i.as_u64().unwrap() as usize).expect("frame index in range"))
            .collect();
        folded.add(&names, weight.as_u64().unwrap());
    }
    assert_eq!(profile["endValue"].as_u64(), Some(folded.total()), "endValue is the total weight");
    folded
}
