//! `wharf import`: a bundle (what `wharf export` writes, or any OCI image
//! layout as a tar) read as it streams in, entry by entry, never unpacked:
//! only `oci-layout`, `index.json` and `blobs/<alg>/<hex>` are read, and a
//! link, an absolute path or a `..` refuses the bundle. Each blob is
//! checked against its digest and size as it arrives; then every image
//! named in `index.json` is walked from its manifest down, each manifest
//! checked against the descriptor that references it, and each blob it
//! needs found in the bundle or on this site. Only then is anything
//! installed and recorded ([`Store::import`]): an upstream's name
//! (`docker.io/library/alpine:3.20`) is served as if pulled through the
//! mirror (offline too), a local name as if pushed. A refused bundle
//! leaves nothing behind; the same bundle twice changes nothing.

use crate::error::{Error, ErrorCode, Result};
use crate::mirror::routing::{Backend, Router};
use crate::oci::image_ref::ImageRef;
use crate::oci::manifest::{self, Descriptor, MAX_MANIFEST_BYTES};
use crate::oci::{Digest, RepoName, Tag};
use crate::store::{ImportedImage, ImportedManifest, Placement, Staging, Store};
use bytes::BytesMut;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Most bytes of manifests one bundle may hold (they are kept in memory
/// until the bundle is checked): some 100,000 manifests.
const MAX_MANIFESTS_BYTES: usize = 256 << 20;

/// Most entries one bundle may hold (each costs some memory until the
/// bundle is checked).
const MAX_ENTRIES: usize = 500_000;

/// Most bytes a tar may spend between one entry's data and the next
/// entry: headers, and the long names and pax records the tar reader
/// holds in memory.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Deepest nesting of indexes (an index of indexes is one level).
const MAX_DEPTH: usize = 8;

/// Most manifests the images of one bundle may take together (counting
/// one shared by two images twice).
const MAX_VISITS: usize = 200_000;

/// The annotation containerd and `docker save` name an image with.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Each image imported, and where it went.
    pub images: Vec<String>,
    pub manifests: usize,
    /// Blobs the images need (manifests not included).
    pub blobs: usize,
    /// Blobs and manifests new to this site, and their bytes.
    pub new_blobs: usize,
    pub new_bytes: u64,
    /// Child manifests of an index left out of the bundle (exported for
    /// some platforms only): pulls of those platforms are not served.
    pub left_out: usize,
}

fn bad(message: String) -> Error {
    Error::oci(ErrorCode::ManifestInvalid, message)
}

/// What one tar entry is.
#[derive(Debug)]
enum Entry {
    Layout,
    Index,
    Blob(Digest),
    /// A directory, pax global header or file that is not part of an OCI
    /// image layout (`docker save` adds `manifest.json`): skipped.
    Skipped,
}

/// Reads an entry's name; anything that could point outside the bundle is
/// refused. Names are quoted in messages (they go to the log).
fn entry_of(kind: tokio_tar::EntryType, raw: &[u8], link: Option<&[u8]>) -> Result<Entry> {
    let name = std::str::from_utf8(raw)
        .map_err(|_| bad("the bundle holds an entry whose name is not UTF-8".into()))?;
    if name.starts_with('/') {
        return Err(bad(format!(
            "the bundle holds an absolute path ({name:?}): refused"
        )));
    }
    let parts: Vec<&str> = name
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(bad(format!(
            "the bundle holds a path with .. ({name:?}): refused"
        )));
    }
    if kind.is_symlink() || kind.is_hard_link() {
        let to = link.map(String::from_utf8_lossy).unwrap_or_default();
        return Err(bad(format!(
            "the bundle holds a link ({name:?} → {to:?}): refused"
        )));
    }
    if kind.is_dir() || kind.is_pax_global_extensions() {
        return Ok(Entry::Skipped);
    }
    if !kind.is_file() {
        return Err(bad(format!(
            "the bundle holds {name:?}, which is not a regular file: refused"
        )));
    }
    Ok(match parts.as_slice() {
        ["oci-layout"] => Entry::Layout,
        ["index.json"] => Entry::Index,
        ["blobs", alg, hex] => Entry::Blob(
            format!("{alg}:{hex}")
                .parse()
                .map_err(|e| bad(format!("the bundle holds {name:?}, not a blob's name: {e}")))?,
        ),
        _ => Entry::Skipped,
    })
}

