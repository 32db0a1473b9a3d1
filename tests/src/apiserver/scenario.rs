//! What the agent samples, what happens to each node's profiling pod ([`Fate`]), and the
//! objects of the world the CLI looks at (pods, workloads, services): the test's side.

use super::*;

// ---------------------------------------------------------------------------------------------
// What the agent samples, and what happens to each node's profiling pod
// ---------------------------------------------------------------------------------------------

/// One aggregated stack the agent reports for every container it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// Outermost frame first.
    pub frames: Vec<String>,
    pub count: u64,
}

/// `stack("main;spin;cpu_60", 60)`.
pub fn stack(frames: &str, count: u64) -> Stack {
    Stack { frames: frames.split(';').map(str::to_owned).collect(), count }
}

/// The groundtruth workload's known split: 60/30/10.
pub fn groundtruth() -> Vec<Stack> {
    vec![stack("main;spin;cpu_60", 60), stack("main;spin;cpu_30", 30), stack("main;spin;cpu_10", 10)]
}

/// What happens to the profiling pod of one node.
#[derive(Clone, Debug)]
pub enum Fate {
    /// Scheduled, started; the agent writes a complete stream with these stacks for each
    /// container its Job names, and exits 0.
    Profile(Vec<Stack>),
    /// As `Profile`, but the pod runs to completion before the Job's creation is answered: the
    /// CLI first sees it Succeeded, in its watch's initial list.
    FinishedBeforeWatch(Vec<Stack>),
    /// As `Profile`, but the log ends after the first payload chunk, without a trailer (log
    /// rotated, cut short); the container still exits 0.
    Truncated(Vec<Stack>),
    /// As `Profile`, but the trailer's checksum does not match the payload.
    Corrupt(Vec<Stack>),
    /// The agent fails before its header: `eagle-agent: error: MESSAGE` on stderr, exit code.
    AgentError { exit_code: i32, message: String },
    /// The agent reports progress until its pod is deleted (SIGTERM); then it writes an
    /// `ended-early` warning, the payload of these stacks and the trailer, and exits 0.
    UntilStopped(Vec<Stack>),
    /// As `Profile`, but the agent was stopped before its window ended by something other than
    /// this run (its Job's deadline, an eviction): an `ended-early` warning before the payload.
    EndsEarly(Vec<Stack>),
    /// The agent reports progress and ignores SIGTERM; it is killed (137) a while after its pod
    /// is deleted, without a trailer.
    IgnoresStop,
    /// The node's kubelet stops mid window: the agent writes its header and progress for a
    /// while, then the node goes silent. Log follows of its pods are cut, later log reads are
    /// answered 500 (the API server cannot dial the kubelet), the pod's status is never
    /// updated again but for the node controller marking it not ready a moment later, and a
    /// deleted pod stays until the test ends.
    KubeletStops,
    /// A hostile or broken image: after its header the agent writes one line of 2 MiB, then
    /// the complete stream of these stacks.
    OversizedLine(Vec<Stack>),
    /// A hostile image: a deflate bomb (64 MiB of zeros) whose trailer announces 1 GiB.
    Bomb,
    /// The scheduler never places the pod: `PodScheduled=False`, reason `Unschedulable`.
    Unschedulable,
    /// Scheduled, but the image cannot be pulled: `ErrImagePull`, then `ImagePullBackOff`.
    ImagePullError,
    /// Another run's Job already has the name of this node's Job: the create is answered 409
    /// AlreadyExists, and that Job (of another uid) stays.
    NameTaken,
    /// Admission refuses the Job's pod (Pod Security, a webhook, a quota) with this reason:
    /// the Job exists, no pod ever does, and a `FailedCreate` Event on the Job says why.
    AdmissionRejected(String),
}

/// A permission the double refuses with 403, as RBAC would.
#[derive(Clone, Debug)]
pub(super) struct Denial {
    pub(super) verb: String,
    pub(super) resource: String,
    /// `None`: in every namespace (and at the cluster scope).
    pub(super) namespace: Option<String>,
    /// `None`: whoever asks.
    pub(super) user: Option<String>,
}

impl Denial {
    pub(super) fn refuses(&self, user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
        self.verb == verb
            && self.resource == resource
            && self.namespace.as_ref().is_none_or(|ns| ns == namespace)
            && self.user.as_ref().is_none_or(|u| u == user)
    }
}

