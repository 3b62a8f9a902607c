//! Listings at scale, against a real server, while another client keeps
//! asking `GET /v2/`: twenty clients list 10,000 referrers of one subject
//! at once, and twenty list a repository of 100,000 tags, each following
//! `Link` to the end; and the web UI and JSON API list 10,000
//! repositories. The listings must page (every entry once, in order,
//! the `artifactType` filter holding on every page); how long `GET /v2/`
//! took meanwhile is printed, never asserted (speed is not a test
//! assertion). The content is pushed over several connections at once.

mod common;
use common::*;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const REFERRERS: usize = 10_000;
const LISTERS: usize = 20;
const PUSH_CONNECTIONS: usize = 16;
const SBOM: &str = "application/vnd.example.sbom";
const SIG: &str = "application/vnd.example.sig";

/// The target of a `Link: <url>; rel="next"` header.
fn next_link(r: &reqwest::Response) -> Option<String> {
    let l = header(r, "link")?;
    assert!(l.ends_with("rel=\"next\""), "Link: {l}");
    let start = l.find('<')? + 1;
    let end = l.find('>')?;
    Some(l[start..end].to_string())
}

/// Follows a referrers listing from `first` to its last page; returns the
/// digests in order and the number of pages.
async fn list_all(api: &Api, first: &str, filter: Option<&str>) -> (Vec<String>, usize) {
    let mut url = first.to_string();
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let r = api.get(&url).await;
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
        assert_eq!(
            header(&r, "oci-filters-applied").as_deref(),
            filter.map(|_| "artifactType"),
            "{url}"
        );
        let next = next_link(&r);
        let v: Value = r.json().await.unwrap();
        for d in v["manifests"].as_array().unwrap() {
            if let Some(t) = filter {
                assert_eq!(d["artifactType"], t, "{url}");
            }
            out.push(d["digest"].as_str().unwrap().to_string());
        }
        pages += 1;
        match next {
            Some(n) => {
                assert!(n.starts_with('/'), "a path on this registry: {n}");
                if filter.is_some() {
                    assert!(n.contains("artifactType="), "filter kept: {n}");
                }
                url = n;
            }
            None => return (out, pages),
        }
    }
}

