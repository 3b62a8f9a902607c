//! Access control and TLS, measured side by side in one run: Wharf over
//! HTTPS with logins (clients carrying a bearer token from `/token`), the
//! same Wharf over HTTPS without access control, distribution 2.8 with
//! htpasswd and TLS (clients sending Basic credentials, the only way it
//! takes them), and nginx serving the same blob file over TLS. All use one
//! test CA and certificate; the load generator checks it.
//!
//! - Warm manifest by tag, 32 connections: requests per second.
//! - Warm 64 MiB blob, 16 connections: server CPU seconds per GiB served.
//!
//! Run: `cargo bench --bench secure` (release build; `bash benches/run.sh`
//! runs it after the mirror comparison). `WHARF_BENCH_QUICK=1` shrinks the
//! data and durations for a smoke run; `WHARF_BENCH_RUNS=N` sets the runs.
//! Prints one table and writes `target/bench-secure.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::pki::{htpasswd, TestCa};
use common::{require, Api, OCI_MANIFEST};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use support::{
    cpu_seconds, fmt, free_port, load, median, pattern, ratio, spread, worker_pid, Server, Target,
};

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
const REPO: &str = "golden/big";

/// The certificate, key and users every system is started with.
struct Setup {
    ca: TestCa,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    users: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start_wharf(s: &Setup, auth: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(["serve", "--listen", &addr, "--data"])
        .arg(dir.path().join("data"))
        .args(["--local-namespace", "golden"])
        .args(["--upstream", "docker.io=http://127.0.0.1:9"])
        .arg("--tls-cert")
        .arg(&s.cert)
        .arg("--tls-key")
        .arg(&s.key)
        .env("WHARF_LOG", "warn");
    if auth {
        cmd.arg("--htpasswd").arg(&s.users);
    }
    Server::spawn(
        if auth { "wharf" } else { "wharf, no auth" },
        cmd,
        addr,
        dir,
    )
}

fn start_distribution(s: &Setup) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nauth:\n  htpasswd:\n    realm: bench\n    path: {}\nhttp:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().join("data").display(),
            s.users.display(),
            s.cert.display(),
            s.key.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(require("docker-registry"));
    cmd.arg("serve").arg(&cfg);
    Server::spawn("distribution", cmd, addr, dir)
}

#[derive(Default, Clone, serde::Serialize)]
struct Row {
    manifest_rps: Option<f64>,
    blob16_cpu_s_per_gib: Option<f64>,
    blob16_gib_per_s: Option<f64>,
}

/// Pushes a one-layer image to `REPO:1` as the bench user; returns the
/// manifest bytes.
async fn seed(api: &Api, layer: &[u8], layer_digest: &str) -> Vec<u8> {
    let api = api.basic(USER, PASSWORD);
    assert_eq!(api.push_blob(REPO, layer).await, layer_digest);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = api.push_blob(REPO, config).await;
    let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":config.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":layer_digest,"size":layer.len()}]})
    .to_string()
    .into_bytes();
    assert_eq!(
        api.put_manifest(REPO, "1", OCI_MANIFEST, &m).await.status(),
        201
    );
    m
}

async fn measure(server: &Server, pid: u32, target: &Target, digest: &str, secs: f64) -> Row {
    let manifest = format!("/v2/{REPO}/manifests/1");
    load(target, &manifest, Some(OCI_MANIFEST), 4, 0.5).await;
    let (n, _) = load(target, &manifest, Some(OCI_MANIFEST), 32, secs).await;
    let blob = format!("/v2/{REPO}/blobs/{digest}");
    load(target, &blob, None, 1, 0.0).await;
    let cpu0 = cpu_seconds(pid);
    let t0 = std::time::Instant::now();
    let (_, bytes) = load(target, &blob, None, 16, secs).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    eprintln!("  {}: {n} manifests, {gib:.2} GiB of blob", server.name);
    Row {
        manifest_rps: Some(n as f64 / secs),
        blob16_cpu_s_per_gib: Some((cpu_seconds(pid) - cpu0) / gib.max(1e-9)),
        blob16_gib_per_s: Some(gib / elapsed),
    }
}

