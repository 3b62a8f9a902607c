//! # Wharf
//!
//! A pull-through caching mirror and registry for OCI content. This crate
//! is the `wharf` binary's library: `main` parses the command line and
//! calls [`serve`]; the black-box tests start the real binary.
//!
//! ## What one request does
//! ```text
//! client ─HTTP/1.1 or h2c─▶ server (accept, header timeout, graceful shutdown)
//!   ▶ app::App::handle: oci::route parses the path into an ApiRoute
//!   ▶ mirror::routing::Router: local namespace, or which configured upstream
//!   ▶ local:    registry::{manifests, blobs, uploads, listing} ─▶ store
//!   ▶ mirrored: mirror: tag TTL cache (moka) ─▶ store hit? ─▶ stream the file
//!                 └ miss ─▶ single-flight fill (mirror::fill) ─▶ upstream
//!                    (token auth, redirects) ─▶ temp file + hash ─▶ verify
//!                    ─▶ rename ─▶ index; every client reads the growing file
//!        store::blobs   content-addressed files (temp → hash → fsync → rename)
//!        store::index   sled: links, manifests, tags, referrers, uploads
//!        store::uploads upload sessions that survive a restart
//!   ▶ error::Error::into_response: the one place errors become OCI JSON
//! ```
//!
//! ## Module map
//! Dependencies point one way: `oci` (pure parsing) ← `store` / `upstream`
//! ← `registry` / `mirror` ← `app` ← `server` ← `main`.
//! - [`oci`]: names, tags, digests, routes, manifest parsing; no I/O.
//! - [`store`]: blob files, the sled index, upload sessions, start-up recovery.
//! - [`registry`]: the distribution-spec endpoints for local repositories.
//! - [`upstream`]: pooled clients for upstream registries, token auth.
//! - [`mirror`]: routing, tag cache, fills, stale-if-error, negative cache.
//! - [`app`]: shared state, routing, dispatch.
//! - [`server`]: accept loop and graceful shutdown.
//! - [`config`]: flags, environment, TOML file, validation.
//! - [`body`]: the response body type and file streaming.
//! - [`error`]: OCI error codes and the error body.
#![forbid(unsafe_code)]

pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod mirror;
pub mod oci;
pub mod registry;
pub mod server;
pub mod store;
pub mod upstream;

use std::sync::Arc;

/// Opens the store, binds the listener, logs where everything is, and
/// serves until Ctrl-C or SIGTERM.
pub async fn serve(config: config::Config) -> Result<(), Box<dyn std::error::Error>> {
    let listen = config.listen;
    let app = Arc::new(app::App::open(config).await?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "wharf listening on http://{addr}, data in {}, {}",
        app.config.data.display(),
        app.routing_summary()
    );
    server::run(listener, app, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
