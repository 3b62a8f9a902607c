//! Garbage collection of local content: blob files that no local manifest
//! references and no mirror record claims (left by deleted manifests,
//! deleted blobs or abandoned pushes) are removed once they have gone
//! unused for a grace period. A push in progress touches its blobs (upload,
//! mount, the HEAD before referencing, the manifest PUT), and the sweep
//! rechecks under the store's GC lock, which manifest PUTs and blob links
//! hold for reading, so a blob can never vanish between its check and its
//! use. No stop-the-world pause: only the removal of each blob is locked.

use super::cache::unix_now;
use super::digest_set::DigestSet;
use super::Store;
use crate::error::Result;
use crate::oci::manifest;
use crate::oci::Digest;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What a collection found (and, unless a dry run, removed).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub removed: Vec<(Digest, u64)>,
    pub bytes: u64,
    /// Blobs kept: referenced, mirrored, or used within the grace period.
    pub kept: usize,
    /// Of those kept, the unreferenced ones kept only because they were
    /// used (or written) within the grace period, and their bytes.
    pub recent: usize,
    pub recent_bytes: u64,
    /// The grace period applied, seconds.
    pub grace_secs: u64,
}

/// Manifests read per page of a pass over them.
const PAGE: usize = 1024;

/// Digests every local manifest needs: itself, its config and layers, its
/// children. A manifest that cannot be read, or no longer hashes to its
/// digest, cannot say what it needs: everything linked into its repository
/// is kept then (and the problem logged), so GC never guesses.
///
/// Reads the manifests a page at a time and keeps the answer as a
/// [`DigestSet`]: memory grows by 8 bytes per digest, not by the manifests.
pub(crate) async fn referenced(store: &Store) -> Result<DigestSet> {
    let mut keep = DigestSet::default();
    let mut unsure: HashSet<String> = HashSet::new();
    let mut after = None;
    loop {
        let page = store.index.local_manifests_after(after.as_ref(), PAGE)?;
        let Some((r, d, _)) = page.last() else {
            break;
        };
        after = Some((r.clone(), d.clone()));
        for (repo, d, meta) in page {
            keep.insert(&d);
            let limit = manifest::MAX_MANIFEST_BYTES as u64;
            let parsed = match store.blobs.read_checked(&d, limit).await {
                Ok(Some(bytes)) => manifest::parse(&bytes, Some(&meta.media_type)).ok(),
                _ => None,
            };
            match parsed {
                Some(p) => {
                    for b in p.blobs.iter().chain(&p.manifests) {
                        keep.insert(b);
                    }
                }
                None => {
                    tracing::warn!(repo, digest = %d, "manifest unreadable or corrupt: keeping every blob of its repository (run wharf verify)");
                    unsure.insert(repo);
                }
            }
        }
    }
    if !unsure.is_empty() {
        keep = store
            .index
            .blocking(move |i| {
                i.for_each_local_link(|repo, d| {
                    if unsure.contains(repo) {
                        keep.insert(&d);
                    }
                })?;
                Ok(keep)
            })
            .await?;
    }
    keep.seal();
    Ok(keep)
}

/// Adds every cached mirrored digest to `set` (one pass over the index on
/// the blocking pool) and seals it.
pub(crate) async fn with_mirrored(store: &Store, mut set: DigestSet) -> Result<DigestSet> {
    store
        .index
        .blocking(move |i| {
            i.for_each_mirror_entry(|e| set.insert(&e.digest))?;
            set.seal();
            Ok(set)
        })
        .await
}

/// Finds (and unless `dry_run`, removes) unreferenced local blobs unused
/// for at least `grace`.
///
/// Streams over the blob files against a [`DigestSet`] of what is
/// referenced or mirrored: memory grows with the digests on record (8
/// bytes each) and with what is found unreferenced, not with the store.
pub async fn collect(store: &Store, grace: Duration, dry_run: bool) -> Result<GcReport> {
    store.cache.flush_access()?;
    let keep = with_mirrored(store, referenced(store).await?).await?;
    let cutoff = unix_now().saturating_sub(grace.as_millis() as u64);
    let mut report = GcReport {
        grace_secs: grace.as_secs(),
        ..GcReport::default()
    };
    let mut candidates = Vec::new();
    let mut files = store.blobs.files();
    while let Some(batch) = files.next().await? {
        for (d, size, mtime) in batch {
            if keep.contains(&d) {
                report.kept += 1;
                continue;
            }
            let last = mtime.max(store.index.access_time(&d)?.unwrap_or(0));
            if last > cutoff {
                report.kept += 1;
                report.recent += 1;
                report.recent_bytes += size;
            } else {
                candidates.push((d, size));
            }
        }
    }
    drop(keep);
    if dry_run {
        report.bytes = candidates.iter().map(|(_, s)| s).sum();
        report.removed = candidates;
        return Ok(report);
    }
    // The links of what goes (usually a few: one pass over the links).
    let wanted: HashSet<Digest> = candidates.iter().map(|(d, _)| d.clone()).collect();
    let links = store
        .index
        .blocking(move |i| {
            let mut links: HashMap<Digest, Vec<String>> = HashMap::new();
            i.for_each_local_link(|repo, d| {
                if wanted.contains(&d) {
                    links.entry(d).or_default().push(repo.to_string());
                }
            })?;
            Ok(links)
        })
        .await?;
    for (d, size) in candidates {
        let _exclusive = store.gc_lock.write().await;
        // Used since the scan began? Then it stays.
        if store.cache.used_since(&d, cutoff.saturating_add(1))? {
            report.kept += 1;
            report.recent += 1;
            report.recent_bytes += size;
            continue;
        }
        let repos = links.get(&d).cloned().unwrap_or_default();
        store.index.unlink_everywhere(&d, &repos)?;
        store.index.push_journal().await?;
        store.blobs.remove(&d).await?;
        report.bytes += size;
        report.removed.push((d, size));
    }
    store.index.flush().await?;
    crate::metrics::METRICS.gc_removed(report.bytes);
    if !report.removed.is_empty() {
        tracing::info!(
            removed = report.removed.len(),
            freed_bytes = report.bytes,
            "garbage collection removed unreferenced local blobs"
        );
    }
    Ok(report)
}
