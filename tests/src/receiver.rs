//! A recorded-request double of an HTTP receiver (Pyroscope, an OTLP collector): a small
//! HTTP/1.1 server on loopback that keeps every request and answers each as told. No such
//! receiver ships in a registry this project can use (crates.io, PyPI, Debian, npm); the tests
//! assert on what the receivers document instead: method, path, query, headers, body.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Percent-decoded.
    pub query: BTreeMap<String, String>,
    /// Names lowercased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// The double: records requests, answers each with `status` and `answer`.
pub struct Double {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Double {
    pub fn start(status: u16, answer: &'static str) -> Double {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(stream, status, answer, &recorded));
            }
        });
        Double { url, requests }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Every request of one connection (clients keep it alive), until the client closes it.
fn serve(stream: TcpStream, status: u16, answer: &str, recorded: &Mutex<Vec<Recorded>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        let length: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let (path, query) = crate::apiserver::split_target(&target);
        let query = query.into_iter().collect();
        recorded.lock().unwrap().push(Recorded { method, path, query, headers, body });
        let reason = if status == 200 { "OK" } else { "Service Unavailable" };
        let _ = write!(
            writer,
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
    }
}
