//! Maintenance on a running server: `wharf gc --server URL` and `wharf
//! verify --server URL` (and `import`) through its `/admin/` endpoints, for
//! the users in `admins` only, while skopeo pushes and pulls; what a dry run says of the
//! grace period. (`wharf gc --data` on a stopped server is in
//! `store_limits.rs`.)

mod common;
use common::layout::write_oci_layout_from;
use common::pki::htpasswd;
use common::*;
use std::process::Command;

fn skopeo(args: &[&str]) -> Command {
    let mut c = Command::new(require("skopeo"));
    c.arg("--insecure-policy").args(args);
    c
}

/// skopeo pushes an image of layers `first..first + layers` to
/// `golden/<repo>:1` as alice; its manifest digest.
fn push(addr: &str, repo: &str, first: usize, layers: usize) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let digest = write_oci_layout_from(tmp.path(), "1", first, layers);
    run(skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:alice-pw",
    ])
    .arg(format!("oci:{}:1", tmp.path().display()))
    .arg(format!("docker://{addr}/golden/{repo}:1")));
    digest
}

/// skopeo pulls `golden/<repo>:1`; whether it worked.
fn pulls(addr: &str, repo: &str) -> bool {
    let tmp = tempfile::tempdir().unwrap();
    try_run(
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "alice:alice-pw",
        ])
        .arg(format!("docker://{addr}/golden/{repo}:1"))
        .arg(format!("dir:{}", tmp.path().display())),
    )
    .0
}

/// `wharf ARGS --server URL`, as `user` (password in WHARF_PASSWORD):
/// exit code and output.
fn admin_cli(addr: &str, user: Option<(&str, &str)>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .args(["--server", &format!("http://{addr}")])
        .env("WHARF_LOG", "warn")
        .env_remove("WHARF_PASSWORD");
    if let Some((u, p)) = user {
        cmd.args(["--user", u]).env("WHARF_PASSWORD", p);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn gc_and_verify_run_on_a_running_server_for_admins_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    htpasswd(&users, &[("alice", "alice-pw"), ("ops", "ops-pw")]);
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "admins = [\"ops\"]\n").unwrap();
    let w = Wharf::start_with(Opts {
        args: [
            "--config",
            &cfg.display().to_string(),
            "--htpasswd",
            &users.display().to_string(),
            "--gc-grace",
            "8s",
            "--gc-interval",
            "0s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..Default::default()
    });
    let addr = w.addr.to_string();
    let alice = Api::new(&w).basic("alice", "alice-pw");
    push(&addr, "app", 0, 1);
    // Shares its first layer with app; its manifest, config and second
    // layer are its own.
    let old = push(&addr, "old", 0, 2);
    let orphan = alice
        .push_blob("golden/app", b"pushed, never referenced")
        .await;
    assert_eq!(
        alice
            .status("DELETE", &format!("/v2/golden/old/manifests/{old}"))
            .await,
        202
    );
    let deleted = std::time::Instant::now();
    let ops = Some(("ops", "ops-pw"));

    // Only admins: anonymous callers are told to log in, alice is refused.
    let (code, out) = admin_cli(&addr, None, &["gc", "--dry-run"]);
    assert_ne!(code, 0);
    assert!(out.contains("asks who you are"), "{out}");
    let (code, out) = admin_cli(&addr, Some(("alice", "alice-pw")), &["gc", "--dry-run"]);
    assert_ne!(code, 0);
    assert!(out.contains("refused") && out.contains("admins"), "{out}");
    // An import too; an image layout naming its image by tag alone is
    // refused even to an admin.
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout_from(layout.path(), "1", 20, 2);
    let bundle = dir.path().join("bundle.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&bundle)
        .arg("-C")
        .arg(layout.path())
        .arg("."));
    let bundle = bundle.to_str().unwrap();
    let (code, out) = admin_cli(&addr, Some(("alice", "alice-pw")), &["import", bundle]);
    assert_ne!(code, 0);
    assert!(out.contains("refused") && out.contains("admins"), "{out}");
    let (code, out) = admin_cli(&addr, Some(("ops", "ops-pw")), &["import", bundle]);
    assert_eq!(code, 1);
    assert!(out.contains("only as \"1\""), "{out}");
    let (code, out) = admin_cli(&addr, Some(("ops", "wrong")), &["verify"]);
    assert_ne!(code, 0, "{out}");
    assert!(std::fs::read_dir(w.data.join("quarantine")).is_err());

    // Right after the delete, everything unreferenced is within the grace
    // period, and the dry run says so.
    let (code, out) = admin_cli(&addr, ops, &["gc", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would remove 0 unreferenced blobs"), "{out}");
    assert!(
        out.contains("kept 4 unreferenced blobs") && out.contains("grace period (8s)"),
        "{out}"
    );
    assert!(
        deleted.elapsed().as_secs() < 6,
        "the dry run came within the grace"
    );
    // The online form keeps the server's grace.
    let (code, out) = admin_cli(&addr, ops, &["gc", "--grace", "0s"]);
    assert_ne!(code, 0);
    assert!(out.contains("keeps its gc_grace (8s)"), "{out}");
    assert!(blob_file(&w.data, &orphan).exists());

    // Past the grace: a collection while another push runs.
    tokio::time::sleep(std::time::Duration::from_secs(8).saturating_sub(deleted.elapsed())).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Layers of its own: none of them was a candidate before the push.
    let pusher = {
        let addr = addr.clone();
        std::thread::spawn(move || push(&addr, "new", 10, 3))
    };
    let (code, out) = admin_cli(&addr, ops, &["gc"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("removed {orphan}")), "{out}");
    assert!(out.contains(&format!("removed {old}")), "{out}");
    assert!(!blob_file(&w.data, &orphan).exists());
    pusher.join().unwrap();
    for repo in ["app", "new"] {
        assert!(pulls(&addr, repo), "{repo} pulls after the collection");
    }
    assert!(!pulls(&addr, "old"));

    // Verify on the running server: clean, and no repair there.
    let (code, out) = admin_cli(&addr, ops, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 corrupt, 0 orphaned, 0 missing"), "{out}");
    let (code, out) = admin_cli(&addr, ops, &["verify", "--repair"]);
    assert_eq!(code, 2, "the command line refuses it: {out}");
    let r = Api::new(&w)
        .basic("ops", "ops-pw")
        .req("POST", "/admin/verify?repair=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.text().await.unwrap().contains("stopped server only"));
    let log = w.log();
    assert!(log.contains("maintenance: gc: removed 4 blobs"), "{log}");
    assert!(log.contains("maintenance: verify: checked"), "{log}");
}
