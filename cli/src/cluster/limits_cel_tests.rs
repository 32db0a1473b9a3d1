//! The admission policy's CEL, run by a CEL interpreter (the `cel` crate) against the pods the
//! CLI plans and against hostile variants of them, since the lab's Kubernetes (1.20) has no
//! ValidatingAdmissionPolicy to run it.
//!
//! What this checks: every expression parses, uses only functions both the `cel` crate and
//! Kubernetes' CEL provide (the standard library, its macros `has`, `all`, and `matches`, and
//! `join` of the strings extension that Kubernetes enables), admits every pod the CLI can plan,
//! and refuses each hostile change for the reason its message gives; and the Job policy's
//! question to Kubernetes' `authorizer`, with the authorizer stood in for (see
//! [`authorizer_stub`]). What it cannot check:
//! Kubernetes type-checks the expressions against the Pod schema when the policy is created,
//! which no evaluator here does; the lab cannot run the policy either (exercised on 1.30+).

use std::sync::Arc;

use cel::common::types::{CelBool, CelString};
use cel::{Context, Env, Program};
use serde_json::{json, Value};

use super::{admission_binding, admission_policy, run_policy, AGENT_ARGS};
use crate::cluster::plan::{self, PlanOptions};

const IMAGE: &str = "ghcr.io/kube-eagle/eagle-agent:0.1.0";
const API: &str = "admissionregistration.k8s.io/v1";

/// The policy's validations, compiled as the API server compiles them.
struct Policy {
    env: Arc<Env>,
    rules: Vec<(String, Program)>,
}

impl Policy {
    fn new(policy: &Value) -> Policy {
        let mut env = Env::stdlib();
        // Kubernetes enables cel-go's strings extension (`join`, `split`...) in every CEL it runs.
        env.add_extension(cel::extensions::strings).unwrap();
        authorizer_stub(&mut env);
        let rules = policy["spec"]["validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| {
                let expression = rule["expression"].as_str().unwrap();
                let program = env.compile(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
                (rule["message"].as_str().unwrap().to_owned(), program)
            })
            .collect();
        Policy { env: Arc::new(env), rules }
    }

    /// The messages of the rules `pod` breaks, as the API server lists them in its refusal. An
    /// expression that fails to evaluate would refuse too (`failurePolicy: Fail`), but here it
    /// is a mistake in the policy: it panics.
    fn refusals(&self, pod: &Value) -> Vec<String> {
        self.refusals_by(pod, "system:serviceaccount:kube-system:job-controller:")
    }

    /// The same, for an object `user` creates: `user:NS,NS` may list pods in those namespaces
    /// ([`authorizer_stub`]).
    fn refusals_by(&self, pod: &Value, user: &str) -> Vec<String> {
        let mut context = Context::with_env(self.env.clone());
        context.add_variable("object", pod).unwrap();
        context.add_variable("authorizer", user).unwrap();
        self.rules
            .iter()
            .filter_map(|(message, program)| match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => None,
                Ok(cel::Value::Bool(false)) => Some(message.clone()),
                other => panic!("{message}: evaluated to {other:?} on {pod}"),
            })
            .collect()
    }
}

/// Kubernetes' `authorizer` (1.28+) stood in for, as far as the Job policy uses it: the
/// requesting user is a string `NAME:NS,NS` (who may list pods in those namespaces), and each
/// call of the chain `group(G).resource(R).namespace(N).check(V)` appends its argument, so that
/// `allowed()` sees the whole question. The chain's names and shape are the Kubernetes
/// library's (`k8s.io/apiserver/pkg/cel/library/authz.go`); a question other than listing core
/// pods in a namespace is refused.
fn authorizer_stub(env: &mut Env) {
    fn append(this: &CelString<'_>, part: &CelString<'_>) -> CelString<'static> {
        format!("{}|{}", &**this, &**part).into()
    }
    fn group(this: &CelString<'_>, group: &CelString<'_>) -> CelString<'static> {
        append(this, group)
    }
    fn resource(this: &CelString<'_>, resource: &CelString<'_>) -> CelString<'static> {
        append(this, resource)
    }
    fn namespace(this: &CelString<'_>, namespace: &CelString<'_>) -> CelString<'static> {
        append(this, namespace)
    }
    fn check(this: &CelString<'_>, verb: &CelString<'_>) -> CelString<'static> {
        append(this, verb)
    }
    fn allowed(this: &CelString<'_>) -> CelBool {
        let question: Vec<&str> = this.split('|').collect();
        let [user, "", "pods", namespace, "list"] = question[..] else { return false.into() };
        let may = user.split_once(':').map_or("", |(_, namespaces)| namespaces);
        may.split(',').any(|n| n == namespace).into()
    }
    cel::add_member_overload!(env, fn group: (CelString, CelString) -> CelString).unwrap();
    cel::add_member_overload!(env, fn resource: (CelString, CelString) -> CelString).unwrap();
    cel::add_member_overload!(env, fn namespace: (CelString, CelString) -> CelString).unwrap();
    cel::add_member_overload!(env, fn check: (CelString, CelString) -> CelString).unwrap();
    cel::add_member_overload!(env, fn allowed: (CelString) -> CelBool).unwrap();
}

