//! Eviction under sustained fills: clients pull distinct blobs through a
//! Wharf whose `--max-cache-size` holds a fraction of them, as fast as
//! they can, while four more clients keep pulling a few hot blobs (cache
//! hits). Two cases: 20,000 small blobs (4 KiB, 16 fill clients, 8 MiB
//! limit) and 40 large ones (64 MiB, 4 fill clients, 1 GiB limit).
//! Reports the fill rate, how far the cache went over its limit (sampled
//! from `/metrics` every 10 ms), the eviction rounds (count, mean, and the
//! histogram bucket holding the longest), what was evicted, and
//! the latency of the cache hits during eviction beside the same hits with
//! no fills running and with the same fills into a Wharf with no limit
//! (the load without eviction: the fair baseline), and their ratio. The
//! small case runs three times per build, builds interleaved, and the
//! table gives each figure's median (`WHARF_BENCH_EVICTION_RUNS=N`
//! overrides: a p99 on two shared cores varies by 2× between runs). The
//! upstream is the tests' counting proxy answering the blobs from memory
//! (in front of the reference registry, which could not serve them fast
//! enough); distribution's proxy has no size bound, so it has no column
//! here.
//!
//! Run: `cargo bench --bench eviction` (release build; about 6 minutes,
//! 10 with `WHARF_BENCH_BEFORE`).
//! `WHARF_BENCH_QUICK=1` runs a small case only, smaller, once, for a smoke run;
//! `WHARF_BENCH_EVICTION_CASES=small` or `=large` picks one case. `WHARF_TEST_BIN` measures another build;
//! `WHARF_BENCH_BEFORE=PATH` measures a second build (an earlier one)
//! beside it in the same run. Prints a table, writes
//! `target/bench-eviction.json`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::upstream::Upstream;
use common::Api;
use futures_util::StreamExt;
use serde::Serialize;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{fmt, free_port, Server};

const HITTERS: usize = 4;

struct Sizes {
    name: &'static str,
    blobs: usize,
    blob: usize,
    limit: u64,
    /// Blobs kept hot (pulled over and over), and clients filling.
    hot: usize,
    fillers: usize,
    baseline_secs: f64,
    /// Runs of each build, interleaved; the table gives each figure's
    /// median over them (p99s on a shared 2-core machine vary by 2× from
    /// one run to the next).
    runs: usize,
}

#[derive(Serialize, Default, Clone)]
struct Row {
    fills: usize,
    fills_per_s: f64,
    peak_over_limit_pct: f64,
    settled_pct_of_limit: f64,
    evicted_items: f64,
    hit_p50_ms_idle: f64,
    hit_p99_ms_idle: f64,
    hit_p50_ms_evicting: f64,
    hit_p99_ms_evicting: f64,
    hit_max_ms_evicting: f64,
    hit_p50_ms_filling: f64,
    hit_p99_ms_filling: f64,
    hot_refetched: usize,
    peak_over_limit_blobs: f64,
    rounds: f64,
    round_mean_ms: f64,
    /// The upper bound of the histogram bucket holding the longest round.
    round_max_le_ms: f64,
}

fn start_wharf(bin: &str, upstream: &str, limit: Option<u64>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &addr, "--data"])
        .arg(dir.path().join("data"))
        .args(["--upstream", &format!("docker.io=http://{upstream}")])
        .env("WHARF_LOG", "warn");
    if let Some(limit) = limit {
        cmd.args(["--max-cache-size", &limit.to_string()]);
    }
    Server::spawn("wharf", cmd, addr, dir)
}

fn blob(i: usize, size: usize) -> Vec<u8> {
    let mut b = support::pattern(size, 7);
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    b
}

