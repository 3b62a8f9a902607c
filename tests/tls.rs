//! HTTPS: a Wharf serving TLS with a certificate from a CA the test made,
//! reached by clients that check it (reqwest with rustls, curl, openssl):
//! HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2 and 1.3 only, certificate rotation
//! under a running 256 MiB download, a bad new pair that is refused while
//! the old one stays, client certificates as identities, and an upstream
//! with its own CA (`ca_file`).

mod common;
use common::pki::TestCa;
use common::*;
use futures_util::StreamExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn tls_args(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]
}

fn start_tls(
    ca: &TestCa,
    name: &str,
    extra: &[&str],
) -> (Wharf, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = ca.server(name);
    let mut args = tls_args(&cert, &key);
    args.extend(extra.iter().map(|s| s.to_string()));
    let w = Wharf::start_with(Opts {
        args,
        ..Default::default()
    });
    assert_eq!(w.scheme, "https");
    (w, cert, key)
}

/// The subject common name of the certificate a response came over.
fn served_name(r: &reqwest::Response) -> String {
    let info = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info");
    let der = info.peer_certificate().expect("a server certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    name
}

/// Runs `openssl s_client` against `addr` with `args`; returns its output.
fn s_client(addr: &str, args: &[&str]) -> (bool, String) {
    try_run(
        Command::new(require("openssl"))
            .arg("s_client")
            .arg("-connect")
            .arg(addr)
            .args(args)
            .stdin(std::process::Stdio::null()),
    )
}

#[tokio::test]
async fn https_with_http2_and_http1_and_only_tls_12_13() {
    let ca = TestCa::new("Wharf Test CA");
    let (w, _, _) = start_tls(&ca, "wharf-one", &[]);
    // HTTP/2 by ALPN, and HTTP/1.1 for clients that ask for it.
    let h2 = Api::tls(&w, &ca);
    let r = h2.get("/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(served_name(&r), "wharf-one");
    let h1 = Api::tls_builder(&w, &ca, |b| b.http1_only());
    let r = h1.get("/v2/").await;
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    // A push and a pull over TLS.
    let d = push_image(&h2, "golden/tls", "1", "over tls").await;
    let r = h1.get("/v2/golden/tls/manifests/1").await;
    assert_eq!(header(&r, "docker-content-digest"), Some(d));

    // curl checks the certificate against the CA; without it, it refuses.
    let ok = Command::new(require("curl"))
        .args(["-sf", "--cacert"])
        .arg(ca.ca_file())
        .arg(w.url("/v2/"))
        .status()
        .unwrap();
    assert!(ok.success());
    let refused = Command::new(require("curl"))
        .args(["-sf", &w.url("/v2/")])
        .status()
        .unwrap();
    assert!(!refused.success(), "an unknown CA is refused");

    // TLS 1.2 and 1.3 only.
    for v in ["-tls1_2", "-tls1_3"] {
        let (ok, out) = s_client(&w.addr, &[v]);
        assert!(ok && out.contains("Verify return code"), "{v}: {out}");
    }
    for v in ["-tls1", "-tls1_1"] {
        let (ok, out) = s_client(&w.addr, &[v, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        assert!(
            !ok && out.contains("Cipher is (NONE)") && out.contains("alert"),
            "{v}: {out}"
        );
    }
    // Plain HTTP on the TLS port gets no answer, not a response in the clear.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v2/", w.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    assert!(w.logged(&["listening on https://"]));
}

#[tokio::test]
async fn certificate_rotation_under_a_running_download() {
    let ca = TestCa::new("Wharf Test CA");
    let (w, cert, key) = start_tls(&ca, "wharf-one", &[]);
    let api = Api::tls_builder(&w, &ca, |b| b.http1_only());
    let blob = pattern(256 << 20, 9);
    let digest = api.push_blob("golden/big", &blob).await;
    drop(blob);

    // A download that reads slowly while the certificate changes.
    let r = api.get(&format!("/v2/golden/big/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_name(&r), "wharf-one");
    let mut stream = r.bytes_stream();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut got = 0usize;
    while got < 16 << 20 {
        let chunk = stream.next().await.unwrap().unwrap();
        sha2::Digest::update(&mut hasher, &chunk);
        got += chunk.len();
    }

    // New files in place: new connections get the new certificate.
    let (c2, k2) = ca.server("wharf-two");
    std::fs::copy(&k2, &key).unwrap();
    std::fs::copy(&c2, &cert).unwrap();
    let fresh = || Api::tls_builder(&w, &ca, |b| b.pool_max_idle_per_host(0));
    let mut seen = String::new();
    for _ in 0..100 {
        seen = served_name(&fresh().get("/v2/").await);
        if seen == "wharf-two" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "wharf-two", "{}", w.log());

    // The download that started before finishes whole and correct.
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        sha2::Digest::update(&mut hasher, &chunk);
        got += chunk.len();
    }
    assert_eq!(got, 256 << 20);
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher))),
        digest
    );

    // A certificate with the wrong key: logged, and the last good pair stays.
    let (c3, _) = ca.server("wharf-three");
    std::fs::copy(&c3, &cert).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || w
            .logged(&["does not load", "still serving the previous one"]))
        .await,
        "{}",
        w.log()
    );
    assert_eq!(served_name(&fresh().get("/v2/").await), "wharf-two");
    // SIGHUP reloads too (the pair is still bad: still the old one).
    signal(w.pid(), "HUP");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || w
            .logged(&["SIGHUP: reloading"]))
        .await
    );
    assert_eq!(served_name(&fresh().get("/v2/").await), "wharf-two");
}

