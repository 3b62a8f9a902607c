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
    /// Mirrored bytes also linked locally: never evicted, not counted.
    shared: AtomicU64,
    /// Mirrored items on record, and those also linked locally: kept like
    /// the bytes, for the metrics.
    items: AtomicU64,
    shared_items: AtomicU64,
    touched: Mutex<HashMap<Digest, u64>>,
    /// With a bucket: access times written to the index and not yet to
    /// the bucket.
    /// (One time per blob, the latest: bounded by the blobs there are.)
    unsent: Mutex<HashMap<Digest, u64>>,
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
            shared: AtomicU64::new(0),
            items: AtomicU64::new(0),
            shared_items: AtomicU64::new(0),
            touched: Mutex::new(HashMap::new()),
            unsent: Mutex::new(HashMap::new()),
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
        let local = self.index.local_links()?;
        let (shared, shared_items) = seen
            .iter()
            .filter(|(d, _)| local.contains_key(*d))
            .fold((0, 0), |(b, n), (_, s)| (b + s, n + 1));
        self.bytes.store(seen.values().sum(), Ordering::SeqCst);
        self.shared.store(shared, Ordering::SeqCst);
        self.items.store(seen.len() as u64, Ordering::SeqCst);
        self.shared_items.store(shared_items, Ordering::SeqCst);
        Ok(())
    }

    pub(super) fn index(&self) -> &Index {
        &self.index
    }

    /// Bytes of mirrored content on disk that count toward the limit.
    pub fn bytes(&self) -> u64 {
        self.bytes
            .load(Ordering::SeqCst)
            .saturating_sub(self.shared.load(Ordering::SeqCst))
    }

    /// Mirrored blobs and manifests on disk that count toward the limit
    /// (kept alongside [`CacheTracker::bytes`]: no scan).
    pub fn items(&self) -> u64 {
        self.items
            .load(Ordering::SeqCst)
            .saturating_sub(self.shared_items.load(Ordering::SeqCst))
    }

    /// Notes that `d` was just used.
    pub fn touch(&self, d: &Digest) {
        let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        t.insert(d.clone(), unix_now());
    }

    /// When `d` was last used (unix milliseconds): the touch not yet
    /// written, else the recorded one.
    pub fn last_used(&self, d: &Digest) -> Result<Option<u64>> {
        let recent = self
            .touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .copied();
        match recent {
            Some(t) => Ok(Some(t)),
            None => self.index.access_time(d),
        }
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
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
        self.items.fetch_add(1, Ordering::SeqCst);
        if self.is_over_limit() {
            self.over_limit.notify_one();
        }
    }

    /// Counts mirrored content that left the cache.
    pub fn removed(&self, bytes: u64) {
        let less = |by: u64| move |b: u64| Some(b.saturating_sub(by));
        let _ = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less(bytes));
        let _ = self
            .items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less(1));
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
        let n = batch.len();
        if self.blobs.remote().is_some() {
            self.give_back(batch);
        }
        Ok(n)
    }

    /// Takes the access times the bucket has not got yet.
    pub(super) fn take_unsent(&self) -> Vec<(Digest, u64)> {
        let mut u = self.unsent.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *u).into_iter().collect()
    }

    /// Adds access times the bucket has not got (keeping the latest).
    pub(super) fn give_back(&self, batch: Vec<(Digest, u64)>) {
        let mut u = self.unsent.lock().unwrap_or_else(|p| p.into_inner());
        for (d, t) in batch {
            let e = u.entry(d).or_insert(0);
            *e = (*e).max(t);
        }
    }

    /// Evicts least recently used mirrored content until the cache is
    /// under the low-water mark. Does nothing under the limit. Content also
    /// linked into a local repository is neither evicted nor counted. Each
    /// removal happens under the GC lock and is skipped for anything used
    /// since the round began (a push linking a cached layer touches it).
    pub async fn evict(&self, gc_lock: &tokio::sync::RwLock<()>) -> Result<Evicted> {
        let Some(limit) = self.limit else {
            return Ok(Evicted::default());
        };
        let _round = self.round.lock().await;
        let started = unix_now();
        self.flush_access()?;
        let entries = self.index.mirror_entries()?;
        let protected = self.index.local_links()?;
        let access = self.index.access_times()?;
        let mut by_digest: HashMap<Digest, Vec<&super::index::MirrorEntry>> = HashMap::new();
        for e in &entries {
            by_digest.entry(e.digest.clone()).or_default().push(e);
        }
        // Content that is also local neither counts nor goes. (The running
        // total is kept by additions and removals; overwriting it from this
        // snapshot would lose additions made while the round runs.)
        let size_of =
            |list: &Vec<&super::index::MirrorEntry>| list.iter().map(|e| e.size).max().unwrap_or(0);
        let (shared, shared_items) = by_digest
            .iter()
            .filter(|(d, _)| protected.contains_key(*d))
            .fold((0, 0), |(b, n), (_, l)| (b + size_of(l), n + 1));
        self.shared.store(shared, Ordering::SeqCst);
        self.shared_items.store(shared_items, Ordering::SeqCst);
        tracing::debug!(bytes = self.bytes(), shared, limit, "eviction round");
        if self.bytes() <= limit {
            return Ok(Evicted::default());
        }
        let target = limit / 100 * LOW_WATER_PERCENT;
        let mut candidates: Vec<(u64, Digest)> = Vec::new();
        for d in by_digest.keys() {
            if protected.contains_key(d) {
                continue;
            }
            let last = match access.get(d) {
                Some(t) => *t,
                None => self.blobs.modified(d).await,
            };
            candidates.push((last, d.clone()));
        }
        candidates.sort();
        // What this round frees is decided from the snapshot: content
        // cached while it runs is not among its candidates, so counting it
        // here would evict recently used content in its place (its own
        // arrival wakes the next round).
        let snapshot: u64 = by_digest
            .iter()
            .filter(|(d, _)| !protected.contains_key(*d))
            .map(|(_, l)| size_of(l))
            .sum();
        let mut to_free = snapshot.saturating_sub(target);
        let mut out = Evicted::default();
        for (_, d) in candidates {
            if to_free == 0 {
                break;
            }
            let _exclusive = gc_lock.write().await;
            if self.recent_touches().get(&d).is_some_and(|t| *t >= started) {
                continue;
            }
            let list = &by_digest[&d];
            let size = size_of(list);
            self.index.forget_mirrored(&d, list)?;
            self.index.push_journal().await?;
            self.blobs.remove(&d).await?;
            self.removed(size);
            to_free = to_free.saturating_sub(size);
            out.items += 1;
            out.bytes += size;
        }
        crate::metrics::METRICS.evicted(out.items as u64, out.bytes);
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
