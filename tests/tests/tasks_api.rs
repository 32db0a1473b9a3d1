//! Runs as tasks (`profile -a`, `list`, `fetch`, `clean`, `uninstall`, `init`, `doctor`, the
//! per-node conflict check) against the API double (`eagle_tests::apiserver`): the real binary,
//! real Kubernetes API JSON over HTTP, no cluster. Each test asserts what the user sees (exit
//! code, stdout, the one-line error, the graph) and which API calls were made.
//!
//! Needs `target/debug/kubectl-eagle`: `cargo build -p kube-eagle --bin kubectl-eagle`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eagle_tests::apiserver::{
    container_id, expected_folded_lines, groundtruth, match_labels, namespace, pod, workload, ApiServer, CliRun, Fate,
    Recorded, Scenario,
};
use serde_json::{json, Value};

const EAGLE_NS: &str = "kube-eagle";
const JOBS: &str = "/apis/batch/v1/namespaces/kube-eagle/jobs";
const API_A: &str = "api-7d4f9-k2x8p"; // node-a
const API_B: &str = "api-7d4f9-m9q4t"; // node-b

/// `shop`: a deployment on node-a and node-b, and one pod on each of node-c (its agent fails),
/// node-d (its agent samples until stopped) and node-e (it delivers no samples). The locked
/// namespace exists, with a Job and a ClusterRole that are not kube-eagle's.
fn world() -> Vec<Value> {
    let api = [("app", "api"), ("pod-template-hash", "7d4f9")];
    let mut eagle_ns = namespace(EAGLE_NS);
    eagle_ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("kube-eagle");
    eagle_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("privileged");
    let mut foreign_job = workload("Job", EAGLE_NS, "someone-elses", match_labels(&[("x", "y")]), None);
    foreign_job["metadata"]["labels"] = json!({"app": "backup"});
    vec![
        namespace("shop"),
        eagle_ns,
        foreign_job,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "kube-eagle:targets-by-hand"}, "rules": []}),
        workload("Deployment", "shop", "api", match_labels(&[("app", "api")]), None),
        workload("ReplicaSet", "shop", "api-7d4f9", match_labels(&api), Some(("Deployment", "api"))),
        pod("shop", API_A).on("node-a").labels(&api).owner("ReplicaSet", "api-7d4f9").running("app").build(),
        pod("shop", API_B).on("node-b").labels(&api).owner("ReplicaSet", "api-7d4f9").running("app").build(),
        pod("shop", "crashy").on("node-c").labels(&[("app", "crashy")]).running("app").build(),
        pod("shop", "slow").on("node-d").labels(&[("app", "slow")]).running("app").build(),
        pod("shop", "idle").on("node-e").labels(&[("app", "idle")]).running("app").build(),
    ]
}

fn scenario() -> Scenario {
    Scenario::new()
        .node("node-c", Fate::AgentError { exit_code: 4, message: "BPF is not permitted: run privileged".into() })
        .node("node-d", Fate::UntilStopped(groundtruth()))
        .node("node-e", Fate::Profile(Vec::new()))
}

struct Case {
    server: ApiServer,
}

impl Case {
    fn new(scenario: Scenario) -> Self {
        Case { server: ApiServer::start(world(), scenario) }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.server.dir().join(name)
    }

    fn run(&self, subcommand: &str, args: &[&str]) -> CliRun {
        self.server.run_for(subcommand, args)
    }

