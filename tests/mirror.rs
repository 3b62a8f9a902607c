//! The pull-through mirror over the distribution API, against the
//! reference registry behind a counting proxy: what reaches the upstream on
//! cold, warm and concurrent pulls, tag TTLs, outages, corruption, token
//! auth, redirects, and the read-only rule for mirrored names.

mod common;
use common::upstream::{Faults, Upstream};
use common::*;
use futures_util::StreamExt;
use std::time::{Duration, Instant};

async fn body_digest(r: reqwest::Response) -> Result<(String, usize), reqwest::Error> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut n = 0;
    let mut s = r.bytes_stream();
    while let Some(b) = s.next().await {
        let b = b?;
        n += b.len();
        h.update(&b);
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n))
}

#[tokio::test]
async fn cold_then_warm_pull_and_upstream_request_counts() {
    let up = Upstream::start(false);
    let layer = pattern(300_000, 1);
    let (md, mbytes, ld) = up.seed("library/alpine", "latest", &layer).await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);

    // Cold: the tag is resolved with a HEAD, the manifest fetched by digest.
    let r = api
        .req("GET", "/v2/library/alpine/manifests/latest")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
    assert_eq!(r.bytes().await.unwrap(), mbytes, "byte-for-byte");
    assert_eq!(up.count("HEAD", "/manifests/latest"), 1);
    assert_eq!(
        up.count("GET", "/manifests/latest"),
        0,
        "tags are never GET upstream"
    );
    assert_eq!(up.count("GET", &format!("/manifests/{md}")), 1);
    let r = api.get(&format!("/v2/library/alpine/blobs/{ld}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), Some(layer.len().to_string()));
    assert_eq!(r.bytes().await.unwrap(), layer);
    assert_eq!(up.count("GET", "/blobs/"), 1);

    // Warm, within the TTL: nothing goes upstream, whichever way the
    // client names the repository.
    up.reset();
    for path in [
        "/v2/library/alpine/manifests/latest".to_string(),
        "/v2/alpine/manifests/latest".to_string(),
        "/v2/library/alpine/manifests/latest?ns=docker.io".to_string(),
        "/v2/docker.io/library/alpine/manifests/latest".to_string(),
        format!("/v2/alpine/manifests/{md}"),
    ] {
        let r = api.get(&path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            header(&r, "docker-content-digest"),
            Some(md.clone()),
            "{path}"
        );
        if path.contains("ns=") {
            assert_eq!(header(&r, "oci-namespace").as_deref(), Some("docker.io"));
        }
        let r = api.req("HEAD", &path).send().await.unwrap();
        assert_eq!(header(&r, "content-length"), Some(mbytes.len().to_string()));
    }
    for _ in 0..3 {
        assert_eq!(
            api.get(&format!("/v2/alpine/blobs/{ld}?ns=docker.io"))
                .await
                .bytes()
                .await
                .unwrap(),
            layer
        );
    }
    let r = api
        .req("GET", &format!("/v2/alpine/blobs/{ld}"))
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), layer[1000..]);
    assert!(
        up.seen().is_empty(),
        "warm pulls sent {:?} upstream",
        up.seen()
    );
}

#[tokio::test]
async fn concurrent_cold_pulls_cost_one_upstream_transfer() {
    let up = Upstream::start(false);
    let layer = pattern(64 << 20, 7);
    let (_, _, ld) = up.seed("library/big", "1", &layer).await;
    drop(layer);
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let pulls = (0..16).map(|_| {
        let req = api.req("GET", &format!("/v2/library/big/blobs/{ld}"));
        async move { body_digest(req.send().await.unwrap()).await.unwrap() }
    });
    let results = futures_util::future::join_all(pulls).await;
    for (d, n) in &results {
        assert_eq!(d, &ld);
        assert_eq!(*n, 64 << 20);
    }
    assert_eq!(
        up.count("GET", "/blobs/"),
        1,
        "one upstream transfer for 16 clients"
    );
    assert_eq!(up.blob_bytes(), 64 << 20);
    println!(
        "16 concurrent cold pulls of 64 MiB: {} upstream blob GET, {} bytes",
        up.count("GET", "/blobs/"),
        up.blob_bytes()
    );
}

