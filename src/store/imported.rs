//! The store's rules for content arriving in a bundle (`wharf import`):
//! each blob is written to a temp file and checked against its digest and
//! size as it streams in (one the store already holds is only hashed),
//! visible to no one. Only once the whole bundle has been checked are the
//! new blobs installed and the records written: for an upstream's name,
//! the mirror records and tag a pull through the mirror leaves; for a
//! local name, the links, manifests and tags a push leaves. A bundle
//! refused before that leaves nothing behind (dropped temp files are
//! removed).

use super::blobs::TempBlob;
use super::cache::unix_now;
use super::index::{ManifestMeta, ManifestPut};
use super::Store;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::digest::Hasher;
use crate::oci::manifest::Descriptor;
use crate::oci::{Digest, RepoName, Tag};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;

/// The new blobs of a bundle, checked, waiting to be installed.
#[derive(Default)]
pub struct Staging {
    blobs: HashMap<Digest, TempBlob>,
}

impl Staging {
    /// Whether the bundle brought `d` (new to the store).
    pub fn has(&self, d: &Digest) -> bool {
        self.blobs.contains_key(d)
    }
}

/// One blob of a bundle as it streams in.
pub struct Arriving {
    d: Digest,
    size: u64,
    written: u64,
    to: Sink,
}

enum Sink {
    /// New to the store: written to a temp file, hashed as it goes.
    Temp(TempBlob),
    /// Already stored: only hashed (the bundle must still match).
    Check(Hasher),
}

fn refused(message: String) -> Error {
    Error::oci(ErrorCode::DigestInvalid, message)
}

impl Arriving {
    /// Adds the next bytes; more than the entry's size is refused.
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.written += bytes.len() as u64;
        if self.written > self.size {
            return Err(refused(format!(
                "blob {}: more bytes than its {} in the bundle",
                self.d, self.size
            )));
        }
        match &mut self.to {
            Sink::Temp(t) => t.write(bytes).await,
            Sink::Check(h) => {
                h.update(&bytes);
                Ok(())
            }
        }
    }

    /// Checks the size and the digest; a new blob joins `staging`.
    pub async fn finish(self, staging: &mut Staging) -> Result<()> {
        let d = self.d;
        if self.written != self.size {
            return Err(refused(format!(
                "blob {d}: the bundle is cut short ({} of its {} bytes)",
                self.written, self.size
            )));
        }
        let got = match self.to {
            Sink::Temp(mut t) => {
                let got = t.finish().await?;
                if got == d {
                    staging.blobs.insert(d.clone(), t);
                }
                got
            }
            Sink::Check(h) => h.finish(),
        };
        if got != d {
            return Err(refused(format!(
                "blob {d}: its content hashes to {got} (the bundle was altered or damaged)"
            )));
        }
        Ok(())
    }
}

/// Where imported content goes, and under which tag.
pub enum Placement {
    /// As if pulled through the mirror from `upstream`'s `repo`.
    Mirror {
        upstream: String,
        repo: String,
        tag: Option<String>,
    },
    /// Into local repository `repo`, as if pushed.
    Local { repo: RepoName, tag: Option<Tag> },
}

/// A manifest to record, checked against what references it.
pub struct ImportedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub subject: Option<Digest>,
    /// Its entry in its subject's referrers list, if it has a subject.
    pub referrer: Option<Descriptor>,
}

/// One image of a bundle: where it goes, its own manifest (`top`, which
/// the tag names) and everything it needs: manifests listed children
/// first (a local index is recorded after its children), referrers after
/// their subjects.
pub struct ImportedImage {
    pub placement: Placement,
    pub top: Digest,
    pub manifests: Vec<ImportedManifest>,
    pub blobs: Vec<(Digest, u64)>,
    /// Manifests of a local index already in its repository.
    pub present: Vec<Digest>,
}

impl Store {
    /// Starts receiving blob `d` of `size` bytes from a bundle (a second
    /// copy of one already staged, or one stored, is only checked).
    pub async fn receive(&self, staging: &Staging, d: &Digest, size: u64) -> Result<Arriving> {
        let to = if staging.has(d) || self.blobs.size(d).await? == Some(size) {
            Sink::Check(Hasher::new(d.algorithm()))
        } else {
            Sink::Temp(self.blobs.temp(d.algorithm()).await?)
        };
        Ok(Arriving {
            d: d.clone(),
            size,
            written: 0,
            to,
        })
    }

