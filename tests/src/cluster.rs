//! What the tests against a real cluster (`tests/tests/*_e2e.rs`) share: [`TestNamespace`], a
//! namespace of the test's own with its workloads and the `kubectl-eagle` commands run in it;
//! and what a cluster test says when the cluster, not kube-eagle, is why it cannot go on: pods
//! that never run and nodes that take no pods. A failure in CI is read from its log alone, so
//! the message carries what `kubectl describe` would have shown: each pod's phase and the
//! reason its containers wait, each node's conditions and taints, and the namespace's warning
//! events.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long [`TestNamespace::wait_for_pods`] waits, in seconds (the tests' messages say it).
pub const POD_WAIT_S: u64 = 120;

/// A namespace of the test's own on the cluster of `EAGLE_E2E_KUBECONFIG`, with a directory of
/// the same name under the system temp dir where `kubectl-eagle` runs and writes. Both are
/// removed on drop, also when the test panics (the directory is not kept for a look, as a
/// [`crate::TestDir`] is).
///
/// The API is called through a runtime of the fixture's own: the tests are plain `#[test]`s
/// that run the CLI as a child process between calls.
pub struct TestNamespace {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub dir: PathBuf,
    /// Whether [`TestNamespace::create`] made the namespace: only then is it ours to delete.
    created: bool,
}

/// A suffix for `eagle-e2e-NAME-SUFFIX` that tells this run's namespace from another's: the
/// process id mixed with the clock's nanoseconds and the name.
pub fn unique_suffix(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}", std::process::id() ^ nanos ^ (name.len() as u32 * 7919))
}

/// Runs `kubectl-eagle SUBCOMMAND ARGS` (`cmd`) to its end and prints its exit status, stdout
/// and stderr for the test's log.
pub fn output_logged(mut cmd: Command, subcommand: &str, args: &[&str]) -> Output {
    let out = cmd.output().unwrap();
    eprintln!(
        "kubectl-eagle {subcommand} {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Deployment `name` in `namespace`: see [`TestNamespace::create_deployment`].
fn deployment(namespace: &str, name: &str, replicas: usize, mut pod: Value) -> Deployment {
    pod["terminationGracePeriodSeconds"] = json!(1);
    pod["automountServiceAccountToken"] = json!(false);
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod}
        }
    }))
    .unwrap()
}

/// Whether the pod's phase is Running.
pub fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

impl TestNamespace {
    /// The namespace `eagle-e2e-NAME-SUFFIX` (see [`unique_suffix`]) and its directory, created.
    pub fn new(kubeconfig: PathBuf, name: &str) -> Self {
        let mut ns = Self::connect(kubeconfig, format!("eagle-e2e-{name}-{}", unique_suffix(name)));
        ns.create();
        ns
    }

