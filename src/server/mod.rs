//! The accept loop: HTTP/1.1 and HTTP/2 on one port (hyper-util's auto
//! builder), in the clear or over TLS (the handshake runs in the
//! connection's own task, with the config current at accept), and the
//! limits that keep one client from taking the server down: a cap on open
//! connections (fitted to the file-descriptor limit) and on those of one
//! client address, room made by closing silent connections when every
//! slot is taken, a watchdog per connection (first request, idle and
//! stall deadlines, see [`activity`]), request bodies cut off when they
//! trickle, HTTP/2 and HTTP/1.1 buffers bounded per connection, failed
//! accepts backed off, and graceful shutdown that lets in-flight requests
//! finish. Each request reaches the app with its [`Peer`]: the client's
//! address and the user its client certificate names.

pub mod activity;
pub mod admission;
pub mod fd_limit;

use crate::app::App;
use crate::auth::Peer;
use crate::summary::{self, Summary};
use activity::{Activity, Close, Limits, Receiving, Sending, Verdict};
use admission::{Admission, Ticket};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection closed for being idle or silent gets to say
/// goodbye (an HTTP/2 GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 streams one connection may have open. Registry clients use a
/// handful (a pull fetches three or so layers at once); each open stream
/// may hold a file and a few chunks, so it is kept well below hyper's 200.
pub const H2_MAX_STREAMS: u32 = 32;
/// Response bytes HTTP/2 buffers per stream for a client that is slow to
/// read (hyper's default is 400 KiB).
pub const H2_SEND_BUFFER: usize = 16 * 1024;
/// File chunks of HTTP/2 responses: hyper holds two per stream a client
/// does not read (one sent, one waiting), so this sets the cost of an
/// unread stream.
pub const H2_CHUNK: usize = 16 * 1024;
/// Request bytes a client may send ahead on one HTTP/2 stream, and on the
/// whole connection: what an upload can park in memory per connection.
pub const H2_STREAM_WINDOW: u32 = 1024 * 1024;
pub const H2_CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// How often an HTTP/2 connection is pinged, and how long the answer may
/// take before the connection is closed as dead.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/1.1 read buffer (request headers must fit: 128 KiB leaves room
/// for a 100 KiB `Authorization` header to get its 401) and queued
/// response bytes per connection (hyper's default is about 400 KiB).
pub const H1_BUFFER: usize = 128 * 1024;

/// Counts of what the limits did, and the connections open now: exported
/// by [`crate::metrics`].
#[derive(Debug, Default)]
pub struct Stats {
    pub accept_errors: AtomicU64,
    pub over_client_limit: AtomicU64,
    pub shed: AtomicU64,
    pub closed_no_request: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_stalled: AtomicU64,
    pub busy: AtomicU64,
    /// Client connections open now (accepted, not yet closed).
    pub open: AtomicU64,
}

pub static STATS: Stats = Stats {
    accept_errors: AtomicU64::new(0),
    over_client_limit: AtomicU64::new(0),
    shed: AtomicU64::new(0),
    closed_no_request: AtomicU64::new(0),
    closed_idle: AtomicU64::new(0),
    closed_stalled: AtomicU64::new(0),
    busy: AtomicU64::new(0),
    open: AtomicU64::new(0),
};

/// Counts a connection as open until dropped.
struct Open;

impl Open {
    fn new() -> Open {
        STATS.open.fetch_add(1, Ordering::Relaxed);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        STATS.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).max_buf_size(H1_BUFFER);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_send_buf_size(H2_SEND_BUFFER)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    b
}

