//! The Job controller, scheduler and kubelet of the profiling pods: each pod goes through the
//! phases its node's [`Fate`] says, and its agent writes a real result stream.

use super::*;

// ---------------------------------------------------------------------------------------------
// The Job controller, scheduler and kubelet, for the profiling pods
// ---------------------------------------------------------------------------------------------

/// What a Job's agent was asked to do, from its pod template (read by the agent's own
/// `eagle_proto::AgentArgs::parse`, as the real agent reads it).
#[derive(Clone, Debug, Default)]
pub(super) struct AgentRun {
    pub(super) node: String,
    pub(super) containers: Vec<String>,
    pub(super) duration_ms: u64,
    pub(super) frequency_hz: u64,
    /// What it was asked to measure: its header says so, as the real agent's does.
    pub(super) mode: eagle_proto::ProfileMode,
    /// `eagle-agent --version`: the doctor's probe.
    pub(super) version_only: bool,
    /// Asked for the network side (`--net`): the record it writes before its trailer, the
    /// scenario's for its node, else an empty one (no traffic), as the real agent would.
    pub(super) net: Option<eagle_proto::NetPayload>,
}

impl State {
    pub(super) fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub(super) fn add_job_pod(&mut self, job: &Value, scenario: &Scenario) -> (PodKey, Fate, AgentRun) {
        let ns = job["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let job_name = job["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let template = &job["spec"]["template"];
        let rv = self.bump();
        let suffix: String = fnv(&format!("{job_name}{rv}"), 1)
            .to_string()
            .chars()
            .take(5)
            .map(|c| (b'b' + c.to_digit(10).unwrap_or(0) as u8) as char)
            .collect();
        let name = format!("{job_name}-{suffix}");
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "generateName": format!("{job_name}-"), "namespace": ns,
                "uid": format!("uid-pod-{name}"), "resourceVersion": rv.to_string(), "creationTimestamp": TIMESTAMP,
                "labels": template["metadata"]["labels"].clone(),
                "annotations": template["metadata"]["annotations"].clone(),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": template["spec"].clone(),
            "status": {"phase": "Pending", "qosClass": "Burstable"}
        });
        pod["spec"]["serviceAccountName"] = json!("default");
        let container = &template["spec"]["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let asked = eagle_proto::AgentArgs::parse(args);
        let run = match &asked {
            Ok(eagle_proto::AgentCommand::Run(run)) => run.clone(),
            _ => eagle_proto::AgentArgs::default(),
        };
        let mut agent = AgentRun {
            containers: run.targets.iter().filter_map(|t| t.strip_prefix("container:")).map(str::to_owned).collect(),
            duration_ms: run.duration_ms,
            frequency_hz: run.frequency_hz,
            mode: run.mode,
            version_only: asked == Ok(eagle_proto::AgentCommand::Version),
            ..Default::default()
        };
        // Not pinned to a node: the scheduler picks the first one.
        agent.node = node_of(&template["spec"]).or_else(|| self.nodes.first().cloned()).unwrap_or_default();
        if run.net {
            let mut net = scenario
                .net_records
                .get(&agent.node)
                .cloned()
                .unwrap_or_else(|| eagle_proto::NetPayload::new(run.duration_ms));
            // An agent reports its own targets only.
            let ours = |c: &Option<String>| c.as_ref().is_some_and(|c| agent.containers.contains(c));
            net.http.retain(|r| ours(&r.container));
            net.peers.retain(|p| ours(&p.container));
            net.listen_queues.retain(|q| ours(&q.container));
            agent.net = Some(net);
        }
        let known = self.nodes.contains(&agent.node);
        let fate = if known { scenario.fate(&agent.node) } else { Fate::Unschedulable };
        self.events.push(WatchEvent { rv, kind: "ADDED", object: pod.clone() });
        self.objects.insert(("pods".into(), ns.clone(), name.clone()), pod);
        self.job_pods.push((job_name, name.clone()));
        ((ns, name), fate, agent)
    }

