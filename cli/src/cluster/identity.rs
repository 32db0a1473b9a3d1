//! Who the CLI acts for: the name a run records (`kube-eagle.io/user`), and the one `list` and
//! `clean` limit themselves to unless `--all-users`.
//!
//! The API server says it best (SelfSubjectReview, `authentication.k8s.io/v1` from Kubernetes
//! 1.28, v1beta1 on 1.27, v1alpha1 on 1.26 when enabled): the name its authenticator gives the
//! credentials, or the impersonated one. Older servers (the lab's 1.20) do not serve it; then
//! `--as`, else the name of the kubeconfig's user entry, which is the name the server knows for
//! kubeadm's and most providers' kubeconfigs, but only a label for others: said at `-v 1`.

use kube::config::Kubeconfig;
use kube::Client;
use serde_json::{json, Value};

use super::api::Connection;
use crate::verbose::vlog;

const REVIEW_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha1"];

/// The requesting user's name; `None` when nothing says.
pub async fn whoami(client: &Client, conn: &Connection) -> Option<String> {
    for version in REVIEW_VERSIONS {
        let body = json!({"apiVersion": format!("authentication.k8s.io/{version}"), "kind": "SelfSubjectReview"});
        let request = http::Request::post(format!("/apis/authentication.k8s.io/{version}/selfsubjectreviews"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).expect("JSON"))
            .expect("a valid request");
        match client.request::<Value>(request).await {
            Ok(review) => {
                if let Some(name) = review["status"]["userInfo"]["username"].as_str().filter(|n| !n.is_empty()) {
                    vlog!(1, "acting as user {name} (SelfSubjectReview {version})");
                    return Some(name.to_owned());
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => {
                vlog!(4, "SelfSubjectReview {version}: {e}");
                break;
            }
        }
    }
    if let Some(user) = &conn.impersonate_user {
        return Some(user.clone());
    }
    let name = kubeconfig_user(conn);
    if let Some(name) = &name {
        vlog!(1, "the API server does not say who you are (no SelfSubjectReview): runs are recorded as {name}, the kubeconfig's user entry");
    }
    name
}

/// The name of the user entry the kubeconfig's (current or `--context`) context uses.
fn kubeconfig_user(conn: &Connection) -> Option<String> {
    let config = match &conn.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    let context_name = conn.context.clone().or(config.current_context.clone())?;
    let context = config.contexts.iter().find(|c| c.name == context_name)?.context.as_ref()?;
    context.user.clone().filter(|u| !u.is_empty())
}