#[tokio::test]
async fn a_cache_miss_streams_before_the_upstream_finishes() {
    let up = Upstream::start(false);
    let layer = pattern(4 << 20, 3);
    let (_, _, ld) = up.seed("library/slow", "1", &layer).await;
    up.set_faults(Faults {
        slow_blobs: Some(Duration::from_millis(60)),
        ..Default::default()
    });
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let r = api.get(&format!("/v2/library/slow/blobs/{ld}")).await;
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let first = s.next().await.unwrap().unwrap();
    let first_at = Instant::now();
    assert!(!first.is_empty());
    let mut got = first.to_vec();
    while let Some(b) = s.next().await {
        got.extend_from_slice(&b.unwrap());
    }
    assert_eq!(got, layer);
    let done = up.blob_done_at().expect("upstream finished");
    eprintln!(
        "first byte at {:?} ago, upstream done at {:?} ago",
        first_at.elapsed(),
        done.elapsed()
    );
    assert!(
        first_at < done,
        "first byte reached the client {:?} before the upstream finished",
        done - first_at
    );

    // A client that walks away does not abort the fill for everyone else.
    let (_, _, ld2) = up.seed("library/slow", "2", &pattern(3 << 20, 9)).await;
    up.reset();
    let r = api.get(&format!("/v2/library/slow/blobs/{ld2}")).await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    drop(s);
    let start = Instant::now();
    loop {
        let r = api
            .req("HEAD", &format!("/v2/library/slow/blobs/{ld2}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 && up.count("HEAD", "/blobs/") == 0 {
            break;
        }
        up.reset_heads();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "fill did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (d, _) = body_digest(api.get(&format!("/v2/library/slow/blobs/{ld2}")).await)
        .await
        .unwrap();
    assert_eq!(d, ld2);
    assert_eq!(
        up.count("GET", "/blobs/"),
        1,
        "the abandoned fill finished and was cached"
    );
}

#[tokio::test]
async fn moving_tag_is_refreshed_after_its_ttl() {
    let up = Upstream::start(false);
    let (old, _, _) = up.seed("library/app", "latest", b"version one").await;
    let w = up.mirror(&["--tag-ttl", "2s"]);
    let api = Api::new(&w);
    let digest = |api: &Api| {
        let req = api.req("HEAD", "/v2/app/manifests/latest");
        async move { header(&req.send().await.unwrap(), "docker-content-digest").unwrap() }
    };
    assert_eq!(digest(&api).await, old);
    let (new, _, _) = up.seed("library/app", "latest", b"version two").await;
    up.reset();
    assert_eq!(
        digest(&api).await,
        old,
        "within the TTL the old digest is served"
    );
    assert!(up.seen().is_empty());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        digest(&api).await,
        new,
        "after the TTL the tag is revalidated"
    );
    assert_eq!(up.count("HEAD", "/manifests/latest"), 1);
    assert_eq!(
        up.count("GET", "/manifests/"),
        0,
        "a HEAD by tag fetches no manifest"
    );
    let r = api.get("/v2/app/manifests/latest").await;
    assert_eq!(header(&r, "docker-content-digest"), Some(new.clone()));
    assert_eq!(
        up.count("GET", &format!("/manifests/{new}")),
        1,
        "GET only the new digest"
    );
}

/// What an earlier pull cached, and a check that it still pulls.
struct Cached {
    md: String,
    mbytes: Vec<u8>,
    ld: String,
    layer: Vec<u8>,
}

impl Cached {
    async fn check(&self, api: &Api) {
        let r = api.get("/v2/keep/manifests/stable").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "docker-content-digest"), Some(self.md.clone()));
        assert_eq!(r.bytes().await.unwrap(), self.mbytes);
        let b = api.get(&format!("/v2/keep/blobs/{}", self.ld)).await;
        assert_eq!(b.bytes().await.unwrap(), self.layer);
    }
}

