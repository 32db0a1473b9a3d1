//! `kubectl-eagle profile` in cluster mode against an API double (`eagle_tests::apiserver`):
//! the real binary, real Kubernetes API JSON over HTTP, no cluster. Each test asserts what a
//! user sees (exit code, the one-line error, the per-node table, the output file's stacks) and
//! the API calls that were made, including that every Job created is deleted again.
//!
//! Needs `target/debug/kubectl-eagle`: `cargo build -p kube-eagle --bin kubectl-eagle`.
//!
//! Long (over 600 lines) by its cases, not its logic: 34 short tests, one per situation a user
//! meets, each reading top to bottom; the shared set-up is in `eagle_tests::apiserver`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eagle_tests::apiserver::{
    container_id, expected_folded_lines, groundtruth, match_labels, namespace, pod, service, stack, workload,
    ApiServer, CliRun, Fate, Recorded, Scenario, Stack,
};
use serde_json::{json, Value};

const EAGLE_NS: &str = "kube-eagle";

// ---------------------------------------------------------------------------------------------
// The world: namespace `shop` on three nodes
// ---------------------------------------------------------------------------------------------

const API_A: &str = "api-7d4f9-k2x8p"; // node-a
const API_B: &str = "api-7d4f9-m9q4t"; // node-b

fn shop() -> Vec<Value> {
    let api = [("app", "api"), ("pod-template-hash", "7d4f9"), ("tier", "web")];
    vec![
        namespace("shop"),
        namespace("empty"),
        workload("Deployment", "shop", "api", match_labels(&[("app", "api")]), None),
        workload(
            "ReplicaSet",
            "shop",
            "api-7d4f9",
            match_labels(&[("app", "api"), ("pod-template-hash", "7d4f9")]),
            Some(("Deployment", "api")),
        ),
        pod("shop", API_A).on("node-a").labels(&api).owner("ReplicaSet", "api-7d4f9").running("app").build(),
        pod("shop", API_B).on("node-b").labels(&api).owner("ReplicaSet", "api-7d4f9").running("app").build(),
        service("shop", "web", &[("app", "api")]),
        workload("StatefulSet", "shop", "db", match_labels(&[("app", "db")]), None),
        pod("shop", "db-0")
            .on("node-a")
            .labels(&[("app", "db"), ("tier", "data")])
            .owner("StatefulSet", "db")
            .running("app")
            .build(),
        pod("shop", "db-1")
            .on("node-b")
            .labels(&[("app", "db"), ("tier", "data")])
            .owner("StatefulSet", "db")
            .running("app")
            .build(),
        workload(
            "DaemonSet",
            "shop",
            "node-agent",
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["node-agent"]}]}),
            None,
        ),
        pod("shop", "node-agent-4xkqz")
            .on("node-a")
            .labels(&[("app", "node-agent")])
            .owner("DaemonSet", "node-agent")
            .running("app")
            .build(),
        pod("shop", "node-agent-7p2wd")
            .on("node-b")
            .labels(&[("app", "node-agent")])
            .owner("DaemonSet", "node-agent")
            .running("app")
            .build(),
        pod("shop", "node-agent-9hj5c")
            .on("node-c")
            .labels(&[("app", "node-agent")])
            .owner("DaemonSet", "node-agent")
            .running("app")
            .build(),
        workload("ReplicaSet", "shop", "legacy", match_labels(&[("app", "legacy")]), None),
        pod("shop", "legacy-zx7vw")
            .on("node-c")
            .labels(&[("app", "legacy")])
            .owner("ReplicaSet", "legacy")
            .running("app")
            .build(),
        workload("Job", "shop", "nightly", match_labels(&[("controller-uid", "uid-nightly")]), None),
        pod("shop", "nightly-5k2jd")
            .on("node-b")
            .labels(&[("controller-uid", "uid-nightly"), ("job-name", "nightly")])
            .owner("Job", "nightly")
            .running("app")
            .build(),
        pod("shop", "solo")
            .on("node-c")
            .labels(&[("app", "solo")])
            .running("app")
            .waiting("sidecar", "CrashLoopBackOff")
            .build(),
        // Matches nothing that runs: for "nothing to profile".
        workload("Deployment", "shop", "broken", match_labels(&[("app", "broken")]), None),
        pod("shop", "broken-6c9f8-aaaaa")
            .on("node-a")
            .labels(&[("app", "broken")])
            .owner("ReplicaSet", "broken-6c9f8")
            .waiting("app", "CrashLoopBackOff")
            .build(),
        pod("shop", "broken-6c9f8-bbbbb")
            .labels(&[("app", "broken")])
            .owner("ReplicaSet", "broken-6c9f8")
            .waiting("app", "ContainerCreating")
            .build(),
    ]
}

/// Where each pod of `shop` runs and the workload level the graph gives it.
const PODS: [(&str, &str, &str); 11] = [
    (API_A, "node-a", "deployment/api"),
    (API_B, "node-b", "deployment/api"),
    ("db-0", "node-a", "statefulset/db"),
    ("db-1", "node-b", "statefulset/db"),
    ("node-agent-4xkqz", "node-a", "daemonset/node-agent"),
    ("node-agent-7p2wd", "node-b", "daemonset/node-agent"),
    ("node-agent-9hj5c", "node-c", "daemonset/node-agent"),
    ("legacy-zx7vw", "node-c", "replicaset/legacy"),
    ("nightly-5k2jd", "node-b", "job/nightly"),
    ("solo", "node-c", "pod/solo"),
    // Not running: never profiled.
    ("broken-6c9f8-aaaaa", "node-a", "deployment/broken"),
];

fn node_of(pod: &str) -> &'static str {
    PODS.iter().find(|(p, _, _)| *p == pod).map(|(_, n, _)| *n).expect("a pod of shop")
}

fn workload_of(pod: &str) -> &'static str {
    PODS.iter().find(|(p, _, _)| *p == pod).map(|(_, _, w)| *w).expect("a pod of shop")
}

/// The folded lines the graph must hold for these pods' `app` containers.
fn expected_lines(pods: &[&str], stacks: &[Stack]) -> BTreeSet<String> {
    let pods: Vec<(&str, &str)> = pods.iter().map(|p| (*p, workload_of(p))).collect();
    expected_folded_lines("shop", &pods, stacks)
}

