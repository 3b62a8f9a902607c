//! A bounded, self-checking store: LRU eviction under --max-cache-size that
//! never touches local content, garbage collection of unreferenced local
//! blobs (scheduled and `wharf gc`), and `wharf verify` finding and
//! repairing corruption, after which the mirror fetches again.

mod common;
use common::upstream::Upstream;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn eviction_keeps_the_cache_under_its_limit_and_spares_local_content() {
    let up = Upstream::start(false);
    let reg = Api::at(&up.registry_addr);
    let layers: Vec<Vec<u8>> = (0..6)
        .map(|i| pattern((1 << 20) + 1000, i as u8 + 1))
        .collect();
    let mut digests = Vec::new();
    for l in &layers {
        digests.push(reg.push_blob("library/big", l).await);
    }
    let w = up.mirror(&["--max-cache-size", "4MiB"]);
    let api = Api::new(&w);
    // Layer 0 is also pushed locally: it may never be evicted.
    assert_eq!(api.push_blob("golden/keep", &layers[0]).await, digests[0]);
    let on_disk = |i: usize| blob_file(&w.data, &digests[i]).exists();
    let pull = |i: usize| {
        let req = api.req("GET", &format!("/v2/library/big/blobs/{}", digests[i]));
        let want = layers[i].clone();
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap(), want);
            // A fill is stored (and its use recorded) just after its client
            // has the bytes: wait for it, or on a busy machine it may be
            // recorded after the next pull and look more recently used.
            assert!(
                wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
                    on_disk(i)
                })
                .await,
                "layer {i} was not stored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Layer 0 is also local: it neither counts nor goes. Layer 1 is used
    // again before the limit is first passed (by layer 4), so layers 2,
    // then 3 are the least recently used when eviction runs.
    for i in [0, 1, 2, 3, 1, 4] {
        pull(i).await;
    }
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            !on_disk(2)
        })
        .await,
        "nothing was evicted: {}",
        w.log()
    );
    pull(5).await;
    // Eviction runs in the background once the limit is passed.
    let under_limit = || {
        let mirrored: u64 = (0..6)
            .filter(|i| on_disk(*i))
            .map(|i| layers[i].len() as u64)
            .sum();
        mirrored <= 5 << 20
    };
    assert!(
        wait_until(
            Duration::from_secs(15),
            Duration::from_millis(100),
            under_limit
        )
        .await,
        "cache stayed above its limit"
    );
    assert!(on_disk(0), "locally referenced content is never evicted");
    assert!(
        on_disk(1) && on_disk(4) && on_disk(5),
        "recently used content stays: {}",
        w.log()
    );
    assert!(
        !on_disk(2) && !on_disk(3),
        "the least recently used layers went"
    );
    assert!(
        w.log().contains("evicted least recently used"),
        "eviction is logged"
    );
    assert_eq!(
        api.get(&format!("/v2/golden/keep/blobs/{}", digests[0]))
            .await
            .bytes()
            .await
            .unwrap(),
        layers[0]
    );

    // An evicted layer is simply fetched again.
    up.reset();
    pull(2).await;
    assert_eq!(up.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn gc_removes_unreferenced_local_blobs_after_their_grace_period() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let kept = push_image(&api, "golden/app", "v1", "kept").await;
    let gone = push_image(&api, "golden/app", "v2", "gone").await;
    let gone_manifest = api
        .get(&format!("/v2/golden/app/manifests/{gone}"))
        .await
        .bytes()
        .await
        .unwrap();
    let gone_blobs: Vec<String> = serde_json::from_slice::<serde_json::Value>(&gone_manifest)
        .unwrap()["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let orphan = api
        .push_blob("golden/app", b"pushed, never referenced")
        .await;
    assert_eq!(
        api.status("DELETE", &format!("/v2/golden/app/manifests/{gone}"))
            .await,
        202
    );
    let (data, tmp) = w.stop();
    let _tmp = tmp;
    let data_s = data.display().to_string();

    // A dry run lists and removes nothing. On a data directory no server
    // uses, no grace applies unless asked for (with a bucket, which other
    // servers may use, the configured one does).
    let gc = |extra: &[&str]| {
        let mut args = vec!["gc", "--data", &data_s];
        if on_s3() && !extra.contains(&"--grace") {
            args.extend(["--grace", "0s"]);
        }
        args.extend(extra);
        wharf_cli(&args)
    };
    let (code, out) = gc(&["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&orphan) && out.contains(&gone) && out.contains(&gone_blobs[0]),
        "{out}"
    );
    assert!(out.contains("would remove 4 unreferenced blobs"), "{out}");
    assert!(blob_file(&data, &orphan).exists());
    // With one, fresh blobs stay, and the output says why.
    let (_, out) = gc(&["--grace", "1h"]);
    assert!(out.contains("removed 0 unreferenced blobs"), "{out}");
    assert!(
        out.contains("kept 4 unreferenced blobs")
            && out.contains("within the grace period (1h)")
            && out.contains("--grace 0s"),
        "{out}"
    );

    let (code, out) = gc(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(!blob_file(&data, &orphan).exists() && !blob_file(&data, &gone).exists());
    assert!(!blob_file(&data, &gone_blobs[0]).exists());
    let (code, out) = wharf_cli(&["verify", "--data", &data_s]);
    assert_eq!(code, 0, "index and files agree after GC: {out}");

    let w = Wharf::start_on(&data, Opts::default());
    let api = Api::new(&w);
    let r = api.get("/v2/golden/app/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), Some(kept));
    let m: serde_json::Value = r.json().await.unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        api.status("GET", &format!("/v2/golden/app/blobs/{layer}"))
            .await,
        200
    );
    assert_eq!(
        api.status("HEAD", &format!("/v2/golden/app/blobs/{orphan}"))
            .await,
        404
    );
}

#[tokio::test]
async fn scheduled_gc_runs_beside_pushes_without_breaking_them() {
    let w = Wharf::start_with(Opts {
        args: vec![
            "--gc-interval".into(),
            "250ms".into(),
            "--gc-grace".into(),
            "1s".into(),
        ],
        ..Default::default()
    });
    let api = Api::new(&w);
    let orphan = api.push_blob("golden/gc", b"abandoned upload").await;
    let cfg = api.push_blob("golden/gc", b"{}").await;
    let collected = || !blob_file(&w.data, &orphan).exists();
    assert!(
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(200),
            collected
        )
        .await,
        "scheduled GC did not run"
    );
    // A slow push: its blobs are older than the grace period by the time
    // the manifest comes, but the HEAD a client sends before referencing
    // a blob counts as a use, and GC (running every 250 ms) leaves it alone.
    let layer = api.push_blob("golden/gc", b"slow push layer").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for d in [&cfg, &layer] {
        assert_eq!(
            api.status("HEAD", &format!("/v2/golden/gc/blobs/{d}"))
                .await,
            404,
            "unreferenced and old: collected"
        );
    }
    // Pushed again; HEADed before the grace runs out; referenced when the
    // files themselves are well past it.
    let cfg = api.push_blob("golden/gc", b"{}").await;
    let layer = api.push_blob("golden/gc", b"slow push layer").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for d in [&cfg, &layer] {
        assert_eq!(
            api.status("HEAD", &format!("/v2/golden/gc/blobs/{d}"))
                .await,
            200,
            "touched in time"
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let m = image_manifest(
        Some(OCI_MANIFEST),
        ("application/x", &cfg, 2),
        &[("l", &layer, 15)],
    );
    let r = api
        .put_manifest("golden/gc", "slow", OCI_MANIFEST, &m)
        .await;
    assert_eq!(
        r.status(),
        201,
        "a HEAD-then-PUT push survives GC: {:?}",
        r.text().await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.status("GET", &format!("/v2/golden/gc/blobs/{layer}"))
            .await,
        200,
        "referenced blobs stay"
    );
}

#[tokio::test]
async fn verify_finds_corruption_and_repair_lets_the_mirror_fetch_again() {
    // On S3, tests/s3.rs checks verify against the bucket.
    if !fs_only("verify and repair of files in the data directory") {
        return;
    }
    let up = Upstream::start(false);
    let reg = Api::at(&up.registry_addr);
    let mirrored = pattern(300_000, 9);
    let md = reg.push_blob("library/m", &mirrored).await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    assert_eq!(
        api.get(&format!("/v2/library/m/blobs/{md}"))
            .await
            .bytes()
            .await
            .unwrap(),
        mirrored
    );
    let local = pattern(200_000, 3);
    let ld = api.push_blob("golden/l", &local).await;
    let lost = api.push_blob("golden/l", b"this file will vanish").await;

    // A truncated cached file is noticed on read and fetched again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(blob_file(&w.data, &md))
        .unwrap()
        .set_len(1000)
        .unwrap();
    let r = api.get(&format!("/v2/library/m/blobs/{md}")).await;
    assert_eq!(r.bytes().await.unwrap(), mirrored);
    let (data, tmp) = w.stop();
    let _tmp = tmp;
    let data_s = data.display().to_string();

    // Behind Wharf's back: flip a byte in two files, lose one, add a stray.
    for d in [&md, &ld] {
        let p = blob_file(&data, d);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[1234] ^= 0x40;
        std::fs::write(&p, bytes).unwrap();
    }
    std::fs::remove_file(blob_file(&data, &lost)).unwrap();
    let stray = sha256(b"stray");
    std::fs::create_dir_all(blob_file(&data, &stray).parent().unwrap()).unwrap();
    std::fs::write(blob_file(&data, &stray), b"stray").unwrap();

    let (code, out) = wharf_cli(&["verify", "--data", &data_s]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("corrupt: {md}")) && out.contains(&format!("corrupt: {ld}")),
        "{out}"
    );
    assert!(out.contains(&format!("missing: {lost}")), "{out}");
    assert!(out.contains(&stray), "{out}");
    assert!(out.contains("2 corrupt, 1 orphaned, 1 missing"), "{out}");
    let (_, out) = wharf_cli(&["verify", "--data", &data_s, "--repair"]);
    assert!(out.contains("repaired"), "{out}");
    assert!(data.join("quarantine").read_dir().unwrap().count() >= 3);
    let (code, out) = wharf_cli(&["verify", "--data", &data_s]);
    assert_eq!(code, 0, "clean after repair: {out}");
    assert!(out.contains("0 corrupt, 0 orphaned, 0 missing"), "{out}");

    let w = Wharf::start_on(&data, up.mirror_opts(&[]));
    let api = Api::new(&w);
    up.reset();
    assert_eq!(
        api.get(&format!("/v2/library/m/blobs/{md}"))
            .await
            .bytes()
            .await
            .unwrap(),
        mirrored
    );
    assert_eq!(
        up.count("GET", "/blobs/"),
        1,
        "the mirrored blob was fetched again"
    );
    let r = api.get(&format!("/v2/golden/l/blobs/{ld}")).await;
    assert_eq!(r.status(), 404, "corrupt local content is never served");
}

/// A byte flipped behind Wharf's back is caught on the next read: never
/// served; a mirrored blob is fetched again, a local one is gone (404).
#[tokio::test]
async fn a_flipped_byte_is_caught_on_the_next_read() {
    let up = Upstream::start(false);
    let mirrored = pattern(500_000, 4);
    let md = Api::at(&up.registry_addr)
        .push_blob("library/flip", &mirrored)
        .await;
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    assert_eq!(
        api.get(&format!("/v2/library/flip/blobs/{md}"))
            .await
            .bytes()
            .await
            .unwrap(),
        mirrored
    );
    let local = pattern(300_000, 8);
    let ld = api.push_blob("golden/flip", &local).await;
    let image = push_image(&api, "golden/flip", "v1", "flip").await;

    let flip = |d: &str| {
        let p = blob_file(&w.data, d);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let mut b = [0u8; 1];
        use std::io::{Read, Seek, SeekFrom, Write};
        f.seek(SeekFrom::Start(100)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(&[b[0] ^ 1]).unwrap();
    };
    flip(&md);
    flip(&ld);
    flip(&image);
    up.reset();
    if on_s3() {
        // The data directory is only a cache there: a damaged copy is
        // dropped and the bucket's intact one served, upstream untouched.
        let get = |p: String| {
            let api = &api;
            async move { api.get(&p).await.bytes().await.unwrap() }
        };
        assert_eq!(get(format!("/v2/library/flip/blobs/{md}")).await, mirrored);
        assert_eq!(get(format!("/v2/golden/flip/blobs/{ld}")).await, local);
        let m = get(format!("/v2/golden/flip/manifests/{image}")).await;
        assert_eq!(sha256(&m), image);
        assert_eq!(up.count("GET", "/blobs/"), 0);
        return;
    }
    let r = api.get(&format!("/v2/library/flip/blobs/{md}")).await;
    assert_eq!(
        r.bytes().await.unwrap(),
        mirrored,
        "the mirrored blob was fetched again"
    );
    assert_eq!(up.count("GET", "/blobs/"), 1);
    assert_eq!(
        api.status("GET", &format!("/v2/golden/flip/blobs/{ld}"))
            .await,
        404,
        "a corrupt local blob is not served"
    );
    assert_eq!(
        api.status("GET", &format!("/v2/golden/flip/manifests/{image}"))
            .await,
        404,
        "nor a corrupt manifest"
    );
    assert!(w.data.join("quarantine").read_dir().unwrap().count() >= 3);
    // GC goes on despite the quarantined manifest, keeping its repository's blobs.
    // An intact file whose metadata merely changed is re-checked and served.
    let other = api.push_blob("golden/flip", b"touched but intact").await;
    let p = blob_file(&w.data, &other);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, bytes).unwrap();
    assert_eq!(
        api.get(&format!("/v2/golden/flip/blobs/{other}"))
            .await
            .bytes()
            .await
            .unwrap(),
        "touched but intact"
    );
}

/// `wharf_store_bytes{class="mirrored"}` as the server reports it now.
async fn mirrored_bytes(api: &Api) -> u64 {
    let text = api.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("wharf_store_bytes{class=\"mirrored\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Sustained fills of small distinct blobs, eight at a time, through a
/// cache that holds a fraction of them: rounds follow one another, the
/// cache stays near its limit, blobs in constant use stay, and a round
/// trims the least recently used part only (the cache is not emptied).
#[tokio::test]
async fn eviction_keeps_up_with_sustained_fills_and_takes_only_the_oldest() {
    use futures_util::StreamExt;
    if on_s3() {
        // Open in issue 12: on S3 each removal is two requests to the
        // bucket and rounds lag well behind this load (1.3-1.4 × the
        // limit), and recently used blobs were seen evicted under it (the
        // build before also evicts them in the test above when this one
        // runs beside it).
        eprintln!("not on S3 yet: eviction under sustained load there is still open");
        return;
    }
    const N: usize = 480;
    const SIZE: usize = 16 << 10;
    const LIMIT: u64 = 1 << 20;
    let blob = |i: usize| {
        let mut b = pattern(SIZE, 9);
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        b
    };
    let up = Upstream::start(false);
    let reg = Api::at(&up.registry_addr);
    let digests: Vec<String> = futures_util::stream::iter(0..N)
        .map(|i| {
            let (reg, b) = (&reg, blob(i));
            async move { reg.push_blob("library/many", &b).await }
        })
        .buffered(8)
        .collect()
        .await;
    let w = up.mirror(&["--max-cache-size", "1MiB"]);
    let api = Api::new(&w);
    let pull = |i: usize| {
        let req = api.req("GET", &format!("/v2/library/many/blobs/{}", digests[i]));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap().len(), SIZE);
        }
    };
    // Blobs 0..8 are used all the time; the rest pass through once.
    const HOT: usize = 8;
    for i in 0..HOT {
        pull(i).await;
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let load = async {
        futures_util::stream::iter(HOT..N)
            .map(|i| async move {
                pull(i).await;
                pull(i % HOT).await;
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let sample = async {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(mirrored_bytes(&api).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    };
    let ((), peak) = tokio::join!(load, sample);
    eprintln!("peak {peak} bytes against a limit of {LIMIT}");
    // A debug build on a busy machine lags a little behind the fills;
    // the benchmark measures the bound itself.
    assert!(peak <= LIMIT + LIMIT / 4, "peak {peak}");
    let settled = {
        let mut last = mirrored_bytes(&api).await;
        for _ in 0..100 {
            if last <= LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = mirrored_bytes(&api).await;
        }
        last
    };
    assert!(settled <= LIMIT, "settled at {settled}");
    assert!(
        settled >= LIMIT / 2,
        "a round took more than the oldest part: {settled} bytes left"
    );
    // The hot blobs and the newest ones are still cached.
    up.reset();
    let mut fetched = Vec::new();
    for i in (0..HOT).chain(N - 8..N) {
        let before = up.count("GET", "/blobs/");
        pull(i).await;
        if up.count("GET", "/blobs/") > before {
            fetched.push(i);
        }
    }
    assert!(
        fetched.is_empty(),
        "hot or newest content was evicted: {fetched:?}"
    );
}

/// An evicted manifest takes the records of the tags that resolved to it
/// along: the JSON API no longer lists them, and after a restart a pull of
/// the tag fetches it again.
#[tokio::test]
async fn eviction_forgets_the_tags_of_evicted_manifests() {
    let up = Upstream::start(false);
    let reg = Api::at(&up.registry_addr);
    let manifest = push_image(&reg, "library/old", "1", "old").await;
    let layers: Vec<Vec<u8>> = (0..2).map(|i| pattern(700 << 10, i + 40)).collect();
    let mut digests = Vec::new();
    for l in &layers {
        digests.push(reg.push_blob("library/big", l).await);
    }
    let w = up.mirror(&["--max-cache-size", "1MiB"]);
    let api = Api::new(&w);
    let pull_tag = || api.get("/v2/library/old/manifests/1");
    assert_eq!(pull_tag().await.status(), 200);
    let tags = "/api/v1/repositories/docker.io/library/old/tags";
    let listed = |v: serde_json::Value| v["tags"].as_array().map_or(0, Vec::len);
    assert_eq!(listed(api.json(tags).await), 1, "the pull is remembered");
    // Two layers pass the limit; the manifest is the least recently used.
    for d in &digests {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = api.get(&format!("/v2/library/big/blobs/{d}")).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            !blob_file(&w.data, &manifest).exists()
        })
        .await,
        "the manifest was not evicted: {}",
        w.log()
    );
    let mut gone = false;
    for _ in 0..100 {
        let r = api.get(tags).await;
        if r.status() == 404 || listed(r.json().await.unwrap()) == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the tag of the evicted manifest is still listed");
    // A restart (the manifest is not in memory either): the tag is fetched
    // again, not an error.
    let opts = up.mirror_opts(&["--max-cache-size", "1MiB"]);
    let (data, _tmp) = w.stop();
    let w = Wharf::start_on(&data, opts);
    let api = Api::new(&w);
    up.reset();
    let r = api.get("/v2/library/old/manifests/1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(manifest.as_str())
    );
    assert_eq!(up.count("GET", "/manifests/"), 1, "fetched again");
}
