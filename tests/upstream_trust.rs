//! A hostile upstream, through the real binary: token realms on other
//! servers, redirects to loopback and private addresses, HEAD answers from
//! a redirect target, tag lists that page on forever, concurrent identical
//! tag lists, cold tag lists of a failing upstream, and the log volume of
//! upstream 404s. Nothing leaves loopback.

mod common;
use common::sink::{Handler, Sink};
use common::upstream::{Faults, TagPages, Upstream};
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token server: every request gets a token the fake upstream accepts.
fn token_server() -> Handler {
    Arc::new(|_| {
        (
            200,
            vec![("content-type".into(), "application/json".into())],
            br#"{"token":"token-realm","expires_in":300}"#.to_vec(),
        )
    })
}

/// Resident memory of a process now (VmRSS), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

const MIB: u64 = 1 << 20;

/// Whether the log holds a line with every one of `parts` within a second
/// or two (stderr is read by another thread).
async fn logged(w: &Wharf, parts: &[&str]) -> bool {
    wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        w.logged(parts)
    })
    .await
}

#[tokio::test]
async fn token_realms_on_other_servers_get_nothing_unless_listed() {
    let up = Upstream::start(true);
    let (md, _, _) = up.seed("library/guarded", "v1", b"guarded layer").await;
    let secret = "realm-pa55word";
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("password");
    std::fs::write(&pw, secret).unwrap();
    let ca = pki::TestCa::new("realm CA");
    let (cert, key) = ca.server("realm");
    let https_realm = Sink::start("127.0.0.1", Some((&cert, &key)), token_server());
    let http_realm = Sink::start("127.0.0.1", None, token_server());
    let creds = format!(
        "username = \"mirror-bot\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
        pw.display(),
        ca.ca_file().display()
    );

    // The realm is on another port: refused, and it never hears of us.
    up.set_faults(Faults {
        realm: Some(format!("https://{}/token", https_realm.addr)),
        ..Default::default()
    });
    let w = up.mirror_with(&creds, &[]);
    let api = Api::new(&w);
    let r = api.get("/v2/guarded/manifests/v1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "UNAVAILABLE");
    assert_eq!(
        https_realm.connections(),
        0,
        "the refused realm was contacted"
    );
    assert!(
        logged(
            &w,
            &[
                "WARN",
                "token realm refused",
                &https_realm.addr,
                "token_realms"
            ]
        )
        .await,
        "{}",
        w.log()
    );
    assert!(!w.log().contains(secret));
    drop(w);

    // Listed, over HTTPS: credentials go there and the pull works.
    let w = up.mirror_with(
        &format!("{creds}token_realms = [\"{}\"]\n", https_realm.addr),
        &[],
    );
    let api = Api::new(&w);
    let r = api.get("/v2/guarded/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    let asked = https_realm.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0]
        .authorization
        .as_deref()
        .unwrap_or("")
        .starts_with("Basic "));
    assert!(!w.log().contains(secret));
    drop(w);

    // Listed but plain HTTP on another port: refused all the same.
    up.set_faults(Faults {
        realm: Some(format!("http://{}/token", http_realm.addr)),
        ..Default::default()
    });
    let w = up.mirror_with(
        &format!("{creds}token_realms = [\"{}\"]\n", http_realm.addr),
        &[],
    );
    let r = Api::new(&w).get("/v2/guarded/manifests/v1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(http_realm.connections(), 0);
    assert!(
        logged(&w, &["WARN", "token realm refused", "not HTTPS"]).await,
        "{}",
        w.log()
    );
    assert!(!w.log().contains(secret));
}

#[tokio::test]
async fn redirects_to_loopback_hosts_are_refused_unless_listed() {
    let up = Upstream::start(false);
    let layer = pattern(300_000, 9);
    let (_, _, ld) = up.seed("library/cdn", "v1", &layer).await;
    // The "CDN" on another loopback address, sending headers of its own.
    let served = layer.clone();
    let cdn = Sink::start(
        "127.0.0.2",
        None,
        Arc::new(move |_| {
            (
                200,
                vec![
                    ("content-type".into(), "text/html".into()),
                    ("docker-content-digest".into(), "sha256:forged".into()),
                    ("set-cookie".into(), "session=stolen".into()),
                    ("x-evil".into(), "1".into()),
                ],
                served.clone(),
            )
        }),
    );
    up.set_faults(Faults {
        redirect_blobs_to: Some(format!("http://{}", cdn.addr)),
        ..Default::default()
    });
    let path = format!("/v2/cdn/blobs/{ld}");

    // Not listed: an address literal that is not public is never connected to.
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    for method in ["GET", "HEAD"] {
        let r = api.req(method, &path).send().await.unwrap();
        assert_eq!(r.status(), 503, "{method}");
    }
    assert_eq!(
        cdn.connections(),
        0,
        "a refused redirect target was contacted"
    );
    assert!(
        logged(
            &w,
            &["WARN", "redirect refused", &cdn.addr, "redirect_hosts"]
        )
        .await
    );

    // A name that resolves to loopback (localhost on the proxy's own port):
    // refused after resolving, before connecting.
    up.set_faults(Faults {
        redirect_blobs: true,
        ..Default::default()
    });
    let r = api.get(&path).await;
    assert_eq!(r.status(), 503);
    assert_eq!(up.cdn_requests(), 0);
    assert!(
        logged(
            &w,
            &[
                "WARN",
                "redirect refused",
                "localhost",
                "not a public address"
            ]
        )
        .await
    );
    drop(w);

    // Listed: followed. A HEAD answers only checked values.
    up.set_faults(Faults {
        redirect_blobs_to: Some(format!("http://{}", cdn.addr)),
        ..Default::default()
    });
    let w = up.mirror_with(&format!("redirect_hosts = [\"{}\"]", cdn.addr), &[]);
    let api = Api::new(&w);
    let r = api.req("HEAD", &path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), Some(layer.len().to_string()));
    assert_eq!(header(&r, "docker-content-digest"), Some(ld.clone()));
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    for h in ["set-cookie", "x-evil"] {
        assert_eq!(header(&r, h), None, "{h} copied from the redirect target");
    }
    let r = api.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), layer);
    assert!(cdn.connections() >= 1);
    assert!(cdn.seen().iter().all(|s| s.authorization.is_none()));
}

