//! Wharf at scale: grows one store to 2,000, 20,000 and 100,000 small
//! images (by default) and measures, at each size, what a store that big
//! costs: push rate, start-up time, resident memory idle and after a short
//! warm-up, data directory and index bytes, and the time and peak memory
//! of `wharf gc --dry-run` and `wharf verify`. The reference registry
//! (distribution 2.8, `docker-registry`, filesystem storage) is grown the
//! same way beside it, for the measurements it has an equivalent of (no
//! `verify`; `garbage-collect --dry-run` for gc).
//!
//! One image is a distinct ~200-byte JSON config, a distinct 1 KiB layer
//! and an OCI image manifest of the two, tagged `t{i}` in `scale/r{i %
//! 200}`. Sixteen clients push at once: Wharf takes each blob in one
//! request (`POST .../blobs/uploads/?digest=`), distribution, which does
//! not, in two (POST, then PUT); then the manifest. The store grows step
//! by step (2,000 images, 18,000 more, 80,000 more) and every system is
//! measured after each step:
//!
//! - the push of the step: images per second, server CPU per image
//!   (`/proc/PID/stat`), the server's peak RSS (`VmHWM`), and its RSS
//!   after 2 s idle;
//! - the server is stopped (SIGTERM), and a fresh one started on the same
//!   data: start-up is the time from spawn until `GET /v2/` answers 200
//!   (polled every 5 ms), then RSS 2 s later, then RSS after a warm-up of
//!   1,000 manifest GETs of random tags (16 clients) and the full tag
//!   lists of 20 repositories;
//! - with the server stopped: bytes allocated on disk (`st_blocks`, as
//!   `du`), split into the index (`DATA/index*`; for distribution its
//!   `repositories/` tree of links) and the rest (blobs); then `wharf gc
//!   --dry-run` and `wharf verify` (distribution: `docker-registry
//!   garbage-collect --dry-run`), wall time and peak RSS (GNU time's `%M`).
//!
//! The page cache is warm throughout (the data were just written): start-up
//! and the maintenance commands are measured without disk reads.
//!
//! Run: `cargo bench --bench scale` (release build). Sizes come from
//! `WHARF_BENCH_SCALE_SIZES` (increasing, comma-separated; default
//! `2000,20000,100000`); `WHARF_BENCH_QUICK=1` means `2000` only, unless
//! sizes are given. `WHARF_BENCH_SYSTEMS` (default `wharf,distribution`)
//! picks the systems; `WHARF_TEST_BIN` measures another build of Wharf, and
//! `WHARF_BENCH_BEFORE=PATH` a second build (an earlier one) beside it in
//! the same run, on a data directory of its own grown the same way. Data
//! directories go under `TMPDIR` and are removed at the end, unless
//! `WHARF_BENCH_KEEP=1` (for a look at them; their paths are printed).
//! Prints a table after each size and writes `target/bench-scale.json`
//! (updated after each size).
//!
//! How long it takes, on the 2-core machine of `benches/README.md`: the
//! default run about 30 minutes (Wharf's three steps 3, distribution's 22:
//! it pushes some 100 images a second; removing the 2.2 million files and
//! directories at the end 4 more); `WHARF_BENCH_QUICK=1` under a minute.
//! 1,000,000 images, by hand and Wharf only (`WHARF_BENCH_SCALE_SIZES=1000000
//! WHARF_BENCH_SYSTEMS=wharf`; distribution's store would be some 80 GB):
//! an estimated 35-45 minutes and 17 GB of disk, extrapolated from the
//! 100,000-image figures, not measured yet.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{Api, OCI_MANIFEST};
use futures_util::StreamExt;
use serde::Serialize;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{cpu_seconds, fmt, free_port, rss, Server};

/// Repositories the images are spread over.
const REPOS: usize = 200;
/// Clients pushing (and reading, in the warm-up) at once.
const CLIENTS: usize = 16;
/// Bytes of each layer.
const LAYER: usize = 1024;
/// Manifest GETs of random tags in the warm-up.
const WARM_GETS: usize = 1000;
/// Repositories whose whole tag list the warm-up reads.
const WARM_LISTS: usize = 20;
/// How long a server sits idle before its memory is read.
const IDLE: Duration = Duration::from_secs(2);
const GNU_TIME: &str = "/usr/bin/time";
const MIB: f64 = 1048576.0;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Wharf,
    Distribution,
}

