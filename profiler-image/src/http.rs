//! HTTP/1.x requests recovered from the first bytes of a connection's reads and writes (what
//! the network program copies): request lines, status lines, and the time between them.
//!
//! Pure and bounded: every byte here comes from a profiled process or its peers, so nothing is
//! trusted. Lines that do not parse are ignored; per-connection queues and the number of
//! connections tracked have caps, past which the oldest state is dropped and counted.

use std::collections::{BTreeMap, HashMap, VecDeque};

use eagle_proto::{Direction, LatencyHistogram};

/// The network program sends only what begins with one of these or with `HTTP` (its
/// `opens_http_message`, by their first four bytes): keep both lists in step.
const METHODS: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"];

/// Requests awaiting their response on one connection (pipelining); older ones are dropped.
const MAX_PENDING: usize = 64;
/// Connections with requests in flight.
const MAX_CONNECTIONS: usize = 65_536;

/// `METHOD PATH HTTP/1.x`: the method and the path's pattern. The bytes may stop early (the
/// program copies at most 128): a path cut short is kept as far as it goes.
pub fn request_line(data: &[u8]) -> Option<(&'static str, String)> {
    let space = data.iter().position(|&b| b == b' ')?;
    let method = METHODS.iter().find(|m| m.as_bytes() == &data[..space])?;
    let rest = &data[space + 1..];
    if rest.first() != Some(&b'/') && rest.first() != Some(&b'*') {
        return None;
    }
    let end = rest.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(rest.len());
    let target = std::str::from_utf8(&rest[..end]).ok()?;
    if end < rest.len() && !rest[end + 1..].starts_with(b"HTTP/1.") && rest[end] == b' ' {
        return None;
    }
    Some((method, path_pattern(target)))
}

/// `HTTP/1.x NNN ...`: the status code.
pub fn status_line(data: &[u8]) -> Option<u16> {
    let rest = data.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    (100..=599).contains(&code).then_some(code)
}

/// The path without its query, each segment that is a number or an id replaced, so one route
/// is one row: `/api/users/42/orders?x=1` -> `/api/users/{n}/orders`.
pub fn path_pattern(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "{n}"
            } else if looks_like_id(s) {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    segments.join("/")
}

