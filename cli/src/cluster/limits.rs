//! What `init` puts around the locked namespace beside RBAC, so that what the runner role
//! grants has limits on the server, not only in the CLI:
//!
//! - a **ResourceQuota** on pods (the node count, or `--max-pods`): a bug or a loop in a
//!   client cannot start a storm of privileged pods;
//! - a **NetworkPolicy** denying all ingress and egress of every pod there: the agents need no
//!   network (results go through their logs; the kubelet, not the pod, pulls the image);
//! - a **ValidatingAdmissionPolicy** and its binding (Kubernetes 1.30+, or 1.28-1.29 with the
//!   v1beta1 API enabled) that admits pods in the locked namespace only when they are the agent
//!   as the CLI plans it: the pinned image, its own entrypoint, its own argument grammar
//!   (containers by id, never `pid:`), no hooks, probes or environment of its own, a read-only
//!   root, no API token, no host network or IPC, only in-memory volumes. It matches pods, not Jobs: every way to make a pod there (a Job
//!   written by hand, a Deployment) ends in a pod create, which the Job controller reports as a
//!   `FailedCreate` event that a run prints;
//! - a second ValidatingAdmissionPolicy, on Jobs there, that admits one only when the user who
//!   creates it may list pods in every namespace its agent declares (`--namespace=NS`, which the
//!   pod policy's grammar requires of a run): CEL's `authorizer` asks about the requesting user,
//!   who for a pod is the Job controller, so the check is on the Job. A container id names no
//!   namespace the API server could check: the agent holds its targets to the declared
//!   namespaces on the node, by the kubelet's record (`eagle-agent`'s `kubelet_record`).
//!
//! The objects are built as JSON (their API version is chosen at apply time: v1 or v1beta1),
//! and carry the labels `uninstall` finds them by.

use serde_json::{json, Value};

use super::annotations::{INSTANCE_LABEL, MANAGED_BY};
use super::plan::AGENT_CONTAINER;

/// Pods the quota allows when the node count cannot be read (`init --dry-run` without
/// `--max-pods`).
pub const FALLBACK_MAX_PODS: u32 = 100;

/// The agent's command line, as `eagle_proto::AgentArgs::to_args` writes it for a cluster run,
/// joined by spaces: containers by id only (no `pid:`, no `pod:`), the namespaces they run in
/// (at least one: the Job policy checks the user against each), then the window and rate, and
/// the optional flags in the order it writes them; or `--version` (doctor's probe). RE2 syntax, as
/// CEL's `matches` reads it. No argument may hold a space (the policy checks that too), so the
/// joined line splits back into the arguments the agent reads.
pub const AGENT_ARGS: &str = "^((--target container:[0-9a-f]{64} )+(--namespace=[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])? )+--duration-ms [0-9]{1,9} --frequency [0-9]{1,5}( --node [a-z0-9.-]{1,253})?( --runtime [a-z]{1,16})?( --python-native)?( --net( --no-stacks)?)?( --mode (off-cpu|wall))?( --min-block-us [0-9]{1,9})?|--version)$";

fn meta(name: &str, namespace: Option<&str>, instance: &str) -> Value {
    let mut meta = json!({
        "name": name,
        "labels": {MANAGED_BY.0: MANAGED_BY.1, INSTANCE_LABEL: instance}
    });
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    meta
}

/// `kube-eagle-agents` for the default locked namespace, `kube-eagle-NS-agents` for another:
/// cluster-scoped names of two installations keep apart.
pub fn policy_name(eagle_namespace: &str) -> String {
    if eagle_namespace == "kube-eagle" {
        "kube-eagle-agents".into()
    } else {
        format!("kube-eagle-{eagle_namespace}-agents")
    }
}

pub fn resource_quota(eagle_namespace: &str, max_pods: u32) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": meta("kube-eagle", Some(eagle_namespace), eagle_namespace),
        "spec": {"hard": {"pods": max_pods.to_string()}}
    })
}

pub fn network_policy(eagle_namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta("kube-eagle-deny-all", Some(eagle_namespace), eagle_namespace),
        // Every pod of the namespace, no rule: nothing in, nothing out.
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    })
}

