//! Faults Wharf must survive, each reproduced for real: an upstream that
//! stalls or breaks off mid-blob, clients that vanish mid-transfer,
//! slow-loris clients and thousands of idle connections, SIGKILL in the
//! middle of 50 concurrent pushes and pulls, and a full disk.

mod common;
use bytes::Bytes;
use common::upstream::{Faults, Upstream};
use common::*;
use futures_util::StreamExt;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

async fn read_all(r: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

fn tmp_files(w: &Wharf) -> usize {
    std::fs::read_dir(w.data.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn upstream_stalls_and_breaks_off_mid_blob() {
    let up = Upstream::start(false);
    let layer = pattern(2 << 20, 21);
    let d = Api::at(&up.registry_addr)
        .push_blob("library/flaky", &layer)
        .await;
    let w = up.mirror(&["--upstream-idle-timeout", "1s"]);
    let api = Api::new(&w);
    let path = format!("/v2/library/flaky/blobs/{d}");
    for (what, faults) in [
        (
            "stall",
            Faults {
                stall_blobs: true,
                ..Default::default()
            },
        ),
        (
            "truncate",
            Faults {
                truncate_blobs: true,
                ..Default::default()
            },
        ),
    ] {
        up.set_faults(faults);
        let start = Instant::now();
        // Two clients on the same fill: both are released with an error
        // (a broken body, or, when the fill failed before the answer's
        // head went out on a busy machine, a broken connection).
        let get = || async {
            match api.req("GET", &path).send().await {
                Ok(r) => read_all(r).await,
                Err(e) => Err(e),
            }
        };
        let (a, b) = tokio::join!(get(), get());
        assert!(
            a.is_err() && b.is_err(),
            "{what}: clients must see a broken transfer"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: took {:?}",
            start.elapsed()
        );
        assert_eq!(tmp_files(&w), 0, "{what}: the partial fill is gone");
        assert!(
            !blob_file(&w.data, &d).exists(),
            "{what}: nothing committed"
        );
    }
    // The next request, with the upstream healthy, retries cleanly.
    up.set_faults(Faults::default());
    assert_eq!(read_all(api.get(&path).await).await.unwrap(), layer);
}

#[tokio::test]
async fn vanishing_clients_leak_no_files_or_handles() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let big = pattern(8 << 20, 5);
    let d = api.push_blob("golden/big", &big).await;
    // Let start-up settle, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = open_fds(w.pid());

    for _ in 0..10 {
        // A download abandoned after its first chunk.
        let r = api.get(&format!("/v2/golden/big/blobs/{d}")).await;
        let mut s = r.bytes_stream();
        s.next().await.unwrap().unwrap();
        drop(s);
        // A one-shot upload abandoned half way.
        let half = reqwest::Body::wrap_stream(
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(vec![
                1u8;
                1 << 20
            ]))])
            .chain(futures_util::stream::pending()),
        );
        let post = api
            .req(
                "POST",
                &format!("/v2/golden/big/blobs/uploads/?digest={}", sha256(b"never")),
            )
            .body(half)
            .send();
        let _ = tokio::time::timeout(Duration::from_millis(200), post).await;
    }
    // A stalled client is cut loose; the server's handles and temp files go.
    let released = || open_fds(w.pid()) <= fds_before + 2 && tmp_files(&w) == 0;
    assert!(
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(100),
            released
        )
        .await,
        "fds {fds_before} -> {}, temp files {}",
        open_fds(w.pid()),
        tmp_files(&w)
    );
    // And the server still works.
    assert_eq!(
        read_all(api.get(&format!("/v2/golden/big/blobs/{d}")).await)
            .await
            .unwrap(),
        big
    );
}

