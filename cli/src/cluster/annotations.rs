//! What a run's Jobs carry, the whole schema of the task store in one place: the labels that
//! select them, and the annotations `list` and `fetch` read back (the target, the node, the
//! window and rate, the run's size, and where each profiled container sits).

use std::collections::BTreeMap;
use std::time::Duration;

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
/// On runs whose agents watch the network (issue #19): `only` for `net`, `beside-profile` for
/// `profile --net`. `fetch` writes their network report (`--net FILE`).
pub const ANNOTATION_NET: &str = "kube-eagle.io/net";
/// The CLI version that created the run.
pub const ANNOTATION_CLI_VERSION: &str = "kube-eagle.io/cli-version";
/// Who started the run, as the API server names them (`cluster::identity`): `list` and
/// `clean` act on one's own runs unless `--all-users`. On the Job and its pod template (an
/// orphaned pod keeps it).
pub const ANNOTATION_USER: &str = "kube-eagle.io/user";

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
    /// Who starts it; `None` when nothing says (it is then everyone's to see).
    pub user: Option<String>,
    pub net: NetSide,
}

/// Whether a run's agents watch the network, and whether it is all they do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetSide {
    #[default]
    None,
    /// `net`: the CPU sampler runs at 1 Hz beside it, its stacks are not shown.
    Only,
    /// `profile --net`.
    BesideProfile,
}

impl NetSide {
    fn annotation(self) -> Option<&'static str> {
        match self {
            NetSide::None => None,
            NetSide::Only => Some("only"),
            NetSide::BesideProfile => Some("beside-profile"),
        }
    }

    fn parse(text: Option<&str>) -> NetSide {
        match text {
            Some("only") => NetSide::Only,
            Some("beside-profile") => NetSide::BesideProfile,
            _ => NetSide::None,
        }
    }
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
        if let Some(net) = self.net.annotation() {
            annotations.insert(ANNOTATION_NET.into(), net.into());
        }
        if let Some(user) = &self.user {
            annotations.insert(ANNOTATION_USER.into(), user.clone());
            let template = job.spec.as_mut().map(|s| s.template.metadata.get_or_insert_with(Default::default));
            if let Some(meta) = template {
                meta.annotations.get_or_insert_with(BTreeMap::new).insert(ANNOTATION_USER.into(), user.clone());
            }
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

/// The annotations `plan` writes on a Job and on its pod template: what was asked, where, for
/// how long.
pub fn planned(target: &str, node: &str, window: Duration) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_TARGET.to_owned(), target.to_owned()),
        (ANNOTATION_NODE.to_owned(), node.to_owned()),
        (ANNOTATION_DURATION.to_owned(), window.as_millis().to_string()),
    ])
}

/// What a Job's annotations say about its run, read back (`list`, `fetch`, the conflict gate).
/// Each field is `None` when the Job does not say (made by an older kubectl-eagle, or by hand).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunAnnotations {
    pub target: Option<String>,
    pub node: Option<String>,
    pub duration_ms: Option<u64>,
    pub frequency_hz: Option<u64>,
    /// The run's Job count.
    pub nodes: Option<usize>,
    pub is_async: bool,
    pub cli_version: Option<String>,
    pub user: Option<String>,
    pub net: NetSide,
    /// The placements as JSON; [`RunAnnotations::placements`] decodes them.
    placements: Option<String>,
}

impl RunAnnotations {
    pub fn of(job: &Job) -> RunAnnotations {
        let text = |key| annotation(job, key).map(str::to_owned);
        let number = |key| annotation(job, key).and_then(|v| v.parse().ok());
        RunAnnotations {
            target: text(ANNOTATION_TARGET),
            node: text(ANNOTATION_NODE),
            duration_ms: number(ANNOTATION_DURATION),
            frequency_hz: number(ANNOTATION_FREQUENCY),
            nodes: annotation(job, ANNOTATION_NODES).and_then(|v| v.parse().ok()),
            is_async: annotation(job, ANNOTATION_ASYNC) == Some("true"),
            cli_version: text(ANNOTATION_CLI_VERSION),
            user: text(ANNOTATION_USER),
            net: NetSide::parse(annotation(job, ANNOTATION_NET)),
            placements: text(ANNOTATION_PLACEMENTS),
        }
    }

    /// Where each container the Job profiles sits; `None` when the Job does not say.
    pub fn placements(&self) -> Option<Result<Placements, String>> {
        self.placements.as_deref().map(decode_placements)
    }
}

fn annotation<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
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
    fn what_a_job_carries_reads_back() {
        let a = placement("shop", "deployment/api", "api-1", "app");
        let mut job = Job::default();
        job.metadata.annotations = Some(planned("deployment/api -n shop", "node-a", Duration::from_secs(30)));
        job.spec = Some(Default::default());
        let user = Some("alice@example.com".into());
        Task { nodes: 3, is_async: true, frequency_hz: 99, user, net: NetSide::BesideProfile }
            .annotate(&mut job, [("aaa", &a)]);
        let said = RunAnnotations::of(&job);
        assert_eq!(said.target.as_deref(), Some("deployment/api -n shop"));
        assert_eq!(
            (said.node.as_deref(), said.duration_ms, said.frequency_hz),
            (Some("node-a"), Some(30_000), Some(99))
        );
        assert_eq!((said.nodes, said.is_async, said.net), (Some(3), true, NetSide::BesideProfile));
        assert_eq!(said.cli_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(said.user.as_deref(), Some("alice@example.com"));
        let template = job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
        assert_eq!(
            template.annotations.as_ref().unwrap()[ANNOTATION_USER],
            "alice@example.com",
            "orphaned pods keep it"
        );
        assert_eq!(said.placements().unwrap().unwrap()["aaa"], a);
        assert_eq!(RunAnnotations::of(&Job::default()), RunAnnotations::default());
    }

    #[test]
    fn run_ids_are_label_values() {
        assert!(check_run_id("9e2017d3").is_ok());
        for bad in ["", "-x", "ABC", "a b", "a,b", "x)"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }
}
