//! Manifests, tags, the catalog, referrers and deletes, against a real
//! server: every manifest media type byte-for-byte, Helm's manifest with no
//! `mediaType`, subjects, paging, and the bad-input table.

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn every_manifest_type_round_trips_byte_for_byte() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/types";
    let cfg = api.push_blob(repo, b"{\"architecture\":\"amd64\"}").await;
    let layer = api.push_blob(repo, b"layer").await;

    let docker = image_manifest(
        Some(DOCKER_MANIFEST),
        ("application/vnd.docker.container.image.v1+json", &cfg, 24),
        &[(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            &layer,
            5,
        )],
    );
    // Odd whitespace and key order must survive: never re-serialised.
    let oci = format!(
        "{{ \"schemaVersion\" : 2,\n \"mediaType\":\"{OCI_MANIFEST}\", \"artifactType\": \"application/x.custom\",\n\
         \"config\":{{\"mediaType\":\"application/x.unknown.config\",\"digest\":\"{cfg}\",\"size\":24}},\"layers\":[] }}"
    )
    .into_bytes();
    let artifact = format!(
        "{{\"mediaType\":\"{OCI_ARTIFACT}\",\"artifactType\":\"application/x.sig\",\"blobs\":[{{\"mediaType\":\"x\",\"digest\":\"{layer}\",\"size\":5}}]}}"
    )
    .into_bytes();
    for (mt, body, tag) in [
        (DOCKER_MANIFEST, &docker, "docker"),
        (OCI_MANIFEST, &oci, "oci"),
        (OCI_ARTIFACT, &artifact, "artifact"),
    ] {
        let r = api.put_manifest(repo, tag, mt, body).await;
        assert_eq!(r.status(), 201, "{mt}: {:?}", r.text().await);
    }
    let child = sha256(&docker);
    let list = json!({"schemaVersion":2,"mediaType":DOCKER_LIST,"manifests":[{"mediaType":DOCKER_MANIFEST,"digest":child,"size":docker.len(),"platform":{"architecture":"amd64","os":"linux"}}]}).to_string().into_bytes();
    let index = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[{"mediaType":OCI_MANIFEST,"digest":sha256(&oci),"size":oci.len()}]}).to_string().into_bytes();
    for (mt, body, tag) in [(DOCKER_LIST, &list, "list"), (OCI_INDEX, &index, "index")] {
        let r = api.put_manifest(repo, tag, mt, body).await;
        assert_eq!(r.status(), 201, "{mt}: {:?}", r.text().await);
        assert_eq!(header(&r, "docker-content-digest"), Some(sha256(body)));
        assert_eq!(
            location(&r),
            format!("/v2/{repo}/manifests/{}", sha256(body))
        );
    }

    for (mt, body, tag) in [
        (DOCKER_MANIFEST, &docker, "docker"),
        (OCI_MANIFEST, &oci, "oci"),
        (OCI_ARTIFACT, &artifact, "artifact"),
        (DOCKER_LIST, &list, "list"),
        (OCI_INDEX, &index, "index"),
    ] {
        let d = sha256(body);
        for reference in [tag, d.as_str()] {
            // Accept lists that do not name the type still get the stored manifest.
            let r = api
                .req("GET", &format!("/v2/{repo}/manifests/{reference}"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .header("accept", "*/*")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "content-type").as_deref(), Some(mt));
            assert_eq!(
                header(&r, "docker-content-digest").as_deref(),
                Some(d.as_str())
            );
            assert_eq!(header(&r, "content-length"), Some(body.len().to_string()));
            assert_eq!(r.bytes().await.unwrap(), body.as_slice());

            let r = api
                .req("HEAD", &format!("/v2/{repo}/manifests/{reference}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "content-type").as_deref(), Some(mt));
            assert_eq!(header(&r, "content-length"), Some(body.len().to_string()));
            assert_eq!(
                header(&r, "docker-content-digest").as_deref(),
                Some(d.as_str())
            );
            assert!(r.bytes().await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn helm_style_manifest_without_media_type() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "charts/mychart";
    let config = br#"{"name":"mychart","version":"0.1.0+build.1","apiVersion":"v2"}"#;
    let chart = b"\x1f\x8b fake chart tarball".repeat(50);
    let cd = api.push_blob(repo, config).await;
    let ld = api.push_blob(repo, &chart).await;
    let m = image_manifest(
        None,
        (
            "application/vnd.cncf.helm.config.v1+json",
            &cd,
            config.len(),
        ),
        &[(
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            &ld,
            chart.len(),
        )],
    );
    // Helm sends the type only in Content-Type (parameters are ignored), and
    // writes `+` in versions as `_` in tags.
    let r = api
        .put_manifest(
            repo,
            "0.1.0_build.1",
            "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
            &m,
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = api
        .get(&format!("/v2/{repo}/manifests/0.1.0_build.1"))
        .await;
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
    let body = r.bytes().await.unwrap();
    assert_eq!(body, m.as_slice());
    let v: Value = serde_json::from_slice(&body).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v2/{repo}/blobs/{layer}"))
            .await
            .bytes()
            .await
            .unwrap(),
        chart
    );
}

#[tokio::test]
async fn tags_list_pages_in_lexical_order() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let d = push_image(&api, "golden/paged", "b", "x").await;
    let m = api
        .get(&format!("/v2/golden/paged/manifests/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    for t in ["a", "c", "B", "a1", "z"] {
        assert_eq!(
            api.put_manifest("golden/paged", t, OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    let list = |q: &'static str| {
        let api = &api;
        async move {
            let r = api.get(&format!("/v2/golden/paged/tags/list{q}")).await;
            assert_eq!(r.status(), 200);
            let link = header(&r, "link");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["name"], "golden/paged");
            let tags: Vec<String> = v["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (tags, link)
        }
    };
    assert_eq!(
        list("").await,
        (
            vec![
                "B".into(),
                "a".into(),
                "a1".into(),
                "b".into(),
                "c".into(),
                "z".into()
            ],
            None
        )
    );
    let (tags, link) = list("?n=2").await;
    assert_eq!(tags, ["B", "a"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/golden/paged/tags/list?last=a&n=2>; rel=\"next\"")
    );
    let (tags, link) = list("?n=2&last=a").await;
    assert_eq!(tags, ["a1", "b"]);
    assert!(link.is_some());
    let (tags, link) = list("?n=2&last=b").await;
    assert_eq!(tags, ["c", "z"]);
    assert_eq!(link, None, "no Link when nothing remains");
    assert_eq!(list("?n=0").await, (vec![], None));
    assert_eq!(list("?last=z").await, (vec![], None));

    let r = api.get("/v2/golden/paged/tags/list?n=-1").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "PAGINATION_NUMBER_INVALID");
    let r = api.get("/v2/golden/nothing/tags/list").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_lists_repositories() {
    let w = Wharf::start();
    let api = Api::new(&w);
    for r in ["golden/b", "golden/a", "charts/x"] {
        push_image(&api, r, "v1", r).await;
    }
    let v: Value = api.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        json!(["charts/x", "golden/a", "golden/b"])
    );
    let r = api.get("/v2/_catalog?n=1&last=charts/x").await;
    assert!(header(&r, "link").unwrap().contains("last=golden%2Fa"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["golden/a"]));
    assert_eq!(api.status("GET", "/v2/_catalog?n=5000").await, 400);
}

#[tokio::test]
async fn deletes_by_tag_and_by_digest() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/del";
    let d = push_image(&api, repo, "one", "s").await;
    let m = api
        .get(&format!("/v2/{repo}/manifests/one"))
        .await
        .bytes()
        .await
        .unwrap();
    api.put_manifest(repo, "two", OCI_MANIFEST, &m).await;

    assert_eq!(
        api.status("DELETE", &format!("/v2/{repo}/manifests/one"))
            .await,
        202
    );
    assert_eq!(
        api.status("GET", &format!("/v2/{repo}/manifests/one"))
            .await,
        404
    );
    assert_eq!(
        api.status("GET", &format!("/v2/{repo}/manifests/two"))
            .await,
        200
    );
    assert_eq!(
        api.status("GET", &format!("/v2/{repo}/manifests/{d}"))
            .await,
        200
    );

    assert_eq!(
        api.status("DELETE", &format!("/v2/{repo}/manifests/{d}"))
            .await,
        202
    );
    let r = api.get(&format!("/v2/{repo}/manifests/two")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    assert_eq!(
        api.status("GET", &format!("/v2/{repo}/manifests/{d}"))
            .await,
        404
    );
    assert_eq!(
        api.status("DELETE", &format!("/v2/{repo}/manifests/{d}"))
            .await,
        404
    );
    // Nothing is left: the repository is unknown again.
    let r = api.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn an_emptied_repository_leaves_the_catalog() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let catalog = || async {
        let v: Value = api.get("/v2/_catalog").await.json().await.unwrap();
        v["repositories"].clone()
    };
    let a = push_image(&api, "golden/gone", "v1", "a").await;
    let m = api
        .get(&format!("/v2/golden/gone/manifests/{a}"))
        .await
        .bytes()
        .await
        .unwrap();
    api.put_manifest("golden/gone", "v2", OCI_MANIFEST, &m)
        .await;
    let b = push_image(&api, "golden/gone", "other", "b").await;
    push_image(&api, "golden/stays", "v1", "c").await;
    assert_eq!(catalog().await, json!(["golden/gone", "golden/stays"]));

    // Tags first, then the manifests: listed until the last one goes.
    for t in ["v1", "v2", "other"] {
        let r = api
            .req("DELETE", &format!("/v2/golden/gone/manifests/{t}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    assert_eq!(catalog().await, json!(["golden/gone", "golden/stays"]));
    let v: Value = api
        .get("/v2/golden/gone/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!([]), "untagged manifests remain");
    for d in [&a, &b] {
        let r = api
            .req("DELETE", &format!("/v2/golden/gone/manifests/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    assert_eq!(catalog().await, json!(["golden/stays"]));
    let r = api.get("/v2/golden/gone/tags/list").await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    // Its blobs stay linked (until GC), so a push that uploaded them
    // before the repository emptied still completes, and lists it again.
    let r = api
        .put_manifest("golden/gone", "back", OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(catalog().await, json!(["golden/gone", "golden/stays"]));
    let v: Value = api
        .get("/v2/golden/gone/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["back"]));

    // A repository holding only blobs (a push half way) is not listed.
    api.push_blob("golden/half", b"a blob of a push half way")
        .await;
    assert_eq!(catalog().await, json!(["golden/gone", "golden/stays"]));
}

/// Deleting a repository's last manifest while another is pushed into it,
/// many times over: the pushed one always stays listed.
#[tokio::test]
async fn a_push_while_the_repository_empties_is_kept() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/race";
    let first = push_image(&api, repo, "first", "first").await;
    let m = api
        .get(&format!("/v2/{repo}/manifests/{first}"))
        .await
        .bytes()
        .await
        .unwrap();
    let mut previous = first;
    for round in 0..20 {
        // The same blobs, a manifest that differs by an annotation.
        let mut next: Value = serde_json::from_slice(&m).unwrap();
        next["annotations"] = json!({ "round": round.to_string() });
        let next = next.to_string().into_bytes();
        let tag = format!("r{round}");
        let (deleted, pushed) = tokio::join!(
            api.req("DELETE", &format!("/v2/{repo}/manifests/{previous}"))
                .send(),
            api.put_manifest(repo, &tag, OCI_MANIFEST, &next),
        );
        assert_eq!(deleted.unwrap().status(), 202, "round {round}");
        assert_eq!(pushed.status(), 201, "round {round}");
        let v: Value = api.get("/v2/_catalog").await.json().await.unwrap();
        assert_eq!(v["repositories"], json!([repo]), "round {round}");
        let v: Value = api
            .get(&format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["tags"], json!([tag]), "round {round}");
        previous = sha256(&next);
    }
}

#[tokio::test]
async fn referrers_with_subject_filtering_and_fallback_tag_index() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/ref";
    let subject = push_image(&api, repo, "v1", "subject").await;
    let subject_size = api
        .get(&format!("/v2/{repo}/manifests/v1"))
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    let empty = api.push_blob(repo, b"{}").await;

    let make = |artifact_type: &str, note: &str| {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
            "annotations": {"note": note}
        })
        .to_string()
        .into_bytes()
    };
    let sbom = make("application/vnd.example.sbom", "sbom");
    let sig = make("application/vnd.example.sig", "sig");
    for m in [&sbom, &sig] {
        let r = api.put_manifest(repo, &sha256(m), OCI_MANIFEST, m).await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject"), Some(subject.clone()));
    }
    let r = api.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    assert!(header(&r, "oci-filters-applied").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["mediaType"], OCI_INDEX);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let sbom_desc = list.iter().find(|d| d["digest"] == sha256(&sbom)).unwrap();
    assert_eq!(sbom_desc["artifactType"], "application/vnd.example.sbom");
    assert_eq!(sbom_desc["annotations"]["note"], "sbom");
    assert_eq!(sbom_desc["size"], sbom.len());
    assert_eq!(sbom_desc["mediaType"], OCI_MANIFEST);

    let r = api
        .get(&format!(
            "/v2/{repo}/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sha256(&sig));

    // Unknown digest (the oras-go probe): 200 with an empty list.
    let zero = format!("sha256:{}", "0".repeat(64));
    let r = api.get(&format!("/v2/{repo}/referrers/{zero}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));

    // A subject that does not exist is accepted, with OCI-Subject.
    let ghost = sha256(b"no such manifest");
    let mut m: Value = serde_json::from_slice(&sbom).unwrap();
    m["subject"]["digest"] = ghost.clone().into();
    let m = m.to_string().into_bytes();
    let r = api.put_manifest(repo, "dangling", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject"), Some(ghost.clone()));

    // Deleting a referrer removes it from the list.
    assert_eq!(
        api.status("DELETE", &format!("/v2/{repo}/manifests/{}", sha256(&sig)))
            .await,
        202
    );
    let v: Value = api
        .get(&format!("/v2/{repo}/referrers/{subject}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);

    // Manifests recorded in a client-maintained `sha256-<hex>` index count too.
    let other = push_image(&api, repo, "other", "other").await;
    let legacy = push_image(&api, repo, "legacy-sig", "legacy").await;
    let fallback = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":legacy,"size":10,"artifactType":"application/vnd.legacy"}]})
    .to_string()
    .into_bytes();
    let tag = other.replace(':', "-");
    assert_eq!(
        api.put_manifest(repo, &tag, OCI_INDEX, &fallback)
            .await
            .status(),
        201
    );
    let v: Value = api
        .get(&format!("/v2/{repo}/referrers/{other}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"][0]["digest"], legacy);
}

/// The referrers answer pages with `n` and `last`, keyed on the referrer
/// digest, the filter holding on every page; bad `n` and `last` are 400.
#[tokio::test]
async fn referrers_page_with_n_and_last() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/refpages";
    let subject = push_image(&api, repo, "v1", "subject").await;
    let empty = api.push_blob(repo, b"{}").await;
    let mut all = Vec::new();
    let mut sigs = Vec::new();
    for i in 0..23 {
        let t = if i % 3 == 0 {
            "application/vnd.example.sig"
        } else {
            "application/vnd.example.sbom"
        };
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": t,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
            "annotations": {"i": i.to_string()},
        })
        .to_string()
        .into_bytes();
        let d = sha256(&m);
        assert_eq!(
            api.put_manifest(repo, &d, OCI_MANIFEST, &m).await.status(),
            201
        );
        if i % 3 == 0 {
            sigs.push(d.clone());
        }
        all.push(d);
    }
    all.sort();
    sigs.sort();
    let walk = |first: String| {
        let api = &api;
        async move {
            let (mut url, mut seen, mut links) = (first, Vec::new(), Vec::new());
            loop {
                let r = api.get(&url).await;
                assert_eq!(r.status(), 200, "{url}");
                let link = header(&r, "link");
                let filtered = header(&r, "oci-filters-applied");
                let v: Value = r.json().await.unwrap();
                let page: Vec<String> = v["manifests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["digest"].as_str().unwrap().to_string())
                    .collect();
                seen.push((page, filtered));
                match link {
                    Some(l) => {
                        url = l[1..l.find('>').unwrap()].to_string();
                        links.push(l);
                    }
                    None => return (seen, links),
                }
            }
        }
    };
    let (pages, links) = walk(format!("/v2/{repo}/referrers/{subject}?n=5")).await;
    assert_eq!(pages.len(), 5);
    assert!(pages[..4].iter().all(|(p, _)| p.len() == 5));
    assert_eq!(digests_of(&pages), all);
    assert_eq!(
        links[0],
        format!(
            "</v2/{repo}/referrers/{subject}?last={}&n=5>; rel=\"next\"",
            all[4].replace(':', "%3A")
        )
    );

    let (pages, links) = walk(format!(
        "/v2/{repo}/referrers/{subject}?artifactType=application/vnd.example.sig&n=3"
    ))
    .await;
    assert_eq!(digests_of(&pages), sigs);
    assert!(pages
        .iter()
        .all(|(_, f)| f.as_deref() == Some("artifactType")));
    assert!(links
        .iter()
        .all(|l| l.contains("artifactType=application%2Fvnd.example.sig")));
    assert_eq!(pages.len(), 3, "8 signatures in pages of 3");

    // Without n, one page holds them all; n over the maximum is cut to it.
    let (pages, _) = walk(format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(pages.len(), 1);
    let (pages, _) = walk(format!("/v2/{repo}/referrers/{subject}?n=999999")).await;
    assert_eq!(digests_of(&pages), all);
    let (pages, _) = walk(format!("/v2/{repo}/referrers/{subject}?last={}", all[20])).await;
    assert_eq!(digests_of(&pages), all[21..]);

    for (q, code) in [
        ("n=-1", "PAGINATION_NUMBER_INVALID"),
        ("n=ten", "PAGINATION_NUMBER_INVALID"),
        ("last=latest", "DIGEST_INVALID"),
        ("last=sha256:abc", "DIGEST_INVALID"),
    ] {
        let r = api
            .get(&format!("/v2/{repo}/referrers/{subject}?{q}"))
            .await;
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(error_code(r).await, code, "{q}");
    }
}

/// The digests of every page, in order.
fn digests_of(pages: &[(Vec<String>, Option<String>)]) -> Vec<String> {
    pages.iter().flat_map(|(p, _)| p.iter().cloned()).collect()
}

#[tokio::test]
async fn manifest_size_limit() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/big";
    let cfg = api.push_blob(repo, b"{}").await;
    let pad = |n: usize| {
        let mut m: Value = serde_json::from_slice(&image_manifest(
            Some(OCI_MANIFEST),
            ("application/x", &cfg, 2),
            &[],
        ))
        .unwrap();
        let base = m.to_string().len() + r#","annotations":{"pad":""}"#.len();
        m["annotations"] = json!({"pad": "x".repeat(n - base)});
        let b = m.to_string().into_bytes();
        assert_eq!(b.len(), n);
        b
    };
    let ok = pad(4 * 1024 * 1024);
    assert_eq!(
        api.put_manifest(repo, "fits", OCI_MANIFEST, &ok)
            .await
            .status(),
        201
    );
    let r = api.get(&format!("/v2/{repo}/manifests/fits")).await;
    assert_eq!(r.bytes().await.unwrap().len(), ok.len());

    let big = pad(4 * 1024 * 1024 + 1);
    let r = api.put_manifest(repo, "toolarge", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        api.status("GET", &format!("/v2/{repo}/manifests/toolarge"))
            .await,
        404
    );
    assert_eq!(
        api.status("GET", &format!("/v2/{repo}/manifests/{}", sha256(&big)))
            .await,
        404
    );
}

/// Bad input: each row gets its OCI code and status, and leaves nothing
/// behind (the store's file and index state are unchanged).
#[tokio::test]
async fn bad_input_table() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/bad";
    let cfg = api.push_blob(repo, b"{}").await;
    let good = image_manifest(Some(OCI_MANIFEST), ("application/x", &cfg, 2), &[]);
    let missing = sha256(b"missing layer");
    let missing2 = sha256(b"missing layer 2");
    let blob_missing = image_manifest(
        Some(OCI_MANIFEST),
        ("application/x", &cfg, 2),
        &[("l", &missing, 1), ("l", &missing2, 1)],
    );
    let index_missing = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[{"mediaType":OCI_MANIFEST,"digest":missing,"size":1}]}).to_string();
    let long_name = format!("golden/{}", "a".repeat(250));
    let upper = format!("sha256:{}", "A".repeat(64));
    let wrong_digest = sha256(b"other");

    struct Case<'a> {
        what: &'a str,
        method: &'a str,
        path: String,
        content_type: Option<&'a str>,
        body: Vec<u8>,
        status: u16,
        code: &'a str,
    }
    let blobs_before = count_files(&w.data.join("blobs"));
    let cases = vec![
        Case {
            what: "uppercase name",
            method: "GET",
            path: "/v2/Golden/x/tags/list".into(),
            content_type: None,
            body: vec![],
            status: 400,
            code: "NAME_INVALID",
        },
        Case {
            what: "double dot in a component",
            method: "PUT",
            path: "/v2/golden/a..b/manifests/v1".into(),
            content_type: Some(OCI_MANIFEST),
            body: good.clone(),
            status: 400,
            code: "NAME_INVALID",
        },
        Case {
            what: "empty component",
            method: "POST",
            path: "/v2/golden//x/blobs/uploads/".into(),
            content_type: None,
            body: vec![],
            status: 400,
            code: "NAME_INVALID",
        },
        Case {
            what: "name over 255",
            method: "POST",
            path: format!("/v2/{long_name}/blobs/uploads/"),
            content_type: None,
            body: vec![],
            status: 400,
            code: "NAME_INVALID",
        },
        Case {
            what: "invalid tag",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/-bad"),
            content_type: Some(OCI_MANIFEST),
            body: good.clone(),
            status: 400,
            code: "TAG_INVALID",
        },
        Case {
            what: "tag with plus",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/1.0+x"),
            content_type: Some(OCI_MANIFEST),
            body: good.clone(),
            status: 400,
            code: "TAG_INVALID",
        },
        Case {
            what: "malformed digest",
            method: "GET",
            path: format!("/v2/{repo}/blobs/sha256:xyz"),
            content_type: None,
            body: vec![],
            status: 400,
            code: "DIGEST_INVALID",
        },
        Case {
            what: "unknown algorithm",
            method: "GET",
            path: format!("/v2/{repo}/blobs/md5:{}", "a".repeat(32)),
            content_type: None,
            body: vec![],
            status: 400,
            code: "DIGEST_INVALID",
        },
        Case {
            what: "uppercase digest",
            method: "GET",
            path: format!("/v2/{repo}/manifests/{upper}"),
            content_type: None,
            body: vec![],
            status: 400,
            code: "DIGEST_INVALID",
        },
        Case {
            what: "blob digest mismatch",
            method: "POST",
            path: format!("/v2/{repo}/blobs/uploads/?digest={wrong_digest}"),
            content_type: None,
            body: b"actual".to_vec(),
            status: 400,
            code: "DIGEST_INVALID",
        },
        Case {
            what: "manifest digest mismatch",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/{wrong_digest}"),
            content_type: Some(OCI_MANIFEST),
            body: good.clone(),
            status: 400,
            code: "DIGEST_INVALID",
        },
        Case {
            what: "manifest not JSON",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/notjson"),
            content_type: Some(OCI_MANIFEST),
            body: b"{not json".to_vec(),
            status: 400,
            code: "MANIFEST_INVALID",
        },
        Case {
            what: "mediaType contradicts Content-Type",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/contra"),
            content_type: Some(DOCKER_MANIFEST),
            body: good.clone(),
            status: 400,
            code: "MANIFEST_INVALID",
        },
        Case {
            what: "schema1 manifest",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/s1"),
            content_type: Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            body: b"{\"schemaVersion\":1}".to_vec(),
            status: 400,
            code: "MANIFEST_INVALID",
        },
        Case {
            what: "missing blobs",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/missing"),
            content_type: Some(OCI_MANIFEST),
            body: blob_missing.clone(),
            status: 400,
            code: "MANIFEST_BLOB_UNKNOWN",
        },
        Case {
            what: "index with missing child",
            method: "PUT",
            path: format!("/v2/{repo}/manifests/idx"),
            content_type: Some(OCI_INDEX),
            body: index_missing.into_bytes(),
            status: 400,
            code: "MANIFEST_BLOB_UNKNOWN",
        },
        Case {
            what: "unknown upload id",
            method: "PATCH",
            path: format!("/v2/{repo}/blobs/uploads/5f0c9b5e-0000-4000-8000-000000000000"),
            content_type: None,
            body: b"x".to_vec(),
            status: 404,
            code: "BLOB_UPLOAD_UNKNOWN",
        },
        Case {
            what: "reading a name that is no valid tag",
            method: "GET",
            path: format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME"),
            content_type: None,
            body: vec![],
            status: 404,
            code: "MANIFEST_UNKNOWN",
        },
        Case {
            what: "unknown manifest",
            method: "GET",
            path: format!("/v2/{repo}/manifests/nope"),
            content_type: None,
            body: vec![],
            status: 404,
            code: "MANIFEST_UNKNOWN",
        },
        Case {
            what: "unsupported method",
            method: "POST",
            path: format!("/v2/{repo}/manifests/v1"),
            content_type: None,
            body: vec![],
            status: 405,
            code: "UNSUPPORTED",
        },
    ];
    for c in cases {
        let mut req = api.req(c.method, &c.path).body(c.body);
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), c.status, "{}", c.what);
        assert_eq!(
            header(&r, "content-type").as_deref(),
            Some("application/json"),
            "{}",
            c.what
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], c.code, "{}: {v}", c.what);
        assert!(v["errors"][0]["message"].is_string(), "{}", c.what);
    }
    // One MANIFEST_BLOB_UNKNOWN per missing blob.
    let r = api
        .put_manifest(repo, "missing", OCI_MANIFEST, &blob_missing)
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"].as_array().unwrap().len(), 2);

    // Nothing was written: no new blob files, no temp files, no manifest
    // (a repository holding only blobs is unknown to tag lists).
    assert_eq!(count_files(&w.data.join("blobs")), blobs_before);
    assert_eq!(count_files(&w.data.join("tmp")), 0);
    let r = api.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    // An out-of-order chunk on a live session: 416 with the offset.
    let r = api
        .req("POST", &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let r = api
        .req("PATCH", &location(&r))
        .header("content-range", "5-9")
        .body("abcde")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    assert_eq!(error_code(r).await, "RANGE_INVALID");
}

/// Paths with `..` components, sent raw (HTTP clients normalise them away).
#[test]
fn dot_dot_paths_are_refused() {
    use std::io::{Read, Write};
    let w = Wharf::start();
    for path in [
        "/v2/golden/../x/tags/list",
        "/v2/../../etc/manifests/passwd",
        "/v2/golden/%2e%2e/x/manifests/v1",
    ] {
        let mut s = std::net::TcpStream::connect(&w.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
        assert!(out.contains("NAME_INVALID"), "{path}: {out}");
    }
}

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                n += count_files(&e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// `PUT manifests/<digest>?tag=a&tag=b` (distribution-spec main) tags in
/// one request and answers with an `OCI-Tag` header per tag.
#[tokio::test]
async fn put_by_digest_with_tag_parameters() {
    let w = Wharf::start();
    let api = Api::new(&w);
    let repo = "golden/tagparam";
    let cfg = api.push_blob(repo, b"{}").await;
    let m = image_manifest(Some(OCI_MANIFEST), ("application/x", &cfg, 2), &[]);
    let d = sha256(&m);
    let r = api
        .put_manifest(repo, &format!("{d}?tag=one&tag=two"), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 201);
    let tags: Vec<_> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(tags, ["one", "two"]);
    let v: Value = api
        .get(&format!("/v2/{repo}/tags/list"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["one", "two"]));
    let r = api
        .put_manifest(repo, &format!("{d}?tag=bad+tag"), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 400);
}