#[tokio::test]
async fn client_certificates_authenticate_as_their_common_name() {
    let ca = TestCa::new("Wharf Test CA");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        "[groups]\nci = [\"builder1\"]\n\n[[access]]\nrepositories = \"golden/*\"\npull = [\"anonymous\"]\npush = [\"group:ci\"]\n",
    )
    .unwrap();
    let (w, _, _) = start_tls(
        &ca,
        "wharf-one",
        &[
            "--tls-client-ca",
            ca.ca_file().to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let identity = |cn: &str, ca: &TestCa| {
        let (c, k) = ca.client(cn);
        let mut pem = std::fs::read(c).unwrap();
        pem.extend(std::fs::read(k).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    };
    let builder = Api::tls_builder(&w, &ca, |b| b.identity(identity("builder1", &ca)));
    push_image(&builder, "golden/ci", "1", "built").await;
    assert!(w.wait_logged(&["wharf::audit", "user=builder1", "repo=golden/ci"]));
    // The token endpoint knows the certificate's user too.
    let t = builder
        .token_for(None, &["repository:golden/ci:pull,push"])
        .await;
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&t)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "builder1");
    assert_eq!(claims["via"], "certificate");

    // Another common name is a user without push; no certificate is anonymous.
    let other = Api::tls_builder(&w, &ca, |b| b.identity(identity("someone", &ca)));
    let r = other
        .req("POST", "/v2/golden/ci/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let anon = Api::tls(&w, &ca);
    let r = anon
        .req("POST", "/v2/golden/ci/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(anon.get("/v2/golden/ci/manifests/1").await.status(), 200);

    // A certificate from another CA is refused at the handshake.
    let stranger = TestCa::new("Other CA");
    let api = Api::tls_builder(&w, &ca, |b| b.identity(identity("builder1", &stranger)));
    assert!(api.req("GET", "/v2/").send().await.is_err());
}

#[tokio::test]
async fn an_upstream_with_its_own_ca() {
    let ca = TestCa::new("Private Registry CA");
    let (private, _, _) = start_tls(&ca, "private-registry", &[]);
    let digest = push_image(&Api::tls(&private, &ca), "golden/app", "v1", "private").await;

    let mirror = |ca_file: Option<&Path>| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("wharf.toml");
        let mut text = format!(
            "[[upstreams]]\nname = \"registry.corp\"\nurl = \"https://{}\"\n",
            private.addr
        );
        if let Some(f) = ca_file {
            text.push_str(&format!("ca_file = \"{}\"\n", f.display()));
        }
        std::fs::write(&cfg, text).unwrap();
        let w = Wharf::start_with(Opts {
            args: vec!["--config".into(), cfg.display().to_string()],
            ..Default::default()
        });
        (w, dir)
    };
    let (trusting, _d1) = mirror(Some(&ca.ca_file()));
    let r = Api::new(&trusting)
        .get("/v2/registry.corp/golden/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(digest));

    let (plain, _d2) = mirror(None);
    let r = Api::new(&plain)
        .get("/v2/registry.corp/golden/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 503, "an unknown CA is not trusted");
}
