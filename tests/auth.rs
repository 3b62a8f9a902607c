//! Access control over the distribution API, against a real Wharf with an
//! htpasswd file made by `htpasswd -B` and the access rules of the README:
//! the token flow, who may pull, push and delete, 401 versus 403, the
//! audit log, catalog filtering, private upstreams, per-client upload
//! limits, and a table of bad credentials that must be refused without
//! writing anything.

mod common;
use common::pki::htpasswd;
use common::upstream::Upstream;
use common::*;
use std::path::Path;
use std::time::Duration;

const RULES: &str = r#"
[groups]
ci = ["builder1", "builder2"]

[[access]]
repositories = "golden/*"
pull = ["anonymous"]
push = ["alice", "group:ci"]
delete = ["alice"]

[[access]]
repositories = "charts/**"
pull = ["authenticated"]
push = ["alice"]
delete = ["alice"]
"#;

struct Site {
    w: Wharf,
    dir: tempfile::TempDir,
}

impl Site {
    fn htpasswd(&self) -> std::path::PathBuf {
        self.dir.path().join("htpasswd")
    }
}

/// A Wharf with users alice, builder1 and reader, `rules` and `extra` flags.
fn start(rules: &str, extra: &[&str]) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    htpasswd(
        &users,
        &[
            ("alice", "alice-pw"),
            ("builder1", "builder-pw"),
            ("reader", "reader-pw"),
        ],
    );
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, rules).unwrap();
    let mut args: Vec<String> = vec![
        "--config".into(),
        cfg.display().to_string(),
        "--htpasswd".into(),
        users.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let w = Wharf::start_with(Opts {
        args,
        ..Default::default()
    });
    Site { w, dir }
}

fn challenge(r: &reqwest::Response) -> String {
    header(r, "www-authenticate").unwrap_or_default()
}

/// Nothing of a refused write reached the disk: no upload session, no
/// temp file.
fn nothing_parked(data: &Path) {
    for d in ["uploads", "tmp"] {
        let n = std::fs::read_dir(data.join(d))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{d}/ is empty");
    }
}

