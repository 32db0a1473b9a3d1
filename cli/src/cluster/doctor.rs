//! The checks of `kubectl eagle doctor`: can this user profile in this cluster, and if not, what is missing.
//!
//! 1. the API server answers (its version);
//! 2. every permission the plugin uses, asked with a SelfSubjectAccessReview each (allowed to
//!    every authenticated user): the reads in the target namespace, the Job and pod verbs in the
//!    locked namespace;
//! 3. the locked namespace exists and carries its labels;
//! 4. a server-side dry run of a profiling Job: admission accepts it, and the API server keeps
//!    its `ttlSecondsAfterFinished` (Kubernetes 1.20 drops it unless the TTLAfterFinished feature
//!    gate is on, and finished Jobs then stay until `clean`);
//! 5. the profiler image: one short Job with the exact pod of a profiling run (privileged,
//!    hostPID) that only runs `eagle-agent --version`. Its pod shows
//!    whether admission lets the privileged pod in, whether a node can pull the image and mount
//!    what the agent needs, and whether the agent speaks this CLI's version. Deleted after.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::core::Expression;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::Serialize;

use super::annotations::{MANAGED_BY, PROBE_LABEL};
use super::api::{connect, new_run_id, Connection};
use super::permissions::{allowed, Scope, PERMISSIONS};
use super::plan::{self, Image, PlanOptions, AGENT_CONTAINER};
use super::pod_state::{Phase, PodState};
use crate::duration::human;
use crate::error::CliError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
    Warning,
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// `permission`, `namespace`, `job`, `image`, `server`.
    pub area: &'static str,
    pub check: String,
    pub status: Status,
    pub detail: String,
}

impl Check {
    fn new(area: &'static str, check: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Check { area, check: check.into(), status, detail: detail.into() }
    }
}

fn qualified(resource: &str, group: &str, sub: Option<&str>) -> String {
    let r = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_owned(),
    };
    if group.is_empty() {
        r
    } else {
        format!("{r}.{group}")
    }
}

/// What `doctor` checks: the user's permissions in the target and locked namespaces, and the
/// image as `profile` would run it.
#[derive(Debug)]
pub struct DoctorPlan {
    pub conn: Connection,
    pub eagle_namespace: String,
    /// The targets' namespace; `None` is the context's.
    pub namespace: Option<String>,
    pub image: Image,
    /// Probe the image on this node; `None`: wherever the scheduler puts it.
    pub node: Option<String>,
    pub capabilities: bool,
    pub skip_image: bool,
    pub timeout: Duration,
}