#[tokio::test]
async fn upstream_outages_serve_what_is_cached() {
    let up = Upstream::start(false);
    let layer = pattern(100_000, 5);
    let (md, mbytes, ld) = up.seed("library/keep", "stable", &layer).await;
    up.seed("library/never", "pulled", b"never pulled").await;
    let w = up.mirror(&["--tag-ttl", "1s"]);
    let api = Api::new(&w);
    assert_eq!(
        api.get("/v2/keep/manifests/stable")
            .await
            .bytes()
            .await
            .unwrap(),
        mbytes
    );
    assert_eq!(
        api.get(&format!("/v2/keep/blobs/{ld}"))
            .await
            .bytes()
            .await
            .unwrap(),
        layer
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let cached = Cached {
        md: md.clone(),
        mbytes: mbytes.clone(),
        ld: ld.clone(),
        layer: layer.clone(),
    };
    for (what, faults) in [
        (
            "refused",
            Faults {
                refuse: true,
                ..Default::default()
            },
        ),
        (
            "503",
            Faults {
                status: Some(503),
                ..Default::default()
            },
        ),
        (
            "429",
            Faults {
                status: Some(429),
                ..Default::default()
            },
        ),
    ] {
        up.set_faults(faults);
        cached.check(&api).await;
        let start = Instant::now();
        let r = api.get("/v2/never/manifests/pulled").await;
        let status = r.status().as_u16();
        if what == "429" {
            assert_eq!(status, 429);
            assert_eq!(header(&r, "retry-after").as_deref(), Some("17"));
            assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
        } else {
            assert_eq!(status, 503, "{what}");
            assert_eq!(error_code(r).await, "UNAVAILABLE");
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: uncached content fails promptly"
        );
    }

    // Still true after a restart: the last known tag lives in the index.
    up.set_faults(Faults {
        refuse: true,
        ..Default::default()
    });
    let (data, tmp) = w.stop();
    let _tmp = tmp;
    let w = Wharf::start_on(&data, up.mirror_opts(&[]));
    cached.check(&Api::new(&w)).await;
    let tags: serde_json::Value = Api::new(&w)
        .get("/v2/keep/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["stable"]),
        "tag list falls back to known tags"
    );

    // --offline never contacts the upstream at all.
    let (data, tmp2) = w.stop();
    let _tmp2 = tmp2;
    up.set_faults(Faults::default());
    up.reset();
    let w = Wharf::start_on(&data, up.mirror_opts(&["--offline"]));
    cached.check(&Api::new(&w)).await;
    assert_eq!(
        Api::new(&w)
            .status("GET", "/v2/never/manifests/pulled")
            .await,
        503
    );
    assert!(up.seen().is_empty(), "offline sent {:?}", up.seen());
}

#[tokio::test]
async fn corrupted_upstream_bytes_are_never_cached() {
    let up = Upstream::start(false);
    let layer = pattern(2 << 20, 11);
    let (_, _, ld) = up.seed("library/bad", "1", &layer).await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    up.set_faults(Faults {
        corrupt_blobs: true,
        ..Default::default()
    });
    let r = api.get(&format!("/v2/bad/blobs/{ld}")).await;
    assert_eq!(r.status(), 200, "headers go out before the end is known");
    assert!(
        body_digest(r).await.is_err(),
        "the client's transfer is aborted, not completed"
    );
    assert_eq!(std::fs::read_dir(w.data.join("tmp")).unwrap().count(), 0);
    let hex = ld.trim_start_matches("sha256:");
    assert!(
        !w.data
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists(),
        "nothing cached"
    );

    up.set_faults(Faults::default());
    let (d, n) = body_digest(api.get(&format!("/v2/bad/blobs/{ld}")).await)
        .await
        .unwrap();
    assert_eq!((d, n), (ld.clone(), layer.len()));
    assert_eq!(
        up.count("GET", "/blobs/"),
        2,
        "fetched again after the upstream healed"
    );
}

#[tokio::test]
async fn bearer_tokens_are_cached_per_scope_and_redirects_drop_authorization() {
    let up = Upstream::start(true);
    let layer = pattern(50_000, 2);
    let (md, _, ld) = up.seed("library/secure", "v1", &layer).await;
    up.seed("library/other", "v1", b"other").await;
    // The "CDN" is localhost on the proxy's port: a loopback host the trust
    // rules refuse unless redirect_hosts lists it (tests/upstream_trust.rs).
    let port = up.addr.rsplit_once(':').unwrap().1;
    let w = up.mirror_with(&format!("redirect_hosts = [\"localhost:{port}\"]"), &[]);
    let api = Api::new(&w);
    up.set_faults(Faults {
        redirect_blobs: true,
        ..Default::default()
    });
    assert_eq!(api.status("GET", "/v2/secure/manifests/v1").await, 200);
    assert_eq!(
        api.get(&format!("/v2/secure/blobs/{ld}"))
            .await
            .bytes()
            .await
            .unwrap(),
        layer
    );
    assert_eq!(
        up.token_requests(),
        1,
        "one token for repository:library/secure:pull"
    );
    assert!(
        up.cdn_authorizations().is_empty(),
        "Authorization leaked to the redirect host"
    );
    let authed = up
        .seen()
        .iter()
        .filter(|s| s.authorization.as_deref() == Some("Bearer token-1"))
        .count();
    assert!(authed >= 3, "requests carried the token: {:?}", up.seen());
    assert_eq!(api.status("GET", "/v2/other/manifests/v1").await, 200);
    assert_eq!(
        up.token_requests(),
        2,
        "a second scope needs a second token"
    );

    // Client credentials are never forwarded upstream.
    up.reset();
    let r = api
        .req("GET", &format!("/v2/secure/manifests/{md}?x=1"))
        .header("authorization", "Basic Y2xpZW50OnNlY3JldA==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up.seen().iter().all(|s| !s
        .authorization
        .as_deref()
        .unwrap_or("")
        .contains("Y2xpZW50")));

    // A 401 after a valid token (Docker Hub's answer for a missing or
    // private repository) is a 404 to the client.
    up.set_faults(Faults {
        deny_repos_containing: Some("private".into()),
        ..Default::default()
    });
    let r = api.get("/v2/someone/private-thing/manifests/latest").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn misses_are_remembered_briefly_and_names_are_checked() {
    let up = Upstream::start(false);
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    for _ in 0..3 {
        let r = api.get("/v2/library/nothing/manifests/latest").await;
        assert_eq!(r.status(), 404);
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    }
    assert_eq!(
        up.count("HEAD", "/manifests/latest"),
        1,
        "the 404 is cached"
    );

    // An unconfigured ?ns= host is refused, not proxied.
    up.reset();
    let r = api
        .get("/v2/org/app/manifests/latest?ns=evil.example.com")
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn mirrored_names_are_read_only() {
    let up = Upstream::start(false);
    let (md, m, _) = up.seed("library/alpine", "latest", b"x").await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let r = api
        .put_manifest("library/alpine", "latest", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("mirrored from docker.io") && msg.contains("golden/library/alpine"),
        "{msg}"
    );
    assert_eq!(api.status("POST", "/v2/alpine/blobs/uploads/").await, 403);
    assert_eq!(
        api.status("DELETE", &format!("/v2/alpine/manifests/{md}"))
            .await,
        405
    );
    assert!(
        up.seen()
            .iter()
            .all(|s| s.method == "GET" || s.method == "HEAD"),
        "nothing but reads went upstream"
    );
}

#[tokio::test]
async fn tag_lists_and_referrers_of_mirrored_repositories() {
    let up = Upstream::start(false);
    up.seed("library/multi", "a", b"1").await;
    up.seed("library/multi", "b", b"2").await;
    up.seed("library/multi", "c", b"3").await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let v: serde_json::Value = api.get("/v2/multi/tags/list").await.json().await.unwrap();
    assert_eq!(v["name"], "multi");
    assert_eq!(v["tags"], serde_json::json!(["a", "b", "c"]));
    let r = api.get("/v2/multi/tags/list?n=2").await;
    assert_eq!(
        header(&r, "link").as_deref(),
        Some("</v2/multi/tags/list?last=b&n=2>; rel=\"next\"")
    );

    // distribution 2.8 has no referrers API: a 404 that is not
    // NAME_UNKNOWN, so clients fall back to the tag schema.
    let zero = format!("sha256:{}", "0".repeat(64));
    let r = api.get(&format!("/v2/multi/referrers/{zero}")).await;
    assert_eq!(r.status(), 404);
    assert_ne!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn configured_credentials_reach_only_the_token_server() {
    let up = Upstream::start(true);
    let secret = "s3cr3t-pa55word";
    up.require_token_credentials("mirror-bot", secret);
    let (md, _, ld) = up.seed("team/private", "v1", b"private layer").await;
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("password");
    std::fs::write(&pw, format!("{secret}\n")).unwrap();
    let cfg = tmp.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[upstreams]]\nname = \"registry.example.com\"\nurl = \"{}\"\nusername = \"mirror-bot\"\npassword_file = \"{}\"\nalias = \"corp\"\ntag_ttl = \"1m\"\n",
            up.url(),
            pw.display()
        ),
    )
    .unwrap();
    let w = Wharf::start_with(Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        ..Default::default()
    });
    let api = Api::new(&w);
    for path in [
        "/v2/corp/team/private/manifests/v1",
        "/v2/registry.example.com/team/private/manifests/v1",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    }
    assert_eq!(
        api.get(&format!("/v2/corp/team/private/blobs/{ld}"))
            .await
            .bytes()
            .await
            .unwrap(),
        "private layer"
    );
    assert_eq!(up.token_requests(), 1);
    assert!(up
        .token_authorizations()
        .iter()
        .all(|a| a.starts_with("Basic ")));
    // The password never shows in Wharf's log (debug level) or answers.
    assert!(!w.log().contains(secret));
    let r = api.get("/v2/corp/team/missing/manifests/v1").await;
    assert!(!r.text().await.unwrap().contains(secret));

    // Wrong credentials: an authentication failure, not a 404, and nothing leaks.
    up.require_token_credentials("mirror-bot", "another-password");
    let r = api.get("/v2/corp/team/other/manifests/v1").await;
    assert_eq!(r.status(), 503);
    assert!(!r.text().await.unwrap().contains(secret));
}

