//! The one test harness: starts the real `wharf` binary on a random
//! loopback port with its own data directory, and offers an HTTP client
//! and helpers that speak the distribution API the way clients do.
#![allow(dead_code)]

pub mod attack;
pub mod browser;
pub mod docker;
pub mod garage;
pub mod layout;
pub mod pki;
pub mod sink;
pub mod upstream;

use sha2::{Digest as _, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// `len` deterministic bytes that differ for each `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 24) as u8 ^ seed)
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A running `wharf serve`.
pub struct Wharf {
    child: Option<Child>,
    pub addr: String,
    /// `http` or `https`, as the start-up line says.
    pub scheme: String,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
}

/// Extra settings for a server start.
#[derive(Default, Clone)]
pub struct Opts {
    pub args: Vec<String>,
    /// Listen address (default: a random loopback port).
    pub listen: Option<String>,
    /// A file-descriptor limit (soft and hard) to start under.
    pub nofile: Option<u64>,
    /// Keep durable state in this bucket (`--storage s3`). Without it,
    /// `WHARF_TEST_STORAGE=s3` runs every harness-started Wharf on the
    /// shared Garage.
    pub s3: Option<garage::S3Target>,
}

/// Whether the suite runs on S3 (`WHARF_TEST_STORAGE=s3`) rather than the
/// filesystem backend.
pub fn on_s3() -> bool {
    std::env::var("WHARF_TEST_STORAGE").is_ok_and(|v| v == "s3")
}

/// Says why a test that checks files of the data directory does not apply
/// on S3, where the data directory is only a cache.
pub fn fs_only(what: &str) -> bool {
    if on_s3() {
        eprintln!("not on S3: {what} (the data directory is a cache there)");
    }
    !on_s3()
}

impl Wharf {
    /// Starts Wharf on a fresh data directory.
    pub fn start() -> Wharf {
        Self::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Wharf {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut w = Self::start_on(&data, opts);
        w._tmp = Some(tmp);
        w
    }

    /// Starts Wharf on an existing data directory (a restart).
    pub fn start_on(data: &Path, opts: Opts) -> Wharf {
        // WHARF_TEST_BIN runs the tests against another build (an earlier
        // one, for before/after figures).
        let bin = std::env::var("WHARF_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_string());
        let mut cmd = match opts.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // Only the settings a test gives apply: none of the machine's own
        // AWS_* or proxy variables.
        for (k, _) in std::env::vars() {
            let lower = k.to_ascii_lowercase();
            if k.starts_with("AWS_")
                || lower == "http_proxy"
                || lower == "https_proxy"
                || lower == "all_proxy"
            {
                cmd.env_remove(&k);
            }
        }
        let s3 = opts
            .s3
            .clone()
            .or_else(|| on_s3().then(|| garage::target_for(data)));
        let (s3_args, s3_env) = s3.map(|t| (t.args(), t.env())).unwrap_or_default();
        let mut child = cmd
            .arg("serve")
            .arg("--listen")
            .arg(opts.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--data")
            .arg(data)
            // Local namespaces the tests push to, and a Docker Hub that is a
            // closed loopback port: no test may ever reach a real registry.
            .args(["--local-namespace", "golden,charts"])
            .args(["--upstream", "docker.io=http://127.0.0.1:9"])
            .args(&opts.args)
            .args(s3_args)
            .envs(s3_env)
            .env("WHARF_LOG", "info,wharf=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wharf");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http") {
                    let rest = &line[i + "listening on ".len()..];
                    let (scheme, rest) = rest.split_once("://").unwrap_or(("http", rest));
                    let addr = rest.split([',', ' ']).next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((scheme.to_string(), addr));
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (scheme, addr) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("wharf did not start: {:?}", log.lock().unwrap());
            }
        };
        Wharf {
            child: Some(child),
            addr,
            scheme,
            data: data.to_path_buf(),
            _tmp: None,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Whether the log holds a line containing every one of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }

    /// Waits (up to 10 s) until the log holds a line containing every one
    /// of `parts`: lines reach the harness through a pipe, a little after
    /// the response that caused them.
    pub fn wait_logged(&self, parts: &[&str]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logged(parts) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    /// Resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// Graceful stop (SIGTERM); waits for the process and checks it exited 0.
    pub fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let status = wait_timeout(&mut child, Duration::from_secs(40));
        assert!(
            status.success(),
            "wharf exited with {status}: {}",
            self.log()
        );
        (self.data.clone(), self._tmp.take())
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        (self.data.clone(), self._tmp.take())
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client speaking the distribution API to one server.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    /// An `Authorization` value sent with every request.
    pub auth: Option<String>,
}

impl Api {
    pub fn new(w: &Wharf) -> Api {
        Self::at(&w.addr)
    }

    /// A client for any registry at `addr` (host:port).
    pub fn at(addr: &str) -> Api {
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            auth: None,
        }
    }

    /// A client for a Wharf serving HTTPS with a certificate from `ca`.
    pub fn tls(w: &Wharf, ca: &pki::TestCa) -> Api {
        Api::tls_builder(w, ca, |b| b)
    }

    /// Like [`Api::tls`], with more settings on the client (a client
    /// certificate, HTTP/1.1 only, ...).
    pub fn tls_builder(
        w: &Wharf,
        ca: &pki::TestCa,
        more: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Api {
        Api::tls_at_with(&w.addr, ca.pem(), more)
    }

    /// A client for any registry serving HTTPS at `addr` with a
    /// certificate signed by the CA `ca_pem`.
    pub fn tls_at(addr: &str, ca_pem: &str) -> Api {
        Api::tls_at_with(addr, ca_pem, |b| b)
    }

    fn tls_at_with(
        addr: &str,
        ca_pem: &str,
        more: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Api {
        let root = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        let b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none());
        Api {
            base: format!("https://{addr}"),
            http: more(b).build().unwrap(),
            auth: None,
        }
    }

    /// Asks `/token` for `scopes`, with Basic credentials if given.
    pub async fn token(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> reqwest::Response {
        let q: Vec<(&str, &str)> = std::iter::once(("service", "wharf"))
            .chain(scopes.iter().map(|s| ("scope", *s)))
            .collect();
        let mut r = self.http.get(self.url("/token")).query(&q);
        if let Some((u, p)) = creds {
            r = r.basic_auth(u, Some(p));
        }
        r.send().await.unwrap()
    }

    /// A token for `scopes` (the request must succeed).
    pub async fn token_for(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let r = self.token(creds, scopes).await;
        assert_eq!(r.status(), 200, "token request");
        let v: serde_json::Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// The same client, opening a fresh connection per request: for tests
    /// where the server closes connections a pooled client might reuse.
    pub fn unpooled(mut self) -> Api {
        self.http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        self
    }

    /// The same client, connecting from the loopback address `ip` (another
    /// "machine" to Wharf's per-client limits), a fresh connection per
    /// request.
    pub fn bound_to(mut self, ip: &str) -> Api {
        self.http = reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        self
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    pub fn req(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method.parse().unwrap(), self.url(path));
        match &self.auth {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    }

    /// The same client, sending `Authorization: <value>` with every request.
    pub fn with_auth(&self, value: impl Into<String>) -> Api {
        Api {
            base: self.base.clone(),
            http: self.http.clone(),
            auth: Some(value.into()),
        }
    }

    /// The same client, logged in with a bearer token.
    pub fn bearer(&self, token: &str) -> Api {
        self.with_auth(format!("Bearer {token}"))
    }

    /// The same client, sending Basic credentials with every request.
    pub fn basic(&self, user: &str, password: &str) -> Api {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.with_auth(format!("Basic {raw}"))
    }

    /// Monolithic push: POST, then PUT with the whole body. Returns the digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self
            .req("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "POST upload");
        let loc = location(&r);
        let r = self
            .req("PUT", &with_query(&loc, &format!("digest={d}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "PUT upload: {}", r.text().await.unwrap());
        d
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.req("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req("GET", path).send().await.unwrap()
    }

    /// GETs `path`, which must answer 200, and parses its JSON body.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    pub async fn status(&self, method: &str, path: &str) -> u16 {
        self.req(method, path)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_string()
}

pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Adds `q` to a URL that may already have a query.
pub fn with_query(url: &str, q: &str) -> String {
    if url.contains('?') {
        format!("{url}&{q}")
    } else {
        format!("{url}?{q}")
    }
}

/// The OCI error code of a response body.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.expect("JSON error body");
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

/// An image manifest of `media_type` with the given config and layers.
pub fn image_manifest(
    media_type: Option<&str>,
    config: (&str, &str, usize),
    layers: &[(&str, &str, usize)],
) -> Vec<u8> {
    let desc = |(mt, d, s): (&str, &str, usize)| serde_json::json!({"mediaType": mt, "digest": d, "size": s});
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "config": desc(config),
        "layers": layers.iter().map(|l| desc(*l)).collect::<Vec<_>>(),
    });
    if let Some(mt) = media_type {
        m["mediaType"] = mt.into();
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

/// Pushes a small image (config + one layer) to `repo:tag`; returns the
/// manifest digest.
pub async fn push_image(api: &Api, repo: &str, tag: &str, seed: &str) -> String {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer bytes of {seed}").repeat(100);
    push_image_of(api, repo, tag, config.as_bytes(), layer.as_bytes())
        .await
        .0
}

/// Pushes an image of `config` and one `layer` to `repo:tag`; returns the
/// manifest's digest, the manifest, and the layer's digest.
pub async fn push_image_of(
    api: &Api,
    repo: &str,
    tag: &str,
    config: &[u8],
    layer: &[u8],
) -> (String, Vec<u8>, String) {
    let (m, ld) = push_blobs_of_image(api, repo, config, layer).await;
    let r = api.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "pushing {repo}:{tag}");
    (sha256(&m), m, ld)
}

/// Seeds `REPO:1` on the test upstream, an index of a linux/amd64 and a
/// linux/arm64 image (tagged amd64 and arm64); its digest.
pub async fn seed_index(up: &upstream::Upstream, repo: &str) -> String {
    let reg = Api::at(&up.registry_addr);
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\"}}");
        let (d, m, _) = push_image_of(
            &reg,
            repo,
            arch,
            config.as_bytes(),
            format!("layer for {arch}").as_bytes(),
        )
        .await;
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": m.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    })
    .to_string();
    let r = reg
        .put_manifest(repo, "1", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    sha256(index.as_bytes())
}

/// Pushes the config and the one layer of an image to `repo`; returns the
/// image's manifest (not pushed) and the layer's digest.
pub async fn push_blobs_of_image(
    api: &Api,
    repo: &str,
    config: &[u8],
    layer: &[u8],
) -> (Vec<u8>, String) {
    let cd = api.push_blob(repo, config).await;
    let ld = api.push_blob(repo, layer).await;
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
    (m, ld)
}

/// Polls `done` every `every` until it holds or `limit` has passed, and
/// says whether it held; callers assert on that with their own message.
pub async fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Requires a command-line client; real-client tests never skip silently.
pub fn require(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "{tool} is not installed: run .ci/run (or install it) before the tests"
    );
    PathBuf::from(path)
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A `deploy/` example with the placeholder host replaced by `addr`: the
/// tests use the very snippets the README shows.
pub fn deploy_snippet(path: &str, addr: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path);
    std::fs::read_to_string(full)
        .unwrap()
        .replace("wharf.example.com:5000", addr)
}

/// The `registry-mirrors` of a `deploy/` Docker `daemon.json`, pointed at `addr`.
pub fn deploy_mirrors(path: &str, addr: &str) -> Vec<String> {
    let daemon: serde_json::Value = serde_json::from_str(&deploy_snippet(path, addr)).unwrap();
    serde_json::from_value(daemon["registry-mirrors"].clone()).unwrap()
}

/// Runs a command that may fail: (whether it succeeded, stdout + stderr).
pub fn try_run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// skopeo copies `image` (every platform) out of the Wharf at `addr`;
/// the digest of the manifest it got.
pub fn skopeo_pulled(addr: &str, image: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new(require("skopeo"))
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{addr}/{image}"))
        .arg(format!("dir:{}", tmp.path().display())));
    sha256(&std::fs::read(tmp.path().join("manifest.json")).unwrap())
}

/// Runs `wharf ARGS` (a maintenance command) and returns its exit code and
/// standard output.
/// On S3 (`WHARF_TEST_STORAGE=s3`) it works on the bucket of the data
/// directory that `--data` names, as a harness-started server does.
pub fn wharf_cli(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args).env("WHARF_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    let data = args
        .iter()
        .position(|a| *a == "--data")
        .and_then(|i| args.get(i + 1));
    if let (true, Some(data)) = (on_s3(), data) {
        let t = garage::target_for(Path::new(data));
        cmd.args(t.args()).envs(t.env());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// Runs `wharf COMMAND ARGS --server http://ADDR` (a command that works
/// through a running Wharf) and returns its exit code and output.
pub fn wharf_at(addr: &str, command: &str, args: &[&str]) -> (i32, String) {
    let server = format!("http://{addr}");
    let mut all = vec![command];
    all.extend_from_slice(args);
    all.extend(["--server", server.as_str()]);
    wharf_cli(&all)
}

/// The file of blob `digest` under a data directory.
pub fn blob_file(data: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    data.join("blobs").join(alg).join(&hex[..2]).join(hex)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// How many blobs the store of data directory `data` holds: its blob
/// files, or on S3 the blob objects of its bucket.
pub async fn stored_blobs(data: &Path) -> usize {
    if !on_s3() {
        fn walk(p: &Path) -> usize {
            std::fs::read_dir(p).map_or(0, |d| {
                d.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        return walk(&data.join("blobs"));
    }
    use futures_util::TryStreamExt;
    use object_store::ObjectStore as _;
    let t = garage::target_for(data);
    let listed: Vec<_> = t
        .client()
        .list(Some(&t.object("blobs")))
        .try_collect()
        .await
        .unwrap();
    listed.len()
}

/// Bytes of upload session `location` that are stored where a crash
/// cannot lose them: on the filesystem, the session's file; on S3, what
/// the session's record in the bucket counts.
pub async fn upload_stored(w: &Wharf, location: &str) -> u64 {
    let id = location
        .split('?')
        .next()
        .and_then(|p| p.rsplit('/').next())
        .expect("a session id in the location");
    if !on_s3() {
        return std::fs::metadata(w.data.join("uploads").join(id)).map_or(0, |m| m.len());
    }
    use object_store::ObjectStoreExt as _;
    let t = garage::target_for(&w.data);
    let name = t.object(&format!("uploads/{id}/session"));
    let Ok(got) = t.client().get(&name).await else {
        return 0;
    };
    let record: serde_json::Value = serde_json::from_slice(&got.bytes().await.unwrap()).unwrap();
    record["parts_len"].as_u64().unwrap_or(0) + record["tail"].as_u64().unwrap_or(0)
}