#[tokio::test]
async fn slow_loris_and_idle_connections_do_not_starve_others() {
    let w = Wharf::start_with(Opts {
        args: vec!["--header-timeout".into(), "2s".into()],
        ..Default::default()
    });
    // A fresh connection per request: the 2 s header timeout also closes
    // idle keep-alive connections, which a pooled client may race.
    let api = Api::new(&w).unpooled();
    push_image(&api, "golden/ok", "v1", "ok").await;
    // 1000 idle connections (from four other machines, each within
    // --max-client-connections) and 20 slow-loris clients trickling headers.
    let mut idle = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..250 {
            idle.push(common::attack::connect_from(ip, &w.addr).await.unwrap());
        }
    }
    let mut loris = Vec::new();
    for _ in 0..20 {
        let s = common::attack::connect_from("127.0.0.6", &w.addr)
            .await
            .unwrap();
        loris.push(s.into_std().unwrap());
    }
    for s in &loris {
        s.set_nonblocking(false).unwrap();
    }
    let started = Instant::now();
    for step in 0..8 {
        for s in &mut loris {
            let _ = s.write_all(if step == 0 {
                b"GET /v2/ HTTP/1.1\r\n"
            } else {
                b"X"
            });
        }
        let t = Instant::now();
        let r = api.get("/v2/golden/ok/manifests/v1").await;
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a normal request waited {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // The header timeout has closed the trickling connections by now.
    assert!(started.elapsed() > Duration::from_secs(3));
    for s in &mut loris {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                // hyper may answer 408 before closing.
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(
                    text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"),
                    "{text}"
                );
            }
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "slow-loris connection still open"
            ),
        }
    }
    drop(idle);
}

#[tokio::test]
async fn sigkill_during_50_concurrent_pushes_and_pulls() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let base = push_image(&api, "golden/base", "v1", "base").await;
    let base_bytes = api
        .get(&format!("/v2/golden/base/manifests/{base}"))
        .await
        .bytes()
        .await
        .unwrap();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (api, acked, base, base_bytes) = (
            Api::new(&w),
            acked.clone(),
            base.clone(),
            base_bytes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for round in 0.. {
                if i % 2 == 0 {
                    // Push: a config, a ~1 MiB layer, a manifest.
                    let repo = format!("golden/p{i}");
                    let layer = pattern((1 << 20) + round, i as u8);
                    let config = format!("{{\"i\":{i},\"r\":{round}}}");
                    let send = async {
                        let cd = sha256(config.as_bytes());
                        let ld = sha256(&layer);
                        for (d, b) in [(&cd, config.as_bytes().to_vec()), (&ld, layer.clone())] {
                            let r = api
                                .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
                                .body(b)
                                .send()
                                .await
                                .ok()?;
                            if r.status() != 201 {
                                return None;
                            }
                        }
                        let m = image_manifest(
                            Some(OCI_MANIFEST),
                            ("application/x", &cd, config.len()),
                            &[("l", &ld, layer.len())],
                        );
                        let r = api
                            .put_manifest(&repo, &format!("r{round}"), OCI_MANIFEST, &m)
                            .await;
                        (r.status() == 201).then(|| {
                            (
                                repo.clone(),
                                format!("r{round}"),
                                sha256(&m),
                                ld,
                                layer.len(),
                            )
                        })
                    };
                    match send.await {
                        Some(done) => acked.lock().unwrap().push(done),
                        None => return,
                    }
                } else {
                    let r = match api
                        .req("GET", &format!("/v2/golden/base/manifests/{base}"))
                        .send()
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    if let Ok(b) = r.bytes().await {
                        assert!(b.is_empty() || b == base_bytes, "a pull got wrong bytes");
                    }
                }
            }
        }));
    }
    // Kill once enough pushes are acknowledged (with the others mid-flight);
    // how long that takes depends on the machine's load and fsync speed.
    let enough = || acked.lock().unwrap().len() >= 10;
    wait_until(Duration::from_secs(60), Duration::from_millis(50), enough).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (data, tmp) = w.kill();
    let _tmp = tmp;
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "only {} pushes were acknowledged before the kill",
        acked.len()
    );

    let w = Wharf::start_on(&data, Opts::default());
    let api = Api::new(&w);
    for (repo, tag, md, ld, len) in &acked {
        let r = api.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), 200, "{repo}:{tag} was acknowledged");
        assert_eq!(
            header(&r, "docker-content-digest").as_deref(),
            Some(md.as_str())
        );
        let b = api
            .get(&format!("/v2/{repo}/blobs/{ld}"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!((b.len(), sha256(&b)), (*len, ld.clone()));
    }
    let (data, tmp2) = w.stop();
    let _tmp2 = tmp2;
    let (code, out) = wharf_cli(&["verify", "--data", &data.display().to_string()]);
    assert_eq!(code, 0, "index and files agree after the crash: {out}");
    println!(
        "SIGKILL test: {} acknowledged pushes intact; verify: {}",
        acked.len(),
        out.lines().last().unwrap_or("")
    );
}