#[tokio::test]
async fn concurrent_cold_manifest_pulls_and_ranges_on_a_cold_blob() {
    let up = Upstream::start(false);
    let layer = pattern(1 << 20, 4);
    let (md, mbytes, ld) = up.seed("library/busy", "1", &layer).await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let pulls = (0..16).map(|_| {
        let req = api
            .req("GET", "/v2/busy/manifests/1")
            .header("accept", OCI_MANIFEST);
        async move {
            let r = req.send().await.unwrap();
            (
                header(&r, "docker-content-digest"),
                r.bytes().await.unwrap(),
            )
        }
    });
    for (d, b) in futures_util::future::join_all(pulls).await {
        assert_eq!(d, Some(md.clone()));
        assert_eq!(b, mbytes);
    }
    assert_eq!(
        up.count("HEAD", "/manifests/1"),
        1,
        "one tag resolution for 16 clients"
    );
    assert_eq!(
        up.count("GET", "/manifests/"),
        1,
        "one manifest fetch for 16 clients"
    );

    // A ranged GET of an uncached blob gets exactly the bytes asked for.
    let r = api
        .req("GET", &format!("/v2/busy/blobs/{ld}"))
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range"),
        Some(format!("bytes 1000-{}/{}", layer.len() - 1, layer.len()))
    );
    assert_eq!(r.bytes().await.unwrap(), layer[1000..]);
    let r = api
        .req("GET", &format!("/v2/busy/blobs/{ld}"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), layer[10..20]);
}