/// A number from the server's `/metrics`.
async fn metric(api: &Api, line_prefix: &str) -> f64 {
    let text = api.get("/metrics").await.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The eviction rounds from `/metrics`: how many, their mean (ms), and
/// the upper bound (ms) of the highest histogram bucket holding one.
async fn rounds(api: &Api) -> (f64, f64, f64) {
    let text = api.get("/metrics").await.text().await.unwrap_or_default();
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let (mut count, mut sum, mut max_le) = (0.0, 0.0, 0.0);
    let mut below = 0.0;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("wharf_eviction_round_seconds_bucket{le=\"") {
            let le = rest.split('"').next().unwrap_or("");
            let n = value(l).unwrap_or(0.0);
            if n > below {
                max_le = le.parse::<f64>().unwrap_or(f64::INFINITY);
            }
            below = n;
        } else if l.starts_with("wharf_eviction_round_seconds_count") {
            count = value(l).unwrap_or(0.0);
        } else if l.starts_with("wharf_eviction_round_seconds_sum") {
            sum = value(l).unwrap_or(0.0);
        }
    }
    let mean = if count > 0.0 {
        sum / count * 1000.0
    } else {
        0.0
    };
    (count, mean, max_le * 1000.0)
}

async fn mirrored_bytes(api: &Api) -> f64 {
    metric(api, "wharf_store_bytes{class=\"mirrored\"} ").await
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// GETs the hot blobs round robin from `HITTERS` clients until `stop`;
/// returns every latency, in milliseconds, sorted.
async fn hit_latencies(api: &Api, hot: &[String], stop: &AtomicBool) -> Vec<f64> {
    let all: Vec<Vec<f64>> = futures_util::stream::iter(0..HITTERS)
        .map(|c| async move {
            let mut out = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/v2/library/fill/blobs/{}", hot[i % hot.len()]);
                let t = Instant::now();
                let r = api.get(&path).await;
                assert!(r.status().is_success());
                let _ = r.bytes().await.unwrap();
                out.push(t.elapsed().as_secs_f64() * 1000.0);
                i += HITTERS;
            }
            out
        })
        .buffer_unordered(HITTERS)
        .collect()
        .await;
    let mut v: Vec<f64> = all.into_iter().flatten().collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Pulls the hot blobs once, so they are cached.
async fn warm(api: &Api, hot: &[String]) {
    for d in hot {
        let r = api.get(&format!("/v2/library/fill/blobs/{d}")).await;
        assert!(r.status().is_success());
        let _ = r.bytes().await.unwrap();
    }
}

/// Runs the fills of `cold` from `FILLERS` clients while the hot blobs are
/// pulled: the hits' latencies (sorted, ms), the seconds the fills took
/// and the peak of the cache's size (sampled every 10 ms).
async fn hits_during_fills(
    api: &Api,
    hot: &[String],
    cold: &[String],
    fillers: usize,
) -> (Vec<f64>, f64, f64) {
    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let fills = async {
        futures_util::stream::iter(0..fillers)
            .for_each_concurrent(fillers, |_| async {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(d) = cold.get(i) else { break };
                    let r = api.get(&format!("/v2/library/fill/blobs/{d}")).await;
                    assert!(r.status().is_success());
                    let _ = r.bytes().await.unwrap();
                }
            })
            .await;
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        secs
    };
    let sample = async {
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(mirrored_bytes(api).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    };
    let (lat, secs, peak) = tokio::join!(hit_latencies(api, hot, &stop), fills, sample);
    (lat, secs, peak)
}

async fn measure(bin: &str, up: &Upstream, digests: &[String], s: &Sizes) -> Row {
    let (hot, cold) = digests.split_at(s.hot);
    // The same fills with no limit (nothing evicted): what the hits cost
    // under this load without eviction.
    let filling = {
        let w = start_wharf(bin, &up.addr, None);
        let api = Api::at(&w.addr);
        warm(&api, hot).await;
        hits_during_fills(&api, hot, cold, s.fillers).await.0
    };
    let w = start_wharf(bin, &up.addr, Some(s.limit));
    let api = Api::at(&w.addr);
    warm(&api, hot).await;
    // Hits alone.
    let stop = AtomicBool::new(false);
    let idle = async {
        tokio::time::sleep(Duration::from_secs_f64(s.baseline_secs)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let (idle_lat, ()) = tokio::join!(hit_latencies(&api, hot, &stop), idle);

    // Hits while fills run and eviction follows them.
    let (busy_lat, secs, peak) = hits_during_fills(&api, hot, cold, s.fillers).await;
    // Let the last round finish.
    let mut settled = mirrored_bytes(&api).await;
    for _ in 0..100 {
        if settled <= s.limit as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled = mirrored_bytes(&api).await;
    }
    let evicted = metric(&api, "wharf_evictions_total ").await;
    let (rounds, round_mean_ms, round_max_le_ms) = rounds(&api).await;
    up.reset();
    for d in hot {
        let _ = api
            .get(&format!("/v2/library/fill/blobs/{d}"))
            .await
            .bytes()
            .await;
    }
    let hot_refetched = up.count("GET", "/blobs/");
    let limit = s.limit as f64;
    Row {
        fills: cold.len(),
        fills_per_s: cold.len() as f64 / secs,
        peak_over_limit_pct: (peak / limit - 1.0) * 100.0,
        settled_pct_of_limit: settled / limit * 100.0,
        evicted_items: evicted,
        hit_p50_ms_idle: percentile(&idle_lat, 0.5),
        hit_p99_ms_idle: percentile(&idle_lat, 0.99),
        hit_p50_ms_evicting: percentile(&busy_lat, 0.5),
        hit_p99_ms_evicting: percentile(&busy_lat, 0.99),
        hit_max_ms_evicting: busy_lat.last().copied().unwrap_or(0.0),
        hit_p50_ms_filling: percentile(&filling, 0.5),
        hit_p99_ms_filling: percentile(&filling, 0.99),
        hot_refetched,
        peak_over_limit_blobs: (peak - limit).max(0.0) / s.blob as f64,
        rounds,
        round_mean_ms,
        round_max_le_ms,
    }
}

fn main() {
    let quick = std::env::var("WHARF_BENCH_QUICK").is_ok_and(|v| v != "0");
    let small = Sizes {
        name: "small",
        blobs: 20_000,
        blob: 4096,
        limit: 8 << 20,
        hot: 16,
        fillers: 16,
        baseline_secs: 5.0,
        runs: 3,
    };
    let cases: Vec<Sizes> = if quick {
        vec![Sizes {
            blobs: 1_500,
            limit: 1 << 20,
            baseline_secs: 1.0,
            runs: 1,
            ..small
        }]
    } else {
        let large = Sizes {
            name: "large",
            blobs: 40,
            blob: 64 << 20,
            limit: 1 << 30,
            hot: 2,
            fillers: 4,
            baseline_secs: 5.0,
            runs: 1,
        };
        let pick = std::env::var("WHARF_BENCH_EVICTION_CASES").unwrap_or_default();
        [small, large]
            .into_iter()
            .filter(|c| pick.is_empty() || pick.split(',').any(|p| p == c.name))
            .collect()
    };
    let current =
        std::env::var("WHARF_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_string());
    let mut builds = vec![("wharf", current)];
    if let Ok(before) = std::env::var("WHARF_BENCH_BEFORE") {
        builds.push(("wharf before", before));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut all: Vec<(String, Vec<Row>)> = Vec::new();
    for s in &cases {
        let rows: Vec<(&str, Vec<Row>)> = rt.block_on(async {
            // The blobs come from memory (the counting proxy answers them
            // itself): the reference registry could not serve small blobs
            // faster than about 300 a second here, short of the load to show.
            let up = Upstream::start(false);
            let mut blobs = std::collections::HashMap::new();
            let digests: Vec<String> = (0..s.blobs + s.hot)
                .map(|i| {
                    let b = blob(i, s.blob);
                    let d = common::sha256(&b);
                    blobs.insert(d.clone(), bytes::Bytes::from(b));
                    d
                })
                .collect();
            up.set_faults(common::upstream::Faults {
                memory_blobs: Some(std::sync::Arc::new(blobs)),
                ..Default::default()
            });
            let mut rows: Vec<(&str, Vec<Row>)> =
                builds.iter().map(|(n, _)| (*n, Vec::new())).collect();
            for run in 1..=runs_of(s) {
                for ((name, bin), (_, runs)) in builds.iter().zip(rows.iter_mut()) {
                    eprintln!("measuring {name}, {} blobs, run {run} ...", s.name);
                    runs.push(measure(bin, &up, &digests, s).await);
                }
            }
            rows
        });
        print_table(s, quick, &rows);
        for (name, r) in rows {
            all.push((format!("{name} ({})", s.name), r));
        }
    }
    let all: Vec<(&str, Vec<Row>)> = all.iter().map(|(n, r)| (n.as_str(), r.clone())).collect();
    let runs = cases.iter().map(runs_of).max().unwrap_or(1);
    support::write_results("bench-eviction.json", quick, runs, &all);
}

/// Runs of each build for case `s` (`WHARF_BENCH_EVICTION_RUNS` overrides).
fn runs_of(s: &Sizes) -> usize {
    std::env::var("WHARF_BENCH_EVICTION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(s.runs)
        .max(1)
}

/// The middle value (the lower of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied()
}

fn print_table(s: &Sizes, quick: bool, rows: &[(&str, Vec<Row>)]) {
    println!(
        "\n{} distinct {} blobs through a {} cache ({} fill clients, {HITTERS} clients on {} hot blobs; median of {} runs){}\n",
        s.blobs,
        support::size_label(s.blob as u64),
        support::size_label(s.limit),
        s.fillers,
        s.hot,
        runs_of(s),
        if quick { ", quick run" } else { "" }
    );
    let header: Vec<&str> = rows.iter().map(|(n, _)| *n).collect();
    println!("| metric | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(header.len()));
    type Metric = (&'static str, fn(&Row) -> f64, usize);
    let metrics: [Metric; 17] = [
        ("fills per second", |r| r.fills_per_s, 0),
        ("peak over the limit (%)", |r| r.peak_over_limit_pct, 1),
        (
            "peak over the limit (blobs)",
            |r| r.peak_over_limit_blobs,
            1,
        ),
        (
            "after the fills (% of the limit)",
            |r| r.settled_pct_of_limit,
            1,
        ),
        ("items evicted", |r| r.evicted_items, 0),
        ("eviction rounds", |r| r.rounds, 0),
        ("round time, mean (ms)", |r| r.round_mean_ms, 1),
        ("longest round, at most (ms)", |r| r.round_max_le_ms, 0),
        ("cache hit p50, no fills (ms)", |r| r.hit_p50_ms_idle, 2),
        ("cache hit p99, no fills (ms)", |r| r.hit_p99_ms_idle, 2),
        (
            "cache hit p50, same fills, no limit (ms)",
            |r| r.hit_p50_ms_filling,
            2,
        ),
        (
            "cache hit p99, same fills, no limit (ms)",
            |r| r.hit_p99_ms_filling,
            2,
        ),
        ("cache hit p50, evicting (ms)", |r| r.hit_p50_ms_evicting, 2),
        ("cache hit p99, evicting (ms)", |r| r.hit_p99_ms_evicting, 2),
        ("cache hit max, evicting (ms)", |r| r.hit_max_ms_evicting, 1),
        (
            "cache hit p99, evicting / no limit",
            |r| r.hit_p99_ms_evicting / r.hit_p99_ms_filling,
            2,
        ),
        ("hot blobs fetched again", |r| r.hot_refetched as f64, 0),
    ];
    for (label, m, p) in metrics {
        let cells: Vec<String> = rows
            .iter()
            .map(|(_, runs)| fmt(median(runs.iter().map(m).collect()), p))
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}
