//! Shared state and the request pipeline: non-OCI pages first (the token
//! endpoint), then parse the path into an [`ApiRoute`], decide where the
//! repository lives (the mirror's [`Router`]: a local namespace or a
//! configured upstream), turn the request into an operation and let
//! [`Auth`] authenticate the caller and authorise it, dispatch to the
//! local registry or the mirror, write the audit line of a change, and
//! turn any error into the OCI error body (via [`Error::into_response`],
//! the only place that happens). Every response gets
//! `Docker-Distribution-API-Version`, and is counted in [`crate::metrics`]
//! by method, kind of route and status.

use crate::audit;
use crate::auth::{self, Auth, Caller, Peer};
use crate::body::{self, Body};
use crate::config::Config;
use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::logsafe::Clean;
use crate::mirror::routing::{Backend, Router};
use crate::mirror::Mirror;
use crate::oci::name::ReferenceError;
use crate::oci::route::RouteError;
use crate::oci::{ApiRoute, RepoName};
use crate::pages::Page;
use crate::registry::{blobs, listing, manifests, referrers, uploads};
use crate::reply;
use crate::store::Store;
use crate::{api, ui};
use bytes::Bytes;
use http::{request::Parts, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use std::time::{Duration, Instant};

/// How often the TLS files and the htpasswd file are checked for changes.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Everything a request handler needs.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub router: Router,
    pub mirror: Mirror,
    pub auth: Auth,
    /// The HTTPS certificates, when serving TLS.
    pub tls: Option<crate::tls::Tls>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
    /// What the UI and the JSON API list.
    pub inventory: crate::inventory::Inventory,
}

