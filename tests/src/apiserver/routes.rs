//! The API's paths: which kind, namespace, name and subresource a request is for, and the
//! handler that dispatches it.

use super::*;

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

pub(super) struct KindInfo {
    pub(super) plural: &'static str,
    pub(super) group: &'static str,
    pub(super) kind: &'static str,
    pub(super) namespaced: bool,
}

pub(super) const KINDS: [KindInfo; 19] = [
    KindInfo { plural: "pods", group: "", kind: "Pod", namespaced: true },
    KindInfo { plural: "events", group: "", kind: "Event", namespaced: true },
    KindInfo { plural: "services", group: "", kind: "Service", namespaced: true },
    KindInfo { plural: "namespaces", group: "", kind: "Namespace", namespaced: false },
    KindInfo { plural: "deployments", group: "apps", kind: "Deployment", namespaced: true },
    KindInfo { plural: "statefulsets", group: "apps", kind: "StatefulSet", namespaced: true },
    KindInfo { plural: "daemonsets", group: "apps", kind: "DaemonSet", namespaced: true },
    KindInfo { plural: "replicasets", group: "apps", kind: "ReplicaSet", namespaced: true },
    KindInfo { plural: "jobs", group: "batch", kind: "Job", namespaced: true },
    KindInfo { plural: "clusterroles", group: "rbac.authorization.k8s.io", kind: "ClusterRole", namespaced: false },
    KindInfo {
        plural: "clusterrolebindings",
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRoleBinding",
        namespaced: false,
    },
    KindInfo { plural: "roles", group: "rbac.authorization.k8s.io", kind: "Role", namespaced: true },
    KindInfo { plural: "rolebindings", group: "rbac.authorization.k8s.io", kind: "RoleBinding", namespaced: true },
    KindInfo {
        plural: "selfsubjectaccessreviews",
        group: "authorization.k8s.io",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
    },
    KindInfo {
        plural: "selfsubjectreviews",
        group: "authentication.k8s.io",
        kind: "SelfSubjectReview",
        namespaced: false,
    },
    KindInfo { plural: "resourcequotas", group: "", kind: "ResourceQuota", namespaced: true },
    KindInfo { plural: "networkpolicies", group: "networking.k8s.io", kind: "NetworkPolicy", namespaced: true },
    KindInfo {
        plural: "validatingadmissionpolicies",
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicy",
        namespaced: false,
    },
    KindInfo {
        plural: "validatingadmissionpolicybindings",
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicyBinding",
        namespaced: false,
    },
];

/// Kinds the double stores as they are posted (no controller behind them).
pub(super) const PLAIN: [&str; 9] = [
    "namespaces",
    "clusterroles",
    "clusterrolebindings",
    "roles",
    "rolebindings",
    "resourcequotas",
    "networkpolicies",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
];

/// Kinds a server before Kubernetes 1.30 (without the beta API enabled) does not serve.
const ADMISSION_POLICIES: [&str; 2] = ["validatingadmissionpolicies", "validatingadmissionpolicybindings"];

impl KindInfo {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".into()
        } else {
            format!("{}/v1", self.group)
        }
    }

    /// `jobs.batch`, `pods`: how the API server names a resource in messages.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.into()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub(super) struct Route {
    pub(super) kind: &'static KindInfo,
    pub(super) namespace: String,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

pub(super) fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let find = |plural: &str| KINDS.iter().find(|k| k.plural == plural && k.group == group);
    match rest {
        ["namespaces"] => Some(Route { kind: find("namespaces")?, namespace: String::new(), name: None, sub: None }),
        ["namespaces", name] => {
            Some(Route { kind: find("namespaces")?, namespace: String::new(), name: Some((*name).into()), sub: None })
        }
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            let kind = find(plural).filter(|k| k.namespaced)?;
            Some(Route {
                kind,
                namespace: (*ns).into(),
                name: tail.first().map(|s| (*s).to_owned()),
                sub: tail.get(1).map(|s| (*s).to_owned()),
            })
        }
        // A cluster-scoped collection, or a namespaced kind across all namespaces.
        [plural] => Some(Route { kind: find(plural)?, namespace: String::new(), name: None, sub: None }),
        [plural, name] => {
            let kind = find(plural).filter(|k| !k.namespaced)?;
            Some(Route { kind, namespace: String::new(), name: Some((*name).into()), sub: None })
        }
        _ => None,
    }
}

