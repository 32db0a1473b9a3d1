//! A TCP proxy on loopback in front of a real API server, for the cluster tests whose API
//! server must die mid-run on any cluster (`EAGLE_E2E_KUBECONFIG` included, where the test
//! cannot stop the real one): [`TcpProxy::kill`] closes every connection at once and refuses
//! new ones, which is all a client can see of a stopped API server. TLS passes through
//! untouched; [`TcpProxy::kubeconfig`] points a copy of the kubeconfig at the proxy and keeps
//! the certificate's name (`tls-server-name`).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use kube::config::Kubeconfig;

pub struct TcpProxy {
    addr: SocketAddr,
    dead: Arc<AtomicBool>,
    /// Both ends of every connection, to close on [`TcpProxy::kill`].
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (an ephemeral port) and forwards each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let dead = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (accepting, kept) = (dead.clone(), connections.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.load(Ordering::SeqCst) {
                    return; // the listener goes: new connections are refused
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
                    (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                kept.lock().unwrap_or_else(|e| e.into_inner()).extend([c3, s3]);
                thread::spawn(move || pipe(client, server));
                thread::spawn(move || pipe(s2, c2));
            }
        });
        TcpProxy { addr, dead, connections }
    }

    /// A proxy to the API server of `kubeconfig` (its current context's cluster), and a copy of
    /// the kubeconfig at `dir/name` that goes through it.
    pub fn in_front_of(kubeconfig: &Path, dir: &Path, name: &str) -> (Self, PathBuf) {
        let mut kc = Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
        let context = kc.current_context.clone().expect("a current context");
        let cluster_name = kc
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .expect("the current context names a cluster");
        let cluster = kc
            .clusters
            .iter_mut()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_mut())
            .expect("the current context's cluster");
        let server: http::Uri = cluster.server.as_deref().expect("a server address").parse().expect("a URL");
        let host = server.host().expect("a host").trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = server.port_u16().unwrap_or(if server.scheme_str() == Some("http") { 80 } else { 443 });
        let upstream =
            (host.as_str(), port).to_socket_addrs().expect("resolve the API server").next().expect("an address");
        let proxy = TcpProxy::start(upstream);
        cluster.server = Some(format!("{}://{}", server.scheme_str().unwrap_or("https"), proxy.addr));
        // The certificate names the API server, not 127.0.0.1:PORT of the proxy.
        cluster.tls_server_name.get_or_insert(host);
        let path = dir.join(name);
        // JSON is YAML: kube and kubectl read it as a kubeconfig.
        std::fs::write(&path, serde_json::to_string(&kc).expect("json")).expect("write the kubeconfig");
        (proxy, path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API server "dies": every open connection is closed, new ones are refused.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop, which then ends
        for c in self.connections.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _: io::Result<u64> = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