/// Every check, in the order of the module's list.
pub async fn run_checks(args: &DoctorPlan) -> Result<Vec<Check>, CliError> {
    let (client, default_ns) = connect(&args.conn).await?;
    let target_ns = args.namespace.clone().unwrap_or(default_ns);
    let locked = args.eagle_namespace.clone();
    let mut checks = Vec::new();

    // 1. The server.
    let version = client.apiserver_version().await.map_err(|e| {
        CliError::Cluster(format!(
            "cannot reach the API server ({e}): is the cluster up, and is the kubeconfig's server address right?"
        ))
    })?;
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
    checks.push(Check::new(
        "server",
        "API server",
        Status::Ok,
        format!("Kubernetes {} (target namespace {target_ns}, profiling namespace {locked})", version.git_version),
    ));

    // Whose permissions the rest are: the impersonated user's with --as.
    checks.push(match super::identity::whoami(&client, &args.conn).await {
        Some(user) => Check::new("server", "user", Status::Ok, format!("{user}: the checks below are for this user")),
        None => Check::new(
            "server",
            "user",
            Status::Warning,
            "the API server does not say who you are, nor does the kubeconfig: runs are recorded without a user",
        ),
    });

    // 2. Permissions, all asked at once.
    let answers = futures::future::join_all(
        PERMISSIONS
            .iter()
            .map(|perm| allowed(&client, perm, if perm.scope == Scope::Targets { &target_ns } else { &locked })),
    )
    .await;
    let mut can = BTreeMap::new();
    for (perm, answer) in PERMISSIONS.iter().zip(answers) {
        let ns = if perm.scope == Scope::Targets { &target_ns } else { &locked };
        let what = if perm.resource == "namespaces" {
            format!("{} namespace {ns}", perm.verb)
        } else {
            format!("{} {} in {ns}", perm.verb, qualified(perm.resource, perm.group, perm.subresource))
        };
        let ok = match answer {
            Ok((true, _)) => {
                checks.push(Check::new("permission", what, Status::Ok, perm.why));
                true
            }
            Ok((false, why)) => {
                // Reading the namespace is a convenience: runs work without it.
                let status = if perm.resource == "namespaces" { Status::Warning } else { Status::Missing };
                let mut detail = format!("{}: not allowed", perm.why);
                if !why.is_empty() {
                    detail.push_str(&format!(" ({why})"));
                }
                detail.push_str("; `kubectl eagle init` prints the RBAC an admin can grant");
                checks.push(Check::new("permission", what, status, detail));
                false
            }
            Err(e) => {
                checks.push(Check::new(
                    "permission",
                    what,
                    Status::Warning,
                    format!("cannot ask the API server (SelfSubjectAccessReview: {e})"),
                ));
                false
            }
        };
        can.insert((perm.verb, perm.resource, perm.subresource, perm.scope != Scope::Targets), ok);
    }
    let may = |verb, resource| can.get(&(verb, resource, None, true)).copied().unwrap_or(false);

    // 3. The locked namespace.
    let ns_api: Api<Namespace> = Api::all(client.clone());
    match ns_api.get_opt(&locked).await {
        Ok(Some(ns)) => {
            let labels = ns.metadata.labels.unwrap_or_default();
            let want = plan::locked_namespace(&locked).metadata.labels.unwrap_or_default();
            let lacking: Vec<String> =
                want.iter().filter(|(k, v)| labels.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
            if lacking.is_empty() {
                checks.push(Check::new("namespace", &locked, Status::Ok, "exists, labelled"));
            } else {
                let psa = lacking.iter().any(|l| l.starts_with("pod-security"));
                // Pod Security admission exists from 1.23: before, the label is only for later.
                let status = if psa && minor >= 23 { Status::Missing } else { Status::Warning };
                checks.push(Check::new(
                    "namespace",
                    &locked,
                    status,
                    format!("exists but lacks {}; `kubectl eagle init` adds them", lacking.join(", ")),
                ));
            }
        }
        Ok(None) => checks.push(Check::new(
            "namespace",
            &locked,
            Status::Missing,
            "does not exist: have an admin run `kubectl eagle init` (or pass --eagle-namespace)",
        )),
        Err(kube::Error::Api(s)) if s.code == 403 => checks.push(Check::new(
            "namespace",
            &locked,
            Status::Warning,
            "cannot read it (no `get` on the namespace): its existence and labels are unchecked",
        )),
        Err(e) => checks.push(Check::new("namespace", &locked, Status::Warning, format!("cannot read it: {e}"))),
    }

    // 4. A dry-run Job, then 5. the image.
    let image = args.image.reference.clone();
    if !may("create", "jobs") {
        let why = "not allowed to create Jobs in the profiling namespace";
        checks.push(Check::new("job", "dry run of a profiling Job", Status::Skipped, why));
        checks.push(Check::new("image", &image, Status::Skipped, why));
        return Ok(checks);
    }
    let id = new_run_id();
    let opts = PlanOptions {
        run_id: id.clone(),
        target: "kubectl eagle doctor".into(),
        namespace: locked.clone(),
        image: args.image.clone(),
        duration: Duration::from_secs(1),
        frequency_hz: 99,
        capabilities_only: args.capabilities,
        ttl_after_finished: 60,
        runtime: None,
        python_native: false,
        mode: eagle_proto::ProfileMode::Cpu,
        min_block_us: eagle_proto::DEFAULT_MIN_BLOCK_US,
        net: false,
        stacks: true,
    };
    let mut job = probe_job(&opts, args.node.as_deref(), &id);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &locked);
    match jobs.create(&PostParams { dry_run: true, ..Default::default() }, &job).await {
        Ok(accepted) => {
            let ttl = accepted.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
            if ttl.is_some() {
                checks.push(Check::new(
                    "job",
                    "dry run of a profiling Job",
                    Status::Ok,
                    "accepted; ttlSecondsAfterFinished kept",
                ));
            } else {
                checks.push(Check::new(
                    "job",
                    "dry run of a profiling Job",
                    Status::Warning,
                    "accepted, but the API server dropped ttlSecondsAfterFinished (Kubernetes 1.20 without the TTLAfterFinished feature gate): finished runs stay until `kubectl eagle clean`",
                ));
            }
        }
        Err(kube::Error::Api(s)) => {
            checks.push(Check::new(
                "job",
                "dry run of a profiling Job",
                Status::Missing,
                format!("refused: {} ({})", s.message, s.code),
            ));
            checks.push(Check::new("image", &image, Status::Skipped, "the profiling Job is refused"));
            return Ok(checks);
        }
        Err(e) => {
            checks.push(Check::new("job", "dry run of a profiling Job", Status::Warning, format!("no answer: {e}")))
        }
    }
    if args.skip_image {
        checks.push(Check::new("image", &image, Status::Skipped, "--skip-image"));
        return Ok(checks);
    }
    let deadline = (args.timeout + Duration::from_secs(30)).as_secs() as i64;
    if let Some(spec) = job.spec.as_mut() {
        spec.active_deadline_seconds = Some(deadline);
    }
    checks.push(image_check(&client, &locked, &job, &id, &image, args.timeout).await);
    Ok(checks)
}

