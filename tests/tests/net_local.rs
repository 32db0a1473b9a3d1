//! `kubectl-eagle net` against ground truth on loopback (issue #19): the HTTP server of
//! `images/http` with a known delay, slow share and 5xx ratio, called by its load generator,
//! which measures latency and counts bytes itself. What the network view reports must agree
//! with what the client measured.

use std::ffi::OsStr;
use std::net::TcpListener;

use eagle_tests::http_server::{self, ServerUnderEagle};
use eagle_tests::{require_sampling, TestDir};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn http_requests_errors_latency_and_bytes_agree_with_the_client() {
    require_sampling!();
    let (port, client, net, text, stderr) = net_under_load(
        "net-http",
        &["--max-p99", "http:/api/.*=10s"],
        &["--delay-ms", "20", "--slow-ms", "80", "--slow-every", "25", "--error-every", "10"],
        &["--requests", "200", "--rate", "40", "--connections", "2"],
    );

    let routes = net["http"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "one route, /api/items/{{n}}: {text}");
    let route = &routes[0];
    assert_eq!(route["path"], "/api/items/{n}");
    assert_eq!(route["direction"], "inbound");
    // Every request, every 5xx: the rate over the client's own span is the client's rate.
    assert_eq!(route["requests"], client["requests"], "{text}");
    assert_eq!(route["errors"], client["errors"], "{text}");
    assert_eq!(route["error_ratio"].as_f64(), Some(0.1));
    let span = client["seconds"].as_f64().unwrap();
    eagle_tests::within(
        "request rate",
        route["requests"].as_f64().unwrap() / span,
        client["rate_per_s"].as_f64().unwrap(),
        0.02,
    );
    eagle_tests::within("p50", route["p50_ms"].as_f64().unwrap(), client["p50_ms"].as_f64().unwrap(), 0.10);
    eagle_tests::within("p99", route["p99_ms"].as_f64().unwrap(), client["p99_ms"].as_f64().unwrap(), 0.10);

    let peers = net["peers"].as_array().unwrap();
    let inbound: Vec<&Value> = peers.iter().filter(|p| p["direction"] == "inbound").collect();
    assert_eq!(inbound.len(), 1, "one inbound peer, 127.0.0.1: {text}");
    let peer = inbound[0];
    assert_eq!(peer["peer"], "127.0.0.1");
    assert_eq!(peer["local_port"].as_u64(), Some(port.parse().unwrap()));
    assert_eq!(peer["accepts"], client["connections"]);
    // What the client sent, the server received, and back.
    eagle_tests::within(
        "bytes received",
        peer["bytes_received"].as_f64().unwrap(),
        client["bytes_sent"].as_f64().unwrap(),
        0.01,
    );
    eagle_tests::within(
        "bytes sent",
        peer["bytes_sent"].as_f64().unwrap(),
        client["bytes_received"].as_f64().unwrap(),
        0.01,
    );
    assert!(stderr.contains("ok     --max-p99 http:/api/.*=10s"), "{stderr}");
}

#[test]
fn a_broken_p99_rule_exits_1_and_names_the_route() {
    require_sampling!();
    let dir = TestDir::new("net-rule");
    let port = free_port().to_string();
    let eagle = ServerUnderEagle::start(
        ["net", "--max-p99", "http:/api/.*=5ms"],
        None,
        &["--port", &port, "--delay-ms", "20"],
        &dir.join("ready"),
    );
    load(&port, &["--requests", "20", "--rate", "20", "--connections", "1"]);
    eagle.stop();
    let run = eagle.wait();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BROKEN --max-p99 http:/api/.*=5ms: python3 GET /api/items/{n}"), "{stderr}");
    assert!(stdout.contains("/api/items/{n}") && stdout.contains("127.0.0.1 -> :"), "{stdout}");
}

