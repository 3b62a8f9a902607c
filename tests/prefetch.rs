//! `wharf prefetch` against a running Wharf mirroring the counted test
//! upstream: an image and a two-platform index are prefetched, then the
//! upstream goes away and skopeo still pulls both through Wharf; a second
//! run fetches nothing; `--platform` takes one platform of the index; bad
//! input changes nothing.

mod common;
use common::upstream::{Faults, Upstream};
use common::*;
use std::process::Command;

/// `wharf prefetch ARGS --server http://ADDR`: exit code and output.
fn prefetch(addr: &str, args: &[&str]) -> (i32, String) {
    wharf_at(addr, "prefetch", args)
}

#[tokio::test]
async fn prefetched_images_pull_with_the_upstream_gone() {
    let up = Upstream::start(false);
    let (app, _, _) = up.seed("library/app", "1", b"app layer").await;
    let multi = seed_index(&up, "library/multi").await;
    let w = up.mirror(&[]);
    let addr = w.addr.to_string();

    up.reset();
    let (code, out) = prefetch(&addr, &["app:1", "docker.io/library/multi:1"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("prefetched 2 of 2 images (4 manifests, 6 blobs)"),
        "{out}"
    );
    assert!(out.contains("0 B already cached"), "{out}");
    assert_eq!(up.count("GET", "/blobs/"), 6, "each blob fetched once");

    // Again: all of it is cached now.
    up.reset();
    let (code, out) = prefetch(&addr, &["app:1", "multi:1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 B fetched from upstreams"), "{out}");
    assert_eq!(up.count("GET", "/blobs/"), 0);

    // The upstream goes away: skopeo pulls both, every platform.
    up.set_faults(Faults {
        refuse: true,
        ..Default::default()
    });
    for (image, digest) in [("library/app:1", &app), ("library/multi:1", &multi)] {
        assert_eq!(&skopeo_pulled(&addr, image), digest, "{image}");
    }
}

#[tokio::test]
async fn platforms_lists_and_bad_input() {
    let up = Upstream::start(false);
    seed_index(&up, "library/multi").await;
    let w = up.mirror(&[]);
    let addr = w.addr.to_string();

    // Nothing is fetched for bad input, and it says what is wrong.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("images.txt");
    std::fs::write(&list, "# bases\nmulti:1\nnot a reference\n").unwrap();
    up.reset();
    for (args, says) in [
        (vec!["--file", list.to_str().unwrap()], "line 3"),
        (vec!["multi:1", "--platform", "linux"], "--platform"),
        (vec!["Multi:1"], "not an image reference"),
        (vec![], "nothing to prefetch"),
    ] {
        let (code, out) = prefetch(&addr, &args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
    }
    assert_eq!(up.seen().len(), 0, "nothing reached the upstream");

    // One platform of the index, from a list file.
    std::fs::write(&list, "# bases\nmulti:1  # two platforms\n").unwrap();
    let (code, out) = prefetch(
        &addr,
        &[
            "--file",
            list.to_str().unwrap(),
            "--platform",
            "linux/arm64",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("prefetched 1 of 1 images (2 manifests, 2 blobs)"),
        "{out}"
    );

    // The reference registry has no referrers API: none found, no failure.
    let (code, out) = prefetch(&addr, &["multi:1", "--referrers"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("prefetched 1 of 1 images (3 manifests"),
        "{out}"
    );

    // An image the upstream does not have: a failure named, exit 1, and
    // the rest still fetched.
    let (code, out) = prefetch(&addr, &["nosuch:1", "multi:1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("prefetched 1 of 2 images"), "{out}");
    assert!(out.contains("failed: nosuch:1: "), "{out}");
    assert!(
        out.contains("failed nosuch:1"),
        "a log line per image: {out}"
    );
}

/// `--referrers` through a mirror whose upstream is another Wharf (which
/// has the referrers API; the reference registry does not): the
/// signature of an image is prefetched with it, and pulls with the
/// upstream gone.
#[tokio::test]
async fn referrers_come_along_when_asked() {
    let origin = Wharf::start();
    let api = Api::new(&origin);
    let (image, m, _) = push_image_of(&api, "golden/app", "1", b"{\"os\":\"linux\"}", b"app").await;
    let sig_layer = api.push_blob("golden/app", b"a signature").await;
    let empty = api.push_blob("golden/app", b"{}").await;
    let sig = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig_layer, "size": 11}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image, "size": m.len()},
    })
    .to_string();
    let sig_digest = sha256(sig.as_bytes());
    let r = api
        .put_manifest("golden/app", &sig_digest, OCI_MANIFEST, sig.as_bytes())
        .await;
    assert_eq!(r.status(), 201);

    let origin_addr = origin.addr.to_string();
    let mirror = Wharf::start_with(Opts {
        args: vec![
            "--upstream".into(),
            format!("origin.test={}", format!("http://{origin_addr}")),
        ],
        ..Default::default()
    });
    let addr = mirror.addr.to_string();
    let (code, out) = prefetch(&addr, &["origin.test/golden/app:1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(1 manifests, 2 blobs)"), "{out}");
    let (code, out) = prefetch(&addr, &["--referrers", "origin.test/golden/app:1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(2 manifests, 4 blobs)"), "{out}");
    drop(origin);
    let r = Api::new(&mirror)
        .get(&format!(
            "/v2/origin.test/golden/app/manifests/{sig_digest}"
        ))
        .await;
    assert_eq!(r.status(), 200, "the signature is cached");
    let r = Api::new(&mirror)
        .get(&format!("/v2/origin.test/golden/app/blobs/{sig_layer}"))
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"a signature");
}

/// A `[[prefetch]]` list in the config: the server pulls it through
/// itself at start-up (and then on its schedule), so the images pull with
/// the upstream gone without anyone having pulled them.
#[tokio::test]
async fn the_servers_own_lists_are_pulled_at_start() {
    let up = Upstream::start(false);
    let (app, _, _) = up.seed("library/app", "1", b"app layer").await;
    seed_index(&up, "library/multi").await;
    up.reset();
    let w = up.mirror_with(
        "\n[[prefetch]]\nimages = [\"app:1\", \"multi:1\"]\nevery = \"1h\"\nplatforms = [\"linux/amd64\"]\n",
        &[],
    );
    let done = wait_until(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || w.log().contains("prefetch list done"),
    )
    .await;
    assert!(done, "{}", w.log());
    // app (config, layer) and the amd64 image of the index (config, layer).
    assert_eq!(up.count("GET", "/blobs/"), 4, "{}", w.log());
    assert!(w.log().contains("images=2"), "{}", w.log());
    up.set_faults(Faults {
        refuse: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new(require("skopeo"))
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/library/app:1", w.addr))
        .arg(format!("dir:{}", tmp.path().display())));
    let got = sha256(&std::fs::read(tmp.path().join("manifest.json")).unwrap());
    assert_eq!(got, app);
}
