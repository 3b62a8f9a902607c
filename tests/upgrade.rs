//! Upgrades: a data directory written by an earlier Wharf keeps serving
//! what it held. `tests/fixtures/layout1-data.tar.gz` is a data directory
//! a Wharf before index layout 2 wrote (a local image with a referrer, a
//! mirrored image and its tag), made by `make_layout1_fixture` below with
//! that build; this build migrates its index at start-up.

mod common;

use common::upstream::Upstream;
use common::{
    fs_only, layout::write_oci_layout, require, run, sha256, wharf_cli, Api, Opts, Wharf,
    OCI_MANIFEST,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn skopeo() -> Command {
    let mut c = Command::new(require("skopeo"));
    c.args(["--insecure-policy"]);
    c
}

/// Copies `reference` out of Wharf into an OCI layout (every blob comes
/// through); returns the digest of the manifest Wharf serves (skopeo may
/// rewrite the one it stores).
fn pull(w: &Wharf, reference: &str, into: &Path) -> String {
    let source = format!("docker://{}/{reference}", w.addr);
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(&source)
        .arg(format!("oci:{}:x", into.display())));
    let raw = run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&source));
    sha256(raw.strip_suffix('\n').unwrap_or(&raw).as_bytes())
}

/// Copies the OCI layout at `src` (tag `tag`) into Wharf as `reference`.
fn push(w: &Wharf, src: &Path, tag: &str, reference: &str) {
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", src.display()))
        .arg(format!("docker://{}/{reference}", w.addr)));
}

/// What the fixture holds, as its maker wrote it down.
fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("layout1-data.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn a_data_directory_from_before_index_layout_2_serves_the_same() {
    if !fs_only("the fixture is a filesystem data directory") {
        return;
    }
    let want = expected();
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(fixtures().join("layout1-data.tar.gz"))
        .arg("-C")
        .arg(tmp.path()));
    let data = tmp.path().join("data");

    // docker.io is a closed port (the harness's default): the mirrored
    // image comes from the cache, its tag from the migrated record.
    let w = Wharf::start_on(&data, Opts::default());
    assert!(w.logged(&["index migrated to layout 2"]), "{}", w.log());
    let app = pull(&w, "golden/app:v1", &tmp.path().join("app"));
    assert_eq!(app, want["local"].as_str().unwrap());
    let alpine = pull(&w, "library/alpine:3.20", &tmp.path().join("alpine"));
    assert_eq!(alpine, want["mirrored"].as_str().unwrap());

    let api = Api::new(&w);
    let refs = api.json(&format!("/v2/golden/app/referrers/{app}")).await;
    assert_eq!(refs["manifests"][0]["digest"], want["referrer"]);
    let catalog = api.json("/v2/_catalog").await;
    assert_eq!(catalog["repositories"], json!(["golden/app"]));

    // It takes pushes as before, and a restart does not migrate again.
    let src = tmp.path().join("v2");
    let v2 = write_oci_layout(&src, "v2", 1);
    push(&w, &src, "v2", "golden/app:v2");
    w.stop();
    let w = Wharf::start_on(&data, Opts::default());
    assert!(!w.logged(&["layout 1"]), "{}", w.log());
    let tags = Api::new(&w).json("/v2/golden/app/tags/list").await;
    assert_eq!(tags["tags"], json!(["v1", "v2"]));
    assert_eq!(pull(&w, "golden/app:v2", &tmp.path().join("v2-back")), v2);
    w.stop();

    // Every blob is as it was stored (verify hashes them all), and the
    // old index directory is gone: a file stands in its place, which
    // keeps older builds from starting here.
    assert!(data.join("index").is_file() && data.join("index.v2").is_dir());
    assert!(!data.join("index.layout1").exists());
    let (code, out) = wharf_cli(&["verify", "--data", &data.display().to_string()]);
    assert_eq!(code, 0, "{out}");
}

/// Writes the fixture with the build in `WHARF_TEST_BIN` (one from before
/// index layout 2, e.g. commit 54552ba):
/// `WHARF_TEST_BIN=/path/to/old/wharf cargo test --test upgrade -- --ignored`.
#[tokio::test]
#[ignore]
async fn make_layout1_fixture() {
    assert!(
        std::env::var("WHARF_TEST_BIN").is_ok(),
        "set WHARF_TEST_BIN to a wharf from before index layout 2"
    );
    let up = Upstream::start(false);
    let layer = common::pattern(3000, 7);
    let (mirrored, _, _) = up.seed("library/alpine", "3.20", &layer).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let w = Wharf::start_on(&data, up.mirror_opts(&[]));
    assert_eq!(
        pull(&w, "library/alpine:3.20", &tmp.path().join("m")),
        mirrored
    );

    let src = tmp.path().join("src");
    let local = write_oci_layout(&src, "v1", 2);
    push(&w, &src, "v1", "golden/app:v1");
    // A signature-like artifact whose subject is the image.
    let api = Api::new(&w);
    let empty = api.push_blob("golden/app", b"{}").await;
    let sig = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": local, "size": std::fs::metadata(src.join("blobs/sha256").join(local.trim_start_matches("sha256:"))).unwrap().len()},
    })
    .to_string();
    let r = api
        .put_manifest(
            "golden/app",
            &sha256(sig.as_bytes()),
            OCI_MANIFEST,
            sig.as_bytes(),
        )
        .await;
    assert_eq!(r.status(), 201);
    w.stop();

    let out = fixtures();
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "-czf",
        ])
        .arg(out.join("layout1-data.tar.gz"))
        .arg("-C")
        .arg(tmp.path())
        .arg("data"));
    let facts = json!({"local": local, "mirrored": mirrored, "referrer": sha256(sig.as_bytes())});
    std::fs::write(out.join("layout1-data.json"), format!("{facts:#}\n")).unwrap();
}
