//! A hostile machine on the LAN against Wharf's connections, on loopback
//! and bounded in count and time: thousands of silent sockets and
//! half-sent HTTP/2 prefaces, a file-descriptor limit too low for
//! `--max-connections`, and HTTP/2 and HTTP/1.1 clients that ask for a
//! large blob and never read it. In each, a normal client keeps being
//! served, and the figures (latency, memory) are printed for the record.

mod common;
use common::attack::*;
use common::*;
use std::time::{Duration, Instant};

/// Times `n` manifest GETs from a normal client; each must succeed within
/// a generous 5 s (without the limits they hang for the header timeout or
/// forever). Returns the slowest.
async fn normal_client(api: &Api, n: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            api.get("/v2/golden/ok/manifests/v1"),
        )
        .await
        .expect("a normal client was not answered within 5 s");
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
    }
    worst
}

async fn count_closed(sockets: &mut [tokio::net::TcpStream], wait: Duration) -> usize {
    let checks = sockets.iter_mut().map(|s| closed_by_server(s, wait));
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .filter(|c| *c)
        .count()
}

#[tokio::test]
async fn silent_sockets_and_half_sent_prefaces_do_not_lock_others_out() {
    let w = Wharf::start_with(Opts {
        args: [
            "--max-connections",
            "400",
            "--max-client-connections",
            "150",
            "--header-timeout",
            "3s",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    let api = Api::new(&w).unpooled();
    push_image(&api, "golden/ok", "v1", "ok").await;
    let calm = normal_client(&api, 5).await;
    let fds_before = open_fds(w.pid());

    // One machine opens 1000: it keeps 150, the rest are closed at once.
    let mut one = silent_sockets("127.0.0.2", &w.addr, 1000).await;
    let refused = count_closed(&mut one, Duration::from_millis(500)).await;
    assert!(
        (850..=860).contains(&refused),
        "{refused} of 1000 closed at once"
    );
    let with_one = normal_client(&api, 5).await;

    // Three more machines take 450 more: past --max-connections, the
    // oldest silent sockets make room, and the normal client still gets in.
    let mut others = Vec::new();
    for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        others.extend(silent_sockets(ip, &w.addr, 150).await);
    }
    let full = normal_client(&api, 10).await;
    println!(
        "normal client, slowest of its requests: calm {calm:?}, beside 1000 silent sockets from one address {with_one:?}, beside 1450 from four {full:?}"
    );

    // The first-request deadline (3 s) closes every silent socket left.
    let all_closed = count_closed(&mut one, Duration::from_secs(6)).await
        + count_closed(&mut others, Duration::from_secs(6)).await;
    assert_eq!(all_closed, one.len() + others.len());
    let settled = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        open_fds(w.pid()) <= fds_before + 5
    })
    .await;
    assert!(
        settled,
        "open descriptors: {} before, {} after",
        fds_before,
        open_fds(w.pid())
    );
    assert!(!w.logged(&["accepts failed"]), "{}", w.log());
    normal_client(&api, 1).await;
}