/// How the double behaves in one test.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub(super) fates: HashMap<String, Fate>,
    pub(super) default_fate: Fate,
    pub(super) denials: Vec<Denial>,
    pub(super) user: String,
    pub(super) job_create_delay: Duration,
    pub(super) throttled_creates: usize,
    pub(super) job_delete_delay: Duration,
    pub(super) job_deletes_fail: bool,
    pub(super) watch_breaks_after: Option<usize>,
    pub(super) follow_breaks_after: Option<usize>,
    pub(super) drops_ttl: bool,
    pub(super) line_gap: Duration,
    pub(super) admission_policies: bool,
    pub(super) self_subject_review: bool,
    pub(super) net_records: HashMap<String, eagle_proto::NetPayload>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    /// Every node profiles [`groundtruth`]; everything is allowed.
    pub fn new() -> Self {
        Scenario {
            fates: HashMap::new(),
            default_fate: Fate::Profile(groundtruth()),
            denials: Vec::new(),
            user: "alice".into(),
            job_create_delay: Duration::ZERO,
            throttled_creates: 0,
            job_delete_delay: Duration::ZERO,
            job_deletes_fail: false,
            watch_breaks_after: None,
            follow_breaks_after: None,
            drops_ttl: false,
            line_gap: LINE_GAP,
            admission_policies: false,
            self_subject_review: true,
            net_records: HashMap::new(),
        }
    }

    /// The network record `node`'s agent writes when its Job asks for `--net` (a recorded
    /// node stream: the rows name containers by [`container_id`]).
    pub fn net(mut self, node: &str, record: eagle_proto::NetPayload) -> Self {
        self.net_records.insert(node.into(), record);
        self
    }

    /// What every node not named by [`Scenario::node`] does.
    pub fn default_fate(mut self, fate: Fate) -> Self {
        self.default_fate = fate;
        self
    }

    /// The agents write one line every `gap` (5 ms by default): a run that takes a while.
    pub fn agent_line_gap(mut self, gap: Duration) -> Self {
        self.line_gap = gap;
        self
    }

    /// The API server drops `ttlSecondsAfterFinished` from Jobs, as Kubernetes 1.20 does
    /// without the TTLAfterFinished feature gate.
    pub fn without_ttl_controller(mut self) -> Self {
        self.drops_ttl = true;
        self
    }

    /// The server serves `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicies and their
    /// bindings (Kubernetes 1.30+); by default it does not, as the lab's 1.20.
    pub fn with_admission_policies(mut self) -> Self {
        self.admission_policies = true;
        self
    }

    /// The server does not serve `authentication.k8s.io` SelfSubjectReviews (before 1.27
    /// without the alpha API, as the lab's 1.20): 404.
    pub fn without_self_subject_review(mut self) -> Self {
        self.self_subject_review = false;
        self
    }

    /// The fate of the profiling pod on `node`.
    pub fn node(mut self, node: &str, fate: Fate) -> Self {
        self.fates.insert(node.to_owned(), fate);
        self
    }

    /// Refuses `verb` (`get`, `list`, `watch`, `create`, `delete`) on `resource` (`jobs`,
    /// `pods`, `pods/log`, `namespaces`, ...) in `namespace` (`""`: everywhere) with 403.
    pub fn deny(mut self, verb: &str, resource: &str, namespace: &str) -> Self {
        self.denials.push(Denial {
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
            user: None,
        });
        self
    }

    /// As [`Scenario::deny`], for requests acting as `user` only (the kubeconfig's user is
    /// `alice`; another is reached with `--as`).
    pub fn deny_user(mut self, user: &str, verb: &str, resource: &str, namespace: &str) -> Self {
        self.denials.push(Denial {
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
            user: Some(user.to_owned()),
        });
        self
    }

    /// The first `n` Job creates are answered 429 Too Many Requests (API Priority and
    /// Fairness shedding load), with nothing created.
    pub fn throttle_job_creates(mut self, n: usize) -> Self {
        self.throttled_creates = n;
        self
    }

    /// Deleting a Job takes this long (an API server under load): the answer comes after.
    pub fn slow_job_delete(mut self, delay: Duration) -> Self {
        self.job_delete_delay = delay;
        self
    }

    /// Every Job delete fails with 503 (an API server going away after the results came in).
    pub fn fail_job_deletes(mut self) -> Self {
        self.job_deletes_fail = true;
        self
    }

    /// Job creation takes this long (a slow admission webhook): the Job exists only when the
    /// answer comes.
    pub fn slow_job_create(mut self, delay: Duration) -> Self {
        self.job_create_delay = delay;
        self
    }

    /// The first pod watch is cut (connection closed, no end chunk) after this many events;
    /// later watches are not.
    pub fn watch_breaks_after(mut self, events: usize) -> Self {
        self.watch_breaks_after = Some(events);
        self
    }

    /// The first follow of each pod's log is cut after this many lines; later reads are not.
    pub fn follow_breaks_after(mut self, lines: usize) -> Self {
        self.follow_breaks_after = Some(lines);
        self
    }

    pub(super) fn fate(&self, node: &str) -> Fate {
        self.fates.get(node).cloned().unwrap_or_else(|| self.default_fate.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Objects of the world the CLI looks at
// ---------------------------------------------------------------------------------------------

pub(super) fn fnv(text: &str, seed: u64) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The container id (64 hex digits, as in cgroup paths) the double gives `container` of `pod`.
/// The folded lines a graph (`--group-by process`) holds for the `app` containers of `pods`,
/// each given as (pod, its workload frame), when every agent reports `stacks`.
pub fn expected_folded_lines(namespace: &str, pods: &[(&str, &str)], stacks: &[Stack]) -> BTreeSet<String> {
    pods.iter()
        .flat_map(|(pod, workload)| {
            let pid = pid_of(&container_id(pod, "app"));
            stacks.iter().map(move |s| {
                format!(
                    "namespace/{namespace};{workload};pod/{pod};container/app;{} ({pid});{} {}",
                    process_name(),
                    s.frames.join(";"),
                    s.count
                )
            })
        })
        .collect()
}

pub fn container_id(pod: &str, container: &str) -> String {
    let key = format!("{pod}/{container}");
    (0..4).map(|i| format!("{:016x}", fnv(&key, i))).collect()
}

/// The pid the agent reports for the process in a container.
pub fn pid_of(container_id: &str) -> u32 {
    100 + (fnv(container_id, 7) % 30_000) as u32
}

/// The process name the agent reports in every container.
pub fn process_name() -> &'static str {
    AGENT_PROCESS
}

/// `{"matchLabels": {...}}`.
pub fn match_labels(labels: &[(&str, &str)]) -> Value {
    json!({ "matchLabels": labels_map(labels) })
}

pub(super) fn labels_map(labels: &[(&str, &str)]) -> Map<String, Value> {
    labels.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect()
}

pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    })
}