/// What one system measured at one size.
#[derive(Serialize, Default, Clone)]
struct Row {
    images: usize,
    pushed: usize,
    push_s: f64,
    push_images_per_s: Option<f64>,
    push_cpu_ms_per_image: Option<f64>,
    push_peak_rss_mib: Option<f64>,
    after_push_rss_mib: Option<f64>,
    stop_s: Option<f64>,
    startup_s: Option<f64>,
    idle_rss_mib: Option<f64>,
    warm_gets_per_s: Option<f64>,
    warm_rss_mib: Option<f64>,
    warm_peak_rss_mib: Option<f64>,
    data_bytes: Option<f64>,
    index_bytes: Option<f64>,
    other_bytes: Option<f64>,
    files: Option<f64>,
    gc_s: Option<f64>,
    gc_peak_rss_mib: Option<f64>,
    verify_s: Option<f64>,
    verify_peak_rss_mib: Option<f64>,
    step_s: f64,
}

/// A system under test and its store, which outlives its servers.
struct System {
    name: &'static str,
    kind: Kind,
    bin: PathBuf,
    dir: tempfile::TempDir,
    images: usize,
    rows: Vec<Row>,
}

impl System {
    fn new(name: &'static str, kind: Kind, bin: PathBuf) -> System {
        System {
            name,
            kind,
            bin,
            dir: tempfile::Builder::new()
                .prefix("wharf-bench-scale-")
                .tempdir()
                .unwrap(),
            images: 0,
            rows: Vec::new(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// distribution's config file (its listen address changes per start;
    /// garbage-collect reads only the storage part).
    fn config(&self, addr: &str) -> PathBuf {
        let cfg = self.dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n",
                self.data().display()
            ),
        )
        .unwrap();
        cfg
    }

    /// The command serving this store on `addr`.
    fn serve(&self, addr: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        match self.kind {
            Kind::Wharf => {
                cmd.args(["serve", "--listen", addr, "--data"])
                    .arg(self.data())
                    .args(["--local-namespace", "scale"])
                    // A closed port: nothing here is mirrored.
                    .args(["--upstream", "docker.io=http://127.0.0.1:9"])
                    .env("WHARF_LOG", "warn");
            }
            Kind::Distribution => {
                cmd.arg("serve").arg(self.config(addr));
            }
        }
        cmd
    }

    /// The index: Wharf's `DATA/index*` (the database directory, and from
    /// index layout 2 on the file naming its layout and the lock),
    /// distribution's tree of links.
    fn index_paths(&self) -> Vec<PathBuf> {
        match self.kind {
            Kind::Wharf => std::fs::read_dir(self.data())
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default(),
            Kind::Distribution => vec![self.data().join("docker/registry/v2/repositories")],
        }
    }
}

fn repo(i: usize) -> String {
    format!("scale/r{}", i % REPOS)
}

/// Starts `sys` on a fresh port and times it from spawn until `GET /v2/`
/// answers 200.
fn start_timed(sys: &System) -> (Server, f64) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = sys.dir.path().join("server.log");
    let mut cmd = sys.serve(&addr);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    while !answers(&addr) {
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "{} exited at start-up ({s}), see {}",
                sys.name,
                log.display()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{} did not answer within 15 minutes",
            sys.name
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    let server = Server {
        name: sys.name,
        child,
        addr,
        _dir: tempfile::tempdir().unwrap(),
    };
    (server, secs)
}

/// Whether `GET /v2/` at `addr` answers 200 now.
fn answers(addr: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(
        s,
        "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Stops a server (SIGTERM) and waits for it; seconds until it exited.
fn stop(mut s: Server, kind: Kind) -> f64 {
    let started = Instant::now();
    common::signal(s.child.id(), "TERM");
    let status = common::wait_timeout(&mut s.child, Duration::from_secs(600));
    if kind == Kind::Wharf {
        assert!(status.success(), "{} exited with {status}", s.name);
    }
    started.elapsed().as_secs_f64()
}

/// Pushes one blob to `repo`: in one request, or POST then PUT.
async fn push_blob(api: &Api, repo: &str, bytes: &[u8], one_request: bool) -> String {
    if !one_request {
        return api.push_blob(repo, bytes).await;
    }
    let d = common::sha256(bytes);
    let r = api
        .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "POST {repo} ?digest={d}");
    d
}

/// Pushes image `i`: its config, its layer (`layer` with `i` in its first
/// eight bytes) and its manifest, tagged `t{i}`.
async fn push_image(api: &Api, one_request: bool, layer: &[u8], i: usize) {
    let repo = repo(i);
    let mut layer = layer.to_vec();
    layer[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let ld = common::sha256(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"bench.scale.image": i.to_string()}},
        "rootfs": {"type": "layers", "diff_ids": [ld]},
    })
    .to_string();
    let cd = push_blob(api, &repo, config.as_bytes(), one_request).await;
    push_blob(api, &repo, &layer, one_request).await;
    let m = common::image_manifest(
        Some(OCI_MANIFEST),
        (
            "application/vnd.oci.image.config.v1+json",
            &cd,
            config.len(),
        ),
        &[("application/vnd.oci.image.layer.v1.tar", &ld, LAYER)],
    );
    let r = api
        .put_manifest(&repo, &format!("t{i}"), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 201, "PUT {repo}:t{i}");
}

