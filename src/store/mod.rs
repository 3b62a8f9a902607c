//! Everything stored: content-addressed blobs (`blobs`), the sled index
//! of what blobs cannot say (`index`), upload sessions in progress
//! (`uploads`) and the cache's accounting (`cache`). The store owns its
//! rules: callers use the methods of [`Store`] (`local` for pushes and
//! deletes, `mirrored` for cache fills), read the index, and never name
//! a path or a file.

mod access;
mod blobs;
mod bucket;
mod bucket_uploads;
pub mod cache;
mod digest_set;
pub mod gc;
mod imported;
pub mod index;
mod journal;
mod local;
mod mirrored;
mod opened;
pub mod quota;
mod remote;
pub mod uploads;
pub mod verify;

pub use blobs::{Spool, TempBlob};
pub use imported::{Arriving, ImportedImage, ImportedManifest, Placement, Staging};
pub use index::Index;
pub use local::{ManifestPush, Pushed};
pub use opened::Opened;
pub use uploads::Uploads;

use blobs::BlobStore;
use std::sync::Arc;

use crate::config::Storage;
use crate::error::{Error, Result};
use crate::oci::digest::Algorithm;
use crate::oci::Digest;
use std::path::Path;
use std::time::Duration;

/// The whole store of one data directory. Cloning it is cheap: every
/// clone is the same store.
#[derive(Clone)]
pub struct Store {
    blobs: BlobStore,
    index: Index,
    uploads: Arc<Uploads>,
    cache: Arc<cache::CacheTracker>,
    /// Held for reading while a push references blobs, for writing while
    /// garbage collection or eviction removes one.
    gc_lock: Arc<tokio::sync::RwLock<()>>,
    /// One garbage collection or verify at a time.
    maintenance: Arc<tokio::sync::Mutex<()>>,
    /// With a bucket: access batches written since the last compaction.
    access_batches: Arc<std::sync::atomic::AtomicUsize>,
}

impl Store {
    /// Opens the store under `data` (with `--storage s3`, against its
    /// bucket), removing temp files a crash left and upload sessions that
    /// expired while the server was down.
    pub async fn open(
        data: &Path,
        storage: &Storage,
        index_cache: u64,
        upload_timeout: Duration,
        cache_limit: Option<u64>,
        upload_limits: uploads::Limits,
    ) -> Result<Store> {
        let store = Self::open_quiet(
            data,
            storage,
            index_cache,
            upload_timeout,
            cache_limit,
            upload_limits,
        )
        .await?;
        let cleaned = store
            .blobs
            .clean_tmp()
            .map_err(|e| Error::storage("cleaning temp files", e))?;
        let expired = store.uploads.expire_idle().await?;
        if cleaned + expired > 0 {
            tracing::info!(
                temp_files = cleaned,
                uploads = expired,
                "cleaned up after the last run"
            );
        }
        Ok(store)
    }

    /// Opens a data directory no server is using, for a maintenance
    /// command (`wharf gc`, `wharf verify`): no cache or upload limits
    /// apply, and nothing changes on opening (with a bucket, the local
    /// index may be filled from it: it is a cache).
    pub async fn open_for_maintenance(
        data: &Path,
        storage: &Storage,
        index_cache: u64,
    ) -> Result<Store> {
        Self::open_quiet(
            data,
            storage,
            index_cache,
            Duration::from_secs(3600),
            None,
            uploads::Limits::NONE,
        )
        .await
    }

