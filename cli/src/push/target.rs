//! `--push RECEIVER URL`: the receivers a profile is delivered to besides the output file, as
//! the arguments asked for them, checked before any sampling.

use http::header::{HeaderName, HeaderValue};
use http::Uri;

/// The kinds of receiver `--push` speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    /// Grafana Pyroscope's HTTP ingest API (`POST /ingest`, pprof body).
    Pyroscope,
    /// An OTLP/HTTP receiver of the profiles signal (`POST /v1development/profiles`, protobuf).
    Otlp,
}

impl Receiver {
    pub const NAMES: [&'static str; 2] = ["pyroscope", "otlp"];

    pub fn name(self) -> &'static str {
        match self {
            Receiver::Pyroscope => "pyroscope",
            Receiver::Otlp => "otlp",
        }
    }
}

/// One `--push RECEIVER URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    pub receiver: Receiver,
    /// `http(s)://host[:port][/base]`: the receiver's path is appended to the base path.
    pub url: Uri,
}

/// Every `--push` of a command, with what they share.
#[derive(Clone, Debug, Default)]
pub struct PushPlan {
    pub targets: Vec<PushTarget>,
    /// `--push-header`: sent with every push (`Authorization`, `X-Scope-OrgID`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `--push-service`: the service name profiles are stored under [default: from the target].
    pub service: Option<String>,
}

impl PushPlan {
    /// From the flags' words: `pairs` is `--push`'s values in order (receiver, URL, receiver,
    /// URL...), `headers` is `--push-header`'s `Name: value`.
    pub fn parse(pairs: &[String], headers: &[String], service: Option<String>) -> Result<PushPlan, String> {
        let mut targets = Vec::new();
        for pair in pairs.chunks(2) {
            let [receiver, url] = pair else {
                return Err(
                    "--push takes two values, the receiver and its URL: --push pyroscope http://pyroscope:4040".into(),
                );
            };
            targets.push(PushTarget { receiver: parse_receiver(receiver)?, url: parse_url(url)? });
        }
        if targets.is_empty() && (!headers.is_empty() || service.is_some()) {
            return Err("--push-header and --push-service go with --push RECEIVER URL".into());
        }
        if let Some(s) = &service {
            if s.is_empty() || s.chars().any(|c| c.is_control() || "{},=\"".contains(c)) {
                return Err(format!(
                    "--push-service {s:?}: a service name cannot be empty or contain {{ }} , = \" or control characters"
                ));
            }
        }
        let headers = headers.iter().map(|h| parse_header(h)).collect::<Result<_, _>>()?;
        Ok(PushPlan { targets, headers, service })
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

fn parse_receiver(word: &str) -> Result<Receiver, String> {
    match word {
        "pyroscope" => Ok(Receiver::Pyroscope),
        "otlp" => Ok(Receiver::Otlp),
        _ => Err(format!(
            "--push {word:?}: unknown receiver; the receivers are {} (--push pyroscope http://pyroscope:4040)",
            Receiver::NAMES.join(", ")
        )),
    }
}

fn parse_url(word: &str) -> Result<Uri, String> {
    let uri: Uri = word.parse().map_err(|e| format!("--push URL {word:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|h| !h.is_empty()) => {}
        _ => return Err(format!("--push URL {word:?}: give http:// or https:// and a host (http://pyroscope:4040)")),
    }
    if uri.query().is_some() {
        return Err(format!("--push URL {word:?}: leave out the query; kube-eagle writes the receiver's own"));
    }
    Ok(uri)
}

fn parse_header(word: &str) -> Result<(HeaderName, HeaderValue), String> {
    let bad = |why: String| {
        format!("--push-header {word:?}: {why}; write it as 'Name: value' (--push-header 'X-Scope-OrgID: team-a')")
    };
    let (name, value) = word.split_once(':').ok_or_else(|| bad("no ':'".into()))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| bad(format!("bad name: {e}")))?;
    let mut value = HeaderValue::try_from(value.trim()).map_err(|e| bad(format!("bad value: {e}")))?;
    // Credentials stay out of debug output.
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_receivers_urls_and_headers() {
        let plan = PushPlan::parse(
            &words("pyroscope http://127.0.0.1:4040 otlp https://collector:4318/base"),
            &["X-Scope-OrgID: team-a".into()],
            Some("shop/api".into()),
        )
        .unwrap();
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.targets[0].receiver, Receiver::Pyroscope);
        assert_eq!(plan.targets[1].url.path(), "/base");
        assert_eq!(plan.headers[0].0.as_str(), "x-scope-orgid");
        assert_eq!(plan.service.as_deref(), Some("shop/api"));
    }

    #[test]
    fn refuses_with_one_line_that_says_what_to_do() {
        for (pairs, headers, service) in [
            ("jaeger http://x", vec![], None),
            ("pyroscope ftp://x", vec![], None),
            ("pyroscope /just/a/path", vec![], None),
            ("pyroscope http://x/?name=y", vec![], None),
            ("pyroscope http://x", vec!["no colon".to_owned()], None),
            ("pyroscope http://x", vec!["bad name: v".to_owned()], None),
            ("pyroscope http://x", vec![], Some("a{b}".to_owned())),
            ("", vec!["A: b".to_owned()], None),
        ] {
            let err = PushPlan::parse(&words(pairs), &headers, service).unwrap_err();
            assert!(!err.contains('\n') && err.contains("--push"), "{err}");
        }
    }
}