fn policy() -> Policy {
    Policy::new(&admission_policy("kube-eagle", IMAGE, API))
}

/// The pod the Job controller creates from `job`, with the defaults the API server adds before
/// admission policies see it (the ServiceAccount plugin adds no token volume: the Job says
/// `automountServiceAccountToken: false`).
fn pod_of(job: &Value) -> Value {
    let template = &job["spec"]["template"];
    let mut spec = template["spec"].clone();
    for (field, default) in [
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
        ("priority", json!(0)),
    ] {
        spec.as_object_mut().unwrap().entry(field).or_insert(default);
    }
    for container in spec["containers"].as_array_mut().unwrap() {
        container["terminationMessagePath"] = json!("/dev/termination-log");
    }
    let mut labels = template["metadata"]["labels"].clone();
    labels["job-name"] = job["metadata"]["name"].clone();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", job["metadata"]["name"].as_str().unwrap()),
            "namespace": job["metadata"]["namespace"],
            "labels": labels,
            "annotations": template["metadata"]["annotations"],
        },
        "spec": spec
    })
}

fn recorded_pod() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cluster/testdata/job-node-a.json");
    pod_of(&serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
}

fn planned_pod(opts: &PlanOptions, container_ids: &[&str]) -> Value {
    pod_of(&serde_json::to_value(plan::job_for_node(opts, 0, "node-a", container_ids, &["shop", "web"])).unwrap())
}

#[test]
fn admits_the_recorded_job() {
    assert_eq!(policy().refusals(&recorded_pod()), Vec::<String>::new());
}