/// A tmpfs of `mib` MiB mounted for the test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        run(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path()));
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_cleanly_and_recovers_without_restart() {
    let up = Upstream::start(false);
    let mirrored = pattern(6 << 20, 2);
    let md = Api::at(&up.registry_addr)
        .push_blob("library/fat", &mirrored)
        .await;
    let disk = SmallDisk::mount(48);
    let data = disk.dir.path().join("data");
    let w = Wharf::start_on(&data, up.mirror_opts(&[]));
    // A fresh connection per request: a refused upload's connection is
    // closed by the server while the client may still be sending.
    let api = Api::new(&w).unpooled();
    push_image(&api, "golden/before", "v1", "before").await;
    // Fill the disk, leaving about 3 MiB.
    let filler = disk.dir.path().join("filler");
    let free = fs4_free(disk.dir.path());
    std::fs::write(&filler, vec![0u8; (free - (3 << 20)) as usize]).unwrap();

    let big = pattern(8 << 20, 7);
    let d = sha256(&big);
    let r = api
        .req(
            "POST",
            &format!("/v2/golden/full/blobs/uploads/?digest={d}"),
        )
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507, "a push on a full disk is a clear 5xx");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains("full"),
        "{v}"
    );
    let r = api.get(&format!("/v2/library/fat/blobs/{md}")).await;
    assert!(
        r.status() != 200 || read_all(r).await.is_err(),
        "a cache fill on a full disk fails"
    );
    assert_eq!(tmp_files(&w), 0, "nothing half-written is left");
    assert!(!blob_file(&data, &d).exists() && !blob_file(&data, &md).exists());
    assert_eq!(
        api.status("GET", "/v2/golden/before/manifests/v1").await,
        200,
        "what was there still pulls"
    );

    // Space comes back: everything works again, no restart.
    std::fs::remove_file(&filler).unwrap();
    let r = api
        .req(
            "POST",
            &format!("/v2/golden/full/blobs/uploads/?digest={d}"),
        )
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        read_all(api.get(&format!("/v2/library/fat/blobs/{md}")).await)
            .await
            .unwrap(),
        mirrored
    );
    let (data_path, _) = w.stop();
    let (code, out) = wharf_cli(&["verify", "--data", &data_path.display().to_string()]);
    assert_eq!(code, 0, "{out}");
}

fn fs4_free(p: &std::path::Path) -> u64 {
    let out = run(std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p));
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// The digest checks out but storing the blob fails (its shard directory
/// cannot be made): clients streaming it still get every verified byte,
/// a slow one included, nothing is cached or left behind, and once storage
/// works again the next request fills and caches it.
#[tokio::test]
async fn storing_fails_after_the_digest_is_verified() {
    let up = Upstream::start(false);
    let layer = pattern(32 << 20, 33);
    let d = Api::at(&up.registry_addr)
        .push_blob("library/unstorable", &layer)
        .await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    let shard = blob_file(&w.data, &d).parent().unwrap().to_path_buf();
    std::fs::create_dir_all(shard.parent().unwrap()).unwrap();
    std::fs::write(&shard, b"in the way").unwrap();

    let path = format!("/v2/library/unstorable/blobs/{d}");
    let slow = async {
        let r = api.get(&path).await;
        // More than the socket buffers hold is still unsent when the fill
        // verifies the digest and fails to store the blob.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        read_all(r).await
    };
    let fast = async { read_all(api.get(&path).await).await };
    let (slow, fast) = tokio::join!(slow, fast);
    assert!(fast.unwrap() == layer, "the fast client got the blob");
    assert!(slow.unwrap() == layer, "the slow client got the blob");
    assert!(w.log().contains("verified but not stored"), "{}", w.log());
    assert!(!blob_file(&w.data, &d).exists());
    assert_eq!(tmp_files(&w), 0, "nothing half-written is left");

    std::fs::remove_file(&shard).unwrap();
    up.reset();
    assert!(read_all(api.get(&path).await).await.unwrap() == layer);
    assert_eq!(up.count("GET", "/blobs/"), 1, "filled again");
    // The response may end before the file is fsynced and renamed.
    let cached = || blob_file(&w.data, &d).exists();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), cached).await,
        "and cached this time"
    );
}