    /// `profile TARGET -n shop -d 1s -a ARGS`; asserts it started and returns the run id.
    fn start(&self, target: &str, args: &[&str]) -> String {
        let mut all = vec![target, "-n", "shop", "-d", "1s", "-a"];
        all.extend(args);
        let run = self.server.run(&all);
        assert_eq!(run.code, Some(0), "{}", self.context(&run));
        let id = run.stdout.trim().to_owned();
        assert!(id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()), "stdout is the run id alone: {id:?}");
        id
    }

    fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// The run's Jobs as the double has them now.
    fn jobs_of(&self, id: &str) -> Vec<Value> {
        self.server.objects("jobs").into_iter().filter(|j| j["metadata"]["labels"]["kube-eagle.io/run"] == id).collect()
    }

    /// Waits until every Job of the run has ended (the double's Job controller marks them).
    fn wait_finished(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let jobs = self.jobs_of(id);
            let ended = |j: &Value| {
                j["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["status"] == "True"))
            };
            if !jobs.is_empty() && jobs.iter().all(ended) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not finish:\n{jobs:#?}\n{:#?}",
                self.server.objects("pods")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Requests made from index `from` on, as `METHOD path`.
    fn calls_since(&self, from: usize) -> Vec<String> {
        self.requests()[from..].iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    }
}

fn lines_of(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(str::to_owned).collect()
}

/// The folded lines of the deployment's two pods, with the full hierarchy.
fn api_lines() -> BTreeSet<String> {
    expected_folded_lines("shop", &[(API_A, "deployment/api"), (API_B, "deployment/api")], &groundtruth())
}

fn list_json(case: &Case) -> Vec<Value> {
    let run = case.run("list", &["-o", "json"]);
    assert_eq!(run.code, Some(0), "{}", case.context(&run));
    serde_json::from_str::<Value>(&run.stdout).expect("list -o json is JSON").as_array().expect("an array").clone()
}

// ---------------------------------------------------------------------------------------------
// profile -a, then fetch
// ---------------------------------------------------------------------------------------------

#[test]
fn async_run_returns_at_once_and_fetch_renders_it_from_the_jobs_alone() {
    let case = Case::new(scenario());
    let run = case.server.run(&["deployment/api", "-n", "shop", "-d", "1s", "-a", "--group-by", "pod"]);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let id = run.stdout.trim().to_owned();
    assert!(run.stderr.contains(&format!("started run {id}: deployment/api -n shop")), "{ctx}");
    let kubeconfig = case.server.kubeconfig().display().to_string();
    let fetch_cmd = format!("kubectl eagle fetch {id} -o flamegraph.svg --group-by pod --kubeconfig {kubeconfig}");
    assert!(run.stderr.contains(&fetch_cmd), "the exact fetch command is printed\n{ctx}");

    // It created the Jobs and nothing else: no watch, no log, no delete.
    let requests = case.requests();
    assert_eq!(requests.iter().filter(|r| r.is("POST", JOBS)).count(), 2, "{ctx}");
    assert!(!requests.iter().any(|r| r.is_watch() || r.path.ends_with("/log") || r.method == "DELETE"), "{ctx}");
    let jobs = case.server.created_jobs();
    for job in &jobs {
        assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 86_400, "-a keeps results a day by default");
        let annotations = &job["metadata"]["annotations"];
        assert_eq!(annotations["kube-eagle.io/async"], "true");
        assert_eq!(annotations["kube-eagle.io/nodes"], "2");
        let placements: Value =
            serde_json::from_str(annotations["kube-eagle.io/placements"].as_str().expect("placements")).unwrap();
        let node = annotations["kube-eagle.io/node"].as_str().unwrap();
        let pod = if node == "node-a" { API_A } else { API_B };
        assert_eq!(placements, json!({"shop": {"deployment/api": {pod: {"app": container_id(pod, "app")}}}}));
    }

    // fetch: one list of Jobs, one watch, the logs; nothing created or deleted.
    case.wait_finished(&id);
    let before = case.requests().len();
    let out = case.out("shop.folded");
    let fetched = case.run("fetch", &[&id, "-o", out.to_str().unwrap()]);
    let ctx = case.context(&fetched);
    assert_eq!(fetched.code, Some(0), "{ctx}");
    assert_eq!(lines_of(&out), api_lines(), "the hierarchy comes back from the Jobs' annotations\n{ctx}");
    assert!(fetched.stderr.contains(&format!("fetching run {id} (deployment/api -n shop, 1s window")), "{ctx}");
    let calls = case.calls_since(before);
    assert_eq!(calls.iter().filter(|c| c.starts_with("GET /apis/batch/v1")).count(), 1, "{calls:#?}");
    assert!(
        calls.iter().all(|c| c.starts_with("GET ") || c.ends_with("/selfsubjectreviews")),
        "fetch only reads (and asks whose run it may fetch): {calls:#?}"
    );
    let logs = calls.iter().filter(|c| c.ends_with("/log")).count();
    assert!((2..=4).contains(&logs), "one read per node (two at most): {calls:#?}");
    assert_eq!(case.jobs_of(&id).len(), 2, "the Jobs stay for another fetch");

    // A second fetch, grouped differently, then --clean.
    let out = case.out("code.folded");
    let again = case.run("fetch", &[&id, "-o", out.to_str().unwrap(), "--group-by", "none", "--clean"]);
    assert_eq!(again.code, Some(0), "{}", case.context(&again));
    assert_eq!(
        lines_of(&out),
        BTreeSet::from(["main;spin;cpu_10 20".to_owned(), "main;spin;cpu_30 60".into(), "main;spin;cpu_60 120".into()])
    );
    assert!(again.stderr.contains(&format!("cleaned run {id}: deleted 2 Job(s)")), "{}", case.context(&again));
    assert!(case.jobs_of(&id).is_empty());
}

#[test]
fn fetch_while_the_run_still_samples_waits_for_it() {
    // Each agent takes about 2 s to write its stream.
    let case = Case::new(scenario().agent_line_gap(Duration::from_millis(250)));
    let id = case.start("deployment/api", &[]);
    let out = case.out("live.folded");
    let fetched = case.run("fetch", &[&id, "-o", out.to_str().unwrap()]);
    let ctx = case.context(&fetched);
    assert_eq!(fetched.code, Some(0), "{ctx}");
    assert!(fetched.stderr.contains(&format!("run {id} (deployment/api -n shop, 1s window")), "{ctx}");
    assert!(fetched.stderr.contains("is still running on 2 of 2 nodes: waiting for it"), "{ctx}");
    assert_eq!(lines_of(&out), api_lines(), "{ctx}");
    let follows = case.requests().iter().filter(|r| r.is_follow()).count();
    assert_eq!(follows, 2, "the running agents' logs are followed\n{ctx}");
}

#[test]
fn ctrl_c_stops_a_fetch_and_leaves_the_run_alone() {
    let case = Case::new(scenario());
    let id = case.start("pod/slow", &[]);
    let out = case.out("slow.svg");
    let fetch = case.server.spawn_for("fetch", &[&id, "-o", out.to_str().unwrap()]);
    assert!(
        case.server.wait_for(Duration::from_secs(10), |r| r.iter().any(Recorded::is_follow)),
        "it follows the agent"
    );
    fetch.signal(libc::SIGINT);
    let run = fetch.wait(Duration::from_secs(10));
    assert_eq!(run.code, None, "ended by the signal, like kubectl logs -f\n{}", case.context(&run));
    assert!(run.stderr.contains("Ctrl-C stops waiting; the run goes on"), "{}", run.stderr);
    assert!(!case.requests().iter().any(|r| r.method == "DELETE"), "{}", case.server.transcript());
    assert_eq!(case.jobs_of(&id).len(), 1);
    assert!(!out.exists());
    case.run("clean", &[&id]);
}

#[test]
fn fetch_names_expired_and_unknown_runs_with_exit_3() {
    let case = Case::new(scenario());
    let id = case.start("deployment/api", &[]);
    case.wait_finished(&id);
    case.server.expire_pods(&id);
    let out = case.out("gone.svg");
    let fetched = case.run("fetch", &[&id, "-o", out.to_str().unwrap()]);
    let ctx = case.context(&fetched);
    assert_eq!(fetched.code, Some(3), "{ctx}");
    assert!(fetched.stderr.contains(&format!("the results of run {id} expired")), "{ctx}");
    assert!(!out.exists(), "no graph pretends to be a result");
    let runs = list_json(&case);
    assert_eq!(runs[0]["status"], "expired", "{runs:#?}");

    let unknown = case.run("fetch", &["0badc0de", "-o", out.to_str().unwrap()]);
    assert_eq!(unknown.code, Some(3), "{}", case.context(&unknown));
    assert!(unknown.stderr.contains("no run 0badc0de in namespace kube-eagle"), "{}", unknown.stderr);
    let bad = case.run("fetch", &["NOT AN ID", "-o", out.to_str().unwrap()]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
}

#[test]
fn fetch_keeps_a_partial_result_and_says_which_node_failed() {
    let case = Case::new(scenario());
    // node-a delivers; node-c's agent fails.
    let id = case.start("pod/crashy", &[&format!("pod/{API_A}")]);
    case.wait_finished(&id);
    let out = case.out("partial.folded");
    let partial = case.run("fetch", &[&id, "-o", out.to_str().unwrap(), "--group-by", "pod"]);
    let ctx = case.context(&partial);
    assert_eq!(partial.code, Some(7), "{ctx}");
    assert!(partial.stderr.contains("FAILED: BPF is not permitted: run privileged"), "{ctx}");
    assert!(partial.stderr.contains("PARTIAL"), "{ctx}");
    let pods: BTreeSet<String> = lines_of(&out).iter().map(|l| l.split(';').nth(2).unwrap().to_owned()).collect();
    assert_eq!(pods, BTreeSet::from([format!("pod/{API_A}")]));

    let alone = case.start("pod/crashy", &[]);
    case.wait_finished(&alone);
    let failed = case.run("fetch", &[&alone, "-o", case.out("crashy.svg").to_str().unwrap()]);
    assert_eq!(failed.code, Some(6), "no node delivered\n{}", case.context(&failed));
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

#[test]
fn list_shows_running_failed_empty_and_done_runs_newest_first() {
    let case = Case::new(scenario());
    let done = case.start("deployment/api", &[]);
    case.wait_finished(&done);
    std::thread::sleep(Duration::from_millis(1100)); // creation times are to the second
    let failed = case.start("pod/crashy", &[]);
    case.wait_finished(&failed);
    std::thread::sleep(Duration::from_millis(1100));
    let empty = case.start("pod/idle", &[]);
    case.wait_finished(&empty);
    std::thread::sleep(Duration::from_millis(1100));
    let running = case.start("pod/slow", &[]);

    let before = case.requests().len();
    let table = case.run("list", &[]);
    let ctx = case.context(&table);
    assert_eq!(table.code, Some(0), "{ctx}");
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(rows[0].starts_with("RUN ") && rows[0].contains("STATUS") && rows[0].contains("REASON"), "{ctx}");
    let ids: Vec<&str> = rows[1..].iter().map(|r| r.split_whitespace().next().unwrap()).collect();
    assert_eq!(ids, [running.as_str(), &empty, &failed, &done], "newest first\n{ctx}");
    assert!(rows[1].contains("Running"), "{ctx}");
    assert!(rows[2].contains("Empty") && rows[2].ends_with("all profile results empty: increase --duration"), "{ctx}");
    assert!(rows[3].contains("Failed") && rows[3].contains("node-c: BPF is not permitted: run privileged"), "{ctx}");
    assert!(rows[4].contains("Done") && rows[4].contains("in 23h"), "{ctx}");
    // Two lists, and one small log tail per finished agent (4 of them: api x2, idle; crashy failed).
    let calls = case.calls_since(before);
    assert_eq!(calls.iter().filter(|c| c.starts_with("GET /apis/batch/v1/namespaces/kube-eagle/jobs")).count(), 1);
    assert_eq!(calls.iter().filter(|c| c.as_str() == "GET /api/v1/namespaces/kube-eagle/pods").count(), 1);
    assert_eq!(calls.iter().filter(|c| c.ends_with("/log")).count(), 3, "{calls:#?}");
    assert!(case.requests()[before..]
        .iter()
        .filter(|r| r.path.ends_with("/log"))
        .all(|r| r.param("tailLines").is_some()));

    let runs = list_json(&case);
    let by_id: BTreeMap<&str, &Value> = runs.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    assert_eq!(by_id[running.as_str()]["status"], "running");
    assert_eq!(by_id[running.as_str()]["nodes"]["running"], 1);
    assert_eq!(by_id[empty.as_str()]["status"], "empty");
    assert_eq!(by_id[empty.as_str()]["per_node"][0]["samples"], 0);
    assert_eq!(by_id[failed.as_str()]["status"], "failed");
    assert_eq!(by_id[failed.as_str()]["nodes"]["failed"], 1);
    assert_eq!(by_id[done.as_str()]["status"], "done");
    assert_eq!(by_id[done.as_str()]["nodes"]["done"], 2);
    assert_eq!(by_id[done.as_str()]["per_node"][0]["samples"], 100);
    assert_eq!(by_id[done.as_str()]["target"], "deployment/api -n shop");
    assert_eq!(by_id[done.as_str()]["async"], true);
    assert!(by_id[done.as_str()]["expires"].as_str().is_some());

    // The one that samples until stopped: clean stops it.
    let clean = case.run("clean", &[&running]);
    assert_eq!(clean.code, Some(0), "{}", case.context(&clean));
}

#[test]
fn list_of_an_empty_namespace_and_a_forbidden_user() {
    let case = Case::new(scenario());
    let empty = case.run("list", &[]);
    assert_eq!(empty.code, Some(0));
    assert!(empty.stdout.is_empty() && empty.stderr.contains("no profiling runs in namespace kube-eagle"));
    assert_eq!(list_json(&case), Vec::<Value>::new());

    let denied = Case::new(scenario().deny("list", "jobs", EAGLE_NS));
    let run = denied.run("list", &[]);
    assert_eq!(run.code, Some(4), "{}", denied.context(&run));
    assert!(run.stderr.contains("cannot list resource \"jobs\""), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// Conflicts
// ---------------------------------------------------------------------------------------------

#[test]
fn a_busy_node_refuses_a_second_run_unless_forced() {
    let case = Case::new(scenario());
    let first = case.start("pod/slow", &[]);
    let posts = || case.requests().iter().filter(|r| r.is("POST", JOBS)).count();
    assert_eq!(posts(), 1);

    let out = case.out("x.svg");
    let refused = case.server.run(&["pod/slow", "-n", "shop", "-d", "1s", "-o", out.to_str().unwrap()]);
    let ctx = case.context(&refused);
    assert_eq!(refused.code, Some(10), "{ctx}");
    assert!(refused.stderr.contains(&format!("node node-d already runs run {first} (pod/slow -n shop")), "{ctx}");
    assert!(refused.stderr.contains(&format!("`kubectl eagle clean {first}`")) && refused.stderr.contains("--force"));
    assert_eq!(posts(), 1, "nothing was created");
    let async_refused = case.server.run(&["pod/slow", "-n", "shop", "-a"]);
    assert_eq!(async_refused.code, Some(10), "{}", case.context(&async_refused));

    // Other nodes are free; two per node are allowed with --max-per-node 2; --force ignores it.
    case.start("pod/idle", &[]);
    let second = case.start("pod/slow", &["--max-per-node", "2"]);
    let third = case.server.run(&["pod/slow", "-n", "shop", "-a", "--max-per-node", "2"]);
    assert_eq!(third.code, Some(10), "{}", case.context(&third));
    assert!(third.stderr.contains(&first) && third.stderr.contains(&second), "{}", third.stderr);
    case.start("pod/slow", &["--force"]);
    assert_eq!(posts(), 4);

    let clean = case.run("clean", &["--all"]);
    assert_eq!(clean.code, Some(0), "{}", case.context(&clean));
}

// ---------------------------------------------------------------------------------------------
// clean and uninstall
// ---------------------------------------------------------------------------------------------

#[test]
fn clean_deletes_one_run_then_all_and_never_what_is_not_ours() {
    let case = Case::new(scenario());
    let one = case.start("deployment/api", &[]);
    let two = case.start("pod/idle", &[]);
    case.wait_finished(&one);

    let before = case.requests().len();
    let run = case.run("clean", &[&one]);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert!(run.stdout.contains(&format!("deleted run {one} (deployment/api -n shop, Done, 2 Job(s))")), "{ctx}");
    let deletes: BTreeSet<String> = case.calls_since(before).into_iter().filter(|c| c.starts_with("DELETE")).collect();
    let expected = BTreeSet::from([format!("DELETE {JOBS}/eagle-{one}-0"), format!("DELETE {JOBS}/eagle-{one}-1")]);
    assert_eq!(deletes, expected, "{ctx}");
    assert!(case.jobs_of(&one).is_empty());
    assert_eq!(case.jobs_of(&two).len(), 1, "the other run stays");

    // Again: nothing to do, still exit 0.
    let again = case.run("clean", &[&one]);
    assert_eq!(again.code, Some(0), "{}", case.context(&again));
    assert!(again.stdout.contains(&format!("run {one}: nothing to delete")), "{}", again.stdout);

    let dry = case.run("clean", &["--all", "--dry-run"]);
    assert!(dry.stdout.contains(&format!("would delete run {two}")), "{}", dry.stdout);
    assert_eq!(case.jobs_of(&two).len(), 1, "--dry-run deletes nothing");

    let all = case.run("clean", &["--all"]);
    assert_eq!(all.code, Some(0), "{}", case.context(&all));
    assert!(case.jobs_of(&two).is_empty());
    assert!(case.server.exists("jobs", EAGLE_NS, "someone-elses"), "a Job without our label is never touched");
    let nothing = case.run("clean", &["--all"]);
    assert!(nothing.stdout.contains("nothing to delete in namespace kube-eagle"), "{}", nothing.stdout);

    let usage = case.run("clean", &[]);
    assert_eq!(usage.code, Some(2), "a run id or --all: {}", usage.stderr);
}

#[test]
fn init_then_uninstall_leaves_nothing_of_kube_eagle_and_everything_else() {
    let case = Case::new(scenario());
    let init = case.run("init", &["--apply", "--user", "alice", "--target-namespace", "shop"]);
    let ctx = case.context(&init);
    assert_eq!(init.code, Some(0), "{ctx}");
    for made in [
        "created clusterrole kube-eagle:targets",
        "created clusterrole kube-eagle:namespace",
        "created role kube-eagle/kube-eagle:runner",
        "created clusterrolebinding kube-eagle:namespace",
        "created rolebinding kube-eagle/kube-eagle:runner",
        "created rolebinding shop/kube-eagle:targets",
    ] {
        assert!(init.stdout.contains(made), "{made}\n{ctx}");
    }
    // Again, with another user: bindings keep alice and add bob.
    let again = case.run("init", &["--apply", "--user", "bob", "--target-namespace", "shop"]);
    assert_eq!(again.code, Some(0), "{}", case.context(&again));
    assert!(again.stdout.contains("updated rolebinding kube-eagle/kube-eagle:runner"), "{}", again.stdout);
    let binding = case
        .server
        .objects("rolebindings")
        .into_iter()
        .find(|b| b["metadata"]["name"] == "kube-eagle:runner")
        .expect("the runner binding");
    let names: Vec<&str> =
        binding["subjects"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);

    let id = case.start("deployment/api", &[]);
    case.wait_finished(&id);

    let dry = case.run("uninstall", &["--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}", case.context(&dry));
    assert!(dry.stdout.contains("would delete namespace kube-eagle"), "{}", dry.stdout);
    assert!(case.server.exists("namespaces", "", EAGLE_NS), "--dry-run deletes nothing");

    let run = case.run("uninstall", &[]);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    for kind in ["jobs", "pods", "clusterroles", "clusterrolebindings", "roles", "rolebindings", "namespaces"] {
        let left: Vec<Value> = case
            .server
            .objects(kind)
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kube-eagle")
            .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
            .collect();
        assert!(left.is_empty(), "{kind} left: {left:#?}\n{ctx}");
    }
    assert!(!case.server.exists("namespaces", "", EAGLE_NS), "{ctx}");
    assert!(case.server.exists("clusterroles", "", "kube-eagle:targets-by-hand"), "not ours: kept");
    assert!(case.server.exists("namespaces", "", "shop"));
    // The foreign Job lived in the namespace kube-eagle made: it went with it, as namespaces do.

    let twice = case.run("uninstall", &[]);
    assert_eq!(twice.code, Some(0), "{}", case.context(&twice));
    assert!(twice.stdout.contains("nothing of kube-eagle is left"), "{}", twice.stdout);
}

#[test]
fn init_prints_the_rbac_and_leaves_someone_elses_objects_alone() {
    let case = Case::new(scenario());
    let printed = case.run("init", &["--group", "devs"]);
    let ctx = case.context(&printed);
    assert_eq!(printed.code, Some(0), "{ctx}");
    assert!(printed.stdout.contains("kind: ClusterRole") && printed.stdout.contains("name: devs"), "{ctx}");
    assert!(printed.stderr.contains("kubectl eagle init --apply"), "{ctx}");
    assert!(!case.requests().iter().any(|r| r.path.contains("rbac")), "without --apply no RBAC call\n{ctx}");

    let dry = case.run("init", &["--dry-run"]);
    assert_eq!(dry.code, Some(0));
    assert!(dry.stdout.contains("kind: Namespace") && dry.stdout.contains("kube-eagle:users"), "{}", dry.stdout);

    // Someone made a binding of the same name by hand.
    let hand = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                      "metadata": {"name": "kube-eagle:namespace"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "x"}});
    let server = ApiServer::start(world().into_iter().chain([hand]).collect(), scenario());
    let run = server.run_for("init", &["--apply"]);
    assert_eq!(run.code, Some(6), "{}\n{}", run.stderr, server.transcript());
    assert!(
        run.stderr.contains("clusterrolebinding kube-eagle:namespace exists and is not kube-eagle's"),
        "{}",
        run.stderr
    );
    let kept = server
        .objects("clusterrolebindings")
        .into_iter()
        .find(|b| b["metadata"]["name"] == "kube-eagle:namespace")
        .unwrap();
    assert_eq!(kept["roleRef"]["name"], "x", "left as it was");
}

// ---------------------------------------------------------------------------------------------
// doctor
// ---------------------------------------------------------------------------------------------

#[test]
fn doctor_on_a_user_without_job_create_permission_says_what_is_missing() {
    let case = Case::new(scenario().deny("create", "jobs", EAGLE_NS));
    let run = case.run("doctor", &["-n", "shop"]);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(4), "a missing permission is exit 4\n{ctx}");
    let line = run.stdout.lines().find(|l| l.contains("create jobs.batch in kube-eagle")).expect("the check");
    assert!(line.trim_start().starts_with("MISSING") && line.contains("start profiling Jobs"), "{ctx}");
    assert!(run.stdout.lines().filter(|l| l.trim_start().starts_with("MISSING")).count() == 1, "{ctx}");
    assert!(run.stdout.contains("skipped") && run.stdout.contains("not allowed to create Jobs"), "{ctx}");
    assert!(run.stderr.contains("1 problem(s); first: permission create jobs.batch in kube-eagle"), "{ctx}");
    // One review per permission, and no Job, not even a dry run.
    let reviews = case.requests().iter().filter(|r| r.path.ends_with("/selfsubjectaccessreviews")).count();
    assert_eq!(reviews, 20, "{ctx}");
    assert!(!case.requests().iter().any(|r| r.is("POST", JOBS)), "{ctx}");
    let asked = case.requests().into_iter().filter_map(|r| r.body).any(|b| {
        let a = &b["spec"]["resourceAttributes"];
        a["verb"] == "create" && a["group"] == "batch" && a["resource"] == "jobs" && a["namespace"] == EAGLE_NS
    });
    assert!(asked, "{ctx}");
}

#[test]
fn doctor_all_good_pulls_the_image_with_a_probe_job_and_removes_it() {
    let case = Case::new(scenario());
    let run = case.run("doctor", &["-n", "shop", "-o", "json"]);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let checks: Vec<Value> = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(checks.iter().all(|c| c["status"] == "ok"), "{checks:#?}");
    let image = checks.iter().find(|c| c["area"] == "image").unwrap();
    assert!(image["detail"].as_str().unwrap().contains("pulled and started on node node-a"), "{image}");
    let posts: Vec<Recorded> = case.requests().into_iter().filter(|r| r.is("POST", JOBS)).collect();
    assert_eq!(posts.len(), 2, "a dry run, then the probe\n{ctx}");
    assert_eq!(posts[0].param("dryRun"), Some("All"));
    let probe = &posts[1].body.clone().unwrap();
    assert_eq!(probe["spec"]["template"]["spec"]["containers"][0]["args"], json!(["--version"]));
    assert_eq!(probe["spec"]["template"]["spec"]["hostPID"], true, "the profiling pod's own spec");
    assert!(probe["metadata"]["labels"]["kube-eagle.io/run"].is_null(), "not a run: list does not show it");
    let name = probe["metadata"]["name"].as_str().unwrap();
    assert!(!case.server.exists("jobs", EAGLE_NS, name), "the probe is deleted\n{ctx}");
}

#[test]
fn doctor_reports_a_bad_image_and_a_dropped_ttl() {
    let case = Case::new(scenario().node("node-a", Fate::ImagePullError).without_ttl_controller());
    let run = case.run("doctor", &["-n", "shop", "--image", "lab.local/nope:0"]);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(6), "{ctx}");
    let image = run.stdout.lines().find(|l| l.contains("lab.local/nope:0")).expect("the image check");
    assert!(image.contains("MISSING") && image.contains("cannot be started on node node-a: ErrImagePull"), "{ctx}");
    let ttl = run.stdout.lines().find(|l| l.contains("dry run of a profiling Job")).unwrap();
    assert!(ttl.contains("warning") && ttl.contains("ttlSecondsAfterFinished"), "{ctx}");
}

// ---------------------------------------------------------------------------------------------
// kubectl's flags: --as, --as-group, -v
// ---------------------------------------------------------------------------------------------

/// `--as bob --as-group devs --as-group ops`: every request carries kubectl's impersonation
/// headers, and the API server answers for bob: `doctor` reports what bob may not do, the
/// access check of a run refuses to start for him, while alice (the kubeconfig's user) may.
#[test]
fn impersonation_reaches_every_request_and_the_access_checks_answer_for_that_user() {
    let case = Case::new(scenario().deny_user("bob", "list", "pods", "shop"));
    let as_bob = ["--as", "bob", "--as-group", "devs", "--as-group", "ops"];
    let mut args = vec!["-n", "shop", "--skip-image"];
    args.extend(as_bob);
    let doctor = case.run("doctor", &args);
    let ctx = case.context(&doctor);
    assert_eq!(doctor.code, Some(4), "bob may not list pods in shop\n{ctx}");
    let line = doctor.stdout.lines().find(|l| l.contains("list pods in shop")).expect("the check");
    assert!(line.trim_start().starts_with("MISSING"), "{ctx}");
    let user = doctor.stdout.lines().find(|l| l.contains(" user ")).expect("who the checks are for");
    assert!(user.contains("bob: the checks below are for this user"), "{ctx}");
    let requests = case.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.user(), Some("bob"), "{r} acts as bob\n{ctx}");
        assert_eq!(r.header_values("impersonate-group"), ["devs", "ops"], "{r}: both groups, in order");
    }

    let seen = case.requests().len();
    let alice = case.run("doctor", &["-n", "shop", "--skip-image"]);
    assert_eq!(alice.code, Some(0), "alice may\n{}", case.context(&alice));
    assert!(case.requests()[seen..].iter().all(|r| r.user().is_none()), "no impersonation without --as");

    let seen = case.requests().len();
    let mut profile = vec!["deployment/api", "-n", "shop", "-d", "1s", "-o"];
    let out = case.out("bob.folded");
    profile.push(out.to_str().unwrap());
    profile.extend(as_bob);
    let run = case.server.run(&profile);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(4), "the access check refuses bob's run\n{ctx}");
    assert!(run.stderr.contains("pods") && run.stderr.contains("shop"), "{ctx}");
    assert!(!case.requests()[seen..].iter().any(|r| r.is("POST", JOBS)), "no Job for bob\n{ctx}");
    assert!(case.requests()[seen..].iter().all(|r| r.user() == Some("bob")), "{ctx}");
}

