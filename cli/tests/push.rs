//! `--push` end to end through the real binary, against a recorded-request double of each
//! receiver: a small HTTP/1.1 server on loopback that keeps every request and answers as told.
//! No Pyroscope or OpenTelemetry Collector binary ships in a registry this project can use
//! (crates.io, PyPI, Debian, npm), so the double checks what the receivers document: method,
//! path, query, headers, and a body that decodes, with the profile's own prost structs, into
//! exactly the stacks and labels of the profile written beside it.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;

use common::{data_dir, eagle, folded, pprof_stacks, TempDir};
use eagle_proto::FoldedStacks;
use eagle_tests::receiver::Double;
use prost::Message;

#[path = "../src/push/otlp_proto.rs"]
mod otlp_proto;

/// Pyroscope's `name`: `SERVICE{k=v,...}` as the service and the labels.
fn parse_name(name: &str) -> (String, BTreeMap<String, String>) {
    let (service, labels) = name.strip_suffix('}').unwrap().split_once('{').unwrap();
    let labels = labels.split(',').map(|kv| kv.split_once('=').unwrap()).map(|(k, v)| (k.into(), v.into())).collect();
    (service.to_owned(), labels)
}

#[test]
fn pyroscope_gets_one_labelled_pprof_per_series() {
    let double = Double::start(200, "");
    let tmp = TempDir::new("push-pyroscope");
    let run = eagle(
        &data_dir(),
        &[
            "convert",
            "hierarchy.folded",
            "-o",
            &tmp.arg("out.pb.gz"),
            "-f",
            "99",
            "--push",
            "pyroscope",
            &double.url,
            "--push-header",
            "X-Scope-OrgID: team-a",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(&format!("pushed 4 series to pyroscope {}/", double.url)), "{}", run.stderr);
    let requests = double.requests();
    assert_eq!(requests.len(), 4, "one request per namespace/workload/pod/container");
    let mut received = FoldedStacks::new();
    let mut pods = Vec::new();
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/ingest"));
        assert_eq!(r.headers["x-scope-orgid"], "team-a");
        assert_eq!(r.headers["content-type"], "application/octet-stream");
        assert_eq!(r.query["format"], "pprof");
        assert_eq!(r.query["sampleRate"], "99");
        let from: u64 = r.query["from"].parse().unwrap();
        let until: u64 = r.query["until"].parse().unwrap();
        assert!(from < until, "{from} < {until}");
        let (service, labels) = parse_name(&r.query["name"]);
        assert_eq!(service, format!("shop/{}", labels["workload"]));
        assert_eq!(labels["namespace"], "shop");
        pods.push(format!("{}/{}", labels["pod"], labels["container"]));
        // The body: a valid pprof whose stacks start at the process frame (no labels: the
        // series labels are in the name).
        let (stacks, profile) = pprof_stacks(&r.body);
        assert!(profile.sample.iter().all(|s| s.label.is_empty()), "no sample labels");
        let prefix = [
            format!("namespace/{}", labels["namespace"]),
            format!("{}/{}", labels["workload_kind"], labels["workload"]),
            format!("pod/{}", labels["pod"]),
            format!("container/{}", labels["container"]),
        ];
        for (stack, count) in stacks.iter() {
            assert!(stack.split(';').next().unwrap().ends_with(')'), "the process frame comes first: {stack}");
            let frames: Vec<&str> = prefix.iter().map(String::as_str).chain(stack.split(';')).collect();
            received.add(&frames, count);
        }
    }
    assert_eq!(pods, ["api-7d9f8-x1abc/app", "api-7d9f8-y2def/app", "api-7d9f8-y2def/sidecar", "solo/job"]);
    let expected = folded(&data_dir().join("hierarchy.folded"));
    assert_eq!(received.to_text(), expected.to_text(), "the pushed series add up to the profile");
    // The file beside holds the same profile.
    let (written, _) = pprof_stacks(&std::fs::read(tmp.path("out.pb.gz")).unwrap());
    assert_eq!(written.to_text(), expected.to_text());
}

