//! Everything on disk: content-addressed blob files (`blobs`), the sled
//! index of what files cannot say (`index`), and upload sessions in
//! progress (`uploads`). Nothing outside this module touches a path.

pub mod blobs;
pub mod cache;
pub mod gc;
pub mod index;
mod mirrored;
pub mod quota;
pub mod uploads;
pub mod verify;

pub use blobs::BlobStore;
pub use index::Index;
pub use uploads::Uploads;

use crate::error::{Error, Result};
use std::path::Path;
use std::time::Duration;

/// The whole store of one data directory.
pub struct Store {
    pub blobs: BlobStore,
    pub index: Index,
    pub uploads: Uploads,
    pub cache: std::sync::Arc<cache::CacheTracker>,
    /// Held for reading while a push references blobs, for writing while
    /// garbage collection removes one.
    pub gc_lock: tokio::sync::RwLock<()>,
}

impl Store {
    /// Opens the store under `data`, removing temp files a crash left and
    /// upload sessions that expired while the server was down.
    pub async fn open(
        data: &Path,
        upload_timeout: Duration,
        cache_limit: Option<u64>,
        upload_limits: uploads::Limits,
    ) -> Result<Store> {
        let store = Self::open_quiet(data, upload_timeout, cache_limit, upload_limits)?;
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
    /// command (`wharf gc`, `wharf verify`): nothing changes on opening,
    /// and no cache or upload limits apply.
    pub fn open_for_maintenance(data: &Path) -> Result<Store> {
        Self::open_quiet(data, Duration::from_secs(3600), None, uploads::Limits::NONE)
    }

    /// Opens the store without changing anything.
    fn open_quiet(
        data: &Path,
        upload_timeout: Duration,
        cache_limit: Option<u64>,
        upload_limits: uploads::Limits,
    ) -> Result<Store> {
        let index = Index::open(&data.join("index"))?;
        let blobs = BlobStore::open(data, index.clone())
            .map_err(|e| Error::storage("opening the data directory", e))?;
        let uploads = Uploads::new(blobs.clone(), index.clone(), upload_timeout, upload_limits)?;
        let cache = std::sync::Arc::new(cache::CacheTracker::new(
            index.clone(),
            blobs.clone(),
            cache_limit,
        )?);
        Ok(Store {
            blobs,
            index,
            uploads,
            cache,
            gc_lock: tokio::sync::RwLock::new(()),
        })
    }
}
