//! Hostile requests, each against a real Wharf on loopback: upload
//! sessions opened by the thousand, bytes parked past the limits, a
//! PATCH that trickles, bodies declared far larger than they are, `%2F`
//! and other escapes that would change how a path splits, and control
//! characters aimed at the log. Each gets its documented answer at once,
//! changes nothing it should not, and everyone else keeps being served.

mod common;
use common::attack::*;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start(args: &[&str]) -> Wharf {
    Wharf::start_with(Opts {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn upload_files(w: &Wharf) -> usize {
    std::fs::read_dir(w.data.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn upload_floods_stop_at_the_per_client_and_total_limits() {
    let w = start(&[
        "--max-upload-sessions",
        "20",
        "--max-upload-sessions-total",
        "70",
        "--max-upload-bytes",
        "4MiB",
        "--max-upload-bytes-total",
        "6MiB",
    ]);
    let start_upload = |api: &Api| {
        let r = api.req("POST", "/v2/golden/flood/blobs/uploads/").send();
        async move { r.await.unwrap() }
    };
    // One machine opens 2000 sessions as fast as it can: 20 open.
    let a = Api::new(&w).bound_to("127.0.0.2");
    let t = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..250 {
        let batch = (0..8).map(|_| start_upload(&a));
        answers.extend(futures_util::future::join_all(batch).await);
    }
    let took = t.elapsed();
    let opened = answers.iter().filter(|r| r.status() == 202).count();
    assert_eq!(opened, 20);
    let refused: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(refused.len(), 1980);
    assert!(refused.iter().all(|r| header(r, "retry-after").is_some()));
    println!("2000 upload sessions asked for in {took:?}: 20 opened, 1980 refused with 429");

    // Two more machines, then the total (70) stops a fourth half way.
    let mut sessions = Vec::new();
    for ip in ["127.0.0.3", "127.0.0.4"] {
        let api = Api::new(&w).bound_to(ip);
        for _ in 0..20 {
            let r = start_upload(&api).await;
            assert_eq!(r.status(), 202);
            sessions.push((ip, location(&r)));
        }
    }
    let d = Api::new(&w).bound_to("127.0.0.5");
    let mut d_sessions = Vec::new();
    loop {
        let r = start_upload(&d).await;
        if r.status() != 202 {
            assert_eq!(r.status(), 429);
            assert!(header(&r, "retry-after").is_some());
            let body = r.text().await.unwrap();
            assert!(
                body.contains("TOOMANYREQUESTS") && body.contains("on this registry"),
                "{body}"
            );
            break;
        }
        d_sessions.push(location(&r));
    }
    assert_eq!(d_sessions.len(), 10);
    assert_eq!(upload_files(&w), 70);

    // Parked bytes: 3 MiB each for two machines fill the 6 MiB total.
    let patch = |api: &Api, loc: &str, bytes: Vec<u8>| {
        api.req("PATCH", loc)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
    };
    let b = Api::new(&w).bound_to("127.0.0.3");
    let c = Api::new(&w).bound_to("127.0.0.4");
    let r = patch(&b, &sessions[0].1, pattern(3 << 20, 1))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = patch(&c, &sessions[20].1, pattern(3 << 20, 2))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = patch(&c, &sessions[21].1, vec![1]).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("on this registry"));

    // A PATCH declaring more than the limit, sending 2 bytes: refused at
    // once, not after the client gives up.
    let loc = d_sessions[0]
        .strip_prefix(&format!("http://{}", w.addr))
        .unwrap_or(&d_sessions[0]);
    let t = Instant::now();
    let answer = raw_exchange(
        &w.addr,
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 99999999999\r\n\r\nab",
            w.addr
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(raw_status(&answer), 429, "{answer}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        t.elapsed()
    );

    // Everyone else is still served.
    assert_eq!(Api::new(&w).status("GET", "/v2/").await, 200);
}

#[tokio::test]
async fn bodies_declared_larger_than_the_limit_are_refused_at_once() {
    let w = start(&[]);
    let t = Instant::now();
    let answer = raw_exchange(
        &w.addr,
        format!(
            "PUT /v2/golden/big/manifests/v1 HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: 99999999999\r\n\r\n{{}}",
            w.addr
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert!(answer.contains("larger than the"), "{answer}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        t.elapsed()
    );
    assert_eq!(
        Api::new(&w)
            .status("GET", "/v2/golden/big/manifests/v1")
            .await,
        404
    );
}

#[tokio::test]
async fn a_trickling_patch_is_cut_off_and_its_session_resumes() {
    let w = start(&["--body-timeout", "2s"]);
    let api = Api::new(&w);
    let blob = pattern(300_000, 7);
    let r = api
        .req("POST", "/v2/golden/slow/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let path = loc
        .strip_prefix(&format!("http://{}", w.addr))
        .unwrap_or(&loc)
        .to_string();

    // The first 1000 bytes at once, then one byte every 300 ms.
    let mut s = tokio::net::TcpStream::connect(&w.addr).await.unwrap();
    s.write_all(
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            w.addr,
            blob.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&blob[..1000]).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let trickle = {
        let blob = blob.clone();
        tokio::spawn(async move {
            let mut sent = 1000;
            while sent < blob.len() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if wr.write_all(&blob[sent..sent + 1]).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        })
    };
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let cut_after = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    assert!(
        cut_after < Duration::from_secs(10),
        "cut off after {cut_after:?}"
    );
    println!("a PATCH trickling a byte every 300 ms was cut off after {cut_after:?}");

    // The session kept what arrived; the client resumes from there.
    let r = api.req("GET", &loc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let range = header(&r, "range").unwrap();
    let kept: usize = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
    assert!((1000..1100).contains(&kept), "{range}");
    let r = api
        .req("PATCH", &loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{kept}-{}", blob.len() - 1))
        .body(blob[kept..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let d = sha256(&blob);
    let r = api
        .req("PUT", &with_query(&location(&r), &format!("digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = api.get(&format!("/v2/golden/slow/blobs/{d}")).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), &blob[..]);
}

#[tokio::test]
async fn escapes_that_change_how_a_path_splits_are_refused_before_routing() {
    let w = start(&[]);
    let api = Api::new(&w);
    let digest = push_image(&api, "golden/base", "1.0", "base").await;
    let hex = digest.strip_prefix("sha256:").unwrap();
    let paths = [
        ("DELETE", "/v2/golden/base%2Fmanifests%2F1.0".to_string()),
        ("DELETE", "/v2/golden/base%2fmanifests%2f1.0".into()),
        (
            "DELETE",
            format!("/v2/golden/base%2Fmanifests%2Fsha256:{hex}"),
        ),
        ("DELETE", "/v2/golden%2Fbase/manifests/1.0".into()),
        ("GET", "/v2/golden/base%5Cmanifests/1.0".into()),
        ("GET", "/v2/golden/%2E%2E/base/manifests/1.0".into()),
        ("GET", "/v2/golden/base/manifests/1%2E0".into()),
        ("GET", "/v2/golden/base/manifests/%251.0".into()),
        ("GET", "/v2/golden/base/manifests/1.0%00".into()),
        ("GET", "/v2/golden/base%2Ftags%2Flist".into()),
        ("PUT", "/v2/golden/base/manifests/1.0%2Fx".into()),
    ];
    for (method, path) in &paths {
        let answer = raw_exchange(
            &w.addr,
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", w.addr).as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(raw_status(&answer), 400, "{method} {path}: {answer}");
        assert!(answer.contains("NAME_INVALID"), "{method} {path}: {answer}");
    }
    // Nothing was deleted, and an escaped digest colon still works.
    let r = api.get("/v2/golden/base/manifests/1.0").await;
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    let r = api
        .get(&format!("/v2/golden/base/manifests/sha256%3A{hex}"))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn control_characters_in_a_path_are_escaped_in_the_log() {
    let w = start(&[]);
    // C1 controls (U+009B is a terminal's CSI, U+0085 a line break) pass
    // HTTP parsing as UTF-8 in the path; C0 ones (ESC, LF) do not.
    for raw in [&b"\xc2\x9b31mred"[..], b"\xc2\x85next"] {
        let mut req = b"GET /v2/golden/".to_vec();
        req.extend_from_slice(raw);
        req.extend_from_slice(b"/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(&w.addr, &req, Duration::from_secs(5)).await;
        assert_eq!(raw_status(&answer), 400, "{answer}");
        assert!(answer.contains("NAME_INVALID"), "{answer}");
    }
    let logged = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        w.logged(&["\\u{9b}31mred"]) && w.logged(&["\\u{85}next"])
    })
    .await;
    let log = w.log();
    assert!(logged, "{log}");
    assert!(!log.contains('\u{9b}') && !log.contains('\u{85}'), "{log}");
}
