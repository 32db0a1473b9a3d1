//! A Kubernetes API server double, for testing `kubectl-eagle`'s cluster mode at the HTTP level
//! without a cluster.
//!
//! [`ApiServer::start`] listens on 127.0.0.1 (an ephemeral port; plain HTTP/1.1 with keep-alive;
//! std only, one thread per connection) and answers the Kubernetes API JSON of exactly what the
//! CLI calls:
//!
//! - GET of pods, services, deployments, statefulsets, daemonsets, replicasets, jobs and
//!   namespaces by name; LIST of them with `labelSelector` (equality, `in`, `notin`, exists);
//! - POST of namespaces and jobs. A created Job gets its pod, as the Job controller would make
//!   it (`job-name` and `controller-uid` labels, owner reference), and a driver thread moves the
//!   pod through its phases as the node's [`Fate`] says: Pending, Running, Succeeded, or stuck
//!   unschedulable, image pull errors, an agent that fails, ...;
//! - WATCH of pods (`?watch=true&resourceVersion=..&labelSelector=..`): chunked, one
//!   `{"type":"ADDED|MODIFIED|DELETED","object":{..}}` per line, kept open;
//! - GET of `pods/NAME/log`, with `follow=true` chunked and streamed as the agent writes. The
//!   agent's log is a real result stream made with [`eagle_proto::Encoder`] for the containers
//!   its Job names, or a deliberately broken one;
//! - DELETE of jobs (their pods go too) and pods (the agent gets "SIGTERM").
//!
//! For the task commands (`list`, `fetch`, `clean`, `uninstall`, `init`, `doctor`) also:
//!
//! - LIST across namespaces (`/apis/batch/v1/jobs`, `/api/v1/pods`, ...) and of cluster-scoped
//!   kinds; a Job's status follows its pod (`Complete` or `Failed` when the pod ends);
//! - ClusterRoles, ClusterRoleBindings, Roles and RoleBindings: POST, GET, PUT, DELETE, LIST;
//! - PATCH (JSON merge patch) and DELETE of namespaces (which takes what is inside);
//! - POST of SelfSubjectAccessReviews, answered from the scenario's denials; `GET /version`;
//! - `dryRun=All` on POST (validated, answered, not stored), `tailLines` on logs;
//! - a profiling pod that runs `eagle-agent --version` prints the version and exits 0.
//!
//! Errors are real `Status` objects (404 NotFound, 403 Forbidden through [`Scenario::deny`],
//! 409 AlreadyExists, 422 Invalid). Every request is recorded, with its body, for assertions
//! ([`ApiServer::requests`]). [`ApiServer::run`] runs the real `kubectl-eagle` against it with
//! a kubeconfig of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use eagle_proto::stream::TargetReport;
use eagle_proto::{Encoder, Header, Progress, StackRecord, Warning};
use serde_json::{json, Map, Value};

/// Pace of the pod state machine: scheduling, container start, termination.
const STEP: Duration = Duration::from_millis(25);
/// Pause between two lines the agent writes.
const LINE_GAP: Duration = Duration::from_millis(5);
/// How long an agent that ignores SIGTERM lives on after its pod is deleted (the kubelet's
/// grace period, shortened).
const KILL_AFTER: Duration = Duration::from_millis(1500);
const TIMESTAMP: &str = "2026-11-22T10:00:00Z";
const AGENT_PROCESS: &str = "groundtruth";

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
    /// The agent reports progress and ignores SIGTERM; it is killed (137) a while after its pod
    /// is deleted, without a trailer.
    IgnoresStop,
    /// The scheduler never places the pod: `PodScheduled=False`, reason `Unschedulable`.
    Unschedulable,
    /// Scheduled, but the image cannot be pulled: `ErrImagePull`, then `ImagePullBackOff`.
    ImagePullError,
}

/// A permission the double refuses with 403, as RBAC would.
#[derive(Clone, Debug)]
struct Denial {
    verb: String,
    resource: String,
    /// `None`: in every namespace (and at the cluster scope).
    namespace: Option<String>,
}

/// How the double behaves in one test.
#[derive(Clone, Debug)]
pub struct Scenario {
    fates: HashMap<String, Fate>,
    default_fate: Fate,
    denials: Vec<Denial>,
    user: String,
    job_create_delay: Duration,
    watch_breaks_after: Option<usize>,
    follow_breaks_after: Option<usize>,
    drops_ttl: bool,
    line_gap: Duration,
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
            watch_breaks_after: None,
            follow_breaks_after: None,
            drops_ttl: false,
            line_gap: LINE_GAP,
        }
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
        });
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

    fn fate(&self, node: &str) -> Fate {
        self.fates.get(node).cloned().unwrap_or_else(|| self.default_fate.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Objects of the world the CLI looks at
// ---------------------------------------------------------------------------------------------

fn fnv(text: &str, seed: u64) -> u64 {
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

fn labels_map(labels: &[(&str, &str)]) -> Map<String, Value> {
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

fn owner_refs(kind: &str, name: &str) -> Value {
    let api_version = match kind {
        "Job" => "batch/v1",
        "Node" => "v1",
        _ => "apps/v1",
    };
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{}-{name}", kind.to_lowercase()), "controller": true, "blockOwnerDeletion": true}])
}

/// A pod of the world, built up: `pod("shop", "api-1").on("node-a").running("app").build()`.
pub struct PodFixture {
    ns: String,
    name: String,
    node: Option<String>,
    labels: Vec<(String, String)>,
    owner: Option<(String, String)>,
    /// (name, waiting reason or None when running)
    containers: Vec<(String, Option<String>)>,
}

pub fn pod(ns: &str, name: &str) -> PodFixture {
    PodFixture { ns: ns.into(), name: name.into(), node: None, labels: Vec::new(), owner: None, containers: Vec::new() }
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
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status})
    }
}

// ---------------------------------------------------------------------------------------------
// Recorded requests
// ---------------------------------------------------------------------------------------------

/// One request the double received, and the status it answered with.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Without the query.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// 0 while a streamed answer has not started.
    pub status: u16,
}

