//! End-to-end test of `kubectl-eagle net` against a real cluster (the lab of `scripts/lab`, or
//! any cluster given by `EAGLE_E2E_KUBECONFIG`): a client pod calls an HTTP server pod at a
//! known rate, delay and 5xx ratio, measuring itself; what the network view reports must agree
//! with the client. `#[ignore]`d like the other cluster tests; run with
//! `cargo nextest run -p eagle-tests --test net_e2e --run-ignored only`.
//!
//! The server and client are `images/http/{server,load}.py`, run by the `python-groundtruth`
//! image's interpreter with their source given to `python3 -c` (the image holds the standard
//! library they need; nothing is added to it). Both pods are placed on one node: the lab's pod
//! network is one bridge per node, not routed between nodes, and has no kube-proxy or DNS, so
//! the client calls the server's pod IP.
//!
//! Environment: `EAGLE_E2E_KUBECONFIG` (required), `EAGLE_E2E_PYTHON_GROUNDTRUTH_IMAGE`
//! (default `lab.local/python-groundtruth:<version>`), `EAGLE_E2E_AGENT_IMAGE` (default: the
//! CLI's own).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eagle_tests::cluster::{is_running, TestNamespace, POD_WAIT_S};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{ListParams, LogParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

/// Requests the client makes, and at what rate: 10 s of traffic.
const REQUESTS: u32 = 300;
const RATE: u32 = 30;
/// The client waits this long after it starts before calling, so that the agents' window
/// (started after the pods run) covers every request.
const CLIENT_DELAY_S: u32 = 30;
const WINDOW: &str = "55s";

fn python_image() -> String {
    std::env::var("EAGLE_E2E_PYTHON_GROUNDTRUTH_IMAGE")
        .unwrap_or_else(|_| format!("lab.local/python-groundtruth:{}", env!("CARGO_PKG_VERSION")))
}

