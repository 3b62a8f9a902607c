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
//!
//! The totals are kept by additions and removals, not by scanning: a clean
//! shutdown saves them in the index and the next start reads them back
//! (removing them, so that a crash in between is noticed). Only a start
//! after a crash, or after the index was restored from a bucket, counts
//! the records again.

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
    /// What the storage allocates in: every size counts rounded up to it.
    unit: u64,
    /// Bytes the mirrored content takes on the storage (allocated, not
    /// just its length).
    bytes: AtomicU64,
    /// Mirrored bytes also linked locally: never evicted, not counted.
    shared: AtomicU64,
    /// Mirrored items on record, and those also linked locally: kept like
    /// the bytes, for the metrics.
    items: AtomicU64,
    shared_items: AtomicU64,
    touched: Mutex<HashMap<Digest, u64>>,
    /// Touches a flush took from `touched` and is writing to the index:
    /// they leave memory once the index has them. Hits touch `touched`
    /// meanwhile, without waiting for the write.
    flushing: Mutex<HashMap<Digest, u64>>,
    /// One flush at a time.
    flush_one: Mutex<()>,
    /// With a bucket: access times written to the index and not yet to
    /// the bucket.
    /// (One time per blob, the latest: bounded by the blobs there are.)
    unsent: Mutex<HashMap<Digest, u64>>,
    round: tokio::sync::Mutex<()>,
    /// Set at shutdown: a round stops after its current batch.
    stopping: std::sync::atomic::AtomicBool,
    /// Wakes the maintenance loop when the limit is passed.
    pub over_limit: tokio::sync::Notify,
    /// Whether the totals were saved (at shutdown): a change after that
    /// drops them again. The lock orders a save before such a drop.
    saved: std::sync::atomic::AtomicBool,
    saving: Mutex<()>,
    /// Counts the changes to the totals: a round whose read of the index
    /// saw none meanwhile (and none in flight) sets the totals from what
    /// it read.
    changes: AtomicU64,
    /// Changes under way: their index records and their count are not
    /// both done yet ([`CacheTracker::changing`]).
    in_flight: AtomicU64,
}

/// Held while a change to mirrored content writes its records and counts
/// them: a round does not set the totals from an index read meanwhile.
pub struct Changing<'a>(&'a CacheTracker);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changes.fetch_add(1, Ordering::SeqCst);
    }
}

/// The totals saved at a clean shutdown.
#[derive(serde::Serialize, serde::Deserialize)]
struct Totals {
    /// The allocation unit they were counted in (a data directory moved
    /// to another file system counts again).
    #[serde(default)]
    unit: u64,
    bytes: u64,
    shared: u64,
    items: u64,
    shared_items: u64,
}

impl CacheTracker {
    pub fn new(index: Index, blobs: BlobStore, limit: Option<u64>) -> Result<CacheTracker> {
        let unit = blobs.allocation_unit();
        let t = CacheTracker {
            index,
            blobs,
            limit,
            unit,
            bytes: AtomicU64::new(0),
            shared: AtomicU64::new(0),
            items: AtomicU64::new(0),
            shared_items: AtomicU64::new(0),
            touched: Mutex::new(HashMap::new()),
            flushing: Mutex::new(HashMap::new()),
            flush_one: Mutex::new(()),
            unsent: Mutex::new(HashMap::new()),
            round: tokio::sync::Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            over_limit: tokio::sync::Notify::new(),
            saved: Default::default(),
            saving: Mutex::new(()),
            changes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        };
        let saved = t.index.take_counts()?;
        let saved = saved
            .and_then(|v| serde_json::from_slice::<Totals>(&v).ok())
            .filter(|c| c.unit == unit);
        match saved {
            Some(c) => {
                t.bytes.store(c.bytes, Ordering::SeqCst);
                t.shared.store(c.shared, Ordering::SeqCst);
                t.items.store(c.items, Ordering::SeqCst);
                t.shared_items.store(c.shared_items, Ordering::SeqCst);
            }
            None => {
                let started = std::time::Instant::now();
                t.recount()?;
                tracing::info!(
                    items = t.items.load(Ordering::SeqCst),
                    took_ms = started.elapsed().as_millis() as u64,
                    "counted the mirror cache (no totals saved by a clean shutdown)"
                );
            }
        }
        Ok(t)
    }

