//! What the side-by-side benchmarks share: starting and stopping the
//! systems under test, a load generator (HTTP/1.1, in the clear or over
//! TLS, with an `Authorization` header if wanted), process CPU and memory
//! readings, test data, and the medians and spreads of the tables.
#![allow(dead_code)]

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A system under test: a running server and where it answers.
pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub addr: String,
    pub _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `cmd` with its output discarded and waits until `addr` accepts.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        addr: String,
        dir: tempfile::TempDir,
    ) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(&addr);
        Server {
            name,
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A server stopped and waited for already: its id may be another
        // process's by now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        crate::common::signal(self.child.id(), "TERM");
        let _ = crate::common::wait_timeout(&mut self.child, Duration::from_secs(30));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(addr: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nginx serving `repo`'s manifest `1` and blob `digest` (copied from
/// the file `blob`) as static files: with `sendfile` in the clear, or over
/// TLS with `tls` = (certificate, key).
pub fn start_nginx(
    repo: &str,
    manifest: &[u8],
    digest: &str,
    blob: &std::path::Path,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let root = dir.path().join("root");
    let mdir = root.join(format!("v2/{repo}/manifests"));
    let bdir = root.join(format!("v2/{repo}/blobs"));
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::create_dir_all(&bdir).unwrap();
    std::fs::write(mdir.join("1"), manifest).unwrap();
    std::fs::copy(blob, bdir.join(digest)).unwrap();
    let listen = match tls {
        None => format!("listen {addr};"),
        Some((cert, key)) => format!(
            "listen {addr} ssl; ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3;",
            cert.display(),
            key.display()
        ),
    };
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n\
               client_body_temp_path {0}/tmp; proxy_temp_path {0}/tmp; fastcgi_temp_path {0}/tmp; uwsgi_temp_path {0}/tmp; scgi_temp_path {0}/tmp;\n\
               server {{ {listen} root {1};\n\
                 location /v2/{repo}/manifests/ {{ default_type application/vnd.oci.image.manifest.v1+json; }}\n\
                 location /v2/{repo}/blobs/ {{ default_type application/octet-stream; }} }} }}\n",
            dir.path().display(),
            root.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let mut cmd = Command::new(crate::common::require("nginx"));
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir.path());
    Server::spawn("nginx", cmd, addr, dir)
}

/// CPU seconds (user + system) of a process and all its threads.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident memory now and at peak (VmRSS, VmHWM), bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (get("VmRSS:"), get("VmHWM:"))
}

pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Where a load generator connects: an address, over TLS with this client
/// config or in the clear, sending this `Authorization` on every request.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub authorization: Option<String>,
}

impl Target {
    pub fn plain(addr: &str) -> Target {
        Target {
            addr: addr.to_string(),
            tls: None,
            authorization: None,
        }
    }
}

/// A client TLS config trusting only the PEM certificate `ca_pem`.
pub fn tls_client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Anything a connection runs over: TCP, or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn connect(t: &Target) -> Box<dyn Io> {
    let tcp = tokio::net::TcpStream::connect(&t.addr).await.unwrap();
    let _ = tcp.set_nodelay(true);
    match &t.tls {
        None => Box::new(tcp),
        Some(cfg) => {
            let host = t.addr.rsplit_once(':').map_or(t.addr.as_str(), |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .unwrap();
            Box::new(tls)
        }
    }
}

/// `conns` HTTP/1.1 connections GET `path` in a loop for `secs` (with
/// `secs` of 0, exactly once each, all at the same moment); (requests, bytes).
pub async fn load(
    target: &Target,
    path: &str,
    accept: Option<&str>,
    conns: usize,
    secs: f64,
) -> (u64, u64) {
    let once = secs == 0.0;
    let reqs = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (reqs, bytes) = (reqs.clone(), bytes.clone());
        let (target, path, accept) = (target.clone(), path.to_string(), accept.map(str::to_string));
        tasks.push(tokio::spawn(async move {
            let io = connect(&target).await;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut first = true;
            while first || (!once && Instant::now() < deadline) {
                first = false;
                let mut req = hyper::Request::get(&path).header("host", &target.addr);
                if let Some(a) = &accept {
                    req = req.header("accept", a);
                }
                if let Some(a) = &target.authorization {
                    req = req.header("authorization", a);
                }
                let resp = match tx
                    .send_request(req.body(Empty::<bytes::Bytes>::new()).unwrap())
                    .await
                {
                    Ok(r) => r,
                    Err(_) => break,
                };
                assert!(resp.status().is_success(), "{path}: {}", resp.status());
                let mut body = resp.into_body();
                while let Some(f) = body.frame().await {
                    if let Ok(d) = f.unwrap().into_data() {
                        bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                reqs.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (reqs.load(Ordering::SeqCst), bytes.load(Ordering::SeqCst))
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    // Incompressible and deterministic (xorshift).
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `4096` → `4 KiB`, `67108864` → `64 MiB` (whole units only).
pub fn size_label(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b}-byte"),
    }
}

pub fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

pub fn worker_pid(master: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(master)
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// Writes every run of every system, with the date and the machine, to
/// `target/<file>`.
pub fn write_results<R: serde::Serialize>(
    file: &str,
    quick: bool,
    runs: usize,
    rows: &[(&str, Vec<R>)],
) {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    // The build may have gone to another CARGO_TARGET_DIR.
    std::fs::create_dir_all(&out).unwrap();
    let out = out.join(file);
    let date = crate::common::run(Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ"));
    let json = serde_json::json!({
        "date": date.trim(),
        "machine": machine(),
        "quick": quick,
        "runs": runs,
        "results": rows
            .iter()
            .map(|(n, r)| serde_json::json!({"system": n, "runs": r}))
            .collect::<Vec<_>>(),
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    eprintln!("wrote {}", out.display());
}

/// Sorted values of one metric over the runs.
pub fn values<R>(runs: &[R], m: fn(&R) -> Option<f64>) -> Vec<f64> {
    let mut v: Vec<f64> = runs.iter().filter_map(m).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub fn median<R>(runs: &[R], m: fn(&R) -> Option<f64>) -> Option<f64> {
    let v = values(runs, m);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// The spread (min–max) of a metric over the runs.
pub fn spread<R>(runs: &[R], m: fn(&R) -> Option<f64>, p: usize) -> String {
    let v = values(runs, m);
    match (v.first(), v.last()) {
        (Some(a), Some(b)) if v.len() > 1 => format!("{a:.p$}–{b:.p$}"),
        _ => "-".into(),
    }
}
