//! The web UI in headless Chromium and the JSON API, against a Wharf
//! holding an image, a multi-arch index, a Helm chart (Helm's media types,
//! no `mediaType` field), a Docker volume (`artifactType`), an ORAS
//! artifact with referrers (pushed by oras-py), an image whose annotations
//! hold HTML and script, and an image mirrored from a real upstream. Each
//! tag must show its content type, the filters and the search box must
//! find the right repositories, tag pages must show the right pull
//! commands, nothing hostile may run, and the API must refuse bad input.
//! Screenshots land in `target/ui-screenshots/`.

mod common;
use common::browser::Browser;
use common::pki::htpasswd;
use common::upstream::Upstream;
use common::*;
use fantoccini::Locator;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const VOLUME: &str = "application/vnd.docker.volume.v1+tar.gz";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// What an annotation tries: any of it running changes the page title.
const HOSTILE: &str =
    "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";

/// Pushes a manifest built from `m` (a JSON value) to `repo:tag`.
async fn put(api: &Api, repo: &str, tag: &str, content_type: &str, m: &Value) -> String {
    let bytes = serde_json::to_vec(m).unwrap();
    let r = api.put_manifest(repo, tag, content_type, &bytes).await;
    assert_eq!(r.status(), 201, "{repo}:{tag}: {}", r.text().await.unwrap());
    sha256(&bytes)
}

fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Fills `w` with one of each kind of content; returns the upstream that
/// `docker.io/library/alpine` was mirrored from.
async fn fill(w: &Wharf, up: &Upstream) {
    let api = Api::new(w);
    push_image(&api, "golden/app", "1.0", "app").await;

    // A multi-arch index of two images.
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let d = push_image(&api, "golden/multi", arch, &format!("multi-{arch}")).await;
        let size = api
            .req("HEAD", &format!("/v2/golden/multi/manifests/{d}"))
            .send()
            .await
            .unwrap()
            .content_length()
            .unwrap() as usize;
        let mut c = desc(OCI_MANIFEST, &d, size);
        c["platform"] = json!({"os": "linux", "architecture": arch});
        children.push(c);
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
    put(&api, "golden/multi", "latest", OCI_INDEX, &index).await;

    // A Helm chart as `helm push` writes it: no mediaType field.
    let cfg = br#"{"name":"web","version":"0.1.0","apiVersion":"v2"}"#;
    let chart = pattern(4000, 7);
    let cd = api.push_blob("charts/web", cfg).await;
    let ld = api.push_blob("charts/web", &chart).await;
    let m = json!({"schemaVersion": 2, "config": desc(HELM_CONFIG, &cd, cfg.len()),
        "layers": [desc(HELM_CHART, &ld, chart.len())]});
    put(&api, "charts/web", "0.1.0", OCI_MANIFEST, &m).await;

    // A Docker volume, as `oras push --artifact-type` writes it.
    let ed = api.push_blob("golden/vol", b"{}").await;
    let vol = pattern(3000, 8);
    let vd = api.push_blob("golden/vol", &vol).await;
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": VOLUME,
        "config": desc(OCI_EMPTY, &ed, 2),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &vd, vol.len())]});
    put(&api, "golden/vol", "v1", OCI_MANIFEST, &m).await;

    // An image whose annotations carry HTML and script.
    let cd = api.push_blob("golden/notes", br#"{"n":1}"#).await;
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &cd, 7), "layers": [],
        "annotations": {"org.opencontainers.image.description": HOSTILE, HOSTILE: "key"}});
    put(&api, "golden/notes", "v1", OCI_MANIFEST, &m).await;

    // A generic ORAS artifact with an SBOM and a signature attached, by
    // oras-py.
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/oras_roundtrip.py");
    let out = run(Command::new(require("python3"))
        .arg(script)
        .args([
            "--registry",
            &w.addr,
            "--repo",
            "golden/artifacts",
            "--workdir",
        ])
        .arg(tmp.path())
        .args(["--timeout", "60", "--no-referrers"]));
    assert!(out.contains("ORAS OK"), "{out}");

    // A mirrored image, pulled once through Wharf.
    let (md, _, _) = up.seed("library/alpine", "3.20", &pattern(5000, 9)).await;
    let r = api
        .req("GET", "/v2/library/alpine/manifests/3.20")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(md));
}

