//! `kubectl-eagle net` in cluster mode against the API double (`eagle_tests::apiserver`): the
//! real binary, real Kubernetes API JSON over HTTP, and recorded node streams whose network
//! records (`EAGLE1 N`) the double's agents write when their Job asks for `--net`. Each test
//! asserts what a user gets (exit code, the merged report attributed to pods, the service map)
//! and the API calls made.
//!
//! Needs `target/debug/kubectl-eagle`: `cargo build -p kube-eagle --bin kubectl-eagle`.

use eagle_proto::{Direction, HttpRoute, LatencyHistogram, ListenQueues, Listener, NetPayload, PeerTraffic};
use eagle_tests::apiserver::{
    container_id, match_labels, namespace, pod, service, workload, ApiServer, CliRun, Fate, Scenario,
};
use serde_json::Value;

const WEB_A: &str = "web-5b7c9-aaaaa"; // node-a, 10.244.1.10
const WEB_B: &str = "web-5b7c9-bbbbb"; // node-b, 10.244.2.10
const LOAD: &str = "load-6d8e1-ccccc"; // node-a, 10.244.1.20
const LOAD_IP: &str = "10.244.1.20";
/// The double's services all have this cluster IP.
const WEB_SERVICE: &str = "10.96.0.17:80";
const WINDOW_MS: u64 = 10_000;

/// `shop`: a web Deployment on two nodes behind service `web`, and a load generator calling it.
fn shop() -> Vec<Value> {
    let web = [("app", "web"), ("pod-template-hash", "5b7c9")];
    let load = [("app", "load"), ("pod-template-hash", "6d8e1")];
    vec![
        namespace("shop"),
        workload("Deployment", "shop", "web", match_labels(&[("app", "web")]), None),
        workload("Deployment", "shop", "load", match_labels(&[("app", "load")]), None),
        pod("shop", WEB_A)
            .on("node-a")
            .ip("10.244.1.10")
            .labels(&web)
            .owner("ReplicaSet", "web-5b7c9")
            .running("app")
            .build(),
        pod("shop", WEB_B)
            .on("node-b")
            .ip("10.244.2.10")
            .labels(&web)
            .owner("ReplicaSet", "web-5b7c9")
            .running("app")
            .build(),
        pod("shop", LOAD)
            .on("node-a")
            .ip(LOAD_IP)
            .labels(&load)
            .owner("ReplicaSet", "load-6d8e1")
            .running("app")
            .build(),
        service("shop", "web", &[("app", "web")]),
    ]
}

fn latencies(count: u64, ms: u64) -> LatencyHistogram {
    let mut h = LatencyHistogram::default();
    (0..count).for_each(|_| h.record(ms * 1000));
    h
}

fn route(pod: &str, direction: Direction, peer: &str, status: u16, requests: u64, ms: u64) -> HttpRoute {
    HttpRoute {
        container: Some(container_id(pod, "app")),
        pid: 7,
        process: "python3".into(),
        direction,
        peer: peer.into(),
        method: "GET".into(),
        path: "/api/items/{n}".into(),
        status,
        requests,
        latency_us: latencies(requests, ms),
    }
}

fn traffic(pod: &str, direction: Direction, peer: &str, sent: u64, received: u64, connections: u64) -> PeerTraffic {
    PeerTraffic {
        container: Some(container_id(pod, "app")),
        pid: 7,
        process: "python3".into(),
        direction,
        local_port: if direction == Direction::Inbound { 8080 } else { 0 },
        peer: peer.into(),
        bytes_sent: sent,
        bytes_received: received,
        connects: if direction == Direction::Outbound { connections } else { 0 },
        accepts: if direction == Direction::Inbound { connections } else { 0 },
        rtt_sum_us: 300,
        rtt_samples: 3,
        ..PeerTraffic::default()
    }
}

