//! A real upstream for mirror tests: Debian's `docker-registry` (the
//! reference registry) on loopback, behind a small counting proxy owned by
//! the test. The proxy counts every request Wharf sends upstream (by
//! method and path, with the bytes of blob bodies), can demand bearer
//! tokens from its own token endpoint (so the token flow is real), and
//! injects the faults the reference registry cannot: refusals, 5xx/429,
//! corrupted or stalled blob bodies, CDN-style redirects, token realms on
//! other servers, and tag lists that page on forever. It can also send
//! Docker Hub's rate-limit headers.

use super::{require, wait_timeout};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
}

/// Faults the proxy injects; change them at any time.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Close every connection without answering (upstream unreachable).
    pub refuse: bool,
    /// Answer every request with this status (e.g. 503, 429).
    pub status: Option<u16>,
    /// Flip one byte in the middle of every blob body.
    pub corrupt_blobs: bool,
    /// Send half of every blob body, then stop sending (without closing).
    pub stall_blobs: bool,
    /// Send half of every blob body, then close the connection.
    pub truncate_blobs: bool,
    /// Send blob bodies in 256 KiB pieces with this pause between them.
    pub slow_blobs: Option<Duration>,
    /// Redirect blob GETs to the proxy's `/cdn/` path on another origin.
    pub redirect_blobs: bool,
    /// Repositories whose name contains this answer 401 even with a token,
    /// as Docker Hub does for missing and private repositories.
    pub deny_repos_containing: Option<String>,
    /// The realm bearer challenges name (default: the proxy's `/token`).
    pub realm: Option<String>,
    /// Redirect blob GETs and HEADs to `<this origin>/cdn/v2/...`.
    pub redirect_blobs_to: Option<String>,
    /// Answer tag lists with generated pages that never end.
    pub tag_pages: Option<TagPages>,
    /// Wait this long before answering a tag list page.
    pub tag_delay: Option<Duration>,
    /// Send Docker Hub's rate-limit headers with every answer:
    /// `ratelimit-limit: N;w=21600`, and `ratelimit-remaining` counting
    /// down from N by one for each successful manifest GET; with none
    /// left, manifest GETs are answered 429 (HEADs are free), as Docker
    /// Hub does.
    pub ratelimit: Option<u64>,
    /// `docker-ratelimit-source` sent with the rate-limit headers.
    pub ratelimit_source: Option<String>,
    /// Blobs answered from memory by digest (`sha256:...`), without the
    /// registry: as many as a benchmark wants, at once.
    pub memory_blobs: Option<Arc<std::collections::HashMap<String, Bytes>>>,
}

/// Generated tag-list pages: `per_page` tags (or the request's `n`) of
/// `tag_len` characters each, in lexical order, each page with a `Link` to
/// the next, forever.
#[derive(Debug, Clone, Copy)]
pub struct TagPages {
    pub per_page: usize,
    pub tag_len: usize,
}

impl TagPages {
    /// The `i`th tag: `t`, padding, then `i` in 20 digits.
    pub fn tag(&self, i: u64) -> String {
        format!("t{}{i:020}", "x".repeat(self.tag_len.saturating_sub(21)))
    }

    /// The index of a generated tag.
    pub fn index(tag: &str) -> Option<u64> {
        tag.get(tag.len().checked_sub(20)?..)?.parse().ok()
    }
}

struct State {
    registry: String,
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Faults>,
    token_requests: AtomicUsize,
    blob_bytes: AtomicU64,
    /// Authorization headers that reached the CDN (must stay empty).
    cdn_authorizations: Mutex<Vec<String>>,
    /// Requests that reached the proxy's own `/cdn/` path.
    cdn_requests: AtomicUsize,
    bearer: bool,
    /// `Basic` credentials the token endpoint insists on, if any.
    token_basic: Mutex<Option<String>>,
    /// Authorization headers the token endpoint received.
    token_authorizations: Mutex<Vec<String>>,
    blob_done_at: Mutex<Option<Instant>>,
    /// Successful manifest GETs (what the rate limit counts), never reset.
    manifest_gets: AtomicU64,
    /// Manifest GETs answered 429 because none were left.
    refused_pulls: AtomicU64,
    http: reqwest::Client,
    port: u16,
}