    /// The `FailedCreate` Event of a Job whose pod admission refused (Pod Security, a webhook,
    /// a quota), as the Job controller records it.
    pub(super) fn record_failed_create(&mut self, job: &Value, why: &str) {
        let ns = job["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let job_name = job["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let rv = self.bump();
        let name = format!("{job_name}.{rv:x}");
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-event-{rv}"), "resourceVersion": rv.to_string(), "creationTimestamp": TIMESTAMP},
            "involvedObject": {"kind": "Job", "namespace": ns, "name": job_name, "uid": job["metadata"]["uid"], "apiVersion": "batch/v1", "resourceVersion": job["metadata"]["resourceVersion"]},
            "reason": "FailedCreate", "type": "Warning", "count": 1,
            "message": format!("Error creating: pods \"{job_name}-xxxxx\" is forbidden: {why}"),
            "source": {"component": "job-controller"},
            "firstTimestamp": TIMESTAMP, "lastTimestamp": TIMESTAMP
        });
        self.objects.insert(("events".into(), ns, name), event);
    }

    /// Starts a graceful deletion; the pod's driver finishes it.
    pub(super) fn mark_deleted(&mut self, key: &PodKey, grace: i64) -> Option<Value> {
        let object_key = ("pods".to_owned(), key.0.clone(), key.1.clone());
        if !self.objects.contains_key(&object_key) {
            return None;
        }
        let rv = self.bump();
        let pod = self.objects.get_mut(&object_key).expect("checked");
        if pod["metadata"]["deletionTimestamp"].is_null() {
            pod["metadata"]["deletionTimestamp"] = json!(TIMESTAMP);
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let pod = pod.clone();
        self.events.push(WatchEvent { rv, kind: "MODIFIED", object: pod.clone() });
        self.stopping.insert(key.clone());
        Some(pod)
    }
}

/// The node a profiling pod must run on: the `metadata.name` match field of its required node
/// affinity (or a hostname nodeSelector).
pub(super) fn node_of(spec: &Value) -> Option<String> {
    let terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array();
    let from_affinity = terms.into_iter().flatten().find_map(|t| {
        t["matchFields"]
            .as_array()?
            .iter()
            .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")
            .and_then(|f| f["values"][0].as_str())
            .map(str::to_owned)
    });
    from_affinity.or_else(|| spec["nodeSelector"]["kubernetes.io/hostname"].as_str().map(str::to_owned))
}

impl Shared {
    /// Changes a pod and tells the watchers. False when the pod is gone.
    pub(super) fn update_pod(&self, key: &PodKey, change: impl FnOnce(&mut Value)) -> bool {
        let mut state = self.lock();
        let rv = state.bump();
        let Some(pod) = state.objects.get_mut(&("pods".to_owned(), key.0.clone(), key.1.clone())) else {
            return false;
        };
        change(pod);
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let pod = pod.clone();
        state.events.push(WatchEvent { rv, kind: "MODIFIED", object: pod });
        self.changed.notify_all();
        true
    }

    pub(super) fn stopping(&self, key: &PodKey) -> bool {
        self.shutdown.load(Ordering::SeqCst) || self.lock().stopping.contains(key)
    }

    /// Sleeps `d`; true as soon as the pod is asked to stop (deleted).
    pub(super) fn pause(&self, key: &PodKey, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let seen = self.stops.load(Ordering::SeqCst);
            if self.stopping(key) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            // Asleep until `until` or a stop: one a notifier sent after `seen` was read makes
            // the count differ, and one sent after this lock is taken finds us waiting.
            let guard = self.stops_lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.stops.load(Ordering::SeqCst) == seen {
                drop(self.stops_cv.wait_timeout(guard, until - now).unwrap_or_else(|e| e.into_inner()));
            }
        }
    }

    /// The log exists once the container does.
    pub(super) fn log_start(&self, key: &PodKey) {
        self.lock().logs.insert(key.clone(), PodLog::default());
    }

    pub(super) fn log_line(&self, key: &PodKey, line: &str) {
        let mut state = self.lock();
        state.logs.entry(key.clone()).or_default().lines.push(line.to_owned());
        self.changed.notify_all();
    }

    pub(super) fn log_end(&self, key: &PodKey) {
        let mut state = self.lock();
        state.last_log_end = Some(SystemTime::now());
        state.logs.entry(key.clone()).or_default().ended = true;
        self.changed.notify_all();
    }

    /// The end of a graceful deletion: the pod object and its log go.
    pub(super) fn remove_pod(&self, key: &PodKey) {
        let mut state = self.lock();
        if let Some(log) = state.logs.get_mut(key) {
            log.ended = true;
        }
        let rv = state.bump();
        if let Some(mut pod) = state.objects.remove(&("pods".to_owned(), key.0.clone(), key.1.clone())) {
            pod["metadata"]["resourceVersion"] = json!(rv.to_string());
            state.events.push(WatchEvent { rv, kind: "DELETED", object: pod });
        }
        state.logs.remove(key);
        self.changed.notify_all();
    }
}