    /// Opens the store without cleaning anything up.
    async fn open_quiet(
        data: &Path,
        storage: &Storage,
        index_cache: u64,
        upload_timeout: Duration,
        cache_limit: Option<u64>,
        upload_limits: uploads::Limits,
    ) -> Result<Store> {
        let bucket = match storage {
            Storage::Fs => None,
            Storage::S3(cfg) => {
                let b = Arc::new(bucket::Bucket::connect(cfg).await?);
                tracing::info!(
                    bucket = b.identity(),
                    "object storage reachable and writable"
                );
                Some((b, cfg.local_cache_size))
            }
        };
        let index = Index::open(
            &data.join("index"),
            index_cache,
            bucket.as_ref().map(|(b, _)| b.clone()),
        )?;
        journal::check_kind(index.db(), bucket.is_some())?;
        let remote = match bucket {
            None => None,
            Some((b, local_limit)) => {
                if index.restore().await?.is_some() {
                    // Totals saved beside other records do not count these.
                    index.forget_counts()?;
                    // Blob files of another bucket's cache are not this one's.
                    blobs::clear_local(data)?;
                    let n = access::restore(&b, &index).await?;
                    tracing::info!(blobs = n, "access times restored from the bucket");
                }
                let (root, idx) = (data.to_path_buf(), index.clone());
                let local = remote::LocalCache::new(local_limit, move |d| {
                    let _ = idx.remove_seal(d);
                    let _ = std::fs::remove_file(blobs::file_of(&root, d));
                });
                Some(Arc::new(remote::Remote::new(b, local)))
            }
        };
        let blobs = BlobStore::open(data, index.clone(), remote.clone())
            .map_err(|e| Error::storage("opening the data directory", e))?;
        if let Some(r) = &remote {
            // What the data directory holds from earlier runs counts
            // toward --local-cache-size, oldest first out.
            let mut files = blobs.list_local().await?;
            files.sort_by_key(|(_, _, mtime)| *mtime);
            for (d, len, _) in files {
                r.local.insert(&d, len);
            }
            r.local.settle();
        }
        let uploads = Arc::new(
            Uploads::new(blobs.clone(), index.clone(), upload_timeout, upload_limits).await?,
        );
        let cache = Arc::new(cache::CacheTracker::new(
            index.clone(),
            blobs.clone(),
            cache_limit,
        )?);
        Ok(Store {
            blobs,
            index,
            uploads,
            cache,
            gc_lock: Arc::new(tokio::sync::RwLock::new(())),
            maintenance: Arc::default(),
            access_batches: Arc::default(),
        })
    }

    /// Collects garbage (see [`gc::collect`]), after any collection or
    /// verify already running; with `wait == false`, `None` instead of
    /// waiting for one.
    pub async fn collect_garbage(
        &self,
        grace: std::time::Duration,
        dry_run: bool,
        wait: bool,
    ) -> Result<Option<gc::GcReport>> {
        let _one = match self.maintenance_turn(wait).await {
            Some(g) => g,
            None => return Ok(None),
        };
        gc::collect(self, grace, dry_run).await.map(Some)
    }

    /// Verifies the store (see [`verify::verify`]; `live` while it serves),
    /// as [`Store::collect_garbage`] takes its turn.
    pub async fn verify(
        &self,
        repair: bool,
        live: bool,
        wait: bool,
    ) -> Result<Option<verify::VerifyReport>> {
        let _one = match self.maintenance_turn(wait).await {
            Some(g) => g,
            None => return Ok(None),
        };
        verify::verify(self, repair, live).await.map(Some)
    }

    /// Every blob digest the store holds (manifests included): what `wharf
    /// inventory` reports, for delta bundles: one listing of the files (or
    /// objects), held as the list it answers (some 80 bytes a digest).
    pub async fn inventory(&self) -> Result<Vec<crate::oci::Digest>> {
        let mut out = Vec::new();
        let mut files = self.blobs.files();
        while let Some(batch) = files.next().await? {
            out.extend(batch.into_iter().map(|(d, _, _)| d));
        }
        Ok(out)
    }

