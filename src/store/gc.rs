//! Garbage collection of local content: blob files that no local manifest
//! references and no mirror record claims (left by deleted manifests,
//! deleted blobs or abandoned pushes) are removed once they have gone
//! unused for a grace period. A push in progress touches its blobs (upload,
//! mount, the HEAD before referencing, the manifest PUT), and the sweep
//! rechecks under the store's GC lock, which manifest PUTs and blob links
//! hold for reading, so a blob can never vanish between its check and its
//! use. No stop-the-world pause: only the removal of each blob is locked.

use super::cache::unix_now;
use super::Store;
use crate::error::Result;
use crate::oci::manifest;
use crate::oci::Digest;
use std::collections::HashSet;
use std::time::Duration;

/// What a collection found (and, unless a dry run, removed).
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub removed: Vec<(Digest, u64)>,
    pub bytes: u64,
    pub kept: usize,
}

/// Digests every local manifest needs: itself, its config and layers, its
/// children. A manifest that cannot be read, or no longer hashes to its
/// digest, cannot say what it needs: everything linked into its repository
/// is kept then (and the problem logged), so GC never guesses.
pub(crate) async fn referenced(store: &Store) -> Result<HashSet<Digest>> {
    let mut keep = HashSet::new();
    let mut unsure: HashSet<String> = HashSet::new();
    for (repo, d, meta) in store.index.local_manifests()? {
        keep.insert(d.clone());
        let limit = manifest::MAX_MANIFEST_BYTES as u64;
        let parsed = match store.blobs.read_checked(&d, limit).await {
            Ok(Some(bytes)) => manifest::parse(&bytes, Some(&meta.media_type)).ok(),
            _ => None,
        };
        match parsed {
            Some(p) => {
                keep.extend(p.blobs);
                keep.extend(p.manifests);
            }
            None => {
                tracing::warn!(repo, digest = %d, "manifest unreadable or corrupt: keeping every blob of its repository (run wharf verify)");
                unsure.insert(repo);
            }
        }
    }
    if !unsure.is_empty() {
        for (d, repos) in store.index.local_links()? {
            if repos.iter().any(|r| unsure.contains(r)) {
                keep.insert(d);
            }
        }
    }
    Ok(keep)
}

/// Finds (and unless `dry_run`, removes) unreferenced local blobs unused
/// for at least `grace`.
pub async fn collect(store: &Store, grace: Duration, dry_run: bool) -> Result<GcReport> {
    store.cache.flush_access()?;
    let keep = referenced(store).await?;
    let mirrored: HashSet<Digest> = store
        .index
        .mirror_entries()?
        .into_iter()
        .map(|e| e.digest)
        .collect();
    let access = store.index.access_times()?;
    let files = store.blobs.list().await?;
    let cutoff = unix_now().saturating_sub(grace.as_millis() as u64);
    let mut report = GcReport::default();
    let mut candidates = Vec::new();
    for (d, size, mtime) in files {
        let last = mtime.max(access.get(&d).copied().unwrap_or(0));
        if keep.contains(&d) || mirrored.contains(&d) || last > cutoff {
            report.kept += 1;
        } else {
            candidates.push((d, size));
        }
    }
    if dry_run {
        report.bytes = candidates.iter().map(|(_, s)| s).sum();
        report.removed = candidates;
        return Ok(report);
    }
    let links = store.index.local_links()?;
    for (d, size) in candidates {
        let _exclusive = store.gc_lock.write().await;
        // Used since the scan began? Then it stays.
        if store.cache.used_since(&d, cutoff.saturating_add(1))? {
            report.kept += 1;
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