    /// A client of the cluster of `kubeconfig` for a test namespace named `namespace`; nothing
    /// is created yet (see [`TestNamespace::create`]), so that a test can first ask whether the
    /// cluster suits it.
    pub fn connect(kubeconfig: PathBuf, namespace: String) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt.block_on(async {
            let kc = Kubeconfig::read_from(&kubeconfig).unwrap();
            let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
            Client::try_from(config).unwrap()
        });
        let dir = std::env::temp_dir().join(&namespace);
        TestNamespace { rt, client, kubeconfig, namespace, dir, created: false }
    }

    /// Creates the directory and the namespace.
    pub fn create(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": self.namespace}})).unwrap();
        self.rt.block_on(Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &ns)).unwrap();
        self.created = true;
    }

    /// Creates the Deployment `name` of `replicas` pods labelled `app=NAME`, whose pod spec is
    /// `pod` (a JSON object: containers, affinity...) stopped within a second and given no
    /// service account token, as every test workload is. Does not wait: see
    /// [`TestNamespace::wait_for_pods`].
    pub fn create_deployment(&self, name: &str, replicas: usize, pod: Value) {
        let d = deployment(&self.namespace, name, replicas, pod);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        self.rt.block_on(api.create(&PostParams::default(), &d)).unwrap();
    }

    /// Lists the pods `app=NAME` every half second until `ready` finds in them what the test
    /// waits for, and returns that; after [`POD_WAIT_S`] seconds, `Err` with why the pods wait
    /// ([`why_pods_wait`]), for the caller's message.
    pub fn wait_for_pods<T>(&self, name: &str, mut ready: impl FnMut(Vec<Pod>) -> Option<T>) -> Result<T, String> {
        let selector = format!("app={name}");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let deadline = Instant::now() + Duration::from_secs(POD_WAIT_S);
        loop {
            let list = self.rt.block_on(pods.list(&ListParams::default().labels(&selector))).unwrap();
            if let Some(found) = ready(list.items) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(self.rt.block_on(why_pods_wait(&self.client, &self.namespace, Some(&selector))));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `kubectl-eagle SUBCOMMAND ARGS --kubeconfig KUBECONFIG`, run in the test's directory.
    /// The subcommands that start agents (`profile`, `net`, `doctor`) get the test's namespace
    /// (`-n`) and the agent image under test (`--image $EAGLE_E2E_AGENT_IMAGE`, when that is
    /// set), each unless ARGS give their own: `--image` twice is an error to the CLI.
    pub fn kubectl_eagle_as(&self, kubeconfig: &Path, subcommand: &str, args: &[&str]) -> Command {
        self.kubectl_eagle_with(kubeconfig, std::env::var_os("EAGLE_E2E_AGENT_IMAGE"), subcommand, args)
    }

    fn kubectl_eagle_with(
        &self,
        kubeconfig: &Path,
        agent_image: Option<OsString>,
        subcommand: &str,
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new(crate::kubectl_eagle());
        cmd.arg(subcommand).args(args).arg("--kubeconfig").arg(kubeconfig);
        if ["profile", "net", "doctor"].contains(&subcommand) {
            if !args.contains(&"-n") {
                cmd.arg("-n").arg(&self.namespace);
            }
            if let Some(image) = agent_image.filter(|_| !args.contains(&"--image")) {
                cmd.arg("--image").arg(image);
            }
        }
        cmd.current_dir(&self.dir);
        cmd
    }

    /// [`TestNamespace::kubectl_eagle_as`] with the test's kubeconfig.
    pub fn kubectl_eagle(&self, subcommand: &str, args: &[&str]) -> Command {
        self.kubectl_eagle_as(&self.kubeconfig, subcommand, args)
    }

    /// Runs [`TestNamespace::kubectl_eagle`] to its end, see [`output_logged`].
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Output {
        output_logged(self.kubectl_eagle(subcommand, args), subcommand, args)
    }

    /// The agent pods in the profiling namespace `eagle_ns` that profile this namespace (their
    /// `kube-eagle.io/target` annotation names it) and are Running: found so before the run's
    /// id is known.
    pub fn running_agents(&self, eagle_ns: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), eagle_ns);
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=kube-eagle");
        let list = self.rt.block_on(api.list(&lp)).unwrap();
        let targets_this = |p: &Pod| {
            let annotations = p.metadata.annotations.as_ref();
            annotations.and_then(|a| a.get("kube-eagle.io/target")).is_some_and(|t| t.contains(&self.namespace))
        };
        list.items.into_iter().filter(|p| targets_this(p) && is_running(p)).collect()
    }

    /// A file in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.created {
            let api: Api<Namespace> = Api::all(self.client.clone());
            let _ = self.rt.block_on(api.delete(&self.namespace, &DeleteParams::background()));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A few lines on why pods of `namespace` (matching `selector`, if any) are not Running: the
/// pods, the nodes and the namespace's warning events.
pub async fn why_pods_wait(client: &Client, namespace: &str, selector: Option<&str>) -> String {
    let mut out = String::new();
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    match Api::<Pod>::namespaced(client.clone(), namespace).list(&params).await {
        Ok(pods) if pods.items.is_empty() => out.push_str("\n  no pod was created (see the events)"),
        Ok(pods) => {
            for pod in pods.items {
                let _ = write!(out, "\n  {}", describe_pod(&pod));
            }
        }
        Err(e) => {
            let _ = write!(out, "\n  pods: cannot list: {e}");
        }
    }
    out.push_str(&why_nodes_refuse(client).await);
    match Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await {
        Ok(events) => {
            for e in events.items.iter().filter(|e| e.type_.as_deref() != Some("Normal")).rev().take(8) {
                let _ = write!(
                    out,
                    "\n  event {}: {} {}",
                    e.involved_object.name.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or("").trim()
                );
            }
        }
        Err(e) => {
            let _ = write!(out, "\n  events: cannot list: {e}");
        }
    }
    out
}

