//! The pull-through mirror: routing to configured upstreams, the tag TTL
//! cache, single-flight manifest and blob fills, stale-if-error and the
//! brief negative cache. Content by digest is immutable and, once cached,
//! never asked for again; a tag is trusted for its upstream's TTL, then
//! revalidated with a HEAD (which Docker Hub does not count against rate
//! limits). When the upstream cannot answer, the last known digest (kept in
//! the index, so it survives a restart) is served. Each request for a
//! manifest or blob is counted as a cache hit, miss or stale answer, and
//! the bytes sent by where they came from ([`crate::metrics`]).

pub mod fill;
pub mod routing;
pub mod tag_list;

use crate::body::Body;
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::{Kind, Lookup, Source, METRICS};
use crate::oci::manifest::{self, MANIFEST_TYPES};
use crate::oci::{Digest, Reference};
use crate::reply;
use crate::reply::content::{parse_range, range_invalid, serve_bytes, serve_stored, Range};
use crate::store::index::ManifestMeta;
use crate::store::Store;
use crate::upstream::{Upstream, UpstreamError};
use bytes::Bytes;
use fill::{FillError, FillSource, Fills};
use http::{header, request::Parts, Method, Response, StatusCode};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most cached tags in one page of a tag list answered from the cache
/// (offline, or the upstream failing), like a local tag list.
const CACHED_TAGS_PAGE: usize = 10_000;

/// How long an upstream 404 is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// How long a small upstream body (manifest, tag list) may take to arrive.
const SMALL_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Tag resolutions held in memory at most.
const TAG_CACHE_ENTRIES: u64 = 100_000;

/// The Accept list for manifests: every type Wharf stores.
const ACCEPT: [&str; 5] = MANIFEST_TYPES;

type TagKey = (String, String, String);

/// What a tag resolved to: the digest, and what the upstream's HEAD said
/// of the manifest (enough to answer a HEAD without fetching it).
#[derive(Clone)]
struct Resolved {
    digest: Digest,
    media_type: Option<String>,
    size: Option<u64>,
    ttl: Duration,
    /// Whether the tag → digest record in the index is up to date (shared
    /// by every clone the TTL cache hands out, so it is written once).
    recorded: Arc<std::sync::atomic::AtomicBool>,
    /// The last known digest, not the upstream's answer (which could not
    /// be had, or Wharf is offline).
    stale: bool,
}

/// A verified manifest held in memory: warm pulls by tag touch no disk.
struct MemManifest {
    bytes: Bytes,
    media_type: String,
}

/// Bytes of manifests held in memory at most.
const MEMORY_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

struct TagExpiry;

