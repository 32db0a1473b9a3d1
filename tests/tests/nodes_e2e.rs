//! Node-level end-to-end tests of `kubectl-eagle profile` on a cluster of several nodes: the lab
//! (`scripts/lab/e2e-up.sh` runs 3 nodes by default, each its own kubelet and containerd), or any
//! cluster given by `EAGLE_E2E_KUBECONFIG` with at least 3 schedulable nodes.
//!
//! What only several real nodes show: one Job per node, each placed on its node whatever the
//! scheduler would otherwise avoid (taints, cordons) and however the node's hostname label
//! reads; one merged graph of all nodes; a node that dies mid-window failing alone; an async run
//! followed per node by `list` and read back by `fetch`.
//!
//! Each test makes its own namespace with a groundtruth deployment (known 60/30/10 split) whose
//! replicas are spread one per node (required pod anti-affinity), runs the real binary, and
//! removes what it made, nodes' taints and labels included. The kubelet-stop test needs the lab
//! (`scripts/lab/node.sh`); on another cluster it skips, and with fewer than 3 nodes the others
//! do (`eagle_tests::skip`: counted, and a failure under `scripts/test.sh` and in CI). `#[ignore]`d so that a plain
//! `cargo test` needs no cluster; `scripts/test.sh` runs them with `--run-ignored only`.
//!
//! Environment: `EAGLE_E2E_KUBECONFIG` (required), `EAGLE_E2E_GROUNDTRUTH_IMAGE` (default
//! `lab.local/groundtruth:<version>`), `EAGLE_E2E_AGENT_IMAGE` (default: the CLI's own).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use eagle_proto::FoldedStacks;
use eagle_tests::cluster::{self, is_running, TestNamespace, POD_WAIT_S};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

/// The locked namespace the CLI runs its Jobs in by default.
const EAGLE_NS: &str = "kube-eagle";
const RUN_LABEL: &str = "kube-eagle.io/run";
const NODE_ANNOTATION: &str = "kube-eagle.io/node";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A namespace of the test's own with sample deployments; deleted on drop.
struct Fixture {
    ns: TestNamespace,
}