#[test]
fn as_group_without_as_is_a_usage_error() {
    let case = Case::new(scenario());
    let run = case.run("list", &["--as-group", "devs"]);
    assert_eq!(run.code, Some(2), "{}", case.context(&run));
    assert!(run.stderr.contains("--as"), "{}", run.stderr);
    assert!(case.requests().is_empty(), "nothing sent");
}

/// `-v 6` logs each API request with its status and time, as `kubectl -v=6` does; `--v=1` the
/// connection; without `-v` the output is as before.
#[test]
fn verbosity_6_logs_every_request_and_1_the_connection() {
    let case = Case::new(scenario());
    let quiet = case.run("list", &[]);
    assert_eq!(quiet.code, Some(0), "{}", case.context(&quiet));
    assert!(!quiet.stderr.contains("[v"), "no log lines without -v: {}", quiet.stderr);

    let seen = case.requests().len();
    let six = case.run("list", &["-v", "6"]);
    assert_eq!(six.code, Some(0), "{}", case.context(&six));
    let logged: Vec<&str> = six.stderr.lines().filter(|l| l.starts_with("kubectl-eagle: [v6] ")).collect();
    let sent = &case.requests()[seen..];
    assert_eq!(logged.len(), sent.len(), "one line per request:\n{}\n{}", six.stderr, case.server.transcript());
    let url = case.server.url();
    let jobs = logged
        .iter()
        .find(|l| l.contains(&format!("GET {url}/apis/batch/v1/namespaces/kube-eagle/jobs?")))
        .unwrap_or_else(|| panic!("the Job list, with the server's URL: {}", six.stderr));
    assert!(jobs.contains(" 200 OK in ") && jobs.ends_with(" milliseconds"), "{jobs}");
    assert!(six.stderr.contains("[v1] API server "), "-v 6 includes level 1: {}", six.stderr);

    let one = case.run("list", &["--v=1", "--as", "bob"]);
    assert_eq!(one.code, Some(0), "{}", case.context(&one));
    assert!(one.stderr.contains("[v1] API server ") && one.stderr.contains("acting as user bob"), "{}", one.stderr);
    assert!(!one.stderr.contains("[v6]"), "{}", one.stderr);
}

