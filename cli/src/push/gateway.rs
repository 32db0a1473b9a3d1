//! `--push-gateway URL`: a window's Prometheus text sent to a Pushgateway, as the seed's set-up
//! feeds its dashboards. The protocol is Prometheus' own: `PUT URL/metrics/job/JOB{/LABEL/VALUE}`
//! with the text exposition format as the body; PUT replaces every metric of that group, so
//! pushing a new window of the same run (or of the same local target) leaves no stale series.
//! A label value that holds a `/` (or is empty) is written `LABEL@base64/VALUE`, base64url.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The `job` label of every group kube-eagle pushes.
pub const JOB: &str = "kube-eagle-net";

/// How long the push may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A Pushgateway's address, checked before the window starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushGateway {
    /// `http://host:port/prefix`, without a trailing `/`.
    base: String,
}

impl PushGateway {
    /// `http://HOST:PORT[/PATH]`. https is refused with a way out: this client speaks plain
    /// HTTP, which is how a gateway is reached inside a cluster or through `kubectl port-forward`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("--push-gateway `{url}`: not a URL ({e})"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "--push-gateway `{url}`: https is not supported; reach the gateway over http (inside the cluster, or through `kubectl port-forward`)"
                ))
            }
            _ => return Err(format!("--push-gateway `{url}`: expected http://HOST:PORT, e.g. http://127.0.0.1:9091")),
        }
        if uri.host().is_none() || uri.query().is_some() {
            return Err(format!("--push-gateway `{url}`: expected http://HOST:PORT[/PATH], no query"));
        }
        Ok(PushGateway { base: url.trim_end_matches('/').to_owned() })
    }

    /// The group's URL: `BASE/metrics/job/JOB/LABEL/VALUE...`.
    pub fn group_url(&self, labels: &[(&str, &str)]) -> String {
        let mut url = format!("{}/metrics/job/{JOB}", self.base);
        for (name, value) in labels {
            if value.is_empty() || value.contains('/') {
                let encoded = base64::engine::general_purpose::URL_SAFE.encode(value);
                // The protocol spells an empty value `=`.
                let encoded = if encoded.is_empty() { "=".to_owned() } else { encoded };
                url.push_str(&format!("/{name}@base64/{encoded}"));
            } else {
                url.push_str(&format!("/{name}/{}", percent_encode(value)));
            }
        }
        url
    }

    /// PUTs `text` (the exposition format) as the group `labels`; the error is one line.
    pub fn push(&self, labels: &[(&str, &str)], text: String) -> Result<String, String> {
        let url = self.group_url(labels);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the push: {e}"))?;
        runtime.block_on(async {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let request = http::Request::put(&url)
                .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(text)))
                .map_err(|e| format!("--push-gateway {url}: {e}"))?;
            let answer = tokio::time::timeout(TIMEOUT, async {
                let response = client.request(request).await.map_err(|e| format!("{e}"))?;
                let status = response.status();
                let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Ok::<_, String>((status, body))
            })
            .await
            .map_err(|_| format!("the push gateway at {url} did not answer within {}s", TIMEOUT.as_secs()))?;
            let (status, body) = answer.map_err(|e| format!("cannot reach the push gateway at {url}: {e}"))?;
            if !status.is_success() {
                let why = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().replace('\n', " ");
                return Err(format!("the push gateway at {url} refused the metrics: {status}: {why}"));
            }
            Ok(url)
        })
    }
}

/// A path segment: unreserved characters kept, the rest `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn only_plain_http_addresses_are_taken() {
        assert!(PushGateway::parse("http://127.0.0.1:9091/").is_ok());
        assert!(PushGateway::parse("https://gw:9091").unwrap_err().contains("port-forward"));
        assert!(PushGateway::parse("gw:9091").unwrap_err().contains("http://HOST:PORT"));
        assert!(PushGateway::parse("http://gw:9091/?x=1").unwrap_err().contains("no query"));
    }

    #[test]
    fn groups_are_spelled_as_the_protocol_says() {
        let gw = PushGateway::parse("http://gw:9091/prefix/").unwrap();
        assert_eq!(
            gw.group_url(&[("run", "9e2017d3"), ("target", "deployment/web -n shop"), ("empty", "")]),
            "http://gw:9091/prefix/metrics/job/kube-eagle-net/run/9e2017d3/target@base64/ZGVwbG95bWVudC93ZWIgLW4gc2hvcA==/empty@base64/="
        );
        assert_eq!(gw.group_url(&[("pod", "a b")]), "http://gw:9091/prefix/metrics/job/kube-eagle-net/pod/a%20b");
    }

    /// A loopback double of a Pushgateway: answers one request with `status`, hands back what
    /// it received (request line, headers, body).
    fn gateway(status: &str) -> (String, std::thread::JoinHandle<(String, Vec<String>, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let status = status.to_owned();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end().to_owned();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                headers.push(h);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 9\r\nconnection: close\r\n\r\nbad label");
            (&stream).write_all(answer.as_bytes()).unwrap();
            (line.trim_end().to_owned(), headers, String::from_utf8(body).unwrap())
        });
        (url, handle)
    }

    #[test]
    fn a_push_is_a_put_of_the_text_format_to_the_group() {
        let (url, gw) = gateway("200 OK");
        let text = "# TYPE eagle_tcp_retransmits_total counter\neagle_tcp_retransmits_total{pid=\"7\"} 3\n".to_owned();
        let pushed = PushGateway::parse(&url).unwrap().push(&[("run", "abc")], text.clone()).unwrap();
        let (line, headers, body) = gw.join().unwrap();
        assert_eq!(line, "PUT /metrics/job/kube-eagle-net/run/abc HTTP/1.1");
        assert!(
            headers.iter().any(|h| h.eq_ignore_ascii_case("content-type: text/plain; version=0.0.4")),
            "{headers:?}"
        );
        assert_eq!(body, text);
        assert_eq!(pushed, format!("{url}/metrics/job/kube-eagle-net/run/abc"));
    }

    #[test]
    fn a_refusal_is_one_line_with_the_gateways_reason() {
        let (url, gw) = gateway("400 Bad Request");
        let error = PushGateway::parse(&url).unwrap().push(&[], "x 1\n".into()).unwrap_err();
        gw.join().unwrap();
        assert!(error.contains("refused") && error.contains("400") && error.contains("bad label"), "{error}");
        assert!(!error.contains('\n'));
        // Nobody listening: said so, at once.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let error = PushGateway::parse(&format!("http://{closed}")).unwrap().push(&[], "x 1\n".into()).unwrap_err();
        assert!(error.contains("cannot reach the push gateway"), "{error}");
    }
}
