//! The objects the double keeps, and every verb on them: get, list (label selectors), create,
//! update, merge patch, delete; access reviews and `dryRun`.

use super::*;

impl Shared {
    pub(super) fn set_status(&self, index: usize, code: u16) {
        self.lock().requests[index].status = code;
        self.changed.notify_all();
    }

    pub(super) fn denied(&self, user: &str, verb: &str, resource: &str, route: &Route) -> Option<Value> {
        let rule = self.scenario.denials.iter().find(|d| d.refuses(user, verb, resource, &route.namespace))?;
        let kind = route.kind;
        let subject = match (&route.name, &route.sub) {
            (Some(name), None) if verb != "create" => format!("{} \"{name}\"", kind.qualified()),
            _ => kind.qualified(),
        };
        let scope = if kind.namespaced {
            format!("in the namespace \"{}\"", route.namespace)
        } else {
            "at the cluster scope".into()
        };
        let message = format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            user, rule.verb, rule.resource, kind.group
        );
        Some(status(
            403,
            "Forbidden",
            message,
            json!({"name": route.name.clone().unwrap_or_default(), "group": kind.group, "kind": kind.plural}),
        ))
    }

    pub(super) fn get(&self, route: &Route) -> (u16, Value) {
        let name = route.name.clone().unwrap_or_default();
        let state = self.lock();
        match state.objects.get(&(route.kind.plural.to_owned(), route.namespace.clone(), name.clone())) {
            Some(object) => (200, object.clone()),
            None => (404, not_found(route.kind, &name)),
        }
    }

    pub(super) fn list(&self, route: &Route, selector: &str) -> Value {
        let state = self.lock();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((plural, ns, _), object)| {
                plural == route.kind.plural
                    && (route.namespace.is_empty() || *ns == route.namespace)
                    && selects(selector, object)
            })
            .map(|(_, object)| {
                let mut item = object.clone();
                if let Some(map) = item.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
                item
            })
            .collect();
        json!({"kind": format!("{}List", route.kind.kind), "apiVersion": route.kind.api_version(), "metadata": {"resourceVersion": state.rv.to_string()}, "items": items})
    }

    pub(super) fn create(self: &Arc<Self>, route: &Route, mut object: Value, dry_run: bool) -> (u16, Value) {
        let kind = route.kind;
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return (
                422,
                status(
                    422,
                    "Invalid",
                    format!(
                        "{} is invalid: metadata.name: Required value: name or generateName is required",
                        kind.kind
                    ),
                    json!({"kind": kind.plural}),
                ),
            );
        };
        if !PLAIN.contains(&kind.plural) && kind.plural != "jobs" {
            return (
                405,
                status(405, "MethodNotAllowed", format!("the double does not create {}", kind.plural), json!({})),
            );
        }
        // RBAC names are path segments (`kube-eagle:runner`); the others RFC 1123 labels.
        let rbac = kind.group == "rbac.authorization.k8s.io";
        let valid = name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (rbac && b == b':'))
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !valid {
            let message = format!("{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 label of at most 63 characters", kind.kind);
            return (
                422,
                status(422, "Invalid", message, json!({"name": name, "group": kind.group, "kind": kind.kind})),
            );
        }
        let mut state = self.lock();
        if kind.namespaced
            && !state.objects.contains_key(&("namespaces".to_owned(), String::new(), route.namespace.clone()))
        {
            return (404, not_found(&KINDS[3], &route.namespace));
        }
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        if kind.plural == "jobs" && !dry_run {
            let node = node_of(&object["spec"]["template"]["spec"]).unwrap_or_default();
            if let Fate::NameTaken = self.scenario.fate(&node) {
                // Another run's Job of that name, made long ago (its pod is gone).
                let mut other = object.clone();
                other["metadata"]["uid"] = json!(format!("uid-jobs-of-another-run-{name}"));
                other["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
                state.objects.entry(key.clone()).or_insert(other);
            }
        }
        if state.objects.contains_key(&key) {
            return (
                409,
                status(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", kind.qualified()),
                    json!({"name": name, "group": kind.group, "kind": kind.plural}),
                ),
            );
        }
        let posted = object.clone();
        if kind.plural == "jobs" && self.scenario.drops_ttl {
            if let Some(spec) = object["spec"].as_object_mut() {
                spec.remove("ttlSecondsAfterFinished");
            }
        }
        if dry_run {
            // Validated and defaulted as a create would be; nothing is stored or started.
            object["apiVersion"] = json!(kind.api_version());
            object["kind"] = json!(kind.kind);
            object["metadata"]["creationTimestamp"] = json!(TIMESTAMP);
            if kind.namespaced {
                object["metadata"]["namespace"] = json!(route.namespace);
            }
            return (201, object);
        }
        state.rv += 1;
        let uid = format!("uid-{}-{name}-{}", kind.plural, state.rv);
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(state.rv.to_string());
        // The real time, to the second: runs created one after another sort newest first.
        meta["creationTimestamp"] = json!(now_rfc3339());
        if kind.namespaced {
            meta["namespace"] = json!(route.namespace);
        }
        if kind.plural == "namespaces" {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        if PLAIN.contains(&kind.plural) {
            state.objects.insert(key, object.clone());
            self.changed.notify_all();
            return (201, object);
        }
        // A Job: what the Job controller adds, then its pod.
        let controller = json!({"controller-uid": uid, "job-name": name});
        object["spec"]["selector"] = json!({"matchLabels": {"controller-uid": uid}});
        merge_into(&mut object["spec"]["template"]["metadata"]["labels"], &controller);
        object["spec"]["parallelism"] = json!(1);
        object["spec"]["completions"] = json!(1);
        object["status"] = json!({"active": 1, "startTime": TIMESTAMP});
        state.job_started.insert(key.clone(), Instant::now());
        state.objects.insert(key, object.clone());
        state.created_jobs.push(posted);
        let node = node_of(&object["spec"]["template"]["spec"]).unwrap_or_default();
        if let Fate::AdmissionRejected(why) = self.scenario.fate(&node) {
            // The Job controller's create of the pod is refused; it records why on the Job.
            state.record_failed_create(&object, &why);
            self.changed.notify_all();
            return (201, object);
        }
        let (pod_key, fate, agent) = state.add_job_pod(&object, &self.scenario);
        let watched = object["metadata"]["annotations"]["kube-eagle.io/async"] != "true";
        self.changed.notify_all();
        drop(state);
        let shared = self.clone();
        if let Fate::FinishedBeforeWatch(_) = fate {
            let stopped = live(&shared, &pod_key, &fate, &agent);
            thread::spawn(move || end(&shared, &pod_key, stopped));
        } else {
            thread::spawn(move || drive(&shared, &pod_key, &fate, &agent, watched));
        }
        (201, object)
    }

    pub(super) fn delete(self: &Arc<Self>, route: &Route, options: Option<&Value>) -> (u16, Value) {
        let kind = route.kind;
        let name = route.name.clone().unwrap_or_default();
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        let mut state = self.lock();
        let Some(object) = state.objects.get(&key).cloned() else {
            return (404, not_found(kind, &name));
        };
        if let Some(uid) = options.and_then(|o| o["preconditions"]["uid"].as_str()) {
            if object["metadata"]["uid"] != uid {
                let message = format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object["metadata"]["uid"].as_str().unwrap_or_default()
                );
                return (
                    409,
                    status(409, "Conflict", message, json!({"name": name, "group": kind.group, "kind": kind.plural})),
                );
            }
        }
        match kind.plural {
            "jobs" => {
                // Background propagation: the Job goes now, the garbage collector deletes its
                // pods (gracefully) after.
                state.objects.remove(&key);
                let uid = object["metadata"]["uid"].clone();
                let pods: Vec<PodKey> = state
                    .objects
                    .iter()
                    .filter(|((plural, _, _), pod)| {
                        plural == "pods" && pod["metadata"]["labels"]["controller-uid"] == uid
                    })
                    .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
                    .collect();
                for pod in pods {
                    state.mark_deleted(&pod, 1);
                }
                self.changed.notify_all();
                self.stops_changed();
                let mut gone = object;
                gone["metadata"]["deletionTimestamp"] = json!(TIMESTAMP);
                (200, gone)
            }
            "pods" => {
                let grace = options
                    .and_then(|o| o["gracePeriodSeconds"].as_i64())
                    .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30);
                let pod = state.mark_deleted(&(route.namespace.clone(), name), grace);
                // The Job controller (before 1.26) sees one active pod fewer than it wants and
                // creates another, while the first still terminates.
                let job_key = (
                    "jobs".to_owned(),
                    route.namespace.clone(),
                    object["metadata"]["labels"]["job-name"].as_str().unwrap_or_default().to_owned(),
                );
                let replace = state
                    .objects
                    .get(&job_key)
                    .filter(|job| !job_finished(job) && job["spec"]["suspend"] != true)
                    .cloned();
                let replacement = replace.map(|job| state.add_job_pod(&job, &self.scenario));
                self.changed.notify_all();
                self.stops_changed();
                drop(state);
                if let Some((pod_key, fate, agent)) = replacement {
                    let shared = self.clone();
                    thread::spawn(move || drive(&shared, &pod_key, &fate, &agent, true));
                }
                (200, pod.unwrap_or(object))
            }
            "namespaces" => {
                // What the namespace controller does, at once: everything inside goes; pods
                // gracefully, through their drivers.
                state.objects.remove(&key);
                let inside: Vec<Key> = state.objects.keys().filter(|(_, ns, _)| *ns == name).cloned().collect();
                for k in inside {
                    if k.0 == "pods" {
                        state.mark_deleted(&(k.1.clone(), k.2.clone()), 0);
                    } else {
                        state.objects.remove(&k);
                    }
                }
                self.changed.notify_all();
                self.stops_changed();
                (200, object)
            }
            plural if PLAIN.contains(&plural) => {
                state.objects.remove(&key);
                self.changed.notify_all();
                (200, status_success(kind, &name))
            }
            _ => {
                (405, status(405, "MethodNotAllowed", format!("the double does not delete {}", kind.plural), json!({})))
            }
        }
    }

    /// PUT: replaces an object, when its `resourceVersion` is the current one.
    pub(super) fn replace(&self, route: &Route, mut object: Value) -> (u16, Value) {
        let kind = route.kind;
        let name = route.name.clone().unwrap_or_default();
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        let mut state = self.lock();
        let Some(current) = state.objects.get(&key).cloned() else {
            return (404, not_found(kind, &name));
        };
        if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
            let message = format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", kind.qualified());
            return (
                409,
                status(409, "Conflict", message, json!({"name": name, "group": kind.group, "kind": kind.plural})),
            );
        }
        let rv = state.bump();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        object["metadata"]["uid"] = current["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = json!(TIMESTAMP);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind.plural == "namespaces" {
            object["spec"] = current["spec"].clone();
            object["status"] = current["status"].clone();
        }
        state.objects.insert(key, object.clone());
        self.changed.notify_all();
        (200, object)
    }

    /// PATCH with a JSON merge patch (RFC 7386).
    pub(super) fn merge_patch(&self, route: &Route, patch: &Value) -> (u16, Value) {
        let kind = route.kind;
        let name = route.name.clone().unwrap_or_default();
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        let mut state = self.lock();
        let rv = state.bump();
        let Some(object) = state.objects.get_mut(&key) else {
            return (404, not_found(kind, &name));
        };
        json_merge(object, patch);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = object.clone();
        self.changed.notify_all();
        (200, object)
    }

    /// PATCH of a Job (JSON merge patch), then what the Job controller does about it: a
    /// deadline that has passed or `suspend: true` ends the Job and deletes its pod gracefully
    /// (with the pod's own grace period); a deadline still ahead is waited for.
    pub(super) fn patch_job(self: &Arc<Self>, route: &Route, patch: &Value) -> (u16, Value) {
        let kind = route.kind;
        let name = route.name.clone().unwrap_or_default();
        let key = (kind.plural.to_owned(), route.namespace.clone(), name.clone());
        let mut state = self.lock();
        let Some(current) = state.objects.get(&key).cloned() else {
            return (404, not_found(kind, &name));
        };
        if let Some(uid) = patch["metadata"]["uid"].as_str() {
            if current["metadata"]["uid"] != uid {
                let message = format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current["metadata"]["uid"].as_str().unwrap_or_default()
                );
                return (
                    409,
                    status(409, "Conflict", message, json!({"name": name, "group": kind.group, "kind": kind.plural})),
                );
            }
        }
        let rv = state.bump();
        let object = state.objects.get_mut(&key).expect("checked");
        json_merge(object, patch);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = object.clone();
        let started = state.job_started.get(&key).copied().unwrap_or_else(Instant::now);
        drop(state);
        self.changed.notify_all();
        let deadline = object["spec"]["activeDeadlineSeconds"].as_u64().map(|s| started + Duration::from_secs(s));
        let suspended = object["spec"]["suspend"] == true;
        if suspended || deadline.is_some_and(|d| d <= Instant::now()) {
            self.end_job(&key, if suspended { "Suspended" } else { "DeadlineExceeded" });
        } else if let Some(deadline) = deadline {
            let shared = self.clone();
            thread::spawn(move || {
                thread::sleep(deadline.saturating_duration_since(Instant::now()));
                shared.end_job(&key, "DeadlineExceeded");
            });
        }
        (200, object)
    }

    /// The Job controller ending a Job that has not finished: suspended, or `Failed` with
    /// `reason`; its active pods deleted gracefully, none created after.
    fn end_job(&self, key: &Key, reason: &str) {
        let mut state = self.lock();
        let rv = state.bump();
        let Some(job) = state.objects.get_mut(key) else { return };
        if job_finished(job) {
            return;
        }
        let now = now_rfc3339();
        job["status"] = if reason == "Suspended" {
            json!({"conditions": [
                {"type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended",
                 "lastProbeTime": now, "lastTransitionTime": now}
            ]})
        } else {
            json!({"startTime": TIMESTAMP, "failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": reason, "message": "Job was active longer than specified deadline",
                 "lastProbeTime": now, "lastTransitionTime": now}
            ]})
        };
        job["metadata"]["resourceVersion"] = json!(rv.to_string());
        let uid = job["metadata"]["uid"].clone();
        let pods: Vec<(PodKey, i64)> = state
            .objects
            .iter()
            .filter(|((plural, _, _), pod)| {
                plural == "pods"
                    && pod["metadata"]["labels"]["controller-uid"] == uid
                    && pod["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|((_, ns, name), pod)| {
                ((ns.clone(), name.clone()), pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30))
            })
            .collect();
        for (pod, grace) in pods {
            state.mark_deleted(&pod, grace);
        }
        self.changed.notify_all();
        self.stops_changed();
    }

    /// A SelfSubjectAccessReview, answered as RBAC with the scenario's denials would.
    pub(super) fn review(&self, user: &str, mut review: Value) -> Value {
        let attrs = review["spec"]["resourceAttributes"].clone();
        let text = |key: &str| attrs[key].as_str().unwrap_or_default().to_owned();
        let mut resource = text("resource");
        if !text("subresource").is_empty() {
            resource = format!("{resource}/{}", text("subresource"));
        }
        let (verb, namespace) = (text("verb"), text("namespace"));
        let denied = self.scenario.denials.iter().any(|d| d.refuses(user, &verb, &resource, &namespace));
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["kind"] = json!("SelfSubjectAccessReview");
        review["metadata"] = json!({"creationTimestamp": null});
        review["status"] = if denied {
            json!({"allowed": false})
        } else {
            json!({"allowed": true, "reason": format!("RBAC: allowed by the double for user \"{user}\"")})
        };
        review
    }

    /// What the Job controller records when the Job's pod ends.
    pub(super) fn finish_job(&self, pod: &PodKey, succeeded: bool) {
        let mut state = self.lock();
        let Some(job) = state
            .objects
            .get(&("pods".to_owned(), pod.0.clone(), pod.1.clone()))
            .and_then(|p| p["metadata"]["labels"]["job-name"].as_str().map(str::to_owned))
        else {
            return;
        };
        let rv = state.bump();
        let Some(object) = state.objects.get_mut(&("jobs".to_owned(), pod.0.clone(), job)) else {
            return;
        };
        if job_finished(object) {
            return; // ended by its deadline already
        }
        let now = now_rfc3339();
        object["status"] = if succeeded {
            json!({"startTime": TIMESTAMP, "completionTime": now, "succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
            ]})
        } else {
            json!({"startTime": TIMESTAMP, "failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
                 "lastProbeTime": now, "lastTransitionTime": now}
            ]})
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.changed.notify_all();
    }
}