/// The bundle's bytes, allowing only so many between one entry's data and
/// the next entry ([`MAX_HEADER_BYTES`]): the tar reader holds a long
/// name or pax record whole, and none may be larger than that.
struct Guarded<R> {
    inner: R,
    left: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Guarded<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let left = self.left.load(Ordering::Relaxed);
        if left == 0 {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "a tar header (a long name or pax record) is over {} KiB",
                MAX_HEADER_BYTES >> 10
            ))));
        }
        let want = buf
            .remaining()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut part);
        let n = part.filled().len();
        if let Poll::Ready(Ok(())) = &r {
            buf.advance(n);
            self.left.fetch_sub(n as u64, Ordering::Relaxed);
        }
        r
    }
}

/// What streaming the bundle found.
#[derive(Default)]
struct Read {
    layout: bool,
    index: Option<Vec<u8>>,
    /// Every blob in the bundle (manifests too) and its size.
    sizes: HashMap<Digest, u64>,
    /// The blobs that read as manifests, and their bytes.
    manifests: HashMap<Digest, Vec<u8>>,
    /// For each subject, the manifests in the bundle that refer to it.
    referrers: HashMap<Digest, Vec<Descriptor>>,
    manifest_bytes: usize,
    staging: Staging,
}

/// Reads a small entry whole (at most `limit` bytes).
async fn small(entry: &mut (impl AsyncRead + Unpin), name: &str, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| cut(name, &e))?;
    if buf.len() as u64 > limit {
        return Err(bad(format!("{name} in the bundle is over {limit} bytes")));
    }
    Ok(buf)
}

fn cut(name: &str, e: &std::io::Error) -> Error {
    bad(format!(
        "the bundle is cut short or not a tar (reading {name}: {e})"
    ))
}

