//! The API server: connecting (kubectl's flags), one line per API failure, the locked
//! namespace on first use, run ids, and the async runtime the cluster commands share.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::error::CliError;
use crate::verbose::{self, vlog, RequestLog};

/// Connection flags, as kubectl spells them.
#[derive(Clone, Debug)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The longest wait for one answer of the API server; `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// The most requests of one kind (creates, follows, stops, deletes) in flight at once.
    pub max_concurrent_requests: usize,
    /// `--as`: the user to act as (the API server checks that the real user may impersonate).
    pub impersonate_user: Option<String>,
    /// `--as-group`, repeatable; only with `--as`, as kubectl requires.
    pub impersonate_groups: Vec<String>,
    /// `-v N`: what the CLI logs on stderr (`crate::verbose`).
    pub verbosity: u8,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            kubeconfig: None,
            context: None,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
            impersonate_user: None,
            impersonate_groups: Vec::new(),
            verbosity: 0,
        }
    }
}

/// `--request-timeout` when not given.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `--max-concurrent-requests` when not given.
pub const MAX_CONCURRENT_REQUESTS: usize = 20;
/// Attempts of one request that failed in a way worth retrying (429, 5xx, connection).
const ATTEMPTS: u32 = 4;

/// A client, and the namespace the context defaults to.
pub async fn connect(conn: &Connection) -> Result<(Client, String), CliError> {
    verbose::set_level(conn.verbosity);
    if conn.impersonate_user.is_none() && !conn.impersonate_groups.is_empty() {
        return Err(CliError::Usage(
            "--as-group needs --as: a group is impersonated together with a user, as kubectl requires".into(),
        ));
    }
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
    let mut config = config;
    // kube sends `Impersonate-User` and one `Impersonate-Group` per group on every request
    // (its extra-headers layer), as kubectl does for `--as` and `--as-group`; flags override
    // the kubeconfig's `as:` entries, as in kubectl.
    if let Some(user) = &conn.impersonate_user {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups =
            (!conn.impersonate_groups.is_empty()).then(|| conn.impersonate_groups.clone());
    }
    // Every request gets an answer in time or fails; a read that waits longer than this on a
    // watch or a follow ends that stream, which the watcher resumes and a follow recovers
    // from by reading the finished log (an agent writes progress every second).
    config.connect_timeout = conn.request_timeout;
    config.read_timeout = conn.request_timeout;
    config.write_timeout = conn.request_timeout;
    config.reset_reader_on_write = true;
    // kube's own retry waits up to 1000 s between up to 15 attempts: ours is bounded.
    config.default_retry = false;
    let namespace = config.default_namespace.clone();
    let server = config.cluster_url.to_string();
    vlog!(
        1,
        "API server {server}{}{}, default namespace {namespace}, request timeout {}",
        conn.context.as_ref().map_or(String::new(), |c| format!(" (context {c})")),
        match &config.auth_info.impersonate {
            Some(user) => format!(
                ", acting as user {user}{}",
                config
                    .auth_info
                    .impersonate_groups
                    .as_ref()
                    .map_or(String::new(), |g| format!(" in groups {}", g.join(", ")))
            ),
            None => String::new(),
        },
        conn.request_timeout.map_or("none".to_owned(), |t| format!("{t:?}")),
    );
    let builder =
        ClientBuilder::try_from(config).map_err(|e| CliError::Cluster(format!("cannot set up the API client: {e}")))?;
    let client = builder.with_layer(&RequestLog::new(&server)).build();
    Ok((client, namespace))
}

/// Whether a failed request may succeed when sent again: the API server was too busy (429),
/// failed or was unreachable for a moment (5xx), or the connection broke or timed out.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `request` until it succeeds, fails for good, or failed transiently [`ATTEMPTS`]
/// times, waiting 250 ms, 500 ms, 1 s between attempts. `retry_if` says which failures are
/// worth another attempt (a create is retried on 429 only: a 5xx may have created it).
pub async fn with_retries<T, F, Fut>(retry_if: fn(&kube::Error) -> bool, mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match request().await {
            Err(e) if attempt < ATTEMPTS && retry_if(&e) => {
                vlog!(4, "request failed ({e}); attempt {} of {ATTEMPTS} in {delay:?}", attempt + 1);
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Whether a request failed for want of an answer in time (`--request-timeout`).
fn timed_out(e: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = err.source();
    }
    false
}

/// Only 429 (Too Many Requests): the API server says it did nothing.
pub fn throttled(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 429)
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
        other if timed_out(&other) => CliError::Cluster(format!(
            "cannot reach the API server: no answer within the request timeout ({other}); is the cluster up? (--request-timeout sets how long to wait)"
        )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status { code, ..Default::default() }))
    }

    /// Attempts `with_retries` makes against a request that fails with `code` `failures` times.
    fn attempts(retry_if: fn(&kube::Error) -> bool, code: u16, failures: u32) -> (u32, bool) {
        let calls = Cell::new(0);
        let result = runtime().unwrap().block_on(with_retries(retry_if, || {
            calls.set(calls.get() + 1);
            let fail = calls.get() <= failures;
            async move {
                if fail {
                    Err(status(code))
                } else {
                    Ok(())
                }
            }
        }));
        (calls.get(), result.is_ok())
    }

    #[test]
    fn transient_failures_are_retried_a_bounded_number_of_times() {
        assert_eq!(attempts(transient, 503, 2), (3, true));
        assert_eq!(attempts(transient, 429, 3), (4, true));
        assert_eq!(attempts(transient, 500, 10), (ATTEMPTS, false), "bounded");
        assert_eq!(attempts(transient, 403, 1), (1, false), "a refusal is final");
        assert_eq!(attempts(transient, 404, 1), (1, false));
        // A create is retried when throttled only: after a 5xx it may exist.
        assert_eq!(attempts(throttled, 503, 1), (1, false));
        assert_eq!(attempts(throttled, 429, 1), (2, true));
    }
}