fn lines_of(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------
// Helpers over the run and the recorded calls
// ---------------------------------------------------------------------------------------------

struct Case {
    server: ApiServer,
}

impl Case {
    fn new(scenario: Scenario) -> Self {
        Case { server: ApiServer::start(shop(), scenario) }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.server.dir().join(name)
    }

    /// `profile ARGS -n shop -d 1s -o OUT`.
    fn profile(&self, args: &[&str], out: &str) -> CliRun {
        let out = self.out(out);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-n", "shop", "-d", "1s", "-o", out.to_str().expect("utf-8 path")]);
        self.server.run(&all)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    fn count(&self, what: impl Fn(&Recorded) -> bool) -> usize {
        self.requests().iter().filter(|r| what(r)).count()
    }

    /// Requests in the user's namespace `shop`, as `METHOD path?query`.
    fn shop_calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.path.contains("/namespaces/shop/") || r.path.ends_with("/namespaces/shop"))
            .map(|r| {
                let query: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if query.is_empty() {
                    format!("{} {}", r.method, r.path)
                } else {
                    format!("{} {}?{}", r.method, r.path, query.join("&"))
                }
            })
            .collect()
    }

    fn context(&self, run: &CliRun) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\nrequests:\n{}",
            run.code,
            run.stdout,
            run.stderr,
            self.server.transcript()
        )
    }

    /// Every Job the API accepted was deleted again, with background propagation, after it
    /// was created, and no Job of the run is left.
    fn assert_jobs_deleted(&self, run: &CliRun) {
        let requests = self.requests();
        for job in self.server.created_jobs() {
            let name = job["metadata"]["name"].as_str().expect("named");
            let path = format!("/apis/batch/v1/namespaces/{EAGLE_NS}/jobs/{name}");
            let created = requests.iter().position(|r| {
                r.is("POST", &format!("/apis/batch/v1/namespaces/{EAGLE_NS}/jobs"))
                    && r.body.as_ref().is_some_and(|b| b["metadata"]["name"] == name)
            });
            let deleted = requests.iter().position(|r| r.is("DELETE", &path));
            let (Some(created), Some(deleted)) = (created, deleted) else {
                panic!("Job {name} was not created and deleted\n{}", self.context(run));
            };
            assert!(created < deleted, "Job {name} deleted before it was created\n{}", self.context(run));
            let body = requests[deleted].body.clone().unwrap_or_default();
            assert_eq!(
                body["propagationPolicy"], "Background",
                "Job {name} deleted without background propagation: {body}"
            );
            assert!(!self.server.exists("jobs", EAGLE_NS, name), "Job {name} still exists");
        }
    }

    /// Every Job was stopped by one patch (suspended, its deadline passed), naming its uid (so that only the
    /// Job this run created is ended); no pod was deleted by the CLI, and the Job controller
    /// created exactly one pod per Job: no replacement.
    fn assert_stopped_by_their_jobs(&self, ctx: &str) {
        let requests = self.requests();
        assert_eq!(
            requests.iter().filter(|r| r.method == "DELETE" && r.path.contains("/pods/")).count(),
            0,
            "no pod deleted: the Job controller would replace it\n{ctx}"
        );
        for job in self.server.created_jobs() {
            let name = job["metadata"]["name"].as_str().expect("named");
            let path = format!("/apis/batch/v1/namespaces/{EAGLE_NS}/jobs/{name}");
            let stops: Vec<&Recorded> = requests.iter().filter(|r| is_stop(r) && r.path == path).collect();
            assert_eq!(stops.len(), 1, "Job {name} stopped once\n{ctx}");
            let uid = &stops[0].body.as_ref().expect("a body")["metadata"]["uid"];
            assert!(uid.as_str().is_some_and(|u| u.starts_with("uid-jobs-")), "the uid as a precondition: {uid}");
            assert!(stops[0].body.as_ref().expect("a body")["spec"]["activeDeadlineSeconds"].as_i64() > Some(0));
            let pods = self.server.job_pods().into_iter().filter(|(j, _)| j == name).count();
            assert_eq!(pods, 1, "exactly one pod ever for Job {name}\n{ctx}");
        }
    }

    /// The created Jobs by node, nodes sorted (as the CLI numbers them).
    fn jobs_by_node(&self) -> Vec<(String, Value)> {
        let mut jobs: Vec<(String, Value)> =
            self.server.created_jobs().into_iter().map(|job| (affinity_node(&job), job)).collect();
        jobs.sort_by(|a, b| a.0.cmp(&b.0));
        jobs
    }
}

/// The node a planned Job is pinned to: its required node affinity on `metadata.name`.
fn affinity_node(job: &Value) -> String {
    let terms = &job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let field = &terms[0]["matchFields"][0];
    assert_eq!(
        (field["key"].as_str(), field["operator"].as_str()),
        (Some("metadata.name"), Some("In")),
        "affinity: {terms}"
    );
    assert_eq!(field["values"].as_array().map(Vec::len), Some(1), "exactly one node: {terms}");
    field["values"][0].as_str().expect("a node").to_owned()
}

/// The container ids a Job tells its agent to profile.
fn job_targets(job: &Value) -> BTreeSet<String> {
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].as_array().expect("args");
    let args: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
    args.windows(2)
        .filter(|w| w[0] == "--target")
        .map(|w| w[1].strip_prefix("container:").expect("container:ID").to_owned())
        .collect()
}

/// The namespaces a Job declares for its agent to hold its targets to (`--namespace=NS`).
fn job_namespaces(job: &Value) -> Vec<String> {
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].as_array().expect("args");
    args.iter().filter_map(|a| a.as_str()?.strip_prefix(eagle_proto::NAMESPACE_FLAG)).map(str::to_owned).collect()
}

fn is_eagle_pod_list(r: &Recorded) -> bool {
    r.is("GET", &format!("/api/v1/namespaces/{EAGLE_NS}/pods")) && !r.is_watch()
}

fn stderr_line<'a>(run: &'a CliRun, starts: &str) -> Option<&'a str> {
    run.stderr.lines().find(|l| l.starts_with(starts))
}

/// The per-node table's row of `node`.
fn row<'a>(run: &'a CliRun, node: &str) -> &'a str {
    stderr_line(run, &format!("{node} ")).unwrap_or_else(|| panic!("no table row for {node}:\n{}", run.stderr))
}

// ---------------------------------------------------------------------------------------------
// Every target kind
// ---------------------------------------------------------------------------------------------

/// Profiles `args` in `shop` and checks: exit 0, the announced container and node counts, the
/// user-namespace calls exactly `calls`, one Job per node of `pods` with exactly their container
/// ids, every stack of `pods` in the output and nothing else, the Jobs deleted.
fn check_target(args: &[&str], calls: &[&str], pods: &[&str]) -> (Case, CliRun) {
    let case = Case::new(Scenario::new());
    let run = case.profile(args, "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let nodes: BTreeSet<&str> = pods.iter().map(|p| node_of(p)).collect();
    let plural = |n: usize, noun: &str| if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") };
    let announced = format!("({} on {})", plural(pods.len(), "container"), plural(nodes.len(), "node"));
    // `-n` only where a target is looked up in the namespace: `namespace/NAME` names its own.
    let namespaced = args.iter().any(|a| !a.starts_with("namespace/"));
    assert!(
        stderr_line(&run, "profiling ").is_some_and(|l| l.contains(&announced)
            && l.contains("-n shop") == namespaced
            && !l.contains("-n default")),
        "expected `{announced}`, with -n shop: {namespaced}\n{ctx}"
    );
    assert_eq!(case.shop_calls(), calls, "{ctx}");
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(pods, &groundtruth()), "{ctx}");
    let jobs = case.jobs_by_node();
    assert_eq!(jobs.iter().map(|(n, _)| n.as_str()).collect::<BTreeSet<_>>(), nodes, "one Job per node\n{ctx}");
    assert_eq!(jobs.len(), nodes.len(), "one Job per node\n{ctx}");
    for (node, job) in &jobs {
        let want: BTreeSet<String> =
            pods.iter().filter(|p| node_of(p) == node).map(|p| container_id(p, "app")).collect();
        assert_eq!(job_targets(job), want, "container ids of the Job on {node}\n{ctx}");
        assert_eq!(job_namespaces(job), ["shop"], "the namespace its containers run in, declared\n{ctx}");
    }
    for node in &nodes {
        assert!(row(&run, node).ends_with(" ok"), "{ctx}");
    }
    assert!(stderr_line(&run, "wrote ").is_some_and(|l| !l.contains("PARTIAL")), "{ctx}");
    case.assert_jobs_deleted(&run);
    (case, run)
}

#[test]
fn pod_target_gets_the_pod_by_name_and_reports_its_idle_container() {
    let (_, run) = check_target(&["pod/solo"], &["GET /api/v1/namespaces/shop/pods/solo"], &["solo"]);
    assert!(
        run.stderr.lines().any(|l| l == "skipped shop/solo/sidecar: not running: CrashLoopBackOff"),
        "{}",
        run.stderr
    );
}

#[test]
fn deployment_target_lists_pods_by_its_selector() {
    check_target(
        &["deployment/api"],
        &[
            "GET /apis/apps/v1/namespaces/shop/deployments/api",
            "GET /api/v1/namespaces/shop/pods?labelSelector=app=api",
        ],
        &[API_A, API_B],
    );
}

#[test]
fn statefulset_target() {
    check_target(
        &["statefulset/db"],
        &["GET /apis/apps/v1/namespaces/shop/statefulsets/db", "GET /api/v1/namespaces/shop/pods?labelSelector=app=db"],
        &["db-0", "db-1"],
    );
}

