//! Blob and upload endpoints, driven over HTTP against a real server:
//! monolithic, single-POST, chunked and streamed uploads, resumption from a
//! stale Location, cancel, mount, ranges, HEAD, and digest checks.

mod common;
use common::*;

#[tokio::test]
async fn base_endpoint_and_version_header() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let r = api.get("/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    let r = api.get("/v2/nope/blobs/sha256:abc").await;
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn monolithic_push_then_get_head_and_ranges() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = api.push_blob("golden/app", &bytes).await;
    let path = format!("/v2/golden/app/blobs/{d}");

    let r = api.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(header(&r, "content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap(), bytes);

    let r = api.req("HEAD", &path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("100000"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );

    let r = api
        .req("GET", &path)
        .header("range", "bytes=99990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes 99990-99999/100000")
    );
    assert_eq!(r.bytes().await.unwrap(), bytes[99990..]);

    let r = api
        .req("GET", &path)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), bytes[10..20]);

    let r = api
        .req("GET", &path)
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "multi-range gets the whole body");
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);

    let r = api
        .req("GET", &path)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes */100000")
    );

    let r = api
        .req("GET", &path)
        .header("range", "bytes=500-0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416, "last byte before the first");

    let r = api
        .req("GET", &path)
        .header("if-none-match", format!("\"{d}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Another repository cannot see the blob until it is mounted.
    assert_eq!(
        api.status("HEAD", &format!("/v2/golden/other/blobs/{d}"))
            .await,
        404
    );
    let r = api.get(&format!("/v2/golden/other/blobs/{d}")).await;
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn single_post_with_digest() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let d = sha256(b"one shot");
    let r = api
        .req("POST", &format!("/v2/golden/a/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body("one shot")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("/v2/golden/a/blobs/{d}"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        api.get(&format!("/v2/golden/a/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap(),
        "one shot"
    );

    let r = api
        .req(
            "POST",
            &format!("/v2/golden/a/blobs/uploads/?digest={}", sha256(b"other")),
        )
        .body("one shot")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn chunked_upload_with_out_of_order_chunk_and_stale_location() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = api
        .req("POST", "/v2/golden/c/blobs/uploads/")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let first = location(&r);
    assert!(header(&r, "docker-upload-uuid").is_some());

    let patch = |loc: String, from: usize, to: usize| {
        let chunk = data[from..to].to_vec();
        api.req("PATCH", &loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", from, to - 1))
            .header("content-length", chunk.len().to_string())
            .body(chunk)
            .send()
    };
    let r = patch(first.clone(), 0, 1000).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-999"));
    let second = location(&r);

    // Out of order: 416, and the session is unharmed.
    let r = patch(second.clone(), 1500, 2000).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").as_deref(), Some("0-999"));

    // The original Location still reports the true offset.
    let r = api.get(&first).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-999"));
    let r = patch(first.clone(), 0, 1000).await.unwrap();
    assert_eq!(
        r.status(),
        416,
        "re-sending the first chunk is out of order"
    );

    let r = patch(second, 1000, 2000).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-1999"));
    let loc = location(&r);

    // The closing PUT carries the last chunk.
    let d = sha256(&data);
    let r = api
        .req("PUT", &with_query(&loc, &format!("digest={d}")))
        .header("content-range", "2000-2999")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(
        api.get(&format!("/v2/golden/c/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap(),
        data
    );
    // The session is gone.
    let r = api.get(&first).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn streamed_patch_without_content_range_then_empty_put() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let r = api
        .req("POST", "/v2/golden/s/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..50).map(|i| Ok(vec![i as u8; 10_000])).collect();
    let all: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().unwrap().clone())
        .collect();
    let r = api
        .req("PATCH", &loc)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-499999"));
    let d = sha256(&all);
    let r = api
        .req("PUT", &with_query(&location(&r), &format!("digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("/v2/golden/s/blobs/{d}"));
}

#[tokio::test]
async fn digest_mismatch_discards_the_upload_and_stores_nothing() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let r = api
        .req("POST", "/v2/golden/m/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let wrong = sha256(b"something else");
    let r = api
        .req("PUT", &with_query(&loc, &format!("digest={wrong}")))
        .body("actual")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(api.status("GET", &loc).await, 404, "session discarded");
    assert_eq!(
        api.status("HEAD", &format!("/v2/golden/m/blobs/{wrong}"))
            .await,
        404
    );
    assert_eq!(
        api.status("HEAD", &format!("/v2/golden/m/blobs/{}", sha256(b"actual")))
            .await,
        404
    );
    assert_eq!(
        std::fs::read_dir(w.data.join("uploads")).unwrap().count(),
        0
    );
    assert_eq!(std::fs::read_dir(w.data.join("tmp")).unwrap().count(), 0);

    // PUT without a digest parameter.
    let r = api
        .req("POST", "/v2/golden/m/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let r = api
        .req("PUT", &location(&r))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn cancel_upload() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let r = api
        .req("POST", "/v2/golden/x/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    api.req("PATCH", &loc).body("partial").send().await.unwrap();
    assert_eq!(api.status("DELETE", &loc).await, 204);
    let r = api.get(&loc).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        std::fs::read_dir(w.data.join("uploads")).unwrap().count(),
        0
    );
    // A session belongs to its repository.
    let r = api
        .req("POST", "/v2/golden/x/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let id = location(&r).rsplit('/').next().unwrap().to_string();
    assert_eq!(
        api.status("GET", &format!("/v2/golden/y/blobs/uploads/{id}"))
            .await,
        404
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let d = api.push_blob("golden/src", b"shared layer").await;
    let r = api
        .req(
            "POST",
            &format!("/v2/golden/dst/blobs/uploads/?mount={d}&from=golden/src"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("/v2/golden/dst/blobs/{d}"));
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d.as_str())
    );
    assert_eq!(
        api.status("GET", &format!("/v2/golden/dst/blobs/{d}"))
            .await,
        200
    );

    // Without `from` nothing is mounted from another repository: a session
    // starts instead, so digests cannot be used to peek across repositories.
    let r = api
        .req("POST", &format!("/v2/golden/dst2/blobs/uploads/?mount={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        api.status("HEAD", &format!("/v2/golden/dst2/blobs/{d}"))
            .await,
        404
    );
    // ...unless the repository already holds it.
    let r = api
        .req("POST", &format!("/v2/golden/dst/blobs/uploads/?mount={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // An unknown blob starts an ordinary session instead.
    let missing = sha256(b"not here");
    let r = api
        .req(
            "POST",
            &format!("/v2/golden/dst/blobs/uploads/?mount={missing}&from=golden/src"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(location(&r).contains("/blobs/uploads/"));
}

#[tokio::test]
async fn empty_blob_empty_json_and_sha512() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let d = api.push_blob("golden/e", b"").await;
    let r = api.get(&format!("/v2/golden/e/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("0"));
    assert_eq!(api.push_blob("golden/e", b"{}").await, EMPTY_JSON_DIGEST);

    use sha2::Digest as _;
    let d512 = format!(
        "sha512:{}",
        hex::encode(sha2::Sha512::digest(b"five-twelve"))
    );
    let r = api
        .req("POST", "/v2/golden/e/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let r = api
        .req("PUT", &with_query(&location(&r), &format!("digest={d512}")))
        .body("five-twelve")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = api.get(&format!("/v2/golden/e/blobs/{d512}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(d512.as_str())
    );
}

#[tokio::test]
async fn delete_blob_unlinks_it() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let d = api.push_blob("golden/del", b"bye").await;
    assert_eq!(
        api.status("DELETE", &format!("/v2/golden/del/blobs/{d}"))
            .await,
        202
    );
    assert_eq!(
        api.status("GET", &format!("/v2/golden/del/blobs/{d}"))
            .await,
        404
    );
    assert_eq!(
        api.status("DELETE", &format!("/v2/golden/del/blobs/{d}"))
            .await,
        404
    );
}

#[tokio::test]
async fn http2_cleartext_works() {
    let w = Wharf::start();
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = http.get(w.url("/v2/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}
