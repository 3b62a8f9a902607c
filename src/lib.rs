//! # Wharf
//!
//! A pull-through caching mirror and registry for OCI content. This crate
//! is the `wharf` binary's library: `main` parses the command line and
//! calls [`serve`]; the black-box tests start the real binary.
//!
//! ## What one request does
//! ```text
//! client ─HTTP/1.1 or h2, TLS optional─▶ server (connection limits per
//!        client and in all, TLS handshake with the certificate current at
//!        accept, a watchdog per connection: first request, idle and stall
//!        deadlines, trickling bodies cut off; graceful shutdown)
//!   ▶ app::App::handle: non-OCI pages first (/token: auth::endpoint;
//!     /healthz, /readyz, /metrics), every answer counted in metrics
//!   ▶ oci::route parses the path into an ApiRoute
//!   ▶ mirror::routing::Router: local namespace, or which configured upstream
//!   ▶ auth: who is asking (token, Basic, client certificate, anonymous),
//!     the operation (repository + pull/push/delete), policy::decide
//!     ─▶ 401 with a token challenge / 403, before any handler runs
//!   ▶ local:    registry::{manifests, blobs, uploads, listing} ─▶ Store
//!               methods (store::local: mount, push, link, manifest, delete)
//!   ▶ mirrored: mirror: tag TTL cache (moka) ─▶ store hit? ─▶ stream it
//!                 └ miss ─▶ single-flight fill (mirror::fill) ─▶ upstream
//!                    (token auth, redirects) ─▶ new blob + hash ─▶ verify
//!                    ─▶ Store::commit_fill; every client reads its spool
//!        store::blobs   content-addressed files (temp → hash → fsync → rename)
//!        store::index   sled: links, manifests, tags, referrers, uploads
//!                       (read by anyone, changed only by the store)
//!        store::uploads upload sessions that survive a restart
//!        store::{bucket, journal, remote, access, bucket_uploads}
//!                       --storage s3: the bucket (object_store), index
//!                       records, access times and upload sessions in it,
//!                       blobs in it with the data directory as a bounded
//!                       local cache
//!   ▶ audit: one line per change a local handler reports (who, what)
//!   ▶ error::Error::into_response: the one place errors become OCI JSON
//! ```
//!
//! ## Module map
//! Dependencies point one way: `oci` (pure parsing) ← `store` / `upstream`
//! / `reply` ← `registry` / `mirror` ← `auth` / `audit` / `tls` ← `app` ←
//! `server` ← `main`. (`config` reads `auth::policy`, which is pure.)
//! - [`oci`]: names, tags, digests, routes, manifest parsing; no I/O.
//! - [`store`]: blobs, the sled index, upload sessions, start-up recovery;
//!   its rules as methods of [`store::Store`], its fields private.
//! - [`reply`]: response helpers and ranged serving of stored content,
//!   shared by the registry and the mirror.
//! - [`registry`]: the distribution-spec endpoints for local repositories.
//! - [`upstream`]: pooled clients for upstream registries, token auth.
//! - [`mirror`]: routing, tag cache, fills, stale-if-error, negative cache.
//! - [`auth`]: identities (htpasswd, tokens, client certificates), the
//!   access policy as one pure function, the token endpoint.
//! - [`audit`]: the audit log of changes to local repositories.
//! - [`tls`]: HTTPS certificates, reloaded when they change.
//! - [`watch`]: noticing that a file read at start-up changed.
//! - [`pages`]: the non-OCI pages (token, probes, metrics), routed first.
//! - [`metrics`]: every metric in one process-wide registry, counted by
//!   the layers above and below it (it reads the server's connection
//!   counters when scraped), and the Prometheus text `/metrics` serves.
//! - [`app`]: shared state, routing, authorisation, dispatch.
//! - [`server`]: accept loop, connection limits and deadlines, TLS
//!   handshakes, graceful shutdown.
//! - [`logsafe`]: client-chosen text escaped for log lines.
//! - [`summary`]: one log line a minute for events that come in floods.
//! - [`config`]: flags, environment, TOML file, validation.
//! - [`body`]: the response body type, file streaming, request-body
//!   draining.
//! - [`error`]: OCI error codes and the error body.
//! - [`fuzzing`]: the fuzz targets' entry points (also property tests).
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod bundle;
pub mod client;
pub mod config;
pub mod error;
pub mod fuzzing;
pub mod inventory;
pub mod logsafe;
pub mod metrics;
pub mod mirror;
pub mod oci;
pub mod pages;
pub mod prefetch;
pub mod registry;
pub mod reply;
pub mod server;
pub mod store;
pub mod summary;
pub mod tls;
pub mod ui;
pub mod upstream;
pub mod warm;
pub mod watch;

