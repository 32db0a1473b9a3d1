//! The one HTTP exchange every receiver needs: POST a body, read the status and a bounded
//! piece of the answer. hyper with rustls, the stack kube already brings (no new crates).

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long one push may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Enough of an answer for its error message; a receiver is not trusted to be brief.
const MAX_ANSWER: usize = 64 * 1024;

/// One POST, built by a receiver's module from the profile.
#[derive(Clone, Debug)]
pub struct Request {
    pub uri: Uri,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// What this request carries, for messages: `shop/api pod/api-1`.
    pub what: String,
}

/// What the receiver answered to a successful (2xx) request.
pub struct Answer {
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// `path` appended to the base URL's path (`http://h:4040/pyroscope` + `/ingest`), with `query`.
pub fn join(base: &Uri, path: &str, query: Option<&str>) -> Result<Uri, String> {
    let mut path_and_query = base.path().trim_end_matches('/').to_owned();
    path_and_query.push_str(path);
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|e| format!("{e}"))?);
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// Sends `requests` one after the other, on their own thread and runtime: pushes run after
/// the output is written, sometimes inside the cluster code's runtime, which cannot be
/// blocked on from within.
pub fn post_all(requests: Vec<Request>, headers: &[(HeaderName, HeaderValue)]) -> Result<Vec<Answer>, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))?;
                // The system's CA certificates only when a push needs them: a minimal container
                // without any still pushes over plain HTTP.
                let tls = hyper_rustls::HttpsConnectorBuilder::new();
                let tls = match requests.iter().any(|r| r.uri.scheme_str() == Some("https")) {
                    true => {
                        tls.with_native_roots().map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
                    }
                    false => tls.with_tls_config(
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth(),
                    ),
                };
                let https = tls.https_or_http().enable_http1().build();
                runtime.block_on(async {
                    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
                    let mut answers = Vec::with_capacity(requests.len());
                    for request in requests {
                        let what = request.what.clone();
                        let answer = tokio::time::timeout(TIMEOUT, post(&client, request, headers))
                            .await
                            .map_err(|_| format!("{what}: no answer in {}s", TIMEOUT.as_secs()))?
                            .map_err(|e| format!("{what}: {e}"))?;
                        answers.push(answer);
                    }
                    Ok(answers)
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the push thread panicked".into()))
    })
}

async fn post<C>(
    client: &Client<C, Full<Bytes>>,
    request: Request,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<Answer, String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut builder = http::Request::builder()
        .method(Method::POST)
        .uri(request.uri.clone())
        .header(CONTENT_TYPE, request.content_type)
        .header(USER_AGENT, concat!("kube-eagle/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let req = builder.body(Full::new(Bytes::from(request.body))).map_err(|e| e.to_string())?;
    let response = client.request(req).await.map_err(|e| describe(&e))?;
    let status = response.status();
    let content_type =
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|s| s.to_ascii_lowercase());
    let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if !status.is_success() {
        return Err(format!("{} answered {status}{}", request.uri, said(&body)));
    }
    Ok(Answer { content_type, body })
}

/// The whole error chain of a failed request on one line (`connection refused` is in a source).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `: the first line of the answer`, printable and short, or nothing.
fn said(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if line.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", line.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_the_receivers_path_to_the_base() {
        let base: Uri = "http://127.0.0.1:4040".parse().unwrap();
        assert_eq!(join(&base, "/ingest", Some("a=b")).unwrap().to_string(), "http://127.0.0.1:4040/ingest?a=b");
        let base: Uri = "https://grafana.example/pyroscope/".parse().unwrap();
        assert_eq!(join(&base, "/ingest", None).unwrap().to_string(), "https://grafana.example/pyroscope/ingest");
    }

    #[test]
    fn an_answer_is_quoted_on_one_short_line() {
        assert_eq!(said(b"\n  bad profile\x1b[31m\nsecond"), ": bad profile[31m");
        assert_eq!(said(&[b'x'; 500]).len(), 202);
        assert_eq!(said(b""), "");
    }
}
