//! Real clients logging in to a Wharf that serves HTTPS with access
//! control, the way operators will run it: Docker (`docker login`, push,
//! pull, logout; `registry-mirrors` at `https://`), containerd with the
//! TLS `hosts.toml` from `deploy/tls/`, skopeo with `--dest-creds` and
//! `--dest-cert-dir`, and ORAS (the Python package). Debian's Docker trusts
//! 127.0.0.0/8 without checking certificates, so certificate checking
//! itself is shown by containerd, skopeo and ORAS.

mod common;
use common::docker::Dockerd;
use common::layout::write_oci_layout;
use common::pki::{htpasswd, TestCa};
use common::upstream::Upstream;
use common::*;
use std::path::Path;
use std::process::Command;

const RULES: &str = r#"
[[access]]
repositories = "golden/*"
pull = ["anonymous"]
push = ["alice"]
delete = ["alice"]

[[access]]
repositories = "**"
pull = ["anonymous"]
"#;

/// An HTTPS Wharf with users alice and reader, `rules` and `extra` flags.
struct Secure {
    w: Wharf,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

fn secure(rules: &str, extra: &[String]) -> Secure {
    let ca = TestCa::new("Wharf Test CA");
    let (cert, key) = ca.server("wharf");
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    htpasswd(&users, &[("alice", "alice-pw"), ("reader", "reader-pw")]);
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, rules).unwrap();
    let mut args: Vec<String> = vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
        "--htpasswd".into(),
        users.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let w = Wharf::start_with(Opts {
        args,
        ..Default::default()
    });
    assert_eq!(w.scheme, "https");
    Secure { w, ca, _dir: dir }
}

#[tokio::test]
async fn docker_login_push_pull_and_logout_over_tls() {
    let s = secure(RULES, &[]);
    let addr = &s.w.addr;
    let d = Dockerd::start(&[]);
    let (ok, out) = d.try_docker(
        &["login", addr, "-u", "alice", "--password-stdin"],
        "wrong-password\n",
    );
    assert!(!ok, "a wrong password fails the login: {out}");
    let (ok, out) = d.try_docker(
        &["login", addr, "-u", "alice", "--password-stdin"],
        "alice-pw\n",
    );
    assert!(ok && out.contains("Login Succeeded"), "{out}");

    let image = format!("{addr}/golden/busybox:1.0");
    d.import_busybox(&image);
    d.docker(&["push", &image]);
    assert!(s.w.logged(&[
        "wharf::audit",
        "user=alice",
        "repo=golden/busybox",
        "tag=1.0"
    ]));
    d.docker(&["rmi", &image]);
    d.docker(&["pull", &image]);
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "echo",
        "hello over tls",
    ]);
    assert_eq!(out.trim(), "hello over tls");

    // Logged out, a push is refused; a pull still works anonymously.
    d.docker(&["logout", addr]);
    let again = format!("{addr}/golden/busybox:2.0");
    d.docker(&["tag", &image, &again]);
    let (ok, out) = d.try_docker(&["push", &again], "");
    assert!(!ok, "{out}");
    assert!(
        out.contains("unauthorized") || out.contains("authentication required"),
        "{out}"
    );
    d.docker(&["rmi", &image]);
    d.docker(&["pull", &image]);
    let tags: serde_json::Value = Api::tls(&s.w, &s.ca)
        .get("/v2/golden/busybox/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));
    assert!(!s.w.log().contains("alice-pw"));
}

#[tokio::test]
async fn docker_registry_mirror_at_https_pulls_anonymously() {
    let up = Upstream::start(false);
    let s = secure(
        RULES,
        &["--upstream".into(), format!("docker.io={}", up.url())],
    );
    let mirrors = deploy_mirrors("tls/docker/daemon.json", &s.w.addr);
    assert_eq!(mirrors, [format!("https://{}", s.w.addr)]);
    let d = Dockerd::start(&mirrors);
    d.seed_busybox_at(&up.registry_addr);
    up.reset();

    d.docker(&["pull", "busybox"]);
    assert!(
        up.count("GET", "/blobs/") >= 1,
        "the pull went through Wharf: {:?}",
        up.seen()
    );
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "echo",
        "mirrored",
    ]);
    assert_eq!(out.trim(), "mirrored");
    // Docker asked for an anonymous token and used it.
    assert!(
        s.w.logged(&["token issued", "user=anonymous"]),
        "{}",
        s.w.log()
    );
}

