//! Real clients pulling through Wharf as a mirror: Docker's
//! `registry-mirrors`, containerd's `hosts.toml` (with `?ns=`) from two
//! upstreams, and skopeo's `registries.conf` mirrors (plain and with a
//! path prefix). The upstreams are reference registries on loopback behind
//! counting proxies; nothing reaches a public registry.

mod common;
use common::docker::Dockerd;
use common::layout::write_oci_layout;
use common::upstream::{Faults, Upstream};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn skopeo() -> Command {
    let mut c = Command::new(require("skopeo"));
    c.arg("--insecure-policy");
    // A failing mirror makes skopeo fall back to the real registry: send
    // any such attempt to a closed loopback port instead.
    c.env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost");
    c
}

/// Pushes an OCI layout image to `registry_addr/repo:tag`; returns its digest.
fn seed_with_skopeo(registry_addr: &str, repo: &str, tag: &str, layers: usize) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let digest = write_oci_layout(tmp.path(), tag, layers);
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", tmp.path().display()))
        .arg(format!("docker://{registry_addr}/{repo}:{tag}")));
    digest
}

#[tokio::test]
async fn docker_registry_mirrors_pull_warm_offline_and_local_push() {
    let up = Upstream::start(false);
    let w = up.mirror(&["--tag-ttl", "5s"]);
    let mirrors = deploy_mirrors("docker/daemon.json", &w.addr);
    assert_eq!(mirrors, [format!("http://{}", w.addr)]);
    let d = Dockerd::start(&mirrors);

    // The upstream gets busybox, pushed straight to it (not counted).
    d.seed_busybox_at(&up.registry_addr);
    up.reset();

    // Cold pull through the mirror.
    d.docker(&["pull", "busybox"]);
    assert!(
        up.count("GET", "/blobs/") >= 1,
        "the cold pull went through Wharf: {:?}",
        up.seen()
    );
    assert_eq!(up.count("GET", "/manifests/latest"), 0);
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "echo",
        "pulled through wharf",
    ]);
    assert_eq!(out.trim(), "pulled through wharf");
    println!(
        "cold docker pull: {} upstream requests: {:?}",
        up.seen().len(),
        up.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>()
    );

    // Warm pull after rmi, within the tag TTL: zero upstream requests.
    d.docker(&["rmi", "busybox"]);
    up.reset();
    d.docker(&["pull", "busybox"]);
    assert!(up.seen().is_empty(), "warm pull sent {:?}", up.seen());

    // A local push through the same Wharf, beside the mirrored pull.
    let local = format!("{}/golden/mybox:1.0", w.addr);
    d.docker(&["tag", "busybox", &local]);
    d.docker(&["push", &local]);
    assert!(
        up.seen()
            .iter()
            .all(|s| s.method == "GET" || s.method == "HEAD"),
        "pushes never go upstream"
    );
    d.docker(&["rmi", &local]);
    d.docker(&["pull", &local]);

    // Upstream gone: what was pulled still pulls, the tag included (once
    // its TTL has run out Wharf falls back to the last known digest).
    up.set_faults(Faults {
        refuse: true,
        ..Default::default()
    });
    std::thread::sleep(Duration::from_millis(5100));
    d.docker(&["rmi", "busybox"]);
    d.docker(&["pull", "busybox"]);

    // ...also after Wharf restarts (same port, so dockerd's mirror is unchanged).
    let addr = w.addr.clone();
    let (data, tmp) = w.stop();
    let _tmp = tmp;
    let w = Wharf::start_on(
        &data,
        Opts {
            listen: Some(addr),
            ..up.mirror_opts(&[])
        },
    );
    d.docker(&["rmi", "busybox"]);
    d.docker(&["pull", "busybox"]);
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "echo",
        "offline",
    ]);
    assert_eq!(out.trim(), "offline");

    // An image never pulled fails within seconds (Wharf answers 503 at
    // once; Docker's fallback to Docker Hub fails here without a network).
    let start = Instant::now();
    let out = d.cmd().args(["pull", "neverpulled"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        w.log().contains("neverpulled"),
        "Wharf was asked: {}",
        w.log()
    );
}