// ---------------------------------------------------------------------------------------------
// Runs recorded per user
// ---------------------------------------------------------------------------------------------

fn run_user(case: &Case, id: &str) -> Vec<String> {
    case.jobs_of(id)
        .iter()
        .map(|j| j["metadata"]["annotations"]["kube-eagle.io/user"].as_str().unwrap_or("(none)").to_owned())
        .collect()
}

/// Each run records who started it (SelfSubjectReview's name); `list` shows and `clean` acts
/// on one's own runs, another's only with `--all-users`, and naming another's run is refused.
#[test]
fn runs_are_recorded_per_user_and_list_and_clean_act_on_ones_own() {
    let case = Case::new(scenario());
    let mine = case.start("deployment/api", &[]);
    let bobs = case.start("pod/crashy", &["--as", "bob"]);
    assert_eq!(run_user(&case, &mine), ["alice", "alice"]);
    assert_eq!(run_user(&case, &bobs), ["bob"]);
    case.wait_finished(&mine);
    case.wait_finished(&bobs);

    let listed = list_json(&case);
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [mine.as_str()], "only alice's");
    assert_eq!(listed[0]["user"], "alice");
    let all = case.run("list", &["-o", "json", "--all-users"]);
    let all: Vec<Value> = serde_json::from_str(&all.stdout).expect("JSON");
    assert_eq!(all.len(), 2, "{all:#?}");
    let table = case.run("list", &[]);
    assert!(table.stderr.contains("1 run(s) of other users not shown (--all-users shows them)"), "{}", table.stderr);

    let refused = case.run("clean", &[&bobs]);
    let ctx = case.context(&refused);
    assert_eq!(refused.code, Some(4), "{ctx}");
    assert!(
        refused.stderr.contains(&format!("not your run: {bobs} (of bob)")) && refused.stderr.contains("--all-users"),
        "{ctx}"
    );
    assert!(!case.jobs_of(&bobs).is_empty(), "bob's run stays");

    let all = case.run("clean", &["--all"]);
    let ctx = case.context(&all);
    assert_eq!(all.code, Some(0), "{ctx}");
    assert!(all.stdout.contains("kept 1 run(s) of other users"), "{ctx}");
    assert!(case.jobs_of(&mine).is_empty(), "alice's run is gone\n{ctx}");
    assert!(!case.jobs_of(&bobs).is_empty(), "bob's run stays\n{ctx}");
    assert!(case.server.exists("jobs", EAGLE_NS, "someone-elses"), "not kube-eagle's: never touched");

    let by_bob = case.run("clean", &[&bobs, "--as", "bob"]);
    assert_eq!(by_bob.code, Some(0), "{}", case.context(&by_bob));
    assert!(case.jobs_of(&bobs).is_empty());
}

