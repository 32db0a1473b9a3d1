//! Runs as tasks against a real cluster: the lab cluster that `scripts/test.sh` brings up, or any
//! cluster given by `EAGLE_E2E_KUBECONFIG`, unchanged. The same stories as `tasks_api.rs`: an
//! async run then fetch, expired results, list with running, failed, empty and done runs, the
//! per-node conflict check, clean by id and --all, init then uninstall leaves nothing, doctor on
//! a user without Job create permission.
//!
//! Each test makes its own target namespace with a sample workload, and its own locked
//! namespace (`--eagle-namespace`), so that `clean --all` and `uninstall` touch nothing of any
//! other run on the cluster; both are removed on drop. `#[ignore]`d so that a plain `cargo test`
//! needs no cluster: `cargo nextest run -p eagle-tests --test tasks_e2e --run-ignored only`.
//!
//! Environment: `EAGLE_E2E_KUBECONFIG` (required), `EAGLE_E2E_GROUNDTRUTH_IMAGE` (default
//! `lab.local/groundtruth:<version>`), `EAGLE_E2E_IDLE_IMAGE` (an image with `sleep`, default
//! `lab.local/busybox:1.35`), `EAGLE_E2E_AGENT_IMAGE` (default: the CLI's own).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use eagle_proto::FoldedStacks;
use eagle_tests::cluster::{self, is_running, TestNamespace, POD_WAIT_S};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo};
use kube::Api;
use serde_json::{json, Value};

/// A target namespace with workloads, a locked namespace of the test's own, a directory; all
/// removed on drop.
struct Fixture {
    ns: TestNamespace,
    eagle_ns: String,
}

impl Fixture {
    fn new(kubeconfig: PathBuf, name: &str) -> Self {
        let suffix = cluster::unique_suffix(name);
        let mut ns = TestNamespace::connect(kubeconfig, format!("eagle-e2e-{name}-{suffix}"));
        ns.create();
        Fixture { ns, eagle_ns: format!("eagle-e2e-locked-{suffix}") }
    }

    fn deploy(&self, name: &str, image: &str, command: &[&str]) {
        let mut container = json!({"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"});
        if !command.is_empty() {
            container["command"] = json!(command);
        }
        self.ns.create_deployment(name, 1, json!({"containers": [container]}));
        self.ns
            .wait_for_pods(name, |pods| pods.iter().any(is_running).then_some(()))
            .unwrap_or_else(|why| panic!("deployment {name}: no pod Running after {POD_WAIT_S} s:{why}"));
    }

    /// `kubectl-eagle SUBCOMMAND ARGS --kubeconfig K --eagle-namespace E`, as the admin.
    fn command(&self, subcommand: &str, args: &[&str]) -> Command {
        self.command_as(&self.ns.kubeconfig, subcommand, args)
    }

    fn command_as(&self, kubeconfig: &Path, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = self.ns.kubectl_eagle_as(kubeconfig, subcommand, args);
        cmd.arg("--eagle-namespace").arg(&self.eagle_ns);
        cmd
    }

    fn run(&self, subcommand: &str, args: &[&str]) -> Output {
        self.run_as(&self.ns.kubeconfig, subcommand, args)
    }

    fn run_as(&self, kubeconfig: &Path, subcommand: &str, args: &[&str]) -> Output {
        cluster::output_logged(self.command_as(kubeconfig, subcommand, args), subcommand, args)
    }

    /// `profile TARGET -a ARGS`: the run id.
    fn start(&self, target: &str, args: &[&str]) -> String {
        let mut all = vec![target];
        all.extend(args);
        all.push("-a");
        let out = self.run("profile", &all);
        assert_eq!(out.status.code(), Some(0), "profile -a started");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(id.len(), 8, "stdout is the run id: {id:?}");
        id
    }

    fn jobs(&self, selector: &str) -> Vec<Job> {
        let api: Api<Job> = Api::namespaced(self.ns.client.clone(), &self.eagle_ns);
        self.ns.rt.block_on(api.list(&ListParams::default().labels(selector))).map(|l| l.items).unwrap_or_default()
    }

