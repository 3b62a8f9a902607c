//! Bundles for air-gapped sites: `wharf export` writes images pulled
//! through a running Wharf into one tar holding an OCI image layout
//! (`oci-layout`, `index.json` naming each reference in its
//! `org.opencontainers.image.ref.name` annotation, `blobs/<alg>/<hex>`),
//! which `skopeo copy oci-archive:BUNDLE.tar:REF` and other OCI tools read.
//! Every blob is checked against its digest on the way out (through a temp
//! file beside the bundle, one blob at a time: a bundle larger than memory
//! is fine), and the bundle only takes its name once complete. An
//! inventory of what the receiving site holds (`{"digests": [...]}`) makes
//! a delta: blobs listed there are left out. [`import`] reads a bundle
//! at the receiving site.

pub mod import;

use crate::body::Body;
use crate::oci::digest::Hasher;
use crate::oci::image_ref::{ImageRef, Platform};
use crate::oci::Digest;
use crate::prefetch::{fetch_manifest, plan, referrers, Progress, Source};
use http_body_util::BodyExt;
use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// The annotation naming a reference in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub platforms: Vec<Platform>,
    pub referrers: bool,
    /// Blobs the receiving site has (from its inventory): left out.
    pub exclude: HashSet<Digest>,
    /// Continue the `BUNDLE.partial` an interrupted run left: its
    /// complete entries that still match their digests are kept.
    pub resume: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub images: usize,
    pub manifests: usize,
    pub blobs: usize,
    /// Bytes of blobs and manifests written.
    pub bytes: u64,
    /// Blobs left out because the inventory lists them, and their bytes.
    pub excluded: usize,
    pub excluded_bytes: u64,
    /// Manifests and blobs kept from the partial bundle of an interrupted
    /// run (`resume`).
    pub resumed: usize,
}

/// Reads an inventory (`wharf inventory`'s output): the digests a site
/// holds.
pub fn read_inventory(text: &str) -> Result<HashSet<Digest>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not an inventory (not JSON: {e})"))?;
    inventory_of(&v)
}

/// The digests of an inventory already read as JSON (a server's answer).
pub fn inventory_of(v: &serde_json::Value) -> Result<HashSet<Digest>, String> {
    let list = v["digests"]
        .as_array()
        .ok_or("not an inventory: expected {\"digests\": [\"sha256:...\", ...]}")?;
    list.iter()
        .map(|d| {
            d.as_str()
                .and_then(|s| s.parse::<Digest>().ok())
                .ok_or_else(|| format!("not an inventory: {d} is not a digest"))
        })
        .collect()
}

/// The tar being written, entry by entry, on blocking threads.
struct Tar {
    builder: Arc<Mutex<tar::Builder<std::fs::File>>>,
}