/// One line per node: Ready or not, its abnormal conditions (pressure, network) and its taints.
pub async fn why_nodes_refuse(client: &Client) -> String {
    let mut out = String::new();
    let nodes = match Api::<Node>::all(client.clone()).list(&ListParams::default()).await {
        Ok(nodes) => nodes,
        Err(e) => return format!("\n  nodes: cannot list: {e}"),
    };
    for node in nodes.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let mut notes = Vec::new();
        for c in node.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten() {
            // Ready is normal when True, every other condition (pressures, network) when False.
            let normal = (c.type_ == "Ready") == (c.status == "True");
            if !normal {
                notes.push(format!("{}={} ({})", c.type_, c.status, c.message.as_deref().unwrap_or("").trim()));
            }
        }
        if spec.unschedulable == Some(true) {
            notes.push("unschedulable".into());
        }
        for t in spec.taints.iter().flatten() {
            notes.push(format!("taint {}:{}", t.key, t.effect));
        }
        let notes = if notes.is_empty() { "Ready, no taints".to_string() } else { notes.join(", ") };
        let _ = write!(out, "\n  node {name}: {notes}");
    }
    out
}

fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("no node");
    let mut line = format!("pod {name} on {node}: {}", status.phase.as_deref().unwrap_or("no phase"));
    for c in status.conditions.iter().flatten().filter(|c| c.status != "True") {
        let _ = write!(line, "; {} {}", c.type_, c.message.as_deref().or(c.reason.as_deref()).unwrap_or(""));
    }
    for cs in status.container_statuses.iter().flatten() {
        let state = cs.state.clone().unwrap_or_default();
        if let Some(w) = state.waiting {
            let _ = write!(
                line,
                "; container {} waiting: {} {}",
                cs.name,
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            );
        } else if let Some(t) = state.terminated {
            let _ = write!(
                line,
                "; container {} terminated: {} exit {}",
                cs.name,
                t.reason.unwrap_or_default(),
                t.exit_code
            );
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::{pod, ApiServer, Scenario};

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    fn deletes(server: &ApiServer) -> Vec<String> {
        server.requests().into_iter().filter(|r| r.method == "DELETE").map(|r| r.path).collect()
    }

    #[test]
    fn a_test_namespace_is_created_waited_in_and_deleted_with_its_directory_on_drop() {
        let name = format!("eagle-e2e-fixture-{}", unique_suffix("fixture"));
        let running = pod(&name, "api-0").on("node-a").labels(&[("app", "api")]).running("app").build();
        let waiting = pod(&name, "api-1").on("node-a").labels(&[("app", "api")]).waiting("app", "ErrImagePull");
        let server = ApiServer::start(vec![running, waiting.build()], Scenario::new());
        let mut ns = TestNamespace::connect(server.kubeconfig().to_owned(), name.clone());
        ns.create();
        assert!(ns.dir.is_dir() && ns.dir.ends_with(&name), "{}", ns.dir.display());
        assert!(server.exists("namespaces", "", &name));

        let found = ns.wait_for_pods("api", |pods| pods.into_iter().find(is_running)).unwrap();
        assert_eq!(found.metadata.name.as_deref(), Some("api-0"));
        let mut seen = 0;
        ns.wait_for_pods("api", |pods| {
            seen = pods.len();
            Some(())
        })
        .unwrap();
        assert_eq!(seen, 2, "the pods of app=api, whatever their phase");

        let dir = ns.dir.clone();
        drop(ns);
        assert!(!dir.exists(), "the directory goes");
        assert_eq!(deletes(&server), [format!("/api/v1/namespaces/{name}")]);
    }

    #[test]
    fn a_test_that_panics_still_deletes_its_namespace_and_directory() {
        let server = ApiServer::start(Vec::new(), Scenario::new());
        let name = format!("eagle-e2e-fixture-{}", unique_suffix("fixture"));
        let kubeconfig = server.kubeconfig().to_owned();
        let dir = std::env::temp_dir().join(&name);
        let test = std::panic::catch_unwind(|| {
            let mut ns = TestNamespace::connect(kubeconfig, name.clone());
            ns.create();
            std::fs::write(ns.path("api.folded"), "main 1\n").unwrap();
            panic!("the test fails");
        });
        assert!(test.is_err());
        assert!(!dir.exists(), "the directory goes");
        assert_eq!(deletes(&server), [format!("/api/v1/namespaces/{name}")]);
    }

    #[test]
    fn the_running_agents_are_those_that_profile_the_test_namespace() {
        let name = format!("eagle-e2e-fixture-{}", unique_suffix("fixture"));
        let agent = |pod_name: &str, target: &str, running: bool| {
            let agent = pod("kube-eagle", pod_name).labels(&[("app.kubernetes.io/managed-by", "kube-eagle")]);
            let agent = if running { agent.on("node-a").running("agent") } else { agent.waiting("agent", "Pulling") };
            let mut agent = agent.build();
            agent["metadata"]["annotations"] = json!({"kube-eagle.io/target": target});
            agent
        };
        let world = vec![
            agent("ours", &format!("deployment/api in {name}"), true),
            agent("ours-pending", &format!("deployment/api in {name}"), false),
            agent("someone-elses", "deployment/api in default", true),
        ];
        let server = ApiServer::start(world, Scenario::new());
        let ns = TestNamespace::connect(server.kubeconfig().to_owned(), name);
        let found: Vec<Option<String>> = ns.running_agents("kube-eagle").into_iter().map(|p| p.metadata.name).collect();
        assert_eq!(found, [Some("ours".to_owned())]);
    }

    #[test]
    fn a_namespace_that_was_never_created_is_not_deleted() {
        let server = ApiServer::start(Vec::new(), Scenario::new());
        let name = format!("eagle-e2e-fixture-{}", unique_suffix("fixture"));
        drop(TestNamespace::connect(server.kubeconfig().to_owned(), name));
        assert_eq!(deletes(&server), Vec::<String>::new());
    }

    #[test]
    fn agent_commands_get_the_namespace_and_the_agent_image_unless_they_name_their_own() {
        let server = ApiServer::start(Vec::new(), Scenario::new());
        let ns = TestNamespace::connect(server.kubeconfig().to_owned(), "eagle-e2e-args-1".into());
        let kc = server.kubeconfig().to_str().unwrap();
        let image = || Some(OsString::from("lab.local/agent:1"));

        let profile = ns.kubectl_eagle_with(server.kubeconfig(), image(), "profile", &["deployment/api", "-d", "2s"]);
        assert_eq!(
            args(&profile),
            [
                "profile",
                "deployment/api",
                "-d",
                "2s",
                "--kubeconfig",
                kc,
                "-n",
                "eagle-e2e-args-1",
                "--image",
                "lab.local/agent:1"
            ]
        );
        assert_eq!(profile.get_current_dir(), Some(ns.dir.as_path()));
        let own_image = ns.kubectl_eagle_with(server.kubeconfig(), image(), "profile", &["--image", "x:0"]);
        assert_eq!(args(&own_image), ["profile", "--image", "x:0", "--kubeconfig", kc, "-n", "eagle-e2e-args-1"]);
        let elsewhere = ns.kubectl_eagle_with(server.kubeconfig(), None, "doctor", &["-n", "default"]);
        assert_eq!(args(&elsewhere), ["doctor", "-n", "default", "--kubeconfig", kc]);
        let net = ns.kubectl_eagle_with(server.kubeconfig(), None, "net", &["deployment/web"]);
        assert_eq!(args(&net), ["net", "deployment/web", "--kubeconfig", kc, "-n", "eagle-e2e-args-1"]);
        let list = ns.kubectl_eagle_with(server.kubeconfig(), image(), "list", &["-o", "json"]);
        assert_eq!(args(&list), ["list", "-o", "json", "--kubeconfig", kc]);
    }

    #[test]
    fn every_test_deployment_stops_within_a_second_without_a_token() {
        let pod = json!({"containers": [{"name": "app", "image": "lab.local/groundtruth:0", "args": ["--syscalls"]}]});
        let d = serde_json::to_value(deployment("ns-1", "api", 3, pod)).unwrap();
        assert_eq!(d["metadata"], json!({"name": "api", "namespace": "ns-1"}));
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"app": "api"}}));
        let template = &d["spec"]["template"];
        assert_eq!(template["metadata"]["labels"], json!({"app": "api"}));
        assert_eq!(template["spec"]["terminationGracePeriodSeconds"], 1);
        assert_eq!(template["spec"]["automountServiceAccountToken"], false);
        assert_eq!(template["spec"]["containers"][0]["args"], json!(["--syscalls"]));
    }
}