impl Recorded {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch") == Some("true")
    }

    pub fn is_follow(&self) -> bool {
        self.path.ends_with("/log") && self.param("follow") == Some("true")
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        write!(f, " -> {}", self.status)
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

type Key = (String, String, String); // (plural, namespace or "", name)
type PodKey = (String, String); // (namespace, name)

struct WatchEvent {
    rv: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct PodLog {
    lines: Vec<String>,
    ended: bool,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    events: Vec<WatchEvent>,
    logs: HashMap<PodKey, PodLog>,
    stopping: HashSet<PodKey>,
    requests: Vec<Recorded>,
    created_jobs: Vec<Value>,
    nodes: Vec<String>,
    watches: usize,
    followed: HashSet<PodKey>,
    /// When the last agent's log ended: the end of the run's sampling, for the benchmarks.
    last_log_end: Option<SystemTime>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    shutdown: AtomicBool,
    scenario: Scenario,
}

/// The API double; stops (and removes its directory, unless the test failed) on drop.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

static SERVERS: AtomicU64 = AtomicU64::new(0);

impl ApiServer {
    /// Serves `world` (objects as [`pod`], [`workload`], [`service`], [`namespace`] build
    /// them) with `scenario`. The nodes that exist are those the world's pods run on.
    pub fn start(world: Vec<Value>, scenario: Scenario) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut state = State::default();
        for object in world {
            let kind = object["kind"].as_str().expect("objects have a kind");
            let plural = KINDS
                .iter()
                .find(|k| k.kind == kind)
                .unwrap_or_else(|| panic!("the double does not serve {kind}"))
                .plural;
            let meta = &object["metadata"];
            let key = (
                plural.to_owned(),
                meta["namespace"].as_str().unwrap_or_default().to_owned(),
                meta["name"].as_str().expect("named").to_owned(),
            );
            if let Some(node) = object["spec"]["nodeName"].as_str() {
                if !state.nodes.iter().any(|n| n == node) {
                    state.nodes.push(node.to_owned());
                }
            }
            state.rv += 1;
            let mut object = object;
            object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
            state.objects.insert(key, object);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            scenario,
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    let shared = accepting.clone();
                    thread::spawn(move || serve_connection(&shared, stream));
                }
            }
        });
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("eagle-apiserver-{}-{n}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(addr)).expect("write kubeconfig");
        ApiServer { addr, shared, dir, kubeconfig }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A directory of this server's own, for outputs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// When the last profiling pod's log ended (its agent wrote its trailer and exited).
    pub fn last_log_end(&self) -> Option<SystemTime> {
        self.shared.lock().last_log_end
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The Jobs the API accepted (201), as the CLI posted them.
    pub fn created_jobs(&self) -> Vec<Value> {
        self.shared.lock().created_jobs.clone()
    }

    /// Whether a namespaced or cluster object exists now: `exists("jobs", "kube-eagle", name)`.
    pub fn exists(&self, plural: &str, namespace: &str, name: &str) -> bool {
        self.shared.lock().objects.contains_key(&(plural.to_owned(), namespace.to_owned(), name.to_owned()))
    }

    /// Waits until `done` holds for the requests so far; false on timeout.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.requests) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(50)))
                .expect("lock")
                .0;
        }
    }

    /// Every request so far, one per line, for failure messages.
    pub fn transcript(&self) -> String {
        self.requests().iter().map(|r| format!("  {r}\n")).collect()
    }

    /// Every object of a kind (`jobs`, `pods`, `clusterroles`, ...), in every namespace.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.shared.lock().objects.iter().filter(|((p, _, _), _)| p == plural).map(|(_, o)| o.clone()).collect()
    }

    /// What the pod garbage collector does to finished pods: deletes those of `run` (label
    /// `kube-eagle.io/run`) and waits until they are gone. Their Jobs stay.
    pub fn expire_pods(&self, run: &str) {
        let keys: Vec<PodKey> = {
            let mut state = self.shared.lock();
            let keys: Vec<PodKey> = state
                .objects
                .iter()
                .filter(|((plural, _, _), pod)| {
                    plural == "pods" && pod["metadata"]["labels"]["kube-eagle.io/run"] == run
                })
                .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
                .collect();
            for key in &keys {
                state.mark_deleted(key, 0);
            }
            self.shared.changed.notify_all();
            keys
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while keys.iter().any(|(ns, name)| self.exists("pods", ns, name)) {
            assert!(Instant::now() < deadline, "the pods of run {run} were not removed");
            thread::sleep(STEP);
        }
    }

    /// `kubectl-eagle profile --kubeconfig <ours> ARGS`, with no proxy in the way.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_for("profile", args)
    }

    /// `kubectl-eagle SUBCOMMAND --kubeconfig <ours> ARGS`.
    pub fn command_for(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::kubectl_eagle());
        cmd.arg(subcommand).arg("--kubeconfig").arg(&self.kubeconfig).args(args).current_dir(&self.dir);
        for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "KUBECONFIG"] {
            cmd.env_remove(var);
        }
        cmd.env("NO_PROXY", "127.0.0.1").env("RUST_BACKTRACE", "1");
        cmd
    }

    /// Starts `kubectl-eagle profile ARGS` against this server.
    pub fn spawn(&self, args: &[&str]) -> RunningCli {
        self.spawn_for("profile", args)
    }

    /// Starts `kubectl-eagle SUBCOMMAND ARGS` against this server.
    pub fn spawn_for(&self, subcommand: &str, args: &[&str]) -> RunningCli {
        let mut child = self
            .command_for(subcommand, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl-eagle");
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        RunningCli { child, stdout: Some(stdout), stderr: Some(stderr), started: Instant::now() }
    }

    /// Runs `kubectl-eagle profile ARGS` to its end (at most 60 s).
    pub fn run(&self, args: &[&str]) -> CliRun {
        self.spawn(args).wait(Duration::from_secs(60))
    }

    /// Runs `kubectl-eagle SUBCOMMAND ARGS` to its end (at most 60 s).
    pub fn run_for(&self, subcommand: &str, args: &[&str]) -> CliRun {
        self.spawn_for(subcommand, args).wait(Duration::from_secs(60))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("api double: kept {}; requests:\n{}", self.dir.display(), self.transcript());
        }
    }
}

fn kubeconfig_text(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: double
  cluster:
    server: http://{addr}
contexts:
- name: double
  context:
    cluster: double
    user: alice
    namespace: default
current-context: double
users:
- name: alice
  user: {{}}
"
    )
}

/// A running `kubectl-eagle`.
pub struct RunningCli {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    started: Instant,
}

/// How a `kubectl-eagle` run ended.
#[derive(Debug)]
pub struct CliRun {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunningCli {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (`libc::SIGINT`, ...) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}): {}", self.pid(), io::Error::last_os_error());
    }

    /// Waits for the end; kills it and panics after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> CliRun {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        let stdout = self.stdout.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let Some(status) = status else {
            panic!("kubectl-eagle still ran after {timeout:?}; killed it.\nstdout:\n{stdout}\nstderr:\n{stderr}");
        };
        CliRun { code: status.code(), stdout, stderr, elapsed: self.started.elapsed() }
    }
}

