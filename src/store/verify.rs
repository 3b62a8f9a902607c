//! The scrub behind `wharf verify`: re-hashes every blob file, and checks
//! the index and the files against each other both ways. With `repair`,
//! corrupt and orphaned files are moved to `DATA/quarantine/` and the
//! records that pointed at missing or corrupt content are dropped, so the
//! mirror fetches it again and local pulls get a clean 404 instead of bad
//! bytes.

use super::Store;
use crate::error::Result;
use crate::oci::{Digest, RepoName};
use std::collections::HashSet;

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

pub async fn verify(store: &Store, repair: bool) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let files = store.blobs.list().await?;
    let on_disk: HashSet<Digest> = files.iter().map(|(d, _, _)| d.clone()).collect();
    for (d, size, _) in &files {
        let got = store.blobs.hash(d).await?;
        report.checked += 1;
        report.bytes += size;
        if got != *d {
            report.corrupt.push(d.clone());
        }
    }

    let mirrored = store.index.mirror_entries()?;
    let links = store.index.local_links()?;
    let manifests = store.index.local_manifests()?;
    let mut known: HashSet<Digest> = HashSet::new();
    for e in &mirrored {
        known.insert(e.digest.clone());
        if !on_disk.contains(&e.digest) {
            let kind = if e.manifest {
                "mirrored manifest"
            } else {
                "mirrored blob"
            };
            report
                .missing
                .push((format!("{kind} from {}", e.upstream), e.digest.clone()));
        }
    }
    for (d, repos) in &links {
        known.insert(d.clone());
        if !on_disk.contains(d) {
            report
                .missing
                .push((format!("blob of {}", repos.join(", ")), d.clone()));
        }
    }
    for (repo, d, _) in &manifests {
        known.insert(d.clone());
        if !on_disk.contains(d) {
            report
                .missing
                .push((format!("manifest of {repo}"), d.clone()));
        }
    }
    // Blobs a local manifest still references are not orphans, even
    // unlinked: GC keeps them too.
    known.extend(super::gc::referenced(store).await?);
    report.orphaned = files
        .iter()
        .map(|(d, _, _)| d.clone())
        .filter(|d| !known.contains(d))
        .collect();

    if repair {
        let bad: HashSet<&Digest> = report
            .corrupt
            .iter()
            .chain(&report.orphaned)
            .chain(report.missing.iter().map(|(_, d)| d))
            .collect();
        for d in bad {
            store.blobs.quarantine(d).await?;
            let entries: Vec<_> = mirrored.iter().filter(|e| e.digest == *d).collect();
            if !entries.is_empty() {
                store.index.forget_mirrored(d, &entries)?;
            }
            if let Some(repos) = links.get(d) {
                store.index.unlink_everywhere(d, repos)?;
            }
            for (repo, md, _) in manifests.iter().filter(|(_, md, _)| md == d) {
                if let Ok(name) = RepoName::parse(repo) {
                    store.index.delete_manifest(&name, md)?;
                }
            }
        }
        store.index.flush().await?;
    }
    Ok(report)
}