/// The agent's log, as the fate has it.
pub(super) struct Script {
    pub(super) lines: Vec<String>,
    /// Progress lines until the pod is deleted, then `on_stop`.
    pub(super) hold: bool,
    pub(super) ignores_stop: bool,
    pub(super) on_stop: Vec<String>,
    pub(super) exit_code: i32,
}

pub(super) fn script(fate: &Fate, agent: &AgentRun) -> Script {
    let encoder = Encoder;
    let header = encoder.header(&Header {
        agent_version: "0.1.0".into(),
        node: agent.node.clone(),
        kernel: "6.1.0-lab".into(),
        started_unix_ms: 1_795_000_000_000,
        duration_ms: agent.duration_ms,
        frequency_hz: agent.frequency_hz,
        targets: agent
            .containers
            .iter()
            .map(|id| TargetReport { target: format!("container:{id}"), pids: vec![pid_of(id)] })
            .collect(),
        mode: agent.mode,
        min_block_us: None,
    });
    let records = |stacks: &[Stack]| -> Vec<StackRecord> {
        agent
            .containers
            .iter()
            .flat_map(|id| {
                stacks.iter().map(move |s| StackRecord {
                    container: Some(id.clone()),
                    pid: pid_of(id),
                    process: AGENT_PROCESS.into(),
                    sampler: "ebpf".into(),
                    frames: s.frames.clone(),
                    count: s.count,
                })
            })
            .collect()
    };
    let total = |stacks: &[Stack]| stacks.iter().map(|s| s.count).sum::<u64>() * agent.containers.len() as u64;
    let progress = |fraction: u64, samples: u64| {
        encoder.progress(&Progress {
            elapsed_ms: agent.duration_ms * fraction / 2,
            samples: samples * fraction / 2,
            processes: agent.containers.len() as u64,
        })
    };
    let stderr_noise =
        format!("eagle-agent: sampling {} containers at {} Hz", agent.containers.len(), agent.frequency_hz);
    // Off the CPU, the agent reports each container's cgroup counters (`info-cgroup-cpu`),
    // with the container it found the cgroup's process in.
    let cgroups = agent.containers.iter().filter(|_| agent.mode != ProfileMode::Cpu).map(|id| {
        encoder.warning(
            &CgroupCpuStat {
                cgroup: format!("/kubepods/burstable/pod-{}/{id}", agent.node),
                pid: pid_of(id),
                container: Some(id.clone()),
                limit_millicores: Some(250),
                nr_periods: 150,
                nr_throttled: 120,
                throttled_us: 2_400_000,
                measured_throttled_us: 2_350_000,
                measured_waiting_us: 10_000,
                // The pod's group, which the kubelet limits too.
                above: Some(LimitedLevel {
                    limit_millicores: 250,
                    nr_periods: 150,
                    nr_throttled: 30,
                    throttled_us: 600_000,
                }),
            }
            .to_warning(),
        )
    });
    let cgroups: Vec<String> = cgroups.collect();
    let complete = |stacks: &[Stack]| {
        let mut lines =
            vec![stderr_noise.clone(), header.clone(), progress(1, total(stacks)), progress(2, total(stacks))];
        lines.extend(cgroups.iter().cloned());
        match &agent.net {
            Some(net) => lines.extend(encoder.payload_with_net(&records(stacks), 0, net)),
            None => lines.extend(encoder.payload(&records(stacks), 0)),
        }
        lines
    };
    let plain = |lines: Vec<String>, exit_code: i32| Script {
        lines,
        hold: false,
        ignores_stop: false,
        on_stop: Vec::new(),
        exit_code,
    };
    let runs = !matches!(
        fate,
        Fate::AgentError { .. } | Fate::Unschedulable | Fate::ImagePullError | Fate::AdmissionRejected(_)
    );
    if agent.version_only && runs {
        return plain(vec![format!("eagle-agent {}", env!("CARGO_PKG_VERSION"))], 0);
    }
    match fate {
        Fate::Profile(stacks) | Fate::FinishedBeforeWatch(stacks) => plain(complete(stacks), 0),
        Fate::EndsEarly(stacks) => {
            let mut lines = complete(stacks);
            let first_chunk = lines.iter().position(|l| l.starts_with("EAGLE1 D ")).expect("a payload chunk");
            let warning = encoder.warning(&Warning {
                code: eagle_proto::WarningCode::EndedEarly,
                pid: None,
                message: format!(
                    "stopped by a signal after 0.6s of the {:.1}s window",
                    agent.duration_ms as f64 / 1000.0
                ),
            });
            lines.insert(first_chunk, warning);
            plain(lines, 0)
        }
        Fate::Truncated(stacks) => {
            let mut lines = complete(stacks);
            let first_chunk = lines.iter().position(|l| l.starts_with("EAGLE1 D ")).expect("a payload chunk");
            lines.truncate(first_chunk + 1);
            plain(lines, 0)
        }
        Fate::Corrupt(stacks) => {
            let mut lines = complete(stacks);
            let trailer = lines.pop().expect("trailer");
            let json_text = trailer.strip_prefix("EAGLE1 T ").expect("trailer line");
            let mut t: Value = serde_json::from_str(json_text).expect("trailer json");
            t["crc32"] = json!(t["crc32"].as_u64().unwrap_or(0) ^ 0x5a5a);
            lines.push(format!("EAGLE1 T {t}"));
            plain(lines, 0)
        }
        Fate::OversizedLine(stacks) => {
            let mut lines = complete(stacks);
            lines.insert(2, format!("EAGLE1 W {{\"code\":\"x\",\"message\":\"{}\"}}", "a".repeat(2 << 20)));
            plain(lines, 0)
        }
        Fate::Bomb => {
            use base64::Engine as _;
            use std::io::Write as _;
            let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..64 {
                deflate.write_all(&zeros).expect("deflate to memory");
            }
            let bomb = deflate.finish().expect("deflate to memory");
            let mut lines = vec![stderr_noise.clone(), header.clone()];
            for (seq, chunk) in bomb.chunks(8192).enumerate() {
                lines.push(format!("EAGLE1 D {seq} {}", base64::engine::general_purpose::STANDARD.encode(chunk)));
            }
            let chunks = bomb.chunks(8192).len();
            lines.push(format!(
                "EAGLE1 T {{\"samples\":1,\"stacks\":1,\"chunks\":{chunks},\"payload_bytes\":{},\"crc32\":0}}",
                1u64 << 30
            ));
            plain(lines, 0)
        }
        Fate::AgentError { exit_code, message } => {
            plain(vec![stderr_noise.clone(), format!("eagle-agent: error: {message}")], *exit_code)
        }
        Fate::UntilStopped(stacks) => {
            let mut on_stop = vec![encoder.warning(&Warning {
                code: eagle_proto::WarningCode::EndedEarly,
                pid: None,
                message: format!(
                    "stopped by a signal after 0.4s of the {:.1}s window",
                    agent.duration_ms as f64 / 1000.0
                ),
            })];
            on_stop.extend(encoder.payload(&records(stacks), 0));
            Script {
                lines: vec![stderr_noise, header, progress(0, 0)],
                hold: true,
                ignores_stop: false,
                on_stop,
                exit_code: 0,
            }
        }
        Fate::KubeletStops => Script {
            lines: vec![stderr_noise, header, progress(0, 0)],
            hold: false,
            ignores_stop: false,
            on_stop: Vec::new(),
            exit_code: 0,
        },
        Fate::IgnoresStop => Script {
            lines: vec![stderr_noise, header, progress(0, 0)],
            hold: true,
            ignores_stop: true,
            on_stop: Vec::new(),
            exit_code: 137,
        },
        Fate::Unschedulable | Fate::ImagePullError | Fate::AdmissionRejected(_) | Fate::NameTaken => {
            plain(Vec::new(), 0)
        }
    }
}