/// Pushes images `from..to` from `CLIENTS` clients at once.
async fn push(api: &Api, one_request: bool, from: usize, to: usize) {
    let layer = support::pattern(LAYER, 0x5ca1e);
    let layer = &layer;
    futures_util::stream::iter(from..to)
        .for_each_concurrent(CLIENTS, |i| push_image(api, one_request, layer, i))
        .await;
}

/// 1,000 manifest GETs of random tags from `CLIENTS` clients (returns
/// their rate), then every page of the tag lists of `WARM_LISTS`
/// repositories.
async fn warm_up(api: &Api, images: usize) -> f64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ images as u64;
    let picks: Vec<usize> = (0..WARM_GETS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % images as u64) as usize
        })
        .collect();
    let started = Instant::now();
    futures_util::stream::iter(picks)
        .for_each_concurrent(CLIENTS, |i| async move {
            let path = format!("/v2/{}/manifests/t{i}", repo(i));
            let r = api
                .req("GET", &path)
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "GET {path}");
            r.bytes().await.unwrap();
        })
        .await;
    let rate = WARM_GETS as f64 / started.elapsed().as_secs_f64();
    for k in 0..WARM_LISTS.min(images) {
        let mut path = format!("/v2/{}/tags/list", repo(k));
        loop {
            let r = api.get(&path).await;
            assert_eq!(r.status(), 200, "GET {path}");
            let next = common::header(&r, "link").and_then(|l| {
                let (start, end) = (l.find('<')? + 1, l.find('>')?);
                Some(l[start..end].to_string())
            });
            r.bytes().await.unwrap();
            match next {
                Some(n) => path = n,
                None => break,
            }
        }
    }
    rate
}

/// Bytes allocated on disk under `path` (`st_blocks`, as `du`), and the
/// number of files and directories.
fn allocated(path: &Path) -> (u64, u64) {
    let (mut bytes, mut entries) = (0, 0);
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        bytes += m.blocks() * 512;
        entries += 1;
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    (bytes, entries)
}

/// Runs a maintenance command under GNU time: (seconds, peak RSS in MiB).
fn maintenance(sys: &System, args: &[&std::ffi::OsStr]) -> (f64, f64) {
    let out = sys.dir.path().join("maintenance.out");
    let peak = sys.dir.path().join("maintenance.time");
    let mut cmd = Command::new(GNU_TIME);
    cmd.args(["-f", "%M", "-o"])
        .arg(&peak)
        .arg(&sys.bin)
        .args(args)
        .env("WHARF_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let o = cmd.output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "{} {args:?} failed ({}): {}; output in {}",
        sys.name,
        o.status,
        String::from_utf8_lossy(&o.stderr),
        out.display()
    );
    let kib: f64 = std::fs::read_to_string(&peak)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("GNU time's %M");
    (secs, kib / 1024.0)
}

