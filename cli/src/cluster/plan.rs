//! Job planning: one profiling Job per node, exactly as the Job contract in DESIGN.md says.
//! Pure: the same inputs give the same Job, which a snapshot test pins.

use std::collections::BTreeMap;
use std::time::Duration;

use eagle_proto::{AgentArgs, ProfileMode, Runtime};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, LocalObjectReference, Namespace,
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::annotations::{self, MANAGED_BY, RUN_LABEL};

pub const AGENT_CONTAINER: &str = "eagle-agent";

/// How long finished Jobs of a run started with `-a` keep their results.
pub const ASYNC_TTL: Duration = Duration::from_secs(24 * 3600);
/// ... and those of a synchronous run, which deletes them itself: a backstop.
pub const SYNC_TTL: Duration = Duration::from_secs(300);

/// The Jobs' `ttlSecondsAfterFinished`.
pub fn ttl_seconds(ttl: Option<Duration>, is_async: bool) -> i32 {
    let ttl = ttl.unwrap_or(if is_async { ASYNC_TTL } else { SYNC_TTL });
    ttl.as_secs().min(i32::MAX as u64) as i32
}

/// The window when `-d` is not given.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// Time a Job may take beyond its window (scheduling, image pull, symbolization) before the
/// API server ends it.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(120);

/// The profiling pods' grace period: after SIGTERM (Ctrl-C, the Job's deadline, a drain) the
/// agent stops its samplers, symbolizes and writes its stream. The slowest part is stopping a JVM's
/// Flight Recorder and reading its recording, a few seconds on a busy node.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;

#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub run_id: String,
    /// What the user asked for, for `list` and for people reading the Job.
    pub target: String,
    pub namespace: String,
    pub image: Image,
    pub duration: Duration,
    pub frequency_hz: u64,
    /// Minimal capabilities instead of `privileged: true`.
    pub capabilities_only: bool,
    pub ttl_after_finished: i32,
    /// `--runtime` override, passed to the agent.
    pub runtime: Option<Runtime>,
    /// Python native frames (py-spy --native).
    pub python_native: bool,
    /// What the agents measure, and their shortest off-CPU block.
    pub mode: ProfileMode,
    pub min_block_us: u64,
    /// The network side of the window too (`net`, issue #19).
    pub net: bool,
    /// Stacks too; `false` only with `net`: the network side alone (`kubectl eagle net`).
    pub stacks: bool,
}

/// The profiler image and how the nodes get it: the same for `profile` and `doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub reference: String,
    /// `None` is Kubernetes' default.
    pub pull_policy: Option<PullPolicy>,
    /// Image pull secrets in the locked namespace.
    pub pull_secrets: Vec<String>,
}

/// `imagePullPolicy` of the profiling pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub const ALL: [PullPolicy; 3] = [PullPolicy::Always, PullPolicy::IfNotPresent, PullPolicy::Never];

    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The default agent image: the one this CLI version decodes.
pub fn default_image() -> String {
    format!("ghcr.io/kube-eagle/eagle-agent:{}", env!("CARGO_PKG_VERSION"))
}

/// The locked namespace: privileged pods may run there and nowhere else.
pub fn locked_namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                ("pod-security.kubernetes.io/enforce".to_owned(), "privileged".to_owned()),
            ])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// How long a profiling pod stays on a node that became not ready or unreachable.
pub const DEAD_NODE_TOLERATION_SECONDS: i64 = 30;

/// A profile must reach tainted nodes too (dedicated, GPU, control plane): every taint is
/// tolerated, except that a node gone not ready or unreachable keeps its pod only briefly. The
/// taint manager applies, for each taint, the first toleration that matches it, so the two
/// bounded ones come before the one that matches everything.
fn tolerations() -> Vec<Toleration> {
    let dead = |key: &str| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(DEAD_NODE_TOLERATION_SECONDS),
        ..Default::default()
    };
    vec![
        dead("node.kubernetes.io/not-ready"),
        dead("node.kubernetes.io/unreachable"),
        Toleration { operator: Some("Exists".into()), ..Default::default() },
    ]
}