/// A reference registry behind a counting, fault-injecting proxy.
pub struct Upstream {
    /// The proxy (what Wharf is pointed at).
    pub addr: String,
    /// The registry itself, for seeding without being counted.
    pub registry_addr: String,
    state: Arc<State>,
    registry: Option<Child>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Upstream {
    /// Pushes `repo:tag` with one layer of `layer` bytes straight to the
    /// registry (not counted); returns (manifest digest, manifest bytes,
    /// layer digest).
    pub async fn seed(&self, repo: &str, tag: &str, layer: &[u8]) -> (String, Vec<u8>, String) {
        let reg = super::Api::at(&self.registry_addr);
        let config = format!("{{\"seed\":\"{repo}:{tag}:{}\"}}", layer.len());
        super::push_image_of(&reg, repo, tag, config.as_bytes(), layer).await
    }

    /// Starts a registry and its proxy; with `bearer`, every registry
    /// request needs a token from the proxy's `/token` endpoint.
    pub fn start(bearer: bool) -> Upstream {
        let registry_bin = require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            // Every answer of this registry carries a mark of its own: what
            // answers on the port is checked to be it.
            let mark = format!("{}-{port}", std::process::id());
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Test-Registry: [\"{mark}\"]\n",
                dir.path().join("data").display()
            );
            let cfg = dir.path().join("registry.yml");
            std::fs::write(&cfg, config).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(&registry_bin)
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let registry_addr = format!("127.0.0.1:{port}");
            let start = Instant::now();
            let mut up = false;
            while start.elapsed() < Duration::from_secs(15) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if let Ok(mut c) = std::net::TcpStream::connect(&registry_addr) {
                    // Something listens there: the registry, unless the
                    // port was taken between free_port() and its bind (by
                    // another test's process), when it exits, and what
                    // answers lacks its mark.
                    use std::io::{Read, Write};
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = c.write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n");
                    let mut answer = Vec::new();
                    let _ = c.read_to_end(&mut answer);
                    up = String::from_utf8_lossy(&answer).contains(&mark)
                        && child.try_wait().unwrap().is_none();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !up {
                let _ = child.kill();
                let _ = child.wait();
                last_err =
                    std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
                continue;
            }
            return Self::with_proxy(registry_addr, child, dir, bearer);
        }
        panic!("docker-registry did not start: {last_err}");
    }

    fn with_proxy(
        registry_addr: String,
        registry: Child,
        dir: tempfile::TempDir,
        bearer: bool,
    ) -> Upstream {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            registry: registry_addr.clone(),
            seen: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            token_requests: AtomicUsize::new(0),
            blob_bytes: AtomicU64::new(0),
            cdn_authorizations: Mutex::new(Vec::new()),
            cdn_requests: AtomicUsize::new(0),
            bearer,
            token_basic: Mutex::new(None),
            token_authorizations: Mutex::new(Vec::new()),
            blob_done_at: Mutex::new(None),
            manifest_gets: AtomicU64::new(0),
            refused_pulls: AtomicU64::new(0),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            port,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, st, stop_rx));
        });
        Upstream {
            addr: format!("127.0.0.1:{port}"),
            registry_addr,
            state,
            registry: Some(registry),
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The reference registry's process id (the benchmark reads its CPU).
    pub fn registry_pid(&self) -> Option<u32> {
        self.registry.as_ref().map(|c| c.id())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Settings for a Wharf that mirrors docker.io from this upstream,
    /// followed by `extra`.
    pub fn mirror_opts(&self, extra: &[&str]) -> super::Opts {
        let mut args = vec![
            "--upstream".to_string(),
            format!("docker.io={}", self.url()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        super::Opts {
            args,
            ..Default::default()
        }
    }

    /// Starts a Wharf that mirrors docker.io from this upstream.
    pub fn mirror(&self, extra: &[&str]) -> super::Wharf {
        super::Wharf::start_with(self.mirror_opts(extra))
    }

    /// Starts a Wharf that mirrors docker.io from this upstream, with
    /// `table` (TOML lines such as `redirect_hosts = [...]`) in its
    /// `[[upstreams]]` table, followed by `extra`.
    pub fn mirror_with(&self, table: &str, extra: &[&str]) -> super::Wharf {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("wharf.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[upstreams]]\nname = \"docker.io\"\nurl = \"{}\"\n{table}\n",
                self.url()
            ),
        )
        .unwrap();
        let mut opts = self.mirror_opts(extra);
        opts.args.push("--config".into());
        opts.args.push(cfg.display().to_string());
        // The file is read at start-up only.
        super::Wharf::start_with(opts)
    }

    pub fn set_faults(&self, f: Faults) {
        *self.state.faults.lock().unwrap() = f;
    }

    /// Every request seen so far (token requests excluded).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many seen requests have `method` and a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(part))
            .count()
    }

    pub fn reset(&self) {
        self.state.seen.lock().unwrap().clear();
        self.state.blob_bytes.store(0, Ordering::SeqCst);
        self.state.token_requests.store(0, Ordering::SeqCst);
    }

    /// Forgets the HEAD requests seen so far (keeps the rest).
    pub fn reset_heads(&self) {
        self.state
            .seen
            .lock()
            .unwrap()
            .retain(|s| s.method != "HEAD");
    }

    /// Makes the token endpoint demand these Basic credentials.
    pub fn require_token_credentials(&self, user: &str, password: &str) {
        use base64::Engine;
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.state.token_basic.lock().unwrap() = Some(format!("Basic {v}"));
    }

    pub fn token_authorizations(&self) -> Vec<String> {
        self.state.token_authorizations.lock().unwrap().clone()
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Blob body bytes sent to Wharf.
    pub fn blob_bytes(&self) -> u64 {
        self.state.blob_bytes.load(Ordering::SeqCst)
    }

    /// When the last blob body finished sending.
    pub fn blob_done_at(&self) -> Option<Instant> {
        *self.state.blob_done_at.lock().unwrap()
    }

    pub fn cdn_authorizations(&self) -> Vec<String> {
        self.state.cdn_authorizations.lock().unwrap().clone()
    }

    /// Requests that reached the proxy's own `/cdn/` path.
    pub fn cdn_requests(&self) -> usize {
        self.state.cdn_requests.load(Ordering::SeqCst)
    }

    /// Successful manifest GETs so far (not cleared by [`Upstream::reset`]).
    pub fn manifest_gets(&self) -> u64 {
        self.state.manifest_gets.load(Ordering::SeqCst)
    }

    /// Manifest GETs answered 429 by the rate limit ([`Faults::ratelimit`]).
    pub fn refused_pulls(&self) -> u64 {
        self.state.refused_pulls.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut c) = self.registry.take() {
            super::signal(c.id(), "TERM");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                wait_timeout(&mut c, Duration::from_secs(10))
            }));
        }
    }
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, body: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