#[tokio::test]
async fn containerd_checks_the_certificate_with_the_deploy_hosts_toml() {
    let up = Upstream::start(false);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let digest = write_oci_layout(&src, "v1", 2);
    run(Command::new(require("skopeo"))
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{}/library/app:v1", up.registry_addr)));
    let s = secure(
        RULES,
        &["--upstream".into(), format!("docker.io={}", up.url())],
    );

    let d = Dockerd::start(&[]);
    let hosts = d.scratch("hosts");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    let snippet = deploy_snippet("tls/containerd/certs.d/docker.io/hosts.toml", &s.w.addr)
        // The fallback is a closed port: a test never reaches Docker Hub.
        .replace("https://registry-1.docker.io", "https://127.0.0.1:9")
        .replace("/etc/wharf/ca.crt", s.ca.ca_file().to_str().unwrap());
    assert!(snippet.contains(&format!("ca = \"{}\"", s.ca.ca_file().display())));
    std::fs::write(hosts.join("docker.io/hosts.toml"), &snippet).unwrap();
    let ctr = |args: &[&str]| {
        Command::new(require("ctr"))
            .arg("--address")
            .arg(d.containerd_socket())
            .args(["--namespace", "wharf-tls"])
            .args(args)
            .output()
            .unwrap()
    };
    let hosts_dir = hosts.to_str().unwrap();
    let pull = || {
        ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir,
            "docker.io/library/app:v1",
        ])
    };
    let out = pull();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&ctr(&["images", "ls"]).stdout).into_owned();
    assert!(list.contains(&digest), "{list}");
    assert!(up.count("GET", "/blobs/") >= 1, "pulled through Wharf");

    // Without the CA line, containerd refuses Wharf's certificate.
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        snippet
            .lines()
            .filter(|l| !l.trim_start().starts_with("ca ="))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = pull();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn skopeo_copies_with_creds_and_a_cert_dir() {
    let s = secure(RULES, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let digest = write_oci_layout(&src, "v1", 2);
    let certs = s.ca.cert_dir("certs");
    let copy = |creds: &str, cert_dir: Option<&Path>| {
        let mut c = Command::new(require("skopeo"));
        c.args(["--insecure-policy", "copy", "--dest-creds", creds]);
        if let Some(dir) = cert_dir {
            c.arg("--dest-cert-dir").arg(dir);
        }
        c.arg(format!("oci:{}:v1", src.display()))
            .arg(format!("docker://{}/golden/app:v1", s.w.addr))
            .output()
            .unwrap()
    };
    // Without the CA, skopeo refuses Wharf's certificate.
    let out = copy("alice:alice-pw", None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A user with pull only is refused with 403.
    let out = copy("reader:reader-pw", Some(&certs));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    // alice may push; anybody may pull.
    let out = copy("alice:alice-pw", Some(&certs));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = tmp.path().join("back");
    run(Command::new(require("skopeo"))
        .args(["--insecure-policy", "copy", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!("docker://{}/golden/app:v1", s.w.addr))
        .arg(format!("oci:{}:v1", back.display())));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest);
}

fn oras(s: &Secure, workdir: &Path, args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/oras_auth.py");
    let (ok, text) = try_run(
        Command::new(require("python3"))
            .arg(script)
            .args(args)
            .args(["--registry", &s.w.addr, "--ca"])
            .arg(s.ca.ca_file())
            .arg("--workdir")
            .arg(workdir),
    );
    (ok && text.contains("ORAS OK"), text)
}

#[tokio::test]
async fn oras_logs_in_pushes_and_anonymous_pull_follows_the_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let push_as_alice = |s: &Secure| {
        let login = ["--user", "alice", "--password", "alice-pw"];
        let (ok, out) = oras(
            s,
            work,
            &[&["push", "--target", "golden/notes:v1"][..], &login].concat(),
        );
        assert!(ok, "{out}");
    };
    let anonymous_pull = |s: &Secure, expect: &str| {
        oras(
            s,
            work,
            &["pull", "--target", "golden/notes:v1", "--expect", expect],
        )
    };
    // Default rules: anyone pulls, logged-in users push to local namespaces.
    let s = secure("", &[]);
    push_as_alice(&s);
    assert!(s
        .w
        .logged(&["wharf::audit", "user=alice", "repo=golden/notes"]));
    assert!(
        work.join("config.json").exists(),
        "credentials stay in the workdir"
    );
    let (ok, out) = anonymous_pull(&s, "ok");
    assert!(ok, "{out}");

    // The same content behind --anonymous-pull false: refused without a login.
    drop(s);
    let locked = secure("", &["--anonymous-pull".into(), "false".into()]);
    push_as_alice(&locked);
    let (ok, out) = anonymous_pull(&locked, "refused");
    assert!(ok && out.contains("Unauthorized"), "{out}");
}
