//! Wharf beside the reference registry's proxy mode (distribution 2.8,
//! `proxy: remoteurl:`) and nginx serving the same files with `sendfile`,
//! in one run, against one upstream (the reference registry behind the
//! tests' counting proxy, so upstream traffic is measured, not assumed).
//!
//! Run: `cargo bench --bench compare` (release build). `WHARF_BENCH_QUICK=1`
//! shrinks the data and durations for a smoke run. Prints one table with
//! ratios and writes `target/bench-results.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::upstream::Upstream;
use common::{require, run, sha256, Api};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{
    cpu_seconds, fmt, free_port, load, median, pattern, ratio, reset_peak, rss, spread, worker_pid,
    Server, Target,
};

struct Sizes {
    small_layer: usize,
    big_layer: usize,
    big_layers: usize,
    seconds: u64,
}

fn start_wharf(upstream: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // WHARF_TEST_BIN measures another build (an earlier one, for
    // before/after figures), as it does for the tests.
    let bin =
        std::env::var("WHARF_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_string());
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &addr, "--data"])
        .arg(dir.path().join("data"))
        .args([
            "--upstream",
            &format!("docker.io={upstream}"),
            "--tag-ttl",
            "10m",
        ])
        .env("WHARF_LOG", "warn");
    Server::spawn("wharf", cmd, addr, dir)
}

fn start_distribution(upstream: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nproxy:\n  remoteurl: {upstream}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(require("docker-registry"));
    cmd.arg("serve").arg(&cfg);
    Server::spawn("distribution", cmd, addr, dir)
}

