//! Blob uploads: POST to start (or to mount, or to push a whole blob in one
//! request), PATCH to append (ranged or streamed), PUT to finish, GET for
//! the status and DELETE to cancel. State is keyed by the session id in the
//! path, so a stale Location still reports the true offset.

use crate::body::Body;
use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::oci::{Digest, RepoName};
use crate::reply;
use crate::store::uploads::SessionGuard;
use crate::store::Store;
use bytes::Bytes;
use http::{header, request::Parts, Response, StatusCode};
use http_body::Body as HttpBody;

fn digest_param(q: &[(String, String)], key: &str) -> Result<Option<Digest>> {
    reply::query_one(q, key)
        .map(|v| {
            v.parse().map_err(|e| {
                Error::oci(
                    ErrorCode::DigestInvalid,
                    format!("invalid {key} parameter: {e}"),
                )
            })
        })
        .transpose()
}

/// 201 Created for a blob now stored and linked in `name`.
fn created(name: &RepoName, d: &Digest) -> Result<Response<Body>> {
    let mut r = reply::empty(StatusCode::CREATED);
    reply::set(&mut r, header::LOCATION, &reply::blob_location(name, d));
    reply::set(&mut r, "docker-content-digest", &d.to_string());
    Ok(r)
}

/// The 202/204 answer describing an open session.
fn session_reply(status: StatusCode, name: &RepoName, id: &str, len: u64) -> Response<Body> {
    let mut r = reply::empty(status);
    reply::set(&mut r, header::LOCATION, &reply::upload_location(name, id));
    reply::set(&mut r, header::RANGE, &reply::upload_range(len));
    reply::set(&mut r, "docker-upload-uuid", id);
    r
}

/// Who starts an upload, as the handler needs to know it.
pub struct Uploader<'a> {
    /// Whose upload limits a new session counts against.
    pub owner: &'a str,
    /// Whether the caller may read the repository a `mount` names (the
    /// access policy decided it); if not, the mount becomes a session.
    pub may_mount: bool,
}

/// POST `/v2/<name>/blobs/uploads/`.
pub async fn start<B>(
    store: &Store,
    parts: &Parts,
    name: &RepoName,
    body: B,
    who: Uploader<'_>,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let q = reply::query(&parts.uri);
    let mount = digest_param(&q, "mount")?.filter(|_| who.may_mount);
    if let Some(d) = mount {
        // Without `from` nothing is mounted from elsewhere: a repository
        // must not see blobs of others just by knowing their digest.
        let from = reply::query_one(&q, "from").and_then(|f| RepoName::parse(f).ok());
        if store.mount_blob(name, from.as_ref(), &d).await? {
            return created(name, &d);
        }
        // Not mountable: an ordinary session, as the spec asks.
    } else if let Some(d) = digest_param(&q, "digest")? {
        // The whole blob in this one request: counted like a session.
        store.push_blob(name, &d, who.owner, body).await?;
        return created(name, &d);
    }
    let id = store.uploads().start(name, who.owner).await?;
    Ok(session_reply(StatusCode::ACCEPTED, name, &id, 0))
}

/// Checks a `Content-Range: start-end` header against the session offset.
fn check_content_range(parts: &Parts, name: &RepoName, id: &str, len: u64) -> Result<()> {
    let Some(v) = reply::header_str(&parts.headers, header::CONTENT_RANGE) else {
        return Ok(());
    };
    let v = v
        .trim()
        .trim_start_matches("bytes=")
        .trim_start_matches("bytes ");
    let parsed = v
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let out_of_order = |msg: String| {
        Error::oci(ErrorCode::RangeInvalid, msg)
            .with_header(header::LOCATION, reply::upload_location(name, id))
            .with_header(header::RANGE, reply::upload_range(len))
            .with_header(http::HeaderName::from_static("docker-upload-uuid"), id)
    };
    match parsed {
        None => Err(out_of_order(format!("invalid Content-Range {v:?}"))),
        Some((s, e)) if e < s => Err(out_of_order(format!("invalid Content-Range {v:?}"))),
        Some((s, _)) if s != len => Err(out_of_order(format!(
            "chunk starts at {s}, but the upload holds {len} bytes"
        ))),
        Some((s, e)) => {
            let declared = reply::header_str(&parts.headers, header::CONTENT_LENGTH)
                .and_then(|v| v.parse::<u64>().ok());
            match declared {
                Some(n) if n != e - s + 1 => Err(out_of_order(format!(
                    "Content-Range {v} does not match Content-Length {n}"
                ))),
                _ => Ok(()),
            }
        }
    }
}

async fn append<B>(
    guard: &mut SessionGuard<'_>,
    parts: &Parts,
    name: &RepoName,
    body: B,
) -> Result<u64>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let len = guard.len().await?;
    check_content_range(parts, name, guard.id(), len)?;
    guard.append(body).await
}

/// PATCH `<location>`: append a chunk, or a whole streamed body.
pub async fn patch<B>(
    store: &Store,
    parts: &Parts,
    name: &RepoName,
    id: &str,
    owner: &str,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut guard = store.uploads().lock(name, id, owner).await?;
    let len = append(&mut guard, parts, name, body).await?;
    Ok(session_reply(StatusCode::ACCEPTED, name, id, len))
}

/// PUT `<location>?digest=`: append the optional last chunk and commit.
pub async fn finish<B>(
    store: &Store,
    parts: &Parts,
    name: &RepoName,
    id: &str,
    owner: &str,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let q = reply::query(&parts.uri);
    let d = digest_param(&q, "digest")?.ok_or_else(|| {
        Error::oci(
            ErrorCode::DigestInvalid,
            "the digest query parameter is required",
        )
    })?;
    let mut guard = store.uploads().lock(name, id, owner).await?;
    append(&mut guard, parts, name, body).await?;
    store.finish_upload(guard, name, &d).await?;
    created(name, &d)
}

/// GET `<location>`: the session's offset.
pub async fn status(
    store: &Store,
    name: &RepoName,
    id: &str,
    owner: &str,
) -> Result<Response<Body>> {
    let guard = store.uploads().lock(name, id, owner).await?;
    let len = guard.len().await?;
    Ok(session_reply(StatusCode::NO_CONTENT, name, id, len))
}

/// DELETE `<location>`: cancel the session and drop its bytes.
pub async fn cancel(
    store: &Store,
    name: &RepoName,
    id: &str,
    owner: &str,
) -> Result<Response<Body>> {
    store
        .uploads()
        .lock(name, id, owner)
        .await?
        .cancel()
        .await?;
    Ok(reply::empty(StatusCode::NO_CONTENT))
}