pub(super) fn status(code: u16, reason: &str, message: String, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "details": details, "code": code})
}

pub(super) fn not_found(kind: &KindInfo, name: &str) -> Value {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", kind.qualified()),
        json!({"name": name, "group": kind.group, "kind": kind.plural}),
    )
}

pub(super) fn handle(shared: &Arc<Shared>, req: &HttpRequest, w: &mut TcpStream) -> io::Result<()> {
    let body = serde_json::from_slice::<Value>(&req.body).ok();
    let index = {
        let mut state = shared.lock();
        state.requests.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            body: body.clone(),
            status: 0,
            headers: req.headers.clone(),
        });
        shared.changed.notify_all();
        state.requests.len() - 1
    };
    if req.method == "GET" && req.path == "/version" {
        let version = json!({
            "major": "1", "minor": "20", "gitVersion": "v1.20.2", "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56",
            "gitTreeState": "clean", "buildDate": "2021-01-13T13:20:00Z", "goVersion": "go1.15.5", "compiler": "gc",
            "platform": "linux/amd64"
        });
        return respond(shared, index, w, 200, &version);
    }
    // The user the request acts for: `Impersonate-User` (kubectl's `--as`), else the
    // kubeconfig's; and the groups it is in.
    let header =
        |name: &str| -> Vec<String> { req.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect() };
    let user = header("impersonate-user").into_iter().next().unwrap_or_else(|| shared.scenario.user.clone());
    let mut groups = header("impersonate-group");
    groups.push("system:authenticated".into());
    if req.method == "GET" && req.path == "/api/v1/nodes" {
        // The nodes the world's pods run on, as metadata (what `init` counts for its quota).
        let nodes = shared.lock().nodes.clone();
        let items: Vec<Value> = nodes
            .iter()
            .map(|n| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": n}}))
            .collect();
        let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "items": items});
        return respond(shared, index, w, 200, &list);
    }
    if req.method == "GET" && req.path == "/apis/admissionregistration.k8s.io/v1" {
        let mut resources = vec![
            json!({"name": "validatingwebhookconfigurations", "singularName": "", "namespaced": false, "kind": "ValidatingWebhookConfiguration", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
            json!({"name": "mutatingwebhookconfigurations", "singularName": "", "namespaced": false, "kind": "MutatingWebhookConfiguration", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
        ];
        if shared.scenario.admission_policies {
            for kind in KINDS.iter().filter(|k| ADMISSION_POLICIES.contains(&k.plural)) {
                resources.push(json!({"name": kind.plural, "singularName": "", "namespaced": false, "kind": kind.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}));
            }
        }
        let list = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "admissionregistration.k8s.io/v1", "resources": resources});
        return respond(shared, index, w, 200, &list);
    }
    let served = |r: &Route| {
        (shared.scenario.admission_policies || !ADMISSION_POLICIES.contains(&r.kind.plural))
            && (shared.scenario.self_subject_review || r.kind.plural != "selfsubjectreviews")
    };
    let Some(route) = route(&req.path).filter(served) else {
        let page = status(404, "NotFound", "the server could not find the requested resource".into(), json!({}));
        return respond(shared, index, w, 404, &page);
    };
    let verb = match (req.method.as_str(), &route.name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if req.query.iter().any(|(k, v)| k == "watch" && (v == "true" || v == "1")) => "watch",
        ("GET", None) => "list",
        ("POST", None) => "create",
        ("DELETE", Some(_)) => "delete",
        ("PUT", Some(_)) => "update",
        ("PATCH", Some(_)) => "patch",
        _ => "",
    };
    let resource = match &route.sub {
        Some(sub) => format!("{}/{sub}", route.kind.plural),
        None => route.kind.plural.to_owned(),
    };
    if let Some(denied) = shared.denied(&user, verb, &resource, &route) {
        return respond(shared, index, w, 403, &denied);
    }
    let param = |key: &str| req.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    match (verb, route.sub.as_deref()) {
        ("get", Some("log")) if route.kind.plural == "pods" => {
            let tail = param("tailLines").and_then(|t| t.parse().ok());
            pod_log(shared, index, w, &route, param("follow") == Some("true"), tail)
        }
        ("create", None) if route.kind.plural == "selfsubjectaccessreviews" => {
            let value = shared.review(&user, body.unwrap_or_else(|| json!({})));
            respond(shared, index, w, 201, &value)
        }
        ("create", None) if route.kind.plural == "selfsubjectreviews" => {
            let value = json!({
                "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "status": {"userInfo": {"username": user, "groups": groups}}
            });
            respond(shared, index, w, 201, &value)
        }
        ("get", None) => {
            let (code, value) = shared.get(&route);
            respond(shared, index, w, code, &value)
        }
        ("list", None) => {
            let mut value = shared.list(&route, param("labelSelector").unwrap_or_default());
            if let (Some(fields), Some(items)) = (param("fieldSelector"), value["items"].as_array_mut()) {
                items.retain(|item| selects_fields(fields, item));
            }
            respond(shared, index, w, 200, &value)
        }
        ("watch", None) if route.kind.plural == "pods" => {
            watch_pods(shared, index, w, &route, param("labelSelector").unwrap_or_default(), param("resourceVersion"))
        }
        ("create", None) => {
            let job = route.kind.plural == "jobs";
            if job {
                let mut state = shared.lock();
                if state.throttled < shared.scenario.throttled_creates {
                    state.throttled += 1;
                    drop(state);
                    let value = status(
                        429,
                        "TooManyRequests",
                        "Too many requests, please try again later.".into(),
                        json!({"retryAfterSeconds": 1}),
                    );
                    return respond(shared, index, w, 429, &value);
                }
                state.creates_in_flight += 1;
                state.peak_creates_in_flight = state.peak_creates_in_flight.max(state.creates_in_flight);
                drop(state);
                thread::sleep(shared.scenario.job_create_delay);
            }
            let dry_run = param("dryRun") == Some("All");
            let (code, value) = match body {
                Some(body) => shared.create(&route, body, dry_run),
                None => (400, status(400, "BadRequest", "the body of the request was not JSON".into(), json!({}))),
            };
            if job {
                shared.lock().creates_in_flight -= 1;
            }
            respond(shared, index, w, code, &value)
        }
        ("delete", None) => {
            if route.kind.plural == "jobs" {
                thread::sleep(shared.scenario.job_delete_delay);
                if shared.scenario.job_deletes_fail {
                    let failed = status(503, "ServiceUnavailable", "the API server is going away".into(), json!({}));
                    return respond(shared, index, w, 503, &failed);
                }
            }
            let (code, value) = shared.delete(&route, body.as_ref());
            respond(shared, index, w, code, &value)
        }
        ("update", None) if PLAIN.contains(&route.kind.plural) => {
            let (code, value) = match body {
                Some(body) => shared.replace(&route, body),
                None => (400, status(400, "BadRequest", "the body of the request was not JSON".into(), json!({}))),
            };
            respond(shared, index, w, code, &value)
        }
        ("patch", None) if route.kind.plural == "jobs" => {
            let (code, value) = match body {
                Some(body) => shared.patch_job(&route, &body),
                None => (400, status(400, "BadRequest", "the body of the request was not JSON".into(), json!({}))),
            };
            respond(shared, index, w, code, &value)
        }
        ("patch", None) if route.kind.plural == "namespaces" => {
            let (code, value) = match body {
                Some(body) => shared.merge_patch(&route, &body),
                None => (400, status(400, "BadRequest", "the body of the request was not JSON".into(), json!({}))),
            };
            respond(shared, index, w, code, &value)
        }
        _ => {
            let value = status(
                405,
                "MethodNotAllowed",
                format!("{} is not supported by the double on {}", req.method, req.path),
                json!({}),
            );
            respond(shared, index, w, 405, &value)
        }
    }
}

pub(super) fn respond(shared: &Shared, index: usize, w: &mut TcpStream, code: u16, value: &Value) -> io::Result<()> {
    shared.set_status(index, code);
    write_body(w, code, "application/json", &serde_json::to_vec(value).expect("json"))
}

/// Whether a field selector (`involvedObject.kind=Job,reason=FailedCreate`, equality only)
/// selects `object`.
pub(super) fn selects_fields(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|r| !r.trim().is_empty()).all(|requirement| {
        let (path, want) =
            requirement.split_once("==").or_else(|| requirement.split_once('=')).unwrap_or((requirement, ""));
        let value = path.trim().split('.').fold(object, |v, key| &v[key]);
        value.as_str() == Some(want.trim())
    })
}
