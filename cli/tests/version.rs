//! `kubectl eagle version` against the API double: the client's version, the agent image of
//! this version, and the server's version read from `GET /version`; `--client` asks nothing.

use eagle_tests::apiserver::{ApiServer, Scenario};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn version_says_what_runs_where() {
    let server = ApiServer::start(Vec::new(), Scenario::new());
    let run = server.run_for("version", &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "Client Version: {VERSION}\nAgent Image: ghcr.io/kube-eagle/eagle-agent:{VERSION}\n\
             Server Version: v1.20.2 (linux/amd64)\n"
        )
    );
    assert!(server.requests().iter().any(|r| r.method == "GET" && r.path == "/version"));

    let before = server.requests().len();
    let client = server.run_for("version", &["--client"]);
    assert_eq!(client.code, Some(0), "{}", client.stderr);
    assert_eq!(client.stdout.lines().count(), 2, "{}", client.stdout);
    assert_eq!(server.requests().len(), before, "--client does not ask the cluster");
}

#[test]
fn an_unreachable_cluster_still_gets_the_client_lines_and_exit_9() {
    let server = ApiServer::start(Vec::new(), Scenario::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let stale = dir.path().join("kubeconfig");
    std::fs::copy(server.kubeconfig(), &stale).expect("copy the kubeconfig");
    drop(server);
    let out = std::process::Command::new(eagle_tests::kubectl_eagle())
        .args(["version", "--kubeconfig"])
        .arg(&stale)
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("run kubectl-eagle");
    assert_eq!(out.status.code(), Some(9));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&format!("Client Version: {VERSION}\n")), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("--client"), "{stderr}");
}