    /// Saves the totals for the next start (at shutdown, once nothing
    /// else changes the cache; a later change drops them again).
    pub fn save_totals(&self) -> Result<()> {
        let _g = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        // Set before reading: a change either is in what is read or sees
        // the flag (and then drops the totals, after this save).
        self.saved.store(true, Ordering::SeqCst);
        let totals = Totals {
            unit: self.unit,
            bytes: self.bytes.load(Ordering::SeqCst),
            shared: self.shared.load(Ordering::SeqCst),
            items: self.items.load(Ordering::SeqCst),
            shared_items: self.shared_items.load(Ordering::SeqCst),
        };
        self.index
            .save_counts(&serde_json::to_vec(&totals).unwrap_or_default())
    }

    /// Marks a change of mirrored content (records, then counts) as under
    /// way until the guard drops.
    pub fn changing(&self) -> Changing<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        Changing(self)
    }

    /// A total changed: saved totals no longer hold.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        if self.saved.load(Ordering::SeqCst) {
            let _g = self.saving.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = self.index.forget_counts() {
                tracing::warn!(error = %e, "dropping the saved cache totals failed");
            }
        }
    }

    /// Sums the mirrored content on record (each digest once), as a round
    /// reads it.
    fn recount(&self) -> Result<()> {
        let s = Snapshot::read(&self.index, self.unit)?;
        self.bytes.store(s.total_bytes(), Ordering::SeqCst);
        self.shared.store(s.shared, Ordering::SeqCst);
        self.items.store(s.total_items(), Ordering::SeqCst);
        self.shared_items.store(s.shared_items, Ordering::SeqCst);
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

    /// The touch of `d` not yet in the index: the one waiting in memory,
    /// else the one being written. In this order, the order a touch moves
    /// in (memory, being written, the index), so that a flush running
    /// meanwhile cannot hide it from a reader that goes on to the index.
    fn unwritten(&self, d: &Digest) -> Option<u64> {
        let waiting = self
            .touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .copied();
        waiting.or_else(|| {
            self.flushing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(d)
                .copied()
        })
    }

    /// When `d` was last used (unix milliseconds): the touch not yet
    /// written, else the recorded one.
    pub fn last_used(&self, d: &Digest) -> Result<Option<u64>> {
        match self.unwritten(d) {
            Some(t) => Ok(Some(t)),
            None => self.index.access_time(d),
        }
    }

    /// Whether `d` was used at or after `since` (unix milliseconds): a
    /// touch in memory, else the time the index has (at most three
    /// lookups, whatever the number of touches).
    pub fn used_since(&self, d: &Digest, since: u64) -> Result<bool> {
        if self.unwritten(d).is_some_and(|t| t >= since) {
            return Ok(true);
        }
        Ok(self.index.access_time(d)?.is_some_and(|t| t >= since))
    }

    /// Makes a running eviction round stop after its current batch (at
    /// shutdown).
    pub fn stop_evicting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Counts newly cached mirrored content; wakes eviction past the limit.
    pub fn added(&self, bytes: u64) {
        self.bytes
            .fetch_add(allocated(bytes, self.unit), Ordering::SeqCst);
        self.items.fetch_add(1, Ordering::SeqCst);
        self.changed();
        if self.is_over_limit() {
            self.over_limit.notify_one();
        }
    }

    /// Counts mirrored content that left the cache.
    pub fn removed(&self, bytes: u64) {
        let bytes = allocated(bytes, self.unit);
        let less = |by: u64| move |b: u64| Some(b.saturating_sub(by));
        let _ = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less(bytes));
        let _ = self
            .items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less(1));
        self.changed();
    }

    pub fn is_over_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.bytes() > l)
    }

    /// Writes the access times gathered since the last call. The touches
    /// leave memory only once the index has them, so a reader that finds a
    /// touch in neither place ([`CacheTracker::used_since`]) never misses
    /// one (a flush may run in another task while a round runs). Hits go
    /// on touching while the batch is written: it is taken aside first.
    pub fn flush_access(&self) -> Result<usize> {
        let _one = self.flush_one.lock().unwrap_or_else(|p| p.into_inner());
        let batch: Vec<(Digest, u64)> = {
            let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            let mut f = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
            // (What a failed write left is written again, with these.)
            for (d, at) in std::mem::take(&mut *t) {
                let e = f.entry(d).or_insert(0);
                *e = (*e).max(at);
            }
            f.iter().map(|(d, at)| (d.clone(), *at)).collect()
        };
        if !batch.is_empty() {
            self.index.put_access_times(&batch)?;
        }
        *self.flushing.lock().unwrap_or_else(|p| p.into_inner()) = HashMap::new();
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
    /// linked into a local repository is neither evicted nor counted.
    ///
    /// One round reads what is cached from the index once (on the
    /// blocking pool), sorts it by last use and removes the oldest until
    /// what it read is under the mark: O(n log n) for n cached items, one
    /// lookup per candidate. Removals go in batches, each under the GC
    /// lock and skipping anything used since the round began (a push
    /// linking a cached layer touches it); between batches pushes get the
    /// lock. Content cached while the round runs is never a candidate (it
    /// is newer than all of them), but the bytes it adds are freed too,
    /// from the oldest candidates on; once they run out, the caller starts
    /// another round while the cache is still over its limit.
    pub async fn evict(&self, gc_lock: &tokio::sync::RwLock<()>) -> Result<Evicted> {
        let Some(limit) = self.limit else {
            return Ok(Evicted::default());
        };
        let _round = self.round.lock().await;
        let timer = std::time::Instant::now();
        let out = self.round(limit, gc_lock).await;
        crate::metrics::METRICS.eviction_round(timer.elapsed());
        if let Ok(out) = &out {
            if out.items > 0 {
                tracing::info!(
                    evicted = out.items,
                    freed_bytes = out.bytes,
                    cache_bytes = self.bytes(),
                    limit_bytes = limit,
                    took_ms = timer.elapsed().as_millis() as u64,
                    "evicted least recently used mirrored content"
                );
            }
        }
        out
    }

    /// One eviction round (see [`CacheTracker::evict`]), holding the
    /// round lock.
    async fn round(&self, limit: u64, gc_lock: &tokio::sync::RwLock<()>) -> Result<Evicted> {
        let started = unix_now();
        self.flush_access()?;
        let unit = self.unit;
        let quiet_before = self.in_flight.load(Ordering::SeqCst) == 0;
        let changes = self.changes.load(Ordering::SeqCst);
        let (bytes, items) = (
            self.bytes.load(Ordering::SeqCst),
            self.items.load(Ordering::SeqCst),
        );
        let snapshot = self
            .index
            .blocking(move |i| Snapshot::read(i, unit))
            .await?;
        // Content that is also local neither counts nor goes. The running
        // totals are kept by additions and removals: this read sets them
        // only when no change was under way or happened while it ran (it
        // would lose or repeat one), which corrects any drift (a blob
        // cached from two upstreams is one file). A change landing now
        // fails the exchange.
        if quiet_before
            && self.in_flight.load(Ordering::SeqCst) == 0
            && self.changes.load(Ordering::SeqCst) == changes
        {
            let read = snapshot.total_bytes();
            let _ = self
                .bytes
                .compare_exchange(bytes, read, Ordering::SeqCst, Ordering::SeqCst);
            let read = snapshot.total_items();
            let _ = self
                .items
                .compare_exchange(items, read, Ordering::SeqCst, Ordering::SeqCst);
        }
        self.shared.store(snapshot.shared, Ordering::SeqCst);
        self.shared_items
            .store(snapshot.shared_items, Ordering::SeqCst);
        self.changed();
        tracing::debug!(
            bytes = self.bytes(),
            shared = snapshot.shared,
            limit,
            "eviction round"
        );
        if self.bytes() <= limit {
            return Ok(Evicted::default());
        }
        let target = limit / 100 * LOW_WATER_PERCENT;
        let mut candidates = Vec::with_capacity(snapshot.candidates.len());
        for (d, last, size) in snapshot.candidates {
            // Never recorded as used: its file's time says when it came.
            let last = match last {
                Some(t) => t,
                None => self.blobs.modified(&d).await,
            };
            candidates.push((last, d, size));
        }
        candidates.sort_unstable();
        // What this round frees starts from what it read; after each batch
        // it grows by what fills added meanwhile, so the cache does not
        // outgrow its limit while a round runs. Still only the oldest part
        // goes: everything cached since the round began is newer than every
        // candidate, and is not one.
        let mut to_free = snapshot.counted.saturating_sub(target);
        // What fills add from here on: the growth of the running total
        // (only that: a drift in it is not freed too).
        let (planned, base) = (to_free, self.bytes());
        let mut out = Evicted::default();
        // Evicted manifests, whose tag records go at the end of the round.
        let mut manifests = std::collections::HashSet::new();
        let mut next = candidates.into_iter();
        let mut entries_of = snapshot.entries;
        while to_free > 0 && !self.stopping.load(Ordering::SeqCst) {
            let _exclusive = gc_lock.write().await;
            let mut picked = Vec::with_capacity(BATCH);
            let mut wanted = to_free;
            for (last, d, size) in next.by_ref() {
                // Used since the round began (a pull, or a push linking it:
                // linking touches), or newer than the round: it stays.
                if last >= started || self.used_since(&d, started)? {
                    continue;
                }
                let entries = entries_of.remove(&d).unwrap_or_default();
                wanted = wanted.saturating_sub(size);
                picked.push((d, size, entries));
                if wanted == 0 || picked.len() == BATCH {
                    break;
                }
            }
            if picked.is_empty() {
                break;
            }
            // The batch's records go in one write, on the blocking pool
            // (straight there: waiting for one of the index's job slots,
            // which long listings may hold, would hold the GC lock too).
            let index = self.index.clone();
            let (picked, forgotten) = tokio::task::spawn_blocking(move || {
                let r = index.forget_mirrored_many(&picked);
                (picked, r)
            })
            .await
            .map_err(|e| crate::error::Error::storage("forgetting evicted content", e))?;
            forgotten?;
            let mut batch = Vec::with_capacity(picked.len());
            for (d, size, entries) in picked {
                for e in entries.iter().filter(|e| e.manifest) {
                    manifests.insert((e.upstream.clone(), d.clone()));
                }
                // The count follows the records: what is forgotten no
                // longer counts, even if removing its file fails below.
                self.removed(size);
                out.items += 1;
                out.bytes += size;
                to_free = to_free.saturating_sub(size);
                batch.push(d);
            }
            // The records' removal (file records included) reaches the
            // bucket before the objects go.
            self.index.push_journal().await?;
            self.blobs.remove_forgotten(batch, REMOVALS_AT_ONCE).await?;
            let added = (self.bytes() + out.bytes).saturating_sub(base);
            to_free = (planned + added).saturating_sub(out.bytes);
        }
        if !manifests.is_empty() {
            let tags = self
                .index
                .blocking(move |i| i.forget_tags_of(&manifests))
                .await?;
            self.index.push_journal().await?;
            tracing::debug!(tags, "forgot mirrored tags of evicted manifests");
        }
        crate::metrics::METRICS.evicted(out.items as u64, out.bytes);
        Ok(out)
    }
}