/// Grows `sys` to `images` and measures it.
fn step(rt: &tokio::runtime::Runtime, sys: &mut System, images: usize) {
    let step_started = Instant::now();
    let mut row = Row {
        images,
        pushed: images - sys.images,
        ..Row::default()
    };
    let one_request = sys.kind == Kind::Wharf;

    // The push, on a server started for it.
    let addr = format!("127.0.0.1:{}", free_port());
    let s = Server::spawn(
        sys.name,
        sys.serve(&addr),
        addr,
        tempfile::tempdir().unwrap(),
    );
    let pid = s.child.id();
    let api = Api::at(&s.addr);
    let cpu = cpu_seconds(pid);
    let started = Instant::now();
    rt.block_on(push(&api, one_request, sys.images, images));
    row.push_s = started.elapsed().as_secs_f64();
    sys.images = images;
    row.push_images_per_s = Some(row.pushed as f64 / row.push_s);
    row.push_cpu_ms_per_image = Some((cpu_seconds(pid) - cpu) * 1000.0 / row.pushed as f64);
    row.push_peak_rss_mib = Some(rss(pid).1 as f64 / MIB);
    std::thread::sleep(IDLE);
    row.after_push_rss_mib = Some(rss(pid).0 as f64 / MIB);
    drop(api);
    row.stop_s = Some(stop(s, sys.kind));

    // A fresh start on what was pushed.
    let (s, secs) = start_timed(sys);
    let pid = s.child.id();
    row.startup_s = Some(secs);
    std::thread::sleep(IDLE);
    row.idle_rss_mib = Some(rss(pid).0 as f64 / MIB);
    let api = Api::at(&s.addr);
    row.warm_gets_per_s = Some(rt.block_on(warm_up(&api, images)));
    row.warm_rss_mib = Some(rss(pid).0 as f64 / MIB);
    row.warm_peak_rss_mib = Some(rss(pid).1 as f64 / MIB);
    drop(api);
    stop(s, sys.kind);

    // On disk, with no server running.
    let (total, entries) = allocated(&sys.data());
    let index: u64 = sys.index_paths().iter().map(|p| allocated(p).0).sum();
    row.data_bytes = Some(total as f64);
    row.index_bytes = Some(index as f64);
    row.other_bytes = Some((total - index) as f64);
    row.files = Some(entries as f64);

    let data = sys.data();
    match sys.kind {
        Kind::Wharf => {
            let (secs, peak) = maintenance(
                sys,
                &[
                    "gc".as_ref(),
                    "--data".as_ref(),
                    data.as_ref(),
                    "--dry-run".as_ref(),
                ],
            );
            row.gc_s = Some(secs);
            row.gc_peak_rss_mib = Some(peak);
            let (secs, peak) =
                maintenance(sys, &["verify".as_ref(), "--data".as_ref(), data.as_ref()]);
            row.verify_s = Some(secs);
            row.verify_peak_rss_mib = Some(peak);
        }
        Kind::Distribution => {
            let cfg = sys.config("127.0.0.1:0");
            let (secs, peak) = maintenance(
                sys,
                &[
                    "garbage-collect".as_ref(),
                    "--dry-run".as_ref(),
                    cfg.as_ref(),
                ],
            );
            row.gc_s = Some(secs);
            row.gc_peak_rss_mib = Some(peak);
        }
    }
    row.step_s = step_started.elapsed().as_secs_f64();
    sys.rows.push(row);
}