async fn serve(
    listener: StdListener,
    state: Arc<State>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let (stream, _) = tokio::select! {
            c = listener.accept() => match c { Ok(c) => c, Err(_) => continue },
            _ = &mut stop => return,
        };
        if state.faults.lock().unwrap().refuse {
            drop(stream);
            continue;
        }
        let st = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move {
                    // A refusing upstream also drops connections kept alive
                    // from before: the service fails, hyper closes it.
                    if st.faults.lock().unwrap().refuse {
                        return Err(std::io::Error::other("refused"));
                    }
                    Ok(handle(st, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Answers one request, with the rate-limit headers when asked for.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    let manifest_get = req.method() == "GET" && req.uri().path().contains("/manifests/");
    let (limit, source) = {
        let f = state.faults.lock().unwrap();
        (f.ratelimit, f.ratelimit_source.clone())
    };
    let spent = limit.is_some_and(|l| state.manifest_gets.load(Ordering::SeqCst) >= l);
    let mut resp = if manifest_get && spent {
        state.seen.lock().unwrap().push(Seen {
            method: "GET".into(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
            authorization: None,
        });
        state.refused_pulls.fetch_add(1, Ordering::SeqCst);
        full(
            429,
            "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"You have reached your pull rate limit.\"}]}",
        )
    } else {
        answer(state.clone(), req).await
    };
    if let Some(limit) = limit {
        let used = if manifest_get && resp.status().is_success() {
            state.manifest_gets.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            state.manifest_gets.load(Ordering::SeqCst)
        };
        let h = resp.headers_mut();
        h.insert(
            "ratelimit-limit",
            format!("{limit};w=21600").parse().unwrap(),
        );
        h.insert(
            "ratelimit-remaining",
            format!("{};w=21600", limit.saturating_sub(used))
                .parse()
                .unwrap(),
        );
        if let Some(s) = source {
            h.insert("docker-ratelimit-source", s.parse().unwrap());
        }
    }
    resp
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_string());
    if path == "/token" {
        if let Some(a) = &authorization {
            state.token_authorizations.lock().unwrap().push(a.clone());
        }
        let want = state.token_basic.lock().unwrap().clone();
        if let Some(want) = want {
            if authorization.as_deref() != Some(want.as_str()) {
                return full(401, "{\"details\":\"incorrect username or password\"}");
            }
        }
        state.token_requests.fetch_add(1, Ordering::SeqCst);
        let n = state.token_requests.load(Ordering::SeqCst);
        return full(
            200,
            &format!("{{\"token\":\"token-{n}\",\"expires_in\":300}}"),
        );
    }
    if let Some(rest) = path.strip_prefix("/cdn/") {
        // The "CDN" a blob GET was redirected to: serve the registry's blob.
        state.cdn_requests.fetch_add(1, Ordering::SeqCst);
        if let Some(a) = authorization {
            state.cdn_authorizations.lock().unwrap().push(a);
        }
        let target = format!("http://{}/{}", state.registry, rest);
        return forward(&state, "GET", &target, &[], true).await;
    }
    state.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: authorization.clone(),
    });
    let faults = state.faults.lock().unwrap().clone();
    if let Some(s) = faults.status {
        let mut r = full(
            s,
            "{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"injected\"}]}",
        );
        if s == 429 {
            r.headers_mut().insert("retry-after", "17".parse().unwrap());
        }
        return r;
    }
    if let Some(deny) = &faults.deny_repos_containing {
        if path.contains(deny.as_str()) {
            let mut r = full(401, "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}");
            r.headers_mut().insert(
                "www-authenticate",
                format!(
                    "Bearer realm=\"{}\",service=\"test-registry\"",
                    realm(&state, &faults)
                )
                .parse()
                .unwrap(),
            );
            return r;
        }
    }
    if state.bearer
        && path != "/v2/"
        && !authorization
            .as_deref()
            .unwrap_or("")
            .starts_with("Bearer token-")
    {
        let repo = path
            .trim_start_matches("/v2/")
            .rsplit_once("/manifests/")
            .or_else(|| path.trim_start_matches("/v2/").rsplit_once("/blobs/"))
            .or_else(|| path.trim_start_matches("/v2/").rsplit_once("/tags/"))
            .map(|(r, _)| r.to_string())
            .unwrap_or_default();
        let mut r = full(
            401,
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token required\"}]}",
        );
        r.headers_mut().insert(
            "www-authenticate",
            format!(
                "Bearer realm=\"{}\",service=\"test-registry\",scope=\"repository:{repo}:pull\"",
                realm(&state, &faults)
            )
            .parse()
            .unwrap(),
        );
        return r;
    }
    if path.ends_with("/tags/list") {
        if let Some(d) = faults.tag_delay {
            tokio::time::sleep(d).await;
        }
        if let Some(pages) = faults.tag_pages {
            return tag_page(&path, &query, pages);
        }
    }
    let is_blob = path.contains("/blobs/sha256:");
    if let (true, Some(blobs)) = (is_blob, &faults.memory_blobs) {
        let digest = path.rsplit('/').next().unwrap_or_default();
        if let Some(b) = blobs.get(digest) {
            state.blob_bytes.fetch_add(b.len() as u64, Ordering::SeqCst);
            let body = if req.method() == "HEAD" {
                Bytes::new()
            } else {
                b.clone()
            };
            let mut r = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
            let h = r.headers_mut();
            h.insert("content-type", "application/octet-stream".parse().unwrap());
            h.insert("content-length", b.len().to_string().parse().unwrap());
            h.insert("docker-content-digest", digest.parse().unwrap());
            return r;
        }
    }
    if let (true, Some(to)) = (is_blob, &faults.redirect_blobs_to) {
        let mut r = full(307, "");
        r.headers_mut()
            .insert("location", format!("{to}/cdn{path}").parse().unwrap());
        return r;
    }
    let is_blob_get = req.method() == "GET" && is_blob;
    if is_blob_get && faults.redirect_blobs {
        let mut r = full(307, "");
        // `localhost` is another origin than 127.0.0.1: Authorization must not follow.
        r.headers_mut().insert(
            "location",
            format!("http://localhost:{}/cdn{}", state.port, path)
                .parse()
                .unwrap(),
        );
        return r;
    }
    let accept: Vec<String> = req
        .headers()
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let target = format!(
        "http://{}{}{}{}",
        state.registry,
        path,
        if query.is_empty() { "" } else { "?" },
        query
    );
    let mut resp = forward(&state, req.method().as_str(), &target, &accept, is_blob_get).await;
    if is_blob_get
        && resp.status() == 200
        && (faults.corrupt_blobs
            || faults.stall_blobs
            || faults.truncate_blobs
            || faults.slow_blobs.is_some())
    {
        resp = inject(resp, &faults, state.clone()).await;
    }
    resp
}

/// The realm bearer challenges name.
fn realm(state: &State, faults: &Faults) -> String {
    faults
        .realm
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/token", state.port))
}

/// One generated tag-list page: the tags after `last`, and a `Link` on.
fn tag_page(path: &str, query: &str, pages: TagPages) -> Response<ProxyBody> {
    let q: std::collections::HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let first = q
        .get("last")
        .and_then(|l| TagPages::index(l))
        .map_or(0, |i| i + 1);
    let n = q
        .get("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(pages.per_page);
    let tags: Vec<String> = (first..first + n as u64).map(|i| pages.tag(i)).collect();
    let name = path
        .trim_start_matches("/v2/")
        .trim_end_matches("/tags/list");
    let body = serde_json::json!({ "name": name, "tags": tags }).to_string();
    let mut r = full(200, &body);
    let next = format!(
        "<{path}?last={}&n={n}>; rel=\"next\"",
        tags.last().cloned().unwrap_or_default()
    );
    r.headers_mut().insert("link", next.parse().unwrap());
    r
}

/// Forwards a request to the registry and streams the answer back,
/// counting blob bytes.
async fn forward(
    state: &Arc<State>,
    method: &str,
    target: &str,
    accept: &[String],
    count: bool,
) -> Response<ProxyBody> {
    let mut rb = state.http.request(method.parse().unwrap(), target);
    for a in accept {
        rb = rb.header("accept", a);
    }
    let upstream = match rb.send().await {
        Ok(r) => r,
        Err(_) => {
            return full(
                502,
                "{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"registry down\"}]}",
            )
        }
    };
    let mut builder = Response::builder().status(upstream.status().as_u16());
    for (k, v) in upstream.headers() {
        builder = builder.header(k.as_str(), v.as_bytes());
    }
    let st = state.clone();
    let stream = futures_util::StreamExt::map(upstream.bytes_stream(), move |r| {
        let b = r.map_err(std::io::Error::other)?;
        if count {
            st.blob_bytes.fetch_add(b.len() as u64, Ordering::SeqCst);
        }
        Ok(hyper::body::Frame::data(b))
    });
    let st = state.clone();
    let stream = futures_util::StreamExt::chain(
        stream,
        futures_util::stream::once(async move {
            if count {
                *st.blob_done_at.lock().unwrap() = Some(Instant::now());
            }
            Err(std::io::Error::other("end"))
        }),
    );
    // The sentinel error above only records the time; stop before it.
    let stream = futures_util::StreamExt::take_while(stream, |r| {
        let keep = r.is_ok();
        async move { keep }
    });
    builder.body(StreamBody::new(stream).boxed()).unwrap()
}

/// Rewrites a blob body according to the faults.
async fn inject(
    resp: Response<ProxyBody>,
    faults: &Faults,
    state: Arc<State>,
) -> Response<ProxyBody> {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut data = bytes.to_vec();
    if faults.corrupt_blobs && !data.is_empty() {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    let data = Bytes::from(data);
    let pieces: Vec<Bytes> = data
        .chunks(256 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    let half = pieces.len().div_ceil(2).max(1);
    let total_pieces = pieces.len();
    let stall = faults.stall_blobs;
    let truncate = faults.truncate_blobs;
    let pause = faults.slow_blobs;
    let stream = futures_util::stream::unfold(
        (pieces.into_iter().enumerate(), false),
        move |(mut it, stalled)| {
            let state = state.clone();
            async move {
                if stalled {
                    return None;
                }
                match it.next() {
                    Some((i, p)) => {
                        if stall && i >= half {
                            // Stop sending without closing the connection.
                            futures_util::future::pending::<()>().await;
                        }
                        if truncate && i >= half {
                            // Break off: fewer bytes than Content-Length, then close.
                            return Some((Err(std::io::Error::other("truncated")), (it, true)));
                        }
                        if let Some(d) = pause {
                            tokio::time::sleep(d).await;
                        }
                        if i + 1 == total_pieces {
                            // Hyper stops polling once Content-Length bytes are out,
                            // so the last piece marks the end of the transfer.
                            *state.blob_done_at.lock().unwrap() = Some(Instant::now());
                        }
                        Some((Ok(hyper::body::Frame::data(p)), (it, false)))
                    }
                    None => {
                        *state.blob_done_at.lock().unwrap() = Some(Instant::now());
                        None
                    }
                }
            }
        },
    );
    Response::from_parts(parts, StreamBody::new(stream).boxed())
}
