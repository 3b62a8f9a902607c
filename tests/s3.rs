//! `--storage s3` against a real Garage: the bucket holds everything, the
//! data directory is a cache (deleting it loses nothing), objects are
//! written only once verified, an object altered behind Wharf's back is
//! never served, and an unreachable store gives quick 503s while what the
//! local cache holds still pulls. Start-up says what is wrong with a bad
//! bucket setting.

mod common;

use common::garage::{self, Garage, S3Target};
use common::*;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::time::{Duration, Instant};

fn on(target: &S3Target, data: &std::path::Path, args: &[&str]) -> Wharf {
    Wharf::start_on(
        data,
        Opts {
            s3: Some(target.clone()),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    )
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Lists the object names under the target's prefix (without it).
async fn objects(t: &S3Target, dir: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let client = t.client();
    let prefix = t.object(dir.trim_end_matches('/'));
    let listed: Vec<_> = client.list(Some(&prefix)).try_collect().await.unwrap();
    listed
        .into_iter()
        .map(|m| {
            m.location
                .as_ref()
                .strip_prefix(&t.prefix)
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn an_empty_data_directory_serves_everything_from_the_bucket() {
    let t = garage::shared().target(&unique("empty-dir"));
    let tmp = tempfile::tempdir().unwrap();
    let w = on(&t, &tmp.path().join("a"), &[]);
    let api = Api::new(&w);
    // A small image, and a 40 MiB layer (uploaded in parts).
    let small = push_image(&api, "golden/app", "v1", "s3").await;
    let big_layer = pattern(40 << 20, 7);
    let (big, _, big_digest) =
        push_image_of(&api, "golden/big", "v2", b"{\"big\":true}", &big_layer).await;
    w.stop();

    let names = objects(&t, "blobs/").await;
    assert!(
        names
            .iter()
            .any(|n| n.ends_with(big_digest.trim_start_matches("sha256:"))),
        "the layer is in the bucket: {names:?}"
    );
    assert!(!objects(&t, "index/").await.is_empty());

    // A new machine: an empty data directory, the same bucket.
    let w = on(&t, &tmp.path().join("b"), &[]);
    let api = Api::new(&w);
    let r = api
        .req("GET", "/v2/golden/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), small);
    let r = api.get("/v2/golden/big/manifests/v2").await;
    assert_eq!(header(&r, "docker-content-digest").unwrap(), big);
    let r = api.get(&format!("/v2/golden/big/blobs/{big_digest}")).await;
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(sha256(&got), big_digest, "the layer read from the bucket");
    // A range of a blob the local cache now holds, and of one it lacks.
    let r = api
        .req("GET", &format!("/v2/golden/big/blobs/{big_digest}"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &big_layer[100..200]);
    let catalog = api.json("/v2/_catalog").await;
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["golden/app", "golden/big"])
    );
    let tags = api.json("/v2/golden/app/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    // Deletes reach the bucket too.
    let r = api
        .req("DELETE", "/v2/golden/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    w.stop();
    let w = on(&t, &tmp.path().join("c"), &[]);
    assert_eq!(
        Api::new(&w)
            .status("GET", "/v2/golden/app/manifests/v1")
            .await,
        404
    );
    w.stop();
}

#[tokio::test]
async fn an_object_altered_behind_wharfs_back_is_never_served() {
    let t = garage::shared().target(&unique("altered"));
    let tmp = tempfile::tempdir().unwrap();
    let w = on(&t, &tmp.path().join("a"), &[]);
    let api = Api::new(&w);
    let layer = pattern(3 << 20, 9);
    let (_, _, ld) = push_image_of(&api, "golden/x", "v1", b"{}", &layer).await;
    w.stop();
    let client = t.client();
    let name = t.object(&format!(
        "blobs/sha256/{}",
        ld.trim_start_matches("sha256:")
    ));
    // Truncated: the recorded size no longer matches.
    client
        .put(&name, PutPayload::from(layer[..layer.len() / 2].to_vec()))
        .await
        .unwrap();
    let w = on(&t, &tmp.path().join("b"), &[]);
    let api = Api::new(&w);
    let got = api.get(&format!("/v2/golden/x/blobs/{ld}")).await;
    let complete = match got.bytes().await {
        Ok(b) => sha256(&b) == ld,
        Err(_) => false,
    };
    assert!(!complete, "a truncated object is not served as the blob");
    // Same size, one byte flipped: the body breaks off before its end.
    let mut flipped = layer.clone();
    flipped[12345] ^= 1;
    client.put(&name, PutPayload::from(flipped)).await.unwrap();
    let got = api.get(&format!("/v2/golden/x/blobs/{ld}")).await;
    assert!(
        got.bytes().await.is_err(),
        "an altered object ends its body with an error"
    );
    // Put back, it is served again (and was never kept locally meanwhile).
    client
        .put(&name, PutPayload::from(layer.clone()))
        .await
        .unwrap();
    let got = api.get(&format!("/v2/golden/x/blobs/{ld}")).await;
    assert_eq!(sha256(&got.bytes().await.unwrap()), ld);
    w.stop();
}

#[tokio::test]
async fn an_unreachable_store_gives_quick_503s_and_the_local_cache_still_pulls() {
    let g = Garage::start();
    let t = g.target("outage");
    let tmp = tempfile::tempdir().unwrap();
    let w = on(&t, &tmp.path().join("a"), &[]);
    let api = Api::new(&w);
    let pushed = push_image(&api, "golden/kept", "v1", "outage").await;
    g.stop();
    // Cached locally: still pulls.
    let r = api.get("/v2/golden/kept/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), pushed);
    // A push needs the bucket: a quick 503, nothing half-done.
    let started = Instant::now();
    let r = api
        .req(
            "POST",
            &format!("/v2/golden/new/blobs/uploads/?digest={}", sha256(b"new")),
        )
        .body(b"new".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    g.resume();
    // Back: the same push goes through.
    let ok = async {
        for _ in 0..40 {
            let r = api
                .req(
                    "POST",
                    &format!("/v2/golden/new/blobs/uploads/?digest={}", sha256(b"new")),
                )
                .body(b"new".to_vec())
                .send()
                .await
                .unwrap();
            if r.status() == 201 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    };
    assert!(ok.await, "pushes work again once the store is back");
    w.stop();
}

#[test]
fn start_up_says_what_is_wrong_with_the_bucket() {
    let g = garage::shared();
    let tmp = tempfile::tempdir().unwrap();
    let start = |t: &S3Target| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(tmp.path())
            .args(t.args())
            .env_clear()
            .envs(t.env())
            .output()
            .unwrap();
        assert!(!out.status.success(), "wharf started with {t:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut t = g.target("startup");
    t.secret = "0".repeat(64);
    let err = start(&t);
    assert!(err.contains("credentials were refused"), "{err}");
    assert!(
        !err.contains(&"0".repeat(64)),
        "the secret is not printed: {err}"
    );
    let mut t = g.target("startup");
    t.bucket = "no-such-bucket".into();
    let err = start(&t);
    assert!(err.contains("does not exist"), "{err}");
    let mut t = g.target("startup");
    t.endpoint = "http://127.0.0.1:9".into();
    let err = start(&t);
    assert!(err.contains("cannot be reached"), "{err}");
}