/// Streams the bundle: every blob checked and staged.
async fn read(store: &Store, reader: impl AsyncRead + Unpin) -> Result<Read> {
    let mut out = Read::default();
    let left = Arc::new(AtomicU64::new(MAX_HEADER_BYTES));
    let mut archive = tokio_tar::Archive::new(Guarded {
        inner: reader,
        left: left.clone(),
    });
    let mut entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar: {e}")))?;
    let mut any = false;
    while let Some(entry) = entries.next().await {
        let mut entry = entry.map_err(|e| {
            bad(format!(
                "the bundle is not a tar, or is cut short or damaged: {e}"
            ))
        })?;
        any = true;
        // This entry's data, padding and the next headers.
        left.store(
            entry.effective_size().saturating_add(MAX_HEADER_BYTES),
            Ordering::Relaxed,
        );
        if out.sizes.len() >= MAX_ENTRIES {
            return Err(bad(format!(
                "the bundle holds more than {MAX_ENTRIES} blobs: split it"
            )));
        }
        let h = entry.header();
        let kind = h.entry_type();
        let raw = entry
            .path_bytes()
            .map_err(|e| cut("a name", &e))?
            .into_owned();
        let link = entry
            .link_name_bytes()
            .ok()
            .flatten()
            .map(|l| l.into_owned());
        let size = entry.effective_size();
        let name = String::from_utf8_lossy(&raw).into_owned();
        match entry_of(kind, &raw, link.as_deref())? {
            Entry::Skipped => {}
            Entry::Layout => {
                let text = small(&mut entry, &name, 64 << 10).await?;
                let v: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| bad(format!("oci-layout is not JSON: {e}")))?;
                if !v["imageLayoutVersion"].is_string() {
                    return Err(bad("oci-layout names no imageLayoutVersion".into()));
                }
                out.layout = true;
            }
            Entry::Index => {
                out.index = Some(small(&mut entry, &name, MAX_MANIFEST_BYTES as u64).await?);
            }
            Entry::Blob(d) => {
                let mut arriving = store.receive(&out.staging, &d, size).await?;
                let keep = size <= MAX_MANIFEST_BYTES as u64;
                let mut kept = Vec::new();
                loop {
                    let mut buf = BytesMut::with_capacity(64 << 10);
                    let n = entry.read_buf(&mut buf).await.map_err(|e| cut(&name, &e))?;
                    if n == 0 {
                        break;
                    }
                    if keep {
                        kept.extend_from_slice(&buf);
                    }
                    arriving.write(buf.freeze()).await?;
                }
                arriving.finish(&mut out.staging).await?;
                out.sizes.insert(d.clone(), size);
                let parsed = if keep {
                    manifest::parse(&kept, None).ok()
                } else {
                    None
                };
                if let Some(p) = parsed {
                    if let Some(subject) = p.subject {
                        out.referrers
                            .entry(subject.digest)
                            .or_default()
                            .push(Descriptor {
                                media_type: p.media_type,
                                digest: d.clone(),
                                size,
                                artifact_type: None,
                                annotations: None,
                                urls: None,
                            });
                    }
                    out.manifest_bytes += kept.len();
                    if out.manifest_bytes > MAX_MANIFESTS_BYTES {
                        return Err(bad(format!(
                            "the bundle holds more than {} MiB of manifests: split it",
                            MAX_MANIFESTS_BYTES >> 20
                        )));
                    }
                    out.manifests.insert(d, kept);
                }
            }
        }
    }
    if !any {
        return Err(bad("the bundle is empty or not a tar".into()));
    }
    if !out.layout || out.index.is_none() {
        return Err(bad(format!(
            "not an OCI image layout: the bundle has no {} (is it cut short?)",
            if out.layout {
                "index.json"
            } else {
                "oci-layout"
            }
        )));
    }
    Ok(out)
}

/// The digests and sizes of the blobs a manifest needs (its config and
/// layers, an artifact's blobs), foreign layers left out.
fn blob_sizes(bytes: &[u8], needed: &[Digest]) -> Vec<(Digest, u64)> {
    let raw: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let descriptors = raw["layers"]
        .as_array()
        .into_iter()
        .chain(raw["blobs"].as_array())
        .flatten()
        .chain(std::iter::once(&raw["config"]));
    let mut out = Vec::new();
    for d in descriptors {
        let (Some(digest), Some(size)) = (
            d["digest"].as_str().and_then(|s| s.parse::<Digest>().ok()),
            d["size"].as_u64(),
        ) else {
            continue;
        };
        if needed.contains(&digest) && !out.iter().any(|(x, _)| *x == digest) {
            out.push((digest, size));
        }
    }
    out
}

/// The images of the bundle's `index.json`, walked and checked.
struct Walk<'a> {
    store: &'a Store,
    read: &'a Read,
    report: ImportReport,
    /// Manifests walked so far, all images together.
    visits: usize,
}

/// One image being walked.
struct Image<'a> {
    name: &'a str,
    place: &'a Placement,
    manifests: Vec<ImportedManifest>,
    blobs: Vec<(Digest, u64)>,
    /// Children of a local index already in its repository.
    present: Vec<Digest>,
    seen: HashSet<Digest>,
}