#[tokio::test]
async fn token_flow_rules_401_403_and_audit() {
    let site = start(RULES, &[]);
    let w = &site.w;
    let anon = Api::new(w);

    // The ping tells clients where to log in.
    let r = anon.get("/v2/").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        format!("Bearer realm=\"http://{}/token\",service=\"wharf\"", w.addr)
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    assert_eq!(
        anon.basic("alice", "alice-pw").get("/v2/").await.status(),
        200
    );

    // A token scoped to what the rules grant.
    let r = anon
        .token(
            Some(("alice", "alice-pw")),
            &["repository:golden/app:pull,push"],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    let alice = anon.bearer(v["token"].as_str().unwrap());
    let first = push_image(&alice, "golden/app", "1.0", "one").await;
    assert!(w.wait_logged(&[
        "wharf::audit",
        "user=alice",
        "repo=golden/app",
        "tag=1.0",
        "tag created"
    ]));

    // Everyone may pull golden/*, without logging in.
    let r = anon.get("/v2/golden/app/manifests/1.0").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), Some(first.clone()));

    // Anonymous writes: 401 with the scope to log in for; nothing written.
    let r = anon
        .req("POST", "/v2/golden/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        challenge(&r).contains("scope=\"repository:golden/app:pull,push\""),
        "{}",
        challenge(&r)
    );
    let r = anon
        .req("DELETE", &format!("/v2/golden/app/manifests/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("scope=\"repository:golden/app:delete\""));
    // A refused push still sending a large body reads the 401, not a broken pipe.
    let big = vec![9u8; 6 << 20];
    let r = anon
        .req(
            "POST",
            &format!("/v2/golden/app/blobs/uploads/?digest={}", sha256(&big)),
        )
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A known user without the right: 403, and the token endpoint grants
    // them only what the rules allow.
    let reader = anon.basic("reader", "reader-pw");
    let r = reader
        .req("POST", "/v2/golden/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "DENIED");
    let t = anon
        .token_for(
            Some(("reader", "reader-pw")),
            &["repository:golden/app:pull,push"],
        )
        .await;
    let r = anon
        .bearer(&t)
        .req("POST", "/v2/golden/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        anon.bearer(&t)
            .get("/v2/golden/app/manifests/1.0")
            .await
            .status(),
        200
    );

    // group:ci may push (and so move a tag), but not delete.
    let t = anon
        .token_for(
            Some(("builder1", "builder-pw")),
            &["repository:golden/app:pull,push"],
        )
        .await;
    let builder = anon.bearer(&t);
    let second = push_image(&builder, "golden/app", "1.0", "two").await;
    assert!(w.wait_logged(&[
        "user=builder1",
        "tag moved",
        &format!("old={first}"),
        &format!("new={second}")
    ]));
    let r = builder
        .req("DELETE", &format!("/v2/golden/app/manifests/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "group:ci may not delete");
    let r = anon
        .basic("builder1", "builder-pw")
        .req("DELETE", &format!("/v2/golden/app/manifests/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "group:ci may not delete");

    // alice may delete; the audit log says so.
    let r = anon
        .basic("alice", "alice-pw")
        .req("DELETE", &format!("/v2/golden/app/manifests/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(w.wait_logged(&[
        "wharf::audit",
        "manifest deleted",
        "user=alice",
        "addr=127.0.0.1",
        "repo=golden/app",
        &format!("digest={second}"),
        "tags=1.0"
    ]));

    // Listings: charts/** is for logged-in users only.
    let alice = anon.basic("alice", "alice-pw");
    push_image(&alice, "charts/web", "0.1.0", "chart").await;
    push_image(&alice, "golden/base", "1", "base").await;
    let list = |api: Api| async move {
        let v: serde_json::Value = api.get("/v2/_catalog").await.json().await.unwrap();
        v["repositories"].clone()
    };
    assert_eq!(
        list(Api::new(w)).await,
        serde_json::json!(["golden/app", "golden/base"])
    );
    assert_eq!(
        list(alice).await,
        serde_json::json!(["charts/web", "golden/app", "golden/base"])
    );
    assert_eq!(anon.get("/v2/charts/web/tags/list").await.status(), 401);
    assert_eq!(
        anon.basic("reader", "reader-pw")
            .get("/v2/charts/web/tags/list")
            .await
            .status(),
        200
    );
    // A name no rule matches: nobody may push there.
    let r = anon
        .basic("alice", "alice-pw")
        .req("POST", "/v2/golden/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // No password or token ever reaches the log.
    for pw in ["alice-pw", "builder-pw", "reader-pw", &t] {
        assert!(!w.log().contains(pw));
    }
    nothing_parked(&w.data);
}

/// A token like Wharf's, signed with another key.
fn forged_token(sub: &str, repo: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "wharf", "sub": sub, "aud": "wharf", "exp": now + 300, "nbf": now, "iat": now,
        "jti": "x", "via": "password",
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push", "delete"]}],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&[42u8; 32]).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_credentials_table() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let site = start(RULES, &["--token-ttl", "2s"]);
    let w = &site.w;
    let anon = Api::new(w);
    let repo = "golden/app";
    let scope = "repository:golden/app:pull,push";
    // alice2 will be removed from the htpasswd file.
    htpasswd(
        &site.htpasswd(),
        &[
            ("alice", "alice-pw"),
            ("alice2", "alice2-pw"),
            ("reader", "reader-pw"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || w
            .logged(&["htpasswd file loaded", "users=3"]))
        .await
    );
    let removed = anon
        .token_for(Some(("alice2", "alice2-pw")), &[scope])
        .await;
    htpasswd(
        &site.htpasswd(),
        &[("alice", "alice-pw"), ("reader", "reader-pw")],
    );
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || w
            .logged(&["htpasswd file loaded", "users=2"]))
        .await
    );
    let expired = anon.token_for(Some(("alice", "alice-pw")), &[scope]).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let other_repo = anon
        .token_for(
            Some(("alice", "alice-pw")),
            &["repository:golden/other:pull,push"],
        )
        .await;
    let pull_only = anon
        .token_for(Some(("alice", "alice-pw")), &["repository:golden/app:pull"])
        .await;

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad base64",
            "Basic !!!not-base64!!!".into(),
            "invalid_request",
        ),
        (
            "no colon",
            format!("Basic {}", b64("alice")),
            "invalid_request",
        ),
        (
            "a user name forging a log line",
            format!(
                "Basic {}",
                b64("x\n2026 INFO wharf::audit: forged user=alice:pw")
            ),
            "invalid_request",
        ),
        (
            "100 KiB",
            format!("Basic {}", "A".repeat(100 * 1024)),
            "invalid_request",
        ),
        (
            "unknown scheme",
            "Digest username=\"alice\"".into(),
            "invalid_request",
        ),
        (
            "wrong password",
            format!("Basic {}", b64("alice:nope")),
            "invalid_token",
        ),
        (
            "unknown user",
            format!("Basic {}", b64("mallory:alice-pw")),
            "invalid_token",
        ),
        (
            "expired token",
            format!("Bearer {expired}"),
            "invalid_token",
        ),
        (
            "another key",
            format!("Bearer {}", forged_token("alice", repo)),
            "invalid_token",
        ),
        ("removed user", format!("Bearer {removed}"), "invalid_token"),
        (
            "another repository",
            format!("Bearer {other_repo}"),
            "insufficient_scope",
        ),
        (
            "another action",
            format!("Bearer {pull_only}"),
            "insufficient_scope",
        ),
    ];
    let manifest = image_manifest(
        Some(OCI_MANIFEST),
        (
            "application/vnd.oci.image.config.v1+json",
            EMPTY_JSON_DIGEST,
            2,
        ),
        &[],
    );
    for (what, value, error) in &cases {
        let api = anon.with_auth(value.clone());
        for (method, path) in [
            ("POST", format!("/v2/{repo}/blobs/uploads/")),
            ("PUT", format!("/v2/{repo}/manifests/bad")),
        ] {
            let mut req = api.req(method, &path);
            if method == "PUT" {
                req = req
                    .header("content-type", OCI_MANIFEST)
                    .body(manifest.clone());
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{what}: {method} {path}");
            let c = challenge(&r);
            assert!(
                c.starts_with("Bearer realm=") && c.contains(&format!("error=\"{error}\"")),
                "{what}: {c}"
            );
            assert_eq!(error_code(r).await, "UNAUTHORIZED", "{what}");
        }
    }
    // The token endpoint: wrong credentials are 401; odd scopes are 400.
    assert_eq!(
        anon.token(Some(("alice", "nope")), &[scope]).await.status(),
        401
    );
    assert_eq!(
        anon.token(Some(("nobody", "x")), &[scope]).await.status(),
        401
    );
    for bad in [
        "repository:../etc:pull",
        "repository:Golden/App:pull",
        "repository:golden/a%2Fb:pull",
        "repository:golden//app:pull",
        "repository",
        "repository:golden/app\"x:pull",
    ] {
        let r = anon.token(Some(("alice", "alice-pw")), &[bad]).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(error_code(r).await, "NAME_INVALID", "{bad}");
    }
    let many: Vec<&str> = vec!["repository:golden/app:pull"; 17];
    assert_eq!(anon.token(None, &many).await.status(), 400);

    // Nothing was written, and the server still answers everyone.
    nothing_parked(&w.data);
    let r = anon.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), 404, "no tag was created");
    assert_eq!(
        anon.basic("alice", "alice-pw").get("/v2/").await.status(),
        200
    );
    let good = anon.bearer(&anon.token_for(Some(("alice", "alice-pw")), &[scope]).await);
    push_image(&good, repo, "good", "ok").await;
    for pw in ["alice-pw", "alice2-pw"] {
        assert!(!w.log().contains(pw), "{pw} in the log");
    }
    assert!(!w.log().contains("forged"), "a client wrote into the log");
    // A refused unknown user is not named (it may be a mistyped password).
    assert!(!w.log().contains("mallory"));
}