/// GET /v2/ every 20 ms until `stop`; returns every latency seen.
async fn probe(api: Api, stop: tokio::sync::watch::Receiver<bool>) -> Vec<Duration> {
    let mut seen = Vec::new();
    while !*stop.borrow() {
        let t = Instant::now();
        let r = api.get("/v2/").await;
        assert_eq!(r.status(), 200);
        seen.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

fn summary(l: &mut [Duration]) -> String {
    l.sort();
    let at = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)];
    format!(
        "{} probes, median {:?}, p99 {:?}, max {:?}",
        l.len(),
        at(0.5),
        at(0.99),
        l[l.len() - 1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_referrers_page_while_the_registry_stays_responsive() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/many";
    let subject = push_image(&api, repo, "v1", "subject").await;
    let subject_size = api
        .get(&format!("/v2/{repo}/manifests/v1"))
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    let empty = api.push_blob(repo, b"{}").await;

    // Every fifth referrer is an SBOM, the rest signatures.
    let started = Instant::now();
    let manifests: Vec<(String, Vec<u8>, &str)> = (0..REFERRERS)
        .map(|i| {
            let t = if i % 5 == 0 { SBOM } else { SIG };
            let m = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": t,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
                "layers": [],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
                "annotations": {"n": i.to_string()}
            })
            .to_string()
            .into_bytes();
            (sha256(&m), m, t)
        })
        .collect();
    let pushed: Vec<u16> = stream::iter(&manifests)
        .map(|(d, m, _)| {
            let api = &api;
            async move {
                api.put_manifest(repo, d, OCI_MANIFEST, m)
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(PUSH_CONNECTIONS)
        .collect()
        .await;
    assert!(pushed.iter().all(|s| *s == 201), "every push is 201");
    eprintln!(
        "setup: {REFERRERS} referrers pushed over {PUSH_CONNECTIONS} connections in {:?}",
        started.elapsed()
    );
    let all: HashSet<String> = manifests.iter().map(|(d, _, _)| d.clone()).collect();
    let sboms: HashSet<String> = manifests
        .iter()
        .filter(|(_, _, t)| *t == SBOM)
        .map(|(d, _, _)| d.clone())
        .collect();

    let first = format!("/v2/{repo}/referrers/{subject}");
    let results = listed_while_probing(&w, "10,000 referrers", |api| {
        let first = first.clone();
        async move { list_all(&api, &first, None).await }
    })
    .await;

    for (digests, pages) in &results {
        let unique: HashSet<String> = digests.iter().cloned().collect();
        assert_eq!(unique.len(), digests.len(), "no referrer listed twice");
        assert_eq!(unique, all, "every referrer listed");
        assert!(*pages > 1, "10,000 referrers come in more than one page");
        let mut sorted = digests.clone();
        sorted.sort();
        assert_eq!(&sorted, digests, "pages run in digest order");
    }

    // The filter holds across pages, with small pages too.
    let (digests, pages) =
        list_all(&api, &format!("{first}?artifactType={SBOM}"), Some(SBOM)).await;
    assert_eq!(digests.iter().cloned().collect::<HashSet<_>>(), sboms);
    assert_eq!(digests.len(), sboms.len());
    assert!(pages > 1, "2,000 SBOMs come in more than one page");
    let (digests, pages) = list_all(
        &api,
        &format!("{first}?artifactType={SBOM}&n=333"),
        Some(SBOM),
    )
    .await;
    assert_eq!(digests.len(), sboms.len());
    assert_eq!(digests.into_iter().collect::<HashSet<_>>(), sboms);
    assert!(pages >= sboms.len() / 333, "pages of at most 333: {pages}");
}

/// Follows a tag list from `first` to its last page; returns the tags in
/// order and the number of pages.
async fn list_tags(api: &Api, first: &str) -> (Vec<String>, usize) {
    let mut url = first.to_string();
    let (mut out, mut pages) = (Vec::new(), 0);
    loop {
        let r = api.get(&url).await;
        assert_eq!(r.status(), 200, "{url}");
        let next = next_link(&r);
        let v: Value = r.json().await.unwrap();
        out.extend(
            v["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string()),
        );
        pages += 1;
        match next {
            Some(n) => url = n,
            None => return (out, pages),
        }
    }
}

/// Runs `LISTERS` listings at once while probing `GET /v2/`; prints the
/// latencies and returns every listing's result.
async fn listed_while_probing<T, F>(w: &Wharf, what: &str, list: impl Fn(Api) -> F) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::watch::channel(false);
    let idle = tokio::spawn(probe(Api::new(w), rx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(true).unwrap();
    let mut idle = idle.await.unwrap();

    let (tx, rx) = tokio::sync::watch::channel(false);
    let busy = tokio::spawn(probe(Api::new(w), rx));
    let started = Instant::now();
    let tasks: Vec<_> = (0..LISTERS)
        .map(|_| tokio::spawn(list(Api::new(w))))
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let took = started.elapsed();
    tx.send(true).unwrap();
    let mut busy = busy.await.unwrap();
    eprintln!("{what}: GET /v2/ idle: {}", summary(&mut idle));
    eprintln!(
        "{what}: GET /v2/ during {LISTERS} parallel listings ({took:?} in all): {}",
        summary(&mut busy)
    );
    results
}

const TAGS: usize = 100_000;
const TAGS_PER_PUT: usize = 90;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_tags_page_while_the_registry_stays_responsive() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/tags";
    let d = push_image(&api, repo, "v1", "tags").await;
    let m = api
        .get(&format!("/v2/{repo}/manifests/{d}"))
        .await
        .bytes()
        .await
        .unwrap();

    // The same manifest again, 90 `?tag=` at a time (each answered with an
    // `OCI-Tag` header, and reqwest reads at most 100 headers).
    let started = Instant::now();
    let mut want: Vec<String> = (0..TAGS).map(|i| format!("t{i:06}")).collect();
    let statuses: Vec<u16> = stream::iter(want.chunks(TAGS_PER_PUT))
        .map(|tags| {
            let (api, m, d) = (&api, m.clone(), &d);
            let q: String = tags.iter().map(|t| format!("tag={t}&")).collect();
            async move {
                api.req("PUT", &format!("/v2/{repo}/manifests/{d}?{q}"))
                    .header("content-type", OCI_MANIFEST)
                    .body(m)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201), "every push is 201");
    eprintln!(
        "setup: {TAGS} tags pushed, {TAGS_PER_PUT} a PUT, in {:?}",
        started.elapsed()
    );
    want.push("v1".into());
    want.sort();

    let first = format!("/v2/{repo}/tags/list");
    let results = listed_while_probing(&w, "100,000 tags", |api| {
        let first = first.clone();
        async move { list_tags(&api, &first).await }
    })
    .await;
    for (tags, pages) in &results {
        assert_eq!(tags, &want, "every tag once, in lexical order");
        assert!(*pages > 1, "100,001 tags come in more than one page");
    }
    let (tags, pages) = list_tags(&api, &format!("{first}?n=7777")).await;
    assert_eq!(tags, want);
    assert_eq!(pages, want.len().div_ceil(7777));
}

const REPOS: usize = 10_000;

/// The web UI and the JSON API over 10,000 repositories: the API pages
/// through every one exactly once, in order; a content-type filter that
/// matches one repository at the very end still finds it, page after
/// page; the UI's first page is one bounded page. Times are printed.
#[tokio::test]
async fn ten_thousand_repositories_page_in_the_ui_and_the_api() {
    let w = Wharf::start();
    let api = Api::new(&w);
    push_image(&api, "golden/base", "1", "base").await;
    let v: Value = api
        .get("/v2/golden/base/manifests/1")
        .await
        .json()
        .await
        .unwrap();
    let config = v["config"]["digest"].as_str().unwrap().to_string();
    let layer = v["layers"][0]["digest"].as_str().unwrap().to_string();
    let manifest = serde_json::to_vec(&v).unwrap();
    let started = Instant::now();
    stream::iter(0..REPOS)
        .map(|i| {
            let (api, config, layer, manifest) = (&api, &config, &layer, &manifest);
            async move {
                let repo = format!("golden/r{i:05}");
                for d in [config, layer] {
                    let r = api
                        .req(
                            "POST",
                            &format!("/v2/{repo}/blobs/uploads/?mount={d}&from=golden/base"),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201, "mount into {repo}");
                }
                let r = api.put_manifest(&repo, "1", OCI_MANIFEST, manifest).await;
                assert_eq!(r.status(), 201);
            }
        })
        .buffer_unordered(PUSH_CONNECTIONS)
        .collect::<Vec<()>>()
        .await;
    // One chart, listed last.
    let cfg = br#"{"name":"zz"}"#;
    let cd = api.push_blob("golden/zz-chart", cfg).await;
    let m = json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cd, "size": cfg.len()}, "layers": []});
    let r = api
        .put_manifest(
            "golden/zz-chart",
            "0.1.0",
            OCI_MANIFEST,
            &serde_json::to_vec(&m).unwrap(),
        )
        .await;
    assert_eq!(r.status(), 201);
    println!("setup: {REPOS} repositories in {:?}", started.elapsed());

    let t = Instant::now();
    let r = api.get("/").await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    println!("UI first page (50 repositories): {:?}", t.elapsed());
    assert_eq!(page.matches("<tr class=\"repo\"").count(), 50);

    let t = Instant::now();
    let mut names = Vec::new();
    let mut url = "/api/v1/repositories?n=1000".to_string();
    loop {
        let r = api.get(&url).await;
        assert_eq!(r.status(), 200, "{url}");
        let next = next_link(&r);
        let v: Value = r.json().await.unwrap();
        for repo in v["repositories"].as_array().unwrap() {
            names.push(repo["name"].as_str().unwrap().to_string());
        }
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    println!("API, every repository in pages of 1,000: {:?}", t.elapsed());
    assert_eq!(names.len(), REPOS + 2);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names, "each once, in order");

    let t = Instant::now();
    let mut found = Vec::new();
    let mut pages = 0;
    let mut url = "/api/v1/repositories?type=helm".to_string();
    loop {
        let r = api.get(&url).await;
        assert_eq!(r.status(), 200, "{url}");
        pages += 1;
        let next = next_link(&r);
        let v: Value = r.json().await.unwrap();
        for repo in v["repositories"].as_array().unwrap() {
            found.push(repo["name"].as_str().unwrap().to_string());
        }
        match next {
            Some(n) => {
                assert!(n.contains("type=helm"), "filter kept: {n}");
                url = n
            }
            None => break,
        }
    }
    println!(
        "API, the one Helm chart among {REPOS}: {pages} requests, {:?}",
        t.elapsed()
    );
    assert_eq!(found, ["golden/zz-chart"]);
}
