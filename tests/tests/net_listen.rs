//! Listen-queue overflows (issue #19), in local mode: a listener of `images/http/backlog.py`
//! with a backlog of 1 that never accepts, in a network namespace of the test's own, and 20
//! connections to it. The namespace's own counters (`ListenOverflows`, `ListenDrops` of its
//! `/proc/net/netstat`, read before the run and after it; nothing else uses that namespace)
//! are the ground truth: the network view may miss what happened before it saw the namespace
//! (the command enters it after it started), never count more.

use std::process::{Command, Stdio};

use eagle_tests::netns::NetNamespace;
use eagle_tests::{kubectl_eagle, repo_root, require_sampling, skip_unless, TestDir};
use serde_json::Value;

/// `TcpExt: ListenOverflows` and `ListenDrops` of `ns`.
fn listen_counters(ns: &NetNamespace) -> (u64, u64) {
    (ns.counter("netstat", "TcpExt:", "ListenOverflows"), ns.counter("netstat", "TcpExt:", "ListenDrops"))
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[test]
fn listen_overflows_are_those_the_namespace_counted() {
    require_sampling!();
    skip_unless!(have("ip") && have("unshare") && have("nsenter"), "needs iproute2 and util-linux");
    let dir = TestDir::new("net-listen");
    let ns = NetNamespace::new();
    ns.run("ip", &["link", "set", "lo", "up"]);
    let report = dir.join("net.json");
    let (overflows_before, drops_before) = listen_counters(&ns);
    // No -d: the window lasts until the listener exits. It connects after 2 s, by when the
    // agent has seen it enter the namespace (it looks every second).
    let run = Command::new(kubectl_eagle())
        .args(["net", "--format", "json", "-o"])
        .arg(&report)
        .args(["--", "nsenter", "-t", &ns.pid(), "-n", "python3"])
        .arg(repo_root().join("images/http/backlog.py"))
        .args(["--backlog", "1", "--clients", "20", "--start-after", "2", "--seconds", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("kubectl-eagle runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "kubectl-eagle net: {stderr}");
    let (overflows_after, drops_after) = listen_counters(&ns);
    let (kernel_overflows, kernel_drops) = (overflows_after - overflows_before, drops_after - drops_before);
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {stderr}"));
    let net: Value = serde_json::from_str(&text).unwrap();

    let queues = net["listen_queues"].as_array().unwrap_or_else(|| panic!("no listen_queues: {text}"));
    // The host's namespace, which the command started in, is not reported: it left it.
    assert_eq!(queues.len(), 1, "one namespace, the test's: {text}");
    let queue = &queues[0];
    assert_eq!(queue["host_network"], false, "{text}");
    assert_eq!(queue["process"], "python3", "{text}");
    let (seen_overflows, seen_drops) = (queue["overflows"].as_u64().unwrap(), queue["drops"].as_u64().unwrap());
    eprintln!(
        "overflows: namespace {kernel_overflows}, network view {seen_overflows}; drops: namespace {kernel_drops}, network view {seen_drops}"
    );
    // 18 clients found the queue full, each at least once (their SYNs are sent again after
    // 1 s and 3 s, within the 4 s).
    assert!(kernel_overflows >= 18, "the listener overflowed {kernel_overflows} times: {text}");
    assert!(
        seen_overflows > 0 && seen_overflows <= kernel_overflows,
        "overflows: {seen_overflows} of {kernel_overflows}"
    );
    assert!(seen_drops >= seen_overflows && seen_drops <= kernel_drops, "drops: {seen_drops} of {kernel_drops}");
    // Per listener: the one listener of the namespace, closed when the process exited (the
    // window's end), counted every drop the namespace counted in the same window: its
    // `sk_drops` read when it closed, less its count when the namespace was first seen. Under
    // load a handshake's last ACK can meet the full queue too, which `sk_drops` counts twice
    // (`tcp_listendrop` and the discard of the segment) and ListenDrops once: at least as many,
    // at most twice the kernel's.
    let listeners = queue["listeners"].as_array().unwrap_or_else(|| panic!("no listeners: {text}"));
    assert_eq!(listeners.len(), 1, "{text}");
    let listener = &listeners[0];
    assert_eq!(
        (listener["address"].as_str(), listener["port"].as_u64()),
        (Some("127.0.0.1:8080"), Some(8080)),
        "{text}"
    );
    assert_eq!(listener["pid"], queue["pid"], "{text}");
    assert_eq!(listener["closed"], true, "{text}");
    let listener_drops = listener["drops"].as_u64().unwrap_or_else(|| panic!("no drops: {text}"));
    assert!(
        listener_drops >= seen_drops && listener_drops <= 2 * kernel_drops,
        "listener drops: {listener_drops}, the namespace's {seen_drops} (kernel: {kernel_drops}): {text}"
    );
    // No drop event of a connection's socket: the SYNs were dropped before any socket was theirs.
    let drops: u64 = net["peers"].as_array().unwrap().iter().map(|p| p["drops"].as_u64().unwrap()).sum();
    assert_eq!(drops, 0, "{text}");
}