impl Drop for RunningCli {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------------------------

struct HttpRequest {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Vec<u8>,
}

fn serve_connection(shared: &Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while let Ok(Some(request)) = read_request(&mut reader) {
        if shared.shutdown.load(Ordering::SeqCst) || handle(shared, &request, &mut writer).is_err() {
            return;
        }
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad request line {line:?}")));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Some(HttpRequest { method, path: percent_decode(path), query, body }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    }
}

fn write_body(w: &mut TcpStream, code: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn start_chunked(w: &mut TcpStream, content_type: &str) -> io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n");
    w.write_all(head.as_bytes())?;
    w.flush()
}

fn write_chunk(w: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn end_chunked(w: &mut TcpStream) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

struct KindInfo {
    plural: &'static str,
    group: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const KINDS: [KindInfo; 13] = [
    KindInfo { plural: "pods", group: "", kind: "Pod", namespaced: true },
    KindInfo { plural: "services", group: "", kind: "Service", namespaced: true },
    KindInfo { plural: "namespaces", group: "", kind: "Namespace", namespaced: false },
    KindInfo { plural: "deployments", group: "apps", kind: "Deployment", namespaced: true },
    KindInfo { plural: "statefulsets", group: "apps", kind: "StatefulSet", namespaced: true },
    KindInfo { plural: "daemonsets", group: "apps", kind: "DaemonSet", namespaced: true },
    KindInfo { plural: "replicasets", group: "apps", kind: "ReplicaSet", namespaced: true },
    KindInfo { plural: "jobs", group: "batch", kind: "Job", namespaced: true },
    KindInfo { plural: "clusterroles", group: "rbac.authorization.k8s.io", kind: "ClusterRole", namespaced: false },
    KindInfo {
        plural: "clusterrolebindings",
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRoleBinding",
        namespaced: false,
    },
    KindInfo { plural: "roles", group: "rbac.authorization.k8s.io", kind: "Role", namespaced: true },
    KindInfo { plural: "rolebindings", group: "rbac.authorization.k8s.io", kind: "RoleBinding", namespaced: true },
    KindInfo {
        plural: "selfsubjectaccessreviews",
        group: "authorization.k8s.io",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
    },
];

/// Kinds the double stores as they are posted (no controller behind them).
const PLAIN: [&str; 5] = ["namespaces", "clusterroles", "clusterrolebindings", "roles", "rolebindings"];

impl KindInfo {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".into()
        } else {
            format!("{}/v1", self.group)
        }
    }

    /// `jobs.batch`, `pods`: how the API server names a resource in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.into()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

struct Route {
    kind: &'static KindInfo,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let find = |plural: &str| KINDS.iter().find(|k| k.plural == plural && k.group == group);
    match rest {
        ["namespaces"] => Some(Route { kind: find("namespaces")?, namespace: String::new(), name: None, sub: None }),
        ["namespaces", name] => {
            Some(Route { kind: find("namespaces")?, namespace: String::new(), name: Some((*name).into()), sub: None })
        }
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            let kind = find(plural).filter(|k| k.namespaced)?;
            Some(Route {
                kind,
                namespace: (*ns).into(),
                name: tail.first().map(|s| (*s).to_owned()),
                sub: tail.get(1).map(|s| (*s).to_owned()),
            })
        }
        // A cluster-scoped collection, or a namespaced kind across all namespaces.
        [plural] => Some(Route { kind: find(plural)?, namespace: String::new(), name: None, sub: None }),
        [plural, name] => {
            let kind = find(plural).filter(|k| !k.namespaced)?;
            Some(Route { kind, namespace: String::new(), name: Some((*name).into()), sub: None })
        }
        _ => None,
    }
}

fn status(code: u16, reason: &str, message: String, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "details": details, "code": code})
}

fn not_found(kind: &KindInfo, name: &str) -> Value {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", kind.qualified()),
        json!({"name": name, "group": kind.group, "kind": kind.plural}),
    )
}

fn handle(shared: &Arc<Shared>, req: &HttpRequest, w: &mut TcpStream) -> io::Result<()> {
    let body = serde_json::from_slice::<Value>(&req.body).ok();
    let index = {
        let mut state = shared.lock();
        state.requests.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            body: body.clone(),
            status: 0,
        });
        shared.changed.notify_all();
        state.requests.len() - 1
    };
    if req.method == "GET" && req.path == "/version" {
        let version = json!({
            "major": "1", "minor": "20", "gitVersion": "v1.20.2", "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56",
            "gitTreeState": "clean", "buildDate": "2021-01-13T13:20:00Z", "goVersion": "go1.15.5", "compiler": "gc",
            "platform": "linux/amd64"
        });
        return respond(shared, index, w, 200, &version);
    }
    let Some(route) = route(&req.path) else {
        let page = status(404, "NotFound", "the server could not find the requested resource".into(), json!({}));
        return respond(shared, index, w, 404, &page);
    };
    let verb = match (req.method.as_str(), &route.name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if req.query.iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1")) => "watch",
        ("GET", None) => "list",
        ("POST", None) => "create",
        ("DELETE", Some(_)) => "delete",
        ("PUT", Some(_)) => "update",
        ("PATCH", Some(_)) => "patch",
        _ => "",
    };
    let resource = match &route.sub {
        Some(sub) => format!("{}/{sub}", route.kind.plural),
        None => route.kind.plural.to_owned(),
    };
    if let Some(denied) = shared.denied(verb, &resource, &route) {
        return respond(shared, index, w, 403, &denied);
    }
    let param = |key: &str| req.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    match (verb, route.sub.as_deref()) {
        ("get", Some("log")) if route.kind.plural == "pods" => {
            let tail = param("tailLines").and_then(|t| t.parse().ok());
            pod_log(shared, index, w, &route, param("follow") == Some("true"), tail)
        }
        ("create", None) if route.kind.plural == "selfsubjectaccessreviews" => {
            let value = shared.review(body.unwrap_or_else(|| json!({})));
            respond(shared, index, w, 201, &value)
        }
        ("get", None) => {
            let (code, value) = shared.get(&route);
            respond(shared, index, w, code, &value)
        }
        ("list", None) => {
            let value = shared.list(&route, param("labelSelector").unwrap_or_default());
            respond(shared, index, w, 200, &value)
        }
        ("watch", None) if route.kind.plural == "pods" => {
            watch_pods(shared, index, w, &route, param("labelSelector").unwrap_or_default(), param("resourceVersion"))
        }
        ("create", None) => {
            if route.kind.plural == "jobs" {
                thread::sleep(shared.scenario.job_create_delay);
            }
            let dry_run = param("dryRun") == Some("All");
            let (code, value) = match body {
                Some(body) => shared.create(&route, body, dry_run),
                None => (400, status(400, "BadRequest", "the body of the request was not JSON".into(), json!({}))),
            };
            respond(shared, index, w, code, &value)
        }
        ("delete", None) => {
            let (code, value) = shared.delete(&route, body.as_ref());
            respond(shared, index, w, code, &value)
        }
        ("update", None) if PLAIN.contains(&route.kind.plural) => {
            let (code, value) = match body {
                Some(body) => shared.replace(&route, body),
                None => (400, status(400, "BadRequest", "the body of the request was not JSON".into(), json!({}))),
            };
            respond(shared, index, w, code, &value)
        }
        ("patch", None) if route.kind.plural == "namespaces" => {
            let (code, value) = match body {
                Some(body) => shared.merge_patch(&route, &body),
                None => (400, status(400, "BadRequest", "the body of the request was not JSON".into(), json!({}))),
            };
            respond(shared, index, w, code, &value)
        }
        _ => {
            let value = status(
                405,
                "MethodNotAllowed",
                format!("{} is not supported by the double on {}", req.method, req.path),
                json!({}),
            );
            respond(shared, index, w, 405, &value)
        }
    }
}

fn respond(shared: &Shared, index: usize, w: &mut TcpStream, code: u16, value: &Value) -> io::Result<()> {
    shared.set_status(index, code);
    write_body(w, code, "application/json", &serde_json::to_vec(value).expect("json"))
}

impl Shared {
    fn set_status(&self, index: usize, code: u16) {
        self.lock().requests[index].status = code;
        self.changed.notify_all();
    }