impl Walk<'_> {
    /// Adds manifest `desc` and what it needs to `image`, children first;
    /// `depth`: indexes above it.
    async fn manifest(
        &mut self,
        image: &mut Image<'_>,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<()> {
        if !image.seen.insert(desc.digest.clone()) {
            return Ok(());
        }
        let top = depth == 0;
        if depth > MAX_DEPTH {
            return Err(bad(format!(
                "{}: indexes nested more than {MAX_DEPTH} deep",
                image.name
            )));
        }
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(bad(format!(
                "the bundle's images hold more than {MAX_VISITS} manifests: split it"
            )));
        }
        let d = &desc.digest;
        let Some(bytes) = self.read.manifests.get(d) else {
            if top {
                return Err(bad(format!(
                    "{}: index.json names manifest {d}, which the bundle does not hold",
                    image.name
                )));
            }
            return self.missing_child(image, d).await;
        };
        if bytes.len() as u64 != desc.size {
            return Err(bad(format!(
                "{}: manifest {d} is {} bytes, its descriptor says {}",
                image.name,
                bytes.len(),
                desc.size
            )));
        }
        let parsed = manifest::parse(bytes, Some(&desc.media_type)).map_err(|e| {
            let why = match e {
                manifest::ManifestError::MediaTypeMismatch { body, header } => {
                    format!("its mediaType {body:?} contradicts its descriptor's {header:?}")
                }
                e => e.to_string(),
            };
            bad(format!("{}: manifest {d}: {why}", image.name))
        })?;
        let raw: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        let children: Vec<Descriptor> =
            serde_json::from_value(raw["manifests"].clone()).unwrap_or_default();
        for c in &children {
            Box::pin(self.manifest(image, c, depth + 1)).await?;
        }
        for (b, size) in blob_sizes(bytes, &parsed.blobs) {
            let here = match self.read.sizes.get(&b) {
                Some(n) => Some(*n),
                None => self.store.blob_size(&b).await?,
            };
            match here {
                Some(n) if n == size => {}
                Some(n) => {
                    return Err(bad(format!(
                        "{}: blob {b} is {n} bytes, manifest {d} says {size}",
                        image.name
                    )))
                }
                None => {
                    return Err(Error::oci(
                        ErrorCode::ManifestBlobUnknown,
                        format!(
                            "{}: blob {b} is neither in the bundle nor on this site (a delta bundle made with an inventory of another site, or of this one before it lost content?): export it again without --exclude",
                            image.name
                        ),
                    ))
                }
            }
            if !image.blobs.iter().any(|(x, _)| *x == b) {
                image.blobs.push((b, size));
            }
        }
        let referrer = parsed.subject.as_ref().map(|_| Descriptor {
            media_type: parsed.media_type.clone(),
            digest: d.clone(),
            size: desc.size,
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone(),
            urls: None,
        });
        image.manifests.push(ImportedManifest {
            digest: d.clone(),
            media_type: parsed.media_type,
            size: desc.size,
            subject: parsed.subject.map(|s| s.digest),
            referrer,
        });
        Ok(())
    }

    /// A child of an index the bundle does not hold: a mirrored index may
    /// be partial (exported for some platforms); a local one must be
    /// whole, as a push must.
    async fn missing_child(&mut self, image: &mut Image<'_>, d: &Digest) -> Result<()> {
        match image.place {
            Placement::Mirror { upstream, .. } => {
                if self.store.index().mirror_manifest(upstream, d)?.is_none() {
                    self.report.left_out += 1;
                }
                Ok(())
            }
            Placement::Local { repo, .. } if self.store.index().manifest(repo, d)?.is_some() => {
                image.present.push(d.clone());
                Ok(())
            }
            Placement::Local { repo, .. } => Err(Error::oci(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "{}: manifest {d} of its index is neither in the bundle nor in {repo}: a local index needs all its manifests (export it without --platform)",
                    image.name
                ),
            )),
        }
    }

    /// Adds the bundle's manifests whose subject is in `image`, and
    /// theirs, until none is left.
    async fn referrers(&mut self, image: &mut Image<'_>) -> Result<()> {
        let mut subjects: Vec<Digest> = image.seen.iter().cloned().collect();
        while let Some(s) = subjects.pop() {
            let Some(list) = self.read.referrers.get(&s) else {
                continue;
            };
            for desc in list {
                if !image.seen.contains(&desc.digest) {
                    self.manifest(image, desc, 0).await?;
                    subjects.push(desc.digest.clone());
                }
            }
        }
        Ok(())
    }
}