fn source(name: &str) -> String {
    let path = eagle_tests::repo_root().join("images/http").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The test's namespace with its server and client; deleted on drop.
struct Fixture {
    ns: TestNamespace,
}

impl Fixture {
    fn new(kubeconfig: PathBuf) -> Self {
        let mut ns = TestNamespace::connect(kubeconfig, format!("eagle-e2e-net-{:x}", std::process::id()));
        ns.create();
        Fixture { ns }
    }

    /// A one-replica deployment of the python image on `node` running `python3 -u -c SCRIPT ARGS`;
    /// waits until it runs and returns its pod.
    fn deploy(&self, name: &str, node: &str, script: &str, args: &[String]) -> Pod {
        let mut command = vec!["/usr/bin/python3.11".to_owned(), "-u".into(), "-c".into(), script.to_owned()];
        command.extend(args.iter().cloned());
        self.ns.create_deployment(
            name,
            1,
            json!({
                "nodeName": node,
                "containers": [{"name": "app", "image": python_image(), "imagePullPolicy": "IfNotPresent", "command": command}]
            }),
        );
        self.ns
            .wait_for_pods(name, |pods| {
                pods.into_iter().find(|p| is_running(p) && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
            })
            .unwrap_or_else(|why| panic!("deployment {name}: no pod Running after {POD_WAIT_S} s:{why}"))
    }

    fn service(&self, name: &str) {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.ns.namespace},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let api: Api<Service> = Api::namespaced(self.ns.client.clone(), &self.ns.namespace);
        self.ns.rt.block_on(api.create(&PostParams::default(), &s)).unwrap();
    }

    /// The first node that takes pods.
    fn node(&self) -> String {
        let nodes = self.ns.rt.block_on(Api::<Node>::all(self.ns.client.clone()).list(&ListParams::default())).unwrap();
        nodes
            .items
            .into_iter()
            .find(|n| n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true))
            .and_then(|n| n.metadata.name)
            .expect("a schedulable node")
    }

    /// The client's own measurement: the JSON line its log ends with, once it is there.
    fn client_measurement(&self, pod: &str, timeout: Duration) -> Value {
        let pods: Api<Pod> = Api::namespaced(self.ns.client.clone(), &self.ns.namespace);
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.ns.rt.block_on(pods.logs(pod, &LogParams::default())).unwrap_or_default();
            if let Some(line) = log.lines().rev().find(|l| l.starts_with('{')) {
                return serde_json::from_str(line).unwrap_or_else(|e| panic!("client output {line}: {e}"));
            }
            assert!(Instant::now() < deadline, "the client printed no measurement within {timeout:?}; its log:\n{log}");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn a_client_pod_calling_a_server_pod_agrees_with_what_the_client_measured() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc);
    let node = fx.node();
    let server_args: Vec<String> = [
        "--bind",
        "0.0.0.0",
        "--port",
        "8080",
        "--delay-ms",
        "20",
        "--slow-ms",
        "80",
        "--slow-every",
        "25",
        "--error-every",
        "10",
    ]
    .map(String::from)
    .to_vec();
    let web = fx.deploy("web", &node, &source("server.py"), &server_args);
    fx.service("web");
    let web_ip = web.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    // The client waits, calls, prints its measurement, then stays (a Deployment restarts what exits).
    let client = format!("import time\ntime.sleep({CLIENT_DELAY_S})\n{}\ntime.sleep(1e6)\n", source("load.py"));
    let client_args: Vec<String> = [
        "--host",
        &web_ip,
        "--port",
        "8080",
        "--requests",
        &REQUESTS.to_string(),
        "--rate",
        &RATE.to_string(),
        "--connections",
        "2",
    ]
    .map(String::from)
    .to_vec();
    let load = fx.deploy("load", &node, &client, &client_args);
    let load_pod = load.metadata.name.clone().unwrap();

    let report = fx.ns.path("net.json");
    let out = fx
        .ns
        .kubectl_eagle(
            "net",
            &[
                "deployment/web",
                "deployment/load",
                "-d",
                WINDOW,
                "-o",
                report.to_str().unwrap(),
                "--max-p99",
                "http:/api/.*=10s",
            ],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "kubectl-eagle net: {stderr}");
    let truth = fx.client_measurement(&load_pod, Duration::from_secs(30));
    let text = std::fs::read_to_string(&report).unwrap();
    let net: Value = serde_json::from_str(&text).unwrap();

    // The server's side, attributed to its pod.
    let served: Vec<&Value> = net["http"].as_array().unwrap().iter().filter(|r| r["direction"] == "inbound").collect();
    assert_eq!(served.len(), 1, "one served route: {text}");
    let route = served[0];
    assert_eq!(
        (route["workload"].as_str(), route["path"].as_str()),
        (Some("deployment/web"), Some("/api/items/{n}")),
        "{text}"
    );
    assert_eq!(route["requests"].as_u64(), truth["requests"].as_u64(), "requests: {text}\nclient: {truth}");
    assert_eq!(route["errors"].as_u64(), truth["errors"].as_u64(), "5xx: {text}\nclient: {truth}");
    // The rate over the client's own span is the client's, as the counts are exact; over the
    // window it is what the window says.
    eagle_tests::within(
        "rate over the client's span",
        route["requests"].as_f64().unwrap() / truth["seconds"].as_f64().unwrap(),
        truth["rate_per_s"].as_f64().unwrap(),
        0.02,
    );
    // The client's side: its own view of the same requests, from its write to its read.
    let made: Vec<&Value> = net["http"].as_array().unwrap().iter().filter(|r| r["direction"] == "outbound").collect();
    assert_eq!(made.len(), 1, "one route made: {text}");
    for q in ["p50_ms", "p99_ms"] {
        eagle_tests::within(q, made[0][q].as_f64().unwrap(), truth[q].as_f64().unwrap(), 0.10);
    }
    // Bytes within 1 % of the client's counters.
    let to_server = net["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["direction"] == "outbound" && p["peer"] == format!("{web_ip}:8080"))
        .unwrap_or_else(|| panic!("no row of the client towards {web_ip}:8080: {text}"));
    assert_eq!(
        to_server["peer_name"].as_str(),
        Some(format!("{}/pod/{}", fx.ns.namespace, web.metadata.name.as_deref().unwrap())).as_deref()
    );
    eagle_tests::within(
        "bytes sent",
        to_server["bytes_sent"].as_f64().unwrap(),
        truth["bytes_sent"].as_f64().unwrap(),
        0.01,
    );
    eagle_tests::within(
        "bytes received",
        to_server["bytes_received"].as_f64().unwrap(),
        truth["bytes_received"].as_f64().unwrap(),
        0.01,
    );

    // Each pod's network namespace is its own: one listen-queue row per pod, not the host's,
    // and nothing overflowed (the server accepts at once).
    let queues = net["listen_queues"].as_array().unwrap_or_else(|| panic!("no listen_queues: {text}"));
    let mut pods: Vec<&str> = queues.iter().filter_map(|q| q["pod"].as_str()).collect();
    pods.sort_unstable();
    let mut expected = [web.metadata.name.as_deref().unwrap(), load_pod.as_str()];
    expected.sort_unstable();
    assert_eq!(pods, expected, "{text}");
    for q in queues {
        assert_eq!((q["host_network"].as_bool(), q["overflows"].as_u64()), (Some(false), Some(0)), "{q}");
    }

    // The edge client -> server on the map, seen from both ends.
    let (client, server) =
        (format!("{}/deployment/load", fx.ns.namespace), format!("{}/deployment/web", fx.ns.namespace));
    let edges = net["edges"].as_array().unwrap();
    for side in ["client", "server"] {
        let edge = edges
            .iter()
            .find(|e| e["client"] == client.as_str() && e["server"] == server.as_str() && e["seen_by"] == side)
            .unwrap_or_else(|| panic!("no edge {client} -> {server} seen by the {side}: {edges:?}"));
        assert_eq!(edge["requests"].as_u64(), truth["requests"].as_u64(), "{edge}");
    }
}

/// `profile --net FILE` on the cluster: one window, the CPU graph of both pods and the network
/// report of the same window, whose served requests are all the client made.
#[test]
#[ignore = "needs a cluster: EAGLE_E2E_KUBECONFIG"]
fn profile_with_net_writes_the_graph_and_the_network_of_one_window() {
    let Some(kc) = eagle_tests::e2e_kubeconfig() else { return };
    let fx = Fixture::new(kc);
    let node = fx.node();
    let server_args: Vec<String> =
        ["--bind", "0.0.0.0", "--port", "8080", "--delay-ms", "5", "--error-every", "10"].map(String::from).to_vec();
    let web = fx.deploy("web", &node, &source("server.py"), &server_args);
    let web_ip = web.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    let client = format!("import time\ntime.sleep({CLIENT_DELAY_S})\n{}\ntime.sleep(1e6)\n", source("load.py"));
    let client_args: Vec<String> =
        ["--host", &web_ip, "--port", "8080", "--requests", &REQUESTS.to_string(), "--rate", &RATE.to_string()]
            .map(String::from)
            .to_vec();
    let load = fx.deploy("load", &node, &client, &client_args);
    let load_pod = load.metadata.name.clone().unwrap();

    let (graph, report) = (fx.ns.path("cpu.folded"), fx.ns.path("net.json"));
    let out = fx
        .ns
        .kubectl_eagle(
            "profile",
            &[
                "deployment/web",
                "deployment/load",
                "-d",
                WINDOW,
                "-o",
                graph.to_str().unwrap(),
                "--net",
                report.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "kubectl-eagle profile --net: {stderr}");
    let truth = fx.client_measurement(&load_pod, Duration::from_secs(30));
    let folded = std::fs::read_to_string(&graph).unwrap();
    let web_pod = web.metadata.name.as_deref().unwrap();
    assert!(folded.lines().any(|l| l.contains(web_pod)), "no stack of {web_pod}:\n{folded}");
    let text = std::fs::read_to_string(&report).unwrap();
    let net: Value = serde_json::from_str(&text).unwrap();
    let served: Vec<&Value> = net["http"].as_array().unwrap().iter().filter(|r| r["direction"] == "inbound").collect();
    assert_eq!(served.len(), 1, "one served route: {text}");
    assert_eq!(served[0]["pod"].as_str(), Some(web_pod), "{text}");
    assert_eq!(served[0]["requests"].as_u64(), truth["requests"].as_u64(), "requests: {text}\nclient: {truth}");
    assert_eq!(served[0]["errors"].as_u64(), truth["errors"].as_u64(), "5xx: {text}\nclient: {truth}");
}