/// What each node's agent saw: each web pod served 60 requests (6 of them 503s) from the load
/// pod; the load pod made all 120 through the service.
fn scenario() -> Scenario {
    let mut a = NetPayload::new(WINDOW_MS);
    a.http = vec![
        route(WEB_A, Direction::Inbound, LOAD_IP, 200, 54, 20),
        route(WEB_A, Direction::Inbound, LOAD_IP, 503, 6, 80),
        route(LOAD, Direction::Outbound, WEB_SERVICE, 200, 108, 21),
        route(LOAD, Direction::Outbound, WEB_SERVICE, 503, 12, 81),
    ];
    a.peers = vec![
        traffic(WEB_A, Direction::Inbound, LOAD_IP, 30_000, 6_000, 1),
        traffic(LOAD, Direction::Outbound, WEB_SERVICE, 12_000, 60_000, 2),
    ];
    let mut b = NetPayload::new(WINDOW_MS);
    b.http = vec![
        route(WEB_B, Direction::Inbound, LOAD_IP, 200, 54, 20),
        route(WEB_B, Direction::Inbound, LOAD_IP, 503, 6, 80),
    ];
    b.peers = vec![traffic(WEB_B, Direction::Inbound, LOAD_IP, 30_000, 6_000, 1)];
    b.peers[0].drops = 4;
    b.peers[0].drop_reasons = [("TCP_OLD_DATA".to_owned(), 4)].into();
    // web-b's accept queue overflowed: its pod's network namespace counted it, and its listener.
    b.listen_queues = vec![ListenQueues {
        container: Some(container_id(WEB_B, "app")),
        pid: 7,
        process: "python3".into(),
        host_network: false,
        overflows: 9,
        drops: 9,
        listeners: vec![Listener {
            address: "0.0.0.0:8080".into(),
            port: 8080,
            pid: Some(7),
            drops: 9,
            queued: 128,
            backlog: 128,
            closed: false,
        }],
    }];
    Scenario::new().net("node-a", a).net("node-b", b)
}

fn context(server: &ApiServer, run: &CliRun) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}\nrequests:\n{}", run.code, run.stdout, run.stderr, server.transcript())
}

fn net(server: &ApiServer, args: &[&str]) -> CliRun {
    let mut all = args.to_vec();
    all.extend(["-n", "shop", "-d", "1s"]);
    server.run_for("net", &all)
}

