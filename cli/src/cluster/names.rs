//! Names in the cluster, for completion: the objects a target may name, and the run ids of the
//! locked namespace. Metadata only (`PartialObjectMetadata`): a completion must stay cheap on a
//! cluster of thousands of pods.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::cluster::annotations::RUN_LABEL;
use crate::cluster::api::api_error;
use crate::cluster::store::runs_selector;
use crate::error::CliError;
use crate::target::ClusterKind;

/// The names of the objects of `kind` in `namespace` (namespaces themselves: every one), sorted.
pub async fn object_names(client: &Client, kind: ClusterKind, namespace: &str) -> Result<Vec<String>, CliError> {
    match kind {
        ClusterKind::Pod => names(Api::<Pod>::namespaced(client.clone(), namespace), namespace).await,
        ClusterKind::Deployment => names(Api::<Deployment>::namespaced(client.clone(), namespace), namespace).await,
        ClusterKind::StatefulSet => names(Api::<StatefulSet>::namespaced(client.clone(), namespace), namespace).await,
        ClusterKind::DaemonSet => names(Api::<DaemonSet>::namespaced(client.clone(), namespace), namespace).await,
        ClusterKind::ReplicaSet => names(Api::<ReplicaSet>::namespaced(client.clone(), namespace), namespace).await,
        ClusterKind::Job => names(Api::<Job>::namespaced(client.clone(), namespace), namespace).await,
        ClusterKind::Service => names(Api::<Service>::namespaced(client.clone(), namespace), namespace).await,
        ClusterKind::Namespace => names(Api::<Namespace>::all(client.clone()), namespace).await,
    }
}

async fn names<K>(api: Api<K>, namespace: &str) -> Result<Vec<String>, CliError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = api.list_metadata(&ListParams::default()).await.map_err(|e| api_error(e, "list", namespace))?;
    let mut names: Vec<String> = list.items.into_iter().filter_map(|o| o.metadata.name).collect();
    names.sort();
    Ok(names)
}

/// The ids of the runs whose Jobs are in the locked namespace, sorted.
pub async fn run_ids(client: &Client, eagle_namespace: &str) -> Result<Vec<String>, CliError> {
    let api: Api<Job> = Api::namespaced(client.clone(), eagle_namespace);
    let params = ListParams::default().labels_from(&runs_selector());
    let list = api.list_metadata(&params).await.map_err(|e| api_error(e, "list", eagle_namespace))?;
    let ids: BTreeSet<String> = list.items.into_iter().filter_map(|o| o.metadata.labels?.remove(RUN_LABEL)).collect();
    Ok(ids.into_iter().collect())
}
