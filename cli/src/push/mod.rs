//! Pushes to where teams keep their data. `--push RECEIVER URL`: the written profile also
//! delivered to Grafana Pyroscope (`pyroscope.rs`) and OTLP receivers of the profiles signal
//! (`otlp.rs`). `net --push-gateway URL`: a window's metrics to a Prometheus Pushgateway
//! (`gateway.rs`, on its own).
//! Both get the profile cut into series with the target's labels (`series.rs`). A failed push
//! is reported on one line per receiver and turns the exit code into 11; the output file is
//! written before any push, so it is there either way.

pub mod gateway;
mod http;
mod otlp;
mod otlp_proto;
mod pyroscope;
mod series;
pub mod target;
mod window;

use std::time::SystemTime;

use eagle_proto::FoldedStacks;

use crate::output::Labels;
use crate::run_info::RunInfo;
use target::{PushPlan, Receiver};
use window::Window;

/// What one receiver did with the profile.
pub struct Pushed {
    pub receiver: Receiver,
    pub url: String,
    /// `3 series` or why it failed.
    pub outcome: Result<String, String>,
}

/// Pushes the profile to every receiver of `plan`, one after the other; a failure does not
/// keep the profile from the others.
pub fn deliver(plan: &PushPlan, folded: &FoldedStacks, labels: &Labels, run: &RunInfo) -> Vec<Pushed> {
    let series = series::split(folded);
    let window = Window::of(run, SystemTime::now());
    let service = plan.service.as_deref();
    plan.targets
        .iter()
        .map(|target| {
            let outcome = match target.receiver {
                Receiver::Pyroscope => pyroscope::requests(&target.url, &series, labels, run, window, service)
                    .and_then(|requests| http::post_all(requests, &plan.headers))
                    .map(|_| format!("{} series", series.len())),
                Receiver::Otlp => otlp::request(&target.url, &series, run, window, service)
                    .and_then(|request| http::post_all(vec![request], &plan.headers))
                    .and_then(|answers| answers.iter().try_for_each(otlp::check_answer))
                    .map(|_| format!("{} series", series.len())),
            };
            Pushed { receiver: target.receiver, url: target.url.to_string(), outcome }
        })
        .collect()
}
