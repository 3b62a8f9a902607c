//! Wharf with `--storage s3` beside distribution 2.8's S3 storage driver,
//! both on one Garage (a real S3-compatible store on loopback), in one
//! run; and Wharf on the filesystem backend for the warm pull it should
//! match. For each: a 256 MiB push, a cold pull through the mirror (from
//! the reference registry behind the tests' counting proxy, so upstream
//! bytes are measured), a warm pull, and for Wharf a warm pull with an
//! empty local cache (a new data directory on the same bucket: every byte
//! from the bucket). Distribution has no local cache: each of its pulls
//! reads the bucket.
//!
//! Run: `cargo bench --bench s3` (release build). `WHARF_BENCH_QUICK=1`
//! shrinks the data for a smoke run. Prints one table with ratios and
//! writes `target/bench-s3.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::garage::{Garage, S3Target};
use common::upstream::Upstream;
use common::{require, Api};
use futures_util::StreamExt;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{fmt, free_port, median, pattern, ratio, spread, Server};

/// Removes the machine's own AWS and proxy settings from a command.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        let lower = k.to_ascii_lowercase();
        if k.starts_with("AWS_") || lower.ends_with("_proxy") {
            cmd.env_remove(&k);
        }
    }
}

fn start_wharf(upstream: &str, s3: Option<&S3Target>, dir: tempfile::TempDir) -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    let bin =
        std::env::var("WHARF_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_string());
    let mut cmd = Command::new(bin);
    clean_env(&mut cmd);
    cmd.args(["serve", "--listen", &addr, "--data"])
        .arg(dir.path().join("data"))
        .args(["--upstream", &format!("docker.io={upstream}")])
        .args(["--local-namespace", "golden"])
        .env("WHARF_LOG", "warn");
    if let Some(t) = s3 {
        cmd.args(t.args()).envs(t.env());
    }
    Server::spawn("wharf", cmd, addr, dir)
}

/// distribution on Garage: a plain registry (pushes), or with `proxy` a
/// pull-through cache of it.
fn start_distribution(g: &Garage, bucket: &str, proxy: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let debug = format!("127.0.0.1:{}", free_port());
    let proxy = proxy
        .map(|u| format!("proxy:\n  remoteurl: {u}\n"))
        .unwrap_or_default();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  s3:\n    region: garage\n    regionendpoint: {endpoint}\n    bucket: {bucket}\n\
             \x20   accesskey: {key}\n    secretkey: {secret}\n    secure: false\n    v4auth: true\n\
             \x20   rootdirectory: /registry\n    chunksize: 10485760\n  cache:\n    blobdescriptor: inmemory\n\
             \x20 delete:\n    enabled: true\n  redirect:\n    disable: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  debug:\n    addr: {debug}\nhealth:\n  storagedriver:\n    enabled: false\n{proxy}",
            endpoint = g.endpoint,
            key = g.key_id,
            secret = g.secret,
        ),
    )
    .unwrap();
    let mut cmd = Command::new(require("docker-registry"));
    // Its S3 driver refuses to start with AWS_CA_BUNDLE set.
    clean_env(&mut cmd);
    cmd.arg("serve").arg(&cfg);
    Server::spawn("distribution", cmd, addr, dir)
}

/// Pushes one image with a single `layer` to `repo:tag` (monolithic blob
/// uploads); returns the seconds it took and the layer's digest.
async fn push(addr: &str, repo: &str, tag: &str, layer: &[u8]) -> (f64, String) {
    let api = Api::at(addr);
    let start = Instant::now();
    let config = format!("{{\"bench\":\"{repo}:{tag}\"}}");
    let (_, _, ld) = common::push_image_of(&api, repo, tag, config.as_bytes(), layer).await;
    (start.elapsed().as_secs_f64(), ld)
}

