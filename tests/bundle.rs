//! `wharf export`: a bundle of images pulled through a running Wharf (the
//! counted test upstream behind it) is an OCI image layout in a tar that
//! skopeo reads (`oci-archive:`); a delta against an inventory leaves the
//! listed blobs out; bad input writes nothing.

mod common;
use common::upstream::Upstream;
use common::*;
use std::path::Path;
use std::process::Command;

/// `wharf export ARGS --server http://ADDR`: exit code and output.
fn export(addr: &str, args: &[&str]) -> (i32, String) {
    wharf_at(addr, "export", args)
}

/// Exports app:1 and tool:2 to `delta` leaving out what `have` lists (app's
/// config and layer), and checks that only those stayed out.
fn export_delta(addr: &str, have: &Path, delta: &Path) {
    let (code, out) = export(
        addr,
        &[
            "app:1",
            "tool:2",
            "-o",
            delta.to_str().unwrap(),
            "--exclude",
            have.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 manifests, 2 blobs"), "{out}");
    assert!(out.contains("left out 2 blobs"), "{out}");
}

/// The digest of the manifest skopeo copies out of `bundle` for `name`.
fn manifest_in(bundle: &Path, name: &str, scratch: &Path) -> String {
    run(Command::new(require("skopeo"))
        .args(["--insecure-policy", "copy"])
        .arg(format!("oci-archive:{}:{name}", bundle.display()))
        .arg(format!("dir:{}", scratch.display())));
    sha256(&std::fs::read(scratch.join("manifest.json")).unwrap())
}

/// The names of a tar's entries.
fn entries(tar: &Path) -> Vec<String> {
    run(Command::new("tar").arg("-tf").arg(tar))
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn bundles_are_oci_layouts_and_deltas_leave_out_what_the_site_has() {
    let up = Upstream::start(false);
    let layer = pattern(300_000, 3);
    let (app, manifest, layer_digest) = up.seed("library/app", "1", &layer).await;
    let (tool, _, _) = up.seed("library/tool", "2", b"tool layer").await;
    let w = up.mirror(&[]);
    let addr = w.addr.to_string();
    let dir = tempfile::tempdir().unwrap();

    let full = dir.path().join("full.tar");
    let (code, out) = export(&addr, &["app:1", "tool:2", "-o", full.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 images, 2 manifests, 4 blobs"), "{out}");
    let names = entries(&full);
    assert!(names.contains(&"oci-layout".to_string()) && names.contains(&"index.json".to_string()));
    assert!(names.contains(&format!(
        "blobs/sha256/{}",
        layer_digest.trim_start_matches("sha256:")
    )));
    assert!(!dir.path().join("full.tar.partial").exists());
    // skopeo reads it, by the names the index gives.
    for (name, digest) in [("app:1", &app), ("tool:2", &tool)] {
        let got = dir.path().join(name.replace(':', "_"));
        assert_eq!(&manifest_in(&full, name, &got), digest, "{name}");
    }

    // An interrupted run (its partial bundle cut in the middle of the
    // layer) is continued with --resume: what is complete is kept, and
    // the bundle comes out whole.
    let resumed = dir.path().join("resumed.tar");
    let partial = dir.path().join("resumed.tar.partial");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&partial, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let (code, out) = export(
        &addr,
        &[
            "app:1",
            "tool:2",
            "-o",
            resumed.to_str().unwrap(),
            "--resume",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("from the interrupted run"), "{out}");
    let (mut a, mut b) = (entries(&full), entries(&resumed));
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(!partial.exists());
    let got = dir.path().join("resumed-app");
    assert_eq!(manifest_in(&resumed, "app:1", &got), app);
    // A partial bundle that is not a tar: started again.
    let again = dir.path().join("again.tar");
    std::fs::write(dir.path().join("again.tar.partial"), b"not a tar at all").unwrap();
    let (code, out) = export(&addr, &["app:1", "-o", again.to_str().unwrap(), "--resume"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("interrupted run"), "{out}");

    // The receiving site has app's blobs: the delta carries its manifest
    // only, and is smaller by about the layer.
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let have = dir.path().join("have.json");
    std::fs::write(
        &have,
        serde_json::json!({"digests": [m["config"]["digest"], layer_digest]}).to_string(),
    )
    .unwrap();
    let delta = dir.path().join("delta.tar");
    export_delta(&addr, &have, &delta);
    let (full_len, delta_len) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    assert!(
        full_len - delta_len >= layer.len() as u64,
        "full {full_len}, delta {delta_len}"
    );
    assert!(!entries(&delta)
        .iter()
        .any(|e| e.ends_with(layer_digest.trim_start_matches("sha256:"))));

    // Bad input: a clear message, exit 2, nothing written.
    std::fs::write(&have, "not json").unwrap();
    let bad = dir.path().join("bad.tar");
    for (args, says) in [
        (
            vec![
                "app:1",
                "-o",
                bad.to_str().unwrap(),
                "--exclude",
                have.to_str().unwrap(),
            ],
            "not an inventory",
        ),
        (vec!["app:1", "-o", full.to_str().unwrap()], "exists"),
        (
            vec!["App:1", "-o", bad.to_str().unwrap()],
            "not an image reference",
        ),
    ] {
        let (code, out) = export(&addr, &args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
    }
    // A reference the upstream lacks: the export fails whole.
    let (code, out) = export(&addr, &["app:1", "nosuch:1", "-o", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nosuch:1"), "{out}");
    assert!(!bad.exists() && !dir.path().join("bad.tar.partial").exists());
}

/// The receiving site's inventory (from its running server, or its data
/// directory) makes the sending site's delta.
#[tokio::test]
async fn an_inventory_of_the_receiving_site_makes_the_delta() {
    let up = Upstream::start(false);
    let (_, manifest, layer_digest) = up.seed("library/app", "1", b"app layer").await;
    up.seed("library/tool", "2", b"tool layer").await;
    let sender = up.mirror(&[]);
    let receiver = up.mirror(&[]);
    // The receiving site pulled app before.
    let r = Api::new(&receiver).get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status(), 200);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    for d in [
        m["config"]["digest"].as_str().unwrap(),
        layer_digest.as_str(),
    ] {
        let r = Api::new(&receiver)
            .get(&format!("/v2/library/app/blobs/{d}"))
            .await;
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    // A fill commits its file just after the last byte reaches the client.
    assert!(
        wait_until(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(50),
            || {
                [
                    m["config"]["digest"].as_str().unwrap(),
                    layer_digest.as_str(),
                ]
                .iter()
                .all(|d| blob_file(&receiver.data, d).exists())
            }
        )
        .await
    );
    let dir = tempfile::tempdir().unwrap();
    let have = dir.path().join("have.json");
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["inventory", "-o"])
        .arg(&have)
        .args(["--server", &format!("http://{}", receiver.addr)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&std::fs::read(&have).unwrap()).unwrap();
    assert_eq!(listed["digests"].as_array().unwrap().len(), 3, "{listed}");

    let delta = dir.path().join("delta.tar");
    export_delta(&sender.addr.to_string(), &have, &delta);

    // The same list from the receiver's data directory, once it stopped.
    let (data, _tmp) = receiver.stop();
    let (code, text) = wharf_cli(&["inventory", "--data", data.to_str().unwrap(), "-o", "-"]);
    assert_eq!(code, 0, "{text}");
    let offline: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let mut a: Vec<String> = serde_json::from_value(offline["digests"].clone()).unwrap();
    let mut b: Vec<String> = serde_json::from_value(listed["digests"].clone()).unwrap();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}