    fn jobs_of(&self, id: &str) -> Vec<Job> {
        self.jobs(&format!("kube-eagle.io/run={id}"))
    }

    /// Waits until every Job of the run has ended.
    fn wait_finished(&self, id: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let jobs = self.jobs_of(id);
            let ended = |j: &Job| {
                j.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                    c.iter().any(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
                })
            };
            if !jobs.is_empty() && jobs.iter().all(ended) {
                return;
            }
            assert!(Instant::now() < deadline, "run {id} did not end within {timeout:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// What pod garbage collection does: the run's pods go, its Jobs stay.
    fn delete_pods_of(&self, id: &str) {
        let api: Api<Pod> = Api::namespaced(self.ns.client.clone(), &self.eagle_ns);
        let selector = format!("kube-eagle.io/run={id}");
        let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
        self.ns.rt.block_on(api.delete_collection(&dp, &ListParams::default().labels(&selector))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ns.rt.block_on(api.list(&ListParams::default().labels(&selector))).unwrap().items.is_empty() {
            assert!(Instant::now() < deadline, "the pods of run {id} are still there");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn list_json(&self) -> Vec<Value> {
        let out = self.run("list", &["-o", "json"]);
        assert_eq!(out.status.code(), Some(0));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    /// A service account in the target namespace and a kubeconfig that authenticates as it.
    fn service_account(&self, name: &str) -> PathBuf {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let api: Api<ServiceAccount> = Api::namespaced(self.ns.client.clone(), &self.ns.namespace);
        self.ns.rt.block_on(api.create(&PostParams::default(), &sa)).unwrap();
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
        let token: TokenRequest =
            self.ns.rt.block_on(api.create_subresource("token", name, &PostParams::default(), &request)).unwrap();
        let token = token.status.expect("a token").token;
        let mut kc = Kubeconfig::read_from(&self.ns.kubeconfig).unwrap();
        let user = format!("{name}-sa");
        kc.auth_infos = vec![NamedAuthInfo {
            name: user.clone(),
            auth_info: Some(AuthInfo { token: Some(token.into()), ..Default::default() }),
            other: Default::default(),
        }];
        for ctx in &mut kc.contexts {
            if let Some(c) = ctx.context.as_mut() {
                c.user = Some(user.clone());
                c.namespace = Some(self.ns.namespace.clone());
            }
        }
        let path = self.ns.dir.join(format!("{name}.kubeconfig"));
        // JSON is YAML: kube and kubectl read it as a kubeconfig.
        std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
        path
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Everything of the test's own installation, then its locked namespace; the target
        // namespace and the directory go when `ns` drops, after this.
        let _ = self.command("uninstall", &[]).output();
        let api: Api<Namespace> = Api::all(self.ns.client.clone());
        let _ = self.ns.rt.block_on(api.delete(&self.eagle_ns, &DeleteParams::background()));
    }
}

fn share(folded: &FoldedStacks, frame: &str) -> f64 {
    let hits: u64 = folded.iter().filter(|(s, _)| s.split(';').any(|f| f == frame)).map(|(_, c)| c).sum();
    hits as f64 * 100.0 / folded.total() as f64
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn async_run_then_fetch_renders_the_true_split_with_its_hierarchy() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc, "async");
    fx.deploy("api", &eagle_tests::e2e_groundtruth_image(), &[]);
    let started = Instant::now();
    let id = fx.start("deployment/api", &["-d", "5s", "-f", "199"]);
    assert!(started.elapsed() < Duration::from_secs(20), "-a returns without waiting for the window");
    let listed = fx.list_json();
    assert_eq!(listed[0]["id"], id.as_str());

    let out = fx.run("fetch", &[&id, "-o", "api.folded", "--group-by", "pod"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let folded = FoldedStacks::parse(&std::fs::read_to_string(fx.ns.path("api.folded")).unwrap()).unwrap();
    // The count depends on the CPU the node gives the pod (a loaded machine gives less); the
    // tolerance follows from it, so a low count is judged fairly instead of failing by luck.
    let samples = folded.total();
    assert!(samples >= 60, "{samples} samples over 5 s at 199 Hz: too few to judge a split");
    for (frame, expected) in [("cpu_60", 60.0), ("cpu_30", 30.0), ("cpu_10", 10.0)] {
        let got = share(&folded, frame);
        let tolerance = 100.0 * eagle_tests::tolerance(0.04, expected / 100.0, samples);
        assert!(
            (got - expected).abs() <= tolerance,
            "{frame}: {got:.1}%, expected {expected}±{tolerance:.1} ({samples} samples)"
        );
    }
    let prefix = format!("namespace/{};deployment/api;pod/api-", fx.ns.namespace);
    assert!(folded.iter().all(|(s, _)| s.starts_with(&prefix)), "the hierarchy comes from the Jobs' annotations");
    assert_eq!(fx.jobs_of(&id).len(), 1, "fetch leaves the Jobs for another fetch");
    let ttl = fx.jobs_of(&id)[0].spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
    assert_eq!(ttl, Some(86_400));

    let out = fx.run("fetch", &[&id, "-o", "api.svg", "--clean"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(std::fs::read_to_string(fx.ns.path("api.svg")).unwrap().contains("cpu_60"));
    assert!(fx.jobs_of(&id).is_empty(), "--clean deleted the Jobs");
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn expired_results_are_named_and_exit_3() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc, "expired");
    fx.deploy("api", &eagle_tests::e2e_groundtruth_image(), &[]);
    let id = fx.start("deployment/api", &["-d", "2s"]);
    fx.wait_finished(&id, Duration::from_secs(120));
    fx.delete_pods_of(&id);
    let out = fx.run("fetch", &[&id, "-o", "gone.svg"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("the results of run {id} expired")), "{}", stderr(&out));
    assert!(!fx.ns.path("gone.svg").exists());
    assert_eq!(fx.list_json()[0]["status"], "expired");

    let out = fx.run("fetch", &["0badc0de", "-o", "none.svg"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("no run 0badc0de"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn list_running_failed_empty_and_done_runs_and_refuse_a_busy_node() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc, "list");
    fx.deploy("api", &eagle_tests::e2e_groundtruth_image(), &[]);
    fx.deploy("idle", &eagle_tests::e2e_idle_image(), &["sleep", "3600"]);

    let done = fx.start("deployment/api", &["-d", "2s"]);
    fx.wait_finished(&done, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1100));
    let empty = fx.start("deployment/idle", &["-d", "2s"]);
    fx.wait_finished(&empty, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1100));
    // Its image cannot be pulled: the node fails, though its Job waits for the deadline.
    let failed = fx.start(
        "deployment/api",
        &["-d", "2s", "--image", "lab.local/no-such-image:0", "--image-pull-policy", "Never", "--force"],
    );
    std::thread::sleep(Duration::from_millis(1100));
    let running = fx.start("deployment/api", &["-d", "60s", "--force"]);

    // The node is busy: a new run is refused, naming what runs there.
    let out = fx.run("profile", &["deployment/api", "-d", "2s", "-o", "x.svg"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains(&running) && stderr(&out).contains("--force"), "{}", stderr(&out));

    // Give the failing pod time to report its pull error.
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = fx.list_json();
        let status = |id: &str| runs.iter().find(|r| r["id"] == id).map(|r| r["status"].clone()).unwrap_or(Value::Null);
        if status(&failed) == "failed" && status(&running) == "running" {
            break runs;
        }
        assert!(Instant::now() < deadline, "statuses: {runs:#?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [running.as_str(), &failed, &empty, &done], "newest first");
    let by = |id: &str| runs.iter().find(|r| r["id"] == id).unwrap().clone();
    assert!(by(&failed)["reason"].as_str().unwrap().contains("ErrImageNeverPull"), "{:#?}", by(&failed));
    assert_eq!(by(&empty)["status"], "empty");
    assert_eq!(by(&empty)["reason"], "all profile results empty: increase --duration");
    assert_eq!(by(&done)["status"], "done");
    assert!(by(&done)["per_node"][0]["samples"].as_u64().unwrap() > 0, "the trailer's count: {:#?}", by(&done));

    let table = stdout(&fx.run("list", &[]));
    let line = |id: &str| table.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_owned();
    assert!(line(&running).contains("Running"), "{table}");
    assert!(line(&failed).contains("Failed"), "{table}");
    assert!(line(&empty).contains("Empty"), "{table}");
    assert!(line(&done).contains("Done"), "{table}");

    let out = fx.run("clean", &["--all"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn clean_by_id_then_all_never_touches_what_is_not_ours() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc, "clean");
    fx.deploy("api", &eagle_tests::e2e_groundtruth_image(), &[]);
    let one = fx.start("deployment/api", &["-d", "30s"]);
    let two = fx.start("deployment/api", &["-d", "30s", "--force"]);
    // Someone else's Job in the same namespace.
    let foreign: Job = serde_json::from_value(json!({
        "metadata": {"name": "someone-elses", "labels": {"app": "backup"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": eagle_tests::e2e_idle_image(), "imagePullPolicy": "IfNotPresent", "command": ["sleep", "600"]}]}}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(fx.ns.client.clone(), &fx.eagle_ns);
    fx.ns.rt.block_on(jobs.create(&PostParams::default(), &foreign)).unwrap();

    let out = fx.run("clean", &[&one]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(&format!("deleted run {one}")), "{}", stdout(&out));
    assert!(fx.jobs_of(&one).is_empty());
    assert_eq!(fx.jobs_of(&two).len(), 1);
    let again = fx.run("clean", &[&one]);
    assert_eq!(again.status.code(), Some(0), "idempotent");

    let out = fx.run("clean", &["--all"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(fx.jobs("app.kubernetes.io/managed-by=kube-eagle").is_empty());
    assert_eq!(fx.jobs("app=backup").len(), 1, "a Job without our label stays");
}

/// Another user cleans a run from another terminal while it samples: they see it listed as
/// someone else's, cannot clean it without `--all-users`, and with it stop its agent; the first
/// run gets what the agent sampled until then, labelled partial (exit 7, `PARTIAL` in the graph,
/// `partial: true` and the node's reason in `--summary`), and nothing is left.
#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn a_run_cleaned_by_another_user_ends_partial_and_leaves_nothing() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc, "otherclean");
    fx.deploy("api", &eagle_tests::e2e_groundtruth_image(), &[]);
    let init = fx.run("init", &[]);
    assert_eq!(init.status.code(), Some(0), "the locked namespace");
    let colleague = fx.service_account("colleague");
    let sa = format!("{}/colleague", fx.ns.namespace);
    let init = fx.run("init", &["--apply", "--service-account", &sa, "--target-namespace", &fx.ns.namespace]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));

    let child = fx
        .command("profile", &["deployment/api", "-d", "60s", "-f", "99", "-o", "api.svg", "--summary", "summary.json"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fx.ns.running_agents(&fx.eagle_ns).is_empty() {
        assert!(Instant::now() < deadline, "the profiling pod never ran");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(4));

    // The colleague sees the run as someone else's, and may clean it only by saying so.
    let listed = fx.run_as(&colleague, "list", &["--all-users", "-o", "json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let runs: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let id = runs[0]["id"].as_str().expect("a run id").to_owned();
    let refused = fx.run_as(&colleague, "clean", &[&id]);
    assert_eq!(refused.status.code(), Some(4), "not the colleague's run");
    assert!(stderr(&refused).contains("--all-users"), "{}", stderr(&refused));
    assert_eq!(fx.jobs_of(&id).len(), 1, "nothing was deleted");
    let cleaned = fx.run_as(&colleague, "clean", &[&id, "--all-users"]);
    assert_eq!(cleaned.status.code(), Some(0), "{}", stderr(&cleaned));

    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("the first run:\n{err}");
    assert_eq!(out.status.code(), Some(7), "partial");
    assert!(err.lines().any(|l| l.contains("PARTIAL: ended early")), "the node's row says why");
    let svg = std::fs::read_to_string(fx.ns.path("api.svg")).unwrap();
    assert!(svg.contains("PARTIAL: 1 node(s) ended early"), "the graph is labelled partial");
    let summary: Value = serde_json::from_slice(&std::fs::read(fx.ns.path("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["partial"], true, "{summary}");
    assert_eq!(summary["nodes"][0]["status"], "partial", "{summary}");
    assert!(summary["total_samples"].as_u64().unwrap_or(0) > 100, "what it sampled is kept: {summary}");
    assert!(fx.jobs_of(&id).is_empty(), "no Job left");
    let pods: Api<Pod> = Api::namespaced(fx.ns.client.clone(), &fx.eagle_ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fx
        .ns
        .rt
        .block_on(pods.list(&ListParams::default().labels(&format!("kube-eagle.io/run={id}"))))
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the run's pod is still there");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn doctor_init_and_uninstall_for_a_user_without_permissions() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc, "rbac");
    fx.deploy("api", &eagle_tests::e2e_groundtruth_image(), &[]);
    let init = fx.run("init", &[]);
    assert_eq!(init.status.code(), Some(0), "the locked namespace, and the RBAC printed");
    let user = fx.service_account("profiler");

    // No permission at all: doctor says what is missing, starting with creating Jobs.
    let out = fx.run_as(&user, "doctor", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report = stdout(&out);
    let line = report.lines().find(|l| l.contains(&format!("create jobs.batch in {}", fx.eagle_ns))).unwrap();
    assert!(line.trim_start().starts_with("MISSING"), "{report}");
    assert!(report.contains("not allowed to create Jobs"), "the image check is skipped: {report}");

    // init --apply for that user, in the target namespace only: now everything passes, the
    // image included, and the user can profile.
    let sa = format!("{}/profiler", fx.ns.namespace);
    let init = fx.run("init", &["--apply", "--service-account", &sa, "--target-namespace", &fx.ns.namespace]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    let out = fx.run_as(&user, "doctor", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("pulled and started on node"), "{}", stdout(&out));
    let run = fx.run_as(&user, "profile", &["deployment/api", "-d", "2s", "-o", "user.folded"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let elsewhere = fx.run_as(&user, "doctor", &["-n", "default", "--skip-image"]);
    assert_eq!(elsewhere.status.code(), Some(4), "no reads outside the target namespace");

    // uninstall: nothing of this installation is left; the user's permissions go with it.
    fx.start("deployment/api", &["-d", "30s"]);
    let out = fx.run("uninstall", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let selector = format!("app.kubernetes.io/managed-by=kube-eagle,app.kubernetes.io/instance={}", fx.eagle_ns);
    let lp = ListParams::default().labels(&selector);
    let left = fx.ns.rt.block_on(async {
        let crs = Api::<ClusterRole>::all(fx.ns.client.clone()).list(&lp).await.unwrap().items.len();
        let crbs = Api::<ClusterRoleBinding>::all(fx.ns.client.clone()).list(&lp).await.unwrap().items.len();
        let rbs = Api::<RoleBinding>::all(fx.ns.client.clone()).list(&lp).await.unwrap().items.len();
        crs + crbs + rbs
    });
    assert_eq!(left, 0, "no RBAC of this installation is left");
    let ns = fx.ns.rt.block_on(Api::<Namespace>::all(fx.ns.client.clone()).get_opt(&fx.eagle_ns)).unwrap();
    assert!(ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()), "the locked namespace goes");
    let out = fx.run("uninstall", &[]);
    assert_eq!(out.status.code(), Some(0), "twice is fine");
    let out = fx.run_as(&user, "doctor", &["--skip-image"]);
    assert_eq!(out.status.code(), Some(4), "the user's permissions are gone");
}