impl Fixture {
    /// `None` (after saying why) when there is no cluster or it has fewer than `nodes`
    /// schedulable nodes.
    fn new(name: &str, nodes: usize) -> Option<Self> {
        let kubeconfig = eagle_tests::e2e_kubeconfig()?;
        let namespace = format!("eagle-e2e-{name}-{}", cluster::unique_suffix(name));
        let mut fx = Fixture { ns: TestNamespace::connect(kubeconfig, namespace) };
        // A node that was just down (the kubelet test) keeps its NoSchedule taint for a few
        // seconds after it is Ready again: wait a little before calling the cluster too small.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ready = fx.ready_nodes();
        while ready.len() < nodes && fx.node_count() >= nodes && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            ready = fx.ready_nodes();
        }
        if ready.len() < nodes {
            let why = fx.ns.rt.block_on(cluster::why_nodes_refuse(&fx.ns.client));
            eagle_tests::skip(&format!(
                "needs {nodes} Ready schedulable nodes, the cluster has {} ({ready:?}); the lab runs 3 unless EAGLE_LAB_NODES says otherwise:{why}",
                ready.len()
            ));
            return None;
        }
        fx.ns.create();
        Some(fx)
    }

    fn node_count(&self) -> usize {
        self.ns.rt.block_on(Api::<Node>::all(self.ns.client.clone()).list(&ListParams::default())).unwrap().items.len()
    }

    /// Nodes that are Ready and accept pods, by name.
    fn ready_nodes(&self) -> Vec<String> {
        let nodes = self.ns.rt.block_on(Api::<Node>::all(self.ns.client.clone()).list(&ListParams::default())).unwrap();
        nodes
            .items
            .into_iter()
            .filter(|n| {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let spec = n.spec.clone().unwrap_or_default();
                let blocked = spec.unschedulable == Some(true)
                    || spec.taints.iter().flatten().any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
                ready && !blocked
            })
            .filter_map(|n| n.metadata.name)
            .collect()
    }

    /// A groundtruth deployment of `replicas`, one per node (required anti-affinity on the
    /// hostname label, as users spread replicas), on `only` nodes if given; waits until every
    /// replica runs and returns each pod's node.
    fn deploy_spread(&self, name: &str, replicas: usize, only: Option<&[String]>) -> BTreeMap<String, String> {
        let mut affinity = json!({
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": name}}, "topologyKey": HOSTNAME_LABEL}
            ]}
        });
        if let Some(nodes) = only {
            affinity["nodeAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": nodes}]}
            ]}});
        }
        self.ns.create_deployment(
            name,
            replicas,
            json!({
                "affinity": affinity,
                "containers": [{
                    "name": "app",
                    "image": eagle_tests::e2e_groundtruth_image(),
                    "imagePullPolicy": "IfNotPresent"
                    // No CPU request, as the other tests' pods: BestEffort pods of a
                    // test that follows this one too closely would otherwise be
                    // starved by these (a request buys CPU weight on the node).
                }]
            }),
        );
        let mut running = BTreeMap::new();
        let waited = self.ns.wait_for_pods(name, |pods| {
            running = pods
                .iter()
                .filter(|p| is_running(p))
                .filter_map(|p| Some((p.metadata.name.clone()?, p.spec.as_ref()?.node_name.clone()?)))
                .collect();
            (running.len() == replicas).then_some(())
        });
        if let Err(why) = waited {
            panic!(
                "deployment {name}: {}/{replicas} pods Running after {POD_WAIT_S} s: {running:?}{why}",
                running.len()
            );
        }
        let nodes: BTreeSet<&String> = running.values().collect();
        assert_eq!(nodes.len(), replicas, "one replica per node: {running:?}");
        running
    }

    fn jobs_of_run(&self, run_id: &str) -> Vec<Job> {
        let api: Api<Job> = Api::namespaced(self.ns.client.clone(), EAGLE_NS);
        let lp = ListParams::default().labels(&format!("{RUN_LABEL}={run_id}"));
        self.ns.rt.block_on(api.list(&lp)).unwrap().items
    }

    fn pods_of_run(&self, run_id: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.ns.client.clone(), EAGLE_NS);
        let lp = ListParams::default().labels(&format!("{RUN_LABEL}={run_id}"));
        self.ns.rt.block_on(api.list(&lp)).unwrap().items
    }

    /// For a run kept with `--keep`: each Job's node (its annotation) and the node its pod ran
    /// on; then deletes them.
    fn jobs_and_their_pods_nodes(&self, run_id: &str) -> Vec<(String, Option<String>)> {
        let pods = self.pods_of_run(run_id);
        let placed: Vec<(String, Option<String>)> = self
            .jobs_of_run(run_id)
            .iter()
            .map(|job| {
                let name = job.metadata.name.clone().unwrap();
                let node = job.metadata.annotations.as_ref().and_then(|a| a.get(NODE_ANNOTATION)).cloned();
                let pod_node = pods
                    .iter()
                    .find(|p| p.metadata.labels.as_ref().and_then(|l| l.get("job-name")) == Some(&name))
                    .and_then(|p| p.spec.as_ref()?.node_name.clone());
                (node.unwrap_or_else(|| panic!("Job {name} names its node")), pod_node)
            })
            .collect();
        let out = self.ns.run("clean", &[run_id]);
        assert_eq!(out.status.code(), Some(0));
        placed
    }

    /// Waits until no pod of the run is left (on `nodes`, or anywhere).
    fn wait_no_pods(&self, run_id: &str, nodes: Option<&BTreeSet<String>>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left: Vec<(String, String)> = self
                .pods_of_run(run_id)
                .into_iter()
                .filter_map(|p| Some((p.metadata.name?, p.spec?.node_name.unwrap_or_default())))
                .filter(|(_, node)| nodes.is_none_or(|n| n.contains(node)))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "pods of run {run_id} left after {timeout:?}: {left:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The run's agent pods that are Running (found by the target annotation, before the run id
    /// is known).
    fn running_agents(&self) -> BTreeMap<String, String> {
        self.ns
            .running_agents(EAGLE_NS)
            .into_iter()
            .filter_map(|p| Some((p.metadata.name?, p.spec?.node_name?)))
            .collect()
    }

    fn node(&self, name: &str) -> Node {
        self.ns.rt.block_on(Api::<Node>::all(self.ns.client.clone()).get(name)).unwrap()
    }

    fn patch_node(&self, name: &str, patch: Value) {
        let api: Api<Node> = Api::all(self.ns.client.clone());
        self.ns.rt.block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))).unwrap();
    }
}