    fn denied(&self, verb: &str, resource: &str, route: &Route) -> Option<Value> {
        let rule = self.scenario.denials.iter().find(|d| {
            d.verb == verb && d.resource == resource && d.namespace.as_ref().is_none_or(|ns| *ns == route.namespace)
        })?;
        let kind = route.kind;
        let subject = match (&route.name, &route.sub) {
            (Some(name), None) if verb != "create" => format!("{} \"{name}\"", kind.qualified()),
            _ => kind.qualified(),
        };
        let scope = if kind.namespaced {
            format!("in the namespace \"{}\"", route.namespace)
        } else {
            "at the cluster scope".into()
        };
        let message = format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            self.scenario.user, rule.verb, rule.resource, kind.group
        );
        Some(status(
            403,
            "Forbidden",
            message,
            json!({"name": route.name.clone().unwrap_or_default(), "group": kind.group, "kind": kind.plural}),
        ))
    }

    fn get(&self, route: &Route) -> (u16, Value) {
        let name = route.name.clone().unwrap_or_default();
        let state = self.lock();
        match state.objects.get(&(route.kind.plural.to_owned(), route.namespace.clone(), name.clone())) {
            Some(object) => (200, object.clone()),
            None => (404, not_found(route.kind, &name)),
        }
    }

    fn list(&self, route: &Route, selector: &str) -> Value {
        let state = self.lock();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((plural, ns, _), object)| {
                plural == route.kind.plural
                    && (route.namespace.is_empty() || *ns == route.namespace)
                    && selects(selector, object)
            })
            .map(|(_, object)| {
                let mut item = object.clone();
                if let Some(map) = item.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
                item
            })
            .collect();
        json!({"kind": format!("{}List", route.kind.kind), "apiVersion": route.kind.api_version(), "metadata": {"resourceVersion": state.rv.to_string()}, "items": items})
    }

    fn create(self: &Arc<Self>, route: &Route, mut object: Value, dry_run: bool) -> (u16, Value) {
        let kind = route.kind;
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return (
                422,
                status(
                    422,
                    "Invalid",
                    format!(
                        "{} is invalid: metadata.name: Required value: name or generateName is required",
                        kind.kind
                    ),
                    json!({"kind": kind.plural}),
                ),
            );
        };
        if !PLAIN.contains(&kind.plural) && kind.plural != "jobs" {
            return (
                405,
                status(405, "MethodNotAllowed", format!("the double does not create {}", kind.plural), json!({})),
            );
        }
        // RBAC names are path segments (`kube-eagle:runner`); the others RFC 1123 labels.
        let rbac = kind.group == "rbac.authorization.k8s.io";
        let valid = name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (rbac && b == b':'))
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !valid {
            let message = format!("{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 label of at most 63 characters", kind.kind);
            return (
                422,
                status(422, "Invalid", message, json!({"name": name, "group": kind.group, "kind": kind.kind})),
            );
        }
        let mut state = self.lock();
        if kind.namespaced
            && !state.objects.contains_key(&("namespaces".to_owned(), String::new(), route.namespace.clone()))
        {
            return (404, not_found(&KINDS[2], &route.namespace));
        }
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        if state.objects.contains_key(&key) {
            return (
                409,
                status(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", kind.qualified()),
                    json!({"name": name, "group": kind.group, "kind": kind.plural}),
                ),
            );
        }
        let posted = object.clone();
        if kind.plural == "jobs" && self.scenario.drops_ttl {
            if let Some(spec) = object["spec"].as_object_mut() {
                spec.remove("ttlSecondsAfterFinished");
            }
        }
        if dry_run {
            // Validated and defaulted as a create would be; nothing is stored or started.
            object["apiVersion"] = json!(kind.api_version());
            object["kind"] = json!(kind.kind);
            object["metadata"]["creationTimestamp"] = json!(TIMESTAMP);
            if kind.namespaced {
                object["metadata"]["namespace"] = json!(route.namespace);
            }
            return (201, object);
        }
        state.rv += 1;
        let uid = format!("uid-{}-{name}-{}", kind.plural, state.rv);
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(state.rv.to_string());
        // The real time, to the second: runs created one after another sort newest first.
        meta["creationTimestamp"] = json!(now_rfc3339());
        if kind.namespaced {
            meta["namespace"] = json!(route.namespace);
        }
        if kind.plural == "namespaces" {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        if PLAIN.contains(&kind.plural) {
            state.objects.insert(key, object.clone());
            self.changed.notify_all();
            return (201, object);
        }
        // A Job: what the Job controller adds, then its pod.
        let controller = json!({"controller-uid": uid, "job-name": name});
        object["spec"]["selector"] = json!({"matchLabels": {"controller-uid": uid}});
        merge_into(&mut object["spec"]["template"]["metadata"]["labels"], &controller);
        object["spec"]["parallelism"] = json!(1);
        object["spec"]["completions"] = json!(1);
        object["status"] = json!({"active": 1, "startTime": TIMESTAMP});
        state.objects.insert(key, object.clone());
        state.created_jobs.push(posted);
        let (pod_key, fate, agent) = state.add_job_pod(&object, &self.scenario);
        let watched = object["metadata"]["annotations"]["kube-eagle.io/async"] != "true";
        self.changed.notify_all();
        drop(state);
        let shared = self.clone();
        if let Fate::FinishedBeforeWatch(_) = fate {
            let stopped = live(&shared, &pod_key, &fate, &agent);
            thread::spawn(move || end(&shared, &pod_key, stopped));
        } else {
            thread::spawn(move || drive(&shared, &pod_key, &fate, &agent, watched));
        }
        (201, object)
    }

    fn delete(&self, route: &Route, options: Option<&Value>) -> (u16, Value) {
        let kind = route.kind;
        let name = route.name.clone().unwrap_or_default();
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        let mut state = self.lock();
        let Some(object) = state.objects.get(&key).cloned() else {
            return (404, not_found(kind, &name));
        };
        match kind.plural {
            "jobs" => {
                // Background propagation: the Job goes now, the garbage collector deletes its
                // pods (gracefully) after.
                state.objects.remove(&key);
                let uid = object["metadata"]["uid"].clone();
                let pods: Vec<PodKey> = state
                    .objects
                    .iter()
                    .filter(|((plural, _, _), pod)| {
                        plural == "pods" && pod["metadata"]["labels"]["controller-uid"] == uid
                    })
                    .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
                    .collect();
                for pod in pods {
                    state.mark_deleted(&pod, 1);
                }
                self.changed.notify_all();
                let mut gone = object;
                gone["metadata"]["deletionTimestamp"] = json!(TIMESTAMP);
                (200, gone)
            }
            "pods" => {
                let grace = options
                    .and_then(|o| o["gracePeriodSeconds"].as_i64())
                    .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30);
                let pod = state.mark_deleted(&(route.namespace.clone(), name), grace);
                self.changed.notify_all();
                (200, pod.unwrap_or(object))
            }
            "namespaces" => {
                // What the namespace controller does, at once: everything inside goes; pods
                // gracefully, through their drivers.
                state.objects.remove(&key);
                let inside: Vec<Key> = state.objects.keys().filter(|(_, ns, _)| *ns == name).cloned().collect();
                for k in inside {
                    if k.0 == "pods" {
                        state.mark_deleted(&(k.1.clone(), k.2.clone()), 0);
                    } else {
                        state.objects.remove(&k);
                    }
                }
                self.changed.notify_all();
                (200, object)
            }
            plural if PLAIN.contains(&plural) => {
                state.objects.remove(&key);
                self.changed.notify_all();
                (200, status_success(kind, &name))
            }
            _ => {
                (405, status(405, "MethodNotAllowed", format!("the double does not delete {}", kind.plural), json!({})))
            }
        }
    }

    /// PUT: replaces an object, when its `resourceVersion` is the current one.
    fn replace(&self, route: &Route, mut object: Value) -> (u16, Value) {
        let kind = route.kind;
        let name = route.name.clone().unwrap_or_default();
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        let mut state = self.lock();
        let Some(current) = state.objects.get(&key).cloned() else {
            return (404, not_found(kind, &name));
        };
        if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
            let message = format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", kind.qualified());
            return (
                409,
                status(409, "Conflict", message, json!({"name": name, "group": kind.group, "kind": kind.plural})),
            );
        }
        let rv = state.bump();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        object["metadata"]["uid"] = current["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = json!(TIMESTAMP);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind.plural == "namespaces" {
            object["spec"] = current["spec"].clone();
            object["status"] = current["status"].clone();
        }
        state.objects.insert(key, object.clone());
        self.changed.notify_all();
        (200, object)
    }

    /// PATCH with a JSON merge patch (RFC 7386).
    fn merge_patch(&self, route: &Route, patch: &Value) -> (u16, Value) {
        let kind = route.kind;
        let name = route.name.clone().unwrap_or_default();
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        let mut state = self.lock();
        let rv = state.bump();
        let Some(object) = state.objects.get_mut(&key) else {
            return (404, not_found(kind, &name));
        };
        json_merge(object, patch);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = object.clone();
        self.changed.notify_all();
        (200, object)
    }

    /// A SelfSubjectAccessReview, answered as RBAC with the scenario's denials would.
    fn review(&self, mut review: Value) -> Value {
        let attrs = review["spec"]["resourceAttributes"].clone();
        let text = |key: &str| attrs[key].as_str().unwrap_or_default().to_owned();
        let mut resource = text("resource");
        if !text("subresource").is_empty() {
            resource = format!("{resource}/{}", text("subresource"));
        }
        let (verb, namespace) = (text("verb"), text("namespace"));
        let denied = self.scenario.denials.iter().any(|d| {
            d.verb == verb && d.resource == resource && d.namespace.as_ref().is_none_or(|ns| *ns == namespace)
        });
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["kind"] = json!("SelfSubjectAccessReview");
        review["metadata"] = json!({"creationTimestamp": null});
        review["status"] = if denied {
            json!({"allowed": false})
        } else {
            json!({"allowed": true, "reason": format!("RBAC: allowed by the double for user \"{}\"", self.scenario.user)})
        };
        review
    }

    /// What the Job controller records when the Job's pod ends.
    fn finish_job(&self, pod: &PodKey, succeeded: bool) {
        let mut state = self.lock();
        let Some(job) = state
            .objects
            .get(&("pods".to_owned(), pod.0.clone(), pod.1.clone()))
            .and_then(|p| p["metadata"]["labels"]["job-name"].as_str().map(str::to_owned))
        else {
            return;
        };
        let rv = state.bump();
        let Some(object) = state.objects.get_mut(&("jobs".to_owned(), pod.0.clone(), job)) else {
            return;
        };
        let now = now_rfc3339();
        object["status"] = if succeeded {
            json!({"startTime": TIMESTAMP, "completionTime": now, "succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
            ]})
        } else {
            json!({"startTime": TIMESTAMP, "failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
                 "lastProbeTime": now, "lastTransitionTime": now}
            ]})
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.changed.notify_all();
    }
}