/// Removals per hold of the GC lock in an eviction round.
const BATCH: usize = 64;
/// Objects of a batch deleted from a bucket at once.
const REMOVALS_AT_ONCE: usize = 16;

/// What an eviction round reads from the index, once.
struct Snapshot {
    /// Each cached digest not linked locally: its last recorded use and
    /// its size.
    candidates: Vec<(Digest, Option<u64>, u64)>,
    /// The records of each cached digest (one per upstream it came from).
    entries: HashMap<Digest, Vec<super::index::MirrorEntry>>,
    /// Bytes of the candidates together.
    counted: u64,
    /// Bytes and items also linked into a local repository.
    shared: u64,
    shared_items: u64,
}

impl Snapshot {
    /// Bytes of every cached digest, local or not.
    fn total_bytes(&self) -> u64 {
        self.counted + self.shared
    }

    /// Cached digests, local or not.
    fn total_items(&self) -> u64 {
        self.candidates.len() as u64 + self.shared_items
    }

    /// Reads what is cached, each size rounded up to the storage's
    /// allocation `unit`.
    fn read(index: &Index, unit: u64) -> Result<Snapshot> {
        let protected = local_set(index)?;
        let mut entries: HashMap<Digest, Vec<super::index::MirrorEntry>> = HashMap::new();
        for e in index.mirror_entries()? {
            entries.entry(e.digest.clone()).or_default().push(e);
        }
        let mut s = Snapshot {
            candidates: Vec::with_capacity(entries.len()),
            entries: HashMap::new(),
            counted: 0,
            shared: 0,
            shared_items: 0,
        };
        for (d, list) in &entries {
            let size = allocated(list.iter().map(|e| e.size).max().unwrap_or(0), unit);
            if protected.contains(d) {
                s.shared += size;
                s.shared_items += 1;
            } else {
                s.counted += size;
                s.candidates.push((d.clone(), index.access_time(d)?, size));
            }
        }
        s.entries = entries;
        Ok(s)
    }
}