/// `profile --net FILE`: one window, the CPU graph to `-o` and the network report to `--net`.
/// The server's requests are all in the network report, and its CPU in the graph.
#[test]
fn profile_with_net_writes_the_graph_and_the_network_of_one_window() {
    require_sampling!();
    let dir = TestDir::new("profile-net");
    let port = free_port().to_string();
    let (graph, report, summary) = (dir.join("cpu.folded"), dir.join("net.json"), dir.join("summary.json"));
    // No -d: the window lasts until the server is stopped after the load, however long its
    // start under the samplers takes on a busy machine.
    let eagle = ServerUnderEagle::start(
        [
            OsStr::new("profile"),
            OsStr::new("-o"),
            graph.as_os_str(),
            OsStr::new("--net"),
            report.as_os_str(),
            OsStr::new("--summary"),
            summary.as_os_str(),
        ],
        None,
        &["--port", &port, "--delay-ms", "5", "--error-every", "10"],
        &dir.join("ready"),
    );
    let client = load(&port, &["--requests", "100", "--rate", "50", "--connections", "2"]);
    eagle.stop();
    let run = eagle.wait();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "kubectl-eagle profile --net: {stderr}");
    let folded = std::fs::read_to_string(&graph).unwrap_or_else(|e| panic!("no graph ({e}): {stderr}"));
    // The server's stacks (it mostly waits: how many is not the point), sampled at the
    // profile's rate, not at the 1 Hz of `net` alone.
    assert!(folded.lines().any(|l| l.starts_with("python3 (")), "{folded}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["frequency_hz"], 99, "{summary}");
    let text = std::fs::read_to_string(&report).unwrap();
    let net: Value = serde_json::from_str(&text).unwrap();
    let routes = net["http"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{text}");
    assert_eq!(routes[0]["requests"], client["requests"], "{text}");
    assert_eq!(routes[0]["errors"], client["errors"], "{text}");
    assert!(stderr.contains(&format!("wrote {}", report.display())), "{stderr}");
}

/// A server whose socket I/O goes through iovecs (`recvmsg`/`sendmsg`, as servers built on
/// scattered buffers do): its requests are read from the first iovec of each call, as those of
/// `recv`/`send` are from their buffer.
#[test]
fn http_over_recvmsg_and_sendmsg_is_read_from_the_iovecs() {
    require_sampling!();
    let (_, client, net, text, _) = net_under_load(
        "net-iovec",
        &[],
        &["--io", "vectored", "--delay-ms", "2", "--error-every", "5"],
        &["--requests", "50", "--rate", "50", "--connections", "2"],
    );
    let routes = net["http"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "one route, /api/items/{{n}}: {text}");
    assert_eq!(routes[0]["path"], "/api/items/{n}");
    assert_eq!(routes[0]["requests"], client["requests"], "{text}");
    assert_eq!(routes[0]["errors"], client["errors"], "{text}");
}

/// `kubectl-eagle net --format json` (and `extra`) over the HTTP server of images/http (and
/// `server`'s arguments) on a free loopback port, while the load generator (`load_args`) runs
/// against it; the run must exit 0. Returns the port, what the client measured itself, the
/// report and its text, and the CLI's stderr. No -d: the window lasts until the server is
/// stopped after the load, however long the start under the network program takes on a busy
/// machine.
fn net_under_load(
    name: &str,
    extra: &[&str],
    server: &[&str],
    load_args: &[&str],
) -> (String, Value, Value, String, String) {
    let dir = TestDir::new(name);
    let port = free_port().to_string();
    let report = dir.join("net.json");
    let args = [&["net", "--format", "json", "-o", report.to_str().unwrap()][..], extra].concat();
    let eagle = ServerUnderEagle::start(args, None, &[&["--port", &port][..], server].concat(), &dir.join("ready"));
    let client = load(&port, load_args);
    eagle.stop();
    let run = eagle.wait();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(0), "kubectl-eagle net: {stderr}");
    let text = std::fs::read_to_string(&report).expect("the report is written");
    let net: Value = serde_json::from_str(&text).expect("the report is JSON");
    (port, client, net, text, stderr)
}

/// Runs the load generator against `port` on loopback and returns what it measured itself.
fn load(port: &str, args: &[&str]) -> Value {
    http_server::load(None, &[&["--port", port][..], args].concat())
}