/// `fetch` reads one's own runs; another user's only with `--all-users`, and the refusal reads
/// no log of theirs.
#[test]
fn fetch_of_another_users_run_needs_all_users() {
    let case = Case::new(scenario());
    let bobs = case.start("deployment/api", &["--as", "bob"]);
    case.wait_finished(&bobs);
    let out = case.out("bobs.folded");
    let before = case.requests().len();
    let refused = case.run("fetch", &[&bobs, "-o", out.to_str().unwrap()]);
    let ctx = case.context(&refused);
    assert_eq!(refused.code, Some(4), "{ctx}");
    assert!(
        refused.stderr.contains(&format!("not your run: {bobs} (of bob); you are alice"))
            && refused.stderr.contains("--all-users"),
        "{ctx}"
    );
    assert!(!case.calls_since(before).iter().any(|c| c.ends_with("/log") || c.contains("watch")), "{ctx}");
    assert!(!out.exists(), "nothing written");

    let by_bob = case.run("fetch", &[&bobs, "-o", out.to_str().unwrap(), "--as", "bob"]);
    assert_eq!(by_bob.code, Some(0), "{}", case.context(&by_bob));
    let all = case.run("fetch", &[&bobs, "-o", out.to_str().unwrap(), "--all-users"]);
    assert_eq!(all.code, Some(0), "{}", case.context(&all));
    assert!(!lines_of(&out).is_empty());
}

