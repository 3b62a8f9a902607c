//! The mirror cache's bookkeeping: how many bytes mirrored content takes,
//! when each blob was last used (unix milliseconds), and eviction. Access
//! times are kept in
//! memory and written to the index at most once a minute per blob, so a
//! cache hit costs no index write. When mirrored content passes the byte
//! limit, the least recently used mirrored blobs and manifests are removed
//! until it is under 90% of the limit. Anything linked into a local
//! repository is never evicted. A reader that already has a file open keeps
//! reading it after eviction (unlinking does not disturb an open file), and
//! one that finds it gone fetches it again.

use super::{BlobStore, Index};
use crate::error::Result;
use crate::oci::Digest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Eviction stops once the cache is below this share of the limit.
const LOW_WATER_PERCENT: u64 = 90;

/// Milliseconds since the epoch: the unit of every access time.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one eviction round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub items: usize,
    pub bytes: u64,
}

pub struct CacheTracker {
    index: Index,
    blobs: BlobStore,
    limit: Option<u64>,
    bytes: AtomicU64,
    touched: Mutex<HashMap<Digest, u64>>,
    evicted_total: AtomicU64,
    round: tokio::sync::Mutex<()>,
    /// Wakes the maintenance loop when the limit is passed.
    pub over_limit: tokio::sync::Notify,
}

impl CacheTracker {
    pub fn new(index: Index, blobs: BlobStore, limit: Option<u64>) -> Result<CacheTracker> {
        let t = CacheTracker {
            index,
            blobs,
            limit,
            bytes: AtomicU64::new(0),
            touched: Mutex::new(HashMap::new()),
            evicted_total: AtomicU64::new(0),
            round: tokio::sync::Mutex::new(()),
            over_limit: tokio::sync::Notify::new(),
        };
        t.recount()?;
        Ok(t)
    }

    /// Sums the mirrored content on record (each digest once).
    fn recount(&self) -> Result<()> {
        let mut seen = HashMap::new();
        for e in self.index.mirror_entries()? {
            seen.insert(e.digest, e.size);
        }
        self.bytes.store(seen.values().sum(), Ordering::SeqCst);
        Ok(())
    }

    /// Bytes of mirrored content on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    pub fn evicted_total(&self) -> u64 {
        self.evicted_total.load(Ordering::SeqCst)
    }

    /// Notes that `d` was just used.
    pub fn touch(&self, d: &Digest) {
        let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        t.insert(d.clone(), unix_now());
    }

    /// The in-memory touches not yet written.
    pub fn recent_touches(&self) -> HashMap<Digest, u64> {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts newly cached mirrored content; wakes eviction past the limit.
    pub fn added(&self, bytes: u64) {
        let now = self.bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if self.limit.is_some_and(|l| now > l) {
            self.over_limit.notify_one();
        }
    }

    pub fn is_over_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.bytes() > l)
    }

    /// Writes the access times gathered since the last call.
    pub fn flush_access(&self) -> Result<usize> {
        let batch: Vec<(Digest, u64)> = {
            let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            t.drain().collect()
        };
        if !batch.is_empty() {
            self.index.put_access_times(&batch)?;
        }
        Ok(batch.len())
    }

    /// Evicts least recently used mirrored content until the cache is
    /// under the low-water mark. Does nothing under the limit.
    pub async fn evict(&self) -> Result<Evicted> {
        let Some(limit) = self.limit else {
            return Ok(Evicted::default());
        };
        let _round = self.round.lock().await;
        if self.bytes() <= limit {
            return Ok(Evicted::default());
        }
        let target = limit / 100 * LOW_WATER_PERCENT;
        self.flush_access()?;
        let entries = self.index.mirror_entries()?;
        let protected = self.index.local_links()?;
        let access = self.index.access_times()?;
        let mut by_digest: HashMap<Digest, Vec<&super::index::MirrorEntry>> = HashMap::new();
        for e in &entries {
            by_digest.entry(e.digest.clone()).or_default().push(e);
        }
        let mut candidates: Vec<(u64, Digest)> = Vec::new();
        for d in by_digest.keys() {
            if protected.contains_key(d) {
                continue;
            }
            let last = match access.get(d) {
                Some(t) => *t,
                None => file_mtime(&self.blobs.path(d)).await,
            };
            candidates.push((last, d.clone()));
        }
        candidates.sort();
        let mut out = Evicted::default();
        for (_, d) in candidates {
            if self.bytes() <= target {
                break;
            }
            let list = &by_digest[&d];
            let size = list.iter().map(|e| e.size).max().unwrap_or(0);
            self.index.forget_mirrored(&d, list)?;
            match tokio::fs::remove_file(self.blobs.path(&d)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::error::Error::storage("evicting a blob", e)),
            }
            self.bytes
                .fetch_sub(size.min(self.bytes()), Ordering::SeqCst);
            out.items += 1;
            out.bytes += size;
        }
        self.evicted_total
            .fetch_add(out.items as u64, Ordering::SeqCst);
        if out.items > 0 {
            tracing::info!(
                evicted = out.items,
                freed_bytes = out.bytes,
                cache_bytes = self.bytes(),
                limit_bytes = limit,
                "evicted least recently used mirrored content"
            );
        }
        Ok(out)
    }
}

/// A file's modification time in unix milliseconds (0 when unknown).
pub async fn file_mtime(path: &std::path::Path) -> u64 {
    tokio::fs::metadata(path)
        .await
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}