/// Pulls `repo:tag` the way a client does (manifest, then config and
/// layer, each read to its end and checked); returns the seconds.
async fn pull(addr: &str, repo: &str, tag: &str) -> f64 {
    let api = Api::at(addr);
    let start = Instant::now();
    let m = api
        .req("GET", &format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", common::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200, "{addr}: manifest of {repo}:{tag}");
    let m: serde_json::Value = m.json().await.unwrap();
    let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in digests {
        let r = api.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), 200, "{addr}: blob {d}");
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut s = r.bytes_stream();
        while let Some(chunk) = s.next().await {
            sha2::Digest::update(&mut h, chunk.unwrap());
        }
        assert_eq!(
            format!("sha256:{}", hex::encode(sha2::Digest::finalize(h))),
            d,
            "{addr}: {d} intact"
        );
    }
    start.elapsed().as_secs_f64()
}

#[derive(Default, Clone, serde::Serialize)]
struct Row {
    push_s: Option<f64>,
    push_cpu_s: Option<f64>,
    cold_pull_s: Option<f64>,
    cold_pull_cpu_s: Option<f64>,
    cold_upstream_ratio: Option<f64>,
    warm_pull_s: Option<f64>,
    warm_pull_cpu_s: Option<f64>,
    warm_empty_cache_pull_s: Option<f64>,
    warm_empty_cache_pull_cpu_s: Option<f64>,
}

/// Runs `f` and gives its result and the CPU seconds `pid` spent meanwhile.
async fn with_cpu<T>(pid: u32, f: impl std::future::Future<Output = T>) -> (T, f64) {
    let before = support::cpu_seconds(pid);
    let out = f.await;
    (out, support::cpu_seconds(pid) - before)
}

fn main() {
    let quick = std::env::var("WHARF_BENCH_QUICK").is_ok_and(|v| v != "0");
    let size: usize = if quick { 16 << 20 } else { 256 << 20 };
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 })
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let g = Garage::start();
        let up = Upstream::start(false);
        let reg = Api::at(&up.registry_addr);
        let mut rows: Vec<(&'static str, Vec<Row>)> = vec![
            ("wharf s3", Vec::new()),
            ("distribution s3", Vec::new()),
            ("wharf fs", Vec::new()),
        ];
        for run in 1..=runs {
            // Fresh, incompressible content for every run and system:
            // Garage deduplicates blocks, and skopeo-style mounts would
            // make a second push of the same bytes free.
            let fresh = |n: u64| pattern(size, (run as u64) * 1000 + n);
            for (i, (name, all)) in rows.iter_mut().enumerate() {
                eprintln!("measuring {name}, run {run} of {runs} ...");
                let n = i as u64 * 10;
                let upstream_repo = format!("library/r{run}s{i}");
                common::push_image_of(&reg, &upstream_repo, "1", b"{}", &fresh(n)).await;
                let mut row = Row::default();
                let layer = fresh(n + 1);
                match *name {
                    "distribution s3" => {
                        let bucket = format!("dist{run}");
                        g.create_bucket(&bucket);
                        let d = start_distribution(&g, &bucket, None);
                        let ((secs, _), cpu) =
                            with_cpu(d.child.id(), push(&d.addr, "golden/app", "1", &layer)).await;
                        (row.push_s, row.push_cpu_s) = (Some(secs), Some(cpu));
                        drop(d);
                        let pbucket = format!("distproxy{run}");
                        g.create_bucket(&pbucket);
                        let p = start_distribution(&g, &pbucket, Some(&up.url()));
                        up.reset();
                        let pid = p.child.id();
                        let (secs, cpu) = with_cpu(pid, pull(&p.addr, &upstream_repo, "1")).await;
                        (row.cold_pull_s, row.cold_pull_cpu_s) = (Some(secs), Some(cpu));
                        row.cold_upstream_ratio = Some(up.blob_bytes() as f64 / size as f64);
                        // Its proxy writes to the bucket after the client is
                        // served; a pull before that would go upstream again.
                        tokio::time::sleep(Duration::from_secs(if quick { 3 } else { 12 })).await;
                        let (secs, cpu) = with_cpu(pid, pull(&p.addr, &upstream_repo, "1")).await;
                        (row.warm_pull_s, row.warm_pull_cpu_s) = (Some(secs), Some(cpu));
                        row.warm_empty_cache_pull_s = row.warm_pull_s;
                        row.warm_empty_cache_pull_cpu_s = row.warm_pull_cpu_s;
                    }
                    _ => {
                        let s3 = (*name == "wharf s3").then(|| g.target(&format!("run{run}")));
                        let w = start_wharf(&up.url(), s3.as_ref(), tempfile::tempdir().unwrap());
                        let pid = w.child.id();
                        let ((secs, _), cpu) =
                            with_cpu(pid, push(&w.addr, "golden/app", "1", &layer)).await;
                        (row.push_s, row.push_cpu_s) = (Some(secs), Some(cpu));
                        up.reset();
                        let (secs, cpu) = with_cpu(pid, pull(&w.addr, &upstream_repo, "1")).await;
                        (row.cold_pull_s, row.cold_pull_cpu_s) = (Some(secs), Some(cpu));
                        row.cold_upstream_ratio = Some(up.blob_bytes() as f64 / size as f64);
                        // The fill commits after the client is served.
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let (secs, cpu) = with_cpu(pid, pull(&w.addr, &upstream_repo, "1")).await;
                        (row.warm_pull_s, row.warm_pull_cpu_s) = (Some(secs), Some(cpu));
                        drop(w);
                        if let Some(t) = &s3 {
                            let w = start_wharf(&up.url(), Some(t), tempfile::tempdir().unwrap());
                            up.reset();
                            let (secs, cpu) =
                                with_cpu(w.child.id(), pull(&w.addr, &upstream_repo, "1")).await;
                            row.warm_empty_cache_pull_s = Some(secs);
                            row.warm_empty_cache_pull_cpu_s = Some(cpu);
                            assert_eq!(up.blob_bytes(), 0, "served from the bucket");
                        }
                    }
                }
                all.push(row);
            }
        }
        print_table(&rows, quick, size);
        support::write_results("bench-s3.json", quick, runs, &rows);
        drop(g);
    });
}

