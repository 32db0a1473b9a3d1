//! What a run's Jobs carry, the whole schema of the task store in one place: the labels that
//! select them, and the annotations `list` and `fetch` read back (the target, the node, the
//! window and rate, the run's size, and where each profiled container sits).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;

use crate::error::CliError;
use crate::placement::{Placement, Placements};

/// On everything kube-eagle creates; `clean` and `uninstall` touch nothing without it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kube-eagle");
/// The run a Job belongs to: its id.
pub const RUN_LABEL: &str = "kube-eagle.io/run";
/// What the user asked for, for `list` and for people reading the Job.
pub const ANNOTATION_TARGET: &str = "kube-eagle.io/target";
pub const ANNOTATION_NODE: &str = "kube-eagle.io/node";
pub const ANNOTATION_DURATION: &str = "kube-eagle.io/duration-ms";
/// Labels the probe Job of `doctor`: `list` does not show it (no run label); `clean --all` and
/// `uninstall` remove it (managed-by).
pub const PROBE_LABEL: &str = "kube-eagle.io/probe";
/// Container id -> namespace/workload/pod/container of every container a Job profiles, as
/// JSON `{"NS":{"WORKLOAD":{"POD":{"CONTAINER":"ID"}}}}`: each name once, so a node with a
/// hundred containers stays near 12 KiB (annotations may hold 256 KiB).
pub const ANNOTATION_PLACEMENTS: &str = "kube-eagle.io/placements";
/// How many Jobs (nodes) the run has: a Job missing from the store is then still counted.
pub const ANNOTATION_NODES: &str = "kube-eagle.io/nodes";
/// `true` on runs started with `-a`: nobody follows them; their results wait for `fetch`.
pub const ANNOTATION_ASYNC: &str = "kube-eagle.io/async";
pub const ANNOTATION_FREQUENCY: &str = "kube-eagle.io/frequency-hz";
/// The CLI version that created the run.
pub const ANNOTATION_CLI_VERSION: &str = "kube-eagle.io/cli-version";

/// On the objects `init` makes: which locked namespace they serve, so that two installations
/// (`--eagle-namespace`) keep apart and `uninstall` removes one.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// A run id, as a label value: what `profile` prints, 8 hex digits.
pub fn check_run_id(id: &str) -> Result<(), CliError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "`{id}` is not a run id: use the id `profile` printed (8 hex digits, as in `kubectl eagle list`)"
        )))
    }
}

/// What a Job records about its run beyond the plan's own annotations.
pub struct Task {
    pub nodes: usize,
    pub is_async: bool,
    pub frequency_hz: u64,
}

impl Task {
    pub fn annotate<'a>(&self, job: &mut Job, placements: impl IntoIterator<Item = (&'a str, &'a Placement)>) {
        let annotations = job.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(ANNOTATION_PLACEMENTS.into(), encode_placements(placements));
        annotations.insert(ANNOTATION_NODES.into(), self.nodes.to_string());
        annotations.insert(ANNOTATION_FREQUENCY.into(), self.frequency_hz.to_string());
        annotations.insert(ANNOTATION_CLI_VERSION.into(), env!("CARGO_PKG_VERSION").into());
        if self.is_async {
            annotations.insert(ANNOTATION_ASYNC.into(), "true".into());
        }
    }
}

type PlacementTree = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>>;

pub fn encode_placements<'a>(placements: impl IntoIterator<Item = (&'a str, &'a Placement)>) -> String {
    let mut tree = PlacementTree::new();
    for (id, p) in placements {
        tree.entry(p.namespace.clone())
            .or_default()
            .entry(p.workload.clone())
            .or_default()
            .entry(p.pod.clone())
            .or_default()
            .insert(p.container.clone(), id.to_owned());
    }
    serde_json::to_string(&tree).expect("maps of strings serialize")
}

pub fn decode_placements(text: &str) -> Result<Placements, String> {
    let tree: PlacementTree = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut placements = Placements::new();
    for (namespace, workloads) in tree {
        for (workload, pods) in workloads {
            for (pod, containers) in pods {
                for (container, id) in containers {
                    let placement = Placement {
                        namespace: namespace.clone(),
                        workload: workload.clone(),
                        pod: pod.clone(),
                        container,
                    };
                    placements.insert(id, placement);
                }
            }
        }
    }
    Ok(placements)
}

pub fn annotation<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn run_of(job: &Job) -> Option<&str> {
    job.metadata.labels.as_ref()?.get(RUN_LABEL).map(String::as_str)
}

pub fn name_of(job: &Job) -> &str {
    job.metadata.name.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(ns: &str, workload: &str, pod: &str, container: &str) -> Placement {
        Placement { namespace: ns.into(), workload: workload.into(), pod: pod.into(), container: container.into() }
    }

    #[test]
    fn placements_round_trip_compactly() {
        let a = placement("shop", "deployment/api", "api-1", "app");
        let b = placement("shop", "deployment/api", "api-1", "sidecar");
        let c = placement("shop", "pod/solo", "solo", "app");
        let text = encode_placements([("aaa", &a), ("bbb", &b), ("ccc", &c)]);
        assert_eq!(
            text,
            r#"{"shop":{"deployment/api":{"api-1":{"app":"aaa","sidecar":"bbb"}},"pod/solo":{"solo":{"app":"ccc"}}}}"#
        );
        let back = decode_placements(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back["bbb"], b);
        assert_eq!(back["ccc"], c);
        assert!(decode_placements("{not json").is_err());
    }

    #[test]
    fn run_ids_are_label_values() {
        assert!(check_run_id("9e2017d3").is_ok());
        for bad in ["", "-x", "ABC", "a b", "a,b", "x)"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }
}