/// Puts nodes back as they were (taints, unschedulable, labels), even when the test panics.
struct NodeRestore<'a> {
    fx: &'a Fixture,
    saved: Vec<(String, Value)>,
}

impl<'a> NodeRestore<'a> {
    fn new(fx: &'a Fixture) -> Self {
        NodeRestore { fx, saved: Vec::new() }
    }

    /// Remembers how `name` is now, before a change.
    fn save(&mut self, name: &str) {
        let node = self.fx.node(name);
        let spec = node.spec.unwrap_or_default();
        let labels = node.metadata.labels.unwrap_or_default();
        self.saved.push((
            name.to_owned(),
            json!({
                "metadata": {"labels": {HOSTNAME_LABEL: labels.get(HOSTNAME_LABEL)}},
                "spec": {"taints": spec.taints, "unschedulable": spec.unschedulable}
            }),
        ));
    }
}

impl Drop for NodeRestore<'_> {
    fn drop(&mut self) {
        for (name, patch) in self.saved.drain(..).rev() {
            let api: Api<Node> = Api::all(self.fx.ns.client.clone());
            if let Err(e) = self.fx.ns.rt.block_on(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))) {
                eprintln!("could not restore node {name}: {e}");
            }
        }
    }
}

/// Starts a stopped lab kubelet again when dropped, and waits until its node is Ready.
struct KubeletRestart {
    script: PathBuf,
    node: String,
}

impl KubeletRestart {
    fn start(&self) -> Output {
        Command::new("bash").arg(&self.script).arg("start").arg(&self.node).output().unwrap()
    }
}