#[tokio::test]
async fn a_tag_list_that_pages_forever_is_bounded() {
    let up = Upstream::start(false);
    let pages = TagPages {
        per_page: 2000,
        tag_len: 128,
    };
    up.set_faults(Faults {
        tag_pages: Some(pages),
        ..Default::default()
    });
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    assert_eq!(api.status("GET", "/v2/").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(w.pid());
    let peak_before = w.peak_rss();

    // The default bound, 100000 tags, reached first (about 13 MB of tags).
    let started = Instant::now();
    let r = api.get("/v2/huge/tags/list").await;
    assert_eq!(r.status(), 200);
    let link = header(&r, "link").expect("a truncated list links to the next page");
    let body = r.bytes().await.unwrap();
    let size = body.len();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    drop(body);
    let tags = v["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 100_000);
    assert_eq!(tags[0].as_str(), Some(pages.tag(0).as_str()));
    let last = pages.tag(99_999);
    assert_eq!(tags[99_999].as_str(), Some(last.as_str()));
    assert_eq!(
        link,
        format!("</v2/huge/tags/list?last={last}>; rel=\"next\"")
    );
    drop(v);
    let elapsed = started.elapsed();
    assert_eq!(up.count("GET", "/tags/list"), 51, "pages read");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(w.pid());
    let peak = w.peak_rss();
    eprintln!(
        "tag list of 100000 tags in {elapsed:?}: RSS {} MiB before, {} MiB after, peak {} MiB (was {} MiB)",
        before / MIB,
        after / MIB,
        peak / MIB,
        peak_before / MIB
    );
    assert!(
        after < before + 32 * MIB,
        "memory held after the answer: {before} -> {after}"
    );
    assert!(
        peak < peak_before + 160 * MIB,
        "peak memory of one bounded walk: {peak_before} -> {peak}"
    );
    assert!(logged(&w, &["upstream tag list cut", "max_upstream_tags"]).await);

    // Again and again: what the allocator kept is reused, nothing grows
    // (given a moment, and some slack: on a busy machine the answer's
    // buffers go a little after the client has read it, and more threads
    // mean more malloc arenas keeping some).
    for i in 0..3 {
        let r = api.get("/v2/huge/tags/list").await;
        assert_eq!(r.bytes().await.unwrap().len(), size, "round {i}");
        let pid = w.pid();
        let settled = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            rss(pid) < before + 40 * MIB
        })
        .await;
        let now = rss(pid);
        eprintln!("round {i}: RSS {} MiB", now / MIB);
        assert!(settled, "round {i}: {before} -> {now}");
    }

    // The Link carries on where the answer stopped.
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let v: serde_json::Value = api.get(next).await.json().await.unwrap();
    assert_eq!(v["tags"][0].as_str(), Some(pages.tag(100_000).as_str()));

    // The byte bound, and the page bound, cut walks too.
    drop(w);
    let w = up.mirror(&["--max-upstream-tag-bytes", "2MiB"]);
    let api = Api::new(&w);
    let r = api.get("/v2/huge/tags/list").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "link").is_some());
    let v: serde_json::Value = r.json().await.unwrap();
    let n = v["tags"].as_array().unwrap().len();
    // Eight pages of 2000 fit in 2 MiB, the ninth does not.
    assert_eq!(n, 16_000);
    assert!(logged(&w, &["upstream tag list cut", "max_upstream_tag_bytes"]).await);
    // With the client's n, the Link keeps it.
    let r = api.get("/v2/huge/tags/list?n=500").await;
    let link = header(&r, "link").unwrap();
    assert!(
        link.ends_with(&format!("{}&n=500>; rel=\"next\"", pages.tag(499))),
        "{link}"
    );
    drop(w);
    up.set_faults(Faults {
        tag_pages: Some(TagPages {
            per_page: 10,
            tag_len: 30,
        }),
        ..Default::default()
    });
    let w = up.mirror(&[]);
    up.reset();
    let r = Api::new(&w).get("/v2/huge/tags/list").await;
    assert!(header(&r, "link").is_some());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"].as_array().unwrap().len(), 1000);
    assert_eq!(up.count("GET", "/tags/list"), 100);
}