#[test]
fn a_deployment_and_its_client_are_merged_over_nodes_and_attributed_to_pods() {
    let server = ApiServer::start(shop(), scenario());
    let out = server.dir().join("net.json");
    let run = net(&server, &["deployment/web", "deployment/load", "-o", out.to_str().unwrap()]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");

    // Every agent was asked for the network side, through its typed argument.
    let jobs = server.created_jobs();
    assert_eq!(jobs.len(), 2, "{ctx}");
    for job in &jobs {
        let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(args.as_array().unwrap().iter().any(|a| a == "--net"), "{args}");
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Per pod: each web pod's route, with its pod and workload.
    let http = report["http"].as_array().unwrap();
    let served: Vec<(&str, u64, u64)> = http
        .iter()
        .filter(|r| r["direction"] == "inbound")
        .map(|r| (r["pod"].as_str().unwrap(), r["requests"].as_u64().unwrap(), r["errors"].as_u64().unwrap()))
        .collect();
    assert_eq!(served, [(WEB_A, 60, 6), (WEB_B, 60, 6)], "{ctx}");
    for r in http {
        assert_eq!(r["namespace"], "shop");
        assert_eq!(r["container_name"], "app");
        let workload = if r["direction"] == "inbound" { "deployment/web" } else { "deployment/load" };
        assert_eq!(r["workload"], workload, "{r}");
    }
    // The load pod's peer is the service, the web pods' peer the load pod.
    let peers = report["peers"].as_array().unwrap();
    let named: Vec<(&str, &str)> =
        peers.iter().map(|p| (p["pod"].as_str().unwrap(), p["peer_name"].as_str().unwrap_or("-"))).collect();
    let load_pod = format!("shop/pod/{LOAD}");
    assert!(named.contains(&(LOAD, "shop/service/web")), "{named:?}");
    assert!(named.contains(&(WEB_A, load_pod.as_str())) && named.contains(&(WEB_B, load_pod.as_str())), "{named:?}");

    // The edge load -> web, as the servers saw it: both nodes' requests and histograms merged.
    let edges = report["edges"].as_array().unwrap();
    let served =
        edges.iter().find(|e| e["seen_by"] == "server").unwrap_or_else(|| panic!("no server-side edge: {edges:?}"));
    assert_eq!(
        (served["client"].as_str(), served["server"].as_str()),
        (Some("shop/deployment/load"), Some("shop/deployment/web"))
    );
    assert_eq!(served["requests"], 120);
    assert_eq!(served["errors"], 12);
    assert_eq!(served["rate_per_s"], 12.0);
    assert_eq!(served["error_ratio"], 0.1);
    let p50 = served["p50_ms"].as_f64().unwrap();
    let p99 = served["p99_ms"].as_f64().unwrap();
    assert!((p50 - 20.0).abs() <= 20.0 / 16.0, "p50 {p50}");
    assert!((p99 - 80.0).abs() <= 80.0 / 16.0, "p99 {p99}");
    assert_eq!(served["bytes"], 72_000);
    // The client's own view of the same requests, addressed through the service.
    let made = edges.iter().find(|e| e["seen_by"] == "client").unwrap();
    assert_eq!(
        (made["server"].as_str(), made["via"].as_str()),
        (Some("shop/deployment/web"), Some("shop/service/web"))
    );
    assert_eq!(made["requests"], 120);

    // One list of pods and one of services in the namespace involved, after the window.
    let requests = server.requests();
    let lists =
        |path: &str| requests.iter().filter(|r| r.is("GET", path) && r.param("labelSelector").is_none()).count();
    assert_eq!(lists("/api/v1/namespaces/shop/services"), 1, "{ctx}");
    assert_eq!(lists("/api/v1/namespaces/shop/pods"), 1, "{ctx}");
    // Nothing is left behind.
    for job in &jobs {
        let name = job["metadata"]["name"].as_str().unwrap();
        assert!(!server.exists("jobs", "kube-eagle", name), "Job {name} left\n{ctx}");
    }
}

#[test]
fn the_service_map_is_written_as_dot_with_rates_and_latencies_on_the_edges() {
    let server = ApiServer::start(shop(), scenario());
    let out = server.dir().join("map.dot");
    let run = net(&server, &["deployment/web", "deployment/load", "-o", out.to_str().unwrap()]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let dot = std::fs::read_to_string(&out).unwrap();
    assert!(dot.starts_with("digraph service_map {"), "{dot}");
    let edge = dot
        .lines()
        .find(|l| l.contains("\"shop/deployment/load\" -> \"shop/deployment/web\"") && l.contains("seen by the server"))
        .unwrap_or_else(|| panic!("no edge load -> web:\n{dot}"));
    assert!(edge.contains("12.0 req/s, 10.0% 5xx") && edge.contains("p50 ") && edge.contains("p99 "), "{edge}");
}

#[test]
fn a_failed_node_leaves_a_partial_report_of_the_others() {
    let failing =
        Fate::AgentError { exit_code: 4, message: "cannot load the network program: permission denied".into() };
    let server = ApiServer::start(shop(), scenario().node("node-b", failing));
    let out = server.dir().join("net.json");
    let run = net(&server, &["deployment/web", "-o", out.to_str().unwrap()]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(7), "{ctx}");
    assert!(run.stderr.contains("permission denied"), "{ctx}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let pods: Vec<&str> = report["http"].as_array().unwrap().iter().filter_map(|r| r["pod"].as_str()).collect();
    assert!(pods.contains(&WEB_A) && !pods.contains(&WEB_B), "{pods:?}");
}

#[test]
fn without_leave_to_list_services_peers_keep_their_addresses() {
    let server = ApiServer::start(shop(), scenario().deny("list", "services", "shop"));
    let out = server.dir().join("net.json");
    let run = net(&server, &["deployment/load", "-o", out.to_str().unwrap()]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(
        run.stderr.lines().filter(|l| l.contains("cannot list the services of namespace shop")).count(),
        1,
        "{ctx}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let peer = &peers[0];
    assert_eq!((peer["peer"].as_str(), peer.get("peer_name")), (Some(WEB_SERVICE), None), "{peer}");
}

#[test]
fn a_detached_net_run_is_fetched_as_its_network_report() {
    let server = ApiServer::start(shop(), scenario());
    // Rules need the report, which -a does not wait for: one line says where they go.
    let refused = net(&server, &["deployment/web", "-a", "--max-retransmits", "1%"]);
    assert_eq!(refused.code, Some(2), "{}", context(&server, &refused));
    assert!(refused.stderr.contains("kubectl eagle check"), "{}", refused.stderr);
    assert!(server.created_jobs().is_empty());

    let out = server.dir().join("web-net.json");
    let run = net(&server, &["deployment/web", "-a", "-o", out.to_str().unwrap()]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let id = run.stdout.trim().to_owned();
    assert!(id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()), "stdout is the run id alone: {ctx}");
    assert!(run.stderr.contains(&format!("kubectl eagle fetch {id} --net {}", out.display())), "{ctx}");
    for job in server.created_jobs() {
        assert_eq!(job["metadata"]["annotations"]["kube-eagle.io/net"], "only", "{job}");
    }

    // Without --net there is nothing to fetch of it: one line says how.
    let no_net = server.run_for("fetch", &[&id, "-o", server.dir().join("x.svg").to_str().unwrap()]);
    assert_eq!(no_net.code, Some(2), "{}", context(&server, &no_net));
    assert!(no_net.stderr.contains("--net FILE"), "{}", no_net.stderr);

    let fetched = server.run_for("fetch", &[&id, "--net", out.to_str().unwrap()]);
    let ctx = context(&server, &fetched);
    assert_eq!(fetched.code, Some(0), "{ctx}");
    assert!(!server.dir().join("flamegraph.svg").exists(), "a net run's 1 Hz stacks are not drawn: {ctx}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Both nodes merged, rows named by pod, the drops by reason and the listener through.
    let served: u64 = report["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == "inbound")
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 120, "{report}");
    let web_b = report["peers"].as_array().unwrap().iter().find(|p| p["pod"] == WEB_B).unwrap();
    assert_eq!(web_b["drop_reasons"]["TCP_OLD_DATA"], 4, "{web_b}");
    assert_eq!(report["listen_queues"][0]["listeners"][0]["drops"], 9, "{report}");
    // The peers are named as `net` names them: the list of pods and services, read at fetch.
    assert!(report["peers"].as_array().unwrap().iter().any(|p| p["peer_name"].is_string()), "{report}");
}

/// A loopback double of a Pushgateway: accepts one request, answers 200, returns its request
/// line and body.
fn push_gateway() -> (String, std::thread::JoinHandle<(String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (&stream).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        (line.trim_end().to_owned(), String::from_utf8(body).unwrap())
    });
    (url, handle)
}

#[test]
fn the_window_is_pushed_to_a_push_gateway_grouped_by_run() {
    let server = ApiServer::start(shop(), scenario());
    let (url, gateway) = push_gateway();
    let out = server.dir().join("net.prom");
    let run = net(&server, &["deployment/web", "-o", out.to_str().unwrap(), "--push-gateway", &url]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let (line, body) = gateway.join().unwrap();
    let run_id = run.stderr.split("run ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a run id");
    assert_eq!(line, format!("PUT /metrics/job/kube-eagle-net/run/{run_id} HTTP/1.1"), "{ctx}");
    // What was pushed is what was written: the text format, with the pods' labels.
    assert_eq!(body, std::fs::read_to_string(&out).unwrap());
    assert!(body.contains(&format!("pod=\"{WEB_A}\"")) && body.contains("workload=\"deployment/web\""), "{body}");
    assert!(run.stderr.contains(&format!("pushed to {url}/metrics/job/kube-eagle-net/run/{run_id}")), "{ctx}");
}

/// A gateway that cannot be reached: the report is written all the same, one line names the
/// gateway, and the exit code is `--push`'s (11), not a failure of the run.
#[test]
fn an_unreachable_push_gateway_still_writes_the_report_and_exits_11() {
    let server = ApiServer::start(shop(), scenario());
    // A port that was free a moment ago: nothing listens there.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let out = server.dir().join("net.prom");
    let run = net(&server, &["deployment/web", "-o", out.to_str().unwrap(), "--push-gateway", &url]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(11), "{ctx}");
    assert!(std::fs::read_to_string(&out).unwrap().contains(&format!("pod=\"{WEB_A}\"")), "{ctx}");
    assert_eq!(run.stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{ctx}");
}

#[test]
fn the_terminal_table_names_each_row_by_pod_and_each_peer_by_what_it_is() {
    let server = ApiServer::start(shop(), scenario());
    let run = net(&server, &["deployment/web", "deployment/load"]);
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let table = &run.stdout;
    assert!(table.contains(&format!("shop/{WEB_A}/app python3 (7)")), "{table}");
    assert!(table.contains(&format!("{LOAD_IP} -> :8080 (shop/pod/{LOAD})")), "{table}");
    assert!(table.contains(&format!("{WEB_SERVICE} (shop/service/web)")), "{table}");
}

#[test]
fn a_dry_run_prints_the_jobs_that_would_ask_for_the_network_side() {
    let server = ApiServer::start(shop(), scenario());
    let run = net(&server, &["deployment/web", "--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", context(&server, &run));
    assert_eq!(run.stdout.matches("kind: Job").count(), 2, "{}", run.stdout);
    assert_eq!(run.stdout.matches("- --net").count(), 2, "{}", run.stdout);
    assert!(server.created_jobs().is_empty());
}

/// `profile --net FILE`: one window, two reports. The agents are asked for both (`--net`, at
/// the profile's own rate), the graph goes to `-o`, the network record, merged and named by pod
/// as `net` names it, to `--net`.
#[test]
fn profile_with_net_writes_the_graph_and_the_network_of_the_same_window() {
    let server = ApiServer::start(shop(), scenario());
    let graph = server.dir().join("cpu.folded");
    let out = server.dir().join("net.json");
    let run = server.run_for(
        "profile",
        &[
            "deployment/web",
            "deployment/load",
            "-n",
            "shop",
            "-d",
            "1s",
            "-o",
            graph.to_str().unwrap(),
            "--net",
            out.to_str().unwrap(),
        ],
    );
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let jobs = server.created_jobs();
    assert_eq!(jobs.len(), 2, "{ctx}");
    for job in &jobs {
        let args: Vec<&str> = job["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.contains(&"--net"), "{args:?}");
        // The CPU profile keeps its rate: not the 1 Hz of `net` alone.
        assert!(args.windows(2).any(|w| w == ["--frequency", "99"] || w == ["-f", "99"]), "{args:?}");
    }
    let folded = std::fs::read_to_string(&graph).unwrap();
    assert!(folded.lines().any(|l| l.contains(WEB_A)), "{folded}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let served: Vec<(&str, u64)> = report["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == "inbound")
        .map(|r| (r["pod"].as_str().unwrap(), r["requests"].as_u64().unwrap()))
        .collect();
    assert_eq!(served, [(WEB_A, 60), (WEB_B, 60)], "{ctx}");
    let edges = report["edges"].as_array().unwrap();
    assert!(edges.iter().any(|e| e["client"] == "shop/deployment/load" && e["server"] == "shop/deployment/web"));
    // Drops per peer and the listen queues per pod came through the merge, named by pod.
    let queues = report["listen_queues"].as_array().unwrap();
    assert_eq!(queues.len(), 1, "{queues:?}");
    assert_eq!((queues[0]["pod"].as_str(), queues[0]["overflows"].as_u64()), (Some(WEB_B), Some(9)));
    let drops: Vec<(&str, u64)> = report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pod"].as_str().unwrap(), p["drops"].as_u64().unwrap()))
        .collect();
    assert!(drops.contains(&(WEB_B, 4)) && drops.contains(&(WEB_A, 0)), "{drops:?}");
    let web_b = report["peers"].as_array().unwrap().iter().find(|p| p["pod"] == WEB_B).unwrap();
    assert_eq!(web_b["drop_reasons"]["TCP_OLD_DATA"], 4, "{web_b}");
    let listener = &queues[0]["listeners"][0];
    assert_eq!(
        (listener["address"].as_str(), listener["drops"].as_u64()),
        (Some("0.0.0.0:8080"), Some(9)),
        "{queues:?}"
    );
    assert!(run.stderr.contains(&format!("wrote {}", out.display())), "{ctx}");
}

/// A node that fails leaves both reports partial: the others' graph and network, exit 7.
#[test]
fn profile_with_net_and_a_failed_node_is_partial_in_both_reports() {
    let failing = Fate::AgentError { exit_code: 4, message: "cannot load the network program".into() };
    let server = ApiServer::start(shop(), scenario().node("node-b", failing));
    let graph = server.dir().join("cpu.folded");
    let out = server.dir().join("net.json");
    let run = server.run_for(
        "profile",
        &["deployment/web", "-n", "shop", "-d", "1s", "-o", graph.to_str().unwrap(), "--net", out.to_str().unwrap()],
    );
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(7), "{ctx}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let pods: Vec<&str> = report["http"].as_array().unwrap().iter().filter_map(|r| r["pod"].as_str()).collect();
    assert!(pods.contains(&WEB_A) && !pods.contains(&WEB_B), "{pods:?}");
    assert!(std::fs::read_to_string(&graph).unwrap().contains(WEB_A), "{ctx}");
}

#[test]
fn a_detached_profile_with_net_is_fetched_as_graph_and_report() {
    let server = ApiServer::start(shop(), scenario());
    let (graph, out) = (server.dir().join("cpu.folded"), server.dir().join("net.prom"));
    let run = server.run_for(
        "profile",
        &[
            "deployment/web",
            "-n",
            "shop",
            "-d",
            "1s",
            "-a",
            "-o",
            graph.to_str().unwrap(),
            "--net",
            out.to_str().unwrap(),
        ],
    );
    let ctx = context(&server, &run);
    assert_eq!(run.code, Some(0), "{ctx}");
    let id = run.stdout.trim().to_owned();
    assert!(
        run.stderr.contains(&format!("kubectl eagle fetch {id} -o {} --net {}", graph.display(), out.display())),
        "{ctx}"
    );
    let fetched = server.run_for("fetch", &[&id, "-o", graph.to_str().unwrap(), "--net", out.to_str().unwrap()]);
    let ctx = context(&server, &fetched);
    assert_eq!(fetched.code, Some(0), "{ctx}");
    let folded = std::fs::read_to_string(&graph).unwrap();
    assert!(folded.lines().any(|l| l.contains(WEB_A)), "{folded}");
    let prom = std::fs::read_to_string(&out).unwrap();
    assert!(prom.contains("reason=\"TCP_OLD_DATA\"} 4") && prom.contains("eagle_tcp_listener_drops_total{"), "{prom}");
    // A CPU run has no network report to fetch.
    let cpu = server.run_for("profile", &["deployment/web", "-n", "shop", "-d", "1s", "-a"]);
    let cpu_id = cpu.stdout.trim();
    let refused = server.run_for("fetch", &[cpu_id, "--net", out.to_str().unwrap()]);
    assert_eq!(refused.code, Some(2), "{}", context(&server, &refused));
    assert!(refused.stderr.contains("did not watch the network"), "{}", refused.stderr);
}
