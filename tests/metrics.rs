//! `GET /metrics` and `--log-format json`, black-box: the metrics read
//! around a cold and a warm pull of a mirrored image (from the reference
//! registry behind the counting proxy, which also sends Docker Hub's
//! rate-limit headers), a stale answer during an outage, the bounded
//! labels, and JSON log lines.

mod common;
use common::upstream::{Faults, Upstream};
use common::*;

/// One sample line of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses one sample line (`name{k="v",...} value`); `None` for comments,
/// blank lines and anything malformed.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (key, r) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim_start_matches(',').to_string(), value));
            rest = &r[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Every sample of a scrape.
fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// The sum of the samples named `name` that carry every label of `with`
/// (0 when there is none).
fn value(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether any sample is named `name` with every label of `with`.
fn present(text: &str, name: &str, with: &[(&str, &str)]) -> bool {
    samples(text).iter().any(|s| {
        s.name == name
            && with
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    })
}

async fn scrape(api: &Api) -> String {
    let r = api.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text().await.unwrap()
}

#[test]
fn the_line_parser_reads_names_labels_and_values() {
    assert_eq!(
        parse_line(r#"wharf_http_requests_total{method="GET",route="manifest",status="200"} 12"#),
        Some(Sample {
            name: "wharf_http_requests_total".into(),
            labels: vec![
                ("method".into(), "GET".into()),
                ("route".into(), "manifest".into()),
                ("status".into(), "200".into()),
            ],
            value: 12.0,
        })
    );
    let s = parse_line(r#"x_bucket{route="blob",le="+Inf"} 3"#).unwrap();
    assert_eq!(s.labels[1], ("le".into(), "+Inf".into()));
    let s = parse_line(r#"x{a="q\"uote,d"} 1.5e3"#).unwrap();
    assert_eq!(s.labels, vec![("a".into(), "q\"uote,d".into())]);
    assert_eq!(s.value, 1500.0);
    assert_eq!(parse_line("wharf_fills_in_flight 0").unwrap().value, 0.0);
    assert_eq!(parse_line("# TYPE x counter"), None);
    assert_eq!(parse_line("x{a=\"unterminated} 1"), None);
    let text = "a{k=\"1\"} 2\na{k=\"2\"} 3\nb 7\n";
    assert_eq!(value(text, "a", &[]), 5.0);
    assert_eq!(value(text, "a", &[("k", "2")]), 3.0);
    assert_eq!(value(text, "c", &[]), 0.0);
}

/// A mirrored image pulled the way a client does: the manifest by tag,
/// then the config and the layer. Returns the bytes received.
async fn pull(api: &Api, repo: &str, tag: &str, blobs: &[String]) -> u64 {
    let r = api
        .req("GET", &format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut n = r.bytes().await.unwrap().len() as u64;
    for d in blobs {
        let r = api.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), 200, "{d}");
        n += r.bytes().await.unwrap().len() as u64;
    }
    n
}

#[tokio::test]
async fn cold_and_warm_pulls_are_counted() {
    let up = Upstream::start(false);
    up.set_faults(Faults {
        ratelimit: Some(100),
        ..Default::default()
    });
    let layer = pattern(300_000, 3);
    let (_, mbytes, ld) = up.seed("library/alpine", "latest", &layer).await;
    let m: serde_json::Value = serde_json::from_slice(&mbytes).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let config_size = m["config"]["size"].as_u64().unwrap();
    let image = mbytes.len() as u64 + config_size + layer.len() as u64;
    let w = up.mirror(&[]);
    // What the three take on the storage: whole blocks of the data
    // directory's file system (a bucket bills bytes).
    let unit = if on_s3() {
        1
    } else {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(w.data.join("blobs"))
            .unwrap()
            .blksize()
            .clamp(512, 4096)
    };
    let stored: u64 = [mbytes.len() as u64, config_size, layer.len() as u64]
        .iter()
        .map(|n| n.div_ceil(unit) * unit)
        .sum();
    let api = Api::new(&w);

    let before = scrape(&api).await;
    let cache = |text: &str, kind: &str, result: &str| {
        value(
            text,
            "wharf_cache_requests_total",
            &[("kind", kind), ("result", result)],
        )
    };
    let served =
        |text: &str, source: &str| value(text, "wharf_served_bytes_total", &[("source", source)]);
    let upstream_bytes = |text: &str| {
        value(
            text,
            "wharf_upstream_bytes_total",
            &[("upstream", "docker.io")],
        )
    };
    for (k, r) in [("manifest", "hit"), ("manifest", "miss"), ("blob", "stale")] {
        assert!(
            present(
                &before,
                "wharf_cache_requests_total",
                &[("kind", k), ("result", r)]
            ),
            "every cache series is there from the start"
        );
        assert_eq!(cache(&before, k, r), 0.0);
    }
    assert!(
        !present(&before, "wharf_upstream_ratelimit_remaining", &[]),
        "no rate-limit gauge before the upstream sent one:\n{before}"
    );
    assert!(!present(&before, "wharf_upstream_ratelimit_limit", &[]));
    assert_eq!(upstream_bytes(&before), 0.0);

    // Cold: one manifest miss, two blob misses; the upstream sent exactly
    // the image, and the client got it as it arrived.
    let blobs = [cd.clone(), ld.clone()];
    assert_eq!(pull(&api, "library/alpine", "latest", &blobs).await, image);
    let cold = scrape(&api).await;
    assert_eq!(cache(&cold, "manifest", "miss"), 1.0, "{cold}");
    assert_eq!(cache(&cold, "manifest", "hit"), 0.0);
    assert_eq!(cache(&cold, "blob", "miss"), 2.0);
    assert_eq!(cache(&cold, "blob", "hit"), 0.0);
    assert_eq!(upstream_bytes(&cold), image as f64, "{cold}");
    assert_eq!(served(&cold, "upstream"), image as f64);
    assert_eq!(served(&cold, "cache"), 0.0);
    // The rate-limit gauges hold what the upstream sent last.
    assert_eq!(up.manifest_gets(), 1);
    assert_eq!(
        value(
            &cold,
            "wharf_upstream_ratelimit_limit",
            &[("upstream", "docker.io")]
        ),
        100.0
    );
    assert_eq!(
        value(
            &cold,
            "wharf_upstream_ratelimit_remaining",
            &[("upstream", "docker.io")]
        ),
        (100 - up.manifest_gets()) as f64
    );
    // HEAD of the tag, GET of the manifest by digest, GET of two blobs.
    assert_eq!(
        value(
            &cold,
            "wharf_upstream_requests_total",
            &[("upstream", "docker.io"), ("status", "200")]
        ),
        4.0,
        "{cold}"
    );
    assert_eq!(
        value(
            &cold,
            "wharf_upstream_requests_total",
            &[("method", "HEAD"), ("status", "200")]
        ),
        1.0
    );

    // Warm, twice: hits only, nothing more from the upstream, everything
    // from the cache.
    for round in 1..=2u64 {
        assert_eq!(pull(&api, "alpine", "latest", &blobs).await, image);
        let warm = scrape(&api).await;
        assert_eq!(cache(&warm, "manifest", "miss"), 1.0, "{warm}");
        assert_eq!(cache(&warm, "manifest", "hit"), round as f64);
        assert_eq!(cache(&warm, "blob", "miss"), 2.0);
        assert_eq!(cache(&warm, "blob", "hit"), 2.0 * round as f64);
        assert_eq!(cache(&warm, "manifest", "stale"), 0.0);
        assert_eq!(upstream_bytes(&warm), image as f64);
        assert_eq!(served(&warm, "upstream"), image as f64);
        assert_eq!(served(&warm, "cache"), (round * image) as f64);
    }
    // A HEAD sends no body: nothing served.
    let r = api
        .req("HEAD", &format!("/v2/alpine/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = scrape(&api).await;
    assert_eq!(served(&last, "cache"), (2 * image) as f64);

    // Requests by kind of route, never by repository.
    let manifest_gets = value(
        &last,
        "wharf_http_requests_total",
        &[("method", "GET"), ("route", "manifest"), ("status", "200")],
    );
    assert_eq!(manifest_gets, 3.0, "{last}");
    assert_eq!(
        value(
            &last,
            "wharf_http_requests_total",
            &[("route", "metrics"), ("status", "200")]
        ),
        4.0,
        "the scrapes before this one"
    );
    assert!(
        value(
            &last,
            "wharf_http_request_duration_seconds_count",
            &[("route", "blob")]
        ) >= 6.0
    );
    let routes = [
        "base",
        "manifest",
        "blob",
        "upload",
        "tags",
        "catalog",
        "referrers",
        "token",
        "health",
        "metrics",
        "ui",
        "api",
        "other",
    ];
    for s in samples(&last) {
        for (k, v) in &s.labels {
            assert!(
                !v.contains("alpine") && !v.contains("library") && !v.contains("sha256"),
                "{} has a repository or digest in {k}={v}",
                s.name
            );
            if k == "route" {
                assert!(routes.contains(&v.as_str()), "route {v}");
            }
        }
    }

    // The store's accounting: a fill is counted once it is recorded, which
    // may be just after its client has the whole blob.
    let mut store = (0.0, 0.0);
    for _ in 0..200 {
        let text = scrape(&api).await;
        store = (
            value(&text, "wharf_store_items", &[("class", "mirrored")]),
            value(&text, "wharf_store_bytes", &[("class", "mirrored")]),
        );
        if store == (3.0, stored as f64) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(store, (3.0, stored as f64), "manifest, config and layer");
}

#[tokio::test]
async fn stale_answers_during_an_outage_are_counted() {
    let up = Upstream::start(false);
    up.seed("library/keep", "stable", &pattern(10_000, 9)).await;
    // Every pull revalidates the tag with the upstream.
    let w = up.mirror(&["--tag-ttl", "0s"]);
    let api = Api::new(&w);
    assert_eq!(api.status("GET", "/v2/keep/manifests/stable").await, 200);
    assert_eq!(api.status("GET", "/v2/keep/manifests/stable").await, 200);
    up.set_faults(Faults {
        status: Some(503),
        ..Default::default()
    });
    assert_eq!(api.status("GET", "/v2/keep/manifests/stable").await, 200);
    let text = scrape(&api).await;
    let cache = |result: &str| {
        value(
            &text,
            "wharf_cache_requests_total",
            &[("kind", "manifest"), ("result", result)],
        )
    };
    assert_eq!(
        (cache("miss"), cache("hit"), cache("stale")),
        (1.0, 1.0, 1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "wharf_upstream_requests_total",
            &[("method", "HEAD"), ("status", "503")]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_answer_get_and_head_only_and_count_probes() {
    let w = Wharf::start();
    let api = Api::new(&w);
    assert_eq!(api.status("GET", "/healthz").await, 200);
    assert_eq!(api.status("HEAD", "/metrics").await, 200);
    assert_eq!(api.status("POST", "/metrics").await, 405);
    assert_eq!(api.status("GET", "/v2/").await, 200);
    let text = scrape(&api).await;
    for (method, route, status) in [
        ("GET", "health", "200"),
        ("HEAD", "metrics", "200"),
        ("POST", "metrics", "405"),
        ("GET", "base", "200"),
    ] {
        assert_eq!(
            value(
                &text,
                "wharf_http_requests_total",
                &[("method", method), ("route", route), ("status", status)]
            ),
            1.0,
            "{method} {route} {status}:\n{text}"
        );
    }
    assert!(value(&text, "wharf_connections_open", &[]) >= 1.0);
    assert!(present(&text, "wharf_upload_sessions", &[]));
    assert!(present(
        &text,
        "wharf_connections_closed_total",
        &[("reason", "idle")]
    ));
}

#[tokio::test]
async fn json_log_format_writes_one_object_per_line() {
    let w = Wharf::start_with(Opts {
        args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    });
    let api = Api::new(&w);
    // A debug line with fields of its own (the harness logs wharf=debug).
    assert_eq!(api.status("GET", "/v2/").await, 200);
    assert!(
        wait_until(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(20),
            || w.logged(&["\"message\":\"request\""])
        )
        .await,
        "{}",
        w.log()
    );
    let log = w.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("listening on http://"))
        })
        .expect("the start-up line");
    assert_eq!(listening["level"], "INFO");
    assert!(listening["timestamp"].is_string());
    assert_eq!(listening["target"], "wharf");
    let request = lines
        .iter()
        .find(|l| l["message"] == "request")
        .expect("the request line");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["path"], "/v2/");
    assert_eq!(request["status"], 200);
}

#[test]
fn a_bad_log_format_is_refused_at_start_up() {
    let (code, out) = wharf_cli(&["serve", "--log-format", "xml"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("log_format"), "{out}");
}
