//! `--push otlp URL`: OTLP/HTTP of the profiles signal, `POST /v1development/profiles` with an
//! `ExportProfilesServiceRequest` in binary protobuf (messages in `otlp_proto.rs`).
//!
//! One `ResourceProfiles` per series (see `series.rs`), its resource named with the semantic
//! conventions' Kubernetes attributes (`service.name`, `k8s.namespace.name`,
//! `k8s.deployment.name`..., `k8s.pod.name`, `k8s.container.name`); the process of each
//! sample as sample attributes `process.pid` and `process.executable.name`. One dictionary
//! for all of them, as the protocol shares it.

use std::collections::HashMap;
use std::time::Duration;

use eagle_proto::Unit;
use http::Uri;
use prost::Message;

use super::http::{join, Answer, Request};
use super::otlp_proto::{
    AnyValue, ExportProfilesServiceRequest, ExportProfilesServiceResponse, Function, InstrumentationScope, KeyValue,
    KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary, Resource, ResourceProfiles, Sample,
    ScopeProfiles, Stack, Value, ValueType,
};
use super::series::{self, Series, SeriesLabels};
use super::window::Window;
use crate::run_info::RunInfo;

pub const PATH: &str = "/v1development/profiles";

/// The request that exports `series` to the OTLP receiver at `base`.
pub fn request(
    base: &Uri,
    series: &[Series],
    run: &RunInfo,
    window: Window,
    service: Option<&str>,
) -> Result<Request, String> {
    let body = build(series, run, window, service).encode_to_vec();
    Ok(Request {
        uri: join(base, PATH, None)?,
        content_type: "application/x-protobuf",
        body,
        what: format!("{} series", series.len()),
    })
}

/// A 2xx answer may still say that the receiver dropped profiles.
pub fn check_answer(answer: &Answer) -> Result<(), String> {
    if answer.body.is_empty() || answer.content_type.as_deref().is_some_and(|t| !t.contains("protobuf")) {
        return Ok(());
    }
    let response = ExportProfilesServiceResponse::decode(answer.body.as_ref())
        .map_err(|e| format!("the receiver's answer is not an ExportProfilesServiceResponse: {e}"))?;
    match response.partial_success {
        Some(p) if p.rejected_profiles > 0 => Err(format!(
            "the receiver rejected {} profile(s): {}",
            p.rejected_profiles,
            p.error_message.chars().filter(|c| !c.is_control()).take(200).collect::<String>()
        )),
        _ => Ok(()),
    }
}

#[derive(Default)]
struct Dictionary {
    table: ProfilesDictionary,
    strings: HashMap<String, i32>,
    functions: HashMap<String, i32>,
    stacks: HashMap<Vec<i32>, i32>,
    attributes: HashMap<(i32, String), i32>,
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Dictionary::default();
        d.table.mapping_table.push(Mapping::default());
        d.table.location_table.push(Location::default());
        d.table.function_table.push(Function::default());
        // The zero link with ids of their real lengths, for decoders that check them.
        d.table.link_table.push(Link { trace_id: vec![0; 16], span_id: vec![0; 8] });
        d.table.attribute_table.push(KeyValueAndUnit::default());
        d.table.stack_table.push(Stack::default());
        d.string("");
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.table.string_table.len() as i32;
        self.table.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// The location of a frame: one function, one location per name (there are no addresses).
    fn location(&mut self, name: &str) -> i32 {
        if let Some(i) = self.functions.get(name) {
            return *i;
        }
        let name_strindex = self.string(name);
        let function_index = self.table.function_table.len() as i32;
        self.table.function_table.push(Function { name_strindex, system_name_strindex: name_strindex });
        let location = self.table.location_table.len() as i32;
        self.table.location_table.push(Location { mapping_index: 0, lines: vec![Line { function_index }] });
        self.functions.insert(name.to_owned(), location);
        location
    }

    fn stack(&mut self, leaf_first: Vec<i32>) -> i32 {
        if let Some(i) = self.stacks.get(&leaf_first) {
            return *i;
        }
        let i = self.table.stack_table.len() as i32;
        self.table.stack_table.push(Stack { location_indices: leaf_first.clone() });
        self.stacks.insert(leaf_first, i);
        i
    }

    fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let key_strindex = self.string(key);
        let id = (key_strindex, format!("{value:?}"));
        if let Some(i) = self.attributes.get(&id) {
            return *i;
        }
        let i = self.table.attribute_table.len() as i32;
        self.table.attribute_table.push(KeyValueAndUnit {
            key_strindex,
            value: Some(AnyValue { value: Some(value) }),
            unit_strindex: 0,
        });
        self.attributes.insert(id, i);
        i
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(Value::String(value.to_owned())) }) }
}

/// The resource a series stands for, in the semantic conventions' names.
fn resource(labels: &SeriesLabels, service: Option<&str>) -> Resource {
    let mut attributes = vec![string_attribute("service.name", &labels.service(service))];
    if let Some(ns) = &labels.namespace {
        attributes.push(string_attribute("k8s.namespace.name", ns));
    }
    // `pod/solo` as the workload is the pod itself, named below.
    if let (Some(kind), Some(name)) = (&labels.workload_kind, &labels.workload) {
        if kind != "pod" {
            attributes.push(string_attribute(&format!("k8s.{kind}.name"), name));
        }
    }
    if let Some(pod) = &labels.pod {
        attributes.push(string_attribute("k8s.pod.name", pod));
    }
    if let Some(container) = &labels.container {
        attributes.push(string_attribute("k8s.container.name", container));
    }
    Resource { attributes }
}

