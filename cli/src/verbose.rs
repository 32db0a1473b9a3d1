//! `-v N` / `--v=N`: what the CLI says on stderr beyond its normal output, with kubectl's
//! levels, so a user who knows `kubectl -v=6` knows what to ask for.
//!
//! - 1: where it connects (server, context, user, impersonation) and who it acts for;
//! - 2: what a run does with each node: Jobs created, pods seen, follows started and ended,
//!   stops and deletes;
//! - 4: what it decides and retries: access reviews and their answers, retried requests,
//!   resumed watches, logs read again after a cut follow;
//! - 6: every API request, with its status and how long the answer took (kubectl's
//!   `GET https://... 200 OK in 5 milliseconds`);
//! - 7: also each request's headers (without credentials: kube adds them below this layer).
//!
//! The level is set once, when the command connects ([`set_level`]); [`vlog!`] costs one
//! relaxed load when the level is lower.

use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Request, Response};

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Where API requests are logged (6) and their headers (7).
pub const REQUESTS: u8 = 6;
pub const HEADERS: u8 = 7;

pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

pub fn enabled(level: u8) -> bool {
    self::level() >= level
}

/// `vlog!(2, "created Job {name}")`: one stderr line, prefixed with its level, when `-v` is at
/// least that level.
macro_rules! vlog {
    ($level:expr, $($arg:tt)*) => {
        if $crate::verbose::enabled($level) {
            eprintln!("kubectl-eagle: [v{}] {}", $level, format_args!($($arg)*));
        }
    };
}
pub(crate) use vlog;

/// A tower layer over kube's client stack that logs each request (level 6) and its headers
/// (level 7). `server` is the cluster URL, which kube's inner layers prefix to the path.
#[derive(Clone)]
pub struct RequestLog {
    server: String,
}

impl RequestLog {
    pub fn new(server: &str) -> Self {
        RequestLog { server: server.trim_end_matches('/').to_owned() }
    }
}

impl<S> tower::Layer<S> for RequestLog {
    type Service = LoggedService<S>;

    fn layer(&self, inner: S) -> LoggedService<S> {
        LoggedService { inner, server: self.server.clone() }
    }
}

#[derive(Clone)]
pub struct LoggedService<S> {
    inner: S,
    server: String,
}

impl<S, B, R> tower::Service<Request<B>> for LoggedService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !enabled(REQUESTS) {
            return Box::pin(self.inner.call(request));
        }
        let line = format!("{} {}{}", request.method(), self.server, request.uri());
        if enabled(HEADERS) {
            for (name, value) in request.headers() {
                let value =
                    if name == http::header::AUTHORIZATION { "<masked>" } else { value.to_str().unwrap_or("<binary>") };
                vlog!(HEADERS, "request header: {name}: {value}");
            }
        }
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let ms = started.elapsed().as_millis();
            match &result {
                Ok(response) => vlog!(REQUESTS, "{line} {} in {ms} milliseconds", response.status()),
                Err(e) => vlog!(REQUESTS, "{line} failed after {ms} milliseconds: {e}"),
            }
            result
        })
    }
}