/// Now as `2026-11-22T10:00:00Z` (days to civil date: H. Hinnant's algorithm).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn status_success(kind: &KindInfo, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "group": kind.group, "kind": kind.plural}})
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
fn json_merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            json_merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn merge_into(target: &mut Value, extra: &Value) {
    if !target.is_object() {
        *target = json!({});
    }
    if let (Some(t), Some(e)) = (target.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
}

/// Whether a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) selects `object`.
fn selects(selector: &str, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let mut requirements = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                requirements.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    requirements.push(&selector[start..]);
    requirements.into_iter().map(str::trim).filter(|r| !r.is_empty()).all(|r| {
        let set = |values: &str| {
            values
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        if let Some(key) = r.strip_prefix('!') {
            label(key.trim()).is_none()
        } else if let Some((key, values)) = r.split_once(" notin ") {
            label(key.trim()).is_none_or(|v| !set(values).iter().any(|s| s == v))
        } else if let Some((key, values)) = r.split_once(" in ") {
            label(key.trim()).is_some_and(|v| set(values).iter().any(|s| s == v))
        } else if let Some((key, value)) = r.split_once("!=") {
            label(key.trim()) != Some(value.trim())
        } else if let Some((key, value)) = r.split_once("==").or_else(|| r.split_once('=')) {
            label(key.trim()) == Some(value.trim())
        } else {
            label(r).is_some()
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Watches and logs
// ---------------------------------------------------------------------------------------------

fn watch_pods(
    shared: &Shared,
    index: usize,
    w: &mut TcpStream,
    route: &Route,
    selector: &str,
    rv: Option<&str>,
) -> io::Result<()> {
    shared.set_status(index, 200);
    start_chunked(w, "application/json")?;
    let matches = |object: &Value| {
        (route.namespace.is_empty() || object["metadata"]["namespace"] == route.namespace.as_str())
            && selects(selector, object)
    };
    let mut budget = {
        let mut state = shared.lock();
        state.watches += 1;
        shared.scenario.watch_breaks_after.filter(|_| state.watches == 1)
    };
    let mut send = |w: &mut TcpStream, line: &[u8]| {
        if budget == Some(0) {
            return Err(io::Error::other("the scenario cuts this watch"));
        }
        budget = budget.map(|b| b - 1);
        write_chunk(w, line)
    };
    let mut cursor = rv.and_then(|rv| rv.parse::<u64>().ok()).unwrap_or(0);
    if cursor == 0 {
        // No resource version: the current state first, as ADDED.
        let (initial, now): (Vec<Value>, u64) = {
            let state = shared.lock();
            (
                state
                    .objects
                    .iter()
                    .filter(|((plural, _, _), o)| plural == "pods" && matches(o))
                    .map(|(_, o)| o.clone())
                    .collect(),
                state.rv,
            )
        };
        for object in initial {
            send(w, &watch_line("ADDED", &object))?;
        }
        cursor = now;
    }
    loop {
        let batch: Vec<(u64, Vec<u8>)> = {
            let mut state = shared.lock();
            loop {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return Err(io::Error::other("shut down"));
                }
                let batch: Vec<(u64, Vec<u8>)> = state
                    .events
                    .iter()
                    .filter(|e| e.rv > cursor && matches(&e.object))
                    .map(|e| (e.rv, watch_line(e.kind, &e.object)))
                    .collect();
                if !batch.is_empty() {
                    break batch;
                }
                // Nothing new: skip past what did not match.
                cursor = cursor.max(state.events.last().map_or(0, |e| e.rv));
                state = shared.changed.wait_timeout(state, Duration::from_millis(100)).expect("lock").0;
            }
        };
        for (rv, line) in batch {
            send(w, &line)?;
            cursor = rv;
        }
    }
}

fn watch_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    line
}

fn pod_log(
    shared: &Shared,
    index: usize,
    w: &mut TcpStream,
    route: &Route,
    follow: bool,
    tail: Option<usize>,
) -> io::Result<()> {
    let name = route.name.clone().unwrap_or_default();
    let key = (route.namespace.clone(), name.clone());
    let mut sent = 0;
    {
        let state = shared.lock();
        let Some(pod) = state.objects.get(&("pods".to_owned(), key.0.clone(), key.1.clone())) else {
            drop(state);
            return respond(shared, index, w, 404, &not_found(&KINDS[0], &name));
        };
        let Some(log) = state.logs.get(&key) else {
            let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                .as_str()
                .unwrap_or("ContainerCreating")
                .to_owned();
            let container = pod["spec"]["containers"][0]["name"].as_str().unwrap_or_default().to_owned();
            drop(state);
            let message = format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}");
            return respond(shared, index, w, 400, &status(400, "BadRequest", message, json!({})));
        };
        if !follow {
            let skip = tail.map_or(0, |t| log.lines.len().saturating_sub(t));
            let text: String = log.lines.iter().skip(skip).map(|l| format!("{l}\n")).collect();
            drop(state);
            shared.set_status(index, 200);
            return write_body(w, 200, "text/plain", text.as_bytes());
        }
    }
    let mut budget = {
        let mut state = shared.lock();
        let first = state.followed.insert(key.clone());
        shared.scenario.follow_breaks_after.filter(|_| first)
    };
    shared.set_status(index, 200);
    start_chunked(w, "text/plain")?;
    loop {
        let (lines, ended) = {
            let mut state = shared.lock();
            loop {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return Err(io::Error::other("shut down"));
                }
                match state.logs.get(&key) {
                    None => break (Vec::new(), true),
                    Some(log) if log.lines.len() > sent || log.ended => break (log.lines[sent..].to_vec(), log.ended),
                    Some(_) => state = shared.changed.wait_timeout(state, Duration::from_millis(100)).expect("lock").0,
                }
            }
        };
        for line in lines {
            if budget == Some(0) {
                return Err(io::Error::other("the scenario cuts this follow"));
            }
            budget = budget.map(|b| b - 1);
            write_chunk(w, format!("{line}\n").as_bytes())?;
            sent += 1;
        }
        if ended {
            return end_chunked(w);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Job controller, scheduler and kubelet, for the profiling pods
// ---------------------------------------------------------------------------------------------

/// What a Job's agent was asked to do, from its pod template (read by the agent's own
/// `eagle_proto::AgentArgs::parse`, as the real agent reads it).
#[derive(Clone, Debug, Default)]
struct AgentRun {
    node: String,
    containers: Vec<String>,
    duration_ms: u64,
    frequency_hz: u64,
    /// `eagle-agent --version`: the doctor's probe.
    version_only: bool,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn add_job_pod(&mut self, job: &Value, scenario: &Scenario) -> (PodKey, Fate, AgentRun) {
        let ns = job["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let job_name = job["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let template = &job["spec"]["template"];
        let rv = self.bump();
        let suffix: String = fnv(&format!("{job_name}{rv}"), 1)
            .to_string()
            .chars()
            .take(5)
            .map(|c| (b'b' + c.to_digit(10).unwrap_or(0) as u8) as char)
            .collect();
        let name = format!("{job_name}-{suffix}");
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "generateName": format!("{job_name}-"), "namespace": ns,
                "uid": format!("uid-pod-{name}"), "resourceVersion": rv.to_string(), "creationTimestamp": TIMESTAMP,
                "labels": template["metadata"]["labels"].clone(),
                "annotations": template["metadata"]["annotations"].clone(),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": template["spec"].clone(),
            "status": {"phase": "Pending", "qosClass": "Burstable"}
        });
        pod["spec"]["serviceAccountName"] = json!("default");
        let container = &template["spec"]["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let asked = eagle_proto::AgentArgs::parse(args);
        let run = match &asked {
            Ok(eagle_proto::AgentCommand::Run(run)) => run.clone(),
            _ => eagle_proto::AgentArgs::default(),
        };
        let mut agent = AgentRun {
            containers: run.targets.iter().filter_map(|t| t.strip_prefix("container:")).map(str::to_owned).collect(),
            duration_ms: run.duration_ms,
            frequency_hz: run.frequency_hz,
            version_only: asked == Ok(eagle_proto::AgentCommand::Version),
            ..Default::default()
        };
        // Not pinned to a node: the scheduler picks the first one.
        agent.node = node_of(&template["spec"]).or_else(|| self.nodes.first().cloned()).unwrap_or_default();
        let known = self.nodes.contains(&agent.node);
        let fate = if known { scenario.fate(&agent.node) } else { Fate::Unschedulable };
        self.events.push(WatchEvent { rv, kind: "ADDED", object: pod.clone() });
        self.objects.insert(("pods".into(), ns.clone(), name.clone()), pod);
        ((ns, name), fate, agent)
    }

    /// Starts a graceful deletion; the pod's driver finishes it.
    fn mark_deleted(&mut self, key: &PodKey, grace: i64) -> Option<Value> {
        let object_key = ("pods".to_owned(), key.0.clone(), key.1.clone());
        if !self.objects.contains_key(&object_key) {
            return None;
        }
        let rv = self.bump();
        let pod = self.objects.get_mut(&object_key).expect("checked");
        if pod["metadata"]["deletionTimestamp"].is_null() {
            pod["metadata"]["deletionTimestamp"] = json!(TIMESTAMP);
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let pod = pod.clone();
        self.events.push(WatchEvent { rv, kind: "MODIFIED", object: pod.clone() });
        self.stopping.insert(key.clone());
        Some(pod)
    }
}

/// The node a profiling pod must run on: the `metadata.name` match field of its required node
/// affinity (or a hostname nodeSelector).
fn node_of(spec: &Value) -> Option<String> {
    let terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array();
    let from_affinity = terms.into_iter().flatten().find_map(|t| {
        t["matchFields"]
            .as_array()?
            .iter()
            .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")
            .and_then(|f| f["values"][0].as_str())
            .map(str::to_owned)
    });
    from_affinity.or_else(|| spec["nodeSelector"]["kubernetes.io/hostname"].as_str().map(str::to_owned))
}

impl Shared {
    /// Changes a pod and tells the watchers. False when the pod is gone.
    fn update_pod(&self, key: &PodKey, change: impl FnOnce(&mut Value)) -> bool {
        let mut state = self.lock();
        let rv = state.bump();
        let Some(pod) = state.objects.get_mut(&("pods".to_owned(), key.0.clone(), key.1.clone())) else {
            return false;
        };
        change(pod);
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let pod = pod.clone();
        state.events.push(WatchEvent { rv, kind: "MODIFIED", object: pod });
        self.changed.notify_all();
        true
    }

    fn stopping(&self, key: &PodKey) -> bool {
        self.shutdown.load(Ordering::SeqCst) || self.lock().stopping.contains(key)
    }

    /// Sleeps `d`; true as soon as the pod is asked to stop (deleted).
    fn pause(&self, key: &PodKey, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stopping(key) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            thread::sleep((until - now).min(Duration::from_millis(5)));
        }
    }

    /// The log exists once the container does.
    fn log_start(&self, key: &PodKey) {
        self.lock().logs.insert(key.clone(), PodLog::default());
    }

    fn log_line(&self, key: &PodKey, line: &str) {
        let mut state = self.lock();
        state.logs.entry(key.clone()).or_default().lines.push(line.to_owned());
        self.changed.notify_all();
    }

    fn log_end(&self, key: &PodKey) {
        let mut state = self.lock();
        state.last_log_end = Some(SystemTime::now());
        state.logs.entry(key.clone()).or_default().ended = true;
        self.changed.notify_all();
    }

    /// The end of a graceful deletion: the pod object and its log go.
    fn remove_pod(&self, key: &PodKey) {
        let mut state = self.lock();
        if let Some(log) = state.logs.get_mut(key) {
            log.ended = true;
        }
        let rv = state.bump();
        if let Some(mut pod) = state.objects.remove(&("pods".to_owned(), key.0.clone(), key.1.clone())) {
            pod["metadata"]["resourceVersion"] = json!(rv.to_string());
            state.events.push(WatchEvent { rv, kind: "DELETED", object: pod });
        }
        state.logs.remove(key);
        self.changed.notify_all();
    }
}

/// The agent's log, as the fate has it.
struct Script {
    lines: Vec<String>,
    /// Progress lines until the pod is deleted, then `on_stop`.
    hold: bool,
    ignores_stop: bool,
    on_stop: Vec<String>,
    exit_code: i32,
}

fn script(fate: &Fate, agent: &AgentRun) -> Script {
    let encoder = Encoder;
    let header = encoder.header(&Header {
        agent_version: "0.1.0".into(),
        node: agent.node.clone(),
        kernel: "6.1.0-lab".into(),
        started_unix_ms: 1_795_000_000_000,
        duration_ms: agent.duration_ms,
        frequency_hz: agent.frequency_hz,
        targets: agent
            .containers
            .iter()
            .map(|id| TargetReport { target: format!("container:{id}"), pids: vec![pid_of(id)] })
            .collect(),
    });
    let records = |stacks: &[Stack]| -> Vec<StackRecord> {
        agent
            .containers
            .iter()
            .flat_map(|id| {
                stacks.iter().map(move |s| StackRecord {
                    container: Some(id.clone()),
                    pid: pid_of(id),
                    process: AGENT_PROCESS.into(),
                    sampler: "ebpf".into(),
                    frames: s.frames.clone(),
                    count: s.count,
                })
            })
            .collect()
    };
    let total = |stacks: &[Stack]| stacks.iter().map(|s| s.count).sum::<u64>() * agent.containers.len() as u64;
    let progress = |fraction: u64, samples: u64| {
        encoder.progress(&Progress {
            elapsed_ms: agent.duration_ms * fraction / 2,
            samples: samples * fraction / 2,
            processes: agent.containers.len() as u64,
        })
    };
    let stderr_noise =
        format!("eagle-agent: sampling {} containers at {} Hz", agent.containers.len(), agent.frequency_hz);
    let complete = |stacks: &[Stack]| {
        let mut lines =
            vec![stderr_noise.clone(), header.clone(), progress(1, total(stacks)), progress(2, total(stacks))];
        lines.extend(encoder.payload(&records(stacks), 0));
        lines
    };
    let plain = |lines: Vec<String>, exit_code: i32| Script {
        lines,
        hold: false,
        ignores_stop: false,
        on_stop: Vec::new(),
        exit_code,
    };
    let runs = !matches!(fate, Fate::AgentError { .. } | Fate::Unschedulable | Fate::ImagePullError);
    if agent.version_only && runs {
        return plain(vec![format!("eagle-agent {}", env!("CARGO_PKG_VERSION"))], 0);
    }
    match fate {
        Fate::Profile(stacks) | Fate::FinishedBeforeWatch(stacks) => plain(complete(stacks), 0),
        Fate::Truncated(stacks) => {
            let mut lines = complete(stacks);
            let first_chunk = lines.iter().position(|l| l.starts_with("EAGLE1 D ")).expect("a payload chunk");
            lines.truncate(first_chunk + 1);
            plain(lines, 0)
        }
        Fate::Corrupt(stacks) => {
            let mut lines = complete(stacks);
            let trailer = lines.pop().expect("trailer");
            let json_text = trailer.strip_prefix("EAGLE1 T ").expect("trailer line");
            let mut t: Value = serde_json::from_str(json_text).expect("trailer json");
            t["crc32"] = json!(t["crc32"].as_u64().unwrap_or(0) ^ 0x5a5a);
            lines.push(format!("EAGLE1 T {t}"));
            plain(lines, 0)
        }
        Fate::AgentError { exit_code, message } => {
            plain(vec![stderr_noise.clone(), format!("eagle-agent: error: {message}")], *exit_code)
        }
        Fate::UntilStopped(stacks) => {
            let mut on_stop = vec![encoder.warning(&Warning {
                code: eagle_proto::WarningCode::EndedEarly,
                pid: None,
                message: format!(
                    "stopped by a signal after 0.4s of the {:.1}s window",
                    agent.duration_ms as f64 / 1000.0
                ),
            })];
            on_stop.extend(encoder.payload(&records(stacks), 0));
            Script {
                lines: vec![stderr_noise, header, progress(0, 0)],
                hold: true,
                ignores_stop: false,
                on_stop,
                exit_code: 0,
            }
        }
        Fate::IgnoresStop => Script {
            lines: vec![stderr_noise, header, progress(0, 0)],
            hold: true,
            ignores_stop: true,
            on_stop: Vec::new(),
            exit_code: 137,
        },
        Fate::Unschedulable | Fate::ImagePullError => plain(Vec::new(), 0),
    }
}

/// The life of a profiling pod, then its deletion once asked (pod or Job deleted).
fn drive(shared: &Shared, key: &PodKey, fate: &Fate, agent: &AgentRun, watched: bool) {
    // The kubelet is slower than the CLI: nothing happens to a profiling pod before the run's
    // watch is open, so that every run sees the same sequence of events. A run started with
    // `-a` has no watch: its pods go their way at once.
    while watched && shared.lock().watches == 0 {
        if shared.pause(key, Duration::from_millis(5)) {
            return end(shared, key, true);
        }
    }
    let stopped = live(shared, key, fate, agent);
    end(shared, key, stopped);
}

/// The end of a pod: at once if it was stopped (deleted) already, else when it is.
fn end(shared: &Shared, key: &PodKey, stopped: bool) {
    if !stopped {
        while !shared.pause(key, Duration::from_millis(50)) {}
    }
    thread::sleep(STEP);
    shared.remove_pod(key);
}

/// Moves the pod through its phases as its fate says. True when it was stopped (deleted)
/// on the way.
fn live(shared: &Shared, key: &PodKey, fate: &Fate, agent: &AgentRun) -> bool {
    let node = agent.node.clone();
    let image = {
        let state = shared.lock();
        state
            .objects
            .get(&("pods".to_owned(), key.0.clone(), key.1.clone()))
            .and_then(|p| p["spec"]["containers"][0]["image"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let container = "eagle-agent";
    if shared.pause(key, STEP) {
        return true;
    }
    if let Fate::Unschedulable = fate {
        let nodes = shared.lock().nodes.len();
        shared.update_pod(key, |pod| {
            pod["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": TIMESTAMP,
                "message": format!("0/{nodes} nodes are available: 1 Insufficient memory, {} node(s) didn't match Pod's node affinity.", nodes.saturating_sub(1))
            }]);
        });
        return false;
    }
    // Scheduled: the kubelet starts pulling.
    shared.update_pod(key, |pod| {
        pod["spec"]["nodeName"] = json!(node);
        pod["status"]["hostIP"] = json!("10.0.0.2");
        pod["status"]["startTime"] = json!(TIMESTAMP);
        pod["status"]["conditions"] =
            json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": TIMESTAMP}]);
        pod["status"]["containerStatuses"] = json!([waiting_status(container, &image, "ContainerCreating", None)]);
    });
    if shared.pause(key, STEP) {
        return true;
    }
    if let Fate::ImagePullError = fate {
        let pull = format!("rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
        shared.update_pod(key, |pod| {
            pod["status"]["containerStatuses"] = json!([waiting_status(container, &image, "ErrImagePull", Some(&pull))])
        });
        if !shared.pause(key, STEP * 4) {
            let backoff = format!("Back-off pulling image \"{image}\"");
            shared.update_pod(key, |pod| {
                pod["status"]["containerStatuses"] =
                    json!([waiting_status(container, &image, "ImagePullBackOff", Some(&backoff))])
            });
        }
        return false;
    }
    // Running.
    let container_id = format!("containerd://{}", container_id(&key.1, container));
    shared.log_start(key);
    shared.update_pod(key, |pod| {
        pod["status"]["phase"] = json!("Running");
        pod["status"]["podIP"] = json!("10.244.0.9");
        pod["status"]["conditions"] = json!([
            {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}
        ]);
        pod["status"]["containerStatuses"] = json!([{
            "name": container, "ready": true, "started": true, "restartCount": 0, "image": image, "imageID": format!("{image}@sha256:feed"),
            "containerID": container_id, "state": {"running": {"startedAt": TIMESTAMP}}
        }]);
    });
    let script = script(fate, agent);
    let mut stopped = false;
    let mut lines = script.lines.iter();
    for line in lines.by_ref() {
        shared.log_line(key, line);
        if shared.pause(key, shared.scenario.line_gap) {
            stopped = true;
            break;
        }
    }
    if script.hold {
        let mut ticks = 0u64;
        while !shared.pause(key, Duration::from_millis(100)) {
            ticks += 1;
            let p = Progress { elapsed_ms: ticks * 100, samples: ticks * 10, processes: agent.containers.len() as u64 };
            shared.log_line(key, &Encoder.progress(&p));
        }
        stopped = true;
    }
    if stopped {
        if script.ignores_stop {
            thread::sleep(KILL_AFTER);
        } else {
            // SIGTERM: the agent completes its stream.
            for line in lines.chain(script.on_stop.iter()) {
                shared.log_line(key, line);
            }
        }
    }
    // The container exits: its log ends, then the kubelet reports the pod.
    shared.log_end(key);
    thread::sleep(STEP);
    let exit_code = script.exit_code;
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let message: String = {
        let state = shared.lock();
        let lines = state.logs.get(key).map(|l| l.lines.clone()).unwrap_or_default();
        if exit_code == 0 {
            String::new()
        } else {
            lines.iter().rev().take(3).rev().map(|l| format!("{l}\n")).collect()
        }
    };
    shared.update_pod(key, |pod| {
        pod["status"]["phase"] = json!(if exit_code == 0 { "Succeeded" } else { "Failed" });
        pod["status"]["conditions"] = json!([
            {"type": "Initialized", "status": "True", "reason": "PodCompleted"}, {"type": "Ready", "status": "False", "reason": "PodCompleted"},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"}, {"type": "PodScheduled", "status": "True"}
        ]);
        let mut terminated = json!({"exitCode": exit_code, "reason": reason, "startedAt": TIMESTAMP, "finishedAt": TIMESTAMP, "containerID": container_id});
        if !message.is_empty() {
            terminated["message"] = json!(message);
        }
        pod["status"]["containerStatuses"] = json!([{
            "name": container, "ready": false, "started": false, "restartCount": 0, "image": image, "imageID": format!("{image}@sha256:feed"),
            "containerID": container_id, "state": {"terminated": terminated}
        }]);
    });
    shared.finish_job(key, exit_code == 0);
    stopped
}

fn waiting_status(container: &str, image: &str, reason: &str, message: Option<&str>) -> Value {
    let mut waiting = json!({"reason": reason});
    if let Some(m) = message {
        waiting["message"] = json!(m);
    }
    json!({"name": container, "ready": false, "started": false, "restartCount": 0, "image": image, "imageID": "", "state": {"waiting": waiting}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let object = json!({"metadata": {"labels": {"app": "api", "tier": "web"}}});
        for (selector, expected) in [
            ("", true),
            ("app=api", true),
            ("app==api,tier=web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app in (db,api)", true),
            ("app notin (db,api)", false),
            ("tier", true),
            ("!canary", true),
            ("!tier", false),
            ("app in (api),canary", false),
        ] {
            assert_eq!(selects(selector, &object), expected, "{selector}");
        }
    }

    #[test]
    fn routes_and_decoding() {
        let r = route("/apis/batch/v1/namespaces/kube-eagle/jobs/eagle-1-0").unwrap();
        assert_eq!((r.kind.plural, r.namespace.as_str(), r.name.as_deref()), ("jobs", "kube-eagle", Some("eagle-1-0")));
        let r = route("/api/v1/namespaces/x/pods/p/log").unwrap();
        assert_eq!(r.sub.as_deref(), Some("log"));
        assert!(route("/apis/apps/v1/namespaces/x/pods").is_none());
        assert_eq!(route("/api/v1/namespaces/kube-eagle").unwrap().name.as_deref(), Some("kube-eagle"));
        assert_eq!(percent_decode("kube-eagle.io%2Frun%3Dab+c"), "kube-eagle.io/run=ab c");
        let r = route("/apis/batch/v1/jobs").unwrap();
        assert_eq!((r.kind.plural, r.namespace.as_str(), r.name.as_deref()), ("jobs", "", None));
        let r = route("/apis/rbac.authorization.k8s.io/v1/clusterroles/kube-eagle:targets").unwrap();
        assert_eq!((r.kind.plural, r.name.as_deref()), ("clusterroles", Some("kube-eagle:targets")));
        assert!(route("/api/v1/pods/x").is_none(), "pods are namespaced");
        let now = now_rfc3339();
        assert!(now.len() == 20 && now.ends_with('Z') && now.as_str() > "2025-01-01", "{now}");
    }
}
