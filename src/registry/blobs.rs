//! Blobs of local repositories: GET/HEAD (served with ranges through
//! [`crate::reply::content`]) and deletion, which unlinks the blob from the
//! repository; the bytes stay until garbage collection.

use crate::body::Body;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::{Digest, RepoName};
use crate::reply::{self, content::serve_stored};
use crate::store::Store;
use http::{request::Parts, Response, StatusCode};

fn blob_unknown(d: &Digest) -> Error {
    Error::oci(ErrorCode::BlobUnknown, "blob unknown to registry")
        .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

/// GET or HEAD `/v2/<name>/blobs/<digest>` for a local repository.
pub async fn get(
    store: &Store,
    parts: &Parts,
    name: &RepoName,
    d: &Digest,
) -> Result<Response<Body>> {
    if !store.index().blob_linked(name, d)? {
        return Err(blob_unknown(d));
    }
    let Some(blob) = store.open_blob(d).await? else {
        tracing::error!(digest = %d, repo = %name, "indexed blob is missing from the store");
        return Err(blob_unknown(d));
    };
    // A pusher's HEAD before it references the blob counts as a use, so
    // garbage collection leaves the blob alone for the grace period.
    store.touch(d);
    serve_stored(parts, blob, d, "application/octet-stream", true).await
}

/// DELETE `/v2/<name>/blobs/<digest>`.
pub async fn delete(store: &Store, name: &RepoName, d: &Digest) -> Result<Response<Body>> {
    if !store.unlink_blob(name, d).await? {
        return Err(blob_unknown(d));
    }
    let mut r = reply::empty(StatusCode::ACCEPTED);
    r.extensions_mut()
        .insert(super::Change::BlobDeleted { digest: d.clone() });
    Ok(r)
}