/// A profiling Job's exact pod, running `eagle-agent --version`; labelled as a probe, not a run.
pub(super) fn probe_job(opts: &PlanOptions, node: Option<&str>, id: &str) -> Job {
    let mut job = plan::job_for_node(opts, 0, node.unwrap_or("any"), &[], &[]);
    job.metadata.name = Some(format!("eagle-doctor-{id}"));
    let labels =
        BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()), (PROBE_LABEL.to_owned(), id.to_owned())]);
    job.metadata.labels = Some(labels.clone());
    job.metadata.annotations = None;
    if let Some(spec) = job.spec.as_mut() {
        if let Some(meta) = spec.template.metadata.as_mut() {
            meta.labels = Some(labels);
            meta.annotations = None;
        }
        if let Some(pod) = spec.template.spec.as_mut() {
            if node.is_none() {
                pod.affinity = None;
            }
            if let Some(c) = pod.containers.first_mut() {
                c.args = Some(vec!["--version".into()]);
            }
        }
    }
    job
}

async fn image_check(client: &Client, namespace: &str, job: &Job, id: &str, image: &str, timeout: Duration) -> Check {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let name = job.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    if let Err(e) = jobs.create(&PostParams::default(), job).await {
        return Check::new("image", image, Status::Missing, format!("cannot create the probe Job: {e}"));
    }
    let check = watch_probe(client, namespace, &name, id, image, timeout, started).await;
    // The probe goes whatever it found; its TTL is the backstop.
    if let Err(e) = jobs.delete(&name, &DeleteParams::background()).await {
        if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
            eprintln!("warning: could not delete the probe Job {name} ({e}); its TTL removes it, or `kubectl eagle clean --all`");
        }
    }
    check
}