/// Where `name` (from `index.json`) goes on this site.
fn placement(router: &Router, r: &ImageRef) -> Result<(Placement, String)> {
    if let Some(host) = r.host() {
        if router.upstream_prefixed(host).is_none() {
            return Err(bad(format!(
                "{}: upstream {host} is not configured on this site: add it to [[upstreams]] (it need not be reachable) and import again",
                r.text
            )));
        }
    }
    let name = RepoName::parse(&r.name)
        .map_err(|e| Error::oci(ErrorCode::NameInvalid, format!("{}: {e}", r.text)))?;
    let tag = (r.reference.parse::<Digest>().is_err()).then(|| r.reference.clone());
    Ok(match router.route(&name, None)? {
        Backend::Local => {
            let tag = tag
                .map(|t| Tag::parse(&t))
                .transpose()
                .map_err(|e| Error::oci(ErrorCode::TagInvalid, format!("{}: {e}", r.text)))?;
            (
                Placement::Local { repo: name, tag },
                format!("{} (local)", r.text),
            )
        }
        Backend::Mirror { upstream, repo } => {
            let shown = format!("{} (mirrored from {upstream} as {repo})", r.text);
            (
                Placement::Mirror {
                    upstream,
                    repo,
                    tag,
                },
                shown,
            )
        }
    })
}