#[test]
fn daemonset_target_with_a_match_expression_selector() {
    check_target(
        &["ds/node-agent"],
        &[
            "GET /apis/apps/v1/namespaces/shop/daemonsets/node-agent",
            "GET /api/v1/namespaces/shop/pods?labelSelector=app in (node-agent)",
        ],
        &["node-agent-4xkqz", "node-agent-7p2wd", "node-agent-9hj5c"],
    );
}

#[test]
fn replicaset_target() {
    check_target(
        &["replicaset/legacy"],
        &[
            "GET /apis/apps/v1/namespaces/shop/replicasets/legacy",
            "GET /api/v1/namespaces/shop/pods?labelSelector=app=legacy",
        ],
        &["legacy-zx7vw"],
    );
}

#[test]
fn job_target() {
    check_target(
        &["job/nightly"],
        &[
            "GET /apis/batch/v1/namespaces/shop/jobs/nightly",
            "GET /api/v1/namespaces/shop/pods?labelSelector=controller-uid=uid-nightly",
        ],
        &["nightly-5k2jd"],
    );
}

#[test]
fn service_target_lists_pods_by_its_selector() {
    check_target(
        &["svc/web"],
        &["GET /api/v1/namespaces/shop/services/web", "GET /api/v1/namespaces/shop/pods?labelSelector=app=api"],
        &[API_A, API_B],
    );
}

#[test]
fn label_selector_with_a_target() {
    check_target(
        &["pod/solo", "-l", "tier=web"],
        &["GET /api/v1/namespaces/shop/pods?labelSelector=tier=web", "GET /api/v1/namespaces/shop/pods/solo"],
        &[API_A, API_B, "solo"],
    );
}

/// `-l SELECTOR` is a target of its own (DESIGN.md "Targets"): the pods it selects, and exit 5
/// with the selector named when it selects none.
#[test]
fn label_selector_alone_is_a_target() {
    let (case, _) = check_target(
        &["-l", "tier=web"],
        &["GET /api/v1/namespaces/shop/pods?labelSelector=tier=web"],
        &[API_A, API_B],
    );
    let run = case.profile(&["-l", "app=ghost"], "ghost.folded");
    assert_eq!(run.code, Some(5), "{}", case.context(&run));
    assert!(
        run.stderr.lines().any(|l| l == "kubectl-eagle: error: -l app=ghost in namespace shop has no pods"),
        "{}",
        case.context(&run)
    );
}

#[test]
fn several_targets_at_once_are_merged_without_duplicates() {
    // The service selects the deployment's pods again: each container is profiled once.
    check_target(
        &["statefulset/db", "pod/solo", "deployment/api", "service/web"],
        &[
            "GET /apis/apps/v1/namespaces/shop/statefulsets/db",
            "GET /api/v1/namespaces/shop/pods?labelSelector=app=db",
            "GET /api/v1/namespaces/shop/pods/solo",
            "GET /apis/apps/v1/namespaces/shop/deployments/api",
            "GET /api/v1/namespaces/shop/pods?labelSelector=app=api",
            "GET /api/v1/namespaces/shop/services/web",
            "GET /api/v1/namespaces/shop/pods?labelSelector=app=api",
        ],
        &["db-0", "db-1", "solo", API_A, API_B],
    );
}

// ---------------------------------------------------------------------------------------------
// Many pods, few nodes: one Job per node, O(nodes) requests
// ---------------------------------------------------------------------------------------------