/// Pushes an image with `layers` layers of `size` bytes; returns
/// (manifest bytes, layer digests).
async fn seed_image(
    reg: &Api,
    repo: &str,
    tag: &str,
    layers: usize,
    size: usize,
    seed: u64,
) -> (Vec<u8>, Vec<String>) {
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for i in 0..layers {
        let l = pattern(size, seed * 100 + i as u64);
        let d = reg.push_blob(repo, &l).await;
        descs.push(json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d,"size":size}));
        digests.push(d);
    }
    let config =
        json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":digests}})
            .to_string();
    let cd = reg.push_blob(repo, config.as_bytes()).await;
    let m = json!({"schemaVersion":2,"mediaType":common::OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":config.len()},
        "layers":descs}).to_string().into_bytes();
    assert_eq!(
        reg.put_manifest(repo, tag, common::OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    (m, digests)
}

fn skopeo_pull(addr: &str, image: &str, dest: &Path) -> f64 {
    let start = Instant::now();
    run(Command::new(require("skopeo"))
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{addr}/{image}"))
        .arg(format!("dir:{}", dest.display())));
    start.elapsed().as_secs_f64()
}

#[derive(Default, Clone, serde::Serialize)]
struct Row {
    idle_rss_mib: Option<f64>,
    cold_pull_s: Option<f64>,
    warm_pull_s: Option<f64>,
    cold_pull_cpu_s: Option<f64>,
    cold_pull_upstream_cpu_s: Option<f64>,
    warm_pull_cpu_s: Option<f64>,
    cold_upstream_ratio: Option<f64>,
    concurrent_upstream_ratio: Option<f64>,
    manifest_rps: Option<f64>,
    manifest_upstream_requests: Option<u64>,
    blob1_cpu_s_per_gib: Option<f64>,
    blob16_cpu_s_per_gib: Option<f64>,
    blob16_gib_per_s: Option<f64>,
    blob16_peak_rss_mib: Option<f64>,
}

async fn bench_mirror(
    s: &Server,
    up: &Upstream,
    sizes: &Sizes,
    big_digests: &[String],
    solo: &str,
) -> Row {
    let mut row = Row::default();
    let pid = s.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    row.idle_rss_mib = Some(rss(pid).0 as f64 / 1048576.0);
    let image_bytes = (sizes.big_layer * sizes.big_layers) as f64;

    // Cold and warm pulls of the big image with skopeo.
    let tmp = tempfile::tempdir().unwrap();
    up.reset();
    let cpu = cpu_seconds(pid);
    // The upstream side: the registry and the counting proxy (which runs
    // in this process, otherwise idle while skopeo pulls).
    let upstream_cpu =
        || up.registry_pid().map_or(0.0, cpu_seconds) + cpu_seconds(std::process::id());
    let up_cpu = upstream_cpu();
    row.cold_pull_s = Some(skopeo_pull(
        &s.addr,
        "library/big:1",
        &tmp.path().join("cold"),
    ));
    row.cold_pull_cpu_s = Some(cpu_seconds(pid) - cpu);
    row.cold_pull_upstream_cpu_s = Some(upstream_cpu() - up_cpu);
    // Config blobs are tiny; the ratio is about the layers.
    row.cold_upstream_ratio = Some(up.blob_bytes() as f64 / image_bytes);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_seconds(pid);
    row.warm_pull_s = Some(skopeo_pull(
        &s.addr,
        "library/big:1",
        &tmp.path().join("warm"),
    ));
    row.warm_pull_cpu_s = Some(cpu_seconds(pid) - cpu);

    // 16 clients at once on an uncached blob.
    up.reset();
    let (_, got) = load(
        &Target::plain(&s.addr),
        &format!("/v2/library/solo/blobs/{solo}"),
        None,
        16,
        0.0,
    )
    .await;
    assert_eq!(
        got,
        16 * sizes.big_layer as u64,
        "{}: 16 whole blobs",
        s.name
    );
    row.concurrent_upstream_ratio = Some(up.blob_bytes() as f64 / sizes.big_layer as f64);

    up.reset();
    let m = manifest_rps(&s.addr, sizes.seconds as f64).await;
    row.manifest_rps = Some(m);
    row.manifest_upstream_requests = Some(up.seen().len() as u64);
    blob_cpu(&mut row, pid, &s.addr, &big_digests[0], sizes).await;
    row
}

async fn manifest_rps(addr: &str, secs: f64) -> f64 {
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let t = Target::plain(addr);
    load(&t, "/v2/library/big/manifests/1", Some(accept), 4, 0.5).await;
    let (n, _) = load(&t, "/v2/library/big/manifests/1", Some(accept), 32, secs).await;
    n as f64 / secs
}

async fn blob_cpu(row: &mut Row, pid: u32, addr: &str, digest: &str, sizes: &Sizes) {
    let path = format!("/v2/library/big/blobs/{digest}");
    for conns in [1usize, 16] {
        reset_peak(pid);
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let (_, bytes) = load(
            &Target::plain(addr),
            &path,
            None,
            conns,
            sizes.seconds as f64,
        )
        .await;
        let secs = t0.elapsed().as_secs_f64();
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let per_gib = (cpu_seconds(pid) - cpu0) / gib.max(1e-9);
        if conns == 1 {
            row.blob1_cpu_s_per_gib = Some(per_gib);
        } else {
            row.blob16_cpu_s_per_gib = Some(per_gib);
            row.blob16_gib_per_s = Some(gib / secs);
            row.blob16_peak_rss_mib = Some(rss(pid).1 as f64 / 1048576.0);
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let quick = std::env::var("WHARF_BENCH_QUICK").is_ok_and(|v| v != "0");
    let sizes = if quick {
        Sizes {
            small_layer: 256 << 10,
            big_layer: 4 << 20,
            big_layers: 2,
            seconds: 2,
        }
    } else {
        Sizes {
            small_layer: 1 << 20,
            big_layer: 64 << 20,
            big_layers: 4,
            seconds: 5,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let up = Upstream::start(false);
        let reg = Api::at(&up.registry_addr);
        eprintln!("seeding the upstream ...");
        let (big_manifest, big_digests) = seed_image(&reg, "library/big", "1", sizes.big_layers, sizes.big_layer, 1).await;
        let (small_manifest, _) = seed_image(&reg, "library/small", "1", 3, sizes.small_layer, 2).await;
        let (_, solo) = seed_image(&reg, "library/solo", "1", 1, sizes.big_layer, 3).await;
        // A two-platform index of the small image and a variant.
        let (variant, _) = seed_image(&reg, "library/small", "arm64", 3, sizes.small_layer, 4).await;
        let index = json!({"schemaVersion":2,"mediaType":common::OCI_INDEX,"manifests":[
            {"mediaType":common::OCI_MANIFEST,"digest":sha256(&small_manifest),"size":small_manifest.len(),"platform":{"architecture":"amd64","os":"linux"}},
            {"mediaType":common::OCI_MANIFEST,"digest":sha256(&variant),"size":variant.len(),"platform":{"architecture":"arm64","os":"linux"}}]})
            .to_string();
        assert_eq!(reg.put_manifest("library/small", "multi", common::OCI_INDEX, index.as_bytes()).await.status(), 201);

        let runs: usize = std::env::var("WHARF_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 3 })
            .max(1);
        // WHARF_BENCH_SYSTEMS=wharf,nginx (say) measures only those; nginx
        // serves the blob file Wharf cached, so it needs wharf.
        let systems = std::env::var("WHARF_BENCH_SYSTEMS")
            .unwrap_or_else(|_| "wharf,distribution,nginx".into());
        let wanted = |s: &str| systems.split(',').any(|w| w.trim() == s);
        assert!(wanted("wharf") || !wanted("nginx"), "nginx needs wharf in WHARF_BENCH_SYSTEMS");
        let mut rows: Vec<(&'static str, Vec<Row>)> = Vec::new();
        let mut wharf_blob_file: Option<PathBuf> = None;
        for which in ["wharf", "distribution"].into_iter().filter(|w| wanted(w)) {
            let mut all = Vec::new();
            for run in 1..=runs {
                eprintln!("measuring {which}, run {run} of {runs} ...");
                let s = if which == "wharf" { start_wharf(&up.url()) } else { start_distribution(&up.url()) };
                all.push(bench_mirror(&s, &up, &sizes, &big_digests, &solo[0]).await);
                if which == "wharf" && wharf_blob_file.is_none() {
                    let p = common::blob_file(&s._dir.path().join("data"), &big_digests[0]);
                    let keep = std::env::temp_dir().join(format!("wharf-bench-blob-{}", std::process::id()));
                    std::fs::copy(&p, &keep).unwrap();
                    wharf_blob_file = Some(keep);
                }
            }
            rows.push((which, all));
        }
        let blob = wharf_blob_file.unwrap_or_default();
        let mut all = Vec::new();
        for run in (1..=runs).filter(|_| wanted("nginx")) {
            eprintln!("measuring nginx, run {run} of {runs} ...");
            let n = support::start_nginx("library/big", &big_manifest, &big_digests[0], &blob, None);
            let mut nrow = Row::default();
            tokio::time::sleep(Duration::from_secs(1)).await;
            nrow.idle_rss_mib = Some(rss(n.child.id()).0 as f64 / 1048576.0);
            nrow.manifest_rps = Some(manifest_rps(&n.addr, sizes.seconds as f64).await);
            // nginx runs a worker process: measure that one.
            let worker = worker_pid(n.child.id());
            blob_cpu(&mut nrow, worker, &n.addr, &big_digests[0], &sizes).await;
            all.push(nrow);
        }
        if wanted("nginx") {
            rows.push(("nginx", all));
        }
        // The copy kept for nginx, whether nginx ran or not.
        if !blob.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&blob);
        }

        print_table(&rows, quick);
        support::write_results("bench-results.json", quick, runs, &rows);
    });
}

/// One metric of a run.
type Metric = fn(&Row) -> Option<f64>;

fn print_table(rows: &[(&str, Vec<Row>)], quick: bool) {
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    let (w, d, n) = (get("wharf"), get("distribution"), get("nginx"));
    if quick {
        println!("\nQUICK SMOKE RUN (small data; numbers are not meaningful)");
    }
    println!(
        "\nMedians of {} runs; the last two columns give the spread (min–max) over the runs.\n",
        w.len()
    );
    println!("| metric | wharf | distribution | nginx | wharf/distribution | wharf/nginx | wharf spread | distribution spread |");
    println!("|---|---|---|---|---|---|---|---|");
    let metrics: [(&str, Metric, usize); 15] = [
        ("idle RSS (MiB)", |r| r.idle_rss_mib, 1),
        ("cold pull, big image (s)", |r| r.cold_pull_s, 2),
        ("warm pull, big image (s)", |r| r.warm_pull_s, 2),
        (
            "cold ÷ warm pull time",
            |r| r.cold_pull_s.zip(r.warm_pull_s).map(|(a, b)| a / b),
            2,
        ),
        ("  server CPU s, cold pull", |r| r.cold_pull_cpu_s, 2),
        ("  server CPU s, warm pull", |r| r.warm_pull_cpu_s, 2),
        (
            "  upstream CPU s (registry + proxy), cold pull",
            |r| r.cold_pull_upstream_cpu_s,
            2,
        ),
        (
            "cold pull: upstream bytes ÷ image bytes",
            |r| r.cold_upstream_ratio,
            2,
        ),
        (
            "16 clients, uncached blob: upstream bytes ÷ blob",
            |r| r.concurrent_upstream_ratio,
            2,
        ),
        (
            "warm manifest by tag, 32 conns (req/s)",
            |r| r.manifest_rps,
            0,
        ),
        (
            "  upstream requests meanwhile",
            |r| r.manifest_upstream_requests.map(|v| v as f64),
            0,
        ),
        (
            "warm blob, 1 conn: server CPU s per GiB",
            |r| r.blob1_cpu_s_per_gib,
            3,
        ),
        (
            "warm blob, 16 conns: server CPU s per GiB",
            |r| r.blob16_cpu_s_per_gib,
            3,
        ),
        ("warm blob, 16 conns: GiB/s", |r| r.blob16_gib_per_s, 2),
        (
            "warm blob, 16 conns: peak RSS (MiB)",
            |r| r.blob16_peak_rss_mib,
            1,
        ),
    ];
    for (name, m, p) in metrics {
        let (a, b, c) = (median(&w, m), median(&d, m), median(&n, m));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(a, p),
            fmt(b, p),
            fmt(c, p),
            ratio(a, b),
            ratio(a, c),
            spread(&w, m, p),
            spread(&d, m, p)
        );
    }
}