/// Imports the bundle `reader` streams into `store`, placing names as
/// `router` routes them: all of it, or (refused) nothing.
pub async fn import(
    store: &Store,
    router: &Router,
    reader: impl AsyncRead + Unpin,
) -> Result<ImportReport> {
    let read = read(store, reader).await?;
    #[derive(serde::Deserialize)]
    struct IndexJson {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let index: IndexJson = serde_json::from_slice(read.index.as_deref().unwrap_or_default())
        .map_err(|e| bad(format!("index.json is not an image index: {e}")))?;
    if index.manifests.is_empty() {
        return Err(bad("index.json names no image".into()));
    }
    let mut walk = Walk {
        store,
        read: &read,
        report: ImportReport::default(),
        visits: 0,
    };
    let mut images = Vec::new();
    for desc in &index.manifests {
        let ann = |k: &str| {
            desc.annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(|v| v.as_str())
        };
        let Some(text) = ann(CONTAINERD_NAME).or(ann(super::REF_NAME)) else {
            return Err(bad(format!(
                "index.json names manifest {} without a reference ({})",
                desc.digest,
                super::REF_NAME
            )));
        };
        // `oci:DIR:1` (skopeo) names by tag alone: which image is that?
        if !text.contains(['/', ':', '@']) {
            return Err(bad(format!(
                "index.json names manifest {} only as {text:?}: a bundle to import names each image in full (wharf export writes alpine:3.20, docker save docker.io/library/alpine:3.20)",
                desc.digest
            )));
        }
        let r = ImageRef::parse(text).map_err(|e| bad(format!("index.json: {e}")))?;
        if let Ok(d) = r.reference.parse::<Digest>() {
            if d != desc.digest {
                return Err(bad(format!(
                    "index.json names {text} for manifest {}",
                    desc.digest
                )));
            }
        }
        let (place, shown) = placement(router, &r)?;
        let mut image = Image {
            name: text,
            place: &place,
            manifests: Vec::new(),
            blobs: Vec::new(),
            present: Vec::new(),
            seen: HashSet::new(),
        };
        walk.manifest(&mut image, desc, 0).await?;
        walk.referrers(&mut image).await?;
        walk.report.manifests += image.manifests.len();
        walk.report.blobs += image.blobs.len();
        walk.report.images.push(shown);
        let (manifests, blobs, present) = (image.manifests, image.blobs, image.present);
        images.push(ImportedImage {
            placement: place,
            top: desc.digest.clone(),
            manifests,
            blobs,
            present,
        });
    }
    let mut report = walk.report;
    // A task of its own: a client that goes away does not stop the
    // records half-way.
    let (store, staging) = (store.clone(), read.staging);
    (report.new_blobs, report.new_bytes) =
        tokio::spawn(async move { store.import(staging, &images).await })
            .await
            .map_err(|e| Error::storage("importing", e))??;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tar::EntryType;

    #[test]
    fn names_that_leave_the_bundle_are_refused() {
        let file = EntryType::Regular;
        for bad in [
            "/etc/passwd",
            "blobs/../../x",
            "../oci-layout",
            "./a/../../b",
        ] {
            assert!(entry_of(file, bad.as_bytes(), None).is_err(), "{bad}");
        }
        let link = entry_of(EntryType::Symlink, b"index.json", Some(b"/etc/shadow"));
        assert!(link.unwrap_err().message().contains("link"));
        let hard = entry_of(
            EntryType::Link,
            format!("blobs/sha256/{}", "b".repeat(64)).as_bytes(),
            Some(b"index.json"),
        );
        assert!(hard.unwrap_err().message().contains("a link"));
        assert!(entry_of(EntryType::Fifo, b"oci-layout", None).is_err());
        let hex = "a".repeat(64);
        assert!(matches!(
            entry_of(file, format!("./blobs/sha256/{hex}").as_bytes(), None),
            Ok(Entry::Blob(_))
        ));
        assert!(matches!(
            entry_of(file, b"index.json", None),
            Ok(Entry::Index)
        ));
        assert!(matches!(
            entry_of(EntryType::Directory, b"blobs/", None),
            Ok(Entry::Skipped)
        ));
        assert!(matches!(
            entry_of(file, b"manifest.json", None),
            Ok(Entry::Skipped)
        ));
        assert!(entry_of(file, b"blobs/sha256/short", None).is_err());
    }

    #[test]
    fn names_are_placed_as_a_pull_routes_them() {
        let c = crate::config::Config::load(&crate::config::ServeArgs {
            upstream: vec!["quay.io=https://quay.io".into()],
            ..Default::default()
        })
        .unwrap();
        let router = Router::new(&c);
        let place = |t: &str| placement(&router, &ImageRef::parse(t).unwrap());
        match place("docker.io/library/alpine:3.20").unwrap().0 {
            Placement::Mirror {
                upstream,
                repo,
                tag,
            } => {
                assert_eq!(
                    (upstream.as_str(), repo.as_str(), tag.as_deref()),
                    ("docker.io", "library/alpine", Some("3.20"))
                );
            }
            Placement::Local { .. } => panic!("mirrored"),
        }
        let d = format!("sha256:{}", "c".repeat(64));
        match place(&format!("quay.io/org/app@{d}")).unwrap().0 {
            Placement::Mirror { upstream, tag, .. } => {
                assert_eq!((upstream.as_str(), tag), ("quay.io", None));
            }
            Placement::Local { .. } => panic!("mirrored"),
        }
        let err = place("ghcr.io/org/app:1").err().unwrap();
        assert!(err.message().contains("upstream ghcr.io is not configured"));
    }

    #[tokio::test]
    async fn a_huge_long_name_is_refused_before_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_maintenance(dir.path(), &crate::config::Storage::Fs, 8 << 20)
            .await
            .unwrap();
        // A GNU long-name entry of 2 MiB, which the tar reader would hold
        // whole.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(2 << 20);
        h.set_path("././@LongLink").unwrap();
        h.set_cksum();
        let mut bundle = h.as_bytes().to_vec();
        bundle.resize(bundle.len() + (2 << 20), b'a');
        let Err(e) = read(&store, &bundle[..]).await else {
            panic!("read");
        };
        assert!(e.message().contains("over 1024 KiB"), "{}", e.message());
    }

    #[test]
    fn blob_sizes_come_from_the_descriptors() {
        let (a, b) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        );
        let m = format!(
            r#"{{"config":{{"digest":"{a}","size":3}},"layers":[{{"digest":"{b}","size":7}},{{"digest":"{b}","size":7}}]}}"#
        );
        let needed: Vec<Digest> = vec![a.parse().unwrap(), b.parse().unwrap()];
        assert_eq!(
            blob_sizes(m.as_bytes(), &needed),
            vec![(needed[1].clone(), 7), (needed[0].clone(), 3)]
        );
    }
}