/// The life of a profiling pod, then its deletion once asked (pod or Job deleted).
pub(super) fn drive(shared: &Shared, key: &PodKey, fate: &Fate, agent: &AgentRun, watched: bool) {
    // The kubelet is slower than the CLI: nothing happens to a profiling pod before the run's
    // watch is open, so that every run sees the same sequence of events. A run started with
    // `-a` has no watch: its pods go their way at once.
    while watched && shared.lock().watches == 0 {
        if shared.pause(key, Duration::from_millis(5)) {
            return end(shared, key, true);
        }
    }
    let stopped = live(shared, key, fate, agent);
    end(shared, key, stopped);
}

/// The end of a pod: at once if it was stopped (deleted) already, else when it is.
pub(super) fn end(shared: &Shared, key: &PodKey, stopped: bool) {
    if !stopped {
        while !shared.pause(key, Duration::from_secs(60)) {}
    }
    thread::sleep(STEP);
    shared.remove_pod(key);
}

/// Moves the pod through its phases as its fate says. True when it was stopped (deleted)
/// on the way.
pub(super) fn live(shared: &Shared, key: &PodKey, fate: &Fate, agent: &AgentRun) -> bool {
    let node = agent.node.clone();
    let image = {
        let state = shared.lock();
        state
            .objects
            .get(&("pods".to_owned(), key.0.clone(), key.1.clone()))
            .and_then(|p| p["spec"]["containers"][0]["image"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let container = "eagle-agent";
    if shared.pause(key, STEP) {
        return true;
    }
    if let Fate::Unschedulable = fate {
        let nodes = shared.lock().nodes.len();
        shared.update_pod(key, |pod| {
            pod["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": TIMESTAMP,
                "message": format!("0/{nodes} nodes are available: 1 Insufficient memory, {} node(s) didn't match Pod's node affinity.", nodes.saturating_sub(1))
            }]);
        });
        return false;
    }
    // Scheduled: the kubelet starts pulling.
    shared.update_pod(key, |pod| {
        pod["spec"]["nodeName"] = json!(node);
        pod["status"]["hostIP"] = json!("10.0.0.2");
        pod["status"]["startTime"] = json!(TIMESTAMP);
        pod["status"]["conditions"] =
            json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": TIMESTAMP}]);
        pod["status"]["containerStatuses"] = json!([waiting_status(container, &image, "ContainerCreating", None)]);
    });
    if shared.pause(key, STEP) {
        return true;
    }
    if let Fate::ImagePullError = fate {
        let pull = format!("rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
        shared.update_pod(key, |pod| {
            pod["status"]["containerStatuses"] = json!([waiting_status(container, &image, "ErrImagePull", Some(&pull))])
        });
        if !shared.pause(key, STEP * 4) {
            let backoff = format!("Back-off pulling image \"{image}\"");
            shared.update_pod(key, |pod| {
                pod["status"]["containerStatuses"] =
                    json!([waiting_status(container, &image, "ImagePullBackOff", Some(&backoff))])
            });
        }
        return false;
    }
    // Running.
    let container_id = format!("containerd://{}", container_id(&key.1, container));
    shared.log_start(key);
    shared.update_pod(key, |pod| {
        pod["status"]["phase"] = json!("Running");
        pod["status"]["podIP"] = json!("10.244.0.9");
        pod["status"]["conditions"] = json!([
            {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}
        ]);
        pod["status"]["containerStatuses"] = json!([{
            "name": container, "ready": true, "started": true, "restartCount": 0, "image": image, "imageID": format!("{image}@sha256:feed"),
            "containerID": container_id, "state": {"running": {"startedAt": TIMESTAMP}}
        }]);
    });
    let script = script(fate, agent);
    if let Fate::KubeletStops = fate {
        for line in &script.lines {
            shared.log_line(key, line);
        }
        for tick in 1..=5u64 {
            if shared.pause(key, Duration::from_millis(100)) {
                return true;
            }
            let p = Progress { elapsed_ms: tick * 100, samples: tick * 10, processes: agent.containers.len() as u64 };
            shared.log_line(key, &Encoder.progress(&p));
        }
        // The kubelet dies: follows break, log reads fail, the pod's status stays as it was.
        shared.lock().dead_kubelets.insert(node.clone());
        shared.changed.notify_all();
        if shared.pause(key, Duration::from_secs(1)) {
            return true;
        }
        // The node controller (after its grace period, shortened) marks the pod not ready.
        shared.update_pod(key, |pod| {
            pod["status"]["conditions"] = json!([
                {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False", "lastTransitionTime": TIMESTAMP},
                {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}
            ]);
        });
        // Nothing more comes from this node; a deleted pod is never confirmed gone.
        while !shared.pause(key, Duration::from_secs(60)) {}
        while !shared.shutdown.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(50));
        }
        return true;
    }
    let mut stopped = false;
    let mut lines = script.lines.iter();
    for line in lines.by_ref() {
        shared.log_line(key, line);
        if shared.pause(key, shared.scenario.line_gap) {
            stopped = true;
            break;
        }
    }
    if script.hold {
        let mut ticks = 0u64;
        while !shared.pause(key, Duration::from_millis(100)) {
            ticks += 1;
            let p = Progress { elapsed_ms: ticks * 100, samples: ticks * 10, processes: agent.containers.len() as u64 };
            shared.log_line(key, &Encoder.progress(&p));
        }
        stopped = true;
    }
    if stopped {
        if script.ignores_stop {
            thread::sleep(KILL_AFTER);
        } else {
            // SIGTERM: the agent completes its stream.
            for line in lines.chain(script.on_stop.iter()) {
                shared.log_line(key, line);
            }
        }
    }
    // The container exits: its log ends, then the kubelet reports the pod.
    shared.log_end(key);
    thread::sleep(STEP);
    let exit_code = script.exit_code;
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let message: String = {
        let state = shared.lock();
        let lines = state.logs.get(key).map(|l| l.lines.clone()).unwrap_or_default();
        if exit_code == 0 {
            String::new()
        } else {
            lines.iter().rev().take(3).rev().map(|l| format!("{l}\n")).collect()
        }
    };
    shared.update_pod(key, |pod| {
        pod["status"]["phase"] = json!(if exit_code == 0 { "Succeeded" } else { "Failed" });
        pod["status"]["conditions"] = json!([
            {"type": "Initialized", "status": "True", "reason": "PodCompleted"}, {"type": "Ready", "status": "False", "reason": "PodCompleted"},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"}, {"type": "PodScheduled", "status": "True"}
        ]);
        let mut terminated = json!({"exitCode": exit_code, "reason": reason, "startedAt": TIMESTAMP, "finishedAt": TIMESTAMP, "containerID": container_id});
        if !message.is_empty() {
            terminated["message"] = json!(message);
        }
        pod["status"]["containerStatuses"] = json!([{
            "name": container, "ready": false, "started": false, "restartCount": 0, "image": image, "imageID": format!("{image}@sha256:feed"),
            "containerID": container_id, "state": {"terminated": terminated}
        }]);
    });
    shared.finish_job(key, exit_code == 0);
    stopped
}

pub(super) fn waiting_status(container: &str, image: &str, reason: &str, message: Option<&str>) -> Value {
    let mut waiting = json!({"reason": reason});
    if let Some(m) = message {
        waiting["message"] = json!(m);
    }
    json!({"name": container, "ready": false, "started": false, "restartCount": 0, "image": image, "imageID": "", "state": {"waiting": waiting}})
}