#[tokio::test]
async fn a_descriptor_limit_too_low_for_max_connections_lowers_it_instead_of_failing() {
    // 400 descriptors: (400 - 256) / 2 = 72 connections fit.
    let w = Wharf::start_with(Opts {
        nofile: Some(400),
        args: ["--header-timeout", "20s", "--stall-timeout", "3s"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    assert!(
        w.logged(&["file-descriptor limit is too low", "accepting at most 72"]),
        "{}",
        w.log()
    );
    let api = Api::new(&w).unpooled();
    push_image(&api, "golden/ok", "v1", "ok").await;
    let layer = pattern(4 << 20, 3);
    let d = api.push_blob("golden/ok", &layer).await;

    // 300 silent sockets from four machines, then 40 blob downloads at
    // once: nothing runs out of descriptors, nobody gets a 500.
    let mut silent = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        silent.extend(silent_sockets(ip, &w.addr, 75).await);
    }
    let path = format!("/v2/golden/ok/blobs/{d}");
    let gets = (0..40).map(|_| async {
        let r = api.get(&path).await;
        (r.status().as_u16(), r.bytes().await.map(|b| b.len()).ok())
    });
    for (status, len) in futures_util::future::join_all(gets).await {
        assert_eq!((status, len), (200, Some(layer.len())));
    }
    normal_client(&api, 3).await;
    let peak_fds = open_fds(w.pid());

    // HTTP/2 carries many requests per connection: three connections
    // asking for the blob on 32 streams each, never reading. 72 requests
    // may be in flight (one per connection that fits); the rest, and a
    // normal client meanwhile, get 503 with Retry-After, never a 500.
    let mut h2 = Vec::new();
    for _ in 0..3 {
        h2.push(h2_never_reading(&w.addr, &path, 32).await);
    }
    let busy = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        w.logged(&["too many requests in flight"])
    })
    .await;
    assert!(busy, "{}", w.log());
    let r = api.get("/v2/golden/ok/manifests/v1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    assert_eq!(error_code(r).await, "UNAVAILABLE");
    println!(
        "open descriptors under a limit of 400: {peak_fds} with 40 downloads, {} with 72 HTTP/2 streams held",
        open_fds(w.pid())
    );
    assert!(open_fds(w.pid()) < 400 - 100);
    // --stall-timeout (3 s) closes them, and the shares come back.
    let served = wait_until(Duration::from_secs(15), Duration::from_millis(250), || {
        w.log().matches("closing a stalled connection").count() >= 3
    })
    .await;
    assert!(served, "{}", w.log());
    normal_client(&api, 3).await;
    assert!(!w.logged(&["accepts failed"]), "{}", w.log());
    assert!(!w.logged(&["internal storage error"]), "{}", w.log());
    drop((silent, h2));
}

/// Resident memory once it has stopped growing.
async fn settled_rss(w: &Wharf) -> u64 {
    let mut last = w.rss();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = w.rss();
        if now.abs_diff(last) < 256 << 10 {
            return now;
        }
        last = now;
    }
    last
}

const MIB: f64 = (1 << 20) as f64;

#[tokio::test]
async fn clients_that_never_read_cost_bounded_memory_and_are_cut_off() {
    let w = Wharf::start_with(Opts {
        args: vec!["--stall-timeout".into(), "4s".into()],
        ..Default::default()
    });
    let api = Api::new(&w).unpooled();
    push_image(&api, "golden/ok", "v1", "ok").await;
    let layer = pattern(32 << 20, 9);
    let d = api.push_blob("golden/ok", &layer).await;
    let path = format!("/v2/golden/ok/blobs/{d}");
    normal_client(&api, 2).await;
    let base = settled_rss(&w).await;
    let fds_before = open_fds(w.pid());

    // Four HTTP/2 connections asking on 100 streams each (32 are let
    // open), never reading.
    let mut h2 = Vec::new();
    for _ in 0..4 {
        h2.push(h2_never_reading(&w.addr, &path, 100).await);
    }
    let with_h2 = settled_rss(&w).await;
    let per_h2 = with_h2.saturating_sub(base) as f64 / 4.0;
    normal_client(&api, 3).await;

    // Fifty HTTP/1.1 connections, never reading.
    let h1 = h1_never_reading(&w.addr, &path, 50).await;
    let with_h1 = settled_rss(&w).await;
    let per_h1 = with_h1.saturating_sub(with_h2) as f64 / 50.0;
    normal_client(&api, 3).await;
    println!(
        "resident memory: {:.1} MiB idle; {:.1} MiB per never-reading HTTP/2 connection asking on 100 streams; {:.2} MiB per never-reading HTTP/1.1 connection",
        base as f64 / MIB,
        per_h2 / MIB,
        per_h1 / MIB
    );
    assert!(
        per_h2 < 12.0 * MIB,
        "{:.1} MiB per HTTP/2 connection",
        per_h2 / MIB
    );
    assert!(
        per_h1 < 1.0 * MIB,
        "{:.2} MiB per HTTP/1.1 connection",
        per_h1 / MIB
    );

    // Nothing moves on them: --stall-timeout (4 s) closes them all. (Seen
    // from the server: the client would have to drain the kernel's send
    // buffers through its small window first.)
    let all_cut = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        w.log().matches("closing a stalled connection").count() == 54
    })
    .await;
    assert!(
        all_cut,
        "{} of 54 closed as stalled",
        w.log().matches("closing a stalled connection").count()
    );
    assert!(open_fds(w.pid()) <= fds_before + 5);
    drop((h2, h1));
    let after = settled_rss(&w).await;
    println!(
        "resident memory after they were cut off: {:.1} MiB",
        after as f64 / MIB
    );
    normal_client(&api, 1).await;
}