#[test]
fn namespace_target_runs_one_job_per_node_with_o_nodes_requests() {
    let running: Vec<&str> = PODS.iter().map(|(p, _, _)| *p).filter(|p| !p.starts_with("broken")).collect();
    let (case, run) = check_target(&["namespace/shop"], &["GET /api/v1/namespaces/shop/pods"], &running);
    let ctx = case.context(&run);
    assert!(run.stderr.contains("skipped shop/broken-6c9f8-aaaaa/app: not running: CrashLoopBackOff"), "{ctx}");
    assert!(run.stderr.contains("skipped shop/broken-6c9f8-bbbbb/app: not running: pod is Pending"), "{ctx}");

    // 10 pods on 3 nodes: every per-run request is per node, not per pod.
    let nodes = 3;
    assert_eq!(case.count(|r| r.is("POST", &format!("/apis/batch/v1/namespaces/{EAGLE_NS}/jobs"))), nodes, "{ctx}");
    assert_eq!(case.count(|r| r.is_watch()), 1, "one watch for the whole run\n{ctx}");
    assert_eq!(case.count(is_eagle_pod_list), 1, "the watcher's initial list\n{ctx}");
    assert_eq!(case.count(|r| r.is_follow()), nodes, "one log follow per node\n{ctx}");
    assert_eq!(case.count(|r| r.method == "DELETE"), nodes, "{ctx}");
    let job_lists = case.count(|r| r.is("GET", &format!("/apis/batch/v1/namespaces/{EAGLE_NS}/jobs")));
    assert_eq!(job_lists, 1, "one list of Jobs: the per-node conflict check\n{ctx}");
    let total = case.requests().len();
    // namespace GET + POST, list in shop, the conflict check's list of Jobs, 4 access reviews
    // (list pods in shop; create, patch, delete Jobs), who the user is (one SelfSubjectReview),
    // N creates, list + watch, N follows, N deletes
    assert!(total <= 6 + 4 + 1 + 3 * nodes, "{total} requests for {nodes} nodes\n{ctx}");
    let watch = case.requests().into_iter().find(Recorded::is_watch).expect("a watch");
    assert!(watch.path == format!("/api/v1/namespaces/{EAGLE_NS}/pods"), "{ctx}");
    let run_id = watch
        .param("labelSelector")
        .and_then(|s| s.strip_prefix("kube-eagle.io/run="))
        .expect("the run's label")
        .to_owned();
    assert!(stderr_line(&run, "profiling ").is_some_and(|l| l.ends_with(&format!("run {run_id}"))), "{ctx}");

    // The Job contract, as the API server received it.
    for (i, (node, job)) in case.jobs_by_node().iter().enumerate() {
        assert_eq!(job["metadata"]["name"], format!("eagle-{run_id}-{i}"), "{ctx}");
        assert_eq!(job["metadata"]["namespace"], EAGLE_NS);
        assert_eq!(job["metadata"]["labels"]["kube-eagle.io/run"], run_id.as_str());
        assert_eq!(job["metadata"]["annotations"]["kube-eagle.io/node"], node.as_str());
        let spec = &job["spec"];
        assert_eq!(spec["backoffLimit"], 0);
        assert_eq!(spec["activeDeadlineSeconds"], 121, "window + 120 s");
        assert!(spec["ttlSecondsAfterFinished"].as_i64().is_some_and(|t| t > 0));
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["restartPolicy"], "Never");
        // Every taint tolerated, but a node gone not ready or unreachable only for 30 s (the
        // first matching toleration is the one that counts).
        assert_eq!(
            pod["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
                {"operator": "Exists"}
            ])
        );
        assert_eq!(pod["terminationGracePeriodSeconds"], 30, "time for the agent to flush on SIGTERM");
        assert_eq!(pod["containers"][0]["securityContext"]["privileged"], true);
        let args = &pod["containers"][0]["args"];
        assert!(args.to_string().contains(r#""--duration-ms","1000""#), "{args}");
    }
    // The locked namespace was made, with its Pod Security label.
    let ns = case.requests().into_iter().find(|r| r.is("POST", "/api/v1/namespaces")).expect("namespace created");
    let body = ns.body.expect("body");
    assert_eq!(body["metadata"]["name"], EAGLE_NS);
    assert_eq!(body["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");
}

#[test]
fn an_existing_locked_namespace_is_left_alone() {
    let mut world = shop();
    world.push(namespace(EAGLE_NS));
    let case = Case { server: ApiServer::start(world, Scenario::new()) };
    let run = case.profile(&["pod/solo"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(case.count(|r| r.is("GET", &format!("/api/v1/namespaces/{EAGLE_NS}"))), 1, "{ctx}");
    assert_eq!(case.count(|r| r.is("POST", "/api/v1/namespaces")), 0, "{ctx}");
}

// ---------------------------------------------------------------------------------------------
// Nodes that fail: the graph comes from the others, the exit code says partial
// ---------------------------------------------------------------------------------------------

#[test]
fn unschedulable_node_fails_and_the_svg_says_partial() {
    let case = Case::new(Scenario::new().node("node-b", Fate::Unschedulable));
    let run = case.profile(&["deployment/api"], "api.svg");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "partial\n{ctx}");
    assert!(row(&run, "node-a").ends_with(" ok"), "{ctx}");
    assert!(
        row(&run, "node-b").contains("FAILED: unschedulable: the profiling pod cannot be placed on this node"),
        "{ctx}"
    );
    assert!(stderr_line(&run, "wrote ").is_some_and(|l| l.ends_with(" PARTIAL")), "{ctx}");
    let svg = std::fs::read_to_string(case.out("api.svg")).expect("the graph is written");
    assert!(svg.contains("PARTIAL: 1 node(s) failed"), "subtitle: {}", subtitle(&svg));
    assert!(svg.contains("1 of 2 nodes"), "subtitle: {}", subtitle(&svg));
    assert!(svg.contains("cpu_60") && svg.contains(API_A) && !svg.contains(API_B), "only node-a's stacks");
    case.assert_jobs_deleted(&run);
}

#[test]
fn the_summary_names_each_nodes_status() {
    let case = Case::new(Scenario::new().node("node-b", Fate::Unschedulable));
    let summary = case.out("summary.json");
    let run = case.profile(&["deployment/api", "--summary", summary.to_str().unwrap()], "api.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).expect("summary written")).unwrap();
    assert_eq!(summary["partial"], true, "{summary}");
    let nodes = summary["nodes"].as_array().expect("nodes listed");
    let by_name = |n: &str| nodes.iter().find(|x| x["node"] == n).unwrap_or_else(|| panic!("{n} in {summary}"));
    assert_eq!(by_name("node-a")["status"], "ok", "{summary}");
    assert!(by_name("node-a")["samples"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(by_name("node-b")["status"], "failed", "{summary}");
    assert!(by_name("node-b")["messages"][0].as_str().unwrap().contains("unschedulable"), "{summary}");
    assert!(summary["started_unix_ms"].as_u64().is_some(), "{summary}");
}

/// `--mode` reaches each Job as an agent argument, the (double's) agent answers in that mode,
/// and the graph and summary are in its unit.
#[test]
fn the_profile_mode_reaches_the_jobs_and_names_the_unit() {
    let case = Case::new(Scenario::new());
    let summary = case.out("summary.json");
    let run = case.profile(
        &["deployment/api", "--mode", "off-cpu", "--min-block", "5ms", "--summary", summary.to_str().unwrap()],
        "api.folded",
    );
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let jobs = case.jobs_by_node();
    assert!(!jobs.is_empty(), "{ctx}");
    for (node, job) in &jobs {
        let args: Vec<&str> = job["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.windows(2).any(|w| w == ["--mode", "off-cpu"]), "the Job on {node}: {args:?}\n{ctx}");
        assert!(args.windows(2).any(|w| w == ["--min-block-us", "5000"]), "the Job on {node}: {args:?}\n{ctx}");
    }
    let text = std::fs::read_to_string(case.out("api.folded")).expect("written");
    assert!(text.starts_with("# unit: off-cpu-microseconds\n"), "{text}");
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).expect("summary written")).unwrap();
    assert_eq!(summary["unit"], "off-cpu-microseconds", "{summary}");
    assert!(stderr_line(&run, "wrote ").is_some_and(|l| l.contains("µs off-CPU")), "{ctx}");
    // Each agent's cgroup counters, named by the pod and container the CLI knows the cgroup's
    // container as.
    let cgroups = summary["cgroups"].as_array().unwrap_or_else(|| panic!("cgroups in {summary}"));
    let mut named: Vec<(&str, &str, &str, &str)> = cgroups
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or_else(|| panic!("{k} in {c}"));
            (field("node"), field("namespace"), field("pod"), field("container"))
        })
        .collect();
    named.sort();
    assert_eq!(named, [("node-a", "shop", API_A, "app"), ("node-b", "shop", API_B, "app")], "{summary}");
    assert!(cgroups.iter().all(|c| c["limit_millicores"] == 250 && c["nr_throttled"] == 120), "{summary}");
    // The pod's own counters beside the container's: the kubelet limits both levels.
    assert!(
        cgroups.iter().all(|c| c["above"]["limit_millicores"] == 250 && c["above"]["throttled_seconds"] == 0.6),
        "{summary}"
    );
    assert!(
        run.stderr.lines().any(|l| l.contains(&format!("pod shop/{API_A}, container app: cgroup /kubepods/"))),
        "the table names each cgroup by pod\n{ctx}"
    );

    // A CPU profile's Jobs carry no mode: they are what they were before modes existed.
    let cpu = case.profile(&["deployment/api"], "cpu.folded");
    assert_eq!(cpu.code, Some(0), "{}", case.context(&cpu));
    let text = std::fs::read_to_string(case.out("cpu.folded")).expect("written");
    assert!(!text.starts_with('#'), "{text}");
}

fn subtitle(svg: &str) -> &str {
    svg.find("id=\"subtitle\"").map_or("(none)", |i| &svg[i..(i + 200).min(svg.len())])
}

#[test]
fn image_pull_failure_fails_its_node_at_once() {
    let case = Case::new(Scenario::new().node("node-a", Fate::ImagePullError));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    let failed = row(&run, "node-a");
    // The pull error, or the back-off that follows it, whichever the CLI saw first.
    assert!(
        failed.contains("FAILED: ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image")
            || failed.contains("FAILED: ImagePullBackOff: Back-off pulling image"),
        "{ctx}"
    );
    assert!(failed.contains("ghcr.io/kube-eagle/eagle-agent:"), "the image is named\n{ctx}");
    assert!(row(&run, "node-b").ends_with(" ok"), "{ctx}");
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_B], &groundtruth()), "{ctx}");
    assert!(run.elapsed < Duration::from_secs(10), "an image pull error is not waited out: {:?}", run.elapsed);
    case.assert_jobs_deleted(&run);
}

#[test]
fn agent_error_is_the_nodes_reason() {
    let message = "not permitted to load the eBPF program (Operation not permitted (os error 1)): run as root, or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8)";
    let case = Case::new(Scenario::new().node("node-b", Fate::AgentError { exit_code: 4, message: message.into() }));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    assert!(row(&run, "node-b").ends_with(&format!("FAILED: {message}")), "{ctx}");
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_A], &groundtruth()), "{ctx}");
    // The finished log was read in one piece after the follow ended.
    assert!(case.count(|r| r.path.ends_with("/log") && r.param("follow").is_none()) >= 1, "{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn truncated_log_fails_its_node_as_cut_short() {
    let case = Case::new(Scenario::new().node("node-a", Fate::Truncated(groundtruth())));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    let failed = row(&run, "node-a");
    assert!(
        failed.contains("FAILED: ")
            && failed.contains("the stream ended without its trailer after 1 payload chunks: the log was cut short"),
        "{ctx}"
    );
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_B], &groundtruth()), "{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn every_node_failing_writes_nothing_and_exits_6() {
    let scenario = Scenario::new()
        .node("node-a", Fate::Corrupt(groundtruth()))
        .node("node-b", Fate::AgentError { exit_code: 3, message: "no such process: pid:1".into() });
    let case = Case::new(scenario);
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(6), "{ctx}");
    assert!(row(&run, "node-a").contains("FAILED: the payload is corrupt: checksum"), "{ctx}");
    assert!(row(&run, "node-b").ends_with("FAILED: no such process: pid:1"), "{ctx}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l == "kubectl-eagle: error: no node delivered a profile (2 failed): see the table above"),
        "{ctx}"
    );
    assert!(!case.out("out.folded").exists(), "no graph from no result");
    case.assert_jobs_deleted(&run);
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C
// ---------------------------------------------------------------------------------------------

