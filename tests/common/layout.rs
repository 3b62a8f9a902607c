//! OCI image layouts on disk, made by the tests for skopeo to copy: real
//! gzip-compressed tar layers (skopeo recompresses anything else).

use super::{sha256, OCI_MANIFEST};
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// Writes an OCI image layout with a config and `layers` layers; returns
/// the manifest digest.
pub fn write_oci_layout(dir: &Path, tag: &str, layers: usize) -> String {
    write_oci_layout_from(dir, tag, 0, layers)
}

/// [`write_oci_layout`] with the layers numbered from `first` (each
/// number makes its own layer content), for images that share none.
pub fn write_oci_layout_from(dir: &Path, tag: &str, first: usize, layers: usize) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        (d, bytes.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in first..first + layers {
        let (bytes, diff_id) = gzipped_tar(dir, i);
        let (d, s) = put(&bytes);
        diff_ids.push(diff_id);
        descs.push(
            json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d,"size":s}),
        );
    }
    let config =
        json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":diff_ids}})
            .to_string();
    let (cd, cs) = put(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cs},
        "layers": descs,
    })
    .to_string();
    let (md, ms) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion":2,"manifests":[{"mediaType":OCI_MANIFEST,"digest":md,"size":ms,
        "annotations":{"org.opencontainers.image.ref.name":tag}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    md
}

/// A real gzip-compressed tar layer (skopeo recompresses anything else),
/// with the digest of the uncompressed tar (its diff ID).
pub fn gzipped_tar(scratch: &Path, i: usize) -> (Vec<u8>, String) {
    let root = scratch.join(format!("layer-src-{i}"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let payload: Vec<u8> = (0..(200_000 + i * 1000))
        .map(|j| ((j * (i + 3)) % 251) as u8)
        .collect();
    std::fs::write(root.join(format!("etc/file-{i}")), payload).unwrap();
    let tar = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
        .arg(&root)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    std::fs::remove_dir_all(&root).unwrap();
    let mut gzip = Command::new("gzip")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gzip.stdin.take().unwrap();
    let input = tar.stdout.clone();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input).unwrap());
    let out = gzip.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    (out.stdout, sha256(&tar.stdout))
}