impl moka::Expiry<TagKey, Resolved> for TagExpiry {
    fn expire_after_create(&self, _k: &TagKey, v: &Resolved, _now: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

pub struct Mirror {
    upstreams: HashMap<String, Arc<Upstream>>,
    offline: bool,
    tags: moka::future::Cache<TagKey, Resolved>,
    negative: moka::future::Cache<String, ()>,
    manifests: moka::future::Cache<(String, String, Digest), ManifestMeta>,
    memory: moka::future::Cache<(String, Digest), Arc<MemManifest>>,
    fills: Arc<Fills>,
    idle_timeout: Duration,
    tag_walks: tag_list::TagWalks,
    tag_limits: tag_list::Limits,
}

/// What a HEAD passed upstream asks about.
#[derive(Clone, Copy)]
enum Head {
    Blob,
    Manifest,
}

/// Turns an upstream failure into the client's answer, for content of
/// `kind` ("manifest" or "blob").
fn client_error(e: &UpstreamError, unknown: ErrorCode, what: &str) -> Error {
    match e {
        UpstreamError::NotFound => Error::oci(unknown, format!("{what} not found upstream")),
        UpstreamError::RateLimited { retry_after } => {
            let err = Error::oci(
                ErrorCode::TooManyRequests,
                "upstream rate limit reached and nothing cached",
            );
            match retry_after {
                Some(r) => err.with_header(header::RETRY_AFTER, r.clone()),
                None => err,
            }
        }
        other => Error::oci(
            ErrorCode::Unavailable,
            format!("{what} is not cached and the upstream cannot serve it: {other}"),
        ),
    }
}

fn offline_error(what: &str) -> Error {
    Error::oci(
        ErrorCode::Unavailable,
        format!("{what} is not cached and Wharf is running offline"),
    )
}

impl Mirror {
    /// Waits until every running cache fill has finished (stored or
    /// failed); shutdown calls this after the last request is done.
    pub async fn settled(&self) {
        self.fills.settled().await;
    }

    /// Blob fills running now.
    pub fn fills_in_flight(&self) -> usize {
        self.fills.running()
    }

    pub fn new(config: &Config) -> std::result::Result<Mirror, String> {
        let mut upstreams = HashMap::new();
        for u in &config.upstreams {
            upstreams.insert(u.name.clone(), Arc::new(Upstream::new(u.clone())?));
        }
        Ok(Mirror {
            upstreams,
            offline: config.offline,
            tags: moka::future::Cache::builder()
                .max_capacity(TAG_CACHE_ENTRIES)
                .expire_after(TagExpiry)
                .build(),
            negative: moka::future::Cache::builder()
                .max_capacity(TAG_CACHE_ENTRIES)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            manifests: moka::future::Cache::builder()
                .max_capacity(TAG_CACHE_ENTRIES)
                .build(),
            memory: moka::future::Cache::builder()
                .max_capacity(MEMORY_MANIFEST_BYTES)
                .weigher(|_k: &(String, Digest), v: &Arc<MemManifest>| {
                    v.bytes.len().try_into().unwrap_or(u32::MAX)
                })
                .build(),
            fills: Arc::new(Fills::default()),
            idle_timeout: config.upstream_idle_timeout,
            tag_walks: tag_list::TagWalks::default(),
            tag_limits: tag_list::Limits {
                tags: config.max_upstream_tags,
                bytes: config.max_upstream_tag_bytes,
            },
        })
    }

    fn upstream(&self, name: &str) -> Result<Arc<Upstream>> {
        self.upstreams.get(name).cloned().ok_or_else(|| {
            Error::oci(
                ErrorCode::NameUnknown,
                format!("upstream {name} is not configured"),
            )
        })
    }

    /// GET/HEAD a manifest of a mirrored repository.
    pub async fn manifest(
        &self,
        store: &Store,
        parts: &Parts,
        upstream: &str,
        repo: &str,
        reference: &Reference,
    ) -> Result<Response<Body>> {
        let mut lookup = Lookup::Miss;
        let r = self
            .serve_manifest(store, parts, upstream, repo, reference, &mut lookup)
            .await;
        METRICS.cache(Kind::Manifest, lookup);
        r.map(|r| counted(r, lookup))
    }

    /// [`Mirror::manifest`], saying in `lookup` what the cache had.
    async fn serve_manifest(
        &self,
        store: &Store,
        parts: &Parts,
        upstream: &str,
        repo: &str,
        reference: &Reference,
        lookup: &mut Lookup,
    ) -> Result<Response<Body>> {
        let up = self.upstream(upstream)?;
        let (digest, head) = match reference {
            Reference::Digest(d) => (d.clone(), None),
            Reference::Tag(t) => {
                let r = self.resolve_tag(store, &up, repo, t.as_str()).await?;
                (r.digest.clone(), Some(r))
            }
        };
        if let Some(m) = self
            .memory
            .get(&(upstream.to_string(), digest.clone()))
            .await
        {
            *lookup = cached_lookup(head.as_ref());
            self.record_tag(store, upstream, repo, reference, head.as_ref(), &digest)?;
            store.touch(&digest);
            return serve_bytes(parts, m.bytes.clone(), &digest, &m.media_type).await;
        }
        let cached = store.index().mirror_manifest(upstream, &digest)?;
        if cached.is_none() && parts.method == Method::HEAD && !self.offline {
            // A HEAD asks only what the manifest is: answer from the tag's
            // HEAD, or ask upstream with a HEAD too, never with a GET (which
            // Docker Hub counts against the rate limit).
            if let Some(Resolved {
                media_type: Some(t),
                size: Some(n),
                ..
            }) = &head
            {
                let mut r = reply::empty(StatusCode::OK);
                reply::set(&mut r, header::CONTENT_TYPE, t);
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, http::HeaderValue::from(*n));
                reply::set(&mut r, "docker-content-digest", &digest.to_string());
                return Ok(r);
            }
            return self.head_upstream(&up, repo, Head::Manifest, &digest).await;
        }
        let (digest, meta) = match cached {
            Some(m) => {
                *lookup = cached_lookup(head.as_ref());
                (digest, m)
            }
            None => {
                // The last cached digest of a tag that moved, if any.
                let fallback = || -> Result<Option<(Digest, ManifestMeta)>> {
                    let Reference::Tag(t) = reference else {
                        return Ok(None);
                    };
                    let Some(old) = store
                        .index()
                        .mirror_tag(upstream, repo, t.as_str())?
                        .filter(|old| *old != digest)
                    else {
                        return Ok(None);
                    };
                    Ok(store
                        .index()
                        .mirror_manifest(upstream, &old)?
                        .map(|m| (old, m)))
                };
                // Short of pulls: the tag moved, but fetching its new
                // manifest would spend one; it stays where it was.
                let saving = if up.budget().spend().holds_tags() {
                    fallback()?
                } else {
                    None
                };
                match saving {
                    Some((old, m)) => {
                        up.budget().saved();
                        tracing::debug!(upstream, repo, digest = %old, moved_to = %digest, "pull budget low: a moved tag is served at its last cached digest");
                        *lookup = Lookup::Stale;
                        (old, m)
                    }
                    None => match self.fetch_manifest(store, &up, repo, &digest).await {
                        Ok(m) => (digest, m),
                        // The tag's new digest cannot be fetched: serve the
                        // last digest that is cached, as for any other outage.
                        Err(e) if e.allows_stale() => match fallback()? {
                            Some((old, m)) => {
                                tracing::warn!(upstream, repo, error = %e, digest = %old, "new digest unavailable: serving the last cached one");
                                *lookup = Lookup::Stale;
                                (old, m)
                            }
                            None => return Err(self.fetch_error(&e)),
                        },
                        Err(e) => return Err(self.fetch_error(&e)),
                    },
                }
            }
        };
        let opened = store.open_blob(&digest).await?;
        let (blob, meta) = match opened {
            Some(b) => (b, meta),
            None => {
                // The index says cached but the file is gone: forget it and
                // fetch it again.
                tracing::error!(%digest, "cached manifest is missing from the store: fetching it again");
                *lookup = Lookup::Miss;
                store.forget_mirrored_manifest(upstream, &digest, meta.size)?;
                self.manifests
                    .invalidate(&(upstream.to_string(), repo.to_string(), digest.clone()))
                    .await;
                let meta = self
                    .fetch_manifest(store, &up, repo, &digest)
                    .await
                    .map_err(|e| self.fetch_error(&e))?;
                match store.open_blob(&digest).await? {
                    Some(b) => (b, meta),
                    None => {
                        return Err(Error::oci(
                            ErrorCode::ManifestUnknown,
                            "cached manifest is missing",
                        ))
                    }
                }
            }
        };
        // Only a digest whose manifest is cached becomes the tag's offline
        // fallback.
        let head = head.filter(|h| h.digest == digest);
        self.record_tag(store, upstream, repo, reference, head.as_ref(), &digest)?;
        store.touch(&digest);
        if blob.len() > manifest_limit() as u64 {
            return serve_stored(parts, blob, &digest, &meta.media_type, false).await;
        }
        let limit = blob.len();
        let buf = blob.read_all(limit).await?;
        if Digest::of(digest.algorithm(), &buf) != digest {
            return Err(Error::storage(
                "reading a cached manifest",
                std::io::Error::other(format!("{digest} changed while it was read")),
            ));
        }
        let bytes = Bytes::from(buf);
        // Keyed by the digest actually served (a stale fallback differs
        // from the one the tag resolved to).
        self.memory
            .insert(
                (upstream.to_string(), digest.clone()),
                Arc::new(MemManifest {
                    bytes: bytes.clone(),
                    media_type: meta.media_type.clone(),
                }),
            )
            .await;
        serve_bytes(parts, bytes, &digest, &meta.media_type).await
    }

    /// Records a tag's digest as its offline fallback, once per resolution.
    fn record_tag(
        &self,
        store: &Store,
        upstream: &str,
        repo: &str,
        reference: &Reference,
        head: Option<&Resolved>,
        digest: &Digest,
    ) -> Result<()> {
        let Reference::Tag(t) = reference else {
            return Ok(());
        };
        let fresh =
            head.is_none_or(|h| !h.recorded.swap(true, std::sync::atomic::Ordering::SeqCst));
        if fresh {
            store.record_mirror_tag(upstream, repo, t.as_str(), digest)?;
        }
        Ok(())
    }

    fn fetch_error(&self, e: &UpstreamError) -> Error {
        if self.offline {
            offline_error("manifest")
        } else {
            client_error(e, ErrorCode::ManifestUnknown, "manifest")
        }
    }

    /// What a tag stands for: from the TTL cache, else a HEAD upstream,
    /// else (upstream down) the last known digest.
    async fn resolve_tag(
        &self,
        store: &Store,
        up: &Arc<Upstream>,
        repo: &str,
        tag: &str,
    ) -> Result<Resolved> {
        let name = up.name().to_string();
        let last_known = || -> Result<Option<Resolved>> {
            Ok(store
                .index()
                .mirror_tag(&name, repo, tag)?
                .map(|digest| Resolved {
                    digest,
                    media_type: None,
                    size: None,
                    ttl: Duration::ZERO,
                    recorded: Arc::new(true.into()),
                    stale: true,
                }))
        };
        if self.offline {
            return last_known()?.ok_or_else(|| offline_error("tag"));
        }
        let neg_key = format!("{name}\0{repo}\0{tag}");
        if self.negative.contains_key(&neg_key) {
            return Err(Error::oci(
                ErrorCode::ManifestUnknown,
                "manifest unknown upstream (cached answer)",
            ));
        }
        let key = (name.clone(), repo.to_string(), tag.to_string());
        if up.budget().spend().holds_tags() {
            // Short of pulls: a tag still within its TTL, else its last
            // known digest when that manifest is cached, is not asked about
            // (a moved tag would cost a pull).
            if let Some(r) = self.tags.get(&key).await {
                return Ok(r);
            }
            if let Some(r) = last_known()? {
                if store.index().mirror_manifest(&name, &r.digest)?.is_some() {
                    up.budget().saved();
                    tracing::debug!(upstream = %name, repo, tag, digest = %r.digest, "pull budget low: tag served at its last known digest");
                    return Ok(r);
                }
            }
        }
        let loaded = self
            .tags
            .try_get_with(key, self.head_tag(store, up, repo, tag))
            .await;
        match loaded {
            Ok(r) => Ok(r),
            Err(e) if e.allows_stale() => match last_known()? {
                Some(r) => {
                    tracing::warn!(upstream = %name, repo, tag, error = %e, digest = %r.digest, "upstream unavailable: serving the last known digest");
                    Ok(r)
                }
                None => Err(client_error(&e, ErrorCode::ManifestUnknown, "manifest")),
            },
            Err(e) => {
                if *e == UpstreamError::NotFound {
                    self.negative.insert(neg_key, ()).await;
                }
                Err(client_error(&e, ErrorCode::ManifestUnknown, "manifest"))
            }
        }
    }

    /// Asks the upstream which digest a tag points to, with a HEAD. An
    /// upstream that omits `Docker-Content-Digest` gets a GET instead,
    /// whose bytes are cached right away.
    async fn head_tag(
        &self,
        store: &Store,
        up: &Arc<Upstream>,
        repo: &str,
        tag: &str,
    ) -> std::result::Result<Resolved, UpstreamError> {
        let ttl = up.config.tag_ttl;
        let resp = up
            .send(Method::HEAD, repo, &format!("manifests/{tag}"), &ACCEPT)
            .await?;
        let h = resp.headers();
        if let Some(digest) = h
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok())
        {
            return Ok(Resolved {
                digest,
                media_type: h
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| manifest::bare_media_type(v).to_string())
                    .filter(|t| MANIFEST_TYPES.contains(&t.as_str())),
                size: h
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
                ttl,
                recorded: Arc::new(false.into()),
                stale: false,
            });
        }
        let resp = up
            .send(Method::GET, repo, &format!("manifests/{tag}"), &ACCEPT)
            .await?;
        let (media_type, bytes) = read_manifest(up, resp).await?;
        let digest = Digest::of(crate::oci::Algorithm::Sha256, &bytes);
        self.store_manifest(store, up.name(), &digest, &media_type, &bytes)
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("caching manifest: {e}")))?;
        Ok(Resolved {
            digest,
            media_type: Some(media_type),
            size: Some(bytes.len() as u64),
            ttl,
            recorded: Arc::new(false.into()),
            stale: false,
        })
    }

    /// Fetches a manifest by digest once, however many ask for it from the
    /// same upstream repository at the same time.
    async fn fetch_manifest(
        &self,
        store: &Store,
        up: &Arc<Upstream>,
        repo: &str,
        digest: &Digest,
    ) -> std::result::Result<ManifestMeta, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Unavailable("offline".into()));
        }
        let neg_key = format!("{}\0{repo}\0{digest}", up.name());
        if self.negative.contains_key(&neg_key) {
            return Err(UpstreamError::NotFound);
        }
        let key = (up.name().to_string(), repo.to_string(), digest.clone());
        if store
            .index()
            .mirror_manifest(up.name(), digest)
            .ok()
            .flatten()
            .is_none()
        {
            // Whatever the in-memory cache holds for it is stale.
            self.manifests.invalidate(&key).await;
        }
        let loaded = self
            .manifests
            .try_get_with(key, async {
                if let Some(m) = store
                    .index()
                    .mirror_manifest(up.name(), digest)
                    .map_err(|e| UpstreamError::Unavailable(e.to_string()))?
                {
                    return Ok(m);
                }
                let resp = up
                    .send(Method::GET, repo, &format!("manifests/{digest}"), &ACCEPT)
                    .await?;
                let (media_type, bytes) = read_manifest(up, resp).await?;
                let got = Digest::of(digest.algorithm(), &bytes);
                if got != *digest {
                    return Err(UpstreamError::Unavailable(format!(
                        "upstream manifest hashes to {got}, not {digest}"
                    )));
                }
                self.store_manifest(store, up.name(), digest, &media_type, &bytes)
                    .await
                    .map_err(|e| UpstreamError::Unavailable(format!("caching manifest: {e}")))
            })
            .await;
        match loaded {
            Ok(m) => Ok(m),
            Err(e) => {
                if *e == UpstreamError::NotFound {
                    self.negative.insert(neg_key, ()).await;
                }
                Err((*e).clone())
            }
        }
    }

    async fn store_manifest(
        &self,
        store: &Store,
        upstream: &str,
        d: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<ManifestMeta> {
        let meta = store
            .put_mirrored_manifest(upstream, d, media_type, bytes)
            .await?;
        if let Ok(parsed) = crate::oci::manifest::parse(bytes, Some(media_type)) {
            let kind = crate::oci::content_type::classify(&parsed, &[]);
            crate::metrics::METRICS.manifest_stored(true, &kind);
        }
        tracing::info!(digest = %d, upstream, "cached manifest");
        Ok(meta)
    }

    /// A HEAD passed upstream, for content Wharf has not cached. The
    /// answer (which may come from a redirect target) gives only checked
    /// values: a Content-Length that is a number, the digest asked for, and
    /// Wharf's own Content-Type (for a manifest, the upstream's only when it
    /// is a manifest type); no header is copied.
    async fn head_upstream(
        &self,
        up: &Arc<Upstream>,
        repo: &str,
        kind: Head,
        digest: &Digest,
    ) -> Result<Response<Body>> {
        let (suffix, unknown) = match kind {
            Head::Blob => (format!("blobs/{digest}"), ErrorCode::BlobUnknown),
            Head::Manifest => (format!("manifests/{digest}"), ErrorCode::ManifestUnknown),
        };
        let resp = up
            .send(Method::HEAD, repo, &suffix, &ACCEPT)
            .await
            .map_err(|e| client_error(&e, unknown, "content"))?;
        let h = resp.headers();
        let length = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let content_type = match kind {
            Head::Blob => Some("application/octet-stream".to_string()),
            Head::Manifest => h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| manifest::bare_media_type(v).to_string())
                .filter(|t| MANIFEST_TYPES.contains(&t.as_str())),
        };
        drop(resp);
        let mut r = reply::empty(StatusCode::OK);
        if let Some(t) = content_type {
            reply::set(&mut r, header::CONTENT_TYPE, &t);
        }
        if let Some(n) = length {
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from(n));
        }
        reply::set(&mut r, "docker-content-digest", &digest.to_string());
        Ok(r)
    }

    /// Serves a cached mirrored blob, if it is cached and whole on disk. A
    /// file that is missing, or whose size is not the recorded one
    /// (truncated behind Wharf's back), is set aside and fetched again.
    async fn cached_blob(
        &self,
        store: &Store,
        parts: &Parts,
        upstream: &str,
        digest: &Digest,
    ) -> Result<Option<Response<Body>>> {
        let Some(recorded) = store.index().mirror_blob_size(upstream, digest)? else {
            return Ok(None);
        };
        let opened = store.open_blob(digest).await?;
        match opened {
            Some(blob) if blob.len() == recorded => {
                store.touch(digest);
                serve_stored(parts, blob, digest, "application/octet-stream", true)
                    .await
                    .map(Some)
            }
            other => {
                tracing::error!(%digest, recorded, found = ?other.map(|b| b.len()), "cached blob is missing or damaged: fetching it again");
                store
                    .forget_mirrored_blob(upstream, digest, recorded)
                    .await?;
                Ok(None)
            }
        }
    }

    /// GET/HEAD a blob of a mirrored repository.
    pub async fn blob(
        &self,
        store: &Store,
        parts: &Parts,
        upstream: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<Response<Body>> {
        let mut lookup = Lookup::Miss;
        let r = self
            .serve_blob(store, parts, upstream, repo, digest, &mut lookup)
            .await;
        METRICS.cache(Kind::Blob, lookup);
        r.map(|r| counted(r, lookup))
    }

    /// [`Mirror::blob`], saying in `lookup` what the cache had.
    async fn serve_blob(
        &self,
        store: &Store,
        parts: &Parts,
        upstream: &str,
        repo: &str,
        digest: &Digest,
        lookup: &mut Lookup,
    ) -> Result<Response<Body>> {
        let up = self.upstream(upstream)?;
        if let Some(r) = self.cached_blob(store, parts, upstream, digest).await? {
            *lookup = Lookup::Hit;
            return Ok(r);
        }
        if self.offline {
            return Err(offline_error("blob"));
        }
        let neg_key = format!("{upstream}\0{repo}\0{digest}");
        if self.negative.contains_key(&neg_key) {
            return Err(Error::oci(
                ErrorCode::BlobUnknown,
                "blob unknown upstream (cached answer)",
            ));
        }
        if parts.method == Method::HEAD {
            return self.head_upstream(&up, repo, Head::Blob, digest).await;
        }
        let source = FillSource {
            upstream: up.clone(),
            idle_timeout: self.idle_timeout,
            repo: repo.to_string(),
            store: store.clone(),
        };
        let Some(mut rx) = self.fills.join(digest, source) else {
            // Cached by a fill that finished just now.
            return match self.cached_blob(store, parts, upstream, digest).await? {
                Some(r) => {
                    *lookup = Lookup::Hit;
                    Ok(r)
                }
                None => Err(Error::oci(
                    ErrorCode::Unavailable,
                    "blob vanished from the cache; retry",
                )),
            };
        };
        let total = match fill::first_answer(&mut rx).await {
            Ok(t) => t,
            Err(FillError::Upstream(e)) => {
                if e == UpstreamError::NotFound {
                    self.negative.insert(neg_key, ()).await;
                }
                return Err(client_error(&e, ErrorCode::BlobUnknown, "blob"));
            }
            Err(e) => return Err(Error::oci(ErrorCode::Unavailable, e.to_string())),
        };
        let (status, start, end) = match total {
            Some(t) => match parse_range(reply::header_str(&parts.headers, header::RANGE), t) {
                Range::Full => (StatusCode::OK, 0, Some(t)),
                Range::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, Some(e + 1)),
                Range::Unsatisfiable => return Err(range_invalid(t)),
            },
            None => (StatusCode::OK, 0, None),
        };
        let body = fill::reader(rx, start, end);
        let mut r = Response::new(body);
        *r.status_mut() = status;
        reply::set(&mut r, header::CONTENT_TYPE, "application/octet-stream");
        reply::set(&mut r, "docker-content-digest", &digest.to_string());
        if let (Some(t), Some(e)) = (total, end) {
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from(e - start));
            if status == StatusCode::PARTIAL_CONTENT {
                reply::set(
                    &mut r,
                    header::CONTENT_RANGE,
                    &format!("bytes {start}-{}/{t}", e - 1),
                );
            }
        }
        Ok(r)
    }

    /// The tag list of a mirrored repository: upstream's (one bounded walk
    /// shared by identical requests), or the tags known from earlier pulls
    /// when the upstream cannot answer. With nothing cached, an upstream
    /// failure is the client's error, as for any uncached content.
    pub async fn tags(
        &self,
        store: &Store,
        parts: &Parts,
        client_name: &str,
        upstream: &str,
        repo: &str,
    ) -> Result<Response<Body>> {
        let up = self.upstream(upstream)?;
        let q = reply::query(&parts.uri);
        let n = reply::query_one(&q, "n").map(|v| {
            v.parse::<usize>()
                .map_err(|_| Error::oci(ErrorCode::PaginationNumberInvalid, "n must be a number"))
        });
        let n = n.transpose()?;
        let last = reply::query_one(&q, "last");
        let upstream_answer = if self.offline {
            Err(UpstreamError::Unavailable("offline".into()))
        } else {
            self.tag_walks
                .get(&up, repo, n, last, self.tag_limits)
                .await
        };
        let page = match upstream_answer {
            Ok(page) => page,
            Err(UpstreamError::NotFound) => {
                return Err(Error::oci(
                    ErrorCode::NameUnknown,
                    "repository not known upstream",
                ));
            }
            Err(e) => {
                // Read on the blocking pool, one bounded page at a time.
                let limit = n.unwrap_or(CACHED_TAGS_PAGE).min(CACHED_TAGS_PAGE);
                let (up_name, repo_name, after) = (
                    upstream.to_string(),
                    repo.to_string(),
                    last.map(str::to_string),
                );
                let mut tags = store
                    .index()
                    .blocking(move |index| {
                        index.mirror_tags(&up_name, &repo_name, after.as_deref(), limit + 1)
                    })
                    .await?;
                if tags.is_empty() && last.is_none() {
                    return Err(if self.offline {
                        offline_error("tag list")
                    } else {
                        client_error(&e, ErrorCode::NameUnknown, "tag list")
                    });
                }
                tracing::warn!(upstream, repo, error = %e, "tag list from the cache: upstream unavailable");
                let more = tags.len() > limit;
                tags.truncate(limit);
                Arc::new(tag_list::TagPage::of(&tags, more))
            }
        };
        let head = format!(
            "{{\"name\":{},\"tags\":",
            serde_json::Value::from(client_name)
        );
        let length = head.len() + page.json_len() + 1;
        let mut pieces = Vec::with_capacity(page.json.len() + 2);
        pieces.push(Bytes::from(head));
        pieces.extend(page.json.iter().cloned());
        pieces.push(Bytes::from_static(b"}"));
        let mut r = Response::new(crate::body::chunks(pieces));
        reply::set(&mut r, header::CONTENT_TYPE, "application/json");
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
        if let (true, Some(l)) = (page.more, page.last.as_deref()) {
            let mut qs = form_urlencoded::Serializer::new(String::new());
            qs.append_pair("last", l);
            if let Some(n) = n {
                qs.append_pair("n", &n.to_string());
            }
            reply::set(
                &mut r,
                header::LINK,
                &format!(
                    "</v2/{client_name}/tags/list?{}>; rel=\"next\"",
                    qs.finish()
                ),
            );
        }
        Ok(r)
    }

    /// Referrers of a mirrored manifest: proxied when the upstream has the
    /// API; otherwise a 404 (not NAME_UNKNOWN) so clients fall back to the
    /// `sha256-<hex>` tag schema, which is served like any other tag.
    pub async fn referrers(
        &self,
        parts: &Parts,
        upstream: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<Response<Body>> {
        let up = self.upstream(upstream)?;
        let unsupported = || {
            Error::oci(
                ErrorCode::ManifestUnknown,
                "referrers are not available from this upstream",
            )
        };
        if self.offline {
            return Err(unsupported());
        }
        let mut suffix = format!("referrers/{digest}");
        if let Some(q) = parts.uri.query() {
            suffix = format!("{suffix}?{q}");
        }
        let resp = match up
            .send(Method::GET, repo, &suffix, &[manifest::OCI_INDEX])
            .await
        {
            Ok(r) => r,
            Err(_) => return Err(unsupported()),
        };
        let is_index = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| manifest::bare_media_type(v) == manifest::OCI_INDEX);
        if !is_index {
            return Err(unsupported());
        }
        let filters = resp.headers().get("oci-filters-applied").cloned();
        let body = read_limited(resp.into_body(), manifest_limit())
            .await
            .map_err(|_| unsupported())?;
        let mut r = Response::new(crate::body::full(body.clone()));
        reply::set(&mut r, header::CONTENT_TYPE, manifest::OCI_INDEX);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        if let Some(f) = filters {
            r.headers_mut().insert("oci-filters-applied", f);
        }
        Ok(r)
    }
}