/// CEL string literal of `text` (single quotes; the image reference has none to escape).
fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The policy; `api_version` is `admissionregistration.k8s.io/v1` or `.../v1beta1`.
pub fn admission_policy(eagle_namespace: &str, image: &str, api_version: &str) -> Value {
    let image = cel_string(image);
    let args = cel_string(AGENT_ARGS);
    let rule = |expression: String, message: &str| json!({"expression": expression, "message": message});
    json!({
        "apiVersion": api_version,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": meta(&policy_name(eagle_namespace), None, eagle_namespace),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["pods", "pods/ephemeralcontainers"]
                }]
            },
            "validations": [
                rule(format!("size(object.spec.containers) == 1 && object.spec.containers.all(c, c.name == '{AGENT_CONTAINER}' && c.image == {image})"),
                    &format!("in the locked namespace {eagle_namespace}, only the kube-eagle agent image may run (the image `kubectl eagle init` pinned), as the one container {AGENT_CONTAINER}")),
                rule("!has(object.spec.initContainers) && !has(object.spec.ephemeralContainers)".into(),
                    "no init or ephemeral containers beside the agent"),
                rule("object.spec.containers.all(c, !has(c.command))".into(),
                    "the agent runs its image's own entrypoint: no command"),
                rule(format!("object.spec.containers.all(c, has(c.args) && c.args.all(a, !a.contains(' ')) && c.args.join(' ').matches({args}))"),
                    "the agent's arguments must be those the CLI writes: containers by id, their namespaces, the window, the rate"),
                // A hook or an exec probe runs any binary of the host (through /proc/1/root) in
                // the privileged container; an environment variable such as LD_PRELOAD loads a
                // library from any container's filesystem into the agent.
                rule("object.spec.containers.all(c, !has(c.lifecycle) && !has(c.livenessProbe) && !has(c.readinessProbe) && !has(c.startupProbe))".into(),
                    "no lifecycle hooks or probes: they run commands in the privileged container"),
                rule("object.spec.containers.all(c, !has(c.envFrom) && (!has(c.env) || c.env.all(e, e.name == 'NODE_NAME' && has(e.valueFrom) && has(e.valueFrom.fieldRef) && e.valueFrom.fieldRef.fieldPath == 'spec.nodeName')))".into(),
                    "the agent's only environment variable is NODE_NAME, from spec.nodeName"),
                rule("object.spec.containers.all(c, has(c.securityContext) && has(c.securityContext.readOnlyRootFilesystem) && c.securityContext.readOnlyRootFilesystem == true)".into(),
                    "the agent's root filesystem must be read-only"),
                rule("object.spec.containers.all(c, !has(c.securityContext) || !has(c.securityContext.capabilities) || !has(c.securityContext.capabilities.add) || c.securityContext.capabilities.add.all(a, a in ['BPF', 'PERFMON', 'SYS_PTRACE', 'SYS_ADMIN']))".into(),
                    "only the capabilities the sampler needs: BPF, PERFMON, SYS_PTRACE, SYS_ADMIN"),
                rule("has(object.spec.automountServiceAccountToken) && object.spec.automountServiceAccountToken == false".into(),
                    "the agent gets no API credentials (automountServiceAccountToken: false)"),
                rule("(!has(object.spec.hostNetwork) || object.spec.hostNetwork == false) && (!has(object.spec.hostIPC) || object.spec.hostIPC == false)".into(),
                    "no host network or IPC namespace (the agent needs the host's PIDs only)"),
                rule("!has(object.spec.volumes) || object.spec.volumes.all(v, has(v.emptyDir))".into(),
                    "only in-memory scratch volumes: no hostPath, secrets or other mounts")
            ]
        }
    })
}

pub fn admission_binding(eagle_namespace: &str, api_version: &str) -> Value {
    binding(&policy_name(eagle_namespace), eagle_namespace, api_version)
}

/// The Job policy's name: the pod policy's with `-runs`.
pub fn run_policy_name(eagle_namespace: &str) -> String {
    format!("{}-runs", policy_name(eagle_namespace))
}

