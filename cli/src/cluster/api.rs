//! The API server: connecting (kubectl's flags), one line per API failure, the locked
//! namespace on first use, run ids, and the async runtime the cluster commands share.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::error::CliError;

/// Connection flags, as kubectl spells them.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// A client, and the namespace the context defaults to.
pub async fn connect(conn: &Connection) -> Result<(Client, String), CliError> {
    let kubeconfig = match &conn.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|e| {
            CliError::Cluster(format!("cannot read kubeconfig `{}`: {e}; check --kubeconfig", path.display()))
        })?,
        None => Kubeconfig::read().map_err(|e| {
            CliError::Cluster(format!(
                "no usable kubeconfig ({e}): set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config"
            ))
        })?,
    };
    let options = KubeConfigOptions { context: conn.context.clone(), ..Default::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| {
        CliError::Cluster(format!(
            "kubeconfig: {e}{}",
            conn.context.as_ref().map_or(String::new(), |c| format!(" (context {c})"))
        ))
    })?;
    let namespace = config.default_namespace.clone();
    let client =
        Client::try_from(config).map_err(|e| CliError::Cluster(format!("cannot set up the API client: {e}")))?;
    Ok((client, namespace))
}

/// One line for an API failure, with what to do about it.
pub fn api_error(e: kube::Error, what: &str, namespace: &str) -> CliError {
    match e {
        kube::Error::Api(status) if status.code == 404 => {
            CliError::NotFound(format!("{what} not found in namespace {namespace} (check the name, or -n)"))
        }
        kube::Error::Api(status) if status.code == 403 => CliError::Forbidden(format!(
            "forbidden: {}; ask your cluster admin for that permission (`kubectl eagle init` prints the RBAC)",
            status.message
        )),
        kube::Error::Api(status) => {
            CliError::Failed(format!("{what}: the API server refused: {} ({})", status.message, status.code))
        }
        other => CliError::Cluster(format!(
            "cannot reach the API server ({other}): is the cluster up, and is the kubeconfig's server address right?"
        )),
    }
}

/// Creates the locked namespace on first use. The Pod Security label allows privileged pods
/// there only; on clusters without Pod Security admission (before 1.23) it is inert.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), CliError> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => match api.create(&PostParams::default(), &super::plan::locked_namespace(name)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(api_error(e, &format!("namespace {name}"), name)),
        },
        // Reading namespaces is cluster-scoped; a user allowed only inside it may still run.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(api_error(e, &format!("namespace {name}"), name)),
    }
}

/// A short random id for a run: names its Jobs and labels everything it creates.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    if bytes == [0; 4] {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (t.as_nanos() as u32 ^ std::process::id()).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The runtime of the commands that talk to the API server: one thread is plenty for a few
/// hundred requests, and keeps the CLI's own CPU use out of the profiles it takes.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}