/// A Deployment, StatefulSet, DaemonSet, ReplicaSet or Job with this pod `selector`
/// (a LabelSelector: see [`match_labels`]). `owner` is `(kind, name)` of its controller.
pub fn workload(kind: &str, ns: &str, name: &str, selector: Value, owner: Option<(&str, &str)>) -> Value {
    let template_labels = selector.get("matchLabels").cloned().unwrap_or_else(|| json!({}));
    let template = json!({
        "metadata": {"labels": template_labels},
        "spec": {
            "containers": [{"name": "app", "image": "lab.local/groundtruth:0.1.0"}],
            "restartPolicy": if kind == "Job" { "Never" } else { "Always" }
        }
    });
    let api_version = if kind == "Job" { "batch/v1" } else { "apps/v1" };
    let mut spec = json!({"selector": selector, "template": template});
    match kind {
        "Deployment" | "ReplicaSet" => spec["replicas"] = json!(2),
        "StatefulSet" => {
            spec["replicas"] = json!(2);
            spec["serviceName"] = json!(name);
        }
        "Job" => spec["completions"] = json!(1),
        _ => {}
    }
    let mut metadata = json!({"name": name, "namespace": ns});
    if let Some((kind, owner)) = owner {
        metadata["ownerReferences"] = owner_refs(kind, owner);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec, "status": {}})
}