    async fn maintenance_turn(&self, wait: bool) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        if wait {
            Some(self.maintenance.clone().lock_owned().await)
        } else {
            self.maintenance.clone().try_lock_owned().ok()
        }
    }

    /// Makes every change durable and writes pending access times (at
    /// shutdown); with `save_totals` (nothing changes the cache any more)
    /// saves the cache totals for the next start.
    pub async fn close(&self, save_totals: bool) -> Result<()> {
        if let Err(e) = self.flush_access().await {
            tracing::warn!(error = %e, "writing access times failed");
        }
        if save_totals {
            if let Err(e) = self.cache.save_totals() {
                tracing::warn!(error = %e, "saving the cache totals failed: the next start counts them");
            }
        }
        self.index.flush().await
    }

    /// The index, to read: every change goes through the store's methods.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The upload sessions.
    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    /// Makes every change so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.index.flush().await
    }

    /// Opens blob `d` to serve it, checking first that it is intact.
    /// `None` when it is missing, or was found corrupt (and set aside).
    pub async fn open_blob(&self, d: &Digest) -> Result<Option<Opened>> {
        if let Some((file, len)) = self.blobs.open_verified(d).await? {
            return Ok(Some(Opened::file(file, len)));
        }
        let Some(remote) = self.blobs.remote() else {
            return Ok(None);
        };
        match self.blobs.size(d).await? {
            None => Ok(None),
            // Only the empty blob is empty: an object emptied behind
            // Wharf's back would otherwise be served whole, as nothing.
            Some(0) if *d != Digest::of(d.algorithm(), b"") => {
                tracing::error!(digest = %d, "blob in the bucket is empty: not served");
                Ok(None)
            }
            Some(len) => Ok(Some(Opened::bucket(
                self.blobs.clone(),
                remote.clone(),
                d.clone(),
                len,
            ))),
        }
    }

    /// Reads a small blob (a manifest) whole, for listings; `None` when it
    /// is missing or larger than `limit`. Blocking: call it on the
    /// blocking pool.
    pub fn read_small_blocking(&self, d: &Digest, limit: u64) -> Result<Option<Vec<u8>>> {
        self.blobs.read_small(d, limit)
    }

    /// A new blob, hashed as it is written; dropped uncommitted, it leaves
    /// nothing behind.
    pub async fn new_blob(&self, algorithm: Algorithm) -> Result<TempBlob> {
        self.blobs.temp(algorithm).await
    }

    /// Notes that `d` was just used (a pull, or a push referencing it).
    pub fn touch(&self, d: &Digest) {
        self.cache.touch(d);
    }

    /// When `d` was last used, unix milliseconds.
    pub fn last_used(&self, d: &Digest) -> Result<Option<u64>> {
        self.cache.last_used(d)
    }

    /// Bytes of mirrored content that count toward the cache limit.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.bytes()
    }

    /// Mirrored blobs and manifests that count toward the cache limit.
    pub fn cache_items(&self) -> u64 {
        self.cache.items()
    }

    /// Whether the mirrored content is over the cache limit.
    pub fn cache_over_limit(&self) -> bool {
        self.cache.is_over_limit()
    }

    /// Resolves when mirrored content passes the cache limit.
    pub async fn cache_overflowed(&self) {
        self.cache.over_limit.notified().await
    }

    /// Writes the access times gathered since the last call (to the
    /// index; with a bucket, also to the bucket in one batch object).
    pub async fn flush_access(&self) -> Result<usize> {
        let n = self.cache.flush_access()?;
        let Some(remote) = self.blobs.remote() else {
            return Ok(n);
        };
        let batch = self.cache.take_unsent();
        if let Err(e) = access::push(&remote.bucket, &batch).await {
            self.cache.give_back(batch);
            return Err(e);
        }
        if !batch.is_empty() {
            let written = self
                .access_batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if written >= access::COMPACT_AFTER {
                self.access_batches
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                access::compact(&remote.bucket, &self.index).await?;
            }
        }
        Ok(n)
    }

    /// Makes a running eviction round stop after its current batch.
    pub fn stop_evicting(&self) {
        self.cache.stop_evicting();
    }

    /// Evicts least recently used mirrored content until the cache is
    /// under its low-water mark (nothing under the limit).
    pub async fn evict(&self) -> Result<cache::Evicted> {
        self.cache.evict(&self.gc_lock).await
    }
}