impl Drop for KubeletRestart {
    fn drop(&mut self) {
        let out = self.start();
        if !out.status.success() {
            eprintln!("node.sh start {} failed: {}", self.node, String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The run id the CLI prints: `profiling ... : run 1a2b3c4d`.
fn run_id(stderr: &str) -> String {
    stderr
        .split(": run ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("the CLI prints its run id: {stderr}"))
        .to_owned()
}

/// The per-node table the CLI prints: node -> status (`ok`, `FAILED: why`), for the rows of
/// `nodes`.
fn node_table(stderr: &str, nodes: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    let mut lines = stderr.lines().skip_while(|l| !(l.starts_with("NODE ") && l.contains("CONTAINERS")));
    lines.next();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(node) = words.next().filter(|w| nodes.contains(*w)) else { continue };
        // NODE CONTAINERS SAMPLES STATUS...
        let status: Vec<&str> = words.skip(2).collect();
        let previous = rows.insert(node.to_owned(), status.join(" "));
        assert!(previous.is_none(), "node {node} has one row: {stderr}");
    }
    rows
}

fn read_folded(path: &Path) -> FoldedStacks {
    FoldedStacks::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Inclusive share, in percent, of samples whose stack holds `frame`.
fn share(folded: &FoldedStacks, frame: &str) -> f64 {
    let hits: u64 = folded.iter().filter(|(s, _)| s.split(';').any(|f| f == frame)).map(|(_, c)| c).sum();
    hits as f64 * 100.0 / folded.total().max(1) as f64
}

/// 3 percentage points, or the sampling noise of `n` samples when that is more (the project's
/// rule, [`eagle_tests::tolerance`]).
fn assert_groundtruth_split(folded: &FoldedStacks) {
    let tolerance = eagle_tests::tolerance(0.03, 0.6, folded.total()) * 100.0;
    for (frame, expected) in eagle_tests::SPLIT {
        let (got, expected) = (share(folded, frame), expected * 100.0);
        assert!(
            (got - expected).abs() <= tolerance,
            "{frame}: {got:.1}% of {} samples, expected {expected}±{tolerance:.1}",
            folded.total()
        );
    }
}

/// Samples per pod, from stacks grouped by pod (`...;pod/NAME;...`).
fn samples_by_pod(folded: &FoldedStacks) -> BTreeMap<String, u64> {
    folded.iter().fold(BTreeMap::new(), |mut pods, (stack, count)| {
        if let Some(pod) = stack.split(';').find_map(|f| f.strip_prefix("pod/")) {
            *pods.entry(pod.to_owned()).or_default() += count;
        }
        pods
    })
}

fn values(map: &BTreeMap<String, String>) -> BTreeSet<String> {
    map.values().cloned().collect()
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn a_deployment_spread_over_three_nodes_gets_one_job_per_node_and_one_graph() {
    let Some(fx) = Fixture::new("spread", 3) else { return };
    let pods = fx.deploy_spread("api", 3, None);
    let nodes = values(&pods);
    let out = fx.ns.run(
        "profile",
        &["deployment/api", "-d", "5s", "-f", "199", "-o", "api.folded", "--group-by", "pod", "--keep"],
    );
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("(3 containers on 3 nodes)"), "{stderr}");

    let table = node_table(&stderr, &nodes);
    assert_eq!(table.len(), 3, "one row per node: {table:?}");
    assert!(table.values().all(|s| s == "ok"), "{table:?}");

    // Each Job ran on the node it was made for, and those are the replicas' nodes.
    let placed = fx.jobs_and_their_pods_nodes(&run_id(&stderr));
    assert_eq!(placed.len(), 3, "one Job per node: {placed:?}");
    for (node, ran_on) in &placed {
        assert_eq!(ran_on.as_ref(), Some(node), "the Job for {node} ran there: {placed:?}");
    }
    let job_nodes: BTreeSet<String> = placed.into_iter().map(|(n, _)| n).collect();
    assert_eq!(job_nodes, nodes);

    // One graph with every replica, each near a third, and the true split over all of them.
    let folded = read_folded(&fx.ns.path("api.folded"));
    let by_pod = samples_by_pod(&folded);
    assert_eq!(by_pod.keys().cloned().collect::<BTreeSet<_>>(), pods.keys().cloned().collect(), "every replica");
    // Three busy pods over 5 s at 199 Hz are at most 2,985 samples on two cores; a machine busy
    // with other work gives the lab much less: this only says sampling ran on every node.
    assert!(folded.total() > 150, "{} samples from three busy pods over 5 s at 199 Hz", folded.total());
    // The replicas spin alike on shared cores: none may be starved (a fifth, not a third, for
    // the noise of two cores shared with the control plane and three agents).
    assert!(by_pod.values().all(|&n| n * 5 > folded.total()), "each replica near a third: {by_pod:?}");
    assert_groundtruth_split(&folded);
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn a_node_whose_kubelet_stops_mid_window_fails_alone_and_the_rest_is_partial() {
    let Some(script) = eagle_tests::e2e_lab_node_script() else {
        eagle_tests::skip(
            "stopping a kubelet needs the lab (scripts/lab/node.sh), and EAGLE_E2E_KUBECONFIG is another cluster",
        );
        return;
    };
    let Some(fx) = Fixture::new("kubelet", 3) else { return };
    let pods = fx.deploy_spread("api", 3, None);
    let nodes = values(&pods);
    let mut child: Child = fx
        .ns
        .kubectl_eagle("profile", &["deployment/api", "-d", "6s", "-f", "99", "-o", "api.svg"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop one kubelet once every agent samples: the window is under way on all three nodes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let agents = loop {
        let agents = fx.running_agents();
        if agents.len() == 3 {
            break agents;
        }
        assert!(Instant::now() < deadline, "the three agents never ran together: {agents:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    std::thread::sleep(Duration::from_secs(2));
    let victim = nodes.iter().nth(1).unwrap().clone();
    let restart = KubeletRestart { script, node: victim.clone() };
    let stop = Command::new("bash").arg(&restart.script).args(["stop-kubelet", &victim]).output().unwrap();
    assert!(stop.status.success(), "node.sh stop-kubelet {victim}: {}", String::from_utf8_lossy(&stop.stderr));
    let stopped_at = Instant::now();

    let mut text = String::new();
    child.stderr.take().unwrap().read_to_string(&mut text).unwrap();
    let status = child.wait().unwrap();
    eprintln!("kubectl-eagle profile: {status} {:?} after the kubelet stopped\n{text}", stopped_at.elapsed());
    assert_eq!(status.code(), Some(7), "PARTIAL: {text}");
    // Noticed while the window ran, given up 10 s after its end (not at the give-up time, the
    // window plus 150 s): the stop came 2 s into the 6 s window.
    assert!(stopped_at.elapsed() < Duration::from_secs(30), "the silent node was noticed late: {text}");

    let table = node_table(&text, &nodes);
    assert_eq!(table.len(), 3, "{table:?}");
    let failed = &table[&victim];
    assert!(failed.starts_with("FAILED: ") && failed.len() > "FAILED: ".len() + 10, "with its reason: {failed}");
    assert!(failed.contains("went silent") && failed.contains("kubelet"), "says why: {failed}");
    for node in nodes.iter().filter(|n| **n != victim) {
        assert_eq!(table[node], "ok", "{table:?}");
    }
    let svg = std::fs::read_to_string(fx.ns.path("api.svg")).unwrap();
    assert!(svg.contains("PARTIAL: 1 node(s) failed") && svg.contains("cpu_60"), "the survivors' graph, labelled");

    // Nothing left on the surviving nodes; the stopped one cleans up once its kubelet is back.
    let id = run_id(&text);
    assert!(fx.jobs_of_run(&id).is_empty(), "the run's Jobs are deleted");
    let survivors: BTreeSet<String> = nodes.iter().filter(|n| **n != victim).cloned().collect();
    fx.wait_no_pods(&id, Some(&survivors), Duration::from_secs(30));
    let restarted = restart.start();
    assert!(restarted.status.success(), "node.sh start {victim}: {}", String::from_utf8_lossy(&restarted.stderr));
    fx.wait_no_pods(&id, None, Duration::from_secs(60));
    assert_eq!(values(&agents), nodes, "an agent ran on every node");
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn tainted_and_cordoned_nodes_are_profiled_all_the_same() {
    let Some(fx) = Fixture::new("taint", 3) else { return };
    let pods = fx.deploy_spread("api", 3, None);
    let nodes = values(&pods);
    let mut restore = NodeRestore::new(&fx);
    let mut names = nodes.iter();
    let (tainted, cordoned) = (names.next().unwrap().clone(), names.next().unwrap().clone());
    // Taken out of scheduling after the workload landed, as for maintenance: the pods run on.
    restore.save(&tainted);
    let mut taints = fx.node(&tainted).spec.unwrap_or_default().taints.unwrap_or_default();
    taints.push(
        serde_json::from_value(json!({"key": "eagle-e2e/maintenance", "value": "yes", "effect": "NoSchedule"}))
            .unwrap(),
    );
    fx.patch_node(&tainted, json!({"spec": {"taints": taints}}));
    restore.save(&cordoned);
    fx.patch_node(&cordoned, json!({"spec": {"unschedulable": true}}));

    let out = fx
        .ns
        .run("profile", &["deployment/api", "-d", "4s", "-f", "99", "-o", "api.folded", "--group-by", "pod", "--keep"]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let table = node_table(&stderr, &nodes);
    assert_eq!(table.len(), 3, "{table:?}");
    assert!(table.values().all(|s| s == "ok"), "the tainted {tainted} and the cordoned {cordoned} too: {table:?}");
    let placed = fx.jobs_and_their_pods_nodes(&run_id(&stderr));
    for (node, ran_on) in &placed {
        assert_eq!(ran_on.as_ref(), Some(node), "{placed:?}");
    }
    let by_pod = samples_by_pod(&read_folded(&fx.ns.path("api.folded")));
    assert_eq!(by_pod.len(), 3, "every replica: {by_pod:?}");
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn a_node_whose_hostname_label_differs_from_its_name_is_profiled() {
    let Some(fx) = Fixture::new("hostname", 1) else { return };
    let mut restore = NodeRestore::new(&fx);
    // The lab's last node is registered so (lab-node-3, labelled lab-host-3); elsewhere, relabel
    // one for the test.
    let differs = |n: &Node| {
        let label = n.metadata.labels.as_ref().and_then(|l| l.get(HOSTNAME_LABEL));
        label.is_some_and(|l| Some(l) != n.metadata.name.as_ref())
    };
    let ready = fx.ready_nodes();
    let node = match ready.iter().find(|n| differs(&fx.node(n))) {
        Some(node) => node.clone(),
        None => {
            let node = ready[0].clone();
            restore.save(&node);
            fx.patch_node(&node, json!({"metadata": {"labels": {HOSTNAME_LABEL: format!("{node}-elsewhere")}}}));
            node
        }
    };
    let label = fx.node(&node).metadata.labels.unwrap_or_default()[HOSTNAME_LABEL].clone();
    assert_ne!(label, node);
    let pods = fx.deploy_spread("api", 1, Some(std::slice::from_ref(&node)));
    assert_eq!(values(&pods), BTreeSet::from([node.clone()]));

    let out = fx.ns.run("profile", &["deployment/api", "-d", "3s", "-f", "99", "-o", "api.folded", "--keep"]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(node_table(&stderr, &values(&pods)).get(&node).map(String::as_str), Some("ok"), "{stderr}");
    let placed = fx.jobs_and_their_pods_nodes(&run_id(&stderr));
    assert_eq!(placed, [(node.clone(), Some(node.clone()))], "placed by name, not by the label {label}");
    // Placement is the point here, not the rate (a busy machine gives the pod little CPU).
    assert!(read_folded(&fx.ns.path("api.folded")).total() > 0, "the pod on {node} was sampled");
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn a_namespace_with_pods_on_two_of_three_nodes_gets_exactly_two_jobs() {
    let Some(fx) = Fixture::new("twoofthree", 3) else { return };
    let pods = fx.deploy_spread("api", 2, None);
    let nodes = values(&pods);
    let target = format!("namespace/{}", fx.ns.namespace);
    let out = fx.ns.run("profile", &[&target, "-d", "3s", "-f", "99", "-o", "ns.folded", "--keep"]);
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("(2 containers on 2 nodes)"), "{stderr}");
    let all: BTreeSet<String> = fx.ready_nodes().into_iter().collect();
    assert_eq!(node_table(&stderr, &all).len(), 2, "two rows, no row for the node without pods: {stderr}");
    let placed = fx.jobs_and_their_pods_nodes(&run_id(&stderr));
    let job_nodes: BTreeSet<String> = placed.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(placed.len(), 2, "exactly two Jobs: {placed:?}");
    assert_eq!(job_nodes, nodes, "on the nodes of the pods");
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn an_async_run_over_three_nodes_is_listed_per_node_and_fetched_later() {
    let Some(fx) = Fixture::new("asyncnodes", 3) else { return };
    let pods = fx.deploy_spread("api", 3, None);
    let nodes = values(&pods);
    let out = fx.ns.run("profile", &["deployment/api", "-d", "6s", "-f", "99", "-a"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 8, "stdout is the run id: {id:?}");

    // `list` follows the run per node, from pending or running to done with its samples.
    let run = |fx: &Fixture| {
        let out = fx.ns.run("list", &["-o", "json"]);
        assert_eq!(out.status.code(), Some(0));
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
        runs.as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).cloned().expect("list shows the run")
    };
    let per_node = |run: &Value| -> BTreeMap<String, Value> {
        run["per_node"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["node"].as_str().unwrap().to_owned(), n.clone()))
            .collect()
    };
    let first = run(&fx);
    assert_eq!(per_node(&first).keys().cloned().collect::<BTreeSet<_>>(), nodes, "{first:#}");
    assert_eq!(first["nodes"]["total"], 3);
    for (node, view) in per_node(&first) {
        let state = view["state"].as_str().unwrap();
        assert!(["pending", "running", "done"].contains(&state), "{node}: {view}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let now = run(&fx);
        if now["status"] == "done" {
            break now;
        }
        assert!(Instant::now() < deadline, "not done after 120 s: {now:#}");
        std::thread::sleep(Duration::from_secs(1));
    };
    for (node, view) in per_node(&done) {
        assert_eq!(view["state"], "done", "{node}: {view}");
        assert!(view["samples"].as_u64().unwrap_or(0) > 0, "{node}: the trailer's count: {view}");
    }
    let table = String::from_utf8_lossy(&fx.ns.run("list", &[]).stdout).into_owned();
    assert!(table.lines().any(|l| l.starts_with(&id) && l.contains("Done")), "{table}");

    let out = fx.ns.run("fetch", &[&id, "-o", "api.folded", "--group-by", "pod", "--clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = node_table(&stderr(&out), &nodes);
    assert!(table.len() == 3 && table.values().all(|s| s == "ok"), "{table:?}");
    let folded = read_folded(&fx.ns.path("api.folded"));
    assert_eq!(samples_by_pod(&folded).len(), 3, "every replica in the fetched graph");
    assert_groundtruth_split(&folded);
    assert!(fx.jobs_of_run(&id).is_empty(), "--clean deleted the Jobs");
}