/// The policy on Jobs in the locked namespace: the user who creates (or changes) one must be
/// allowed to list pods in each namespace its agent declares. Kubernetes 1.28+ (`authorizer`);
/// doctor's probe declares none and is checked by the pod policy alone.
pub fn run_policy(eagle_namespace: &str, api_version: &str) -> Value {
    let prefix = eagle_proto::NAMESPACE_FLAG;
    json!({
        "apiVersion": api_version,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": meta(&run_policy_name(eagle_namespace), None, eagle_namespace),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": ["batch"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["jobs"]
                }]
            },
            "validations": [{
                "expression": format!(
                    "object.spec.template.spec.containers.all(c, !has(c.args) || c.args.all(a, !a.startsWith('{prefix}') || authorizer.group('').resource('pods').namespace(a.substring({})).check('list').allowed()))",
                    prefix.len()
                ),
                "message": "a profiling Job may declare (--namespace=NS) only namespaces whose pods its creator may list"
            }]
        }
    })
}

pub fn run_binding(eagle_namespace: &str, api_version: &str) -> Value {
    binding(&run_policy_name(eagle_namespace), eagle_namespace, api_version)
}

/// A binding of policy `name` to the locked namespace, denying what it refuses.
fn binding(name: &str, eagle_namespace: &str, api_version: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": meta(name, None, eagle_namespace),
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": eagle_namespace}}
            }
        }
    })
}

/// The policy's CEL run against recorded and planned pods.
#[cfg(test)]
#[path = "limits_cel_tests.rs"]
mod cel_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar admits what the CLI plans (a Job's args, and doctor's probe) and refuses a
    /// process of the node's own (`pid:1`), a host path, or flags the CLI never writes.
    #[test]
    fn agent_args_grammar() {
        let grammar = regex::Regex::new(AGENT_ARGS).unwrap();
        let id = "0123456789abcdef".repeat(4);
        let planned = eagle_proto::AgentArgs {
            targets: vec![format!("container:{id}"), format!("container:{}", "f".repeat(64))],
            namespaces: vec!["shop".into(), "kube-system".into()],
            duration_ms: 30_000,
            frequency_hz: 99,
            ..Default::default()
        };
        assert!(grammar.is_match(&planned.to_args().join(" ")), "{:?}", planned.to_args());
        let net = eagle_proto::AgentArgs { net: true, ..planned.clone() };
        assert!(grammar.is_match(&net.to_args().join(" ")), "{:?}", net.to_args());
        let net_only = eagle_proto::AgentArgs { net: true, stacks: false, ..planned.clone() };
        assert!(grammar.is_match(&net_only.to_args().join(" ")), "{:?}", net_only.to_args());
        assert!(grammar.is_match("--version"));
        for hostile in [
            "--target pid:1 --namespace=shop --duration-ms 1000 --frequency 99".to_owned(),
            format!("--target container:{id} --target pid:1 --namespace=shop --duration-ms 1000 --frequency 99"),
            format!("--target container:{id} --namespace=shop --duration-ms 1000 --frequency 99 --output /host/etc"),
            format!("--target container:{id};sh --namespace=shop --duration-ms 1000 --frequency 99"),
            "--namespace=shop --duration-ms 1000 --frequency 99".to_owned(),
            format!("--namespace=shop --target container:{id} --duration-ms 1000 --frequency 99"),
            // No namespace declared: the Job policy would have nothing to check the user against.
            format!("--target container:{id} --duration-ms 1000 --frequency 99"),
            format!("--target container:{id} --namespace=Shop --duration-ms 1000 --frequency 99"),
            format!("--target container:{id} --namespace=-shop --duration-ms 1000 --frequency 99"),
        ] {
            assert!(!grammar.is_match(&hostile), "{hostile}");
        }
    }

    #[test]
    fn objects_carry_the_labels_uninstall_finds() {
        for object in [
            resource_quota("eagle-ci", 3),
            network_policy("eagle-ci"),
            admission_policy("eagle-ci", "ghcr.io/kube-eagle/eagle-agent:0.1.0", "admissionregistration.k8s.io/v1"),
            admission_binding("eagle-ci", "admissionregistration.k8s.io/v1"),
            run_policy("eagle-ci", "admissionregistration.k8s.io/v1"),
            run_binding("eagle-ci", "admissionregistration.k8s.io/v1"),
        ] {
            assert_eq!(object["metadata"]["labels"][INSTANCE_LABEL], "eagle-ci", "{object}");
            assert_eq!(object["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
        }
        assert_eq!(policy_name("kube-eagle"), "kube-eagle-agents");
        assert_eq!(resource_quota("kube-eagle", 3)["spec"]["hard"]["pods"], "3");
    }
}