#[test]
fn otlp_gets_one_resource_per_series_with_kubernetes_attributes() {
    let double = Double::start(200, "");
    let tmp = TempDir::new("push-otlp");
    let run = eagle(
        &data_dir(),
        &["convert", "hierarchy.folded", "-o", &tmp.arg("out.folded"), "-f", "99", "--push", "otlp", &double.url],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let requests = double.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1development/profiles"));
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let export =
        otlp_proto::ExportProfilesServiceRequest::decode(&r.body[..]).expect("an ExportProfilesServiceRequest");
    let dict = export.dictionary.expect("a dictionary");
    let s = |i: i32| dict.string_table[i as usize].as_str();
    assert_eq!(s(0), "");
    assert_eq!(export.resource_profiles.len(), 4);
    let mut received = FoldedStacks::new();
    for rp in &export.resource_profiles {
        let attrs: BTreeMap<&str, &str> = rp
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| match &kv.value.as_ref().unwrap().value {
                Some(otlp_proto::Value::String(v)) => (kv.key.as_str(), v.as_str()),
                other => panic!("{}: {other:?}", kv.key),
            })
            .collect();
        // A bare pod is its own workload: `pod/solo` above `pod/solo`, and no k8s.*.name of a
        // controller.
        let workload = attrs
            .get("k8s.deployment.name")
            .map_or(format!("pod/{}", attrs["k8s.pod.name"]), |d| format!("deployment/{d}"));
        assert_eq!(attrs["service.name"], format!("shop/{}", workload.split_once('/').unwrap().1));
        let prefix = [
            format!("namespace/{}", attrs["k8s.namespace.name"]),
            workload,
            format!("pod/{}", attrs["k8s.pod.name"]),
            format!("container/{}", attrs["k8s.container.name"]),
        ];
        let scope = &rp.scope_profiles[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "kube-eagle");
        let profile = &scope.profiles[0];
        let sample_type = profile.sample_type.as_ref().unwrap();
        assert_eq!((s(sample_type.type_strindex), s(sample_type.unit_strindex)), ("cpu", "nanoseconds"));
        assert_eq!(profile.period, 1_000_000_000 / 99);
        for sample in &profile.samples {
            let mut frames: Vec<String> = prefix.to_vec();
            let attr = |key: &str| {
                sample
                    .attribute_indices
                    .iter()
                    .map(|i| &dict.attribute_table[*i as usize])
                    .find(|a| s(a.key_strindex) == key)
            };
            let pid = match attr("process.pid").and_then(|a| a.value.clone()).and_then(|v| v.value) {
                Some(otlp_proto::Value::Int(pid)) => pid,
                other => panic!("process.pid: {other:?}"),
            };
            let comm = match attr("process.executable.name").and_then(|a| a.value.clone()).and_then(|v| v.value) {
                Some(otlp_proto::Value::String(comm)) => comm,
                other => panic!("process.executable.name: {other:?}"),
            };
            frames.push(format!("{comm} ({pid})"));
            let stack = &dict.stack_table[sample.stack_index as usize];
            for location in stack.location_indices.iter().rev() {
                let location = &dict.location_table[*location as usize];
                let function = &dict.function_table[location.lines[0].function_index as usize];
                frames.push(s(function.name_strindex).to_owned());
            }
            assert_eq!(sample.values[0] % profile.period, 0);
            received.add(&frames, (sample.values[0] / profile.period) as u64);
        }
    }
    let expected = folded(&data_dir().join("hierarchy.folded"));
    assert_eq!(received.to_text(), expected.to_text(), "the exported resources add up to the profile");
}

#[test]
fn a_failed_push_says_why_exits_11_and_keeps_the_file() {
    let refusing = Double::start(503, "ingester unavailable\n");
    // A port nobody listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let accepting = Double::start(200, "");
    let tmp = TempDir::new("push-fails");
    let out = tmp.arg("out.folded");
    let closed_url = format!("http://{closed}");
    let run = eagle(
        &data_dir(),
        &[
            "convert",
            "hierarchy.folded",
            "-o",
            &out,
            "--push",
            "pyroscope",
            &refusing.url,
            "--push",
            "otlp",
            &closed_url,
            "--push",
            "otlp",
            &accepting.url,
        ],
    );
    assert_eq!(run.code, 11, "{run:?}");
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("kubectl-eagle: error:")).collect();
    assert_eq!(errors.len(), 2, "{}", run.stderr);
    assert!(
        errors[0].contains("could not push the profile to pyroscope") && errors[0].contains("503"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("ingester unavailable") && errors[0].contains(&out), "{}", errors[0]);
    assert!(errors[0].contains("kubectl eagle convert"), "says how to push again: {}", errors[0]);
    assert!(errors[1].contains("could not push the profile to otlp") && errors[1].contains("refused"), "{}", errors[1]);
    // The other receiver still got it, and the file is whole.
    assert_eq!(accepting.requests().len(), 1);
    assert_eq!(folded(&tmp.path("out.folded")).to_text(), folded(&data_dir().join("hierarchy.folded")).to_text());
}

#[test]
fn bad_push_flags_are_usage_errors_before_any_work() {
    let tmp = TempDir::new("push-usage");
    for args in [
        vec!["--push", "jaeger", "http://127.0.0.1:1"],
        vec!["--push", "pyroscope", "127.0.0.1:4040"],
        vec!["--push", "pyroscope", "http://127.0.0.1:1", "--push-header", "no-colon"],
        vec!["--push-service", "x"],
    ] {
        let mut all = vec!["convert", "hierarchy.folded", "-o"];
        let out = tmp.arg("never.folded");
        all.push(&out);
        all.extend(args.iter().copied());
        let run = eagle(&data_dir(), &all);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.error_line().contains("--push"), "{}", run.stderr);
        assert!(!tmp.path("never.folded").exists());
    }
}

#[test]
fn a_detached_profile_leaves_the_push_to_fetch() {
    let run = eagle(&data_dir(), &["profile", "deployment/api", "-a", "--push", "pyroscope", "http://127.0.0.1:1"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.error_line().contains("pass it to `kubectl eagle fetch`"), "{}", run.stderr);
}