pub fn build(series: &[Series], run: &RunInfo, window: Window, service: Option<&str>) -> ExportProfilesServiceRequest {
    let mut dict = Dictionary::new();
    let unit = run.unit();
    // CPU samples at a known rate are CPU time, as OTLP's own profilers send it; else counts
    // in their unit, one period of one.
    let period_ns =
        run.frequency_hz.filter(|hz| *hz > 0 && unit == Unit::CpuSamples).map(|hz| (1_000_000_000 / hz) as i64);
    let (kind, unit_name) = match period_ns {
        Some(_) => ("cpu", "nanoseconds"),
        None => unit.pprof_type(),
    };
    let sample_type = ValueType { type_strindex: dict.string(kind), unit_strindex: dict.string(unit_name) };
    let duration = run.duration.unwrap_or(Duration::from_secs(window.until_unix_s.saturating_sub(window.from_unix_s)));
    let time_unix_nano = match run.started_unix_ms {
        Some(ms) => ms.saturating_mul(1_000_000),
        None => window.from_unix_s.saturating_mul(1_000_000_000),
    };
    let scope = InstrumentationScope { name: "kube-eagle".into(), version: env!("CARGO_PKG_VERSION").into() };
    let mut resource_profiles = Vec::with_capacity(series.len());
    let mut frames: Vec<&str> = Vec::new();
    for s in series {
        let mut samples = Vec::with_capacity(s.folded.len());
        for (stack, count) in s.folded.sorted() {
            frames.clear();
            frames.extend(stack.split(';'));
            let mut attribute_indices = Vec::new();
            let mut code = &frames[..];
            if let (Some((comm, pid)), true) = (frames.first().and_then(|f| series::process(f)), frames.len() > 1) {
                attribute_indices.push(dict.attribute("process.pid", Value::Int(i64::from(pid))));
                attribute_indices.push(dict.attribute("process.executable.name", Value::String(comm.to_owned())));
                code = &frames[1..];
            }
            let leaf_first: Vec<i32> = code.iter().rev().map(|name| dict.location(name)).collect();
            let stack_index = dict.stack(leaf_first);
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            let value = period_ns.map_or(count, |p| count.saturating_mul(p));
            samples.push(Sample { stack_index, attribute_indices, link_index: 0, values: vec![value] });
        }
        let profile = Profile {
            sample_type: Some(sample_type.clone()),
            samples,
            time_unix_nano,
            duration_nano: duration.as_nanos() as u64,
            period_type: Some(sample_type.clone()),
            period: period_ns.unwrap_or(1),
            ..Default::default()
        };
        resource_profiles.push(ResourceProfiles {
            resource: Some(resource(&s.labels, service)),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(scope.clone()),
                profiles: vec![profile],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ExportProfilesServiceRequest { resource_profiles, dictionary: Some(dict.table) }
}

#[cfg(test)]
mod tests {
    use eagle_proto::FoldedStacks;

    use super::*;

    #[test]
    fn tables_start_with_their_zero_values_and_share_entries() {
        let folded = FoldedStacks::parse(
            "namespace/shop;deployment/api;pod/api-1;container/app;api (10);main;hot 3\n\
             namespace/shop;deployment/api;pod/api-2;container/app;api (11);main;hot 2\n",
        )
        .unwrap();
        let series = series::split(&folded);
        let run = RunInfo { frequency_hz: Some(100), ..Default::default() };
        let request = build(&series, &run, Window { from_unix_s: 10, until_unix_s: 20 }, None);
        let dict = request.dictionary.unwrap();
        assert_eq!(dict.string_table[0], "");
        assert_eq!(dict.stack_table[0], Stack::default());
        assert_eq!(dict.location_table[0], Location::default());
        assert_eq!(dict.function_table[0], Function::default());
        assert_eq!(dict.attribute_table[0], KeyValueAndUnit::default());
        assert_eq!(dict.link_table[0].trace_id.len(), 16);
        // Both pods' stacks are the same code: one stack, two locations, two functions.
        assert_eq!(dict.stack_table.len(), 2);
        assert_eq!(dict.location_table.len(), 3);
        assert_eq!(request.resource_profiles.len(), 2);
        let profile = &request.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(profile.period, 10_000_000);
        assert_eq!(profile.samples[0].values, [30_000_000]);
        assert_eq!(profile.duration_nano, 10_000_000_000);
    }

    #[test]
    fn a_dropped_profile_in_a_2xx_answer_is_a_failure() {
        let answer = |body: Vec<u8>| Answer { content_type: Some("application/x-protobuf".into()), body: body.into() };
        let rejected = ExportProfilesServiceResponse {
            partial_success: Some(super::super::otlp_proto::ExportProfilesPartialSuccess {
                rejected_profiles: 2,
                error_message: "unsupported\nversion".into(),
            }),
        };
        let err = check_answer(&answer(rejected.encode_to_vec())).unwrap_err();
        assert_eq!(err, "the receiver rejected 2 profile(s): unsupportedversion");
        assert!(check_answer(&answer(Vec::new())).is_ok());
        assert!(check_answer(&answer(vec![0xff, 0xff])).is_err());
    }
}
