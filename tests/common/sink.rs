//! A tiny HTTP or HTTPS server for the upstream-trust tests: it counts the
//! connections it accepts (before any TLS handshake), records every
//! request, and answers with the test's handler. It plays a token realm on
//! another port, a CDN on another loopback address, or a trap that must
//! never be reached.

use super::upstream::Seen;
use bytes::Bytes;
use http_body_util::Full;
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the handler answers: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);
pub type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

struct State {
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    handler: Handler,
}

pub struct Sink {
    /// host:port.
    pub addr: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// Listens on `ip` (any free port); HTTPS with `tls` = (cert, key) PEM
    /// files.
    pub fn start(ip: &str, tls: Option<(&Path, &Path)>, handler: Handler) -> Sink {
        let listener = StdListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = tls.map(|(cert, key)| acceptor(cert, key));
        let state = Arc::new(State {
            connections: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            handler,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, st, acceptor, stop_rx));
        });
        Sink {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve(
    listener: StdListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let (stream, _) = tokio::select! {
            c = listener.accept() => match c { Ok(c) => c, Err(_) => continue },
            _ = &mut stop => return,
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let st = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    async move {
                        let seen = Seen {
                            method: req.method().to_string(),
                            path: req.uri().path().to_string(),
                            query: req.uri().query().unwrap_or("").to_string(),
                            authorization: req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap_or("").to_string()),
                        };
                        let (status, headers, body) = (st.handler)(&seen);
                        st.seen.lock().unwrap().push(seen);
                        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        for (k, v) in headers {
                            r.headers_mut().append(
                                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                v.parse().unwrap(),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(a) => {
                    if let Ok(s) = a.accept(stream).await {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    }
                }
                None => {
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
    }
}