use std::sync::Arc;

/// Opens the store, binds the listener, logs where everything is, and
/// serves until Ctrl-C or SIGTERM.
pub async fn serve(config: config::Config) -> Result<(), Box<dyn std::error::Error>> {
    let listen = config.listen;
    // Before the listening line: the file-descriptor limit decides how
    // many connections are accepted.
    let (max_connections, max_requests) = server::fd_limit::fit(config.max_connections);
    let app = Arc::new(app::App::open(config).await?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    app.check_disk();
    // Signal handlers first: whoever reads the listening line may send
    // SIGTERM or SIGHUP at once, and must not find the default action.
    let signals = Signals::install()?;
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "wharf listening on {scheme}://{addr}, data in {}, {}",
        app.config.data.display(),
        app.routing_summary()
    );
    app.security_summary(addr);
    let Signals { hup, stop } = signals;
    let reloads = tokio::spawn(reload_on_sighup(app.clone(), hup));
    server::run(listener, app, max_connections, max_requests, stop).await;
    reloads.abort();
    tracing::info!("stopped");
    Ok(())
}

/// How a maintenance command reaches the store: the data directory (no
/// server may be using it), or a running server's `/admin/` endpoints.
pub enum Target<'a> {
    Data(&'a config::Config),
    Server(&'a client::ServerClient),
}

/// The store of a data directory no server is using (or its bucket), for
/// a maintenance command.
async fn open_data(config: &config::Config) -> Result<store::Store, error::Error> {
    store::Store::open_for_maintenance(&config.data, &config.storage, config.index_cache_size).await
}

/// `wharf gc`: collects unreferenced local blobs. Prints what it removed
/// (or would remove), and what it kept only because of the grace period.
/// `grace`: the period asked for (a server's own `gc_grace` otherwise; on a
/// data directory, the config's).
pub async fn gc(
    target: Target<'_>,
    dry_run: bool,
    grace: Option<std::time::Duration>,
) -> Result<(), Box<dyn std::error::Error>> {
    let report = match target {
        Target::Data(config) => {
            let store = open_data(config).await?;
            let grace = grace.unwrap_or(config.gc_grace);
            let report = store.collect_garbage(grace, dry_run, true).await;
            store.close(true).await?;
            report?.ok_or("garbage collection did not run")?
        }
        Target::Server(server) => {
            let mut path = format!("/admin/gc?dry_run={dry_run}");
            if let Some(g) = grace {
                path.push_str(&format!("&grace={}s", g.as_secs()));
            }
            serde_json::from_value(server.post_json(&path).await?)?
        }
    };
    let online = matches!(target, Target::Server(_));
    for line in gc_lines(&report, dry_run, online) {
        println!("{line}");
    }
    Ok(())
}

/// What `wharf gc` prints of a report (`online`: from a running server).
pub fn gc_lines(report: &store::gc::GcReport, dry_run: bool, online: bool) -> Vec<String> {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut lines: Vec<String> = report
        .removed
        .iter()
        .map(|(d, size)| format!("{verb} {d} ({size} bytes)"))
        .collect();
    lines.push(format!(
        "{verb} {} unreferenced blobs, {} bytes; kept {}",
        report.removed.len(),
        report.bytes,
        report.kept
    ));
    if report.recent > 0 {
        let grace = humantime::format_duration(std::time::Duration::from_secs(report.grace_secs));
        let how = if online {
            "they go once unused that long (the server's gc_grace); on a stopped server with --storage fs, wharf gc --data DIR removes them at once"
        } else {
            "--grace 0s removes them too"
        };
        lines.push(format!(
            "kept {} unreferenced blobs ({} bytes) only because they were used within the grace period ({grace}), which protects pushes in progress; {how}",
            report.recent, report.recent_bytes
        ));
    }
    lines
}

/// `wharf inventory`: writes every digest the store holds to `out` (`-`:
/// standard output) as `{"digests": [...]}`, what `wharf export
/// --exclude` reads. Returns how many.
pub async fn inventory(
    target: Target<'_>,
    out: &std::path::Path,
) -> Result<usize, Box<dyn std::error::Error>> {
    let digests: Vec<oci::Digest> = match target {
        Target::Data(config) => {
            let store = open_data(config).await?;
            let d = store.inventory().await;
            store.close(false).await?;
            d?
        }
        Target::Server(server) => {
            let v = server.post_json("/admin/inventory").await?;
            bundle::inventory_of(&v)?.into_iter().collect()
        }
    };
    let text = serde_json::json!({ "digests": digests }).to_string();
    if out == std::path::Path::new("-") {
        println!("{text}");
    } else {
        let tmp = out.with_extension("partial");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, out)?;
    }
    Ok(digests.len())
}