fn start_long_run(case: &Case, out: &str) -> eagle_tests::apiserver::RunningCli {
    let out = case.out(out);
    let cli = case.server.spawn(&["deployment/api", "-n", "shop", "-d", "30s", "-o", out.to_str().expect("utf-8")]);
    // Both agents are sampling once both logs are followed.
    let following = case
        .server
        .wait_for(Duration::from_secs(10), |rs| rs.iter().filter(|r| r.is_follow() && r.status == 200).count() == 2);
    assert!(following, "the CLI never followed both logs\n{}", case.server.transcript());
    std::thread::sleep(Duration::from_millis(200));
    cli
}

#[test]
fn ctrl_c_stops_the_agents_renders_what_they_sent_and_deletes_the_jobs() {
    let case = Case::new(
        Scenario::new()
            .node("node-a", Fate::UntilStopped(groundtruth()))
            .node("node-b", Fate::UntilStopped(vec![stack("main;io;cpu_30", 30)])),
    );
    let cli = start_long_run(&case, "api.svg");
    cli.signal(libc::SIGINT);
    let run = cli.wait(Duration::from_secs(20));
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "partial: interrupted\n{ctx}");
    assert!(run.elapsed < Duration::from_secs(10), "stopped well before the 30 s window: {:?}", run.elapsed);
    assert!(run.stderr.contains("interrupted: stopping the agents"), "{ctx}");
    // Each Job was suspended: the Job controller deleted its pod (SIGTERM), which made the
    // agent complete its stream, and created no other pod.
    case.assert_stopped_by_their_jobs(&ctx);
    for (node, _) in case.jobs_by_node() {
        assert!(row(&run, &node).ends_with("PARTIAL: ended early"), "{ctx}");
    }
    assert!(
        run.stderr.contains("warning: stopped by a signal after 0.4s of the 30.0s window"),
        "the agents' warnings are shown\n{ctx}"
    );
    let svg = std::fs::read_to_string(case.out("api.svg")).expect("the graph is written");
    assert!(svg.contains("PARTIAL: interrupted"), "subtitle: {}", subtitle(&svg));
    assert!(svg.contains("<title>cpu_60 (") && svg.contains("<title>io ("), "both nodes' stacks");
    assert!(svg.contains(API_A) && svg.contains(API_B));
    case.assert_jobs_deleted(&run);
}

#[test]
fn second_ctrl_c_stops_waiting_and_still_deletes_the_jobs() {
    let case = Case::new(Scenario::new().node("node-a", Fate::IgnoresStop).node("node-b", Fate::IgnoresStop));
    let cli = start_long_run(&case, "out.folded");
    cli.signal(libc::SIGINT);
    let stopping = case
        .server
        .wait_for(Duration::from_secs(5), |rs| rs.iter().filter(|r| is_stop(r) && r.status == 200).count() == 2);
    assert!(stopping, "the first Ctrl-C ends the agents' Jobs\n{}", case.server.transcript());
    std::thread::sleep(Duration::from_millis(200));
    cli.signal(libc::SIGINT);
    let run = cli.wait(Duration::from_secs(20));
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(6), "no node delivered anything\n{ctx}");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    assert!(row(&run, "node-a").ends_with("FAILED: interrupted"), "{ctx}");
    assert!(row(&run, "node-b").ends_with("FAILED: interrupted"), "{ctx}");
    assert!(!case.out("out.folded").exists());
    case.assert_jobs_deleted(&run);
}

#[test]
fn third_ctrl_c_quits_even_while_the_jobs_are_being_deleted() {
    let scenario = Scenario::new()
        .node("node-a", Fate::IgnoresStop)
        .node("node-b", Fate::IgnoresStop)
        .slow_job_delete(Duration::from_secs(20));
    let case = Case::new(scenario);
    let cli = start_long_run(&case, "out.folded");
    cli.signal(libc::SIGINT);
    let stopping = case
        .server
        .wait_for(Duration::from_secs(5), |rs| rs.iter().filter(|r| is_stop(r) && r.status == 200).count() == 2);
    assert!(stopping, "the first Ctrl-C ends the agents' Jobs\n{}", case.server.transcript());
    std::thread::sleep(Duration::from_millis(200));
    cli.signal(libc::SIGINT);
    let deleting = case.server.wait_for(Duration::from_secs(5), |rs| rs.iter().any(|r| r.method == "DELETE"));
    assert!(deleting, "the second Ctrl-C goes on to the cleanup\n{}", case.server.transcript());
    std::thread::sleep(Duration::from_millis(200));
    cli.signal(libc::SIGINT);
    let run = cli.wait(Duration::from_secs(10));
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(6), "{ctx}");
    assert!(run.elapsed < Duration::from_secs(8), "quit at once, not after the deletes: {:?}\n{ctx}", run.elapsed);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("interrupted again: quitting before the run's Jobs are deleted")
            && l.contains("kubectl eagle clean ")),
        "says what is left and how to remove it\n{ctx}"
    );
}

#[test]
fn ctrl_c_while_the_jobs_are_being_created_still_deletes_them() {
    // A slow admission webhook keeps the creates in flight when the user gives up.
    let scenario = Scenario::new().slow_job_create(Duration::from_millis(600));
    let case = Case::new(scenario);
    let out = case.out("out.folded");
    let cli = case.server.spawn(&["deployment/api", "-n", "shop", "-d", "30s", "-o", out.to_str().expect("utf-8")]);
    let creating = case.server.wait_for(Duration::from_secs(10), |rs| {
        rs.iter().any(|r| r.method == "POST" && r.path.ends_with("/jobs") && r.status == 0)
    });
    assert!(creating, "no Job creation seen\n{}", case.server.transcript());
    std::thread::sleep(Duration::from_millis(100));
    cli.signal(libc::SIGINT);
    let run = cli.wait(Duration::from_secs(30));
    let ctx = case.context(&run);
    assert!(run.code.is_some(), "killed by the signal: its Jobs are left behind\n{ctx}");
    assert_eq!(case.server.created_jobs().len(), 2, "{ctx}");
    case.assert_jobs_deleted(&run);
    // The Jobs, created after the Ctrl-C, were ended before their agents started: no result,
    // and no waiting for one.
    case.assert_stopped_by_their_jobs(&ctx);
    assert_eq!(run.code, Some(6), "{ctx}");
    assert!(row(&run, "node-a").ends_with("FAILED: interrupted before the agent started"), "{ctx}");
    assert!(row(&run, "node-b").ends_with("FAILED: interrupted before the agent started"), "{ctx}");
    assert!(run.elapsed < Duration::from_secs(5), "{:?}\n{ctx}", run.elapsed);
}

fn stops_the_run_like_ctrl_c(signal: i32) {
    let case = Case::new(
        Scenario::new()
            .node("node-a", Fate::UntilStopped(groundtruth()))
            .node("node-b", Fate::UntilStopped(groundtruth())),
    );
    let cli = start_long_run(&case, "out.folded");
    cli.signal(signal);
    let run = cli.wait(Duration::from_secs(20));
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    case.assert_stopped_by_their_jobs(&ctx);
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_A, API_B], &groundtruth()), "{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn sigterm_stops_the_run_like_ctrl_c() {
    stops_the_run_like_ctrl_c(libc::SIGTERM);
}

/// A closed terminal: the run stops and cleans up as on Ctrl-C.
#[test]
fn sighup_stops_the_run_like_ctrl_c() {
    stops_the_run_like_ctrl_c(libc::SIGHUP);
}

