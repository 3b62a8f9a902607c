//! The store's rules for mirrored content, as methods callers use instead
//! of repeating their steps: caching a manifest (bytes, record,
//! accounting), committing a verified blob fill (stored, recorded once,
//! touched, accounted), remembering what a tag pointed at (the offline
//! fallback), and forgetting content found missing or damaged (set aside,
//! record, accounting).

use super::blobs::TempBlob;
use super::cache::{unix_now, CacheTracker};
use super::index::ManifestMeta;
use super::Store;
use crate::error::Result;
use crate::oci::Digest;

impl Store {
    /// Commits a cache fill whose bytes were verified to hash to `d`
    /// ([`TempBlob::finish`]) and records it as cached from `upstream`.
    pub async fn commit_fill(
        &self,
        temp: TempBlob,
        upstream: &str,
        d: &Digest,
        size: u64,
    ) -> Result<()> {
        temp.install(&self.blobs, d).await?;
        self.cache.record_mirrored_blob(upstream, d, size)
    }

    /// Remembers that tag `tag` of mirrored `repo` pointed at `d`: what a
    /// pull of the tag gets while the upstream cannot answer.
    pub fn record_mirror_tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        d: &Digest,
    ) -> Result<()> {
        self.index.put_mirror_tag(upstream, repo, tag, d)
    }

    /// Caches a verified mirrored manifest: its bytes, its record and its
    /// bytes toward the cache limit. Returns the record.
    pub async fn put_mirrored_manifest(
        &self,
        upstream: &str,
        d: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<ManifestMeta> {
        self.blobs.put_bytes(d, bytes).await?;
        let meta = ManifestMeta {
            media_type: media_type.to_string(),
            size: bytes.len() as u64,
            subject: None,
            stored: unix_now() / 1000,
        };
        let _changing = self.cache.changing();
        let known = self.index.mirror_manifest(upstream, d)?.is_some();
        self.index.put_mirror_manifest(upstream, d, &meta)?;
        if !known {
            self.cache.added(meta.size);
        }
        Ok(meta)
    }

    /// Forgets a cached mirrored manifest whose file is gone (it will be
    /// fetched again).
    pub fn forget_mirrored_manifest(&self, upstream: &str, d: &Digest, size: u64) -> Result<()> {
        let _changing = self.cache.changing();
        self.index.remove_mirror_manifest(upstream, d)?;
        self.cache.removed(size);
        Ok(())
    }

    /// Forgets a cached mirrored blob found missing or damaged: its file
    /// (if any) is quarantined, its record and bytes dropped.
    pub async fn forget_mirrored_blob(&self, upstream: &str, d: &Digest, size: u64) -> Result<()> {
        self.blobs.quarantine(d).await?;
        let _changing = self.cache.changing();
        self.index.remove_mirror_blob(upstream, d)?;
        self.cache.removed(size);
        Ok(())
    }
}

impl CacheTracker {
    /// Records a mirrored blob whose file was just installed under its
    /// verified digest: recorded once, touched, and counted toward the
    /// limit only the first time.
    pub fn record_mirrored_blob(&self, upstream: &str, d: &Digest, size: u64) -> Result<()> {
        let _changing = self.changing();
        let known = self.index().mirror_blob(upstream, d)?;
        self.index().put_mirror_blob(upstream, d, size)?;
        self.touch(d);
        if !known {
            self.added(size);
        }
        Ok(())
    }
}