/// Every option of a cluster run the CLI can write, and doctor's probe, pass the policy: a
/// flag added to the agent without the grammar fails here, not on a user's cluster.
#[test]
fn admits_every_pod_the_cli_plans() {
    let policy = policy();
    let ids = ["0123456789abcdef".repeat(4), "fedcba9876543210".repeat(4)];
    let mut planned = 0;
    for capabilities_only in [false, true] {
        for runtime in std::iter::once(None).chain(eagle_proto::Runtime::ALL.map(Some)) {
            for mode in eagle_proto::ProfileMode::ALL {
                for (python_native, net, stacks) in [
                    (false, false, true),
                    (true, false, true),
                    (false, true, true),
                    (true, true, true),
                    (false, true, false),
                ] {
                    for (min_block_us, window_s, frequency_hz) in
                        [(eagle_proto::DEFAULT_MIN_BLOCK_US, 30, 99), (5_000, 1, 1), (1, 3_600, 4_999)]
                    {
                        let opts = PlanOptions {
                            capabilities_only,
                            runtime,
                            mode,
                            python_native,
                            net,
                            stacks,
                            min_block_us,
                            duration: std::time::Duration::from_secs(window_s),
                            frequency_hz,
                            ..plan::tests::options()
                        };
                        for targets in [&[ids[0].as_str()][..], &[ids[0].as_str(), ids[1].as_str()]] {
                            let pod = planned_pod(&opts, targets);
                            assert_eq!(policy.refusals(&pod), Vec::<String>::new(), "{pod}");
                            planned += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(planned, 2 * 7 * 3 * 5 * 3 * 2);
    let probe = super::super::doctor::probe_job(&plan::tests::options(), Some("node-a"), "0f0f0f0f");
    let probe = pod_of(&serde_json::to_value(probe).unwrap());
    assert_eq!(policy.refusals(&probe), Vec::<String>::new(), "{probe}");
}

/// One hostile change of the recorded pod each, and the rule that must refuse it.
#[test]
fn refuses_each_hostile_change_for_its_reason() {
    let id = "0123456789abcdef".repeat(4);
    type Change = Box<dyn Fn(&mut Value)>;
    let container =
        |change: fn(&mut Value)| -> Change { Box::new(move |pod| change(&mut pod["spec"]["containers"][0])) };
    let args =
        |args: Vec<String>| -> Change { Box::new(move |pod| pod["spec"]["containers"][0]["args"] = json!(args)) };
    let planned_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["--target", &format!("container:{id}"), "--namespace=shop", "--duration-ms", "30000", "--frequency", "99"]
                .map(String::from)
                .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "another image",
            container(|c| c["image"] = json!("docker.io/library/busybox:1.36")),
            "only the kube-eagle agent image",
        ),
        (
            "the agent's image by another tag",
            container(|c| c["image"] = json!("ghcr.io/kube-eagle/eagle-agent:latest")),
            "only the kube-eagle agent image",
        ),
        (
            "a second container",
            Box::new(|pod| {
                let mut sidecar = pod["spec"]["containers"][0].clone();
                sidecar["name"] = json!("sidecar");
                pod["spec"]["containers"].as_array_mut().unwrap().push(sidecar);
            }),
            "only the kube-eagle agent image",
        ),
        (
            "an init container",
            Box::new(|pod| pod["spec"]["initContainers"] = json!([{"name": "init", "image": IMAGE}])),
            "no init or ephemeral",
        ),
        (
            "an ephemeral container (pods/ephemeralcontainers)",
            Box::new(|pod| {
                pod["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox", "command": ["sh"]}])
            }),
            "no init or ephemeral",
        ),
        ("a command", container(|c| c["command"] = json!(["/proc/1/root/bin/sh", "-c", "id"])), "no command"),
        (
            "--target pid:1",
            args(vec![
                "--target".into(),
                "pid:1".into(),
                "--duration-ms".into(),
                "1000".into(),
                "--frequency".into(),
                "99".into(),
            ]),
            "the agent's arguments",
        ),
        (
            "pid:1 beside a container",
            args([vec!["--target".to_owned(), "pid:1".to_owned()], planned_args(&[])].concat()),
            "the agent's arguments",
        ),
        (
            "a pod's uid",
            args(vec![
                "--target".into(),
                "pod:0f0f".into(),
                "--duration-ms".into(),
                "1000".into(),
                "--frequency".into(),
                "99".into(),
            ]),
            "the agent's arguments",
        ),
        ("a flag the CLI never writes", args(planned_args(&["--output", "/host/etc"])), "the agent's arguments"),
        (
            "no namespace declared",
            args(planned_args(&[]).into_iter().filter(|a| !a.starts_with("--namespace=")).collect()),
            "the agent's arguments",
        ),
        (
            "a short container id",
            args(vec![
                "--target".into(),
                "container:abc123".into(),
                "--duration-ms".into(),
                "1000".into(),
                "--frequency".into(),
                "99".into(),
            ]),
            "the agent's arguments",
        ),
        (
            "no arguments",
            container(|c| c.as_object_mut().unwrap().remove("args").map(drop).unwrap()),
            "the agent's arguments",
        ),
        (
            // Joined by spaces, this reads as the grammar; the agent would read one target.
            "an argument holding spaces",
            args(vec!["--target".into(), format!("container:{id} --duration-ms 1000 --frequency 99")]),
            "the agent's arguments",
        ),
        (
            "a postStart hook",
            container(|c| {
                c["lifecycle"] = json!({"postStart": {"exec": {"command": ["/proc/1/root/bin/sh", "-c", "id"]}}})
            }),
            "no lifecycle hooks or probes",
        ),
        (
            "an exec probe",
            container(|c| c["livenessProbe"] = json!({"exec": {"command": ["/proc/1/root/bin/sh"]}})),
            "no lifecycle hooks or probes",
        ),
        (
            "LD_PRELOAD",
            container(|c| {
                c["env"].as_array_mut().unwrap().push(json!({"name": "LD_PRELOAD", "value": "/proc/4242/root/evil.so"}))
            }),
            "only environment variable is NODE_NAME",
        ),
        (
            "NODE_NAME as a literal",
            container(|c| c["env"] = json!([{"name": "NODE_NAME", "value": "node-b"}])),
            "only environment variable is NODE_NAME",
        ),
        (
            "environment from a secret",
            container(|c| c["envFrom"] = json!([{"secretRef": {"name": "db"}}])),
            "only environment variable is NODE_NAME",
        ),
        (
            "a writable root",
            container(|c| c["securityContext"]["readOnlyRootFilesystem"] = json!(false)),
            "root filesystem must be read-only",
        ),
        (
            "no security context",
            container(|c| c.as_object_mut().unwrap().remove("securityContext").map(drop).unwrap()),
            "root filesystem must be read-only",
        ),
        (
            "NET_ADMIN",
            container(|c| c["securityContext"]["capabilities"] = json!({"add": ["BPF", "NET_ADMIN"]})),
            "only the capabilities the sampler needs",
        ),
        (
            "a service-account token",
            Box::new(|pod| pod["spec"]["automountServiceAccountToken"] = json!(true)),
            "no API credentials",
        ),
        (
            "the token by default",
            Box::new(|pod| drop(pod["spec"].as_object_mut().unwrap().remove("automountServiceAccountToken"))),
            "no API credentials",
        ),
        ("the host's network", Box::new(|pod| pod["spec"]["hostNetwork"] = json!(true)), "no host network or IPC"),
        ("the host's IPC", Box::new(|pod| pod["spec"]["hostIPC"] = json!(true)), "no host network or IPC"),
        (
            "a hostPath volume",
            Box::new(|pod| {
                pod["spec"]["volumes"].as_array_mut().unwrap().push(json!({"name": "host", "hostPath": {"path": "/"}}))
            }),
            "only in-memory scratch volumes",
        ),
        (
            "a secret volume",
            Box::new(|pod| {
                pod["spec"]["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "s", "secret": {"secretName": "db"}}))
            }),
            "only in-memory scratch volumes",
        ),
    ];
    let policy = policy();
    for (what, change, reason) in cases {
        let mut pod = recorded_pod();
        change(&mut pod);
        let refusals = policy.refusals(&pod);
        assert!(refusals.iter().any(|r| r.contains(reason)), "{what}: refused for {refusals:?}, not `{reason}`");
    }
}

/// The grammar as the policy writes it into CEL (quoted) is the grammar the tests above read.
#[test]
fn the_policy_carries_the_grammar_and_the_image() {
    let policy = admission_policy("kube-eagle", IMAGE, API);
    let expressions = policy["spec"]["validations"].to_string();
    assert!(expressions.contains(&AGENT_ARGS.replace('\\', "\\\\")));
    assert!(expressions.contains(&format!("'{IMAGE}'")));
    let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(rules["resources"], json!(["pods", "pods/ephemeralcontainers"]));
    assert_eq!(rules["operations"], json!(["CREATE", "UPDATE"]));
}

/// The binding selects the locked namespace by the name label the API server sets on every
/// namespace (1.21+), and no other: other namespaces keep their own Pod Security level.
#[test]
fn the_binding_selects_the_locked_namespace_only() {
    let binding = admission_binding("eagle-ci", API);
    let selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"].as_object().unwrap();
    let selects = |namespace: &str| {
        let labels = json!({"kubernetes.io/metadata.name": namespace});
        selector.iter().all(|(key, value)| &labels[key] == value)
    };
    assert!(selects("eagle-ci"));
    assert!(!selects("kube-eagle") && !selects("default") && !selects("kube-system"));
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
}

/// A profiling Job as the CLI plans it, declaring `namespaces`.
fn planned_job(namespaces: &[&str]) -> Value {
    let id = "0123456789abcdef".repeat(4);
    serde_json::to_value(plan::job_for_node(&plan::tests::options(), 0, "node-a", &[&id], namespaces)).unwrap()
}

/// The Job policy asks the authorizer about the user who creates the Job, for every namespace
/// its agent declares; the agent then holds its targets to those namespaces on the node.
#[test]
fn a_job_is_admitted_only_for_a_user_who_may_list_pods_in_each_namespace_it_declares() {
    let policy = Policy::new(&run_policy("kube-eagle", API));
    let shop = planned_job(&["shop"]);
    assert_eq!(policy.refusals_by(&shop, "alice:shop"), Vec::<String>::new());
    assert_eq!(policy.refusals_by(&shop, "alice:shop,web"), Vec::<String>::new());
    let refused = policy.refusals_by(&shop, "bob:web");
    assert!(
        refused.len() == 1 && refused[0].contains("only namespaces whose pods its creator may list"),
        "{refused:?}"
    );
    assert_eq!(policy.refusals_by(&shop, "nobody:").len(), 1);
    let two = planned_job(&["shop", "kube-system"]);
    assert_eq!(policy.refusals_by(&two, "admin:kube-system,shop"), Vec::<String>::new());
    assert_eq!(policy.refusals_by(&two, "alice:shop").len(), 1, "one namespace the user may not read is enough");
    // A declaration in a second container (which the pod policy refuses too) is asked about.
    let mut hidden = planned_job(&["shop"]);
    let mut second = hidden["spec"]["template"]["spec"]["containers"][0].clone();
    second["args"] = json!(["--namespace=kube-system"]);
    hidden["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().push(second);
    assert_eq!(policy.refusals_by(&hidden, "alice:shop").len(), 1);
    // doctor's probe declares nothing: the pod policy's grammar admits it as `--version` only.
    let probe =
        serde_json::to_value(super::super::doctor::probe_job(&plan::tests::options(), None, "0f0f0f0f")).unwrap();
    assert_eq!(policy.refusals_by(&probe, "nobody:"), Vec::<String>::new());
}

/// The Job policy is bound like the pod policy: the locked namespace only, denying.
#[test]
fn the_run_policy_matches_jobs_and_is_bound_to_the_locked_namespace() {
    let policy = run_policy("eagle-ci", API);
    let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!((&rules["apiGroups"], &rules["resources"]), (&json!(["batch"]), &json!(["jobs"])));
    assert_eq!(rules["operations"], json!(["CREATE", "UPDATE"]));
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let binding = super::run_binding("eagle-ci", API);
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["matchResources"], admission_binding("eagle-ci", API)["spec"]["matchResources"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
}
