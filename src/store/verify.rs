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

#[derive(Debug, Default, Clone)]
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

/// Scrubs the store. Three passes, none holding the store in memory: the
/// index (what it knows of, as a [`DigestSet`]), the blob files (each
/// hashed, checked against what is known, added to a second set), and the
/// index again (records whose file is missing). Memory grows by 16 bytes
/// per digest and with what is found wrong.
pub async fn verify(store: &Store, repair: bool) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    // Blobs a local manifest still references are known, even unlinked:
    // GC keeps them too.
    let known = super::gc::referenced(store).await?;
    let known = store
        .index
        .blocking(move |i| {
            let mut known = known;
            i.for_each_mirror_entry(|e| known.insert(&e.digest))?;
            i.for_each_local_link(|_, d| known.insert(&d))?;
            known.seal();
            Ok(known)
        })
        .await?;
    let mut on_disk = DigestSet::default();
    let mut files = store.blobs.files();
    while let Some(batch) = files.next().await? {
        for (d, size, _) in batch {
            let got = store.blobs.hash(&d).await?;
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
    report.missing = store
        .index
        .blocking(move |i| {
            let mut missing = Vec::new();
            i.for_each_mirror_entry(|e| {
                if !on_disk.contains(&e.digest) {
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
                if !on_disk.contains(&d) {
                    links.entry(d).or_default().push(repo.to_string());
                }
            })?;
            for (d, repos) in links {
                missing.push((format!("blob of {}", repos.join(", ")), d));
            }
            i.for_each_local_manifest(|repo, d| {
                if !on_disk.contains(&d) {
                    missing.push((format!("manifest of {repo}"), d));
                }
            })?;
            Ok(missing)
        })
        .await?;

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