/// UUIDs, hex digests and other long tokens with digits in them.
fn looks_like_id(s: &str) -> bool {
    let hex = s.bytes().filter(u8::is_ascii_hexdigit).count();
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let hexish = s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (hexish && hex >= 8 && digits > 0)
        || (s.len() >= 16 && digits >= 2 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// Who and what a request was: the row it counts in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteKey {
    pub tgid: u32,
    pub direction: Direction,
    /// The connection's other end, as the stream writes peers (for the service map).
    pub peer: String,
    pub method: &'static str,
    pub path: String,
    pub status: u16,
}

#[derive(Clone, Debug, Default)]
pub struct RouteCounts {
    pub requests: u64,
    pub latency_us: LatencyHistogram,
}

#[derive(Debug, Default)]
struct Connection {
    /// Requests the process read and has not answered yet (it serves).
    served: VecDeque<(&'static str, String, u64)>,
    /// Requests the process wrote and got no answer to yet (it calls).
    made: VecDeque<(&'static str, String, u64)>,
    tgid: u32,
    peer: String,
    last_ns: u64,
}

/// Pairs requests with responses per connection and counts them per route.
#[derive(Debug, Default)]
pub struct HttpTracker {
    connections: HashMap<u64, Connection>,
    routes: BTreeMap<RouteKey, RouteCounts>,
    /// Requests dropped unanswered to keep within the caps.
    pub dropped: u64,
}

impl HttpTracker {
    /// The first bytes of one read (`write == false`) or write of `tgid` on connection `sock`
    /// (its number from the network program), whose other end `peer` names (asked only when a
    /// request opens a connection's record).
    pub fn data(
        &mut self,
        sock: u64,
        tgid: u32,
        peer: impl FnOnce() -> String,
        write: bool,
        time_ns: u64,
        bytes: &[u8],
    ) {
        if let Some((method, path)) = request_line(bytes) {
            if !self.connections.contains_key(&sock) && self.connections.len() >= MAX_CONNECTIONS {
                self.evict_oldest();
            }
            let conn =
                self.connections.entry(sock).or_insert_with(|| Connection { peer: peer(), ..Connection::default() });
            conn.tgid = tgid;
            conn.last_ns = time_ns;
            let queue = if write { &mut conn.made } else { &mut conn.served };
            if queue.len() >= MAX_PENDING {
                queue.pop_front();
                self.dropped += 1;
            }
            queue.push_back((method, path, time_ns));
        } else if let Some(status) = status_line(bytes) {
            let Some(conn) = self.connections.get_mut(&sock) else { return };
            // A status line written answers a request read, and one read answers one written.
            let (queue, direction) =
                if write { (&mut conn.served, Direction::Inbound) } else { (&mut conn.made, Direction::Outbound) };
            let Some((method, path, started)) = queue.pop_front() else { return };
            let route = RouteKey { tgid: conn.tgid, direction, peer: conn.peer.clone(), method, path, status };
            let counts = self.routes.entry(route).or_default();
            counts.requests += 1;
            counts.latency_us.record(time_ns.saturating_sub(started) / 1000);
            if conn.served.is_empty() && conn.made.is_empty() {
                self.connections.remove(&sock);
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((&sock, _)) = self.connections.iter().min_by_key(|(_, c)| c.last_ns) {
            if let Some(c) = self.connections.remove(&sock) {
                self.dropped += (c.served.len() + c.made.len()) as u64;
            }
        }
    }

    /// Every route with its counts; requests still unanswered count under status 0.
    pub fn finish(mut self) -> BTreeMap<RouteKey, RouteCounts> {
        for conn in self.connections.into_values() {
            for (queue, direction) in [(conn.served, Direction::Inbound), (conn.made, Direction::Outbound)] {
                for (method, path, _) in queue {
                    let key = RouteKey { tgid: conn.tgid, direction, peer: conn.peer.clone(), method, path, status: 0 };
                    self.routes.entry(key).or_default().requests += 1;
                }
            }
        }
        self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_status_lines_parse_and_nothing_else_does() {
        assert_eq!(
            request_line(b"GET /api/items/42?x=1 HTTP/1.1\r\nHost: a\r\n"),
            Some(("GET", "/api/items/{n}".into()))
        );
        assert_eq!(
            request_line(b"POST /u/3f2a9c1e-77aa-4bb0-9e11-0a1b2c3d4e5f/x HTTP/1.0\r\n"),
            Some(("POST", "/u/{id}/x".into()))
        );
        assert_eq!(request_line(b"GET /cut-short-by-the-cop"), Some(("GET", "/cut-short-by-the-cop".into())));
        assert_eq!(request_line(b"GETS / HTTP/1.1"), None);
        assert_eq!(request_line(b"GET / SMTP/1.0"), None);
        assert_eq!(request_line(b"GET nothing"), None);
        assert_eq!(request_line(b"\x16\x03\x01\x02\x00"), None);
        assert_eq!(status_line(b"HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_line(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(status_line(b"HTTP/1.1 20"), None);
        assert_eq!(status_line(b"HTTP/1.1 999 x"), None);
        assert_eq!(status_line(b"HTTP/2 200"), None);
    }

    #[test]
    fn responses_answer_requests_in_order_on_each_connection() {
        let peer = |sock: u64| format!("10.0.0.{sock}");
        let mut t = HttpTracker::default();
        t.data(1, 10, || peer(1), false, 1_000_000, b"GET /a/1 HTTP/1.1\r\n");
        t.data(1, 10, || peer(1), false, 2_000_000, b"GET /a/2 HTTP/1.1\r\n");
        t.data(2, 10, || peer(2), true, 2_500_000, b"GET /b HTTP/1.1\r\n"); // a call it makes
        t.data(1, 10, || peer(1), true, 5_000_000, b"HTTP/1.1 200 OK\r\n");
        t.data(1, 10, || peer(1), true, 9_000_000, b"HTTP/1.1 500 Oops\r\n");
        t.data(2, 10, || peer(2), false, 3_500_000, b"HTTP/1.1 404 Not Found\r\n");
        t.data(3, 10, || peer(3), true, 1, b"HTTP/1.1 200 OK\r\n"); // no request seen: ignored
        t.data(4, 10, || peer(4), false, 1, b"DELETE /x HTTP/1.1\r\n"); // unanswered
        let routes = t.finish();
        type Row<'a> = (Direction, &'a str, &'a str, &'a str, u16, u64, Option<f64>);
        let rows: Vec<Row> = routes
            .iter()
            .map(|(k, c)| {
                let median = c.latency_us.quantile(0.5);
                (k.direction, k.peer.as_str(), k.method, k.path.as_str(), k.status, c.requests, median)
            })
            .collect();
        assert_eq!(
            rows,
            [
                (Direction::Outbound, "10.0.0.2", "GET", "/b", 404, 1, Some(mid(1000))),
                (Direction::Inbound, "10.0.0.1", "GET", "/a/{n}", 200, 1, Some(mid(4000))),
                (Direction::Inbound, "10.0.0.1", "GET", "/a/{n}", 500, 1, Some(mid(7000))),
                (Direction::Inbound, "10.0.0.4", "DELETE", "/x", 0, 1, None),
            ]
        );
    }

    fn mid(us: u64) -> f64 {
        let (lo, hi) = LatencyHistogram::bounds(LatencyHistogram::bucket_of(us));
        (lo as f64 + hi as f64) / 2.0
    }
}
