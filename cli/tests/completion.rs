//! Completion as users get it: the bash script `completion bash` prints, sourced into a real
//! bash and asked as bash asks it (COMP_WORDS, COMP_CWORD, the function `complete -F` names),
//! and kubectl's plugin hook, `cli/completion/kubectl_complete-eagle`, answering from the API
//! double for names in the cluster.

use std::path::Path;
use std::process::Command;

use eagle_tests::apiserver::{match_labels, namespace, pod, workload, ApiServer, Scenario};
use eagle_tests::{kubectl_eagle, repo_root};
use serde_json::json;

/// What bash's completion offers for `words` (the last one is under the cursor).
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = Command::new(kubectl_eagle()).args(["completion", "bash"]).output().expect("run kubectl-eagle");
    assert!(script.status.success(), "{}", String::from_utf8_lossy(&script.stderr));
    let script = String::from_utf8(script.stdout).expect("utf-8 script");
    let function = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("complete -F ")?.split_whitespace().next())
        .expect("the script registers a function with complete -F")
        .to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubectl-eagle.bash");
    std::fs::write(&path, &script).expect("write the script");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    // As bash calls a completion function: COMP_WORDS, COMP_CWORD, and $1 $2 $3 = command,
    // word being completed, word before it.
    let probe = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         {function} '{}' '{}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path.display(),
        quoted.join(" "),
        words[0],
        words[cword],
    );
    let out = Command::new("bash").arg("--norc").arg("-c").arg(&probe).output().expect("run bash");
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    assert_eq!(bash_completes(&["kubectl-eagle", "pro"]), ["profile"]);
    assert_eq!(bash_completes(&["kubectl-eagle", "list", "--out"]), ["--output"]);
    assert_eq!(bash_completes(&["kubectl-eagle", "list", "--output", ""]), ["table", "json"]);
    assert_eq!(bash_completes(&["kubectl-eagle", "completion", "f"]), ["fish"]);
    let all = bash_completes(&["kubectl-eagle", ""]);
    assert!(all.contains(&"version".to_owned()) || all.contains(&"doctor".to_owned()), "{all:?}");
    assert!(!all.iter().any(|w| w == "__complete"), "the protocol command stays hidden: {all:?}");
}

#[test]
fn zsh_and_fish_scripts_name_the_plugin() {
    for shell in ["zsh", "fish"] {
        let out = Command::new(kubectl_eagle()).args(["completion", shell]).output().expect("run kubectl-eagle");
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("kubectl-eagle") && script.contains("profile"), "{shell}: {script}");
    }
}

/// `kubectl_complete-eagle WORDS`, as kubectl runs it: kubectl-eagle found on the PATH.
fn plugin_completes(words: &[&str]) -> String {
    let hook = repo_root().join("cli/completion/kubectl_complete-eagle");
    let bin_dir = kubectl_eagle().parent().expect("a directory").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let out = Command::new(&hook)
        .args(words)
        .env("PATH", path)
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("KUBECONFIG")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("run kubectl_complete-eagle");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "a completion prints nothing on stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_kubectl_hook_speaks_cobras_protocol() {
    assert!(Path::new(&repo_root().join("cli/completion/kubectl_complete-eagle")).is_file());
    let answer = plugin_completes(&["pro"]);
    assert!(answer.starts_with("profile\t"), "{answer}");
    assert!(answer.ends_with("\n:4\n"), "no file completion after a subcommand: {answer}");
    assert_eq!(plugin_completes(&["profile", "stat"]), "statefulset/\n:6\n", "kind, then no space");
    assert_eq!(plugin_completes(&["fetch", "--group-by", "w"]).lines().next(), Some("workload"));
}

#[test]
fn the_kubectl_hook_completes_names_and_runs_from_the_cluster() {
    let mut run_job = workload("Job", "kube-eagle", "eagle-9e2017d3-0", match_labels(&[("x", "y")]), None);
    run_job["metadata"]["labels"] =
        json!({"app.kubernetes.io/managed-by": "kube-eagle", "kube-eagle.io/run": "9e2017d3"});
    let mut other_job = workload("Job", "kube-eagle", "eagle-1f00aa00-0", match_labels(&[("x", "y")]), None);
    other_job["metadata"]["labels"] =
        json!({"app.kubernetes.io/managed-by": "kube-eagle", "kube-eagle.io/run": "1f00aa00"});
    let server = ApiServer::start(
        vec![
            namespace("shop"),
            namespace("kube-eagle"),
            workload("Deployment", "shop", "api", match_labels(&[("app", "api")]), None),
            workload("Deployment", "shop", "auth", match_labels(&[("app", "auth")]), None),
            workload("Deployment", "shop", "web", match_labels(&[("app", "web")]), None),
            pod("shop", "api-1").on("node-a").running("api").build(),
            run_job,
            other_job,
        ],
        Scenario::new(),
    );
    let kubeconfig = server.kubeconfig().to_str().expect("utf-8 path");
    assert_eq!(
        plugin_completes(&["profile", "--kubeconfig", kubeconfig, "-n", "shop", "deployment/a"]),
        "deployment/api\ndeployment/auth\n:4\n"
    );
    assert_eq!(
        plugin_completes(&["profile", "--kubeconfig", kubeconfig, "-n", "shop", "deploy/w"]),
        "deploy/web\n:4\n",
        "the kind as the user spelled it"
    );
    assert_eq!(plugin_completes(&["fetch", "--kubeconfig", kubeconfig, ""]), "1f00aa00\n9e2017d3\n:4\n");
    assert_eq!(plugin_completes(&["clean", &format!("--kubeconfig={kubeconfig}"), "9"]), "9e2017d3\n:4\n");
    // Unreachable: no candidates, no error, still the directive.
    let dir = tempfile::tempdir().expect("temp dir");
    let stale = dir.path().join("kubeconfig");
    std::fs::copy(server.kubeconfig(), &stale).expect("copy the kubeconfig");
    drop(server);
    assert_eq!(plugin_completes(&["fetch", "--kubeconfig", stale.to_str().expect("utf-8"), ""]), ":4\n");
}