#[tokio::test]
async fn concurrent_identical_tag_lists_share_one_walk() {
    let up = Upstream::start(false);
    up.set_faults(Faults {
        tag_pages: Some(TagPages {
            per_page: 1000,
            tag_len: 20,
        }),
        tag_delay: Some(Duration::from_millis(500)),
        ..Default::default()
    });
    let w = up.mirror(&["--max-upstream-tags", "5000"]);
    let api = Api::new(&w);
    let asks = (0..16).map(|_| {
        let req = api.req("GET", "/v2/crowd/tags/list");
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }
    });
    let bodies = futures_util::future::join_all(asks).await;
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    let v: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(v["tags"].as_array().unwrap().len(), 5000);
    // Five pages of 1000, and a sixth that shows there are more: one walk
    // (two if a request came late on a loaded machine, never sixteen).
    let pages = up.count("GET", "/tags/list");
    assert!(
        pages == 6 || pages == 12,
        "16 requests, {pages} pages read: {:?}",
        up.seen()
    );
    // Done is done: the next request walks afresh.
    up.reset();
    assert_eq!(api.status("GET", "/v2/crowd/tags/list").await, 200);
    assert_eq!(up.count("GET", "/tags/list"), 6);
}

#[tokio::test]
async fn a_cold_tag_list_of_a_failing_upstream_is_an_error() {
    let up = Upstream::start(false);
    up.seed("library/kept", "stable", b"kept").await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    assert_eq!(api.status("GET", "/v2/kept/manifests/stable").await, 200);
    for (faults, status, code) in [
        (
            Faults {
                refuse: true,
                ..Default::default()
            },
            503,
            "UNAVAILABLE",
        ),
        (
            Faults {
                status: Some(503),
                ..Default::default()
            },
            503,
            "UNAVAILABLE",
        ),
        (
            Faults {
                status: Some(429),
                ..Default::default()
            },
            429,
            "TOOMANYREQUESTS",
        ),
    ] {
        up.set_faults(faults);
        let r = api.get("/v2/never/tags/list").await;
        assert_eq!(r.status(), status);
        assert_eq!(error_code(r).await, code);
        // What was pulled before still lists.
        let v: serde_json::Value = api.get("/v2/kept/tags/list").await.json().await.unwrap();
        assert_eq!(v["tags"], serde_json::json!(["stable"]));
    }
}

#[tokio::test]
async fn upstream_404s_are_not_warnings() {
    let up = Upstream::start(false);
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    for i in 0..20u8 {
        let d = sha256(&[i]);
        assert_eq!(api.status("GET", &format!("/v2/scan/blobs/{d}")).await, 404);
        let m = sha256(&[i, i]);
        assert_eq!(
            api.status("GET", &format!("/v2/scan/manifests/{m}")).await,
            404
        );
    }
    assert!(logged(&w, &["DEBUG", "not found upstream"]).await);
    let log = w.log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && (l.contains("scan") || l.contains("not found")))
        .collect();
    assert!(warns.is_empty(), "{warns:#?}");
}