pub fn service(ns: &str, name: &str, selector: &[(&str, &str)]) -> Value {
    let mut spec = json!({"type": "ClusterIP", "clusterIP": "10.96.0.17", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]});
    if !selector.is_empty() {
        spec["selector"] = Value::Object(labels_map(selector));
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

pub(super) fn owner_refs(kind: &str, name: &str) -> Value {
    let api_version = match kind {
        "Job" => "batch/v1",
        "Node" => "v1",
        _ => "apps/v1",
    };
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{}-{name}", kind.to_lowercase()), "controller": true, "blockOwnerDeletion": true}])
}

/// A pod of the world, built up: `pod("shop", "api-1").on("node-a").running("app").build()`.
pub struct PodFixture {
    pub(super) ns: String,
    pub(super) name: String,
    pub(super) node: Option<String>,
    pub(super) labels: Vec<(String, String)>,
    pub(super) owner: Option<(String, String)>,
    pub(super) ip: Option<String>,
    /// (name, waiting reason or None when running)
    pub(super) containers: Vec<(String, Option<String>)>,
}

pub fn pod(ns: &str, name: &str) -> PodFixture {
    PodFixture {
        ns: ns.into(),
        name: name.into(),
        node: None,
        labels: Vec::new(),
        owner: None,
        ip: None,
        containers: Vec::new(),
    }
}

impl PodFixture {
    pub fn on(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        self
    }

    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels.extend(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    pub fn owner(mut self, kind: &str, name: &str) -> Self {
        self.owner = Some((kind.into(), name.into()));
        self
    }

    /// The pod's IP (`status.podIP`, `podIPs`).
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.into());
        self
    }

    /// A running container with id [`container_id`]`(pod, name)`.
    pub fn running(mut self, container: &str) -> Self {
        self.containers.push((container.into(), None));
        self
    }

    /// A container waiting with this reason (`CrashLoopBackOff`, `ContainerCreating`, ...).
    pub fn waiting(mut self, container: &str, reason: &str) -> Self {
        self.containers.push((container.into(), Some(reason.into())));
        self
    }

    pub fn build(self) -> Value {
        let labels: Map<String, Value> =
            self.labels.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        let mut metadata = json!({
            "name": self.name, "namespace": self.ns, "uid": format!("uid-pod-{}-{}", self.ns, self.name),
            "labels": labels, "creationTimestamp": TIMESTAMP
        });
        if let Some((kind, owner)) = &self.owner {
            metadata["ownerReferences"] = owner_refs(kind, owner);
        }
        let containers: Vec<Value> =
            self.containers.iter().map(|(c, _)| json!({"name": c, "image": "lab.local/groundtruth:0.1.0"})).collect();
        let mut spec = json!({"containers": containers, "restartPolicy": "Always"});
        if let Some(node) = &self.node {
            spec["nodeName"] = json!(node);
        }
        let any_running = self.containers.iter().any(|(_, waiting)| waiting.is_none());
        let phase = if self.node.is_some() && any_running { "Running" } else { "Pending" };
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|(c, waiting)| {
                let mut s = json!({"name": c, "ready": waiting.is_none(), "restartCount": 0, "image": "lab.local/groundtruth:0.1.0", "imageID": ""});
                match waiting {
                    None if self.node.is_some() => {
                        s["state"] = json!({"running": {"startedAt": TIMESTAMP}});
                        s["containerID"] = json!(format!("containerd://{}", container_id(&self.name, c)));
                        s["imageID"] = json!("lab.local/groundtruth@sha256:0123");
                    }
                    None => s["state"] = json!({"waiting": {"reason": "ContainerCreating"}}),
                    Some(reason) => {
                        s["state"] = json!({"waiting": {"reason": reason, "message": format!("{reason} ({c})")}});
                        if reason == "CrashLoopBackOff" {
                            s["containerID"] = json!(format!("containerd://{}", container_id(&self.name, c)));
                            s["restartCount"] = json!(5);
                        }
                    }
                }
                s
            })
            .collect();
        let mut status = json!({"phase": phase, "qosClass": "BestEffort"});
        if self.node.is_some() {
            status["hostIP"] = json!("10.0.0.2");
            status["containerStatuses"] = json!(statuses);
            status["conditions"] = json!([{"type": "PodScheduled", "status": "True"}]);
        }
        if let Some(ip) = &self.ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status})
    }
}