/// One row of the table: its label, its value, its precision.
type Metric = (&'static str, fn(&Row) -> Option<f64>, usize);

const METRICS: [Metric; 22] = [
    (
        "push: images pushed in this step",
        |r| Some(r.pushed as f64),
        0,
    ),
    ("push: images per second", |r| r.push_images_per_s, 0),
    (
        "push: server CPU ms per image",
        |r| r.push_cpu_ms_per_image,
        2,
    ),
    ("push: server peak RSS (MiB)", |r| r.push_peak_rss_mib, 1),
    (
        "after the push, 2 s idle: RSS (MiB)",
        |r| r.after_push_rss_mib,
        1,
    ),
    ("stop after the push, SIGTERM to exit (s)", |r| r.stop_s, 2),
    ("start-up, spawn to GET /v2/ 200 (s)", |r| r.startup_s, 3),
    ("idle RSS 2 s after start-up (MiB)", |r| r.idle_rss_mib, 1),
    (
        "warm-up: 1,000 random manifest GETs per second",
        |r| r.warm_gets_per_s,
        0,
    ),
    (
        "RSS after the warm-up (+ 20 tag lists) (MiB)",
        |r| r.warm_rss_mib,
        1,
    ),
    (
        "  peak RSS since start-up (MiB)",
        |r| r.warm_peak_rss_mib,
        1,
    ),
    (
        "data dir, allocated (MiB)",
        |r| r.data_bytes.map(|b| b / MIB),
        1,
    ),
    (
        "  index (MiB) (distribution: repositories/)",
        |r| r.index_bytes.map(|b| b / MIB),
        1,
    ),
    (
        "  blobs and the rest (MiB)",
        |r| r.other_bytes.map(|b| b / MIB),
        1,
    ),
    ("  files and directories", |r| r.files, 0),
    (
        "index bytes per image",
        |r| r.index_bytes.map(|b| b / r.images as f64),
        0,
    ),
    (
        "data dir bytes per image",
        |r| r.data_bytes.map(|b| b / r.images as f64),
        0,
    ),
    ("gc --dry-run (s)", |r| r.gc_s, 2),
    ("gc --dry-run peak RSS (MiB)", |r| r.gc_peak_rss_mib, 1),
    ("verify (s)", |r| r.verify_s, 2),
    ("verify peak RSS (MiB)", |r| r.verify_peak_rss_mib, 1),
    ("this step, wall time (s)", |r| Some(r.step_s), 0),
];

fn print_table(systems: &[System], images: usize, quick: bool) {
    println!(
        "\n{images} images ({CLIENTS} push clients, {REPOS} repositories){}\n",
        if quick {
            "; QUICK SMOKE RUN, the figures mean little"
        } else {
            ""
        }
    );
    let names: Vec<&str> = systems.iter().map(|s| s.name).collect();
    println!("| metric | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for (label, m, p) in METRICS {
        let cells: Vec<String> = systems
            .iter()
            .map(|s| fmt(s.rows.iter().find(|r| r.images == images).and_then(m), p))
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}

fn sizes(quick: bool) -> Vec<usize> {
    let sizes: Vec<usize> = match std::env::var("WHARF_BENCH_SCALE_SIZES") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("WHARF_BENCH_SCALE_SIZES: not a number: {s:?}"))
            })
            .collect(),
        Err(_) if quick => vec![2000],
        Err(_) => vec![2000, 20000, 100000],
    };
    assert!(
        !sizes.is_empty() && sizes[0] > 0 && sizes.windows(2).all(|w| w[0] < w[1]),
        "WHARF_BENCH_SCALE_SIZES must be increasing sizes above 0: {sizes:?}"
    );
    sizes
}

fn main() {
    let quick = std::env::var("WHARF_BENCH_QUICK").is_ok_and(|v| v != "0");
    let sizes = sizes(quick);
    assert!(
        Path::new(GNU_TIME).exists(),
        "{GNU_TIME} (GNU time, Debian package `time`) measures the peak memory of gc and verify"
    );
    let wanted =
        std::env::var("WHARF_BENCH_SYSTEMS").unwrap_or_else(|_| "wharf,distribution".into());
    let wanted = |s: &str| wanted.split(',').any(|w| w.trim() == s);
    let mut systems = Vec::new();
    if wanted("wharf") {
        let current = std::env::var("WHARF_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_string());
        systems.push(System::new("wharf", Kind::Wharf, current.into()));
        if let Ok(before) = std::env::var("WHARF_BENCH_BEFORE") {
            systems.push(System::new("wharf before", Kind::Wharf, before.into()));
        }
    }
    if wanted("distribution") {
        let bin = common::require("docker-registry");
        systems.push(System::new("distribution", Kind::Distribution, bin));
    }
    assert!(!systems.is_empty(), "WHARF_BENCH_SYSTEMS names no system");
    // The load generator on one thread: the servers keep the other core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for &images in &sizes {
        for sys in systems.iter_mut() {
            eprintln!(
                "{}: growing from {} to {images} images ...",
                sys.name, sys.images
            );
            step(&rt, sys, images);
            let r = sys.rows.last().unwrap();
            eprintln!(
                "{}: {images} images, step took {:.0} s (push {:.0} s)",
                sys.name, r.step_s, r.push_s
            );
        }
        print_table(&systems, images, quick);
        let rows: Vec<(&str, Vec<Row>)> =
            systems.iter().map(|s| (s.name, s.rows.clone())).collect();
        support::write_results("bench-scale.json", quick, 1, &rows);
    }
    if std::env::var("WHARF_BENCH_KEEP").is_ok_and(|v| v != "0") {
        for s in systems {
            eprintln!("{}: kept {}", s.name, s.dir.keep().join("data").display());
        }
        return;
    }
    // Deleting is I/O-bound: at 100,000 images distribution's store is
    // some two million files and directories.
    eprintln!("removing the data directories ...");
    let started = Instant::now();
    drop(systems);
    eprintln!("removed in {:.0} s", started.elapsed().as_secs_f64());
}
