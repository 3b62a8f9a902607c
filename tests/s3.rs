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

/// Pushes `blob` to `repo` in one POST; returns the status.
async fn post_blob(api: &Api, repo: &str, blob: &[u8]) -> u16 {
    let d = sha256(blob);
    api.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Whether a one-POST push of `blob` goes through within ten seconds (a
/// store that just came back takes a moment to answer).
async fn pushes_again(api: &Api, repo: &str, blob: &[u8]) -> bool {
    for _ in 0..40 {
        if post_blob(api, repo, blob).await == 201 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
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
    // Four clients at once: one copies it into the local cache, all get
    // it whole and checked.
    let path = format!("/v2/golden/big/blobs/{big_digest}");
    let reads = (0..4).map(|_| {
        let (api, path) = (&api, path.clone());
        async move {
            let r = api.get(&path).await;
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }
    });
    for got in futures_util::future::join_all(reads).await {
        assert_eq!(sha256(&got), big_digest, "the layer read from the bucket");
    }
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
    // Found damaged, it is set aside: the blob is then simply missing.
    let quarantined = t.object(&format!(
        "quarantine/sha256-{}",
        ld.trim_start_matches("sha256:")
    ));
    let set_aside = || async {
        for _ in 0..100 {
            if client.head(&name).await.is_err() && client.head(&quarantined).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(set_aside().await, "the truncated object was set aside");
    assert_eq!(
        api.status("GET", &format!("/v2/golden/x/blobs/{ld}")).await,
        404
    );
    // Same size, one byte flipped: the body breaks off before its end.
    let mut flipped = layer.clone();
    flipped[12345] ^= 1;
    client.put(&name, PutPayload::from(flipped)).await.unwrap();
    let got = api.get(&format!("/v2/golden/x/blobs/{ld}")).await;
    assert!(
        got.bytes().await.is_err(),
        "an altered object ends its body with an error"
    );
    assert!(set_aside().await, "the altered object was set aside");
    // Emptied: not served as an empty blob.
    client.put(&name, PutPayload::default()).await.unwrap();
    assert_eq!(
        api.status("GET", &format!("/v2/golden/x/blobs/{ld}")).await,
        404,
        "an emptied object is not the blob"
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
    assert_eq!(post_blob(&api, "golden/new", b"new").await, 503);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    g.resume();
    // Back: the same push goes through.
    assert!(
        pushes_again(&api, "golden/new", b"new").await,
        "pushes work again once the store is back"
    );
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

/// Mirrored content lives in the bucket too: a new machine with an empty
/// data directory and no upstream still pulls the tag (the offline
/// fallback) and the layer, without asking anyone.
#[tokio::test]
async fn mirrored_tags_and_layers_survive_an_empty_data_directory() {
    let up = common::upstream::Upstream::start(false);
    let layer = pattern(2 << 20, 21);
    let (md, _, ld) = up.seed("library/offline", "v1", &layer).await;
    let t = garage::shared().target(&unique("mirror"));
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = up.mirror_opts(&[]);
    opts.s3 = Some(t.clone());
    let w = Wharf::start_on(&tmp.path().join("a"), opts);
    let api = Api::new(&w);
    let r = api.get("/v2/library/offline/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest").unwrap(), md);
    let r = api.get(&format!("/v2/library/offline/blobs/{ld}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), ld);
    // The fill's records reach the bucket with the next flush (a stop).
    w.stop();
    drop(up);

    let w = on(&t, &tmp.path().join("b"), &["--offline"]);
    let api = Api::new(&w);
    let r = api.get("/v2/library/offline/manifests/v1").await;
    assert_eq!(r.status(), 200, "{}", w.log());
    assert_eq!(header(&r, "docker-content-digest").unwrap(), md);
    let r = api.get(&format!("/v2/library/offline/blobs/{ld}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), ld);
    w.stop();
}

/// The store stops while a cache fill streams: the client still gets
/// verified bytes or an error, nothing is recorded as cached, and once
/// the store is back the next pull fills it properly.
#[tokio::test]
async fn the_store_stopping_mid_fill_commits_nothing() {
    let g = Garage::start();
    let t = g.target("midfill");
    let up = common::upstream::Upstream::start(false);
    let layer = pattern(6 << 20, 22);
    let (_, _, ld) = up.seed("library/fill", "v1", &layer).await;
    up.set_faults(common::upstream::Faults {
        slow_blobs: Some(Duration::from_millis(50)),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = up.mirror_opts(&[]);
    opts.s3 = Some(t.clone());
    let w = Wharf::start_on(&tmp.path().join("a"), opts);
    let api = Api::new(&w);
    let pull = {
        let url = api.url(&format!("/v2/library/fill/blobs/{ld}"));
        let http = api.http.clone();
        tokio::spawn(async move {
            match http.get(url).send().await {
                Ok(r) => r.bytes().await.map(|b| b.to_vec()).ok(),
                Err(_) => None,
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    g.stop();
    let got = pull.await.unwrap();
    if let Some(b) = &got {
        assert_eq!(sha256(b), ld, "whatever a client got whole is the blob");
    }
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            w.logged(&["blob fill failed"])
                || w.logged(&["cache fill", "not stored"])
                || w.logged(&["verified but not stored"])
        })
        .await,
        "the fill could not commit: {}",
        w.log()
    );
    g.resume();
    up.set_faults(Default::default());
    up.reset();
    let r = api.get(&format!("/v2/library/fill/blobs/{ld}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), ld);
    assert_eq!(
        up.count("GET", "/blobs/"),
        1,
        "nothing was cached: fetched again"
    );
    // The client's body ends once the bytes are verified; the commit
    // to the bucket follows.
    let mut committed = false;
    for _ in 0..100 {
        let names = objects(&t, "blobs/").await;
        if names
            .iter()
            .any(|n| n.ends_with(ld.trim_start_matches("sha256:")))
        {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(committed, "committed once the store is back");
    w.stop();
}

/// The store stops while a push streams its blob: the push fails cleanly
/// (nothing in the bucket), and the same push succeeds once it is back.
#[tokio::test]
async fn the_store_stopping_mid_push_commits_nothing() {
    let g = Garage::start();
    let t = g.target("midpush");
    let tmp = tempfile::tempdir().unwrap();
    let w = on(&t, &tmp.path().join("a"), &[]);
    let api = Api::new(&w);
    let blob = pattern(24 << 20, 23);
    let d = sha256(&blob);
    // The body arrives slowly; the store stops before it ends.
    let body = {
        let blob = blob.clone();
        futures_util::stream::iter(blob.chunks(1 << 20).map(|c| c.to_vec()).collect::<Vec<_>>())
            .then(|c| async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok::<_, std::io::Error>(c)
            })
    };
    use futures_util::StreamExt as _;
    let push = api
        .req("POST", &format!("/v2/golden/mid/blobs/uploads/?digest={d}"))
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        g.stop();
    };
    let (r, ()) = tokio::join!(push, stopper);
    let status = r.unwrap().status();
    assert_eq!(status, 503, "the push fails cleanly");
    g.resume();
    assert!(
        objects(&t, "blobs/").await.is_empty(),
        "nothing half-written in the bucket"
    );
    assert_eq!(
        api.status("HEAD", &format!("/v2/golden/mid/blobs/{d}"))
            .await,
        404
    );
    assert!(
        pushes_again(&api, "golden/mid", &blob).await,
        "the push works once the store is back"
    );

    // A chunked session: the store stops between two chunks. The chunk
    // sent meanwhile fails cleanly; the session keeps what was recorded
    // and finishes once the store is back.
    let (head, rest) = blob.split_at(6 << 20);
    let r = api
        .req("POST", "/v2/golden/mid/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let r = api
        .req("PATCH", &loc)
        .body(head.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    g.stop();
    let started = Instant::now();
    let r = api
        .req("PATCH", &loc)
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the chunk fails cleanly");
    assert!(started.elapsed() < Duration::from_secs(20), "and quickly");
    g.resume();
    // The 503 was sent before the chunk was read, so the connection it
    // came on closes; a request the client had queued on it may fail in
    // transport, which this loop rides over as it does a 503.
    let mut range = None;
    for _ in 0..40 {
        if let Ok(r) = api.req("GET", &loc).send().await {
            if r.status() == 204 {
                range = header(&r, "range");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(range, Some(format!("0-{}", head.len() - 1)));
    let r = api
        .req("PUT", &with_query(&loc, &format!("digest={d}")))
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        api.get(&format!("/v2/golden/mid/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap(),
        blob
    );
    w.stop();
}

/// A chunked push keeps its session in the bucket: it goes on through a
/// Wharf on another, empty data directory (and after a SIGKILL), chunks
/// of any size end up as parts of one upload, a wrong digest stores
/// nothing, and a finished or failed session leaves no object behind.
#[tokio::test]
async fn a_chunked_push_goes_on_from_an_empty_data_directory() {
    let t = garage::shared().target(&unique("chunked"));
    let tmp = tempfile::tempdir().unwrap();
    let w = on(&t, &tmp.path().join("a"), &[]);
    let api = Api::new(&w);
    let blob = pattern((23 << 20) + 12345, 3);
    let d = sha256(&blob);
    let w2 = on(&t, &tmp.path().join("b"), &[]);
    let api2 = Api::new(&w2);
    let patch = |api: &Api, loc: &str, from: usize, to: usize| {
        api.req("PATCH", loc)
            .header("content-range", format!("{from}-{}", to - 1))
            .body(blob[from..to].to_vec())
            .send()
    };
    let r = api
        .req("POST", "/v2/golden/chunked/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    // 3 MiB (too little for a part: the tail), then 4 more (a part of 7).
    for (from, to) in [(0, 3 << 20), (3 << 20, 7 << 20)] {
        let r = patch(&api, &loc, from, to).await.unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(header(&r, "range"), Some(format!("0-{}", to - 1)));
    }

    // Another machine (started before the session was), its data
    // directory empty, while the first runs.
    let r = api2.get(&loc).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), Some(format!("0-{}", (7 << 20) - 1)));
    let r = patch(&api2, &loc, 7 << 20, 16 << 20).await.unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    w.stop();
    let (_, _) = w2.kill();

    // And a third; the last chunk comes with the closing PUT.
    let w = on(&t, &tmp.path().join("c"), &[]);
    let api = Api::new(&w);
    let r = api
        .req("PUT", &with_query(&loc, &format!("digest={d}")))
        .header("content-range", format!("{}-{}", 16 << 20, blob.len() - 1))
        .body(blob[16 << 20..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let got = api
        .get(&format!("/v2/golden/chunked/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(got == blob, "the blob reads back whole");
    assert!(
        objects(&t, "uploads/").await.is_empty(),
        "nothing left of the session"
    );
    assert_eq!(api.status("GET", &loc).await, 404);

    // A wrong digest: refused, nothing stored, nothing left behind.
    let wrong = sha256(b"something else");
    let r = api
        .req("POST", "/v2/golden/chunked/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let r = patch(&api, &loc, 0, 12 << 20).await.unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .req("PUT", &with_query(&loc, &format!("digest={wrong}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let hex = wrong.trim_start_matches("sha256:");
    assert!(!objects(&t, "blobs/").await.iter().any(|o| o.ends_with(hex)));
    assert!(objects(&t, "uploads/").await.is_empty());

    // A tail changed behind Wharf's back is hashed as it is: the digest
    // the client computed no longer matches, and nothing is stored.
    let r = api
        .req("POST", "/v2/golden/chunked/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let small = &blob[..3 << 20];
    let r = patch(&api, &loc, 0, small.len()).await.unwrap();
    assert_eq!(r.status(), 202);
    let tails: Vec<_> = objects(&t, "uploads/")
        .await
        .into_iter()
        .filter(|o| o.contains("/tail-"))
        .collect();
    assert_eq!(tails.len(), 1, "{tails:?}");
    let mut altered = small.to_vec();
    altered[12345] ^= 1;
    t.client()
        .put(&t.object(&tails[0]), PutPayload::from(altered))
        .await
        .unwrap();
    let r = api
        .req(
            "PUT",
            &with_query(&loc, &format!("digest={}", sha256(small))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let hex = sha256(small);
    let hex = hex.trim_start_matches("sha256:");
    assert!(!objects(&t, "blobs/").await.iter().any(|o| o.ends_with(hex)));
    assert!(objects(&t, "uploads/").await.is_empty());

    // sha512 across parts: no saved hasher applies, the bytes are hashed
    // once from the completed upload.
    let d512 = {
        use sha2::Digest as _;
        format!(
            "sha512:{}",
            hex::encode(sha2::Sha512::digest(&blob[..12 << 20]))
        )
    };
    let r = api
        .req("POST", "/v2/golden/chunked/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let r = patch(&api, &loc, 0, 12 << 20).await.unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .req("PUT", &with_query(&loc, &format!("digest={d512}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let got = api
        .get(&format!("/v2/golden/chunked/blobs/{d512}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(got[..] == blob[..12 << 20]);
    assert!(objects(&t, "uploads/").await.is_empty());
    w.stop();
}

/// SIGKILL while 20 pushes run, then a new machine with an empty data
/// directory: every push that was acknowledged is whole.
#[tokio::test]
async fn every_acknowledged_push_survives_sigkill_and_an_empty_data_directory() {
    let t = garage::shared().target(&unique("sigkill"));
    let tmp = tempfile::tempdir().unwrap();
    let w = on(&t, &tmp.path().join("a"), &[]);
    let base = w.url("");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let acked = acked.clone();
        let api = Api::at(base.trim_start_matches("http://"));
        tasks.push(tokio::spawn(async move {
            let layer = pattern(1 << 20, i);
            let config = format!("{{\"push\":{i}}}");
            let (m, ld) = push_blobs_of_image(&api, "golden/many", config.as_bytes(), &layer).await;
            let tag = format!("t{i}");
            let r = api
                .req("PUT", &format!("/v2/golden/many/manifests/{tag}"))
                .header("content-type", OCI_MANIFEST)
                .body(m.clone())
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 201) {
                acked.lock().unwrap().push((tag, sha256(&m), ld, layer));
            }
        }));
    }
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(5), || {
            acked.lock().unwrap().len() >= 5
        })
        .await,
        "pushes are acknowledged"
    );
    w.kill();
    for task in tasks {
        let _ = task.await;
    }
    let acked = acked.lock().unwrap().clone();
    let w = on(&t, &tmp.path().join("b"), &[]);
    let api = Api::new(&w);
    for (tag, md, ld, layer) in &acked {
        let r = api.get(&format!("/v2/golden/many/manifests/{tag}")).await;
        assert_eq!(r.status(), 200, "{tag}");
        assert_eq!(header(&r, "docker-content-digest").unwrap(), *md);
        let got = api.get(&format!("/v2/golden/many/blobs/{ld}")).await;
        assert_eq!(&got.bytes().await.unwrap()[..], &layer[..], "{tag}'s layer");
    }
    println!(
        "{} of 20 pushes were acknowledged before SIGKILL; all intact",
        acked.len()
    );
    w.stop();
}

/// `wharf verify` and `wharf gc` work against the bucket.
#[tokio::test]
async fn verify_and_gc_work_against_the_bucket() {
    let t = garage::shared().target(&unique("maint"));
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a");
    let w = on(&t, &data, &[]);
    let api = Api::new(&w);
    push_image(&api, "golden/kept", "v1", "kept").await;
    let orphan = api.push_blob("golden/kept", b"orphaned soon").await;
    let r = api
        .req("DELETE", &format!("/v2/golden/kept/blobs/{orphan}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    w.stop();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(args)
            .arg("--data")
            .arg(tmp.path().join("maint"))
            .args(t.args())
            .env_clear()
            .envs(t.env())
            .env("WHARF_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = cli(&["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 corrupt"), "{out}");
    // One object altered behind Wharf's back: verify finds it.
    let client = t.client();
    let name = t.object(&format!(
        "blobs/sha256/{}",
        orphan.trim_start_matches("sha256:")
    ));
    client
        .put(&name, PutPayload::from_static(b"orphaned, and changed"))
        .await
        .unwrap();
    let (code, out) = cli(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("corrupt: {orphan}")), "{out}");
    client
        .put(&name, PutPayload::from_static(b"orphaned soon"))
        .await
        .unwrap();
    let (code, out) = cli(&["gc", "--grace", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("removed {orphan}")), "{out}");
    assert!(client.head(&name).await.is_err(), "gone from the bucket");
    let w = on(&t, &tmp.path().join("b"), &[]);
    assert_eq!(
        Api::new(&w)
            .status("GET", "/v2/golden/kept/manifests/v1")
            .await,
        200,
        "gc kept what a manifest references"
    );
    w.stop();
}

/// A data directory is refused by the backend it does not belong to: an
/// fs store's content is only there (the S3 local cache would evict it),
/// and an S3 cache lacks most blobs (fs would serve 404s).
#[test]
fn a_data_directory_of_the_other_backend_is_refused() {
    let t = garage::shared().target(&unique("kinds"));
    let tmp = tempfile::tempdir().unwrap();
    let serve = |data: &std::path::Path, s3: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_clear();
        if s3 {
            cmd.args(t.args()).envs(t.env());
        }
        cmd
    };
    // An fs store with a pushed image, then s3 on it.
    let fs_data = tmp.path().join("fs");
    let w = Wharf::start_on(&fs_data, Opts::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(push_image(&Api::new(&w), "golden/only-here", "v1", "fs"));
    w.stop();
    let out = serve(&fs_data, true).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("holds a --storage fs store"),
        "{err}"
    );
    // An s3 cache, then fs on it.
    let s3_data = tmp.path().join("s3");
    let w = on(&t, &s3_data, &[]);
    w.stop();
    let out = serve(&s3_data, false).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is the local cache of"),
        "{err}"
    );
}

/// A change the bucket did not get (it was down) is not forgotten: the
/// next run sends it, so the bucket never disagrees with what was served.
#[tokio::test]
async fn changes_made_while_the_store_was_down_reach_it_later() {
    let g = Garage::start();
    let t = g.target("dirty");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a");
    let w = on(&t, &data, &[]);
    let api = Api::new(&w);
    push_image(&api, "golden/app", "v1", "one").await;
    push_image(&api, "golden/app", "v2", "two").await;
    g.stop();
    // The index takes the delete, the bucket cannot: 503.
    let r = api
        .req("DELETE", "/v2/golden/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    w.stop();
    g.resume();
    let w = on(&t, &data, &[]);
    let api = Api::new(&w);
    assert_eq!(api.status("GET", "/v2/golden/app/manifests/v1").await, 404);
    // Any flush sends what is pending, the delete included.
    push_image(&api, "golden/other", "v1", "three").await;
    w.stop();
    let w = on(&t, &tmp.path().join("b"), &[]);
    let api = Api::new(&w);
    assert_eq!(api.status("GET", "/v2/golden/app/manifests/v1").await, 404);
    assert_eq!(api.status("GET", "/v2/golden/app/manifests/v2").await, 200);
    assert_eq!(
        api.status("GET", "/v2/golden/other/manifests/v1").await,
        200
    );
    w.stop();
}

/// --local-cache-size bounds the blob files of the data directory; what
/// left it still pulls, from the bucket.
#[tokio::test]
async fn the_local_cache_stays_within_its_size() {
    let t = garage::shared().target(&unique("local-size"));
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a");
    let w = on(&t, &data, &["--local-cache-size", "2MiB"]);
    let api = Api::new(&w);
    let mut layers = Vec::new();
    for i in 0..6u8 {
        let layer = pattern(700 << 10, 40 + i);
        let d = api.push_blob("golden/big", &layer).await;
        layers.push((d, layer));
    }
    for (d, layer) in &layers {
        let got = api.get(&format!("/v2/golden/big/blobs/{d}")).await;
        assert_eq!(&got.bytes().await.unwrap()[..], &layer[..]);
    }
    fn files_bytes(dir: &std::path::Path) -> u64 {
        let mut n = 0;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let m = e.metadata().unwrap();
                n += if m.is_dir() {
                    files_bytes(&e.path())
                } else {
                    m.len()
                };
            }
        }
        n
    }
    let mut within = false;
    for _ in 0..50 {
        if files_bytes(&data.join("blobs")) <= 2 << 20 {
            within = true;
            break;
        }
        // A read or write runs the cache's pending evictions.
        let _ = api
            .get(&format!("/v2/golden/big/blobs/{}", layers[0].0))
            .await
            .bytes()
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        within,
        "{} bytes of blob files",
        files_bytes(&data.join("blobs"))
    );
    w.stop();
}

/// When each blob was last used goes to the bucket in batches, so a new
/// data directory keeps it (eviction's order, the UI's "last pulled").
#[tokio::test]
async fn access_times_survive_an_empty_data_directory() {
    let t = garage::shared().target(&unique("access"));
    let tmp = tempfile::tempdir().unwrap();
    let w = on(&t, &tmp.path().join("a"), &[]);
    let api = Api::new(&w);
    push_image(&api, "golden/used", "v1", "used").await;
    push_image(&api, "golden/unused", "v1", "unused").await;
    // A pull a moment after the push (a use within a second is the push).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(api.status("GET", "/v2/golden/used/manifests/v1").await, 200);
    w.stop();
    assert!(
        !objects(&t, "access/").await.is_empty(),
        "a batch in the bucket"
    );

    let w = on(&t, &tmp.path().join("b"), &[]);
    let api = Api::new(&w);
    let pulled = |repo: &'static str| {
        let api = &api;
        async move {
            let v = api.json(&format!("/api/v1/repositories/{repo}/tags")).await;
            v["tags"][0]["last_pulled"].clone()
        }
    };
    assert!(
        pulled("golden/used").await.is_string(),
        "the pull is remembered"
    );
    assert!(pulled("golden/unused").await.is_null());
    w.stop();
}