fn main() {
    let quick = std::env::var("WHARF_BENCH_QUICK").is_ok_and(|v| v != "0");
    let (blob_size, secs) = if quick {
        (4usize << 20, 2.0)
    } else {
        (64usize << 20, 5.0)
    };
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 })
        .max(1);
    let systems =
        std::env::var("WHARF_BENCH_SYSTEMS").unwrap_or_else(|_| "wharf,distribution,nginx".into());
    let wanted = |s: &str| systems.split(',').any(|w| w.trim() == s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Bench CA");
    let (cert, key) = ca.server("bench");
    let users = dir.path().join("htpasswd");
    htpasswd(&users, &[(USER, PASSWORD)]);
    let setup = Setup {
        ca,
        cert,
        key,
        users,
        _dir: dir,
    };
    let tls = support::tls_client(setup.ca.pem());
    let layer = pattern(blob_size, 7);
    let digest = common::sha256(&layer);

    rt.block_on(async {
        let mut rows: Vec<(&str, Vec<Row>)> = vec![
            ("wharf", vec![]),
            ("wharf, no auth", vec![]),
            ("distribution", vec![]),
            ("nginx", vec![]),
        ];
        let mut manifest = Vec::new();
        for run in 1..=runs {
            eprintln!("run {run} of {runs}");
            for (i, name) in ["wharf", "wharf, no auth", "distribution"]
                .iter()
                .enumerate()
            {
                let system = if *name == "distribution" {
                    "distribution"
                } else {
                    "wharf"
                };
                if !wanted(system) {
                    continue;
                }
                let s = match i {
                    0 => start_wharf(&setup, true),
                    1 => start_wharf(&setup, false),
                    _ => start_distribution(&setup),
                };
                let api = Api::tls_at(&s.addr, setup.ca.pem());
                manifest = seed(&api, &layer, &digest).await;
                let authorization = match i {
                    // A token, fetched once as Docker and containerd do.
                    0 => Some(format!(
                        "Bearer {}",
                        api.token_for(
                            Some((USER, PASSWORD)),
                            &[&format!("repository:{REPO}:pull")]
                        )
                        .await
                    )),
                    1 => None,
                    _ => Some(api.basic(USER, PASSWORD).auth.unwrap_or_default()),
                };
                let target = Target {
                    addr: s.addr.clone(),
                    tls: Some(tls.clone()),
                    authorization,
                };
                let row = measure(&s, s.child.id(), &target, &digest, secs).await;
                rows[i].1.push(row);
            }
            if wanted("nginx") && !manifest.is_empty() {
                let blob = setup._dir.path().join("layer");
                std::fs::write(&blob, &layer).unwrap();
                let pair = Some((setup.cert.as_path(), setup.key.as_path()));
                let n = support::start_nginx(REPO, &manifest, &digest, &blob, pair);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let target = Target {
                    addr: n.addr.clone(),
                    tls: Some(tls.clone()),
                    authorization: None,
                };
                let worker = worker_pid(n.child.id());
                rows[3]
                    .1
                    .push(measure(&n, worker, &target, &digest, secs).await);
            }
        }
        print_table(&rows, quick);
        support::write_results("bench-secure.json", quick, runs, &rows);
    });
}

type Metric = fn(&Row) -> Option<f64>;

fn print_table(rows: &[(&str, Vec<Row>)], quick: bool) {
    let get = |i: usize| rows[i].1.clone();
    let (w, open, d, n) = (get(0), get(1), get(2), get(3));
    if quick {
        println!("\nQUICK SMOKE RUN (small data; numbers are not meaningful)");
    }
    println!(
        "\nAll over TLS. Medians of {} runs; the last column is wharf's spread (min–max).\n",
        w.len()
    );
    println!("| metric | wharf (token) | wharf, no auth | distribution (htpasswd) | nginx | wharf ÷ no auth | wharf ÷ distribution | wharf ÷ nginx | wharf spread |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let metrics: [(&str, Metric, usize); 3] = [
        (
            "warm manifest by tag, 32 conns (req/s)",
            |r| r.manifest_rps,
            0,
        ),
        (
            "warm 64 MiB blob, 16 conns: server CPU s per GiB",
            |r| r.blob16_cpu_s_per_gib,
            3,
        ),
        (
            "warm 64 MiB blob, 16 conns: GiB/s",
            |r| r.blob16_gib_per_s,
            2,
        ),
    ];
    for (name, m, p) in metrics {
        let (a, b, c, e) = (
            median(&w, m),
            median(&open, m),
            median(&d, m),
            median(&n, m),
        );
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(a, p),
            fmt(b, p),
            fmt(c, p),
            fmt(e, p),
            ratio(a, b),
            ratio(a, c),
            ratio(a, e),
            spread(&w, m, p)
        );
    }
}
