//! `--push pyroscope URL`: Grafana Pyroscope's HTTP ingest API, `POST /ingest` with the
//! profile as a gzipped pprof body and what it is in the query:
//! `name=SERVICE{namespace=shop,workload_kind=deployment,workload=api,pod=api-1,container=app}`,
//! `from`/`until` (UNIX seconds), `format=pprof`, `sampleRate` when known. Pyroscope makes
//! `service_name` of the name and series labels of the braces, so one request goes per series
//! (see `series.rs`); the process frame stays in the stacks.

use http::Uri;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::http::{join, Request};
use super::series::Series;
use super::window::Window;
use crate::output::pprof;
use crate::output::Labels;
use crate::run_info::RunInfo;

/// The requests that push `series` to the Pyroscope at `base`.
pub fn requests(
    base: &Uri,
    series: &[Series],
    labels: &Labels,
    run: &RunInfo,
    window: Window,
    service: Option<&str>,
) -> Result<Vec<Request>, String> {
    series
        .iter()
        .map(|s| {
            let service = s.labels.service(service);
            let pairs: Vec<String> = s.labels.pairs().iter().map(|(k, v)| format!("{k}={}", clean(v))).collect();
            let name = match pairs.is_empty() {
                true => clean(&service),
                false => format!("{}{{{}}}", clean(&service), pairs.join(",")),
            };
            let mut query = format!(
                "name={}&from={}&until={}&format=pprof",
                utf8_percent_encode(&name, NON_ALPHANUMERIC),
                window.from_unix_s,
                window.until_unix_s
            );
            if let Some(hz) = run.frequency_hz.filter(|_| run.unit() == eagle_proto::Unit::CpuSamples) {
                query.push_str(&format!("&sampleRate={hz}"));
            }
            let profile = pprof::build_labelled(&s.folded, labels, run, &[]);
            Ok(Request {
                uri: join(base, "/ingest", Some(&query))?,
                content_type: "application/octet-stream",
                body: pprof::gzipped(&profile),
                what: name,
            })
        })
        .collect()
}

/// A label value or service name as the name's syntax allows: its delimiters and control
/// characters become `_`. Kubernetes names never have them; a crafted input file may.
fn clean(value: &str) -> String {
    value.chars().map(|c| if c.is_control() || "{},=\"".contains(c) { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_in_values_cannot_forge_labels() {
        assert_eq!(clean("a,pod=x}"), "a_pod_x_");
        assert_eq!(clean("shop/api-1.v2"), "shop/api-1.v2");
    }
}