/// `wharf import`: reads the bundle at `path` into the store (a data
/// directory no server is using, or a running server, which reads it as
/// it is sent), with a progress bar on a terminal. Refused, nothing of it
/// is served.
pub async fn import(
    target: Target<'_>,
    path: &std::path::Path,
) -> Result<bundle::import::ImportReport, Box<dyn std::error::Error>> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().await?.len();
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(prefetch::bytes_style());
        bar.set_prefix("import");
        bar.set_message(path.display().to_string());
        bar
    } else {
        eprintln!("importing {} ({len} bytes)", path.display());
        indicatif::ProgressBar::hidden()
    };
    let reader = bar.wrap_async_read(file);
    let report = match target {
        Target::Data(config) => {
            let store = open_data(config).await?;
            let router = mirror::routing::Router::new(config);
            let r = bundle::import::import(&store, &router, reader).await;
            store.close(true).await?;
            r.map_err(|e| match e {
                error::Error::Oci { .. } => {
                    format!("import refused, nothing of it is served: {}", e.message())
                }
                e => format!("import failed: {e}"),
            })?
        }
        Target::Server(server) => {
            use futures_util::StreamExt;
            use http_body_util::BodyExt;
            let stream = tokio_util::io::ReaderStream::new(reader)
                .map(|chunk| chunk.map(http_body::Frame::data));
            let body = BodyExt::boxed(http_body_util::StreamBody::new(stream));
            bar.set_message(format!(
                "{} (the server checks each blob as it arrives)",
                path.display()
            ));
            match server.post_body("/admin/import", body).await {
                Ok(v) => serde_json::from_value(v)?,
                Err(e) if e.status.is_some_and(|s| !s.is_success()) => {
                    return Err(format!("import refused, nothing of it is served: {e}").into())
                }
                Err(e) => return Err(format!(
                    "{e}: the server's log says what became of the bundle (a refused one leaves nothing, and importing one again changes nothing)"
                )
                .into()),
            }
        }
    };
    bar.finish_and_clear();
    Ok(report)
}

/// `wharf verify`: scrubs the store. Returns whether it was clean.
pub async fn verify(target: Target<'_>, repair: bool) -> Result<bool, Box<dyn std::error::Error>> {
    let r: store::verify::VerifyReport = match target {
        Target::Data(config) => {
            let store = open_data(config).await?;
            let r = store.verify(repair, false, true).await;
            store.close(true).await?;
            r?.ok_or("verify did not run")?
        }
        Target::Server(server) => serde_json::from_value(
            server
                .post_json(&format!("/admin/verify?repair={repair}"))
                .await?,
        )?,
    };
    for d in &r.corrupt {
        println!("corrupt: {d}");
    }
    for d in &r.orphaned {
        println!("orphaned (unreferenced, garbage collection removes it): {d}");
    }
    for (what, d) in &r.missing {
        println!("missing: {d} ({what})");
    }
    println!(
        "checked {} blobs ({} bytes): {} corrupt, {} orphaned, {} missing{}",
        r.checked,
        r.bytes,
        r.corrupt.len(),
        r.orphaned.len(),
        r.missing.len(),
        if repair && !(r.is_clean() && r.orphaned.is_empty()) {
            "; repaired: files moved to quarantine/, records dropped (mirrored content is fetched again)"
        } else {
            ""
        }
    );
    Ok(r.is_clean())
}

/// The signals the server acts on, their handlers installed.
struct Signals {
    /// SIGHUP: reload.
    hup: Option<tokio::signal::unix::Signal>,
    /// Resolves on SIGTERM or Ctrl-C (SIGINT).
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let hup = signal(SignalKind::hangup()).ok();
        let stop = Box::pin(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        });
        Ok(Signals { hup, stop })
    }
}

/// SIGHUP reads the TLS certificate and the htpasswd file again.
async fn reload_on_sighup(app: Arc<app::App>, hup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hup) = hup else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the TLS certificate and the htpasswd file");
        let app = app.clone();
        let _ = tokio::task::spawn_blocking(move || app.reload()).await;
    }
}
