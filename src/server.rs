//! The accept loop: HTTP/1.1 and HTTP/2 on one port (hyper-util's auto
//! builder), in the clear or over TLS (the TLS handshake, bounded by the
//! header timeout, runs in the connection's own task, with the config
//! current at accept), a header read timeout against slow-loris clients,
//! a cap on open connections, and graceful shutdown that lets in-flight
//! requests finish. Each request reaches the app with its [`Peer`]: the
//! client's address and the user its client certificate names.

use crate::app::App;
use crate::auth::Peer;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits (bounded) for open requests to finish.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn({
        let app = app.clone();
        let stop_rx = stop_rx.clone();
        async move { app.maintain(stop_rx).await }
    });
    let watching = tokio::spawn(app.clone().watch_files(stop_rx));
    // Each open connection holds a permit; at the limit, accepting waits.
    let permits = Arc::new(tokio::sync::Semaphore::new(app.config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let service = |peer: Peer| {
                let peer = Arc::new(peer);
                let app = app.clone();
                service_fn(move |req| {
                    let (app, peer) = (app.clone(), peer.clone());
                    async move { Ok::<_, Infallible>(app.handle(req, &peer).await) }
                })
            };
            let result = match &app.tls {
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service(Peer::plain(peer)))
                        .into_owned();
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    let handshake =
                        tokio::time::timeout(app.config.header_timeout, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let cert_user = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(crate::tls::client_user);
                    let peer = Peer {
                        addr: peer,
                        tls: true,
                        cert_user,
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service(peer))
                        .into_owned();
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for open requests");
    let _ = stop_tx.send(true);
    let _ = maintenance.await;
    let _ = watching.await;
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {DRAIN_TIMEOUT:?}");
    }
    // A client can have its whole (verified) blob before the fill has
    // stored it: let running fills finish.
    if tokio::time::timeout(DRAIN_TIMEOUT, app.mirror.settled())
        .await
        .is_err()
    {
        tracing::warn!("some cache fills were still running after {DRAIN_TIMEOUT:?}");
    }
    if let Err(e) = app.store.index.flush().await {
        tracing::error!(error = %e, "final index flush failed");
    }
}