#[tokio::test]
async fn anonymous_pull_off_requires_a_login() {
    let site = start("", &["--anonymous-pull", "false"]);
    let w = &site.w;
    let anon = Api::new(w);
    let alice = anon.basic("alice", "alice-pw");
    push_image(&alice, "golden/app", "1", "x").await;
    assert_eq!(anon.get("/v2/golden/app/manifests/1").await.status(), 401);
    assert_eq!(anon.get("/v2/_catalog").await.status(), 401);
    // The probes an orchestrator asks need no login.
    for probe in ["/healthz", "/readyz"] {
        let r = anon.get(probe).await;
        assert_eq!(r.status(), 200, "{probe}");
        assert!(!r.text().await.unwrap().is_empty());
    }
    // An anonymous token grants nothing.
    let t = anon.token_for(None, &["repository:golden/app:pull"]).await;
    let r = anon.bearer(&t).get("/v2/golden/app/manifests/1").await;
    assert_eq!(r.status(), 401);
    assert_eq!(alice.get("/v2/golden/app/manifests/1").await.status(), 200);
    // Default rules: any user may push and delete in local namespaces,
    // the namespace's own name included.
    let reader = anon.basic("reader", "reader-pw");
    push_image(&reader, "charts/mine", "1", "y").await;
    push_image(&reader, "charts", "1", "z").await;
    let r = reader
        .req("DELETE", "/v2/charts/mine/manifests/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn default_rules_anonymous_pull_and_private_upstreams() {
    let up = Upstream::start(false);
    let reg = Api::at(&up.registry_addr);
    let layer = b"private layer";
    let cd = reg.push_blob("team/app", b"{}").await;
    let ld = reg.push_blob("team/app", layer).await;
    let m = image_manifest(
        Some(OCI_MANIFEST),
        ("application/vnd.oci.image.config.v1+json", &cd, 2),
        &[("application/vnd.oci.image.layer.v1.tar", &ld, layer.len())],
    );
    assert_eq!(
        reg.put_manifest("team/app", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
    // The same upstream twice: once public, once with credentials.
    let rules = format!(
        "[[upstreams]]\nname = \"public.example\"\nurl = \"{0}\"\n\n[[upstreams]]\nname = \"private.example\"\nurl = \"{0}\"\nusername = \"mirror-bot\"\npassword = \"upstream-secret\"\n",
        up.url()
    );
    let site = start(&rules, &[]);
    let anon = Api::new(&site.w);
    let alice = anon.basic("alice", "alice-pw");
    assert_eq!(
        anon.get("/v2/public.example/team/app/manifests/v1")
            .await
            .status(),
        200
    );
    let r = anon.get("/v2/private.example/team/app/manifests/v1").await;
    assert_eq!(r.status(), 401, "a private upstream is never anonymous");
    assert!(challenge(&r).contains("repository:private.example/team/app:pull"));
    assert_eq!(
        alice
            .get("/v2/private.example/team/app/manifests/v1")
            .await
            .status(),
        200
    );
    let t = anon
        .token_for(
            Some(("reader", "reader-pw")),
            &["repository:private.example/team/app:pull"],
        )
        .await;
    let r = anon
        .bearer(&t)
        .get(&format!("/v2/private.example/team/app/blobs/{ld}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &layer[..]);
    // Mirrors stay read-only for everybody, logged in or not.
    let r = alice
        .req("POST", "/v2/public.example/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = alice
        .req("DELETE", &format!("/v2/public.example/team/app/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // The client's credentials never go upstream.
    assert!(up.seen().iter().all(|s| s
        .authorization
        .as_deref()
        .is_none_or(|a| !a.contains(&base64_of("alice:alice-pw")))));
    assert!(!site.w.log().contains("upstream-secret"));
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn upload_limits_per_client() {
    let site = start(
        "",
        &["--max-upload-sessions", "2", "--max-upload-bytes", "1MiB"],
    );
    let w = &site.w;
    let anon = Api::new(w);
    let alice = anon.basic("alice", "alice-pw");
    let reader = anon.basic("reader", "reader-pw");
    let send = |api: &Api, method: &str, path: &str, body: Vec<u8>| {
        let r = api.req(method, path).body(body);
        async move { r.send().await.unwrap() }
    };
    let start_upload = |api: &Api| send(api, "POST", "/v2/golden/up/blobs/uploads/", vec![]);
    let post_blob = |api: &Api, blob: Vec<u8>| {
        let path = format!("/v2/golden/up/blobs/uploads/?digest={}", sha256(&blob));
        send(api, "POST", &path, blob)
    };
    let a1 = location(&start_upload(&alice).await);
    let _a2 = start_upload(&alice).await;
    let r = start_upload(&alice).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // Another user is not affected, and cannot use alice's session.
    assert_eq!(start_upload(&reader).await.status(), 202);
    let r = send(&reader, "PATCH", &a1, vec![0u8; 10]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // Cancelling gives the session back.
    assert_eq!(alice.status("DELETE", &a1).await, 204);
    let a3 = location(&start_upload(&alice).await);
    // Parked bytes: 1 MiB in all.
    assert_eq!(
        send(&alice, "PATCH", &a3, vec![1u8; 768 * 1024])
            .await
            .status(),
        202
    );
    let r = send(&alice, "PATCH", &a3, vec![2u8; 512 * 1024]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // A blob in one POST counts too, and past the limit leaves nothing.
    // (6 MiB: the client is still sending when the limit is hit, and
    // reads the 429, not a broken pipe.)
    let r = post_blob(&reader, vec![6u8; 6 << 20]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    let tmp = std::fs::read_dir(w.data.join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no temp file left");
    assert_eq!(post_blob(&reader, vec![7u8; 1000]).await.status(), 201);
    // Cancelling frees the parked bytes; so does finishing an upload.
    assert_eq!(alice.status("DELETE", &a3).await, 204);
    let a4 = location(&start_upload(&alice).await);
    let blob = vec![4u8; 768 * 1024];
    let finish = with_query(&a4, &format!("digest={}", sha256(&blob)));
    assert_eq!(send(&alice, "PUT", &finish, blob).await.status(), 201);
    let a5 = location(&start_upload(&alice).await);
    assert_eq!(
        send(&alice, "PATCH", &a5, vec![5u8; 768 * 1024])
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn rules_on_a_mirrored_name_hold_however_it_is_spelled() {
    let up = Upstream::start(false);
    let reg = Api::at(&up.registry_addr);
    for repo in ["team/secret", "team/open"] {
        let cd = reg.push_blob(repo, b"{}").await;
        let m = image_manifest(
            Some(OCI_MANIFEST),
            ("application/vnd.oci.image.config.v1+json", &cd, 2),
            &[],
        );
        assert_eq!(
            reg.put_manifest(repo, "v1", OCI_MANIFEST, &m)
                .await
                .status(),
            201
        );
    }
    let rules = format!(
        "[[upstreams]]\nname = \"registry.corp\"\nurl = \"{}\"\nalias = \"corp\"\n\n[[access]]\nrepositories = \"registry.corp/team/secret\"\npull = [\"alice\"]\n\n[[access]]\nrepositories = \"**\"\npull = [\"anonymous\"]\n",
        up.url()
    );
    let site = start(&rules, &[]);
    let anon = Api::new(&site.w);
    let alice = anon.basic("alice", "alice-pw");
    for path in [
        "/v2/registry.corp/team/secret/manifests/v1",
        "/v2/corp/team/secret/manifests/v1",
        "/v2/team/secret/manifests/v1?ns=registry.corp",
    ] {
        assert_eq!(anon.get(path).await.status(), 401, "{path}");
        let r = anon.basic("reader", "reader-pw").get(path).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(alice.get(path).await.status(), 200, "{path}");
    }
    assert_eq!(
        anon.get("/v2/corp/team/open/manifests/v1").await.status(),
        200
    );
}

#[tokio::test]
async fn without_users_anyone_may_push_and_the_log_says_so() {
    let w = Wharf::start();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || w
            .logged(&["anyone who can reach", "may push and delete"]))
        .await
    );
    let api = Api::new(&w);
    assert_eq!(api.get("/v2/").await.status(), 200);
    let d = push_image(&api, "golden/open", "1", "open").await;
    let r = api
        .req("DELETE", &format!("/v2/golden/open/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Credentials are not looked at, and there is no token endpoint.
    let r = api.basic("nobody", "x").get("/v2/").await;
    assert_eq!(r.status(), 200);
    let r = api.get("/token?service=wharf").await;
    assert_eq!(r.status(), 405);
    assert!(!w.data.join("token.key").exists());
}
