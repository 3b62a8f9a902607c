//! Docker, the real thing: a private dockerd pushes an image made by
//! `docker import` to Wharf, forgets it, pulls it back and runs it.

mod common;
use common::docker::Dockerd;
use common::*;

#[tokio::test]
async fn docker_push_rmi_pull_and_run() {
    let w = Wharf::start();
    let d = Dockerd::start(&[]);
    let image = format!("{}/golden/busybox:1.0", w.addr);
    d.import_busybox(&image);
    d.docker(&["push", &image]);

    let api = Api::new(&w);
    let r = api
        .req("HEAD", "/v2/golden/busybox/manifests/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(DOCKER_MANIFEST));
    let pushed = header(&r, "docker-content-digest").unwrap();

    d.docker(&["rmi", &image]);
    let out = d.docker(&["pull", &image]);
    assert!(
        out.contains(&pushed),
        "pull output names the pushed digest: {out}"
    );
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "echo",
        "hello from wharf",
    ]);
    assert_eq!(out.trim(), "hello from wharf");

    // A second tag of the same image: blobs already there are skipped.
    let again = format!("{}/golden/busybox:latest", w.addr);
    d.docker(&["tag", &image, &again]);
    d.docker(&["push", &again]);
    let tags: serde_json::Value = api
        .get("/v2/golden/busybox/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.0", "latest"]));
}
