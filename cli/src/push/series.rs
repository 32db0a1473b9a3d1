//! A profile cut into series, the unit receivers store and label: the stacks of one namespace,
//! workload, pod and container each, with those frames taken off the top and kept as labels.
//! The process frame (`comm (pid)`) stays: pids change with every restart, and as a label
//! they would make a new series each time.

use std::collections::BTreeMap;

use eagle_proto::FoldedStacks;

use crate::hierarchy::{self, Level};

/// What a series is, from the hierarchy frames above its stacks; `None` where the profile
/// does not say (`--group-by` dropped the level, or a local profile has none).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesLabels {
    pub namespace: Option<String>,
    /// The workload's kind as kube-eagle's frames spell it: `deployment`, `statefulset`...
    pub workload_kind: Option<String>,
    pub workload: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

impl SeriesLabels {
    /// The service a receiver files the series under: `--push-service`, else
    /// `NAMESPACE/WORKLOAD` (how Grafana Alloy names Kubernetes services: by what is deployed,
    /// not by replica), else `NAMESPACE/POD`, else the container, else `kube-eagle`.
    pub fn service(&self, chosen: Option<&str>) -> String {
        if let Some(s) = chosen {
            return s.to_owned();
        }
        match (&self.namespace, &self.workload, &self.pod, &self.container) {
            (Some(ns), Some(w), _, _) => format!("{ns}/{w}"),
            (Some(ns), None, Some(p), _) => format!("{ns}/{p}"),
            (None, _, _, Some(c)) => c.clone(),
            (Some(ns), None, None, _) => ns.clone(),
            _ => "kube-eagle".to_owned(),
        }
    }

    /// The labels that are set, as (name, value) in a fixed order.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("namespace", &self.namespace),
            ("workload_kind", &self.workload_kind),
            ("workload", &self.workload),
            ("pod", &self.pod),
            ("container", &self.container),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

pub struct Series {
    pub labels: SeriesLabels,
    /// The stacks below the labelled frames, starting at the process frame when there is one.
    pub folded: FoldedStacks,
}

/// The series of `folded`, ordered by their labels.
pub fn split(folded: &FoldedStacks) -> Vec<Series> {
    let mut series: BTreeMap<SeriesLabels, FoldedStacks> = BTreeMap::new();
    let mut frames: Vec<&str> = Vec::new();
    for (stack, count) in folded.iter() {
        frames.clear();
        frames.extend(stack.split(';'));
        let mut labels = SeriesLabels::default();
        let mut skip = 0;
        for (level, i) in hierarchy::levels(&frames) {
            let value = level.value(frames[i]).to_owned();
            match level {
                Level::Namespace => labels.namespace = Some(value),
                Level::Workload => match value.split_once('/') {
                    Some((kind, name)) => {
                        labels.workload_kind = Some(kind.to_owned());
                        labels.workload = Some(name.to_owned());
                    }
                    None => labels.workload = Some(value),
                },
                Level::Pod => labels.pod = Some(value),
                Level::Container => labels.container = Some(value),
                Level::Process => break,
            }
            skip = i + 1;
        }
        series.entry(labels).or_default().add(&frames[skip..], count);
    }
    series.into_iter().map(|(labels, folded)| Series { labels, folded }).collect()
}

/// `comm (pid)` as its parts.
pub fn process(frame: &str) -> Option<(&str, u32)> {
    let (comm, pid) = frame.strip_suffix(')')?.rsplit_once(" (")?;
    Some((comm, pid.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_pod_and_keeps_the_process_frame() {
        let folded = FoldedStacks::parse(
            "namespace/shop;deployment/api;pod/api-1;container/app;api (10);main;hot 3\n\
             namespace/shop;deployment/api;pod/api-2;container/app;api (11);main;hot 2\n\
             namespace/shop;deployment/api;pod/api-2;container/app;api (11);main;cold 1\n",
        )
        .unwrap();
        let series = split(&folded);
        assert_eq!(series.len(), 2);
        let second = &series[1];
        assert_eq!(
            second.labels.pairs(),
            [
                ("namespace", "shop"),
                ("workload_kind", "deployment"),
                ("workload", "api"),
                ("pod", "api-2"),
                ("container", "app")
            ]
        );
        assert_eq!(second.labels.service(None), "shop/api");
        assert_eq!(second.labels.service(Some("checkout")), "checkout");
        assert_eq!(second.folded.to_text(), "api (11);main;cold 1\napi (11);main;hot 2\n");
        assert_eq!(process("api (11)"), Some(("api", 11)));
        assert_eq!(process("main"), None);
    }

    #[test]
    fn a_local_profile_is_one_unlabelled_series() {
        let folded = FoldedStacks::parse("python3 (7);main;work 4\n").unwrap();
        let series = split(&folded);
        assert_eq!(series.len(), 1);
        assert!(series[0].labels.pairs().is_empty());
        assert_eq!(series[0].labels.service(None), "kube-eagle");
        assert_eq!(series[0].folded.total(), 4);
    }
}
