//! A hostile upstream, through the real binary: token realms on other
//! servers, redirects to loopback and private addresses, and HEAD answers
//! from a redirect target, and the log volume of upstream 404s. Nothing
//! leaves loopback.

mod common;
use common::sink::{Handler, Sink};
use common::upstream::{Faults, Upstream};
use common::*;
use std::sync::Arc;
use std::time::Duration;

/// Pushes `repo:tag` with one layer straight to the registry (not
/// counted); returns (manifest digest, layer digest).
async fn seed(up: &Upstream, repo: &str, tag: &str, layer: &[u8]) -> (String, String) {
    let reg = Api::at(&up.registry_addr);
    let config = format!("{{\"seed\":\"{repo}:{tag}\"}}");
    let cd = reg.push_blob(repo, config.as_bytes()).await;
    let ld = reg.push_blob(repo, layer).await;
    let m = image_manifest(
        Some(OCI_MANIFEST),
        (
            "application/vnd.oci.image.config.v1+json",
            &cd,
            config.len(),
        ),
        &[(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &ld,
            layer.len(),
        )],
    );
    assert_eq!(
        reg.put_manifest(repo, tag, OCI_MANIFEST, &m).await.status(),
        201
    );
    (sha256(&m), ld)
}

/// A token server: every request gets a token the fake upstream accepts.
fn token_server() -> Handler {
    Arc::new(|_| {
        (
            200,
            vec![("content-type".into(), "application/json".into())],
            br#"{"token":"token-realm","expires_in":300}"#.to_vec(),
        )
    })
}

/// Whether the log holds a line with every one of `parts` within a second
/// or two (stderr is read by another thread).
async fn logged(w: &Wharf, parts: &[&str]) -> bool {
    wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        w.logged(parts)
    })
    .await
}