impl App {
    pub async fn open(config: Config) -> Result<App> {
        let store = Store::open(
            &config.data,
            &config.storage,
            config.index_cache_size,
            config.upload_timeout,
            config.max_cache_size,
            crate::store::uploads::Limits {
                sessions: config.max_upload_sessions,
                bytes: config.max_upload_bytes,
                total_sessions: config.max_upload_sessions_total,
                total_bytes: config.max_upload_bytes_total,
            },
        )
        .await?;
        let mirror = Mirror::new(&config)
            .map_err(|e| Error::storage("setting up upstream clients", std::io::Error::other(e)))?;
        let auth = Auth::new(&config)
            .map_err(|e| Error::storage("setting up access control", std::io::Error::other(e)))?;
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::Tls::load(files).map_err(|e| {
                Error::storage("loading the TLS certificate", std::io::Error::other(e))
            })?),
            None => None,
        };
        Ok(App {
            router: Router::new(&config),
            mirror,
            auth,
            tls,
            config,
            store,
            draining: std::sync::atomic::AtomicBool::new(false),
            inventory: crate::inventory::Inventory::new(),
        })
    }

    /// A one-line summary of the routing rules, for the start-up log.
    pub fn routing_summary(&self) -> String {
        let mode = if self.config.offline {
            " (offline: no upstream is contacted)"
        } else {
            ""
        };
        format!("{}{mode}", self.router.summary())
    }

    /// Start-up lines about who may do what and how clients connect.
    pub fn security_summary(&self, addr: std::net::SocketAddr) {
        if self.tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                "serving plain HTTP on {addr}: passwords, tokens and content cross the network unencrypted; serve HTTPS with --tls-cert FILE --tls-key FILE"
            );
        }
        if self.auth.is_open() {
            tracing::warn!(
                "no --htpasswd, client CA or access rules: anyone who can reach {addr} may push and delete in the local namespaces ({})",
                self.config.local_namespaces.join(", ")
            );
        } else {
            tracing::info!(
                "access control on: {}{}, tokens from /token valid for {}",
                match &self.config.htpasswd {
                    Some(p) => format!("users from {}", p.display()),
                    None => "no password users".into(),
                },
                if self.tls.as_ref().is_some_and(|t| t.asks_client_certs()) {
                    ", client certificates accepted"
                } else {
                    ""
                },
                humantime::format_duration(self.config.token_ttl)
            );
        }
    }

    /// Reads the TLS certificate and the htpasswd file again (SIGHUP).
    /// Blocking (file reads, a bcrypt): call it off the async workers.
    pub fn reload(&self) {
        if let Some(t) = &self.tls {
            t.reload();
        }
        self.auth.reload();
    }

    /// Until `shutdown`, reads the TLS certificate and the htpasswd file
    /// again whenever they change. Its own loop, so neither waits for
    /// eviction or garbage collection; the reads run on the blocking pool.
    pub async fn watch_files(
        self: std::sync::Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.tls.is_none() && self.auth.is_open() {
            return;
        }
        let mut every = tokio::time::interval(FILE_CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = every.tick() => {
                    let app = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Some(t) = &app.tls {
                            t.reload_if_changed();
                        }
                        app.auth.reload_if_changed();
                    })
                    .await;
                }
            }
        }
    }

    /// Answers one request from `peer`. Never fails: errors become OCI
    /// error bodies.
    pub async fn handle<B>(&self, req: Request<B>, peer: &Peer) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let route = crate::metrics::Route::of(&path);
        let mut resp = match self.dispatch(req, peer).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, Error::Storage { .. }) {
                    tracing::error!(%method, path = %Clean(&path), error = %e, "request failed");
                } else {
                    tracing::debug!(%method, path = %Clean(&path), error = %e, "request refused");
                }
                e.into_response()
            }
        };
        if method == Method::HEAD {
            // Same status and headers as GET (Content-Length included), no body.
            *resp.body_mut() = body::empty();
        }
        resp.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        crate::metrics::METRICS.http(&method, route, status, elapsed);
        tracing::debug!(%method, path = %Clean(&path), status, elapsed_ms = elapsed.as_millis() as u64, "request");
        resp
    }

    /// Who asks, and whether they may do `op`: the caller, or the refusal
    /// (after reading and dropping some of `body`, so a client still
    /// sending an upload or a bundle gets to read why).
    async fn admit<B>(
        &self,
        parts: &Parts,
        op: &auth::policy::Op<'_>,
        backend: &Backend,
        peer: &Peer,
        body: &mut B,
    ) -> Result<Caller>
    where
        B: HttpBody<Data = Bytes> + Unpin,
    {
        let checked = match self.auth.authenticate(parts, peer).await {
            Ok(c) => self
                .auth
                .authorize(&c, op, backend, parts, peer)
                .map(|()| c),
            Err(e) => Err(e),
        };
        if checked.is_err() {
            body::drain(body).await;
        }
        checked
    }

    async fn dispatch<B>(&self, req: Request<B>, peer: &Peer) -> Result<Response<Body>>
    where
        B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        if auth::cross_site_write(&parts) {
            let mut body = body;
            body::drain(&mut body).await;
            return Err(Error::oci(
                ErrorCode::Denied,
                "a request from another site's page may not change anything here",
            ));
        }
        // Pages that are not OCI routes come first.
        if let Some(page) = Page::route(parts.uri.path()) {
            if !page.allows(&parts.method) {
                return Err(unsupported(&parts.method));
            }
            return match page {
                Page::Token => self.auth.token(&parts, body, peer, &self.router).await,
                Page::Healthz => Ok(plain_text(StatusCode::OK, "ok\n")),
                Page::Readyz => Ok(self.readiness().await),
                Page::Metrics => Ok(self.metrics()),
                Page::Ui | Page::Login | Page::Api => self.browse(page, &parts, peer).await,
                Page::Admin => self.admin(&parts, body, peer).await,
            };
        }
        let route = ApiRoute::parse(parts.uri.path()).map_err(|e| route_error(e, &parts.method))?;
        let q = reply::query(&parts.uri);
        let ns = reply::query_one(&q, "ns");
        let backend = match route.repo() {
            Some(name) => self.router.route(name, ns)?,
            None => Backend::Local,
        };
        // Who asks, and may they: before any handler runs.
        let at = self.auth.locate(&backend);
        let op = auth::operation(&route, &parts.method, &at);
        let mut body = body;
        let caller = self.admit(&parts, &op, &backend, peer, &mut body).await?;
        match backend {
            Backend::Local => {
                let mut r = self.dispatch_local(&route, parts, body, &caller).await?;
                if let (Some(change), Some(name)) = (r.extensions_mut().remove(), route.repo()) {
                    audit::record(&caller, name, &change);
                }
                Ok(r)
            }
            Backend::Mirror { upstream, repo } => {
                let name = route.repo().ok_or_else(|| unsupported(&parts.method))?;
                let mut r = self
                    .dispatch_mirror(&route, &parts, name, &upstream, &repo)
                    .await?;
                if let Some(ns) = ns {
                    reply::set(&mut r, "oci-namespace", ns);
                }
                Ok(r)
            }
        }
    }

    /// The web UI and the JSON API, for a caller who may list
    /// repositories, showing only those they may pull. The UI answers
    /// refusals in HTML and asks browsers for a password (Basic); the API
    /// answers them like the registry does.
    async fn browse(&self, page: Page, parts: &Parts, peer: &Peer) -> Result<Response<Body>> {
        use crate::auth::policy::Op;
        use crate::inventory::{Repo, Viewer};
        let fallback = self.config.listen.to_string();
        let mut cx = ui::Context {
            host: ui::Context::host_of(parts, &fallback),
            user: None,
            can_sign_in: !self.auth.is_open(),
        };
        let caller = match self.auth.authenticate(parts, peer).await {
            Ok(c) => c,
            Err(e) if page == Page::Api => return Err(e),
            Err(e) => return Ok(ui::refused(&cx, e)),
        };
        let anonymous = caller.identity == auth::policy::Identity::Anonymous;
        if page == Page::Login {
            return Ok(if anonymous && !self.auth.is_open() {
                ui::ask_for_password()
            } else {
                ui::signed_in()
            });
        }
        if !self.auth.allows(&caller, &Op::Catalog) {
            if page == Page::Api {
                self.auth
                    .authorize(&caller, &Op::Catalog, &Backend::Local, parts, peer)?;
            }
            return Ok(if anonymous {
                ui::ask_for_password()
            } else {
                ui::refused(
                    &cx,
                    Error::oci(ErrorCode::Denied, "you may not list repositories"),
                )
            });
        }
        let user = match &caller.identity {
            auth::policy::Identity::User(u) => Some(u.as_str()),
            auth::policy::Identity::Anonymous => None,
        };
        cx.user = user;
        let visible = |r: &Repo| self.auth.may_pull(&caller, &r.name(), &r.backend());
        let viewer = Viewer {
            store: &self.store,
            router: &self.router,
            inventory: &self.inventory,
            visible: &visible,
        };
        let path = parts.uri.path();
        if page == Page::Api {
            return match api::ApiPath::parse(path) {
                Some(p) => api::answer(&viewer, parts, p).await,
                None => Err(api::not_found(path)),
            };
        }
        let Some(p) = ui::UiPath::parse(path) else {
            return Ok(ui::refused(
                &cx,
                Error::oci(ErrorCode::NameUnknown, "no such page"),
            ));
        };
        // Upstream addresses and errors are for signed-in users (all of
        // them when access control is off); private upstreams too.
        let detail = !anonymous || self.auth.is_open();
        Ok(ui::answer(&viewer, &cx, parts, p, || self.cache_facts(detail)).await)
    }

    /// Garbage collection, verify, the inventory of the running store or
    /// an import into it, for admins.
    async fn admin<B>(&self, parts: &Parts, body: B, peer: &Peer) -> Result<Response<Body>>
    where
        B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use crate::auth::policy::Op;
        let path = parts.uri.path();
        let op = crate::admin::AdminPath::parse(path).ok_or_else(|| {
            Error::oci(
                ErrorCode::NameUnknown,
                format!(
                    "{path}: no such maintenance operation (/admin/gc, /admin/verify, /admin/inventory, /admin/import)"
                ),
            )
        })?;
        let mut body = body;
        let caller = self
            .admit(parts, &Op::Admin, &Backend::Local, peer, &mut body)
            .await?;
        // A task of its own: a client that goes away, or shutdown's drain,
        // does not stop a collection between forgetting a blob and
        // removing it.
        let (store, grace) = (self.store.clone(), self.config.gc_grace);
        let query = parts.uri.query().unwrap_or_default().to_string();
        let ran = match op {
            // Read as it streams in; its records are written by a task of
            // their own (see the bundle's import).
            crate::admin::AdminPath::Import => {
                crate::admin::import(&store, &self.router, body).await
            }
            _ => tokio::spawn(async move { crate::admin::run(&store, op, &query, grace).await })
                .await
                .map_err(|e| Error::storage("running maintenance", e))?,
        };
        match ran {
            Ok(outcome) => {
                audit::maintenance(&caller, &outcome.summary());
                Ok(crate::reply::json(
                    &outcome.json(),
                    crate::admin::CONTENT_TYPE,
                ))
            }
            Err(e) => {
                audit::maintenance(&caller, &format!("{} refused or failed: {e}", op.name()));
                Err(e)
            }
        }
    }

    /// The cache page's figures; without `detail`, no upstream address,
    /// error or private upstream.
    fn cache_facts(&self, detail: bool) -> ui::CacheFacts {
        let m = &crate::metrics::METRICS;
        let t = m.cache_totals();
        ui::CacheFacts {
            hits: t.hits,
            misses: t.misses,
            stale: t.stale,
            served_from_cache: t.served_from_cache,
            served_from_upstream: t.served_from_upstream,
            mirrored_bytes: self.store.cache_bytes(),
            limit: self.config.max_cache_size,
            offline: self.config.offline,
            upstreams: self
                .config
                .upstreams
                .iter()
                .filter(|u| detail || !self.auth.is_private_upstream(&u.name))
                .map(|u| {
                    let h = m.upstream_health(&u.name);
                    ui::UpstreamFacts {
                        name: u.name.clone(),
                        url: if detail {
                            u.url.to_string()
                        } else {
                            String::new()
                        },
                        reachable: h.reachable,
                        last_error: h.last_error.filter(|_| detail),
                        ratelimit_remaining: h.ratelimit_remaining,
                        ratelimit_limit: h.ratelimit_limit,
                    }
                })
                .collect(),
        }
    }

    /// A GET of mirrored content for the server's own jobs (its scheduled
    /// prefetch lists): routed like a client's request, with no caller to
    /// authorise. Local content is not the mirror's: refused.
    pub async fn get_mirrored(&self, path: &str, accept: &[&str]) -> Result<Response<Body>> {
        let mut req = http::Request::builder().method(Method::GET).uri(path);
        for a in accept {
            req = req.header(http::header::ACCEPT, *a);
        }
        let (parts, ()) = req
            .body(())
            .map_err(|e| Error::oci(ErrorCode::NameInvalid, e.to_string()))?
            .into_parts();
        let route = ApiRoute::parse(parts.uri.path()).map_err(|e| route_error(e, &parts.method))?;
        let name = route.repo().ok_or_else(|| unsupported(&parts.method))?;
        match self.router.route(name, None)? {
            Backend::Local => Err(Error::oci(
                ErrorCode::Unsupported,
                format!("{name} is local content: it is never evicted, nothing to prefetch"),
            )),
            Backend::Mirror { upstream, repo } => {
                self.dispatch_mirror(&route, &parts, name, &upstream, &repo)
                    .await
            }
        }
    }

    /// Serves a mirrored repository; the policy has refused every write.
    async fn dispatch_mirror(
        &self,
        route: &ApiRoute,
        parts: &Parts,
        name: &RepoName,
        upstream: &str,
        repo: &str,
    ) -> Result<Response<Body>> {
        let (s, m) = (&self.store, &parts.method);
        let get = m == Method::GET || m == Method::HEAD;
        match route {
            ApiRoute::Manifest { reference, .. } if get => {
                self.mirror
                    .manifest(s, parts, upstream, repo, reference)
                    .await
            }
            ApiRoute::Blob { digest, .. } if get => {
                self.mirror.blob(s, parts, upstream, repo, digest).await
            }
            ApiRoute::Tags { .. } if get => {
                self.mirror
                    .tags(s, parts, name.as_str(), upstream, repo)
                    .await
            }
            ApiRoute::Referrers { digest, .. } if get => {
                self.mirror.referrers(parts, upstream, repo, digest).await
            }
            _ => Err(unsupported(m)),
        }
    }

    async fn dispatch_local<B>(
        &self,
        route: &ApiRoute,
        parts: Parts,
        body: B,
        caller: &Caller,
    ) -> Result<Response<Body>>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let s = &self.store;
        let m = &parts.method;
        let get = m == Method::GET || m == Method::HEAD;
        // Whose upload limits an upload request counts against.
        let owner = || caller.quota_key();
        match route {
            ApiRoute::Base if get => {
                let mut r = reply::json(&serde_json::json!({}), "application/json");
                *r.status_mut() = StatusCode::OK;
                Ok(r)
            }
            ApiRoute::Catalog if get => {
                listing::catalog(s, &parts, |name| self.auth.may_pull_local(caller, name)).await
            }
            ApiRoute::Tags { name } if get => listing::tags(s, &parts, name).await,
            ApiRoute::Referrers { name, digest } if get => {
                referrers::get(s, &parts, name, digest).await
            }
            ApiRoute::Manifest { name, reference } => match *m {
                Method::GET | Method::HEAD => manifests::get(s, &parts, name, reference).await,
                Method::PUT => manifests::put(s, &parts, name, reference, body).await,
                Method::DELETE => manifests::delete(s, name, reference).await,
                _ => Err(unsupported(m)),
            },
            ApiRoute::Blob { name, digest } => match *m {
                Method::GET | Method::HEAD => blobs::get(s, &parts, name, digest).await,
                Method::DELETE => blobs::delete(s, name, digest).await,
                _ => Err(unsupported(m)),
            },
            ApiRoute::UploadStart { name } if m == Method::POST => {
                let may_mount = self.may_mount(caller, &parts, name);
                let owner = owner();
                let who = uploads::Uploader {
                    owner: &owner,
                    may_mount,
                };
                uploads::start(s, &parts, name, body, who).await
            }
            ApiRoute::Upload { name, session } => match *m {
                Method::PATCH => uploads::patch(s, &parts, name, session, &owner(), body).await,
                Method::PUT => uploads::finish(s, &parts, name, session, &owner(), body).await,
                Method::GET | Method::HEAD => uploads::status(s, name, session, &owner()).await,
                Method::DELETE => uploads::cancel(s, name, session, &owner()).await,
                _ => Err(unsupported(m)),
            },
            _ => Err(unsupported(m)),
        }
    }

    /// Whether a blob mount into `name` may read the repository it names
    /// (`from`, or `name` itself without one): a pull the policy decides.
    fn may_mount(&self, caller: &Caller, parts: &Parts, name: &RepoName) -> bool {
        let q = reply::query(&parts.uri);
        let from = match reply::query_one(&q, "from") {
            Some(f) => match RepoName::parse(f) {
                Ok(f) => f,
                Err(_) => return false,
            },
            None => name.clone(),
        };
        let Ok(backend) = self.router.route(&from, None) else {
            return false;
        };
        let at = self.auth.locate(&backend);
        self.auth
            .allows(caller, &at.op(from.as_str(), auth::policy::Action::Pull))
    }

    /// Periodic housekeeping until `shutdown` resolves: expires idle
    /// uploads, writes access times and collects garbage on schedule.
    /// (Eviction has its own task, [`App::evict_when_full`], so a long
    /// round never holds these up.)
    pub async fn maintain(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let every =
            (self.config.upload_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut uploads = tokio::time::interval(every);
        let mut minute = tokio::time::interval(Duration::from_secs(60));
        let gc_every = if self.config.gc_interval.is_zero() {
            Duration::from_secs(86400 * 365)
        } else {
            self.config.gc_interval
        };
        let mut gc = tokio::time::interval_at(tokio::time::Instant::now() + gc_every, gc_every);
        let store = &self.store;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = store.flush_access().await;
                    return;
                }
                _ = uploads.tick() => match self.store.uploads().expire_idle().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "expired idle uploads"),
                    Err(e) => tracing::warn!(error = %e, "expiring uploads failed"),
                },
                _ = minute.tick() => {
                    if let Err(e) = store.flush_access().await {
                        tracing::warn!(error = %e, "recording access times failed");
                    }
                    // Mirror records reach the bucket (with --storage s3)
                    // even when no push flushes them.
                    if let Err(e) = store.flush().await {
                        tracing::warn!(error = %e, "flushing the index failed");
                    }
                }
                _ = gc.tick(), if !self.config.gc_interval.is_zero() => {
                    // Not while an admin's collection or verify runs (the
                    // next tick comes soon enough): this loop must go on.
                    match self.store.collect_garbage(self.config.gc_grace, false, false).await {
                        Ok(Some(_)) => {}
                        Ok(None) => tracing::debug!("scheduled garbage collection skipped: a collection or verify is running"),
                        Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
                    }
                }
            }
        }
    }

    /// Evicts until `shutdown` resolves: whenever the cache passes its
    /// limit (and once a minute, for what a failed round left), rounds
    /// one after another until it is under the limit again.
    pub async fn evict_when_full(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            // (Also seen here when a round below took the change.)
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = minute.tick() => {}
                _ = self.store.cache_overflowed() => {}
            }
            while self.store.cache_over_limit() && !*shutdown.borrow() {
                let round = self.store.evict();
                tokio::pin!(round);
                let done = tokio::select! {
                    r = &mut round => r,
                    // Shutdown: the round ends after its current batch.
                    _ = shutdown.changed() => {
                        self.store.stop_evicting();
                        round.await
                    }
                };
                match done {
                    // Nothing could go (all of it in use right now): wait
                    // for the next wake-up rather than spin.
                    Ok(out) if out.items == 0 => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "eviction failed");
                        break;
                    }
                }
            }
        }
    }

    /// `/metrics`: every metric, with the store's figures read now.
    fn metrics(&self) -> Response<Body> {
        let snapshot = crate::metrics::Snapshot {
            mirrored_bytes: self.store.cache_bytes(),
            mirrored_items: self.store.cache_items(),
            fills_in_flight: self.mirror.fills_in_flight() as u64,
            upload_sessions: self.store.uploads().sessions() as u64,
        };
        let text = crate::metrics::METRICS.render(&snapshot);
        let length = text.len();
        let mut r = Response::new(body::full(text));
        reply::set(
            &mut r,
            http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        );
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        r
    }

    /// `/readyz`: 200 when the index answers a read and the server is not
    /// draining, else 503 (a load balancer then sends clients elsewhere).
    async fn readiness(&self) -> Response<Body> {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return plain_text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
        }
        match self.store.index().readable().await {
            Ok(()) => plain_text(StatusCode::OK, "ready\n"),
            Err(e) => {
                tracing::warn!(error = %e, "readiness probe: the index cannot be read");
                plain_text(StatusCode::SERVICE_UNAVAILABLE, "index unreadable\n")
            }
        }
    }

    /// Start-up warnings about the disk the data directory is on.
    pub fn check_disk(&self) {
        let data = &self.config.data;
        let (Ok(avail), Ok(total)) = (fs4::available_space(data), fs4::total_space(data)) else {
            return;
        };
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let items = self.store.cache_items();
        let parked = self.store.uploads().parked_bytes();
        tracing::info!(
            "cache: {items} mirrored items, {:.2} GiB{}; {:.2} GiB in unfinished uploads; {:.1} GiB free on the disk",
            gib(self.store.cache_bytes()),
            self.config
                .max_cache_size
                .map(|l| format!(" of a {:.2} GiB limit", gib(l)))
                .unwrap_or_default(),
            gib(parked),
            gib(avail)
        );
        // Unfinished uploads may grow to their total limit beside the cache.
        let uploads_room = self.config.max_upload_bytes_total.saturating_sub(parked);
        let cache_room = self
            .config
            .max_cache_size
            .map_or(0, |l| l.saturating_sub(self.store.cache_bytes()));
        if uploads_room.saturating_add(cache_room) > avail {
            tracing::warn!(
                "unfinished uploads may grow by {:.1} GiB (--max-upload-bytes-total) and the cache by {:.1} GiB, but only {:.1} GiB are free at {}",
                gib(uploads_room),
                gib(cache_room),
                gib(avail),
                data.display()
            );
        }
        match self.config.max_cache_size {
            None => tracing::warn!(
                "no --max-cache-size: the mirror cache may grow until the disk is full ({:.1} GiB free of {:.1} GiB at {})",
                gib(avail),
                gib(total),
                data.display()
            ),
            Some(limit) if limit > avail + self.store.cache_bytes() => tracing::warn!(
                "--max-cache-size is {:.1} GiB but only {:.1} GiB are free at {}: the disk will fill first",
                gib(limit),
                gib(avail),
                data.display()
            ),
            Some(_) => {}
        }
    }
}