/// (name, content types) of every repository the API lists, following
/// `Link` pages of `n`.
async fn listed(api: &Api, query: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut path = format!("/api/v1/repositories?{query}");
    loop {
        let r = api.get(&path).await;
        assert_eq!(r.status(), 200, "{path}");
        let link = header(&r, "link");
        let v: Value = r.json().await.unwrap();
        for repo in v["repositories"].as_array().unwrap() {
            let kinds = repo["content_types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["content_type"].as_str().unwrap().to_string())
                .collect();
            out.push((repo["name"].as_str().unwrap().to_string(), kinds));
        }
        match link {
            Some(l) => {
                assert!(v["next"].is_string());
                path = l
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string()
            }
            None => return out,
        }
    }
}

fn names(l: &[(String, Vec<String>)]) -> Vec<&str> {
    l.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn ui_shows_each_tags_type_filters_searches_and_pull_commands() {
    let up = Upstream::start(false);
    up.set_faults(common::upstream::Faults {
        ratelimit: Some(100),
        ..Default::default()
    });
    let w = up.mirror(&[]);
    fill(&w, &up).await;
    let b = Browser::start().await;
    let c = &b.client;

    c.goto(&w.url("/")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("table#repositories"))
        .await
        .unwrap();
    b.screenshot("repositories").await;
    // Each repository's badges, as the page shows them.
    let mut seen = Vec::new();
    for row in c.find_all(Locator::Css("tr.repo")).await.unwrap() {
        let name = row.attr("data-name").await.unwrap().unwrap();
        let mut kinds = Vec::new();
        for badge in row.find_all(Locator::Css("span.badge")).await.unwrap() {
            kinds.push(badge.attr("data-type").await.unwrap().unwrap());
        }
        seen.push((name, kinds.join(",")));
    }
    let want = [
        ("charts/web", "helm"),
        ("golden/app", "image"),
        ("golden/artifacts", "other,other"),
        ("golden/multi", "image"),
        ("golden/notes", "image"),
        ("golden/vol", "volume"),
        ("docker.io/library/alpine", "image"),
    ];
    assert_eq!(
        seen,
        want.iter()
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect::<Vec<_>>()
    );
    let groups = c.find_all(Locator::Css("tr.group")).await.unwrap();
    let mut group_text = Vec::new();
    for g in groups {
        group_text.push(g.text().await.unwrap());
    }
    assert_eq!(group_text, ["Local", "Mirrored from docker.io"]);

    // The Helm filter shows only the chart.
    c.find(Locator::Css("a.filter[data-type=helm]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("tr.repo")).await.unwrap();
    assert_eq!(shown_repositories(c).await, ["charts/web"]);
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("type=helm"));
    b.screenshot("filter-helm").await;

    // The search box finds a repository.
    c.goto(&w.url("/")).await.unwrap();
    let q = c
        .find(Locator::Css("form#search input[name=q]"))
        .await
        .unwrap();
    q.send_keys("alpine").await.unwrap();
    c.find(Locator::Css("form#search button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_url(&url_with_query(&w, "q=alpine"))
        .await
        .unwrap();
    assert_eq!(shown_repositories(c).await, ["docker.io/library/alpine"]);
    b.screenshot("search-alpine").await;

    // A repository's tags: the index lists its platforms.
    c.goto(&w.url("/r/golden/multi")).await.unwrap();
    let row = c
        .find(Locator::Css("tr.tag[data-tag=latest]"))
        .await
        .unwrap();
    assert_eq!(
        row.find(Locator::Css("td.platforms"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "linux/amd64, linux/arm64"
    );
    assert_eq!(
        row.find(Locator::Css("span.badge"))
            .await
            .unwrap()
            .attr("data-type")
            .await
            .unwrap()
            .as_deref(),
        Some("image")
    );
    b.screenshot("repository-multi").await;

    // The artifact's referrers, with their types, and its media type on
    // hover.
    c.goto(&w.url("/r/golden/artifacts")).await.unwrap();
    let row = c.find(Locator::Css("tr.tag[data-tag=v1]")).await.unwrap();
    let badge = row.find(Locator::Css("span.badge")).await.unwrap();
    assert_eq!(
        badge.attr("data-type").await.unwrap().as_deref(),
        Some("other")
    );
    assert_eq!(
        badge.attr("title").await.unwrap().as_deref(),
        Some("application/vnd.wharf.test.v1")
    );
    let refs = row
        .find(Locator::Css("td.referrers"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refs.contains("application/vnd.wharf.sig.v1"), "{refs}");
    b.screenshot("repository-artifacts").await;

    // Tag pages: the pull commands with Wharf's own address.
    for (path, want) in [
        (
            "/r/golden/app:1.0",
            format!("docker pull {}/golden/app:1.0", w.addr),
        ),
        (
            "/r/charts/web:0.1.0",
            format!("helm pull oci://{}/charts/web --version 0.1.0", w.addr),
        ),
        (
            "/r/golden/vol:v1",
            format!("oras pull {}/golden/vol:v1", w.addr),
        ),
        (
            "/r/golden/artifacts:v1",
            format!("oras pull {}/golden/artifacts:v1", w.addr),
        ),
        (
            "/r/docker.io/library/alpine:3.20",
            format!("docker pull {}/docker.io/library/alpine:3.20", w.addr),
        ),
    ] {
        c.goto(&w.url(path)).await.unwrap();
        let first = c.find(Locator::Css("pre.pull")).await.unwrap();
        assert_eq!(first.text().await.unwrap(), want, "{path}");
        assert!(c.find(Locator::Css("pre#manifest")).await.is_ok(), "{path}");
    }
    c.goto(&w.url("/r/charts/web:0.1.0")).await.unwrap();
    b.screenshot("tag-helm").await;

    // Hostile annotations are shown as text and never run.
    c.goto(&w.url("/r/golden/notes:v1")).await.unwrap();
    let shown = c
        .find(Locator::Css("table#annotations"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains(HOSTILE), "{shown}");
    let title = c.title().await.unwrap();
    assert!(!title.contains("pwned"), "{title}");
    let injected = c
        .execute(
            "return document.querySelectorAll('script, img').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(0));
    b.screenshot("tag-hostile-annotations").await;

    // The cache page: one miss so far, the upstream reachable with the
    // pulls it says are left.
    c.goto(&w.url("/cache")).await.unwrap();
    let text = |css: &'static str| async move {
        c.find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let ratio = text("td#hit-ratio").await;
    assert!(
        ratio.starts_with("0.0%") && ratio.contains("1 misses"),
        "{ratio}"
    );
    assert_eq!(
        text("tr.upstream[data-name='docker.io'] td.state").await,
        "reachable"
    );
    let left = text("tr.upstream[data-name='docker.io'] td.ratelimit").await;
    assert!(left.ends_with(" of 100"), "{left}");
    b.screenshot("cache").await;
    // A warm pull is a hit; an upstream that stops answering shows so,
    // with why.
    let api = Api::new(&w);
    let r = api
        .req("GET", "/v2/library/alpine/manifests/3.20")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    up.set_faults(common::upstream::Faults {
        refuse: true,
        ..Default::default()
    });
    let r = api
        .req("GET", "/v2/library/busybox/manifests/1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_server_error() || r.status() == 404,
        "{}",
        r.status()
    );
    c.goto(&w.url("/cache")).await.unwrap();
    // (The failed lookup is a miss too.)
    let ratio = text("td#hit-ratio").await;
    assert!(
        ratio.starts_with("33.3%") && ratio.contains("1 hits"),
        "{ratio}"
    );
    assert_eq!(
        text("tr.upstream[data-name='docker.io'] td.state").await,
        "unreachable"
    );
    assert!(!text("tr.upstream[data-name='docker.io'] td.error")
        .await
        .is_empty());
    b.screenshot("cache-upstream-down").await;
    b.close().await;
}

/// The names of the repositories the page lists, in order.
async fn shown_repositories(c: &fantoccini::Client) -> Vec<String> {
    let mut out = Vec::new();
    for row in c.find_all(Locator::Css("tr.repo")).await.unwrap() {
        out.push(row.attr("data-name").await.unwrap().unwrap());
    }
    out
}

fn url_with_query(w: &Wharf, q: &str) -> url::Url {
    url::Url::parse(&w.url(&format!("/?{q}"))).unwrap()
}

#[tokio::test]
async fn api_lists_types_pages_and_refuses_bad_input() {
    let up = Upstream::start(false);
    let w = up.mirror(&[]);
    fill(&w, &up).await;
    let api = Api::new(&w);

    let all = listed(&api, "").await;
    assert_eq!(
        names(&all),
        [
            "charts/web",
            "golden/app",
            "golden/artifacts",
            "golden/multi",
            "golden/notes",
            "golden/vol",
            "docker.io/library/alpine"
        ]
    );
    // Pages of two give the same list.
    assert_eq!(listed(&api, "n=2").await, all);
    for (kind, want) in [
        ("helm", vec!["charts/web"]),
        ("volume", vec!["golden/vol"]),
        ("other", vec!["golden/artifacts"]),
        (
            "image",
            vec![
                "golden/app",
                "golden/multi",
                "golden/notes",
                "docker.io/library/alpine",
            ],
        ),
    ] {
        assert_eq!(
            names(&listed(&api, &format!("type={kind}")).await),
            want,
            "{kind}"
        );
        assert_eq!(
            names(&listed(&api, &format!("type={kind}&n=1")).await),
            want,
            "{kind}, one a page"
        );
    }
    assert_eq!(
        names(&listed(&api, "q=ALP").await),
        ["docker.io/library/alpine"]
    );

    // A repository's tags, with the fields the UI shows.
    let v = api.json("/api/v1/repositories/golden/multi/tags").await;
    assert_eq!(v["source"], "local");
    let latest = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "latest")
        .unwrap();
    assert_eq!(latest["content_type"], "image");
    assert_eq!(latest["media_type"], OCI_INDEX);
    assert_eq!(latest["platforms"], json!(["linux/amd64", "linux/arm64"]));
    assert!(latest["size"].as_u64().unwrap() > 4000);
    assert!(latest["stored"].is_string());
    let v = api.json("/api/v1/repositories/golden/artifacts/tags").await;
    let v1 = &v["tags"][0];
    assert_eq!(v1["tag"], "v1");
    assert_eq!(v1["content_type"], "other");
    assert_eq!(v1["content_media_type"], "application/vnd.wharf.test.v1");
    assert_eq!(v1["referrers"].as_array().unwrap().len(), 2, "{v1}");
    let v = api.json("/api/v1/repositories/golden/vol/tags").await;
    assert_eq!(v["tags"][0]["artifact_type"], VOLUME);
    assert_eq!(v["tags"][0]["content_type"], "volume");
    // Mirrored, by the name clients use or the short one.
    for name in ["docker.io/library/alpine", "alpine", "library/alpine"] {
        let v = api.json(&format!("/api/v1/repositories/{name}/tags")).await;
        assert_eq!(v["name"], "docker.io/library/alpine");
        assert_eq!(v["source"], "mirror");
        assert_eq!(v["upstream"], "docker.io");
        assert_eq!(v["tags"][0]["tag"], "3.20");
        assert_eq!(v["tags"][0]["content_type"], "image");
    }

    // A pull shows as one (a push does not); a mirrored image was pulled
    // when it was cached.
    let last_pulled = |repo: &'static str| {
        let api = &api;
        async move {
            let v = api.json(&format!("/api/v1/repositories/{repo}/tags")).await;
            v["tags"][0]["last_pulled"].clone()
        }
    };
    assert_eq!(last_pulled("golden/vol").await, Value::Null);
    assert!(last_pulled("docker.io/library/alpine").await.is_string());
    assert_eq!(last_pulled("golden/app").await, Value::Null);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = api
        .req("GET", "/v2/golden/app/manifests/1.0")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(last_pulled("golden/app").await.is_string());

    // Bad input: a clear error, and nothing changes.
    let before = listed(&api, "").await;
    let long = "a".repeat(60 * 1024);
    for (path, status, code) in [
        (
            "/api/v1/repositories?type=bogus".to_string(),
            400,
            "PARAMETER_INVALID",
        ),
        (
            "/api/v1/repositories?type=%3Cscript%3E".to_string(),
            400,
            "PARAMETER_INVALID",
        ),
        (
            "/api/v1/repositories?n=-1".to_string(),
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "/api/v1/repositories?n=abc".to_string(),
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            format!("/api/v1/repositories?q={long}"),
            400,
            "PARAMETER_INVALID",
        ),
        (
            "/api/v1/repositories?last=%3Cscript%3E".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            "/api/v1/repositories/golden/none/tags".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "/api/v1/repositories/%3Cb%3E/tags".to_string(),
            400,
            "NAME_INVALID",
        ),
        ("/api/v1/nothing".to_string(), 404, "NAME_UNKNOWN"),
    ] {
        let r = api.get(&path).await;
        assert_eq!(r.status(), status, "{}", &path[..path.len().min(80)]);
        assert_eq!(error_code(r).await, code, "{}", &path[..path.len().min(80)]);
    }
    // A 100 KiB search is more than a URI may hold: refused whole.
    let request = format!(
        "GET /api/v1/repositories?q={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer =
        common::attack::raw_exchange(&w.addr, request.as_bytes(), Duration::from_secs(5)).await;
    let status = common::attack::raw_status(&answer);
    assert!(
        status == 414 || status == 431 || status == 400,
        "{}",
        &answer[..answer.len().min(200)]
    );
    // A repository holding only untagged manifests is there, with no tags.
    let cd = api.push_blob("golden/untagged", br#"{"u":1}"#).await;
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &cd, 7), "layers": []});
    let d = sha256(&serde_json::to_vec(&m).unwrap());
    put(&api, "golden/untagged", &d, OCI_MANIFEST, &m).await;
    let v = api.json("/api/v1/repositories/golden/untagged/tags").await;
    assert_eq!(v["tags"], json!([]));
    // A cursor this server did not make is refused.
    let r = api.get("/api/v1/repositories?last=~Zm9v.YmFy").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "PARAMETER_INVALID");
    // A write a browser sends for another site's page is refused, and
    // leaves nothing behind.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = api
            .req("POST", "/v2/golden/csrf/blobs/uploads/")
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}");
        assert_eq!(error_code(r).await, "DENIED");
    }
    let same = api
        .req("POST", "/v2/golden/csrf/blobs/uploads/")
        .header("origin", format!("http://{}", w.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 202, "this server's own pages may");
    // A huge n is cut to the largest page.
    let r = api
        .get("/api/v1/repositories?n=99999999999999999999999")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(api.status("POST", "/api/v1/repositories").await, 405);
    let mut with_new = before.clone();
    with_new.insert(5, ("golden/untagged".to_string(), Vec::new()));
    assert_eq!(listed(&api, "").await, with_new);

    // The metrics count what was stored by the same content types, and
    // the UI and API requests by their kind of route.
    let text = api.get("/metrics").await.text().await.unwrap();
    for (source, kind, n) in [
        ("local", "image", 6),
        ("local", "helm", 1),
        ("local", "volume", 1),
        ("local", "other", 3),
        ("mirror", "image", 1),
    ] {
        let line = format!(
            "wharf_manifests_stored_total{{source=\"{source}\",content_type=\"{kind}\"}} {n}\n"
        );
        assert!(text.contains(&line), "{line}");
    }
    assert!(text.contains("route=\"api\",status=\"400\""));
    assert!(!text.contains("golden/"), "no repository name in a label");

    // UI pages with bad input answer with an HTML error, escaped.
    for (path, status) in [
        ("/?type=bogus", 400),
        ("/r/%3Cscript%3Ealert(1)%3C/script%3E", 400),
        ("/r/golden/none", 404),
        ("/r/golden/app:nosuchtag", 404),
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status(), status, "{path}");
        assert!(header(&r, "content-type").unwrap().starts_with("text/html"));
        let body = r.text().await.unwrap();
        assert!(!body.to_lowercase().contains("<script"), "{body}");
    }
}

#[tokio::test]
async fn ui_and_api_list_only_what_the_viewer_may_pull() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    htpasswd(&users, &[("alice", "alice-pw"), ("reader", "reader-pw")]);
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        "[[access]]\nrepositories = \"golden/*\"\npull = [\"anonymous\"]\npush = [\"alice\"]\n\n\
         [[access]]\nrepositories = \"charts/**\"\npull = [\"reader\", \"alice\"]\npush = [\"alice\"]\n",
    )
    .unwrap();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "--config".into(),
            cfg.display().to_string(),
            "--htpasswd".into(),
            users.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        Opts {
            args: a,
            ..Default::default()
        }
    };
    let w = Wharf::start_with(args(&[]));
    let alice = Api::new(&w).basic("alice", "alice-pw");
    push_image(&alice, "golden/app", "1", "a").await;
    push_image(&alice, "charts/secret", "1", "s").await;

    let anon = Api::new(&w);
    assert_eq!(names(&listed(&anon, "").await), ["golden/app"]);
    assert_eq!(
        anon.status("GET", "/api/v1/repositories/charts/secret/tags")
            .await,
        404,
        "unknown, not forbidden: its existence is not told"
    );
    let reader = Api::new(&w).basic("reader", "reader-pw");
    assert_eq!(
        names(&listed(&reader, "").await),
        ["charts/secret", "golden/app"]
    );
    let wrong = Api::new(&w).basic("reader", "wrong");
    assert_eq!(wrong.status("GET", "/api/v1/repositories").await, 401);
    // The UI: the anonymous page leaves the chart out; /login asks the
    // browser for a password, and once signed in sends it home.
    let page = anon.get("/").await.text().await.unwrap();
    assert!(page.contains("golden/app") && !page.contains("charts/secret"));
    let r = anon.get("/login").await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate")
        .unwrap()
        .starts_with("Basic "));
    let r = reader.get("/login").await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location").as_deref(), Some("/"), "sent home");
    let page = reader.get("/").await.text().await.unwrap();
    assert!(page.contains("charts/secret") && page.contains("Signed in as"));
    drop(w);

    // With anonymous pulls off, the anonymous UI asks for a password and
    // the API says 401.
    let w = Wharf::start_with(args(&["--anonymous-pull", "false"]));
    let anon = Api::new(&w);
    assert_eq!(anon.status("GET", "/api/v1/repositories").await, 401);
    let r = anon.get("/").await;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate")
        .unwrap()
        .starts_with("Basic "));
}