#[tokio::test]
async fn token_realms_on_other_servers_get_nothing_unless_listed() {
    let up = Upstream::start(true);
    let (md, _) = seed(&up, "library/guarded", "v1", b"guarded layer").await;
    let secret = "realm-pa55word";
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("password");
    std::fs::write(&pw, secret).unwrap();
    let ca = pki::TestCa::new("realm CA");
    let (cert, key) = ca.server("realm");
    let https_realm = Sink::start("127.0.0.1", Some((&cert, &key)), token_server());
    let http_realm = Sink::start("127.0.0.1", None, token_server());
    let creds = format!(
        "username = \"mirror-bot\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
        pw.display(),
        ca.ca_file().display()
    );

    // The realm is on another port: refused, and it never hears of us.
    up.set_faults(Faults {
        realm: Some(format!("https://{}/token", https_realm.addr)),
        ..Default::default()
    });
    let w = up.mirror_with(&creds, &[]);
    let api = Api::new(&w);
    let r = api.get("/v2/guarded/manifests/v1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "UNAVAILABLE");
    assert_eq!(
        https_realm.connections(),
        0,
        "the refused realm was contacted"
    );
    assert!(
        logged(
            &w,
            &[
                "WARN",
                "token realm refused",
                &https_realm.addr,
                "token_realms"
            ]
        )
        .await,
        "{}",
        w.log()
    );
    assert!(!w.log().contains(secret));
    drop(w);

    // Listed, over HTTPS: credentials go there and the pull works.
    let w = up.mirror_with(
        &format!("{creds}token_realms = [\"{}\"]\n", https_realm.addr),
        &[],
    );
    let api = Api::new(&w);
    let r = api.get("/v2/guarded/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(md.clone()));
    let asked = https_realm.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0]
        .authorization
        .as_deref()
        .unwrap_or("")
        .starts_with("Basic "));
    assert!(!w.log().contains(secret));
    drop(w);

    // Listed but plain HTTP on another port: refused all the same.
    up.set_faults(Faults {
        realm: Some(format!("http://{}/token", http_realm.addr)),
        ..Default::default()
    });
    let w = up.mirror_with(
        &format!("{creds}token_realms = [\"{}\"]\n", http_realm.addr),
        &[],
    );
    let r = Api::new(&w).get("/v2/guarded/manifests/v1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(http_realm.connections(), 0);
    assert!(
        logged(&w, &["WARN", "token realm refused", "not HTTPS"]).await,
        "{}",
        w.log()
    );
    assert!(!w.log().contains(secret));
}

#[tokio::test]
async fn redirects_to_loopback_hosts_are_refused_unless_listed() {
    let up = Upstream::start(false);
    let layer = pattern(300_000, 9);
    let (_, ld) = seed(&up, "library/cdn", "v1", &layer).await;
    // The "CDN" on another loopback address, sending headers of its own.
    let served = layer.clone();
    let cdn = Sink::start(
        "127.0.0.2",
        None,
        Arc::new(move |_| {
            (
                200,
                vec![
                    ("content-type".into(), "text/html".into()),
                    ("docker-content-digest".into(), "sha256:forged".into()),
                    ("set-cookie".into(), "session=stolen".into()),
                    ("x-evil".into(), "1".into()),
                ],
                served.clone(),
            )
        }),
    );
    up.set_faults(Faults {
        redirect_blobs_to: Some(format!("http://{}", cdn.addr)),
        ..Default::default()
    });
    let path = format!("/v2/cdn/blobs/{ld}");

    // Not listed: an address literal that is not public is never connected to.
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    for method in ["GET", "HEAD"] {
        let r = api.req(method, &path).send().await.unwrap();
        assert_eq!(r.status(), 503, "{method}");
    }
    assert_eq!(
        cdn.connections(),
        0,
        "a refused redirect target was contacted"
    );
    assert!(
        logged(
            &w,
            &["WARN", "redirect refused", &cdn.addr, "redirect_hosts"]
        )
        .await
    );

    // A name that resolves to loopback (localhost on the proxy's own port):
    // refused after resolving, before connecting.
    up.set_faults(Faults {
        redirect_blobs: true,
        ..Default::default()
    });
    let r = api.get(&path).await;
    assert_eq!(r.status(), 503);
    assert_eq!(up.cdn_requests(), 0);
    assert!(
        logged(
            &w,
            &[
                "WARN",
                "redirect refused",
                "localhost",
                "not a public address"
            ]
        )
        .await
    );
    drop(w);

    // Listed: followed. A HEAD answers only checked values.
    up.set_faults(Faults {
        redirect_blobs_to: Some(format!("http://{}", cdn.addr)),
        ..Default::default()
    });
    let w = up.mirror_with(&format!("redirect_hosts = [\"{}\"]", cdn.addr), &[]);
    let api = Api::new(&w);
    let r = api.req("HEAD", &path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), Some(layer.len().to_string()));
    assert_eq!(header(&r, "docker-content-digest"), Some(ld.clone()));
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    for h in ["set-cookie", "x-evil"] {
        assert_eq!(header(&r, h), None, "{h} copied from the redirect target");
    }
    let r = api.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), layer);
    assert!(cdn.connections() >= 1);
    assert!(cdn.seen().iter().all(|s| s.authorization.is_none()));
}

#[tokio::test]
async fn upstream_404s_are_not_warnings() {
    let up = Upstream::start(false);
    let w = up.mirror(&[]);
    let api = Api::new(&w);
    for i in 0..20u8 {
        let d = sha256(&[i]);
        assert_eq!(api.status("GET", &format!("/v2/scan/blobs/{d}")).await, 404);
        let m = sha256(&[i, i]);
        assert_eq!(
            api.status("GET", &format!("/v2/scan/manifests/{m}")).await,
            404
        );
    }
    assert!(logged(&w, &["DEBUG", "not found upstream"]).await);
    let log = w.log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && (l.contains("scan") || l.contains("not found")))
        .collect();
    assert!(warns.is_empty(), "{warns:#?}");
}