/// No client may get a complete-looking response with bytes that fail
/// verification: not the first, not a late joiner, not a ranged one.
#[tokio::test]
async fn corrupt_fills_never_complete_for_any_client() {
    let up = Upstream::start(false);
    let layer = pattern(2 << 20, 13);
    let (_, _, ld) = up.seed("library/rot", "1", &layer).await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    up.set_faults(Faults {
        corrupt_blobs: true,
        slow_blobs: Some(Duration::from_millis(20)),
        ..Default::default()
    });
    let path = format!("/v2/rot/blobs/{ld}");
    let whole = (0..12).map(|i| {
        let req = api.req("GET", &path);
        async move {
            tokio::time::sleep(Duration::from_millis(15 * i)).await;
            body_digest(req.send().await.unwrap()).await
        }
    });
    let ranged = (0..4).map(|i| {
        let req = api
            .req("GET", &path)
            .header("range", format!("bytes=0-{}", 1000 + i * 300_000));
        async move {
            let r = req.send().await.unwrap();
            let mut s = r.bytes_stream();
            let mut ok = true;
            while let Some(b) = s.next().await {
                ok &= b.is_ok();
            }
            ok
        }
    });
    let (whole, ranged) = tokio::join!(
        futures_util::future::join_all(whole),
        futures_util::future::join_all(ranged)
    );
    for (i, r) in whole.iter().enumerate() {
        assert!(r.is_err(), "client {i} completed with bad bytes: {r:?}");
    }
    for (i, ok) in ranged.iter().enumerate() {
        assert!(!ok, "ranged client {i} completed before verification");
    }
}

