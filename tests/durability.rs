//! The store survives what operators do to it: a graceful restart, a
//! SIGKILL in the middle of uploads, and a 1 GiB blob pushed and pulled
//! through a server that stays small in memory.

mod common;
use bytes::Bytes;
use common::*;
use futures_util::{stream, StreamExt};
use sha2::{Digest as _, Sha256};
use std::time::Duration;

/// Deterministic 1 MiB chunks: chunk `i` is a fixed pattern stamped with `i`.
fn chunk(i: u64) -> Bytes {
    let mut v: Vec<u8> = (0..1024 * 1024u32)
        .map(|j| (j.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

fn chunks(from: u64, to: u64) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let base = chunk(0);
    stream::iter(from..to).map(move |i| {
        let mut v = base.to_vec();
        v[..8].copy_from_slice(&i.to_le_bytes());
        Ok(Bytes::from(v))
    })
}

fn digest_of_chunks(n: u64) -> String {
    let mut h = Sha256::new();
    for i in 0..n {
        h.update(chunk(i));
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

#[tokio::test]
async fn everything_survives_a_graceful_restart() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let d = push_image(&api, "golden/keep", "v1", "keep").await;
    let manifest = api
        .get("/v2/golden/keep/manifests/v1")
        .await
        .bytes()
        .await
        .unwrap();
    let r = api
        .req("POST", "/v2/golden/keep/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    api.req("PATCH", &loc)
        .body("first half,")
        .send()
        .await
        .unwrap();

    let (data, tmp) = w.stop();
    let w = Wharf::start_on(&data, Opts::default());
    let _tmp = tmp;
    let api = Api::new(&w);
    let r = api.get("/v2/golden/keep/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(d.clone()));
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        api.status("GET", &format!("/v2/golden/keep/blobs/{layer}"))
            .await,
        200
    );
    let tags: serde_json::Value = api
        .get("/v2/golden/keep/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    // The upload session carries on where it was.
    let r = api.get(&loc).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-10"));
    let whole = sha256(b"first half,second half");
    let r = api
        .req("PUT", &with_query(&loc, &format!("digest={whole}")))
        .body("second half")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn sigkill_mid_upload_leaves_a_consistent_store() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let d = push_image(&api, "golden/safe", "v1", "safe").await;

    // A streamed PATCH and a one-shot POST, both stalled half way.
    let r = api
        .req("POST", "/v2/golden/big/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let total = 64u64;
    let full_digest = digest_of_chunks(total);
    let stalled =
        |from: u64, to: u64| reqwest::Body::wrap_stream(chunks(from, to).chain(stream::pending()));
    let patch = api.req("PATCH", &loc).body(stalled(0, 24)).send();
    let post = api
        .req(
            "POST",
            &format!("/v2/golden/big/blobs/uploads/?digest={full_digest}"),
        )
        .body(stalled(0, 16))
        .send();
    // On S3 the session's bytes reach the bucket a part (8 MiB) at a time.
    let stored_enough = if on_s3() { 16 << 20 } else { 20 << 20 };
    let waiter = async {
        // Wait until both bodies are mostly stored, then kill.
        for _ in 0..200 {
            let up = upload_stored(&w, &loc).await;
            let tmp = dir_bytes(&w.data.join("tmp"));
            if up >= stored_enough && tmp >= 12 << 20 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("uploads did not progress");
    };
    tokio::select! {
        _ = patch => panic!("stalled PATCH finished"),
        _ = post => panic!("stalled POST finished"),
        _ = waiter => {}
    }
    let (data, tmp) = w.kill();
    let _tmp = tmp;

    let w = Wharf::start_on(&data, Opts::default());
    let api = Api::new(&w);
    assert_eq!(
        files_under(&data.join("tmp")),
        0,
        "temp files are removed at start-up"
    );
    // The half-sent blob does not exist, in any repository.
    assert_eq!(
        api.status("HEAD", &format!("/v2/golden/big/blobs/{full_digest}"))
            .await,
        404
    );
    let hex = full_digest.trim_start_matches("sha256:");
    assert!(!data.join("blobs/sha256").join(&hex[..2]).join(hex).exists());
    // What was acknowledged is intact.
    assert_eq!(
        api.status("GET", &format!("/v2/golden/safe/manifests/{d}"))
            .await,
        200
    );

    // The session reports how much arrived; the client resumes from there.
    let r = api.get(&loc).await;
    assert_eq!(r.status(), 204);
    let range = header(&r, "range").unwrap();
    let have: u64 = range.split('-').nth(1).unwrap().parse::<u64>().unwrap() + 1;
    assert!(have >= stored_enough, "offset {have}");
    // Send the rest from a chunk boundary: first trim to it by re-uploading
    // the partial chunk's tail.
    let mib = 1u64 << 20;
    let next_chunk = have.div_ceil(mib);
    let tail_of_partial: Vec<u8> = chunk(have / mib)[(have % mib) as usize..].to_vec();
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from(tail_of_partial))])
        .chain(chunks(next_chunk, total));
    let body = if have % mib == 0 {
        reqwest::Body::wrap_stream(chunks(have / mib, total))
    } else {
        reqwest::Body::wrap_stream(body)
    };
    let r = api.req("PATCH", &loc).body(body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .req(
            "PUT",
            &with_query(&location(&r), &format!("digest={full_digest}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = api
        .get(&format!("/v2/golden/big/blobs/{full_digest}"))
        .await;
    let mut h = Sha256::new();
    let mut s = r.bytes_stream();
    while let Some(b) = s.next().await {
        h.update(b.unwrap());
    }
    assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), full_digest);
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Pushes and pulls a 1 GiB blob and checks the server's peak resident
/// memory stays well under 100 MiB: bodies are streamed, never buffered.
#[tokio::test]
async fn one_gib_blob_streams_in_bounded_memory() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let n = 1024u64;
    let d = digest_of_chunks(n);
    let r = api
        .req("POST", "/v2/golden/huge/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let r = api
        .req("PATCH", &location(&r))
        .body(reqwest::Body::wrap_stream(chunks(0, n)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = api
        .req("PUT", &with_query(&location(&r), &format!("digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let r = api.get(&format!("/v2/golden/huge/blobs/{d}")).await;
    assert_eq!(header(&r, "content-length"), Some((n << 20).to_string()));
    let mut h = Sha256::new();
    let mut got = 0u64;
    let mut s = r.bytes_stream();
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        got += b.len() as u64;
        h.update(&b);
    }
    assert_eq!(got, n << 20);
    assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), d);
    let peak = w.peak_rss();
    println!(
        "peak resident memory of wharf after a 1 GiB push and pull: {} MiB",
        peak >> 20
    );
    assert!(peak < 100 << 20, "peak RSS {} MiB", peak >> 20);
}

/// SIGTERM while a body is still arriving: the request finishes and is
/// answered, then the server exits cleanly, and the blob is there after
/// the restart.
#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let n = 8u64;
    let d = digest_of_chunks(n);
    let slow = chunks(0, n).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c
    });
    let pid = w.pid();
    let upload = api
        .req(
            "POST",
            &format!("/v2/golden/slow/blobs/uploads/?digest={d}"),
        )
        .body(reqwest::Body::wrap_stream(slow))
        .send();
    let term = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        signal(pid, "TERM");
    };
    let (r, ()) = tokio::join!(upload, term);
    assert_eq!(r.unwrap().status(), 201);
    let (data, tmp) = w.stop();
    let _tmp = tmp;
    let w = Wharf::start_on(&data, Opts::default());
    assert_eq!(
        Api::new(&w)
            .status("HEAD", &format!("/v2/golden/slow/blobs/{d}"))
            .await,
        200
    );
}

/// Idle upload sessions expire and their bytes are deleted.
#[tokio::test]
async fn idle_uploads_expire() {
    let w = Wharf::start_with(Opts {
        args: vec!["--upload-timeout".into(), "1s".into()],
        ..Default::default()
    });
    let api = Api::new(&w);
    let r = api
        .req("POST", "/v2/golden/idle/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    api.req("PATCH", &loc)
        .body("some bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status("GET", &loc).await, 204);
    let start = std::time::Instant::now();
    while api.status("GET", &loc).await != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "session did not expire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(files_under(&w.data.join("uploads")), 0);
}
