//! The store's rules for local content, as methods the registry calls
//! instead of repeating their steps: linking a blob into a repository (a
//! mount, a one-request push, a finished session), pushing a manifest
//! (what it references must be there; the bytes, the record, its tags and
//! its referrer entry stored together) and deleting. Each change holds the
//! GC lock (shared) from the first check to the record, so neither garbage
//! collection nor eviction can remove a blob in between, and is durable
//! before the method returns.

use super::index::{ManifestMeta, ManifestPut};
use super::uploads::{Reservation, SessionGuard};
use super::Store;
use crate::error::{BoxError, Error, Result};
use crate::oci::manifest::Descriptor;
use crate::oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use http_body::Body as HttpBody;

/// A validated manifest to store in a local repository.
pub struct ManifestPush<'a> {
    pub repo: &'a RepoName,
    pub digest: &'a Digest,
    pub bytes: &'a [u8],
    pub media_type: String,
    pub subject: Option<Digest>,
    /// The descriptor to list under its subject, if it has one.
    pub referrer: Option<Descriptor>,
    /// Blobs it references: each must be linked into the repository.
    pub blobs: &'a [Digest],
    /// Manifests it lists (an index): each must be in the repository.
    pub manifests: &'a [Digest],
    pub tags: &'a [Tag],
}

/// What a manifest push did.
#[derive(Debug)]
pub enum Pushed {
    /// Stored; for each tag, the digest it pointed at before.
    Stored(Vec<Option<Digest>>),
    /// Not stored: these references are not in the repository.
    Missing(Vec<Digest>),
}

impl Store {
    /// Links `d` into `repo` and makes it durable. The caller holds the
    /// GC lock from before it checked or stored the blob.
    async fn link(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        // Touched as it is linked: an eviction round that read the index
        // before this link sees the blob as used, and keeps it.
        self.touch(d);
        self.index.link_blob(repo, d)?;
        self.index.flush().await
    }

    /// Mounts blob `d` into `repo` from `from` (or finds it already
    /// there). `false` when `from` does not hold it: nothing changes.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: Option<&RepoName>,
        d: &Digest,
    ) -> Result<bool> {
        if !self.index.blob_linked(from.unwrap_or(repo), d)? {
            return Ok(false);
        }
        let _gc = self.gc_lock.read().await;
        self.touch(d);
        let stored = self.blobs.size(d).await?.is_some();
        if stored {
            self.link(repo, d).await?;
        }
        Ok(stored)
    }

    /// Stores a whole blob sent in one request and links it into `repo`.
    /// It counts against `owner`'s upload allowance while it streams; past
    /// it, 429 and nothing stored.
    pub async fn push_blob<B>(
        &self,
        repo: &RepoName,
        d: &Digest,
        owner: &str,
        body: B,
    ) -> Result<()>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let reservation = self.uploads.reserve(owner)?;
        let mut temp = self.blobs.temp(d.algorithm()).await?;
        temp.write_body(reservation.counted(body))
            .await
            .map_err(Reservation::refusal)?;
        // Stored before the GC lock is taken (with a bucket, the upload
        // may take long); the touch first keeps GC and eviction off it.
        self.touch(d);
        temp.commit(&self.blobs, Some(d)).await?;
        self.link_stored(repo, d).await
    }

    /// Links a blob just stored into `repo`, under the GC lock, after
    /// checking that nothing removed it meanwhile.
    async fn link_stored(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        let _gc = self.gc_lock.read().await;
        if self.blobs.size(d).await?.is_none() {
            return Err(Error::oci(
                crate::error::ErrorCode::Unavailable,
                "the blob was removed while it was stored; push it again",
            ));
        }
        self.link(repo, d).await
    }

    /// Verifies a finished upload session against `d`, stores the blob
    /// and links it into `repo`.
    pub async fn finish_upload(
        &self,
        session: SessionGuard<'_>,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<()> {
        self.touch(d);
        session.commit(d).await?;
        self.link_stored(repo, d).await
    }

    /// Stores a local manifest with its tags and referrer entry, if
    /// everything it references is in the repository.
    pub async fn put_manifest(&self, push: ManifestPush<'_>) -> Result<Pushed> {
        // The manifest and what it references count as used, and garbage
        // collection and eviction wait while this push checks and records.
        let _gc = self.gc_lock.read().await;
        for d in push.blobs.iter().chain(push.manifests).chain([push.digest]) {
            self.touch(d);
        }
        let mut missing = Vec::new();
        for d in push.blobs {
            if !self.index.blob_linked(push.repo, d)? {
                missing.push(d.clone());
            }
        }
        for d in push.manifests {
            if self.index.manifest(push.repo, d)?.is_none() {
                missing.push(d.clone());
            }
        }
        if !missing.is_empty() {
            return Ok(Pushed::Missing(missing));
        }
        self.blobs.put_bytes(push.digest, push.bytes).await?;
        let before = self.index.put_manifest(ManifestPut {
            repo: push.repo,
            digest: push.digest,
            meta: ManifestMeta {
                media_type: push.media_type,
                size: push.bytes.len() as u64,
                subject: push.subject,
                stored: super::cache::unix_now() / 1000,
            },
            tags: push.tags,
            referrer: push.referrer,
        })?;
        self.index.flush().await?;
        Ok(Pushed::Stored(before))
    }

    /// Removes tag `t` of `repo`. `None` when there is no such tag, else
    /// the digest it pointed at (if it pointed at a stored manifest).
    pub async fn delete_tag(&self, repo: &RepoName, t: &Tag) -> Result<Option<Option<Digest>>> {
        let removed = self.index.delete_tag(repo, t)?;
        if removed.is_some() {
            self.index.flush().await?;
        }
        Ok(removed)
    }

    /// Removes manifest `d` of `repo` and every tag pointing at it.
    /// `None` when it is not there, else the tags removed.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<Option<Vec<String>>> {
        // Finding the tags that point at it reads every tag of the
        // repository: on the blocking pool.
        let (r, dd) = (repo.clone(), d.clone());
        let removed = self
            .index
            .blocking(move |i| i.delete_manifest(&r, &dd))
            .await?;
        if removed.is_some() {
            self.index.flush().await?;
        }
        Ok(removed)
    }

    /// Unlinks blob `d` from `repo`; `false` when it was not linked.
    pub async fn unlink_blob(&self, repo: &RepoName, d: &Digest) -> Result<bool> {
        if !self.index.unlink_blob(repo, d)? {
            return Ok(false);
        }
        self.index.flush().await?;
        Ok(true)
    }
}