/// What a request found when the content was in the cache: the last
/// known content (stale) when its tag could not be revalidated.
fn cached_lookup(head: Option<&Resolved>) -> Lookup {
    if head.is_some_and(|h| h.stale) {
        Lookup::Stale
    } else {
        Lookup::Hit
    }
}

/// Counts the body bytes of an answer as served from the cache, or (for
/// a miss: fetched or streaming from the upstream for this request) from
/// the upstream.
fn counted(mut r: Response<Body>, lookup: Lookup) -> Response<Body> {
    let source = match lookup {
        Lookup::Miss => Source::Upstream,
        Lookup::Hit | Lookup::Stale => Source::Cache,
    };
    // What the cache had, as RFC 9211 spells it (`wharf prefetch` counts
    // bytes fetched and bytes already cached by it).
    r.headers_mut().insert(
        "cache-status",
        http::HeaderValue::from_static(match lookup {
            Lookup::Hit => "wharf; hit",
            Lookup::Stale => "wharf; hit; detail=stale",
            Lookup::Miss => "wharf; fwd=miss",
        }),
    );
    r.map(|b| crate::metrics::counted(b, source))
}

fn manifest_limit() -> usize {
    crate::oci::manifest::MAX_MANIFEST_BYTES
}

/// Reads a manifest answer (bounded), with its bare media type, counting
/// its bytes as received from `up`.
async fn read_manifest(
    up: &Upstream,
    resp: Response<hyper::body::Incoming>,
) -> std::result::Result<(String, Bytes), UpstreamError> {
    let header_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| manifest::bare_media_type(v).to_string());
    let bytes = read_limited(resp.into_body(), manifest_limit()).await?;
    up.metrics().received(bytes.len() as u64);
    let media_type = match header_type {
        Some(t) if MANIFEST_TYPES.contains(&t.as_str()) => t,
        other => manifest::parse(&bytes, None)
            .map(|p| p.media_type)
            .ok()
            .or(other)
            .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string()),
    };
    Ok((media_type, bytes))
}

/// Reads a small upstream body, bounded in size and in idle time.
async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
) -> std::result::Result<Bytes, UpstreamError> {
    let collected = tokio::time::timeout(
        SMALL_BODY_TIMEOUT,
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await
    .map_err(|_| UpstreamError::Unavailable("upstream body stalled".into()))?
    .map_err(|e| UpstreamError::Unavailable(format!("upstream body: {e}")))?;
    Ok(collected.to_bytes())
}