/// A reference that is not a valid tag can only be refused as TAG_INVALID
/// when a client tries to create it; reading or deleting it is simply a
/// manifest that does not exist (404, as the conformance suite expects).
fn route_error(e: RouteError, method: &Method) -> Error {
    match e {
        RouteError::Reference(ReferenceError::Tag(t)) if method != Method::PUT => {
            Error::oci(ErrorCode::ManifestUnknown, format!("manifest unknown: {t}"))
        }
        other => other.into(),
    }
}

/// A small `text/plain` answer.
fn plain_text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    reply::set(
        &mut r,
        http::header::CONTENT_TYPE,
        "text/plain; charset=utf-8",
    );
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    r
}

fn unsupported(m: &Method) -> Error {
    Error::oci(
        ErrorCode::Unsupported,
        format!("{m} is not supported on this endpoint"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(app: &App, path: &str) -> (StatusCode, String) {
        let req = Request::get(path)
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let peer = Peer::plain("127.0.0.1:9".parse().unwrap());
        let resp = app.handle(req, &peer).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn probes_answer_and_readyz_turns_503_while_draining() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::config::ServeArgs {
            data: Some(dir.path().join("data")),
            ..Default::default()
        };
        let app = App::open(Config::load(&args).unwrap()).await.unwrap();
        assert_eq!(get(&app, "/healthz").await, (StatusCode::OK, "ok\n".into()));
        assert_eq!(
            get(&app, "/readyz").await,
            (StatusCode::OK, "ready\n".into())
        );
        app.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            get(&app, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        );
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
        let post = Request::post("/healthz")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let peer = Peer::plain("127.0.0.1:9".parse().unwrap());
        assert_eq!(
            app.handle(post, &peer).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
