//! Blobs in the bucket (`--storage s3`): `blobs/<alg>/<hex>` objects hold
//! every committed blob, and the data directory's blob files are a
//! bounded cache of them ([`LocalCache`], least recently used first out).
//! A blob is uploaded only after its digest is verified, so an object
//! under its name is whole (a failed multipart upload is aborted and
//! never visible). Reads of a blob the local cache lacks stream from the
//! bucket while the bytes are hashed: the last chunk is held back until
//! the digest matches, so a truncated or altered object is never served
//! whole, and a verified read fills the local cache on the way.

use super::blobs::TempBlob;
use super::bucket::Bucket;
use crate::body::Body;
use crate::error::{Error, Result};
use crate::oci::digest::Hasher;
use crate::oci::Digest;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use std::io;
use std::sync::Arc;

/// The bucket's blobs and the local cache of them.
pub struct Remote {
    pub(super) bucket: Arc<Bucket>,
    pub(super) local: LocalCache,
    /// Blobs being copied from the bucket into the local cache now: one
    /// copy each, however many clients read them meanwhile.
    filling: std::sync::Mutex<std::collections::HashSet<Digest>>,
}

/// The right to copy one blob into the local cache; released on drop.
pub(super) struct Filling {
    remote: Arc<Remote>,
    digest: Digest,
}

impl Drop for Filling {
    fn drop(&mut self) {
        let mut f = self
            .remote
            .filling
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.remove(&self.digest);
    }
}

/// The object name of blob `d`.
pub(super) fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// The blob an object name stands for.
pub(super) fn digest_of(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// Which blobs the data directory holds, weighed by size: past the
/// limit, the least recently used leave it (they stay in the bucket).
pub struct LocalCache {
    entries: moka::sync::Cache<Digest, u32>,
    limit: u64,
}

impl LocalCache {
    /// A cache of at most `limit` bytes; `forget` removes a blob's local
    /// file when it is pushed out.
    pub(super) fn new(limit: u64, forget: impl Fn(&Digest) + Send + Sync + 'static) -> LocalCache {
        // Least recently used out first. (moka's default, TinyLFU, admits
        // a new entry only if it is used more often than what it would
        // push out: a full cache would keep refusing every new blob.)
        let entries = moka::sync::Cache::builder()
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(limit / 1024)
            .weigher(|_, kib: &u32| *kib)
            .eviction_listener(move |d: Arc<Digest>, _, cause| {
                if cause.was_evicted() {
                    forget(&d);
                }
            })
            .build();
        LocalCache { entries, limit }
    }

    /// Whether a blob of `len` bytes can be kept at all.
    pub(super) fn fits(&self, len: u64) -> bool {
        len <= self.limit
    }

    /// Records that the data directory now holds `d` (`len` bytes).
    pub(super) fn insert(&self, d: &Digest, len: u64) {
        let kib = u32::try_from(len / 1024 + 1).unwrap_or(u32::MAX);
        self.entries.insert(d.clone(), kib);
    }

    /// Notes a read of `d` from the data directory.
    pub(super) fn used(&self, d: &Digest) {
        let _ = self.entries.get(d);
    }

    /// Forgets `d` (its file was removed).
    pub(super) fn remove(&self, d: &Digest) {
        self.entries.invalidate(d);
    }

    /// Applies pending evictions now (tests and start-up).
    pub(super) fn settle(&self) {
        self.entries.run_pending_tasks();
    }
}

impl Remote {
    pub(super) fn new(bucket: Arc<Bucket>, local: LocalCache) -> Remote {
        Remote {
            bucket,
            local,
            filling: Default::default(),
        }
    }

    /// The right to copy blob `d` (`len` bytes) into the local cache, if
    /// nobody is copying it already and it fits there at all.
    pub(super) fn start_filling(self: &Arc<Self>, d: &Digest, len: u64) -> Option<Filling> {
        if !self.local.fits(len) {
            return None;
        }
        let mut f = self.filling.lock().unwrap_or_else(|e| e.into_inner());
        f.insert(d.clone()).then(|| Filling {
            remote: self.clone(),
            digest: d.clone(),
        })
    }

    /// Moves blob `d`'s object aside to `quarantine/<alg>-<hex>`: it was
    /// found not to hash to its name. Records pointing at it then find it
    /// missing (the mirror fetches it again; a push replaces it).
    pub(super) async fn quarantine(&self, d: &Digest) -> Result<()> {
        self.local.remove(d);
        let to = format!("quarantine/{}-{}", d.algorithm().as_str(), d.hex());
        if self.bucket.size(&blob_name(d)).await?.is_some() {
            self.bucket.copy(&blob_name(d), &to).await?;
            self.bucket.delete(&blob_name(d)).await?;
        }
        Ok(())
    }

    /// [`quarantine`](Self::quarantine) in the background, logging a
    /// failure (a read that found the damage does not wait for it).
    fn quarantine_later(self: &Arc<Self>, d: &Digest) {
        let (me, d) = (self.clone(), d.clone());
        tokio::spawn(async move {
            if let Err(e) = me.quarantine(&d).await {
                tracing::warn!(digest = %d, error = %e, "setting a corrupt object aside failed");
            }
        });
    }

    /// Reads blob `d` from the bucket into a new local temp blob,
    /// verifying it. `None` when the bucket does not have it; an error
    /// when what it has does not hash to `d`.
    pub(super) async fn download(
        self: &Arc<Self>,
        d: &Digest,
        temp: &mut TempBlob,
    ) -> Result<Option<u64>> {
        let Some((_, mut stream)) = self.bucket.read(&blob_name(d), 0).await? else {
            return Ok(None);
        };
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::storage("reading a blob from the bucket", e))?;
            n += chunk.len() as u64;
            temp.write(chunk).await?;
        }
        let got = temp.finish().await?;
        if got != *d {
            self.quarantine_later(d);
            return Err(corrupt(d, &got));
        }
        Ok(Some(n))
    }
}

