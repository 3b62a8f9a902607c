//! Maintenance of a running server, for the callers in `admins`:
//! `POST /admin/gc` (query `dry_run=true`, and `grace=DURATION`, which may
//! lengthen the server's `gc_grace` but not shorten it: pushes in progress
//! upload their blobs before the manifest that references them) and
//! `POST /admin/verify`, `POST /admin/inventory` (every digest the
//! store holds, for delta bundles) and `POST /admin/import` (a bundle as
//! the request body, see [`crate::bundle::import`]), each answering its
//! report as JSON. They run beside serving, without a pause; a collection
//! and a verify one at a time (a second one is told to come back), while
//! imports only add content and run beside them. The command line's `wharf
//! gc`, `verify`, `inventory` and `import` with `--server URL` call them.

use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::mirror::routing::Router;
use crate::store::Store;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Body as HttpBody;
use http_body_util::BodyStream;
use std::time::Duration;

/// The content type of the answers.
pub const CONTENT_TYPE: &str = "application/json";

/// A maintenance operation, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminPath {
    Gc,
    Verify,
    Inventory,
    Import,
}

impl AdminPath {
    pub fn name(self) -> &'static str {
        match self {
            AdminPath::Gc => "gc",
            AdminPath::Verify => "verify",
            AdminPath::Inventory => "inventory",
            AdminPath::Import => "import",
        }
    }

    pub fn parse(path: &str) -> Option<AdminPath> {
        match path {
            "/admin/gc" => Some(AdminPath::Gc),
            "/admin/verify" => Some(AdminPath::Verify),
            "/admin/inventory" => Some(AdminPath::Inventory),
            "/admin/import" => Some(AdminPath::Import),
            _ => None,
        }
    }
}

/// What an operation did, for the answer and the audit line.
pub enum Outcome {
    Gc(crate::store::gc::GcReport, bool),
    Verify(crate::store::verify::VerifyReport),
    Inventory(Vec<crate::oci::Digest>),
    Import(crate::bundle::import::ImportReport),
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        match self {
            Outcome::Gc(r, dry_run) => {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["dry_run"] = (*dry_run).into();
                v
            }
            Outcome::Verify(r) => serde_json::to_value(r).unwrap_or_default(),
            Outcome::Inventory(d) => serde_json::json!({ "digests": d }),
            Outcome::Import(r) => serde_json::to_value(r).unwrap_or_default(),
        }
    }

    /// One line for the audit log.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Gc(r, true) => format!(
                "gc --dry-run: would remove {} blobs ({} bytes)",
                r.removed.len(),
                r.bytes
            ),
            Outcome::Gc(r, false) => {
                format!("gc: removed {} blobs ({} bytes)", r.removed.len(), r.bytes)
            }
            Outcome::Inventory(d) => format!("inventory: {} digests", d.len()),
            Outcome::Import(r) => format!(
                "import: {} images ({}), {} new blobs ({} bytes)",
                r.images.len(),
                r.images.join(", "),
                r.new_blobs,
                r.new_bytes
            ),
            Outcome::Verify(r) => format!(
                "verify: checked {} blobs, {} corrupt, {} orphaned, {} missing",
                r.checked,
                r.corrupt.len(),
                r.orphaned.len(),
                r.missing.len()
            ),
        }
    }
}

fn busy() -> Error {
    Error::oci(
        ErrorCode::Unavailable,
        "a garbage collection or verify is already running; try again when it ends",
    )
}

/// Imports the bundle `body` brings, placing its names as `router` does.
pub async fn import<B>(store: &Store, router: &Router, body: B) -> Result<Outcome>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let frames = BodyStream::new(body).filter_map(|f| {
        std::future::ready(match f {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(std::io::Error::other(e.into()))),
        })
    });
    let mut reader = tokio_util::io::StreamReader::new(frames);
    let r = crate::bundle::import::import(store, router, &mut reader).await;
    if r.is_err() {
        // The refusal goes out now; the rest of the bundle is read and
        // dropped meanwhile, so a client still sending it reads why
        // instead of a broken pipe (it stops sending once it has).
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        });
    }
    r.map(Outcome::Import)
}

/// Runs `op` with `query` (the request's); `grace` is the server's.
pub async fn run(store: &Store, op: AdminPath, query: &str, grace: Duration) -> Result<Outcome> {
    let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let flag = |name: &str| -> Result<bool> {
        match crate::reply::query_one(&q, name) {
            None => Ok(false),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(Error::oci(
                ErrorCode::ParameterInvalid,
                format!("{name}={v:?}: expected true or false"),
            )),
        }
    };
    match op {
        AdminPath::Gc => {
            let dry_run = flag("dry_run")?;
            let grace = match crate::reply::query_one(&q, "grace") {
                None => grace,
                Some(g) => {
                    let asked = humantime::parse_duration(g).map_err(|_| {
                        Error::oci(
                            ErrorCode::ParameterInvalid,
                            format!("grace={g:?}: expected a duration, e.g. 0s, 30m, 1h"),
                        )
                    })?;
                    if asked < grace {
                        return Err(Error::oci(
                            ErrorCode::ParameterInvalid,
                            format!(
                                "a running server keeps its gc_grace ({}) at least: a push in progress uploads its blobs before the manifest that references them. Lower gc_grace, or run wharf gc --data on a stopped server",
                                humantime::format_duration(grace)
                            ),
                        ));
                    }
                    asked
                }
            };
            let report = store
                .collect_garbage(grace, dry_run, false)
                .await?
                .ok_or_else(busy)?;
            Ok(Outcome::Gc(report, dry_run))
        }
        AdminPath::Inventory => Ok(Outcome::Inventory(store.inventory().await?)),
        AdminPath::Import => Err(Error::oci(
            ErrorCode::Unsupported,
            "an import reads its bundle from the request body",
        )),
        AdminPath::Verify => {
            let report = store
                .verify(flag("repair")?, true, false)
                .await?
                .ok_or_else(busy)?;
            Ok(Outcome::Verify(report))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(AdminPath::parse("/admin/gc"), Some(AdminPath::Gc));
        assert_eq!(AdminPath::parse("/admin/verify"), Some(AdminPath::Verify));
        assert_eq!(
            AdminPath::parse("/admin/inventory"),
            Some(AdminPath::Inventory)
        );
        assert_eq!(AdminPath::parse("/admin/gc/"), None);
        assert_eq!(AdminPath::parse("/admin/"), None);
    }
}