/// A server without SelfSubjectReview (the lab's 1.20): the kubeconfig's user entry names the
/// run, and `--as` the impersonated user.
#[test]
fn without_self_subject_review_the_kubeconfig_or_as_names_the_user() {
    let case = Case::new(scenario().without_self_subject_review());
    let mine = case.start("pod/crashy", &[]);
    assert_eq!(run_user(&case, &mine), ["alice"]);
    let bobs = case.start("pod/idle", &["--as", "bob"]);
    assert_eq!(run_user(&case, &bobs), ["bob"]);
    let reviews = case.requests().iter().filter(|r| r.path.ends_with("/selfsubjectreviews")).count();
    assert!(reviews >= 2, "asked, and fell back: {}", case.server.transcript());
}

// ---------------------------------------------------------------------------------------------
// init: quota, network policy, admission policy
// ---------------------------------------------------------------------------------------------

fn object_named(case: &Case, plural: &str, name: &str) -> Value {
    case.server
        .objects(plural)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {plural} {name}: {}", case.server.transcript()))
}

/// Where the server has ValidatingAdmissionPolicy (1.30+), `init --apply` makes it and its
/// binding for the locked namespace, beside a pod quota of the node count and a deny-all
/// NetworkPolicy; `uninstall` removes each.
#[test]
fn init_limits_the_locked_namespace_and_uninstall_removes_the_limits() {
    let case = Case::new(scenario().with_admission_policies());
    let image = "registry.example/eagle-agent@sha256:".to_owned() + &"ab".repeat(32);
    let init = case.run("init", &["--apply", "--image", &image]);
    let ctx = case.context(&init);
    assert_eq!(init.code, Some(0), "{ctx}");
    for made in [
        "created resourcequota kube-eagle/kube-eagle",
        "created networkpolicy kube-eagle/kube-eagle-deny-all",
        "created validatingadmissionpolicy kube-eagle-agents",
        "created validatingadmissionpolicybinding kube-eagle-agents",
        "created validatingadmissionpolicy kube-eagle-agents-runs",
        "created validatingadmissionpolicybinding kube-eagle-agents-runs",
    ] {
        assert!(init.stdout.contains(made), "{made}\n{ctx}");
    }
    let quota = object_named(&case, "resourcequotas", "kube-eagle");
    assert_eq!(quota["metadata"]["namespace"], EAGLE_NS);
    assert_eq!(quota["spec"]["hard"]["pods"], "5", "one pod per node of the 5: {quota}");
    let policy = object_named(&case, "networkpolicies", "kube-eagle-deny-all");
    assert_eq!(policy["spec"]["podSelector"], json!({}), "every pod there");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(policy["spec"]["ingress"].is_null() && policy["spec"]["egress"].is_null(), "no rule lets anything through");
    let vap = object_named(&case, "validatingadmissionpolicies", "kube-eagle-agents");
    assert_eq!(vap["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    let expressions: Vec<&str> =
        vap["spec"]["validations"].as_array().unwrap().iter().map(|v| v["expression"].as_str().unwrap()).collect();
    assert!(expressions.iter().any(|e| e.contains(&format!("c.image == '{image}'"))), "{expressions:#?}");
    assert!(expressions.iter().any(|e| e.contains("readOnlyRootFilesystem")), "{expressions:#?}");
    let binding = object_named(&case, "validatingadmissionpolicybindings", "kube-eagle-agents");
    assert_eq!(binding["spec"]["policyName"], "kube-eagle-agents");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        EAGLE_NS
    );

    // Jobs there: their creator must be allowed to list pods in each namespace they declare.
    let runs = object_named(&case, "validatingadmissionpolicies", "kube-eagle-agents-runs");
    assert_eq!(runs["spec"]["matchConstraints"]["resourceRules"][0]["resources"], json!(["jobs"]));
    let check = runs["spec"]["validations"][0]["expression"].as_str().unwrap();
    assert!(check.contains("authorizer.group('').resource('pods')") && check.contains("--namespace="), "{check}");
    let binding = object_named(&case, "validatingadmissionpolicybindings", "kube-eagle-agents-runs");
    assert_eq!(binding["spec"]["policyName"], "kube-eagle-agents-runs");

    // --max-pods sets the quota; applying again updates what is there.
    let again = case.run("init", &["--apply", "--max-pods", "2"]);
    assert_eq!(again.code, Some(0), "{}", case.context(&again));
    assert!(again.stdout.contains("updated resourcequota kube-eagle/kube-eagle"), "{}", again.stdout);
    assert_eq!(object_named(&case, "resourcequotas", "kube-eagle")["spec"]["hard"]["pods"], "2");

    let run = case.run("uninstall", &[]);
    let ctx = case.context(&run);
    assert_eq!(run.code, Some(0), "{ctx}");
    for kind in
        ["resourcequotas", "networkpolicies", "validatingadmissionpolicies", "validatingadmissionpolicybindings"]
    {
        assert!(case.server.objects(kind).is_empty(), "{kind} left\n{ctx}");
    }
    assert!(run.stdout.contains("deleted validatingadmissionpolicy kube-eagle-agents"), "{ctx}");
    assert!(run.stdout.contains("deleted validatingadmissionpolicy kube-eagle-agents-runs"), "{ctx}");
}

/// A server without ValidatingAdmissionPolicy (the lab's 1.20): init says so clearly, and
/// still makes the quota and the network policy.
#[test]
fn init_says_when_the_server_has_no_admission_policies() {
    let case = Case::new(scenario());
    let init = case.run("init", &["--apply"]);
    let ctx = case.context(&init);
    assert_eq!(init.code, Some(0), "{ctx}");
    assert!(init.stderr.contains("this cluster does not serve ValidatingAdmissionPolicy"), "{ctx}");
    assert!(init.stderr.contains("root on every node"), "what that means: {ctx}");
    assert!(case.server.objects("validatingadmissionpolicies").is_empty());
    assert!(!case.requests().iter().any(|r| r.path.contains("validatingadmissionpolic")), "nothing posted\n{ctx}");
    assert!(init.stdout.contains("created resourcequota kube-eagle/kube-eagle"), "{ctx}");
    assert!(init.stdout.contains("created networkpolicy kube-eagle/kube-eagle-deny-all"), "{ctx}");
    // The manifest printed for review has every object, the policy as v1.
    let dry = case.run("init", &["--dry-run", "--max-pods", "3"]);
    assert_eq!(dry.code, Some(0));
    for kind in [
        "kind: ResourceQuota",
        "kind: NetworkPolicy",
        "kind: ValidatingAdmissionPolicy",
        "kind: ValidatingAdmissionPolicyBinding",
    ] {
        assert!(dry.stdout.contains(kind), "{kind}: {}", dry.stdout);
    }
}