#[tokio::test]
async fn containerd_pulls_from_two_upstreams_with_ns() {
    let hub = Upstream::start(false);
    let ghcr = Upstream::start(false);
    let d1 = seed_with_skopeo(&hub.registry_addr, "library/app", "1.0", 2);
    let d2 = seed_with_skopeo(&ghcr.registry_addr, "org/tool", "2.0", 1);
    let w = hub.mirror(&["--upstream", &format!("ghcr.io={}", ghcr.url())]);
    let d = Dockerd::start(&[]);
    let hosts = d.scratch("hosts");
    for (registry, real) in [
        ("docker.io", "https://registry-1.docker.io"),
        ("ghcr.io", "https://ghcr.io"),
    ] {
        std::fs::create_dir_all(hosts.join(registry)).unwrap();
        // The deploy/ snippet, with its fallback `server` pointed at Wharf
        // too: a test must never reach a public registry.
        let snippet = deploy_snippet(
            &format!("containerd/certs.d/{registry}/hosts.toml"),
            &w.addr,
        )
        .replace(real, &format!("http://{}", w.addr));
        std::fs::write(hosts.join(registry).join("hosts.toml"), snippet).unwrap();
    }
    let ctr = |args: &[&str]| {
        run(Command::new(require("ctr"))
            .arg("--address")
            .arg(d.containerd_socket())
            .args(["--namespace", "wharf-test"])
            .args(args))
    };
    for (image, digest) in [
        ("docker.io/library/app:1.0", &d1),
        ("ghcr.io/org/tool:2.0", &d2),
    ] {
        ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            image,
        ]);
        let list = ctr(&["images", "ls"]);
        assert!(
            list.contains(image) && list.contains(digest.as_str()),
            "{list}"
        );
    }
    let ns_requests = |up: &Upstream| up.seen().len();
    assert!(ns_requests(&hub) > 0 && ns_requests(&ghcr) > 0);
    assert!(
        hub.seen().iter().all(|s| !s.path.contains("org/tool")),
        "routing by ?ns= kept the upstreams apart"
    );
    assert!(
        ghcr.seen()
            .iter()
            .all(|s| s.path.starts_with("/v2/org/tool/")),
        "{:?}",
        ghcr.seen()
    );

    // Pulled again from the cache: no upstream requests at all.
    hub.reset();
    ghcr.reset();
    // `--sync` collects the images' content before returning; the check
    // below makes sure the second pull really has to fetch every blob.
    ctr(&[
        "images",
        "rm",
        "--sync",
        "docker.io/library/app:1.0",
        "ghcr.io/org/tool:2.0",
    ]);
    let content = || ctr(&["content", "ls", "-q"]);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            content().trim().is_empty()
        })
        .await,
        "content left after rm: {}",
        content()
    );
    for image in ["docker.io/library/app:1.0", "ghcr.io/org/tool:2.0"] {
        ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            image,
        ]);
    }
    assert!(
        hub.seen().is_empty() && ghcr.seen().is_empty(),
        "{:?} {:?}",
        hub.seen(),
        ghcr.seen()
    );
}

#[tokio::test]
async fn skopeo_pulls_through_registries_conf_mirrors() {
    let hub = Upstream::start(false);
    let ghcr = Upstream::start(false);
    let d1 = seed_with_skopeo(&hub.registry_addr, "library/web", "3", 2);
    let d2 = seed_with_skopeo(&ghcr.registry_addr, "org/cli", "4", 1);
    let w = hub.mirror(&["--upstream", &format!("ghcr.io={}", ghcr.url())]);
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("registries.conf");
    // docker.io through the mirror's root; ghcr.io through a path prefix.
    std::fs::write(&conf, deploy_snippet("containers/registries.conf", &w.addr)).unwrap();
    for (image, digest) in [("docker.io/library/web:3", &d1), ("ghcr.io/org/cli:4", &d2)] {
        let out = tmp.path().join(image.replace(['/', ':'], "_"));
        run(skopeo()
            .arg("--registries-conf")
            .arg(&conf)
            .arg("copy")
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:x", out.display())));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{image}");
    }
    assert!(hub.count("GET", "/v2/library/web/blobs/") >= 2);
    assert!(ghcr.count("GET", "/v2/org/cli/blobs/") >= 1);
}