/// A request naming a repository that does not hold a digest upstream
/// never spoils the pull of one that does.
#[tokio::test]
async fn fills_are_per_repository() {
    let up = Upstream::start(false);
    let layer = pattern(1 << 20, 17);
    let (_, _, ld) = up.seed("library/real", "1", &layer).await;
    up.set_faults(Faults {
        slow_blobs: Some(Duration::from_millis(10)),
        ..Default::default()
    });
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let bogus = api.req("GET", &format!("/v2/nosuch/x/blobs/{ld}")).send();
    let real = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        api.req("GET", &format!("/v2/library/real/blobs/{ld}"))
            .send()
            .await
            .unwrap()
    };
    let (bogus, real) = tokio::join!(bogus, real);
    assert_eq!(bogus.unwrap().status(), 404);
    assert_eq!(real.status(), 200);
    assert_eq!(body_digest(real).await.unwrap().0, ld);
}

/// A HEAD that sees a moved tag does not drop the offline fallback: when
/// the new digest cannot be fetched, the last cached one is served.
#[tokio::test]
async fn a_moved_tag_falls_back_to_the_last_cached_digest() {
    let up = Upstream::start(false);
    let (old, _, _) = up.seed("library/mv", "latest", b"old").await;
    let w = up.mirror(&["--tag-ttl", "1s"]);
    let api = Api::new(&w);
    assert_eq!(
        header(
            &api.get("/v2/mv/manifests/latest").await,
            "docker-content-digest"
        ),
        Some(old.clone())
    );
    let (new, _, _) = up.seed("library/mv", "latest", b"new").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = api
        .req("HEAD", "/v2/mv/manifests/latest")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "docker-content-digest"),
        Some(new.clone()),
        "HEAD sees the move"
    );
    // Docker Hub when rate-limited: HEADs are free, GETs get 429.
    up.set_faults(Faults {
        status: Some(429),
        ..Default::default()
    });
    let r = api.get("/v2/mv/manifests/latest").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(old.clone()));
    up.set_faults(Faults {
        refuse: true,
        ..Default::default()
    });
    let r = api.get("/v2/mv/manifests/latest").await;
    assert_eq!(
        header(&r, "docker-content-digest"),
        Some(old),
        "{}",
        w.log()
    );
}

/// A cached manifest whose file vanished is fetched again, not a 404.
#[tokio::test]
async fn a_cached_manifest_missing_on_disk_is_fetched_again() {
    let up = Upstream::start(false);
    let (md, mbytes, _) = up.seed("library/gone", "1", b"x").await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    assert_eq!(
        api.get(&format!("/v2/gone/manifests/{md}"))
            .await
            .bytes()
            .await
            .unwrap(),
        mbytes
    );
    let hex = md.trim_start_matches("sha256:");
    std::fs::remove_file(w.data.join("blobs/sha256").join(&hex[..2]).join(hex)).unwrap();
    // Served from memory meanwhile; a restarted Wharf finds the file gone.
    let r = api.get(&format!("/v2/gone/manifests/{md}")).await;
    assert_eq!(r.bytes().await.unwrap(), mbytes);
    let (data, tmp) = w.stop();
    let _tmp = tmp;
    let w = Wharf::start_on(&data, up.mirror_opts(&[]));
    let api = Api::new(&w);
    let r = api.get(&format!("/v2/gone/manifests/{md}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), mbytes);
    // On S3 the data directory is only a cache: the bucket still has it.
    let fetches = if on_s3() { 1 } else { 2 };
    assert_eq!(up.count("GET", &format!("/manifests/{md}")), fetches);
}

/// Concurrent cold requests for one repository share one token request.
#[tokio::test]
async fn concurrent_requests_share_one_token() {
    let up = Upstream::start(true);
    let (md, _, _) = up.seed("library/crowd", "1", b"crowd").await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let pulls = (0..16).map(|i| {
        let path = if i % 2 == 0 {
            "/v2/crowd/manifests/1".to_string()
        } else {
            format!("/v2/crowd/manifests/{md}")
        };
        let req = api.req("GET", &path);
        async move { req.send().await.unwrap().status().as_u16() }
    });
    for s in futures_util::future::join_all(pulls).await {
        assert_eq!(s, 200);
    }
    assert_eq!(up.token_requests(), 1);
}
