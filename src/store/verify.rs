//! The scrub behind `wharf verify`: re-hashes every blob file, and checks
//! the index and the files against each other both ways. With `repair`,
//! corrupt and orphaned files are moved to `DATA/quarantine/` and the
//! records that pointed at missing or corrupt content are dropped, so the
//! mirror fetches it again and local pulls get a clean 404 instead of bad
//! bytes.

use super::digest_set::DigestSet;
use super::index::MirrorEntry;
use super::Store;
use crate::error::Result;
use crate::oci::{Digest, RepoName};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub bytes: u64,
    /// Files whose bytes do not hash to their name.
    pub corrupt: Vec<Digest>,
    /// Files no index record knows: what a crash between writing a file
    /// and recording it leaves. Harmless (never served); garbage collection
    /// removes them, `--repair` quarantines them.
    pub orphaned: Vec<Digest>,
    /// Index records whose file is missing: (what, digest).
    pub missing: Vec<(String, Digest)>,
}

impl VerifyReport {
    /// No corrupt file and no record without its file.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

/// What the index knows of: blobs a local manifest still references (even
/// unlinked: GC keeps them too), cached ones and linked ones.
async fn known_digests(store: &Store) -> Result<DigestSet> {
    let known = super::gc::referenced(store).await?;
    store
        .index
        .blocking(move |i| {
            let mut known = known;
            i.for_each_mirror_entry(|e| known.insert(&e.digest))?;
            i.for_each_local_link(|_, d| known.insert(&d))?;
            known.seal();
            Ok(known)
        })
        .await
}

/// The index's records whose digest `absent` says has no file: (what,
/// digest).
async fn missing_records(
    store: &Store,
    absent: impl Fn(&Digest) -> bool + Send + 'static,
) -> Result<Vec<(String, Digest)>> {
    store
        .index
        .blocking(move |i| {
            let mut missing = Vec::new();
            i.for_each_mirror_entry(|e| {
                if absent(&e.digest) {
                    let kind = if e.manifest {
                        "mirrored manifest"
                    } else {
                        "mirrored blob"
                    };
                    missing.push((format!("{kind} from {}", e.upstream), e.digest));
                }
            })?;
            let mut links: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
            i.for_each_local_link(|repo, d| {
                if absent(&d) {
                    links.entry(d).or_default().push(repo.to_string());
                }
            })?;
            for (d, repos) in links {
                missing.push((format!("blob of {}", repos.join(", ")), d));
            }
            i.for_each_local_manifest(|repo, d| {
                if absent(&d) {
                    missing.push((format!("manifest of {repo}"), d));
                }
            })?;
            Ok(missing)
        })
        .await
}

/// Scrubs the store. Three passes, none holding the store in memory: the
/// index (what it knows of, as a [`DigestSet`]), the blob files (each
/// hashed, checked against what is known, added to a second set), and the
/// index again (records whose file is missing). Memory grows by 16 bytes
/// per digest and with what is found wrong.
///
/// `live`: a server is serving from the store meanwhile (pushes, fills,
/// eviction), so what the passes find out of step is checked again before
/// it is reported: an orphan against the index as it is after the files'
/// pass (a push writes its file before its record), a missing file under
/// the GC lock (eviction forgets a record and removes its file under it)
/// by looking for the file and the record once more. Repair needs a
/// stopped server.
pub async fn verify(store: &Store, repair: bool, live: bool) -> Result<VerifyReport> {
    if repair && live {
        return Err(crate::error::Error::oci(
            crate::error::ErrorCode::Unsupported,
            "verify --repair works on a stopped server only: while it serves, a blob being pushed is briefly a file without a record",
        ));
    }
    let mut report = VerifyReport::default();
    let known = known_digests(store).await?;
    let mut on_disk = DigestSet::default();
    let mut files = store.blobs.files();
    while let Some(batch) = files.next().await? {
        for (d, size, _) in batch {
            let got = match store.blobs.hash(&d).await {
                Ok(got) => got,
                // Evicted or collected since it was listed: not there to
                // check, and not wrong.
                Err(_) if live && store.blobs.size(&d).await?.is_none() => continue,
                Err(e) => return Err(e),
            };
            report.checked += 1;
            report.bytes += size;
            if got != d {
                report.corrupt.push(d.clone());
            }
            if !known.contains(&d) {
                report.orphaned.push(d.clone());
            }
            on_disk.insert(&d);
        }
    }
    drop(known);
    on_disk.seal();
    report.missing = missing_records(store, move |d| !on_disk.contains(d)).await?;
    if live {
        if !report.orphaned.is_empty() {
            let now = known_digests(store).await?;
            report.orphaned.retain(|d| !now.contains(d));
        }
        if !report.missing.is_empty() {
            // Eviction and GC forget a record and remove its file under the
            // GC lock, fills and pushes write the file before the record:
            // a file absent under the lock with its record still there
            // afterwards (and the file still absent) is missing. The lock
            // is held only for the files, not for the pass over the index.
            let mut absent = DigestSet::default();
            {
                let _still = store.gc_lock.read().await;
                for (_, d) in &report.missing {
                    if store.blobs.size(d).await?.is_none() {
                        absent.insert(d);
                    }
                }
            }
            absent.seal();
            let mut still = missing_records(store, move |d| absent.contains(d)).await?;
            let mut gone = Vec::with_capacity(still.len());
            for (what, d) in still.drain(..) {
                if store.blobs.size(&d).await?.is_none() {
                    gone.push((what, d));
                }
            }
            report.missing = gone;
        }
    }

    if repair {
        let bad: HashSet<Digest> = report
            .corrupt
            .iter()
            .chain(&report.orphaned)
            .chain(report.missing.iter().map(|(_, d)| d))
            .cloned()
            .collect();
        let (bad, records) = store
            .index
            .blocking(move |i| {
                let mut r = Records::default();
                i.for_each_mirror_entry(|e| {
                    if bad.contains(&e.digest) {
                        r.mirrored.push(e);
                    }
                })?;
                i.for_each_local_link(|repo, d| {
                    if bad.contains(&d) {
                        r.links.entry(d).or_default().push(repo.to_string());
                    }
                })?;
                i.for_each_local_manifest(|repo, d| {
                    if bad.contains(&d) {
                        r.manifests.push((repo.to_string(), d));
                    }
                })?;
                Ok((bad, r))
            })
            .await?;
        for d in &bad {
            store.blobs.quarantine(d).await?;
            let entries: Vec<_> = records.mirrored.iter().filter(|e| e.digest == *d).collect();
            if !entries.is_empty() {
                store.index.forget_mirrored(d, &entries)?;
                // The totals follow (they are saved for the next start).
                store
                    .cache
                    .removed(entries.iter().map(|e| e.size).max().unwrap_or(0));
            }
            if let Some(repos) = records.links.get(d) {
                store.index.unlink_everywhere(d, repos)?;
            }
            for (repo, md) in records.manifests.iter().filter(|(_, md)| md == d) {
                if let Ok(name) = RepoName::parse(repo) {
                    store.index.delete_manifest(&name, md)?;
                }
            }
        }
        store.index.flush().await?;
    }
    Ok(report)
}

/// The records of the content a repair removes.
#[derive(Default)]
struct Records {
    mirrored: Vec<MirrorEntry>,
    links: HashMap<Digest, Vec<String>>,
    manifests: Vec<(String, Digest)>,
}
