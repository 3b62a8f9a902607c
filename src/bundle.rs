//! Bundles for air-gapped sites: `wharf export` writes images pulled
//! through a running Wharf into one tar holding an OCI image layout
//! (`oci-layout`, `index.json` naming each reference in its
//! `org.opencontainers.image.ref.name` annotation, `blobs/<alg>/<hex>`),
//! which `skopeo copy oci-archive:BUNDLE.tar:REF` and other OCI tools read.
//! Every blob is checked against its digest on the way out (through a temp
//! file beside the bundle, one blob at a time: a bundle larger than memory
//! is fine), and the bundle only takes its name once complete. An
//! inventory of what the receiving site holds (`{"digests": [...]}`) makes
//! a delta: blobs listed there are left out.

use crate::body::Body;
use crate::oci::digest::Hasher;
use crate::oci::image_ref::{ImageRef, Platform};
use crate::oci::Digest;
use crate::prefetch::{fetch_manifest, plan, referrers, Source};
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
}

/// Reads an inventory (`wharf inventory`'s output): the digests a site
/// holds.
pub fn read_inventory(text: &str) -> Result<HashSet<Digest>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not an inventory (not JSON: {e})"))?;
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
        let mut b = tar::Builder::new(f);
        b.mode(tar::HeaderMode::Deterministic);
        Ok(Tar {
            builder: Arc::new(Mutex::new(b)),
        })
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
) -> Result<ExportReport, String> {
    let partial = beside(out, ".partial");
    let tmp = beside(out, &format!(".{}.blob", std::process::id()));
    let result = write(client, refs, opts, &partial, &tmp).await;
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
) -> Result<ExportReport, String> {
    let tar = Tar::create(partial)?;
    tar.bytes(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )
    .await?;
    let mut report = ExportReport::default();
    let mut written: HashSet<String> = HashSet::new();
    let mut index = Vec::new();
    for r in refs {
        let fail = |e: String| format!("{}: {e}", r.text);
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
            if !written.insert(m.digest.clone()) {
                continue;
            }
            report.manifests += 1;
            report.bytes += m.bytes.len() as u64;
            tar.bytes(blob_path(&d), m.bytes.to_vec())
                .await
                .map_err(fail)?;
            let p = plan(&m.bytes, m.media_type.as_deref(), &opts.platforms)
                .map_err(|e| fail(format!("manifest {reference}: {e}")))?;
            queue.extend(p.children);
            for (b, size) in p.blobs {
                if opts.exclude.contains(&b) {
                    report.excluded += 1;
                    report.excluded_bytes += size;
                    continue;
                }
                if !written.insert(b.to_string()) {
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
            }
            if opts.referrers {
                queue.extend(referrers(client, &r.name, &m.digest).await.map_err(fail)?);
            }
        }
        report.images += 1;
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
