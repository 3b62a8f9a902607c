//! Docker Hub's pull budget, with skopeo pulling through Wharf: the test
//! upstream sends Docker Hub's rate-limit headers (`ratelimit-limit`,
//! `ratelimit-remaining` counting down with each manifest GET,
//! `docker-ratelimit-source`) and, with none left, answers manifest GETs
//! 429 while HEADs stay free, as Docker Hub does.

mod common;
use common::upstream::{Faults, Upstream};
use common::*;
use std::process::Command;

/// skopeo copies `image` (a path under Wharf's `/v2/`) to a directory;
/// the digest of the manifest it got.
fn skopeo_pull(addr: &str, image: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    run(Command::new(require("skopeo"))
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{addr}/{image}"))
        .arg(format!("dir:{}", out.path().display())));
    sha256(&std::fs::read(out.path().join("manifest.json")).unwrap())
}

/// The value of the sample of `name` for docker.io on `/metrics`.
async fn sample(api: &Api, name: &str) -> f64 {
    let text = api.get("/metrics").await.text().await.unwrap();
    let line = format!("{name}{{upstream=\"docker.io\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Manifest requests (HEAD or GET) the upstream saw for `repo`.
fn manifest_requests(up: &Upstream, repo: &str) -> usize {
    let part = format!("/v2/library/{repo}/manifests/");
    up.count("HEAD", &part) + up.count("GET", &part)
}

#[tokio::test]
async fn the_pull_budget_keeps_tags_back_in_its_reserve_and_stops_pulls_when_spent() {
    let up = Upstream::start(false);
    let mut old = std::collections::HashMap::new();
    let mut manifest_of = std::collections::HashMap::new();
    for repo in ["a", "b", "c", "d", "e"] {
        let (d, m, _) = up
            .seed(&format!("library/{repo}"), "1", repo.as_bytes())
            .await;
        old.insert(repo, d);
        manifest_of.insert(repo, m);
    }
    up.set_faults(Faults {
        ratelimit: Some(4),
        ratelimit_source: Some("192.0.2.7".into()),
        ..Default::default()
    });
    // Every pull asks about its tag (no TTL), keeping 2 pulls back.
    let w = up.mirror(&["--tag-ttl", "0s", "--ratelimit-reserve", "2"]);
    let api = Api::new(&w);
    let addr = w.addr.to_string();

    // 4 → 3 left: plenty, and a tag that moves is followed (→ 2 left).
    assert_eq!(skopeo_pull(&addr, "library/a:1"), old["a"]);
    assert_eq!(sample(&api, "wharf_upstream_pull_budget_state").await, 0.0);
    let (moved, _, _) = up.seed("library/a", "1", b"a, moved").await;
    assert_eq!(skopeo_pull(&addr, "library/a:1"), moved, "{}", w.log());
    assert_eq!(up.manifest_gets(), 2);

    // 2 left: the reserve. Content nobody has cached is still fetched...
    assert_eq!(sample(&api, "wharf_upstream_pull_budget_state").await, 1.0);
    assert_eq!(skopeo_pull(&addr, "library/b:1"), old["b"]);
    assert_eq!(up.manifest_gets(), 3);
    // ... but cached tags are not asked about: one that moved upstream is
    // served where it was, and the upstream sees no request for it.
    let (b_moved, _, _) = up.seed("library/b", "1", b"b, moved").await;
    up.reset();
    assert_eq!(skopeo_pull(&addr, "library/b:1"), old["b"]);
    assert_eq!(skopeo_pull(&addr, "library/a:1"), moved);
    assert_eq!(manifest_requests(&up, "b") + manifest_requests(&up, "a"), 0);
    assert_ne!(b_moved, old["b"]);

    // The last pull: none left, and Wharf knows it from the headers.
    assert_eq!(skopeo_pull(&addr, "library/c:1"), old["c"]);
    assert_eq!(up.manifest_gets(), 4);
    assert_eq!(sample(&api, "wharf_upstream_pull_budget_state").await, 2.0);
    // A manifest nobody has cached: 429 with Retry-After from Wharf, and
    // no GET spent upstream (its HEAD is free).
    up.reset();
    let r = api.get("/v2/library/d/manifests/1").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    assert_eq!(up.count("GET", "/manifests/"), 0);
    assert_eq!(up.refused_pulls(), 0);
    // What is cached still pulls, asking nothing upstream.
    up.reset();
    assert_eq!(skopeo_pull(&addr, "library/c:1"), old["c"]);
    assert_eq!(skopeo_pull(&addr, "library/b:1"), old["b"]);
    assert_eq!(
        up.count("GET", "/manifests/") + up.count("HEAD", "/manifests/"),
        0
    );
    assert!(sample(&api, "wharf_upstream_pull_budget_saved_total").await >= 4.0);
    assert_eq!(
        sample(&api, "wharf_upstream_ratelimit_remaining").await,
        0.0
    );
    let log = w.log();
    for line in [
        "pull budget in its reserve",
        "pull budget spent",
        "192.0.2.7",
    ] {
        assert!(log.contains(line), "{line} not logged:\n{log}");
    }

    // A Wharf that has not read the headers yet: the upstream's 429 to a
    // GET by digest is passed on, and marks the budget spent, so the next
    // GET is not sent.
    let w2 = up.mirror(&[]);
    let api2 = Api::new(&w2);
    up.reset();
    let r = api2
        .get(&format!("/v2/library/d/manifests/{}", old["d"]))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(up.refused_pulls(), 1);
    let r = api2
        .get(&format!("/v2/library/e/manifests/{}", old["e"]))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(up.refused_pulls(), 1, "not asked again");
    assert_eq!(up.count("GET", "/v2/library/e/manifests/"), 0);
    // Blobs are not what the limit counts: they are still fetched.
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_of["e"]).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let r = api2.get(&format!("/v2/library/e/blobs/{layer}")).await;
    assert_eq!(r.status(), 200);
}