impl Tar {
    fn create(path: &Path) -> Result<Tar, String> {
        let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self::on(f))
    }

    /// Continues the tar at `path` after its first `keep` bytes.
    fn append(path: &Path, keep: u64) -> Result<Tar, String> {
        use std::io::Seek;
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(err)?;
        f.set_len(keep).map_err(err)?;
        f.seek(std::io::SeekFrom::Start(keep)).map_err(err)?;
        Ok(Self::on(f))
    }

    fn on(f: std::fs::File) -> Tar {
        let mut b = tar::Builder::new(f);
        b.mode(tar::HeaderMode::Deterministic);
        Tar {
            builder: Arc::new(Mutex::new(b)),
        }
    }

    fn header(size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    async fn bytes(&self, name: String, data: Vec<u8>) -> Result<(), String> {
        let b = self.builder.clone();
        tokio::task::spawn_blocking(move || {
            let mut b = b
                .lock()
                .map_err(|_| "the bundle writer failed".to_string())?;
            b.append_data(&mut Self::header(data.len() as u64), &name, data.as_slice())
                .map_err(|e| format!("writing the bundle: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn file(&self, name: String, path: PathBuf, size: u64) -> Result<(), String> {
        let b = self.builder.clone();
        tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut b = b
                .lock()
                .map_err(|_| "the bundle writer failed".to_string())?;
            b.append_data(&mut Self::header(size), &name, f)
                .map_err(|e| format!("writing the bundle: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn finish(self) -> Result<(), String> {
        let b = self.builder;
        tokio::task::spawn_blocking(move || {
            let mut b = b
                .lock()
                .map_err(|_| "the bundle writer failed".to_string())?;
            b.finish().map_err(|e| format!("writing the bundle: {e}"))?;
            let f = b.get_mut();
            f.flush()
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("writing the bundle: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// What a partial bundle holds that can be kept.
#[derive(Default)]
struct Salvaged {
    /// Its `oci-layout` entry is complete (else nothing is kept).
    layout: bool,
    /// The digests of its complete entries that match them.
    digests: HashSet<String>,
    /// Bytes up to the end of the last entry kept.
    keep: u64,
}

/// Reads a partial bundle entry by entry, re-hashing each blob, up to the
/// first entry that is incomplete, does not match its name, or is
/// `index.json` (written last, and written again).
fn salvage(partial: &Path) -> Result<Salvaged, String> {
    use std::io::Read;
    let f = std::fs::File::open(partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", partial.display()))?
        .len();
    let mut out = Salvaged::default();
    let mut archive = tar::Archive::new(f);
    let Ok(entries) = archive.entries() else {
        return Ok(out);
    };
    for entry in entries {
        let Ok(mut e) = entry else { break };
        let size = e.size();
        let end = e.raw_file_position() + size.div_ceil(512) * 512;
        if end > len {
            break;
        }
        let name = match e.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => break,
        };
        if name == "oci-layout" {
            out.layout = true;
            out.keep = end;
            continue;
        }
        let digest = name
            .strip_prefix("blobs/")
            .and_then(|p| p.split_once('/'))
            .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok());
        let (true, Some(d)) = (out.layout, digest) else {
            break;
        };
        let mut hasher = Hasher::new(d.algorithm());
        let mut buf = vec![0u8; 64 << 10];
        let mut n = 0u64;
        loop {
            match e.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    hasher.update(&buf[..k]);
                    n += k as u64;
                }
                Err(_) => return Ok(out),
            }
        }
        if n != size || hasher.finish() != d {
            break;
        }
        out.digests.insert(d.to_string());
        out.keep = end;
    }
    Ok(out)
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// `out` with `suffix` added to its file name.
fn beside(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    out.with_file_name(name)
}

/// Writes the bundle of `refs` to `out`: complete, or not at all (what
/// was written is removed on failure).
pub async fn export(
    client: &impl Source,
    refs: &[ImageRef],
    opts: &ExportOptions,
    out: &Path,
    progress: &Progress,
) -> Result<ExportReport, String> {
    let partial = beside(out, ".partial");
    let tmp = beside(out, &format!(".{}.blob", std::process::id()));
    let result = write(client, refs, opts, &partial, &tmp, progress).await;
    progress.finish();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(report) => {
            std::fs::rename(&partial, out).map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

async fn write(
    client: &impl Source,
    refs: &[ImageRef],
    opts: &ExportOptions,
    partial: &Path,
    tmp: &Path,
    progress: &Progress,
) -> Result<ExportReport, String> {
    let mut report = ExportReport::default();
    let mut written: HashSet<String> = HashSet::new();
    let mut walked: HashSet<String> = HashSet::new();
    let salvaged = if opts.resume && partial.exists() {
        let p = partial.to_path_buf();
        tokio::task::spawn_blocking(move || salvage(&p))
            .await
            .map_err(|e| e.to_string())??
    } else {
        Salvaged::default()
    };
    let tar = if salvaged.layout {
        report.resumed = salvaged.digests.len();
        written = salvaged.digests;
        Tar::append(partial, salvaged.keep)?
    } else {
        let tar = Tar::create(partial)?;
        tar.bytes(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        )
        .await?;
        tar
    };
    let mut index = Vec::new();
    for r in refs {
        let fail = |e: String| format!("{}: {e}", r.text);
        let bar = progress.image(&r.text);
        let before = report.bytes;
        let mut queue = vec![r.reference.clone()];
        let mut top = true;
        while let Some(reference) = queue.pop() {
            let m = fetch_manifest(client, &r.name, &reference)
                .await
                .map_err(fail)?;
            let d: Digest = m.digest.parse().map_err(|e| fail(format!("{e}")))?;
            if top {
                let shown = if r.reference.parse::<Digest>().is_ok() {
                    format!("{}@{}", r.name, r.reference)
                } else {
                    format!("{}:{}", r.name, r.reference)
                };
                index.push(serde_json::json!({
                    "mediaType": m.media_type,
                    "digest": m.digest,
                    "size": m.bytes.len(),
                    "annotations": {REF_NAME: shown},
                }));
                top = false;
            }
            // Walked once per run; written once per bundle (a resumed
            // bundle may hold a manifest whose blobs it lacks).
            if !walked.insert(m.digest.clone()) {
                continue;
            }
            if written.insert(m.digest.clone()) {
                report.manifests += 1;
                report.bytes += m.bytes.len() as u64;
                tar.bytes(blob_path(&d), m.bytes.to_vec())
                    .await
                    .map_err(fail)?;
            }
            let p = plan(&m.bytes, m.media_type.as_deref(), &opts.platforms)
                .map_err(|e| fail(format!("manifest {reference}: {e}")))?;
            queue.extend(p.children);
            bar.inc_length(p.blobs.iter().map(|(_, n)| n).sum());
            for (b, size) in p.blobs {
                if opts.exclude.contains(&b) {
                    report.excluded += 1;
                    report.excluded_bytes += size;
                    bar.inc(size);
                    continue;
                }
                if !written.insert(b.to_string()) {
                    bar.inc(size);
                    continue;
                }
                let n = download(client, &r.name, &b, size, tmp)
                    .await
                    .map_err(fail)?;
                tar.file(blob_path(&b), tmp.to_path_buf(), n)
                    .await
                    .map_err(fail)?;
                report.blobs += 1;
                report.bytes += n;
                bar.inc(n);
            }
            if opts.referrers {
                queue.extend(referrers(client, &r.name, &m.digest).await.map_err(fail)?);
            }
        }
        report.images += 1;
        bar.finish_and_clear();
        progress.step(
            &format!(
                "exported {}: {} written",
                r.text,
                indicatif::HumanBytes(report.bytes - before)
            ),
            format!("{} written", indicatif::HumanBytes(report.bytes)),
        );
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::manifest::OCI_INDEX,
        "manifests": index,
    });
    tar.bytes("index.json".into(), index.to_string().into_bytes())
        .await?;
    tar.finish().await?;
    Ok(report)
}

/// Fetches blob `d` of `name` into `tmp`, checking it against its size
/// (from its descriptor: no more is written) and its digest; its size.
async fn download(
    client: &impl Source,
    name: &str,
    d: &Digest,
    size: u64,
    tmp: &Path,
) -> Result<u64, String> {
    let resp = client
        .get(name, &format!("blobs/{d}"), &[])
        .await
        .map_err(|e| format!("blob {d}: {e}"))?;
    let mut body: Body = resp.into_body();
    let mut f = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut hasher = Hasher::new(d.algorithm());
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("blob {d}: {e}"))?;
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
            if n > size {
                return Err(format!(
                    "blob {d}: the server sent more than its {size} bytes"
                ));
            }
            hasher.update(data);
            f.write_all(data)
                .await
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
    }
    f.flush()
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    if n != size {
        return Err(format!("blob {d}: the server sent {n} of its {size} bytes"));
    }
    let got = hasher.finish();
    if got != *d {
        return Err(format!(
            "blob {d}: the server sent content whose digest is {got}"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_bundle_is_kept_up_to_its_first_bad_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar.partial");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            b.append_data(&mut Tar::header(data.len() as u64), name, data)
                .unwrap();
        };
        let good = |data: &[u8]| {
            let d = Digest::of(crate::oci::Algorithm::Sha256, data);
            (blob_path(&d), d.to_string())
        };
        add("oci-layout", b"{}");
        let (a, da) = good(b"first");
        add(&a, b"first");
        let (wrong, _) = good(b"what the name says");
        add(&wrong, b"something else");
        let (c, _) = good(b"third");
        add(&c, b"third");
        b.into_inner().unwrap();
        let s = salvage(&path).unwrap();
        assert!(s.layout);
        assert_eq!(s.digests, HashSet::from([da]));
        assert_eq!(s.keep, 512 * 4, "two entries: a header and a block each");
        // Not a tar, or no layout first: nothing kept.
        std::fs::write(&path, b"junk").unwrap();
        assert!(!salvage(&path).unwrap().layout);
    }

    #[test]
    fn inventories_are_checked() {
        let d = format!("sha256:{}", "b".repeat(64));
        let set = read_inventory(&format!("{{\"digests\":[\"{d}\"]}}")).unwrap();
        assert!(set.contains(&d.parse().unwrap()));
        for bad in [
            "",
            "[]",
            "{\"digests\":[\"x\"]}",
            "{\"digests\":\"sha256:x\"}",
            "not json",
        ] {
            assert!(read_inventory(bad).is_err(), "{bad}");
        }
    }
}