    /// The size of blob `d` if the store holds it.
    pub async fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        self.blobs.size(d).await
    }

    /// Installs the staged blobs `images` need (others are dropped) and
    /// records `images`; the new blobs and their bytes. Every blob and
    /// manifest they name must be staged or stored (the caller checked);
    /// under the GC lock each is checked again before any record is
    /// written, so nothing is recorded that is not there.
    pub async fn import(&self, staging: Staging, images: &[ImportedImage]) -> Result<(usize, u64)> {
        let mut needed: HashMap<&Digest, u64> = HashMap::new();
        for image in images {
            for (d, size) in &image.blobs {
                needed.insert(d, *size);
            }
            for m in &image.manifests {
                needed.insert(&m.digest, m.size);
            }
        }
        let (mut count, mut bytes) = (0, 0);
        for (d, temp) in staging.blobs {
            let Some(size) = needed.get(&d) else {
                continue;
            };
            // Touched first: garbage collection leaves it alone until it
            // is referenced below.
            self.touch(&d);
            temp.install(&self.blobs, &d).await?;
            (count, bytes) = (count + 1, bytes + size);
        }
        let _gc = self.gc_lock.read().await;
        for d in needed.keys() {
            self.touch(d);
        }
        let list: Vec<(Digest, u64)> = needed.iter().map(|(d, n)| ((*d).clone(), *n)).collect();
        let mut checks = futures_util::stream::iter(list.into_iter().map(|(d, size)| {
            let blobs = self.blobs.clone();
            async move {
                let found = blobs.size(&d).await;
                (d, size, found)
            }
        }))
        .buffer_unordered(16);
        while let Some((d, size, found)) = checks.next().await {
            if found? != Some(size) {
                return Err(Error::oci(
                    ErrorCode::Unavailable,
                    format!("{d} was removed while the bundle was imported; import it again"),
                ));
            }
        }
        drop(checks);
        for image in images {
            if let Placement::Local { repo, .. } = &image.placement {
                for d in &image.present {
                    if self.index.manifest(repo, d)?.is_none() {
                        return Err(Error::oci(
                            ErrorCode::Unavailable,
                            format!("{d} was deleted from {repo} while the bundle was imported; import it again"),
                        ));
                    }
                }
            }
        }
        let now = unix_now() / 1000;
        for image in images {
            let meta = |m: &ImportedManifest| ManifestMeta {
                media_type: m.media_type.clone(),
                size: m.size,
                subject: m.subject.clone(),
                stored: now,
            };
            match &image.placement {
                Placement::Mirror {
                    upstream,
                    repo,
                    tag,
                } => {
                    for (d, size) in &image.blobs {
                        self.cache.record_mirrored_blob(upstream, d, *size)?;
                    }
                    for m in &image.manifests {
                        let _changing = self.cache.changing();
                        if self.index.mirror_manifest(upstream, &m.digest)?.is_some() {
                            continue;
                        }
                        let mut meta = meta(m);
                        // Mirrored records carry no subject (the mirror
                        // lists referrers from the upstream).
                        meta.subject = None;
                        self.index.put_mirror_manifest(upstream, &m.digest, &meta)?;
                        self.cache.added(m.size);
                    }
                    if let Some(t) = tag {
                        if self.index.mirror_tag(upstream, repo, t)?.as_ref() != Some(&image.top) {
                            self.index.put_mirror_tag(upstream, repo, t, &image.top)?;
                        }
                    }
                }
                Placement::Local { repo, tag } => {
                    for (d, _) in &image.blobs {
                        self.index.link_blob(repo, d)?;
                    }
                    for m in &image.manifests {
                        let tags: Vec<Tag> = match tag {
                            Some(t) if m.digest == image.top => vec![t.clone()],
                            _ => Vec::new(),
                        };
                        // Already there, tagged as the bundle says: kept
                        // as it is (the same bundle twice changes nothing).
                        let tagged = match tags.first() {
                            Some(t) => self.index.tag(repo, t)?.as_ref() == Some(&m.digest),
                            None => true,
                        };
                        if tagged && self.index.manifest(repo, &m.digest)?.is_some() {
                            continue;
                        }
                        self.index.put_manifest(ManifestPut {
                            repo,
                            digest: &m.digest,
                            meta: meta(m),
                            tags: &tags,
                            referrer: m.referrer.clone(),
                        })?;
                    }
                }
            }
        }
        self.index.flush().await?;
        Ok((count, bytes))
    }
}
