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
//! - DELETE of jobs (their pods go too) and pods (the agent gets "SIGTERM"). As the Job
//!   controller of Kubernetes before 1.26 does, a deleted pod of a Job that has not finished is
//!   replaced by a new one;
//! - PATCH (JSON merge patch) of jobs, with `metadata.uid` as a precondition: `suspend: true`
//!   (condition `Suspended`) or an `activeDeadlineSeconds` that has passed (`Failed`,
//!   `DeadlineExceeded`; one still ahead is waited for) deletes the Job's pod gracefully (the
//!   agent gets "SIGTERM"), with no replacement.
//!
//! For the task commands (`list`, `fetch`, `clean`, `uninstall`, `init`, `doctor`) also:
//!
//! - LIST across namespaces (`/apis/batch/v1/jobs`, `/api/v1/pods`, ...) and of cluster-scoped
//!   kinds; a Job's status follows its pod (`Complete` or `Failed` when the pod ends);
//! - ClusterRoles, ClusterRoleBindings, Roles and RoleBindings: POST, GET, PUT, DELETE, LIST;
//! - PATCH (JSON merge patch) and DELETE of namespaces (which takes what is inside);
//! - POST of SelfSubjectAccessReviews, answered from the scenario's denials for the user the
//!   request acts for (`Impersonate-User`, else the kubeconfig's `alice`), and of
//!   SelfSubjectReviews (unless [`Scenario::without_self_subject_review`]); `GET /version`;
//! - ResourceQuotas and NetworkPolicies, and, with [`Scenario::with_admission_policies`],
//!   ValidatingAdmissionPolicies and their bindings (and the `admissionregistration.k8s.io/v1`
//!   discovery that names them); the nodes, as metadata;
//! - a node whose kubelet stops ([`Fate::KubeletStops`]): follows cut, log reads 500;
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
use eagle_proto::{CgroupCpuStat, Encoder, Header, LimitedLevel, ProfileMode, Progress, StackRecord, Warning};
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

mod http;
mod kubelet;
mod logs;
mod routes;
mod scenario;
mod store;

pub(crate) use self::http::split_target;
use self::http::*;
use self::kubelet::*;
use self::logs::*;
use self::routes::*;
pub use self::scenario::*;
use self::store::*;

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
    /// Lowercase names, in the order sent.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of a header (lowercase name), in order: `header_values("impersonate-group")`.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The user the API server would act for: the impersonated one, else the kubeconfig's.
    pub fn user(&self) -> Option<&str> {
        self.header_values("impersonate-user").first().copied()
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
    /// Every pod the Job controller created, by Job name, in order (replacements included).
    job_pods: Vec<(String, String)>,
    /// Job creates answered 429 so far; Job creates in flight now, and at most.
    throttled: usize,
    creates_in_flight: usize,
    peak_creates_in_flight: usize,
    /// Requests of any kind being answered now (watches and log follows until they end), and
    /// at most.
    in_flight: usize,
    peak_in_flight: usize,
    /// When each Job was created, for its `activeDeadlineSeconds`.
    job_started: HashMap<Key, Instant>,
    nodes: Vec<String>,
    watches: usize,
    followed: HashSet<PodKey>,
    /// Nodes whose kubelet stopped ([`Fate::KubeletStops`]).
    dead_kubelets: HashSet<String>,
    /// When the last agent's log ended: the end of the run's sampling, for the benchmarks.
    last_log_end: Option<SystemTime>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    shutdown: AtomicBool,
    scenario: Scenario,
    /// Every open connection, by number, so that [`ApiServer::die`] can close them as a dying
    /// process's sockets are; each removes itself when served (a copy kept here would keep
    /// its socket open after the double closed it).
    connections: Mutex<HashMap<u64, TcpStream>>,
    /// Bumped, and `stops_cv` told, whenever a pod is asked to stop or the double shuts down:
    /// what the pods' drivers sleep on ([`Shared::pause`]). Not `changed`, which every log line
    /// of every agent signals: a thousand drivers woken by each line, or polling the state's
    /// lock every few milliseconds, took a core of their own in the 1,000-node benchmark.
    stops: AtomicU64,
    stops_lock: Mutex<()>,
    stops_cv: Condvar,
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
            connections: Mutex::new(HashMap::new()),
            stops: AtomicU64::new(0),
            stops_lock: Mutex::new(()),
            stops_cv: Condvar::new(),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for (number, stream) in (0u64..).zip(listener.incoming()) {
                if accepting.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    if let Ok(copy) = stream.try_clone() {
                        accepting.connections.lock().unwrap_or_else(|e| e.into_inner()).insert(number, copy);
                    }
                    let shared = accepting.clone();
                    thread::spawn(move || {
                        serve_connection(&shared, stream);
                        shared.connections.lock().unwrap_or_else(|e| e.into_inner()).remove(&number);
                    });
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

    /// The most Job creates that were in flight at once.
    pub fn peak_job_creates_in_flight(&self) -> usize {
        self.shared.lock().peak_creates_in_flight
    }

    /// The most requests of any kind that were being answered at once (a watch or a log
    /// follow counts until its stream ends).
    pub fn peak_requests_in_flight(&self) -> usize {
        self.shared.lock().peak_in_flight
    }

    /// Every pod the Job controller created, as `(job, pod)`, replacements included.
    pub fn job_pods(&self) -> Vec<(String, String)> {
        self.shared.lock().job_pods.clone()
    }

    /// Deletes an object as another client would (`kubectl delete`, another user's `clean`):
    /// a Job with background propagation, its pods gracefully.
    pub fn delete_object(&self, plural: &str, namespace: &str, name: &str) {
        let route = Route {
            kind: KINDS
                .iter()
                .find(|k| k.plural == plural)
                .unwrap_or_else(|| panic!("the double does not serve {plural}")),
            namespace: namespace.to_owned(),
            name: Some(name.to_owned()),
            sub: None,
        };
        let (code, answer) = self.shared.delete(&route, None);
        assert_eq!(code, 200, "delete {plural}/{name}: {answer}");
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
            self.shared.stops_changed();
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

    /// Wakes the drivers in [`Shared::pause`]: a pod was asked to stop, or the double stops.
    /// May be called with the state locked (the drivers never hold `stops_lock` and the state's
    /// lock together).
    fn stops_changed(&self) {
        self.stops.fetch_add(1, Ordering::SeqCst);
        let _wait_for_sleepers = self.stops_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.stops_cv.notify_all();
    }
}

impl ApiServer {
    /// The API server's process dies: new connections are refused and every open one (watches
    /// and log follows included) is closed at once, mid-answer or idle.
    pub fn die(&self) {
        self.stop_accepting();
        for (_, connection) in self.shared.connections.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
    }

    fn stop_accepting(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        self.shared.stops_changed();
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_accepting();
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