/// What `size` bytes take on a storage that allocates in `unit`s.
pub fn allocated(size: u64, unit: u64) -> u64 {
    size.div_ceil(unit.max(1)).saturating_mul(unit.max(1))
}

/// Every digest linked into a local repository, compactly (a digest it
/// wrongly holds is only spared and left uncounted).
fn local_set(index: &Index) -> Result<super::digest_set::DigestSet> {
    let mut set = super::digest_set::DigestSet::default();
    index.for_each_local_link(|_, d| set.insert(&d))?;
    set.seal();
    Ok(set)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Algorithm;

    #[test]
    fn a_use_counts_whether_it_is_in_memory_or_already_written() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index"), 1 << 20, None).unwrap();
        let blobs = BlobStore::open(dir.path(), index.clone(), None).unwrap();
        let cache = CacheTracker::new(index, blobs, Some(1 << 20)).unwrap();
        let d = Digest::of(Algorithm::Sha256, b"layer");
        let before = unix_now();
        assert!(!cache.used_since(&d, before).unwrap());
        cache.touch(&d);
        assert!(cache.used_since(&d, before).unwrap(), "in memory");
        // A flush (another task's, during a round) moves it to the index:
        // still seen, never lost in between.
        assert_eq!(cache.flush_access().unwrap(), 1);
        assert!(cache.used_since(&d, before).unwrap(), "written");
        assert!(!cache.used_since(&d, unix_now() + 1000).unwrap());
    }

    #[test]
    fn totals_saved_at_a_clean_shutdown_are_read_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let index = Index::open(&dir.path().join("index"), 1 << 20, None).unwrap();
            let blobs = BlobStore::open(dir.path(), index.clone(), None).unwrap();
            (
                index.clone(),
                CacheTracker::new(index, blobs, None).unwrap(),
            )
        };
        let d = Digest::of(Algorithm::Sha256, b"layer");
        // Sizes count in whole blocks of the file system.
        let unit = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(dir.path())
                .unwrap()
                .blksize()
                .clamp(512, 4096)
        };
        let a = |n: u64| allocated(n, unit);
        {
            let (_, cache) = open();
            cache.record_mirrored_blob("up", &d, 1000).unwrap();
            cache.save_totals().unwrap();
        }
        // Read back, not counted: a record written behind the tracker's
        // back is not in the totals.
        let e = Digest::of(Algorithm::Sha256, b"other");
        Index::open(&dir.path().join("index"), 1 << 20, None)
            .unwrap()
            .put_mirror_blob("up", &e, 5)
            .unwrap();
        {
            let (_, cache) = open();
            assert_eq!((cache.bytes(), cache.items()), (a(1000), 1), "read back");
            // Not saved again: a crash. The next start counts.
        }
        {
            let (_, cache) = open();
            assert_eq!(
                (cache.bytes(), cache.items()),
                (a(1000) + a(5), 2),
                "counted"
            );
            cache.save_totals().unwrap();
            // A change after the save drops the totals again.
            cache
                .record_mirrored_blob("up", &Digest::of(Algorithm::Sha256, b"late"), 7)
                .unwrap();
        }
        let (_, cache) = open();
        assert_eq!(
            (cache.bytes(), cache.items()),
            (a(1000) + a(5) + a(7), 3),
            "counted after a late change"
        );
    }
}