/// A node whose agent stopped before its window ended, for a reason of its own (its Job's
/// deadline, an eviction), delivers a valid stream: the graph has it, but the run is partial.
#[test]
fn a_node_that_ended_early_makes_the_run_partial() {
    let case = Case::new(Scenario::new().node("node-b", Fate::EndsEarly(groundtruth())));
    let summary = case.out("summary.json");
    let run = case.profile(&["deployment/api", "--summary", summary.to_str().unwrap()], "api.svg");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "partial\n{ctx}");
    assert!(row(&run, "node-a").ends_with(" ok"), "{ctx}");
    assert!(row(&run, "node-b").ends_with("PARTIAL: ended early"), "{ctx}");
    assert!(stderr_line(&run, "wrote ").is_some_and(|l| l.ends_with(" PARTIAL")), "{ctx}");
    let svg = std::fs::read_to_string(case.out("api.svg")).expect("the graph is written");
    assert!(svg.contains("PARTIAL: 1 node(s) ended early"), "subtitle: {}", subtitle(&svg));
    assert!(svg.contains(API_A) && svg.contains(API_B), "both nodes' stacks");
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).expect("summary written")).unwrap();
    assert_eq!(summary["partial"], true, "{summary}");
    let nodes = summary["nodes"].as_array().expect("nodes listed");
    let by_name = |n: &str| nodes.iter().find(|x| x["node"] == n).unwrap_or_else(|| panic!("{n} in {summary}"));
    assert_eq!(by_name("node-a")["status"], "ok", "{summary}");
    assert_eq!(by_name("node-b")["status"], "partial", "{summary}");
    assert!(
        by_name("node-b")["messages"][0].as_str().unwrap().contains("stopped by a signal after 0.6s"),
        "the reason, as the agent gave it: {summary}"
    );
    case.assert_jobs_deleted(&run);
}

/// A node whose kubelet stops mid window (log follow cut, log reads refused, the pod's status
/// frozen but for the node controller's not-ready) is noticed while the window runs and given
/// up seconds after the window's end, with the reason, instead of at the run's give-up time
/// (window + 150 s); the other node delivers and the run is partial.
#[test]
fn a_node_whose_kubelet_stops_fails_soon_after_the_window_and_the_rest_is_partial() {
    let case = Case::new(Scenario::new().node("node-b", Fate::KubeletStops));
    let run = case.profile(&["deployment/api"], "api.svg");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "partial\n{ctx}");
    assert!(row(&run, "node-a").ends_with(" ok"), "{ctx}");
    let b = row(&run, "node-b");
    assert!(b.contains("FAILED: the node went silent during the window") && b.contains("kubelet"), "{ctx}");
    assert!(b.contains("connection refused") || b.contains("not ready"), "what was seen: {b}");
    // The window is 1 s; the node is given up 10 s after it ends.
    assert!(run.elapsed < Duration::from_secs(20), "took {:?}\n{ctx}", run.elapsed);
    let svg = std::fs::read_to_string(case.out("api.svg")).expect("the graph is written");
    assert!(svg.contains("PARTIAL: 1 node(s) failed"), "subtitle: {}", subtitle(&svg));
    assert!(svg.contains(API_A) && !svg.contains(API_B), "only node-a's stacks");
    case.assert_jobs_deleted(&run);
}

/// Another user's `clean` (its Job deleted from another terminal) stops one node's agent: it
/// sends what it sampled, and the first run ends partial.
#[test]
fn a_node_cleaned_by_someone_else_makes_the_run_partial() {
    let case = Case::new(
        Scenario::new()
            .node("node-a", Fate::UntilStopped(groundtruth()))
            .node("node-b", Fate::UntilStopped(groundtruth())),
    );
    let cli = start_long_run(&case, "out.folded");
    let (_, job_b) = case.jobs_by_node().into_iter().find(|(n, _)| n == "node-b").expect("a Job on node-b");
    let job_b = job_b["metadata"]["name"].as_str().expect("named").to_owned();
    case.server.delete_object("jobs", EAGLE_NS, &job_b);
    std::thread::sleep(Duration::from_millis(300));
    cli.signal(libc::SIGINT);
    let run = cli.wait(Duration::from_secs(20));
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    assert!(row(&run, "node-b").ends_with("PARTIAL: ended early"), "{ctx}");
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_A, API_B], &groundtruth()), "{ctx}");
}

/// A request that ends a Job (suspended, and its deadline passed), as the CLI stops an agent.
fn is_stop(r: &Recorded) -> bool {
    r.method == "PATCH"
        && r.path.starts_with(&format!("/apis/batch/v1/namespaces/{EAGLE_NS}/jobs/"))
        && r.body
            .as_ref()
            .is_some_and(|b| b["spec"]["suspend"] == true && b["spec"]["activeDeadlineSeconds"].as_i64().is_some())
}

// ---------------------------------------------------------------------------------------------
// The API misbehaving on the way: timing, broken connections
// ---------------------------------------------------------------------------------------------

