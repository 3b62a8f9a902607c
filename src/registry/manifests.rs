//! Manifests of local repositories: PUT (validated, stored byte-for-byte
//! with the media type it was pushed with, tags and referrers recorded in
//! one index batch), GET/HEAD by tag or digest, and DELETE.

use super::Change;
use crate::body::Body;
use crate::error::{BoxError, Error, ErrorCode, OciError, Result};
use crate::oci::manifest::{self, Descriptor, ManifestError, MAX_MANIFEST_BYTES};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::reply::{self, content::serve_stored};
use crate::store::index::ManifestMeta;
use crate::store::{ManifestPush, Pushed, Store};
use bytes::Bytes;
use http::{header, request::Parts, Response, StatusCode};
use http_body::Body as HttpBody;
use serde_json::json;

fn manifest_unknown(reference: &Reference) -> Error {
    Error::oci(ErrorCode::ManifestUnknown, "manifest unknown to registry")
        .with_detail(json!({ "reference": reference.to_string() }))
}

/// Resolves a reference to a digest and its index record.
pub fn resolve(
    store: &Store,
    name: &RepoName,
    reference: &Reference,
) -> Result<Option<(Digest, ManifestMeta)>> {
    let digest = match reference {
        Reference::Digest(d) => d.clone(),
        Reference::Tag(t) => match store.index().tag(name, t)? {
            Some(d) => d,
            None => return Ok(None),
        },
    };
    Ok(store.index().manifest(name, &digest)?.map(|m| (digest, m)))
}

/// GET or HEAD `/v2/<name>/manifests/<reference>`. The stored bytes are
/// served whatever the Accept header says: Wharf never converts.
pub async fn get(
    store: &Store,
    parts: &Parts,
    name: &RepoName,
    reference: &Reference,
) -> Result<Response<Body>> {
    let Some((digest, meta)) = resolve(store, name, reference)? else {
        return Err(manifest_unknown(reference));
    };
    let Some(blob) = store.open_blob(&digest).await? else {
        tracing::error!(%digest, repo = %name, "indexed manifest is missing from the store");
        return Err(manifest_unknown(reference));
    };
    if parts.method == http::Method::GET {
        // A GET of a manifest is a pull (a HEAD is not): the UI shows it.
        store.touch(&digest);
    }
    serve_stored(parts, blob, &digest, &meta.media_type, false).await
}

fn invalid(e: ManifestError) -> Error {
    Error::oci(ErrorCode::ManifestInvalid, e.to_string())
}

/// PUT `/v2/<name>/manifests/<reference>`.
pub async fn put<B>(
    store: &Store,
    parts: &Parts,
    name: &RepoName,
    reference: &Reference,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let bytes = reply::read_bounded(&parts.headers, body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| match e.code() {
            ErrorCode::SizeInvalid => Error::oci(
                ErrorCode::ManifestInvalid,
                format!("manifest is larger than the {MAX_MANIFEST_BYTES}-byte limit"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            _ => e,
        })?;
    let content_type =
        reply::header_str(&parts.headers, header::CONTENT_TYPE).map(manifest::bare_media_type);
    let parsed = manifest::parse(&bytes, content_type).map_err(invalid)?;

    let digest = match reference {
        Reference::Digest(want) => {
            let got = Digest::of(want.algorithm(), &bytes);
            if got != *want {
                return Err(Error::oci(
                    ErrorCode::DigestInvalid,
                    format!("manifest hashes to {got}, not {want}"),
                ));
            }
            got
        }
        Reference::Tag(_) => Digest::of(crate::oci::Algorithm::Sha256, &bytes),
    };
    let mut tags = Vec::new();
    if let Reference::Tag(t) = reference {
        tags.push(t.clone());
    }
    for (k, v) in reply::query(&parts.uri) {
        if k == "tag" {
            tags.push(
                Tag::parse(&v).map_err(|e| Error::oci(ErrorCode::TagInvalid, e.to_string()))?,
            );
        }
    }

    let referrer = parsed.subject.as_ref().map(|_| Descriptor {
        media_type: parsed.media_type.clone(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        artifact_type: parsed.artifact_type.clone(),
        annotations: parsed.annotations.clone(),
        urls: None,
    });
    let kind = crate::oci::content_type::classify(&parsed, &[]);
    let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
    let pushed = store
        .put_manifest(ManifestPush {
            repo: name,
            digest: &digest,
            bytes: &bytes,
            media_type: parsed.media_type.clone(),
            subject: subject.clone(),
            referrer,
            blobs: &parsed.blobs,
            manifests: &parsed.manifests,
            tags: &tags,
        })
        .await?;
    let before = match pushed {
        Pushed::Stored(before) => before,
        Pushed::Missing(missing) => {
            return Err(Error::many(
                missing
                    .into_iter()
                    .map(|d| OciError {
                        code: ErrorCode::ManifestBlobUnknown,
                        message: format!("manifest references {d}, which is not in {name}"),
                        detail: json!({ "digest": d.to_string() }),
                    })
                    .collect(),
            ))
        }
    };
    // Children of an index are not looked up here: an index counts as
    // images unless it says otherwise.
    crate::metrics::METRICS.manifest_stored(false, &kind);

    let mut r = reply::empty(StatusCode::CREATED);
    reply::set(
        &mut r,
        header::LOCATION,
        &format!("/v2/{name}/manifests/{digest}"),
    );
    reply::set(&mut r, "docker-content-digest", &digest.to_string());
    if let Some(s) = subject {
        reply::set(&mut r, "oci-subject", &s.to_string());
    }
    for t in &tags {
        if let Ok(v) = http::HeaderValue::from_str(t.as_str()) {
            r.headers_mut().append("oci-tag", v);
        }
    }
    r.extensions_mut().insert(Change::ManifestPushed {
        digest,
        tags: tags.into_iter().zip(before).collect(),
    });
    Ok(r)
}

/// DELETE `/v2/<name>/manifests/<reference>`: a tag removes only the tag;
/// a digest removes the manifest and every tag pointing at it.
pub async fn delete(
    store: &Store,
    name: &RepoName,
    reference: &Reference,
) -> Result<Response<Body>> {
    let change = match reference {
        Reference::Tag(t) => store
            .delete_tag(name, t)
            .await?
            .map(|digest| Change::TagDeleted {
                tag: t.clone(),
                digest,
            }),
        Reference::Digest(d) => {
            store
                .delete_manifest(name, d)
                .await?
                .map(|tags| Change::ManifestDeleted {
                    digest: d.clone(),
                    tags,
                })
        }
    };
    let Some(change) = change else {
        return Err(manifest_unknown(reference));
    };
    let mut r = reply::empty(StatusCode::ACCEPTED);
    r.extensions_mut().insert(change);
    Ok(r)
}
