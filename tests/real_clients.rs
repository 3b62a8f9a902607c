//! Real clients nobody here wrote, pushing to and pulling from a real
//! Wharf: skopeo (containers/image) and ORAS (the Python `oras` package).
//! Docker's own test lives in `docker.rs`.

mod common;
use common::layout::write_oci_layout;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn skopeo() -> Command {
    let mut c = Command::new(require("skopeo"));
    c.arg("--insecure-policy");
    c
}

#[tokio::test]
async fn skopeo_copies_an_oci_image_in_and_out() {
    let w = Wharf::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let digest = write_oci_layout(&src, "v1", 3);
    let dest = format!("docker://{}/golden/app:v1", w.addr);
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(&dest));

    // skopeo's own view of what it pushed.
    let raw = run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&dest));
    let raw = raw.strip_suffix('\n').unwrap_or(&raw);
    assert_eq!(sha256(raw.as_bytes()), digest, "manifest bytes unchanged");
    let api = Api::new(&w);
    let r = api
        .req("HEAD", "/v2/golden/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.clone()));

    // And back out into a fresh layout: identical digests.
    let back = tmp.path().join("back");
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(&dest)
        .arg(format!("oci:{}:v1", back.display())));
    let index: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest);
    let m: Value = serde_json::from_slice(
        &std::fs::read(
            back.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    for layer in m["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let bytes = std::fs::read(
            back.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(sha256(&bytes), d);
    }

    // A second copy to another repository mounts or skips existing blobs.
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(&dest)
        .arg(format!("docker://{}/golden/app-copy:v1", w.addr)));
    let r = api
        .req("HEAD", "/v2/golden/app-copy/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), Some(digest));
    let tags = run(skopeo()
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/golden/app", w.addr)));
    let tags: Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], json!(["v1"]));
}

fn oras_script(w: &Wharf, repo: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/oras_roundtrip.py");
    let out = run(Command::new(require("python3"))
        .arg(script)
        .args(["--registry", &w.addr, "--repo", repo, "--workdir"])
        .arg(tmp.path())
        .args(["--timeout", "60"])
        .args(extra));
    assert!(out.contains("ORAS OK"), "{out}");
}

#[tokio::test]
async fn oras_pushes_pulls_attaches_and_discovers() {
    let w = Wharf::start();
    oras_script(&w, "golden/artifacts", &[]);
    // The chunked (PATCH) upload path of the same client.
    oras_script(&w, "golden/artifacts-chunked", &["--chunked"]);
}
