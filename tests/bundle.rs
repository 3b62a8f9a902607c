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
    assert!(out.contains("exported tool:2: "), "a line per image: {out}");
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

/// `wharf import BUNDLE --server http://ADDR`: exit code and output.
fn import(addr: &str, bundle: &Path) -> (i32, String) {
    wharf_at(addr, "import", &[bundle.to_str().unwrap()])
}

/// A Wharf that cannot reach any upstream: `--offline`, its docker.io a
/// closed port.
fn offline_site() -> Wharf {
    Wharf::start_with(offline_opts())
}

fn offline_opts() -> Opts {
    Opts {
        args: ["--upstream", "docker.io=http://127.0.0.1:9", "--offline"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

/// Site A exports mirrored images (one a two-platform index) and a local
/// one; site B, offline and with no upstream it can reach, imports the
/// bundle through its running server and serves every image by the same
/// digests, the local one as local content; the same bundle again changes
/// nothing. After one image changed upstream, B's inventory makes a delta
/// that carries only the changed blobs, and B takes it. A site that lacks
/// the delta's base refuses it.
#[tokio::test]
async fn an_offline_site_is_filled_from_bundles_and_deltas() {
    let up = Upstream::start(false);
    let (app, _, old_layer) = up.seed("library/app", "1", &pattern(300_000, 3)).await;
    let multi = seed_index(&up, "library/multi").await;
    let a = up.mirror(&["--tag-ttl", "1s"]);
    let golden = push_image(&Api::new(&a), "golden/base", "1", "base").await;
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.tar");
    let (code, out) = export(
        &a.addr,
        &[
            "app:1",
            "docker.io/library/multi:1",
            "golden/base:1",
            "-o",
            full.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");

    let b = offline_site();
    let api = Api::new(&b);
    assert_ne!(api.get("/v2/library/app/manifests/1").await.status(), 200);
    let (code, out) = import(&b.addr, &full);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 images, 5 manifests"), "{out}");
    assert!(
        out.contains("docker.io/library/multi:1 (mirrored from docker.io as library/multi)"),
        "{out}"
    );
    assert!(out.contains("golden/base:1 (local)"), "{out}");
    for (image, digest) in [
        ("library/app:1", &app),
        ("library/multi:1", &multi),
        ("docker.io/library/multi:1", &multi),
        ("golden/base:1", &golden),
    ] {
        assert_eq!(&skopeo_pulled(&b.addr, image), digest, "{image}");
    }
    // The local image is B's own: its tags are listed.
    let tags = api.json("/v2/golden/base/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["1"]));

    // The same bundle again: nothing new.
    let files = stored_blobs(&b.data).await;
    let (code, out) = import(&b.addr, &full);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 new here (0 bytes)"), "{out}");
    assert_eq!(stored_blobs(&b.data).await, files);

    // app:1 moves upstream to a new layer; A sees it once its tag expires.
    let new_layer = pattern(200_000, 9);
    let (app2, _, new_layer_digest) = up.seed("library/app", "1", &new_layer).await;
    assert_ne!(app2, app);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let have = dir.path().join("have.json");
    let (code, out) = wharf_at(&b.addr, "inventory", &["-o", have.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let delta = dir.path().join("delta.tar");
    let (code, out) = export(
        &a.addr,
        &[
            "app:1",
            "multi:1",
            "golden/base:1",
            "-o",
            delta.to_str().unwrap(),
            "--exclude",
            have.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (full_len, delta_len) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    eprintln!("bundle sizes: full {full_len} bytes, delta {delta_len} bytes");
    // The new layer and the manifests (always sent), nothing else.
    assert!(
        delta_len > new_layer.len() as u64 && delta_len < new_layer.len() as u64 + 16_384,
        "delta {delta_len}"
    );
    let names = entries(&delta);
    assert!(names.iter().any(|e| e.ends_with(&new_layer_digest[7..])));
    assert!(!names.iter().any(|e| e.ends_with(&old_layer[7..])));
    let (code, out) = import(&b.addr, &delta);
    assert_eq!(code, 0, "{out}");
    assert_eq!(skopeo_pulled(&b.addr, "library/app:1"), app2);
    assert_eq!(skopeo_pulled(&b.addr, "golden/base:1"), golden);

    // A site without the delta's base: refused, nothing served.
    let c = offline_site();
    let (code, out) = import(&c.addr, &delta);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("neither in the bundle nor on this site"),
        "{out}"
    );
    assert!(out.contains("nothing of it is served"), "{out}");
    assert_ne!(
        Api::new(&c)
            .get("/v2/library/app/manifests/1")
            .await
            .status(),
        200
    );
    assert_eq!(stored_blobs(&c.data).await, 0);
}

/// Bundles that are not what they claim are refused whole, with a message
/// naming what is wrong, and nothing of them is served or kept: a blob
/// altered in transit, a bundle cut short, a link, a file that is not a
/// tar, names with `..` or absolute. A stopped site's data directory takes a good bundle (`--data`).
#[tokio::test]
async fn bad_bundles_are_refused_and_a_data_directory_takes_a_good_one() {
    let up = Upstream::start(false);
    let layer = pattern(300_000, 5);
    let (app, _, layer_digest) = up.seed("library/app", "1", &layer).await;
    let a = up.mirror(&[]);
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.tar");
    let (code, out) = export(&a.addr, &["app:1", "-o", full.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let bytes = std::fs::read(&full).unwrap();

    // One byte of the layer changed.
    let at = bytes
        .windows(64)
        .position(|w| w == &layer[1000..1064])
        .unwrap();
    let mut tampered = bytes.clone();
    tampered[at] ^= 0xff;
    let tampered_tar = dir.path().join("tampered.tar");
    std::fs::write(&tampered_tar, &tampered).unwrap();
    // Cut in the middle of the layer.
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..at + 1000]).unwrap();
    // A link where index.json should be.
    let linked = dir.path().join("linked.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&linked).unwrap());
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        let mut h = tar::Header::new_ustar();
        h.set_size(layout.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "oci-layout", &layout[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "index.json", "/etc/passwd").unwrap();
        b.finish().unwrap();
    }
    // Entries named to land outside wherever a tar is unpacked.
    let escaping = |name: &str| {
        let path = dir.path().join(format!("escaping-{}.tar", name.len()));
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
        b.finish().unwrap();
        path
    };
    let dotdot = escaping("../../etc/cron.d/evil");
    let absolute = escaping("/etc/evil");
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, pattern(10_000, 1)).unwrap();

    let b = offline_site();
    for (bundle, says) in [
        (
            &tampered_tar,
            format!("blob {layer_digest}: its content hashes to"),
        ),
        (&cut, "cut short".to_string()),
        (
            &linked,
            "a link (\"index.json\" → \"/etc/passwd\")".to_string(),
        ),
        (&junk, "not a tar".to_string()),
        (
            &dotdot,
            "a path with .. (\"../../etc/cron.d/evil\")".to_string(),
        ),
        (&absolute, "an absolute path (\"/etc/evil\")".to_string()),
    ] {
        let (code, out) = import(&b.addr, bundle);
        assert_eq!(code, 1, "{}: {out}", bundle.display());
        assert!(out.contains(&says), "{}: {out}", bundle.display());
    }
    assert_ne!(
        Api::new(&b)
            .get("/v2/library/app/manifests/1")
            .await
            .status(),
        200
    );
    assert_eq!(stored_blobs(&b.data).await, 0, "nothing kept");

    // A large bundle refused early (its config, sent before its 48 MiB
    // layer, altered): the client, still sending, is told why.
    let (_, m, _) = up.seed("library/big", "1", &pattern(48 << 20, 7)).await;
    let config = serde_json::from_slice::<serde_json::Value>(&m).unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let big = dir.path().join("big.tar");
    let (code, out) = export(&a.addr, &["big:1", "-o", big.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let mut bytes = std::fs::read(&big).unwrap();
    let at = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().ends_with(&config[7..]))
        .unwrap()
        .raw_file_position() as usize;
    assert!(at < 1 << 20, "the config comes before the layer");
    bytes[at] ^= 0xff;
    std::fs::write(&big, &bytes).unwrap();
    let (code, out) = import(&b.addr, &big);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("import refused, nothing of it is served"),
        "{out}"
    );
    assert!(
        out.contains(&format!("blob {config}: its content hashes to")),
        "{out}"
    );

    // The good bundle into the data directory of a stopped site, which
    // then serves it offline.
    let (data, _tmp) = b.stop();
    let (code, out) = wharf_cli(&[
        "import",
        full.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 images, 1 manifests, 2 blobs"), "{out}");
    let b = Wharf::start_on(&data, offline_opts());
    assert_eq!(skopeo_pulled(&b.addr, "library/app:1"), app);
}