#[test]
fn a_pod_that_finished_before_the_watch_began_is_read_in_one_piece() {
    let case = Case::new(Scenario::new().node("node-a", Fate::FinishedBeforeWatch(groundtruth())));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_A, API_B], &groundtruth()), "{ctx}");
    let node_a_job = case.jobs_by_node().into_iter().find(|(n, _)| n == "node-a").expect("a Job on node-a").1;
    let pod_prefix =
        format!("/api/v1/namespaces/{EAGLE_NS}/pods/{}-", node_a_job["metadata"]["name"].as_str().expect("named"));
    let logs: Vec<Recorded> =
        case.requests().into_iter().filter(|r| r.path.starts_with(&pod_prefix) && r.path.ends_with("/log")).collect();
    assert!(logs.len() == 1 && !logs[0].is_follow(), "a finished pod's log is read once, not followed\n{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn a_broken_log_follow_is_recovered_from_the_finished_log() {
    let case = Case::new(Scenario::new().follow_breaks_after(2));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_A, API_B], &groundtruth()), "{ctx}");
    assert_eq!(case.count(Recorded::is_follow), 2, "followed once per node\n{ctx}");
    assert_eq!(case.count(|r| r.path.ends_with("/log") && !r.is_follow()), 2, "then read once per node\n{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn a_broken_watch_is_resumed_where_it_broke() {
    let case = Case::new(Scenario::new().watch_breaks_after(1));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_A, API_B], &groundtruth()), "{ctx}");
    let watches: Vec<Recorded> = case.requests().into_iter().filter(Recorded::is_watch).collect();
    assert!(watches.len() >= 2, "watched again\n{ctx}");
    let rv = |r: &Recorded| r.param("resourceVersion").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert!(rv(&watches[1]) > rv(&watches[0]), "resumed from the last event seen, not from the start\n{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn keep_leaves_the_jobs_for_their_ttl() {
    let case = Case::new(Scenario::new());
    let run = case.profile(&["deployment/api", "--keep"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(case.count(|r| r.method == "DELETE"), 0, "{ctx}");
    for job in case.server.created_jobs() {
        assert!(case.server.exists("jobs", EAGLE_NS, job["metadata"]["name"].as_str().expect("named")), "{ctx}");
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals: forbidden, not found, nothing to profile
// ---------------------------------------------------------------------------------------------

#[test]
fn forbidden_job_create_exits_4_and_says_what_is_forbidden() {
    let case = Case::new(Scenario::new().deny("create", "jobs", EAGLE_NS));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(4), "{ctx}");
    let error = stderr_line(&run, "kubectl-eagle: error: ").unwrap_or_else(|| panic!("no error line\n{ctx}"));
    assert!(
        error
            .contains("not allowed to create jobs in namespace kube-eagle (start profiling Jobs): nothing was started"),
        "{ctx}"
    );
    assert!(error.contains("ask your cluster admin"), "{ctx}");
    assert_eq!(
        case.count(|r| r.is("POST", &format!("/apis/batch/v1/namespaces/{EAGLE_NS}/jobs"))),
        0,
        "asked before trying\n{ctx}"
    );
    assert_eq!(case.count(|r| r.is_watch() || is_eagle_pod_list(r)), 0, "no watch without Jobs\n{ctx}");
    assert!(case.server.created_jobs().is_empty());
    assert!(!case.out("out.folded").exists());
    case.assert_jobs_deleted(&run);
}

#[test]
fn forbidden_watch_exits_4_and_still_deletes_the_jobs() {
    let case = Case::new(Scenario::new().deny("list", "pods", EAGLE_NS).deny("watch", "pods", EAGLE_NS));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(4), "{ctx}");
    let error = stderr_line(&run, "kubectl-eagle: error: ").unwrap_or_else(|| panic!("no error line\n{ctx}"));
    assert!(error.contains("not allowed to watch pods in the profiling namespace"), "{ctx}");
    assert_eq!(case.server.created_jobs().len(), 2, "{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn creating_the_locked_namespace_forbidden_exits_4() {
    let case = Case::new(Scenario::new().deny("create", "namespaces", ""));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(4), "{ctx}");
    let error = stderr_line(&run, "kubectl-eagle: error: ").unwrap_or_else(|| panic!("no error line\n{ctx}"));
    assert!(error.contains(r#"namespaces is forbidden: User "alice" cannot create resource "namespaces" in API group "" at the cluster scope"#), "{ctx}");
    assert!(case.server.created_jobs().is_empty(), "{ctx}");
    assert_eq!(case.count(|r| r.path.ends_with("/jobs")), 0, "{ctx}");
}

#[test]
fn reading_namespaces_forbidden_is_no_obstacle_when_the_locked_one_exists() {
    let mut world = shop();
    world.push(namespace(EAGLE_NS));
    let case = Case { server: ApiServer::start(world, Scenario::new().deny("get", "namespaces", "")) };
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(case.count(|r| r.is("GET", &format!("/api/v1/namespaces/{EAGLE_NS}")) && r.status == 403), 1, "{ctx}");
    assert_eq!(case.count(|r| r.is("POST", "/api/v1/namespaces")), 0, "{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn a_missing_locked_namespace_that_cannot_be_checked_is_named() {
    // Reading namespaces is forbidden, so the CLI cannot know the locked one is missing until
    // the Job create says so.
    let case = Case::new(Scenario::new().deny("get", "namespaces", ""));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(3), "{ctx}");
    let error = stderr_line(&run, "kubectl-eagle: error: ").unwrap_or_else(|| panic!("no error line\n{ctx}"));
    assert!(
        error.contains("namespace kube-eagle") && error.contains("--eagle-namespace"),
        "says which namespace is missing and how to choose another\n{ctx}"
    );
    assert!(!error.contains("-n)"), "-n is the targets' namespace, not the profiling one\n{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn missing_target_exits_3() {
    for (target, says, path) in [
        (
            "deployment/nope",
            "kubectl-eagle: error: deployment/nope not found in namespace shop (check the name, or -n)",
            "/apis/apps/v1/namespaces/shop/deployments/nope",
        ),
        (
            "pod/nope",
            "kubectl-eagle: error: pod/nope not found in namespace shop (check the name, or -n)",
            "/api/v1/namespaces/shop/pods/nope",
        ),
    ] {
        let case = Case::new(Scenario::new());
        let run = case.profile(&[target], "out.folded");
        let ctx = case.context(&run);
        assert_eq!(run.code, Some(3), "{ctx}");
        assert!(run.stderr.lines().any(|l| l == says), "{ctx}");
        let requests = case.requests();
        assert!(requests.iter().any(|r| r.is("GET", path) && r.status == 404), "{ctx}");
        assert!(requests.iter().all(|r| r.method == "GET"), "nothing created or deleted\n{ctx}");
    }
}

#[test]
fn nothing_running_exits_5_and_lists_why() {
    let case = Case::new(Scenario::new());
    let run = case.profile(&["deployment/broken"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(5), "{ctx}");
    let error = stderr_line(&run, "kubectl-eagle: error: ").unwrap_or_else(|| panic!("no error line\n{ctx}"));
    assert!(error.starts_with("kubectl-eagle: error: no running containers in deployment/broken -n shop: "), "{ctx}");
    assert!(error.contains("shop/broken-6c9f8-aaaaa/app not running: CrashLoopBackOff"), "{ctx}");
    assert!(error.contains("shop/broken-6c9f8-bbbbb/app not running: pod is Pending"), "{ctx}");
    assert!(case.requests().iter().all(|r| r.method == "GET"), "nothing created\n{ctx}");

    for (args, says) in [
        (
            vec!["namespace/empty"],
            "kubectl-eagle: error: namespace empty has no pods (does it exist? `kubectl get ns empty`)",
        ),
        (vec!["pod/solo", "-l", "app=ghost"], "kubectl-eagle: error: -l app=ghost in namespace shop has no pods"),
    ] {
        let run = case.profile(&args, "out.folded");
        assert_eq!(run.code, Some(5), "{}", case.context(&run));
        assert!(run.stderr.lines().any(|l| l == says), "{}", case.context(&run));
    }
    assert!(case.server.created_jobs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// --dry-run
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_prints_the_jobs_as_yaml_and_creates_nothing() {
    let case = Case::new(Scenario::new());
    let run = case.profile(&["deployment/api", "--dry-run"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let documents: Vec<&str> = run.stdout.split("\n---\n").collect();
    assert_eq!(documents.len(), 3, "the namespace and one Job per node\n{ctx}");
    assert!(
        documents[0].contains("kind: Namespace")
            && documents[0].contains("pod-security.kubernetes.io/enforce: privileged"),
        "{ctx}"
    );
    for (doc, pod) in documents[1..].iter().zip([API_A, API_B]) {
        assert!(doc.contains("kind: Job"), "{ctx}");
        assert!(doc.contains(&format!("container:{}", container_id(pod, "app"))), "{pod}'s container\n{ctx}");
        assert!(doc.contains(&format!("- {}", node_of(pod))), "pinned to {}\n{ctx}", node_of(pod));
        assert!(doc.contains("namespace: kube-eagle"), "{ctx}");
    }
    assert!(case.requests().iter().all(|r| r.method == "GET" && !r.is_watch()), "only reads\n{ctx}");
    assert_eq!(case.count(|r| r.path.contains(EAGLE_NS)), 0, "the locked namespace is not even read\n{ctx}");
    assert!(!case.out("out.folded").exists());
}

// ---------------------------------------------------------------------------------------------
// Hostile agent output (a custom --image, a forged run): a clear per-node failure, never the
// CLI's memory
// ---------------------------------------------------------------------------------------------

#[test]
fn a_line_longer_than_any_stream_has_fails_its_node_only() {
    let scenario =
        Scenario::new().node("node-a", Fate::OversizedLine(groundtruth())).node("node-b", Fate::Profile(groundtruth()));
    let case = Case::new(scenario);
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    // Refused by the follower ("has a line over") or, when the log is read whole, by the decoder.
    assert!(row(&run, "node-a").contains("FAILED: ") && row(&run, "node-a").contains("1048576 bytes"), "{ctx}");
    assert!(case.out("out.folded").exists(), "the other node's graph is written");
    case.assert_jobs_deleted(&run);
}

#[test]
fn a_compression_bomb_is_refused_before_it_is_inflated() {
    let scenario = Scenario::new().node("node-a", Fate::Bomb).node("node-b", Fate::Profile(groundtruth()));
    let case = Case::new(scenario);
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    let failed = row(&run, "node-a");
    assert!(failed.contains("FAILED: ") && failed.contains("the payload the trailer announces exceeds"), "{ctx}");
    case.assert_jobs_deleted(&run);
}

// ---------------------------------------------------------------------------------------------
// Limits a cluster admin can count on: admission, names, throttling, timeouts, concurrency
// ---------------------------------------------------------------------------------------------

#[test]
fn an_admission_rejection_is_named_within_seconds() {
    let why = "violates PodSecurity \"baseline:latest\": privileged (container \"eagle-agent\" must not set securityContext.privileged=true)";
    let case = Case::new(Scenario::new().node("node-b", Fate::AdmissionRejected(why.into())));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    assert!(
        row(&run, "node-b").contains("FAILED: no pod: its Job could not create one: Error creating: pods"),
        "{ctx}"
    );
    assert!(row(&run, "node-b").ends_with(why), "the admission's own reason\n{ctx}");
    assert!(run.elapsed < Duration::from_secs(20), "named within 20 s: {:?}", run.elapsed);
    assert_eq!(lines_of(&case.out("out.folded")), expected_lines(&[API_A], &groundtruth()), "{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn a_job_name_taken_by_another_run_is_never_deleted() {
    let case = Case::new(Scenario::new().node("node-b", Fate::NameTaken));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(7), "{ctx}");
    assert!(row(&run, "node-b").contains("already exists"), "{ctx}");
    let others: Vec<Value> = case
        .server
        .objects("jobs")
        .into_iter()
        .filter(|j| j["metadata"]["uid"].as_str().is_some_and(|u| u.starts_with("uid-jobs-of-another-run-")))
        .collect();
    assert_eq!(others.len(), 1, "the other run's Job is still there\n{ctx}");
    let name = others[0]["metadata"]["name"].as_str().expect("named");
    assert_eq!(case.count(|r| r.method == "DELETE" && r.path.ends_with(&format!("/jobs/{name}"))), 0, "{ctx}");
    // The Job this run did create was deleted, with its uid as a precondition.
    let deletes: Vec<Recorded> =
        case.requests().into_iter().filter(|r| r.method == "DELETE" && r.path.contains("/jobs/")).collect();
    assert_eq!(deletes.len(), 1, "{ctx}");
    let body = deletes[0].body.clone().unwrap_or_default();
    assert!(body["preconditions"]["uid"].as_str().is_some_and(|u| u.starts_with("uid-jobs-eagle-")), "{body}");
}

#[test]
fn throttled_creates_are_retried() {
    let case = Case::new(Scenario::new().throttle_job_creates(2));
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(case.count(|r| r.method == "POST" && r.path.ends_with("/jobs") && r.status == 429), 2, "{ctx}");
    assert_eq!(case.server.created_jobs().len(), 2, "{ctx}");
    case.assert_jobs_deleted(&run);
}

#[test]
fn concurrent_creates_are_capped() {
    let case = Case::new(Scenario::new().slow_job_create(Duration::from_millis(150)));
    let run = case.profile(&["namespace/shop", "--max-concurrent-requests", "1"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(case.server.created_jobs().len(), 3, "one Job per node\n{ctx}");
    assert_eq!(case.server.peak_job_creates_in_flight(), 1, "{ctx}");

    let case = Case::new(Scenario::new().slow_job_create(Duration::from_millis(150)));
    let run = case.profile(&["namespace/shop"], "out.folded");
    assert_eq!(run.code, Some(0), "{}", case.context(&run));
    assert_eq!(case.server.peak_job_creates_in_flight(), 3, "by default, up to 20 at once");
}

#[test]
fn an_api_server_that_does_not_answer_ends_the_run_within_its_timeout() {
    let case = Case::new(Scenario::new().slow_job_create(Duration::from_secs(20)));
    let run = case.profile(&["deployment/api", "--request-timeout", "1s"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(9), "{ctx}");
    assert!(run.elapsed < Duration::from_secs(8), "{:?}\n{ctx}", run.elapsed);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("kubectl-eagle: error: cannot reach the API server")),
        "one clear line\n{ctx}"
    );
}

/// The API server dies in the middle of the window (its process gone: every connection closed,
/// new ones refused): the run ends within its request timeout and retries, with exit 9, one
/// line naming the API server, and one saying how to find and remove the run's Jobs later.
#[test]
fn an_api_server_that_dies_mid_window_ends_the_run_within_its_timeout() {
    let case = Case::new(
        Scenario::new()
            .node("node-a", Fate::UntilStopped(groundtruth()))
            .node("node-b", Fate::UntilStopped(groundtruth())),
    );
    let out = case.out("out.folded");
    let cli = case.server.spawn(&[
        "deployment/api",
        "-n",
        "shop",
        "-d",
        "30s",
        "--request-timeout",
        "2s",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    let following = case
        .server
        .wait_for(Duration::from_secs(10), |rs| rs.iter().filter(|r| r.is_follow() && r.status == 200).count() == 2);
    assert!(following, "the CLI never followed both logs\n{}", case.server.transcript());
    std::thread::sleep(Duration::from_millis(200));
    case.server.die();
    let run = cli.wait(Duration::from_secs(30));
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(9), "{ctx}");
    assert!(run.elapsed < Duration::from_secs(15), "ended within its timeout and retries: {:?}\n{ctx}", run.elapsed);
    let error = stderr_line(&run, "kubectl-eagle: error: ").unwrap_or_else(|| panic!("no error line\n{ctx}"));
    assert!(error.contains("API server"), "{ctx}");
    assert!(run.stderr.contains("kubectl eagle clean "), "how to remove what is left\n{ctx}");
}

/// An API server that goes away after the results came in (every Job delete 503): the first
/// delete spends its retries, the others are not sent, and one line says which run's Jobs are
/// left and how to remove them. Without that, each Job spent its own 1.75 s of retries, one
/// after another at a cap of one request: a thousand nodes kept a finished run up for minutes.
#[test]
fn deletes_stop_once_the_api_server_fails_them() {
    let case = Case::new(Scenario::new().fail_job_deletes());
    let run = case.profile(&["namespace/shop", "--max-concurrent-requests", "1"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "the profile is written\n{ctx}");
    assert_eq!(case.server.created_jobs().len(), 3, "{ctx}");
    let deletes = case.count(|r| r.method == "DELETE" && r.path.contains("/jobs/"));
    assert_eq!(deletes, 4, "one Job's delete, retried 4 times in all; the other two not sent\n{ctx}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("warning: 2 more Job(s) of run ") && l.contains("kubectl eagle clean ")),
        "one line for the Jobs left\n{ctx}"
    );
}

/// A user who could start privileged pods but not stop or delete them again starts none.
#[test]
fn a_run_its_user_could_not_stop_is_not_started() {
    let case = Case::new(Scenario::new().deny("patch", "jobs", EAGLE_NS).deny("list", "pods", "shop"));
    let run = case.profile(&["pod/solo"], "out.folded");
    let ctx = case.context(&run);
    // The pod is read by name; listing pods in shop is what every other target needs.
    assert_eq!(run.code, Some(4), "{ctx}");
    let error = stderr_line(&run, "kubectl-eagle: error: ").unwrap_or_else(|| panic!("no error line\n{ctx}"));
    assert!(error.contains("list pods in namespace shop"), "{ctx}");
    assert!(error.contains("patch jobs in namespace kube-eagle (stop the agents early on Ctrl-C"), "{ctx}");
    assert!(case.server.created_jobs().is_empty(), "{ctx}");
}

/// Kubernetes 1.20 without the TTLAfterFinished gate drops the Jobs' TTL: the backstop that
/// removes what a run could not delete is gone, and the run says so.
#[test]
fn a_dropped_ttl_is_a_warning() {
    let case = Case::new(Scenario::new().without_ttl_controller());
    let run = case.profile(&["deployment/api"], "out.folded");
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let warnings: Vec<&str> =
        run.stderr.lines().filter(|l| l.contains("dropped the Jobs' ttlSecondsAfterFinished")).collect();
    assert_eq!(warnings.len(), 1, "once per run\n{ctx}");
    assert!(warnings[0].starts_with("warning: ") && warnings[0].contains("kubectl eagle clean"), "{ctx}");
}