type Metric = fn(&Row) -> Option<f64>;

fn print_table(rows: &[(&str, Vec<Row>)], quick: bool, size: usize) {
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    let (w, d, f) = (get("wharf s3"), get("distribution s3"), get("wharf fs"));
    if quick {
        println!("\nQUICK SMOKE RUN (small data; numbers are not meaningful)");
    }
    println!(
        "\n{} MiB image, medians of {} runs; spreads are min–max.\n",
        size >> 20,
        w.len()
    );
    println!("| metric | wharf s3 | distribution s3 | wharf fs | wharf s3 / distribution s3 | wharf s3 / wharf fs | wharf s3 spread | distribution s3 spread |");
    println!("|---|---|---|---|---|---|---|---|");
    let metrics: [(&str, Metric, usize); 9] = [
        ("push (s)", |r| r.push_s, 2),
        ("  server CPU s", |r| r.push_cpu_s, 2),
        ("cold pull through the mirror (s)", |r| r.cold_pull_s, 2),
        ("  server CPU s", |r| r.cold_pull_cpu_s, 2),
        (
            "  upstream bytes ÷ image bytes",
            |r| r.cold_upstream_ratio,
            2,
        ),
        ("warm pull, local cache (s)", |r| r.warm_pull_s, 2),
        ("  server CPU s", |r| r.warm_pull_cpu_s, 2),
        (
            "warm pull, empty local cache (s)",
            |r| r.warm_empty_cache_pull_s,
            2,
        ),
        ("  server CPU s", |r| r.warm_empty_cache_pull_cpu_s, 2),
    ];
    for (name, m, p) in metrics {
        let (a, b, c) = (median(&w, m), median(&d, m), median(&f, m));
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