/// Whether a Job has its final condition (`Complete` or `Failed`).
pub(super) fn job_finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"))
}

/// Now as `2026-11-22T10:00:00Z` (days to civil date: H. Hinnant's algorithm).
pub(super) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub(super) fn status_success(kind: &KindInfo, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "group": kind.group, "kind": kind.plural}})
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
pub(super) fn json_merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            json_merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

pub(super) fn merge_into(target: &mut Value, extra: &Value) {
    if !target.is_object() {
        *target = json!({});
    }
    if let (Some(t), Some(e)) = (target.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
}

/// Whether a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) selects `object`.
pub(super) fn selects(selector: &str, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let mut requirements = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                requirements.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    requirements.push(&selector[start..]);
    requirements.into_iter().map(str::trim).filter(|r| !r.is_empty()).all(|r| {
        let set = |values: &str| {
            values
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        if let Some(key) = r.strip_prefix('!') {
            label(key.trim()).is_none()
        } else if let Some((key, values)) = r.split_once(" notin ") {
            label(key.trim()).is_none_or(|v| !set(values).iter().any(|s| s == v))
        } else if let Some((key, values)) = r.split_once(" in ") {
            label(key.trim()).is_some_and(|v| set(values).iter().any(|s| s == v))
        } else if let Some((key, value)) = r.split_once("!=") {
            label(key.trim()) != Some(value.trim())
        } else if let Some((key, value)) = r.split_once("==").or_else(|| r.split_once('=')) {
            label(key.trim()) == Some(value.trim())
        } else {
            label(r).is_some()
        }
    })
}