fn corrupt(want: &Digest, got: &Digest) -> Error {
    tracing::error!(digest = %want, actual = %got, "blob in the bucket is corrupt: not served");
    Error::storage(
        "reading a blob from the bucket",
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the bucket's {want} hashes to {got}"),
        ),
    )
}

/// A body streaming blob `d` (`len` bytes) whole from the bucket, checked
/// as it goes: the last chunk is sent only once everything hashed to `d`,
/// else the body ends with an error. What was read is also written to
/// `fill`, which `done` gets once verified (to keep it locally).
pub(super) async fn verified_body<F, Fut>(
    remote: Arc<Remote>,
    d: Digest,
    len: u64,
    mut fill: Option<TempBlob>,
    done: F,
) -> Result<Body>
where
    F: FnOnce(TempBlob) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some((size, stream)) = remote.bucket.read(&blob_name(&d), 0).await? else {
        return Err(Error::storage(
            "reading a blob from the bucket",
            io::Error::new(io::ErrorKind::NotFound, format!("{d} is not in the bucket")),
        ));
    };
    if size != len {
        tracing::error!(digest = %d, size, expected = len, "blob in the bucket has the wrong size: not served");
        return Err(Error::storage(
            "reading a blob from the bucket",
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the bucket's {d} is {size} bytes, not {len}"),
            ),
        ));
    }
    struct State<F> {
        remote: Arc<Remote>,
        /// Set after an error or the end: nothing more is sent.
        finished: bool,
        stream: futures_util::stream::BoxStream<'static, io::Result<Bytes>>,
        hasher: Option<Hasher>,
        held: Option<Bytes>,
        seen: u64,
        d: Digest,
        len: u64,
        fill: Option<TempBlob>,
        done: Option<F>,
    }
    // Filling the local cache hashes the bytes anyway: then that hash
    // checks them, and there is no second one.
    let state = State {
        remote: remote.clone(),
        finished: false,
        stream,
        hasher: fill.is_none().then(|| Hasher::new(d.algorithm())),
        held: None,
        seen: 0,
        d,
        len,
        fill: fill.take(),
        done: Some(done),
    };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        if s.finished {
            return None;
        }
        loop {
            match s.stream.next().await {
                Some(Ok(chunk)) => {
                    s.seen += chunk.len() as u64;
                    if let Some(h) = &mut s.hasher {
                        h.update(&chunk);
                    }
                    if let Some(t) = &mut s.fill {
                        if let Err(e) = t.write(chunk.clone()).await {
                            // Its hash was the check: without it, no
                            // complete body can be vouched for.
                            s.fill = None;
                            s.finished = true;
                            return Some((Err(io::Error::other(e)), s));
                        }
                    }
                    if let Some(prev) = s.held.replace(chunk) {
                        return Some((Ok(prev), s));
                    }
                }
                Some(Err(e)) => {
                    s.finished = true;
                    s.fill = None;
                    return Some((Err(e), s));
                }
                None => {
                    s.finished = true;
                    let last = s.held.take()?;
                    let mut fill = s.fill.take();
                    let got = match (s.hasher.take(), &mut fill) {
                        (Some(h), _) => h.finish(),
                        (None, Some(t)) => match t.finish().await {
                            Ok(d) => d,
                            Err(e) => return Some((Err(io::Error::other(e)), s)),
                        },
                        (None, None) => return None,
                    };
                    if got != s.d || s.seen != s.len {
                        s.remote.quarantine_later(&s.d);
                        return Some((Err(io::Error::other(corrupt(&s.d, &got))), s));
                    }
                    if let (Some(t), Some(done)) = (fill, s.done.take()) {
                        tokio::spawn(done(t));
                    }
                    return Some((Ok(last), s));
                }
            }
        }
    });
    let frames = body.map(|r| r.map(http_body::Frame::data));
    Ok(http_body_util::StreamBody::new(frames).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_round_trip() {
        use crate::oci::digest::Algorithm;
        let d = Digest::of(Algorithm::Sha256, b"x");
        assert_eq!(blob_name(&d), format!("blobs/sha256/{}", d.hex()));
        assert_eq!(digest_of(&blob_name(&d)), Some(d));
        assert_eq!(digest_of("blobs/sha256/nothex"), None);
        assert_eq!(digest_of("index/t/x"), None);
    }
}