/// Serves `app` on `listener`, at most `max` connections and
/// `max_requests` requests in flight at once (see [`fd_limit::fit`]),
/// until `shutdown` resolves, then stops accepting and waits (bounded) for
/// open requests to finish.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    max: usize,
    max_requests: usize,
    shutdown: impl Future<Output = ()>,
) {
    let config = &app.config;
    let limits = Limits {
        first_request: config.header_timeout,
        idle: config.idle_timeout,
        stall: config.stall_timeout,
        body: config.body_timeout,
    };
    let mut builder = builder();
    builder.http1().header_read_timeout(config.header_timeout);
    let builder = Arc::new(builder);
    let admission = Admission::new(config.max_client_connections);
    let (stop_tx, stop_rx) = watch::channel(false);
    let maintenance = tokio::spawn({
        let app = app.clone();
        let stop_rx = stop_rx.clone();
        async move { app.maintain(stop_rx).await }
    });
    let eviction = tokio::spawn({
        let app = app.clone();
        let stop_rx = stop_rx.clone();
        async move { app.evict_when_full(stop_rx).await }
    });
    let watching = tokio::spawn(app.clone().watch_files(stop_rx.clone()));
    let warming: Vec<_> = (0..app.config.prefetch.len())
        .map(|i| {
            let app = app.clone();
            let stop_rx = stop_rx.clone();
            tokio::spawn(async move { crate::warm::keep_warm(&app, i, stop_rx).await })
        })
        .collect();
    // Each open connection holds a permit, each request in flight a share.
    let permits = Arc::new(Semaphore::new(max));
    let shares = Arc::new(Semaphore::new(max_requests));
    let mut backoff = Duration::ZERO;
    let (accept_errors, over_limit) = (Summary::default(), Summary::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors (or memory): back off instead of
                    // spinning, and say so once a minute.
                    STATS.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some((n, over)) = accept_errors.tick() {
                        tracing::warn!(error = %e, "{n} accepts failed in the last {}; backing off", summary::span(over));
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        backoff = Duration::ZERO;
        let activity = Activity::new();
        let Some(ticket) = admission.admit(addr.ip(), &activity) else {
            STATS.over_client_limit.fetch_add(1, Ordering::Relaxed);
            if let Some((n, over)) = over_limit.tick() {
                tracing::info!(client = %addr.ip(), limit = config.max_client_connections, "{n} connections refused in the last {}: a client held --max-client-connections", summary::span(over));
            }
            drop(stream);
            continue;
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                // Every slot is taken: close the oldest silent connection
                // rather than make this admitted one wait behind it.
                if admission.shed_oldest(&ticket) {
                    STATS.shed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            app: app.clone(),
            builder: builder.clone(),
            limits,
            activity,
            ticket,
            _permit: permit,
            _open: Open::new(),
            shares: shares.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(conn.run(stream, addr));
    }
    drop(listener);
    app.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down: waiting for open requests");
    let _ = stop_tx.send(true);
    let _ = maintenance.await;
    let _ = eviction.await;
    let _ = watching.await;
    for w in warming {
        let _ = w.await;
    }
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {DRAIN_TIMEOUT:?}");
    }
    // A client can have its whole (verified) blob before the fill has
    // stored it: let running fills finish.
    let settled = tokio::time::timeout(DRAIN_TIMEOUT, app.mirror.settled())
        .await
        .is_ok();
    if !settled {
        tracing::warn!("some cache fills were still running after {DRAIN_TIMEOUT:?}");
    }
    // Totals saved while fills may still record would be stale: the next
    // start counts instead.
    if let Err(e) = app.store.close(settled).await {
        tracing::error!(error = %e, "final index flush failed");
    }
}

/// The answer when every request share is taken (an HTTP/2 client may
/// open many streams): `503 UNAVAILABLE` with `Retry-After`.
fn busy() -> hyper::Response<crate::body::Body> {
    crate::error::Error::oci(
        crate::error::ErrorCode::Unavailable,
        "too many requests in flight on this registry; retry shortly",
    )
    .with_header(http::header::RETRY_AFTER, "1".to_string())
    .into_response()
}

/// One accepted connection and what it holds.
struct Conn {
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    activity: Arc<Activity>,
    ticket: Ticket,
    _permit: OwnedSemaphorePermit,
    _open: Open,
    /// The server's requests in flight.
    shares: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// How a connection's life ended before hyper was done with it.
enum Ending {
    Closed(Close),
    Shed,
    Shutdown,
}

impl Conn {
    async fn run(mut self, stream: TcpStream, addr: SocketAddr) {
        let acceptor = match &self.app.tls {
            None => return self.serve(stream, Peer::plain(addr)).await,
            Some(tls) => tokio_rustls::TlsAcceptor::from(tls.config()),
        };
        let handshake = tokio::time::timeout(self.limits.first_request, acceptor.accept(stream));
        let stream = tokio::select! {
            r = handshake => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    STATS.closed_no_request.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                    return;
                }
            },
            _ = self.ticket.close.notified() => return,
            _ = self.stop.changed() => return,
        };
        let cert_user = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(crate::tls::client_user);
        let peer = Peer {
            addr,
            tls: true,
            cert_user,
        };
        self.serve(stream, peer).await
    }

    async fn serve<IO>(mut self, io: IO, peer: Peer)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = peer.addr;
        let service = {
            let (app, activity, peer) = (self.app.clone(), self.activity.clone(), Arc::new(peer));
            let shares = self.shares.clone();
            let body_window = self.limits.body;
            service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (app, activity, peer) = (app.clone(), activity.clone(), peer.clone());
                let share = shares.clone().try_acquire_owned();
                async move {
                    let (flight, working) = activity.begin();
                    let Ok(share) = share else {
                        STATS.busy.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %peer.addr, "refused a request: too many requests in flight");
                        return Ok::<_, Infallible>(busy().map(|b| Sending::new(b, flight, None)));
                    };
                    let h2 = req.version() == http::Version::HTTP_2;
                    let req = req.map(|b| Receiving::new(b, activity, body_window));
                    let resp = if h2 {
                        crate::body::with_chunk_limit(H2_CHUNK, app.handle(req, &peer)).await
                    } else {
                        app.handle(req, &peer).await
                    };
                    drop(working);
                    Ok::<_, Infallible>(resp.map(|b| Sending::new(b, flight, Some(share))))
                }
            })
        };
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        tokio::pin!(conn);
        let mut marked_served = false;
        let ending = loop {
            if !marked_served && self.activity.served() {
                self.ticket.served();
                marked_served = true;
            }
            // A request starting or ending changes which deadline applies:
            // look again at least every WATCHDOG_TICK.
            let wait = match self.activity.verdict(&self.limits) {
                Verdict::Wait(d) => d.min(self.limits.tick()),
                Verdict::Close(why) => break Ending::Closed(why),
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = self.ticket.close.notified() => {
                    // Picked while silent, but a request may have come since.
                    if !self.activity.served() {
                        break Ending::Shed;
                    }
                }
                _ = self.stop.changed() => break Ending::Shutdown,
            }
        };
        let grace = match ending {
            Ending::Shutdown => DRAIN_TIMEOUT,
            Ending::Closed(Close::Stalled) => {
                STATS.closed_stalled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %addr, "closing a stalled connection");
                Duration::ZERO
            }
            Ending::Closed(why) => {
                let counter = match why {
                    Close::NoRequest => &STATS.closed_no_request,
                    _ => &STATS.closed_idle,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %addr, why = why.as_str(), "closing a connection");
                CLOSE_GRACE
            }
            Ending::Shed => {
                tracing::debug!(peer = %addr, "closing a silent connection to make room");
                Duration::ZERO
            }
        };
        if !grace.is_zero() {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, conn).await;
        }
    }
}