/// The Job that profiles `container_ids` on `node`, which run in `namespaces` (each once: the
/// agent profiles only containers its node's kubelet places there, and the admission policy
/// admits the Job only for a user who may list pods in each). `index` keeps Job names short
/// and unique within the run (node names can be 253 characters; Job names must stay under 63).
pub fn job_for_node(opts: &PlanOptions, index: usize, node: &str, container_ids: &[&str], namespaces: &[&str]) -> Job {
    let name = format!("eagle-{}-{index}", opts.run_id);
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (RUN_LABEL.to_owned(), opts.run_id.clone()),
    ]);
    let annotations = annotations::planned(&opts.target, node, opts.duration);
    let args = AgentArgs {
        targets: container_ids.iter().map(|id| format!("container:{id}")).collect(),
        namespaces: namespaces.iter().map(|ns| (*ns).to_owned()).collect(),
        duration_ms: opts.duration.as_millis() as u64,
        frequency_hz: opts.frequency_hz,
        node: None,
        runtime: opts.runtime,
        python_native: opts.python_native,
        net: opts.net,
        stacks: opts.stacks,
        mode: opts.mode,
        min_block_us: opts.min_block_us,
    }
    .to_args();

    let security = if opts.capabilities_only {
        SecurityContext {
            privileged: Some(false),
            capabilities: Some(Capabilities {
                // BPF+PERFMON load and attach the sampler; SYS_PTRACE reads other processes'
                // memory maps; SYS_ADMIN covers kernels before 5.8 and /proc/PID/map_files.
                add: Some(["BPF", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"].map(String::from).to_vec()),
                drop: Some(vec!["ALL".into()]),
            }),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        }
    } else {
        SecurityContext {
            privileged: Some(true),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        }
    };
    let container = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(opts.image.reference.clone()),
        image_pull_policy: opts.image.pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "spec.nodeName".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), Quantity("1".into())),
                ("memory".into(), Quantity("512Mi".into())),
            ])),
            ..Default::default()
        }),
        security_context: Some(security),
        // Samplers that write files (py-spy's output) get a small private /tmp; the root
        // filesystem stays read-only. No tracefs: fork and exec are followed by BTF-typed
        // tracepoints, and on a kernel without BTF the agent mounts tracefs privately.
        volume_mounts: Some(vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        host_pid: Some(true),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // The agent completes its stream on SIGTERM: give it time to write.
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        // Exactly this node, by name, through the scheduler (so resources are honoured):
        // unlike a hostname nodeSelector this needs no read access to Node objects and works
        // where the hostname label differs from the node name.
        affinity: Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_fields: Some(vec![NodeSelectorRequirement {
                            key: "metadata.name".into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_owned()]),
                        }]),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tolerations: Some(tolerations()),
        image_pull_secrets: (!opts.image.pull_secrets.is_empty())
            .then(|| opts.image.pull_secrets.iter().map(|s| LocalObjectReference { name: s.clone() }).collect()),
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("64Mi".into())),
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let deadline = (opts.duration + DEADLINE_MARGIN).as_secs() as i64;
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(opts.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            ttl_seconds_after_finished: Some(opts.ttl_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A run's options as the CLI fills them by default (also the admission policy's tests').
    pub(crate) fn options() -> PlanOptions {
        PlanOptions {
            run_id: "9e2017d3".into(),
            target: "deployment/api -n shop".into(),
            namespace: "kube-eagle".into(),
            image: Image {
                reference: "ghcr.io/kube-eagle/eagle-agent:0.1.0".into(),
                pull_policy: Some(PullPolicy::IfNotPresent),
                pull_secrets: vec!["regcred".into()],
            },
            duration: Duration::from_secs(30),
            frequency_hz: 99,
            capabilities_only: false,
            ttl_after_finished: 300,
            runtime: None,
            python_native: false,
            mode: eagle_proto::ProfileMode::Cpu,
            min_block_us: eagle_proto::DEFAULT_MIN_BLOCK_US,
            net: false,
            stacks: true,
        }
    }

    /// The Job as the API server receives it. Regenerate with `EAGLE_BLESS=1 cargo test` (and review the diff).
    #[test]
    fn job_snapshot() {
        // Container ids as runtimes write them (64 hex digits): the admission policy's tests read
        // this Job as the one the CLI plans.
        let ids = ["0123456789abcdef".repeat(4), "fedcba9876543210".repeat(4)];
        let job = job_for_node(&options(), 0, "node-a", &[&ids[0], &ids[1]], &["shop"]);
        let actual = serde_json::to_string_pretty(&job).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cluster/testdata/job-node-a.json");
        crate::snapshot::assert_snapshot(std::path::Path::new(path), &actual);
    }

    /// `net` asks the agents for the network side through the typed argument, and only then:
    /// a CPU profile's Job is unchanged (the snapshot above). `net` alone asks for no stacks.
    #[test]
    fn a_net_run_asks_the_agent_for_the_network_side() {
        let args_of = |job: Job| job.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
        let net = args_of(job_for_node(&PlanOptions { net: true, ..options() }, 0, "node-a", &["abc"], &["shop"]));
        match AgentArgs::parse(net) {
            Ok(eagle_proto::AgentCommand::Run(run)) => assert!(run.net && run.stacks),
            other => panic!("{other:?}"),
        }
        let net_only = args_of(job_for_node(
            &PlanOptions { net: true, stacks: false, ..options() },
            0,
            "node-a",
            &["abc"],
            &["shop"],
        ));
        match AgentArgs::parse(net_only) {
            Ok(eagle_proto::AgentCommand::Run(run)) => assert!(run.net && !run.stacks),
            other => panic!("{other:?}"),
        }
        let cpu = args_of(job_for_node(&options(), 0, "node-a", &["abc"], &["shop"]));
        assert!(matches!(AgentArgs::parse(cpu), Ok(eagle_proto::AgentCommand::Run(run)) if !run.net));
    }

    #[test]
    fn ttls_of_sync_and_async_runs() {
        assert_eq!(ttl_seconds(None, true), 86_400);
        assert_eq!(ttl_seconds(None, false), 300);
        assert_eq!(ttl_seconds(Some(Duration::from_secs(60)), true), 60);
    }

    #[test]
    fn the_contract_holds() {
        let job = job_for_node(&options(), 3, "node-b", &["abc"], &["shop"]);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(150));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.host_pid, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let tolerations = pod.tolerations.as_ref().unwrap();
        for (t, key) in tolerations.iter().zip(["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]) {
            assert_eq!((t.key.as_deref(), t.effect.as_deref()), (Some(key), Some("NoExecute")));
            assert_eq!(t.toleration_seconds, Some(DEAD_NODE_TOLERATION_SECONDS));
        }
        let last = tolerations.last().unwrap();
        assert_eq!(
            (last.key.as_deref(), last.operator.as_deref(), last.effect.as_deref()),
            (None, Some("Exists"), None)
        );
        assert_eq!(tolerations.len(), 3);
        assert_eq!(job.metadata.namespace.as_deref(), Some("kube-eagle"));
        assert_eq!(job.metadata.name.as_deref(), Some("eagle-9e2017d3-3"));
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));

        let minimal = job_for_node(&PlanOptions { capabilities_only: true, ..options() }, 0, "n", &["abc"], &["shop"]);
        let sc = minimal.spec.unwrap().template.spec.unwrap().containers[0].security_context.clone().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert!(sc.capabilities.unwrap().add.unwrap().contains(&"BPF".to_string()));
    }
}
