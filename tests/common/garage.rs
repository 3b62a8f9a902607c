//! A real S3-compatible object store for the tests: Garage, started as a
//! single node on loopback ports with a bucket and a key made through its
//! own CLI. Not a mock. A watchdog stops it when the test process exits.
//! `shared()` is one Garage per test process (each Wharf gets its own key
//! prefix in its bucket); fault tests start their own to stop and resume.

use super::{require, run};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running Garage and the credentials of its one key.
pub struct Garage {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    config: PathBuf,
    s3_port: u16,
    /// The server process (not the watchdog); 0 while stopped.
    pid: Mutex<u32>,
    _dir: tempfile::TempDir,
}

/// Where one Wharf keeps its state in a Garage bucket.
#[derive(Clone, Debug)]
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    pub prefix: String,
}

impl S3Target {
    /// The `wharf serve` flags that use this bucket.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--storage".into(),
            "s3".into(),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-bucket".into(),
            self.bucket.clone(),
            "--s3-region".into(),
            "garage".into(),
            "--s3-path-style".into(),
            "--s3-prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// The environment Wharf reads the credentials from.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
        ]
    }

    /// A client of the same bucket, for tests that look behind Wharf's
    /// back.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("garage")
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("S3 client")
    }

    /// The full object name of `name` under this target's prefix.
    pub fn object(&self, name: &str) -> object_store::path::Path {
        object_store::path::Path::parse(format!("{}/{name}", self.prefix.trim_end_matches('/')))
            .expect("object name")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One Garage for the whole test process.
pub fn shared() -> &'static Garage {
    static SHARED: OnceLock<Garage> = OnceLock::new();
    SHARED.get_or_init(Garage::start)
}

/// The target a harness-started Wharf on data directory `data` uses when
/// the tests run on S3 (`WHARF_TEST_STORAGE=s3`): the shared Garage, under
/// a prefix named after the data directory, so a restart on the same
/// directory finds its bucket state again.
pub fn target_for(data: &Path) -> S3Target {
    use sha2::Digest as _;
    let h = hex::encode(&sha2::Sha256::digest(data.to_string_lossy().as_bytes())[..8]);
    shared().target(&format!("t-{h}"))
}

impl Garage {
    /// Starts a fresh single-node Garage with bucket `wharf` and one key.
    pub fn start() -> Garage {
        let garage = require("garage");
        let dir = tempfile::tempdir().expect("tempdir");
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let secret = hex::encode(rand_bytes());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
                d = dir.path().display()
            ),
        )
        .unwrap();
        let mut g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "wharf".into(),
            key_id: String::new(),
            secret: String::new(),
            config,
            s3_port: s3,
            pid: Mutex::new(0),
            _dir: dir,
        };
        g.resume();
        let started = Instant::now();
        let node = loop {
            let out = Command::new(&garage)
                .arg("-c")
                .arg(&g.config)
                .args(["node", "id", "-q"])
                .output()
                .unwrap();
            let id = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && !id.trim().is_empty() {
                break id.trim().split('@').next().unwrap().to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "garage did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        let key = g.cli(&["key", "create", "wharf-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        g.create_bucket("wharf");
        g.key_id = key_id;
        g.secret = secret;
        g
    }

    /// Runs the Garage CLI against this node; panics when it fails.
    fn cli(&self, args: &[&str]) -> String {
        run(Command::new(require("garage"))
            .arg("-c")
            .arg(&self.config)
            .args(args))
    }

    /// Creates a bucket the key may read and write.
    pub fn create_bucket(&self, name: &str) {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            name,
            "--key",
            "wharf-key",
        ]);
    }

    /// A target under `prefix` of bucket `wharf`.
    pub fn target(&self, prefix: &str) -> S3Target {
        S3Target {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
            prefix: format!("{prefix}/"),
        }
    }

    /// Stops the server (SIGKILL): the store is unreachable until
    /// [`resume`](Self::resume).
    pub fn stop(&self) {
        let mut pid = self.pid.lock().unwrap();
        if *pid != 0 {
            super::signal(*pid, "KILL");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            *pid = 0;
        }
    }

    /// Starts the server again on the same state and ports, and waits
    /// until its S3 port answers.
    pub fn resume(&self) {
        let mut pid = self.pid.lock().unwrap();
        assert_eq!(*pid, 0, "garage is running");
        let garage = require("garage");
        // The watchdog ends Garage when the test process ends, however it ends.
        let script = format!(
            "{g} -c {c} server >{c}.log 2>&1 & echo $! >{c}.pid; g=$!; \
             while kill -0 {me} 2>/dev/null && kill -0 $g 2>/dev/null; do sleep 0.5; done; kill -9 $g 2>/dev/null",
            g = garage.display(),
            c = self.config.display(),
            me = std::process::id()
        );
        let pidfile = PathBuf::from(format!("{}.pid", self.config.display()));
        let _ = std::fs::remove_file(&pidfile);
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start garage");
        std::thread::spawn(move || watchdog.wait());
        let started = Instant::now();
        loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                if std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
                    *pid = p;
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "garage did not open its S3 port"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rand_bytes() -> [u8; 32] {
    use sha2::Digest as _;
    let seed = format!(
        "{:?}{}{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    sha2::Sha256::digest(seed.as_bytes()).into()
}