async fn watch_probe(
    client: &Client,
    namespace: &str,
    job: &str,
    id: &str,
    image: &str,
    timeout: Duration,
    started: Instant,
) -> Check {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels_from(&Expression::Equal(PROBE_LABEL.into(), id.into()).into());
    let mut events = watcher(pods.clone(), config).boxed();
    let deadline = started + timeout;
    let mut seen_pod = false;
    let mut unschedulable_since: Option<Instant> = None;
    let check = |status, detail: String| Check::new("image", image, status, detail);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match tokio::time::timeout(left.min(Duration::from_secs(1)), events.try_next()).await {
            Err(_) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    let why = if seen_pod {
                        "the probe pod did not finish"
                    } else {
                        "no pod was created for the probe Job: admission (PodSecurityPolicy, a webhook) may refuse the privileged pod"
                    };
                    return check(
                        Status::Missing,
                        format!("{why} within {} (`kubectl describe job -n {namespace} {job}`)", human(timeout)),
                    );
                }
                if unschedulable_since.is_some_and(|t| t.elapsed() > Duration::from_secs(20)) {
                    return check(
                        Status::Warning,
                        "the probe pod cannot be scheduled (no node has room): the image is unchecked".into(),
                    );
                }
                continue;
            }
            Ok(Err(e)) => return check(Status::Warning, format!("cannot watch the probe pod: {e}")),
            Ok(Ok(None)) => return check(Status::Warning, "the watch on the probe pod ended".into()),
            Ok(Ok(Some(event))) => event,
        };
        let pod = match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => pod,
            _ => continue,
        };
        seen_pod = true;
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "?".into());
        let state = PodState::of(&pod);
        if let Some(why) = &state.cannot_start {
            return check(Status::Missing, format!("cannot be started on node {node}: {why}"));
        }
        if state.unschedulable.is_some() {
            unschedulable_since.get_or_insert_with(Instant::now);
        }
        let status = pod.status.clone().unwrap_or_default();
        match state.phase {
            Phase::Succeeded => {
                let params = LogParams { container: Some(AGENT_CONTAINER.into()), ..Default::default() };
                let log =
                    pods.logs(pod.metadata.name.as_deref().unwrap_or_default(), &params).await.unwrap_or_default();
                let said = log.lines().find(|l| l.starts_with("eagle-agent ")).unwrap_or_default().trim();
                let want = format!("eagle-agent {}", env!("CARGO_PKG_VERSION"));
                let took = human(started.elapsed());
                return if said == want {
                    check(Status::Ok, format!("pulled and started on node {node} in {took}: {said}"))
                } else {
                    check(
                        Status::Warning,
                        format!(
                            "pulled and started on node {node} in {took}, but it says `{said}` where this CLI is {}: use the same version for both",
                            env!("CARGO_PKG_VERSION")
                        ),
                    )
                };
            }
            Phase::Failed => {
                let terminated =
                    status.container_statuses.iter().flatten().find_map(|s| s.state.as_ref()?.terminated.clone());
                let why = terminated
                    .map(|t| {
                        let tail = t.message.unwrap_or_default();
                        format!("exit code {} ({}) {}", t.exit_code, t.reason.unwrap_or_default(), tail.trim())
                    })
                    .unwrap_or_else(|| status.reason.clone().unwrap_or_default());
                return check(Status::Missing, format!("started on node {node} but failed: {}", why.trim()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_the_profiling_pod_running_version_only() {
        let opts = PlanOptions {
            run_id: "abcd1234".into(),
            target: "t".into(),
            namespace: "kube-eagle".into(),
            image: Image { reference: "img:1".into(), pull_policy: None, pull_secrets: Vec::new() },
            duration: Duration::from_secs(1),
            frequency_hz: 99,
            capabilities_only: false,
            ttl_after_finished: 60,
            runtime: None,
            python_native: false,
            mode: eagle_proto::ProfileMode::Cpu,
            min_block_us: eagle_proto::DEFAULT_MIN_BLOCK_US,
            net: false,
            stacks: true,
        };
        let job = probe_job(&opts, None, "abcd1234");
        assert_eq!(job.metadata.name.as_deref(), Some("eagle-doctor-abcd1234"));
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels.get(PROBE_LABEL).map(String::as_str), Some("abcd1234"));
        assert!(!labels.contains_key(super::super::annotations::RUN_LABEL), "list must not show the probe as a run");
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.host_pid, Some(true));
        assert!(pod.affinity.is_none(), "any node");
        assert_eq!(pod.containers[0].args.as_deref(), Some(&["--version".to_owned()][..]));
        assert_eq!(pod.containers[0].security_context.as_ref().unwrap().privileged, Some(true));
        let pinned = probe_job(&opts, Some("node-b"), "x").spec.unwrap().template.spec.unwrap();
        assert!(pinned.affinity.is_some());
    }
}
