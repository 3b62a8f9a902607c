//! Settings: each one a command-line flag, an environment variable and a
//! key in an optional TOML file, in that order of precedence, falling back
//! to embedded defaults so `wharf serve` runs with no file at all. Values
//! are validated here, at start-up, with messages that name the key.

mod storage;

pub use storage::{S3Config, Storage, StorageArgs};

use crate::auth::policy::{Policy, Principal, Rule};
use crate::oci::RepoName;
use crate::upstream::trust::HostPattern;
use clap::Args;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:5000";
pub const DEFAULT_DATA: &str = "./wharf-data";
pub const DEFAULT_UPLOAD_TIMEOUT: &str = "1h";
pub const DEFAULT_TAG_TTL: &str = "5m";
/// Index records kept in memory: enough for the hot part of a large store
/// on a small machine.
pub const DEFAULT_INDEX_CACHE: u64 = 16 << 20;
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_URL: &str = "https://registry-1.docker.io";
/// Docker Hub's token realm (`https://auth.docker.io/token`): trusted for
/// every upstream at Docker Hub's URL, whatever its `token_realms` says
/// (Docker Hub issues every token there, anonymous ones included).
pub const DOCKER_HUB_TOKEN_REALM: &str = "auth.docker.io";
pub const DEFAULT_LOCAL_NAMESPACES: &[&str] = &["local"];
pub const DEFAULT_TOKEN_TTL: &str = "5m";
pub const DEFAULT_MAX_UPLOAD_SESSIONS: usize = 64;
pub const DEFAULT_MAX_UPLOAD_BYTES: &str = "32GiB";
pub const DEFAULT_MAX_UPSTREAM_TAGS: usize = 100_000;
pub const DEFAULT_MAX_UPSTREAM_TAG_BYTES: &str = "16MiB";

/// `wharf serve` flags. Every flag can also come from its environment
/// variable or from the config file.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys named like the
    /// flags with underscores: listen, data, tls_cert, htpasswd, ...), plus
    /// [[upstreams]], [[access]] and [groups] tables. Flags and environment
    /// variables override it.
    #[arg(long, env = "WHARF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address and port to listen on [default: 0.0.0.0:5000]. Port 0 picks
    /// a free port; the start-up log line says which.
    #[arg(long, env = "WHARF_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Directory for blobs, the index and uploads in progress
    /// [default: ./wharf-data]. Created if missing.
    #[arg(long, env = "WHARF_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// How long an upload session may sit idle before it expires and its
    /// bytes are deleted, e.g. 30m, 2h [default: 1h].
    #[arg(long, env = "WHARF_UPLOAD_TIMEOUT", value_name = "DURATION")]
    pub upload_timeout: Option<String>,

    /// An upstream registry to mirror, repeatable: NAME is the registry
    /// host clients name (docker.io, ghcr.io, quay.io, ...), URL is where
    /// Wharf reaches it. docker.io=https://registry-1.docker.io is always
    /// configured unless overridden. Credentials, per-upstream TTLs,
    /// aliases and the hosts its token realms and redirects may lead to
    /// (token_realms, redirect_hosts) go in the config file's [[upstreams]]
    /// tables.
    #[arg(
        long = "upstream",
        env = "WHARF_UPSTREAM",
        value_name = "NAME=URL",
        value_delimiter = ','
    )]
    pub upstream: Vec<String>,

    /// The upstream that bare repository names (what Docker's
    /// registry-mirrors sends, e.g. library/alpine) are mirrored from
    /// [default: docker.io].
    #[arg(long, env = "WHARF_DEFAULT_UPSTREAM", value_name = "NAME")]
    pub default_upstream: Option<String>,

    /// A first path component whose repositories are local: pushes are
    /// accepted there and content is served only from Wharf's store.
    /// Repeatable or comma-separated; replaces the default [default: local].
    /// Every other name is mirrored and read-only.
    #[arg(
        long = "local-namespace",
        env = "WHARF_LOCAL_NAMESPACE",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub local_namespace: Vec<String>,

    /// How long a tag's digest is trusted before Wharf asks the upstream
    /// again (with a HEAD), e.g. 30s, 5m, 1h; 0s revalidates every pull
    /// [default: 5m].
    #[arg(long, env = "WHARF_TAG_TTL", value_name = "DURATION")]
    pub tag_ttl: Option<String>,

    /// The pull budget kept back at an upstream that sends rate-limit
    /// headers (Docker Hub): with this many pulls or fewer left (a share of
    /// its limit, e.g. 10%, or a count, e.g. 20), tags are served at their
    /// last known digest instead of being checked again, and only content
    /// nobody has cached is fetched [default: 10%].
    #[arg(long, env = "WHARF_RATELIMIT_RESERVE", value_name = "SHARE_OR_COUNT")]
    pub ratelimit_reserve: Option<String>,

    /// Never contact any upstream: serve what is cached (tags at their
    /// last known digest), and answer 503 for anything else.
    #[arg(long, env = "WHARF_OFFLINE")]
    pub offline: bool,

    /// Largest size mirrored content may take on disk, e.g. 50GiB, 800MB.
    /// Past it the least recently used mirrored blobs and manifests are
    /// evicted down to 90% of it. Local content never counts and is never
    /// evicted [default: no limit].
    #[arg(long, env = "WHARF_MAX_CACHE_SIZE", value_name = "SIZE")]
    pub max_cache_size: Option<String>,

    /// Memory the index may keep of its records, e.g. 64MiB. Reads past it
    /// go to the index files (the operating system's page cache), so a
    /// small setting costs little [default: 16MiB].
    #[arg(long, env = "WHARF_INDEX_CACHE_SIZE", value_name = "SIZE")]
    pub index_cache_size: Option<String>,

    /// How long an upstream may stall mid-transfer before the fill is
    /// abandoned and its waiting clients get an error [default: 30s].
    #[arg(long, env = "WHARF_UPSTREAM_IDLE_TIMEOUT", value_name = "DURATION")]
    pub upstream_idle_timeout: Option<String>,

    /// How long a client may take to send a request's headers before its
    /// connection is closed (slow-loris protection) [default: 30s].
    #[arg(long, env = "WHARF_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,

    /// Most client connections open at once; more wait in the listen
    /// backlog until one closes, and the oldest connection that has not
    /// sent a request yet is closed to make room. Lowered at start-up when
    /// the file-descriptor limit cannot hold it [default: 10000].
    #[arg(long, env = "WHARF_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,

    /// Most connections one client address (an IPv6 /64) may hold open;
    /// more are closed at once [default: 256].
    #[arg(long, env = "WHARF_MAX_CLIENT_CONNECTIONS", value_name = "N")]
    pub max_client_connections: Option<String>,

    /// How long a connection may sit with no request in flight after its
    /// last one before it is closed (HTTP/1.1 keep-alive connections close
    /// after --header-timeout without a new request) [default: 60s].
    #[arg(long, env = "WHARF_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// How long a connection with a request in flight may go without
    /// anything moving (a client that stops reading its download or
    /// sending its upload) before it is closed [default: 120s].
    #[arg(long, env = "WHARF_STALL_TIMEOUT", value_name = "DURATION")]
    pub stall_timeout: Option<String>,

    /// A request body (an upload) must bring at least 64 KiB in every
    /// period this long, or be cut off; an upload session keeps what
    /// arrived, for the client to resume [default: 30s].
    #[arg(long, env = "WHARF_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<String>,

    /// How often garbage collection removes local blobs no manifest
    /// references; 0s disables it [default: 1h].
    #[arg(long, env = "WHARF_GC_INTERVAL", value_name = "DURATION")]
    pub gc_interval: Option<String>,

    /// How old an unreferenced local blob must be before garbage
    /// collection removes it, so a push in progress keeps its blobs
    /// [default: 1h].
    #[arg(long, env = "WHARF_GC_GRACE", value_name = "DURATION")]
    pub gc_grace: Option<String>,

    /// Serve HTTPS with this certificate chain (PEM; the server certificate
    /// first, then intermediates). Needs --tls-key. Re-read when the files
    /// change or on SIGHUP [default: plain HTTP].
    #[arg(long, env = "WHARF_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WHARF_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Accept client certificates signed by this CA (PEM): such a client
    /// is authenticated as its certificate's subject common name. Clients
    /// without a certificate are still served [default: none asked for].
    #[arg(long, env = "WHARF_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Users who may log in, as `htpasswd -B` writes them (bcrypt); re-read
    /// when the file changes. Turns access control on: see the [[access]]
    /// rules in the config file [default: no users; anyone may push].
    #[arg(long, env = "WHARF_HTPASSWD", value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// Whether clients that have not logged in may pull (true or false).
    /// false requires a login for every pull [default: true].
    #[arg(long, env = "WHARF_ANONYMOUS_PULL", value_name = "BOOL")]
    pub anonymous_pull: Option<String>,

    /// How long a bearer token from /token stays valid [default: 5m].
    #[arg(long, env = "WHARF_TOKEN_TTL", value_name = "DURATION")]
    pub token_ttl: Option<String>,

    /// File holding the key tokens are signed with (at least 32 bytes)
    /// [default: DATA/token.key, generated on first start with mode 0600].
    #[arg(long, env = "WHARF_TOKEN_KEY", value_name = "FILE")]
    pub token_key: Option<PathBuf>,

    /// Upload sessions one client (a user, or an address when anonymous)
    /// may hold open at once; past it new uploads get 429 [default: 64].
    #[arg(long, env = "WHARF_MAX_UPLOAD_SESSIONS", value_name = "N")]
    pub max_upload_sessions: Option<String>,

    /// Bytes one client may hold in unfinished uploads; past it uploads
    /// get 429 [default: 32GiB].
    #[arg(long, env = "WHARF_MAX_UPLOAD_BYTES", value_name = "SIZE")]
    pub max_upload_bytes: Option<String>,

    /// Upload sessions all clients together may hold open; past it new
    /// uploads get 429 [default: 1024].
    #[arg(long, env = "WHARF_MAX_UPLOAD_SESSIONS_TOTAL", value_name = "N")]
    pub max_upload_sessions_total: Option<String>,

    /// Bytes all clients together may hold in unfinished uploads; past it
    /// uploads get 429 [default: 128GiB].
    #[arg(long, env = "WHARF_MAX_UPLOAD_BYTES_TOTAL", value_name = "SIZE")]
    pub max_upload_bytes_total: Option<String>,
    /// Most tags one tag-list request collects from an upstream's pages;
    /// past it the client gets the tags so far with a Link to the next
    /// page [default: 100000].
    #[arg(long, env = "WHARF_MAX_UPSTREAM_TAGS", value_name = "N")]
    pub max_upstream_tags: Option<String>,

    /// Most bytes of upstream tag-list pages one tag-list request reads;
    /// past it the client gets the tags so far with a Link to the next
    /// page [default: 16MiB].
    #[arg(long, env = "WHARF_MAX_UPSTREAM_TAG_BYTES", value_name = "SIZE")]
    pub max_upstream_tag_bytes: Option<String>,

    /// How log lines are written to standard error: text (for people) or
    /// json (one JSON object per line, with the same fields, for log
    /// collectors). Which lines are written follows WHARF_LOG
    /// [default: text].
    #[arg(long, env = "WHARF_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    #[command(flatten)]
    pub storage: StorageArgs,
}

/// The keys the config file may hold. (No `Debug`: it holds passwords.)
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data: Option<PathBuf>,
    upload_timeout: Option<String>,
    default_upstream: Option<String>,
    local_namespaces: Option<Vec<String>>,
    tag_ttl: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    ratelimit_reserve: Option<String>,
    offline: Option<bool>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_cache_size: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    index_cache_size: Option<String>,
    upstream_idle_timeout: Option<String>,
    header_timeout: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_connections: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_client_connections: Option<String>,
    idle_timeout: Option<String>,
    stall_timeout: Option<String>,
    body_timeout: Option<String>,
    gc_interval: Option<String>,
    gc_grace: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    htpasswd: Option<PathBuf>,
    anonymous_pull: Option<bool>,
    token_ttl: Option<String>,
    token_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_upload_sessions: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_upload_bytes: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_upload_sessions_total: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_upload_bytes_total: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_upstream_tags: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    max_upstream_tag_bytes: Option<String>,
    log_format: Option<String>,
    storage: Option<String>,
    s3_endpoint: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_prefix: Option<String>,
    s3_path_style: Option<bool>,
    #[serde(default, deserialize_with = "string_or_number")]
    local_cache_size: Option<String>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    upstreams: Vec<FileUpstream>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    access: Vec<FileAccess>,
    /// Who may run maintenance on the running server (`/admin/...`).
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    prefetch: Vec<FilePrefetch>,
}

/// One `[[prefetch]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrefetch {
    images: Vec<String>,
    every: String,
    #[serde(default)]
    platforms: Vec<String>,
    #[serde(default)]
    referrers: bool,
}

/// The `[[prefetch]]` lists, checked: a reference naming a registry host
/// must name a configured upstream (any other host would be asked of the
/// default upstream as a repository name, and fail on every run).
fn prefetch_lists(
    lists: &[FilePrefetch],
    upstreams: &[UpstreamConfig],
) -> Result<Vec<PrefetchList>, ConfigError> {
    use crate::oci::image_ref::{ImageRef, Platform};
    let conflict = |m: String| ConfigError::Conflict(format!("[[prefetch]]: {m}"));
    lists
        .iter()
        .map(|l| {
            if l.images.is_empty() {
                return Err(conflict("images is empty".into()));
            }
            let every = humantime::parse_duration(l.every.trim())
                .ok()
                .filter(|d| *d >= Duration::from_secs(60))
                .ok_or_else(|| {
                    conflict(format!(
                        "every = {:?}: expected a duration of at least 1m, e.g. 6h",
                        l.every
                    ))
                })?;
            Ok(PrefetchList {
                images: l
                    .images
                    .iter()
                    .map(|i| {
                        let r = ImageRef::parse(i).map_err(conflict)?;
                        match r.host() {
                            Some(h) if !upstreams.iter().any(|u| u.name == h) => {
                                Err(conflict(format!("{i}: {h} is not a configured upstream")))
                            }
                            _ => Ok(r),
                        }
                    })
                    .collect::<Result<_, _>>()?,
                every,
                platforms: l
                    .platforms
                    .iter()
                    .map(|p| Platform::parse(p).map_err(conflict))
                    .collect::<Result<_, _>>()?,
                referrers: l.referrers,
            })
        })
        .collect()
}

/// One `[[access]]` rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccess {
    repositories: String,
    #[serde(default)]
    pull: Vec<String>,
    #[serde(default)]
    push: Vec<String>,
    #[serde(default)]
    delete: Vec<String>,
}

/// Accepts `max_connections = 100` as well as `"100"`.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        N(u64),
    }
    Ok(Option::<V>::deserialize(d)?.map(|v| match v {
        V::S(s) => s,
        V::N(n) => n.to_string(),
    }))
}

/// One `[[upstreams]]` table. (No `Debug`: it holds a password.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    name: String,
    url: String,
    alias: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    tag_ttl: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    ratelimit_reserve: Option<String>,
    ca_file: Option<PathBuf>,
    token_realms: Option<Vec<String>>,
    redirect_hosts: Option<Vec<String>>,
}

/// A secret that never shows up in logs or debug output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How much of an upstream's pull budget (the rate limit its headers
/// announce) is kept back: a share of the limit, or a number of pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatelimitReserve {
    Percent(u8),
    Pulls(u64),
}

impl Default for RatelimitReserve {
    fn default() -> Self {
        RatelimitReserve::Percent(10)
    }
}

impl RatelimitReserve {
    /// `10%` or `20`.
    pub fn parse(s: &str) -> Option<RatelimitReserve> {
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .map(RatelimitReserve::Percent),
            None => s.parse().ok().map(RatelimitReserve::Pulls),
        }
    }

    /// The pulls kept back of a `limit` (a share of an unknown limit is
    /// unknown), rounded up.
    pub fn of(self, limit: Option<u64>) -> Option<u64> {
        match self {
            // The limit is the upstream's to say: no overflow for any value.
            RatelimitReserve::Percent(p) => {
                limit.map(|l| (u128::from(l) * u128::from(p)).div_ceil(100) as u64)
            }
            RatelimitReserve::Pulls(n) => Some(n),
        }
    }
}

/// A configured upstream registry.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The registry host clients name: `docker.io`, `ghcr.io`, ...
    pub name: String,
    /// Where Wharf reaches it (scheme, host, optional path prefix).
    pub url: url::Url,
    /// A short first path component that also selects this upstream.
    pub alias: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tag_ttl: Duration,
    /// The pull budget kept back (see [`RatelimitReserve`]).
    pub ratelimit_reserve: RatelimitReserve,
    /// Extra CA certificates (PEM) trusted for this upstream, on top of the
    /// web PKI roots: a private registry with its own CA.
    pub ca_file: Option<PathBuf>,
    /// Hosts besides the upstream's own origin whose token realms may be
    /// sent the upstream's credentials (always HTTPS).
    pub token_realms: Vec<HostPattern>,
    /// Hosts redirects may lead to whatever their addresses (loopback and
    /// private ones included) and over plain HTTP.
    pub redirect_hosts: Vec<HostPattern>,
}

impl UpstreamConfig {
    /// Whether Wharf logs in to this upstream: its content is then never
    /// served to anonymous clients.
    pub fn is_private(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }
}

/// The files HTTPS is served with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub upload_timeout: Duration,
    pub upstreams: Vec<UpstreamConfig>,
    pub default_upstream: String,
    pub local_namespaces: Vec<String>,
    pub offline: bool,
    /// Byte limit of mirrored content; `None` is no limit.
    pub max_cache_size: Option<u64>,
    /// Bytes of index records kept in memory.
    pub index_cache_size: u64,
    pub upstream_idle_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_client_connections: usize,
    pub idle_timeout: Duration,
    pub stall_timeout: Duration,
    pub body_timeout: Duration,
    /// Zero disables scheduled garbage collection.
    pub gc_interval: Duration,
    pub gc_grace: Duration,
    /// HTTPS instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    pub htpasswd: Option<PathBuf>,
    /// Who may do what; [`Policy::open`] when no users, client CA or rules
    /// are configured.
    pub policy: Policy,
    pub token_ttl: Duration,
    /// The token signing key's file; `None` is `DATA/token.key`, generated
    /// on first start.
    pub token_key: Option<PathBuf>,
    /// Upload sessions and unfinished upload bytes one client may hold.
    pub max_upload_sessions: usize,
    pub max_upload_bytes: u64,
    /// The same, for all clients together.
    pub max_upload_sessions_total: usize,
    pub max_upload_bytes_total: u64,
    /// Bounds of one upstream tag-list walk: tags collected, bytes read.
    pub max_upstream_tags: usize,
    pub max_upstream_tag_bytes: u64,
    pub log_format: LogFormat,
    /// Where durable state lives.
    pub storage: Storage,
    /// Lists of images the server pulls through itself on a schedule.
    pub prefetch: Vec<PrefetchList>,
}

/// One `[[prefetch]]` table: images kept warm (and their tags fresh),
/// pulled through the server's own mirror every `every`.
#[derive(Debug, Clone)]
pub struct PrefetchList {
    pub images: Vec<crate::oci::image_ref::ImageRef>,
    pub every: Duration,
    /// Platforms of an index to fetch; empty: all.
    pub platforms: Vec<crate::oci::image_ref::Platform>,
    pub referrers: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key} {value:?}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{0}")]
    Conflict(String),
}

impl Config {
    /// Merges flags/environment over the config file over the defaults.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen (--listen, WHARF_LISTEN)",
            value: listen.clone(),
            allowed: "expected IP:PORT, e.g. 0.0.0.0:5000 or 127.0.0.1:0",
        })?;
        let data = args
            .data
            .clone()
            .or(file.data)
            .unwrap_or_else(|| DEFAULT_DATA.into());
        if data.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data (--data, WHARF_DATA)",
                value: String::new(),
                allowed: "expected a directory path",
            });
        }
        let timeout = args
            .upload_timeout
            .clone()
            .or(file.upload_timeout)
            .unwrap_or_else(|| DEFAULT_UPLOAD_TIMEOUT.into());
        let upload_timeout = parse_duration(&timeout).ok_or(ConfigError::Invalid {
            key: "upload_timeout (--upload-timeout, WHARF_UPLOAD_TIMEOUT)",
            value: timeout.clone(),
            allowed: "expected a duration of at least 1s, e.g. 90s, 30m, 2h",
        })?;

        let ttl = args
            .tag_ttl
            .clone()
            .or(file.tag_ttl)
            .unwrap_or_else(|| DEFAULT_TAG_TTL.into());
        let tag_ttl = parse_ttl(&ttl, "tag_ttl (--tag-ttl, WHARF_TAG_TTL)")?;
        let reserve = match args.ratelimit_reserve.clone().or(file.ratelimit_reserve) {
            Some(v) => parse_reserve(
                &v,
                "ratelimit_reserve (--ratelimit-reserve, WHARF_RATELIMIT_RESERVE)",
            )?,
            None => RatelimitReserve::default(),
        };

        let local_namespaces = if !args.local_namespace.is_empty() {
            args.local_namespace.clone()
        } else {
            file.local_namespaces.unwrap_or_else(|| {
                DEFAULT_LOCAL_NAMESPACES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
        };
        for ns in &local_namespaces {
            if RepoName::parse(ns).map_or(true, |n| n.as_str().contains('/')) {
                return Err(ConfigError::Invalid {
                    key: "local_namespaces (--local-namespace, WHARF_LOCAL_NAMESPACE)",
                    value: ns.clone(),
                    allowed: "expected one repository name component, e.g. golden",
                });
            }
        }

        let mut upstreams = vec![UpstreamConfig {
            name: DOCKER_HUB.into(),
            url: url::Url::parse(DOCKER_HUB_URL)
                .map_err(|_| ConfigError::Conflict("built-in Docker Hub URL".into()))?,
            alias: None,
            username: None,
            password: None,
            tag_ttl,
            ratelimit_reserve: reserve,
            ca_file: None,
            // DOCKER_HUB_TOKEN_REALM, added below for Docker Hub's URL.
            token_realms: Vec::new(),
            redirect_hosts: Vec::new(),
        }];
        for u in file.upstreams {
            let password = match (u.password, u.password_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Conflict(format!(
                        "upstream {}: set password or password_file, not both",
                        u.name
                    )))
                }
                (Some(p), None) => Some(Secret(p)),
                (None, Some(path)) => Some(Secret(
                    std::fs::read_to_string(&path)
                        .map_err(|source| ConfigError::Read { path, source })?
                        .trim()
                        .to_string(),
                )),
                (None, None) => None,
            };
            let ttl = match &u.tag_ttl {
                Some(t) => parse_ttl(t, "upstreams.tag_ttl")?,
                None => tag_ttl,
            };
            let mut up = upstream(&u.name, &u.url, "upstreams (config file)")?;
            up.alias = u.alias;
            up.username = u.username;
            up.password = password;
            up.tag_ttl = ttl;
            up.ratelimit_reserve = match &u.ratelimit_reserve {
                Some(v) => parse_reserve(v, "upstreams.ratelimit_reserve")?,
                None => reserve,
            };
            up.ca_file = u.ca_file;
            up.token_realms = host_patterns(u.token_realms, "upstreams.token_realms")?;
            up.redirect_hosts = host_patterns(u.redirect_hosts, "upstreams.redirect_hosts")?;
            // A file entry replaces the built-in one of the same name whole.
            if let Some(existing) = upstreams.iter_mut().find(|x| x.name == up.name) {
                *existing = up;
            } else {
                upstreams.push(up);
            }
        }
        for spec in &args.upstream {
            let (name, url) = spec.split_once('=').ok_or_else(|| ConfigError::Invalid {
                key: "upstream (--upstream, WHARF_UPSTREAM)",
                value: spec.clone(),
                allowed: "expected NAME=URL, e.g. ghcr.io=https://ghcr.io",
            })?;
            let mut up = upstream(name, url, "upstream (--upstream, WHARF_UPSTREAM)")?;
            up.tag_ttl = tag_ttl;
            up.ratelimit_reserve = reserve;
            match upstreams.iter_mut().find(|x| x.name == up.name) {
                Some(existing) => existing.url = up.url,
                None => upstreams.push(up),
            }
        }
        for u in &mut upstreams {
            trust_docker_hub_realm(u);
        }
        for u in &upstreams {
            if let Some(a) = &u.alias {
                if RepoName::parse(a).map_or(true, |n| n.as_str().contains('/')) {
                    return Err(ConfigError::Invalid {
                        key: "upstreams.alias",
                        value: a.clone(),
                        allowed: "expected one repository name component, e.g. hub",
                    });
                }
                if local_namespaces.contains(a) {
                    return Err(ConfigError::Conflict(format!(
                        "alias {a:?} of upstream {} is also a local namespace",
                        u.name
                    )));
                }
            }
        }
        let default_upstream = args
            .default_upstream
            .clone()
            .or(file.default_upstream)
            .unwrap_or_else(|| DOCKER_HUB.into());
        if !upstreams.iter().any(|u| u.name == default_upstream) {
            return Err(ConfigError::Conflict(format!(
                "default_upstream (--default-upstream, WHARF_DEFAULT_UPSTREAM) {default_upstream:?} is not a configured upstream"
            )));
        }
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
            args.tls_client_ca.clone().or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => None,
            (None, None, Some(_)) => {
                return Err(ConfigError::Conflict(
                    "tls_client_ca (--tls-client-ca) needs tls_cert and tls_key: client certificates come with HTTPS".into(),
                ))
            }
            _ => {
                return Err(ConfigError::Conflict(
                    "set both tls_cert (--tls-cert) and tls_key (--tls-key), or neither".into(),
                ))
            }
        };
        let htpasswd = args.htpasswd.clone().or(file.htpasswd);
        let anonymous_pull = match &args.anonymous_pull {
            Some(v) => parse_bool(v).ok_or(ConfigError::Invalid {
                key: "anonymous_pull (--anonymous-pull, WHARF_ANONYMOUS_PULL)",
                value: v.clone(),
                allowed: "expected true or false",
            })?,
            None => file.anonymous_pull.unwrap_or(true),
        };
        let mut rules = Vec::new();
        for a in &file.access {
            let principals = |list: &[String]| -> Result<Vec<Principal>, ConfigError> {
                list.iter()
                    .map(|p| {
                        Principal::parse(p).map_err(|e| {
                            ConfigError::Conflict(format!(
                                "[[access]] repositories = {:?}: {e}",
                                a.repositories
                            ))
                        })
                    })
                    .collect()
            };
            rules.push(
                Rule::new(
                    &a.repositories,
                    principals(&a.pull)?,
                    principals(&a.push)?,
                    principals(&a.delete)?,
                )
                .map_err(|e| ConfigError::Conflict(e.to_string()))?,
            );
        }
        let client_ca = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let policy = if htpasswd.is_none() && !client_ca && rules.is_empty() {
            if !anonymous_pull {
                return Err(ConfigError::Conflict(
                    "anonymous_pull = false (--anonymous-pull) needs --htpasswd or --tls-client-ca: someone must be able to log in".into(),
                ));
            }
            if !file.admins.is_empty() {
                return Err(ConfigError::Conflict(
                    "admins needs --htpasswd or --tls-client-ca: admins must be able to log in (with access control off, anyone may run maintenance)".into(),
                ));
            }
            Policy::open()
        } else {
            let admins = file
                .admins
                .iter()
                .map(|p| {
                    Principal::parse(p).map_err(|e| ConfigError::Conflict(format!("admins: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Policy::new(rules, file.groups, anonymous_pull, &local_namespaces)
                .and_then(|p| p.with_admins(admins))
                .map_err(|e| ConfigError::Conflict(e.to_string()))?
        };
        let max_upload_sessions = whole_number(
            args.max_upload_sessions
                .clone()
                .or(file.max_upload_sessions),
            &DEFAULT_MAX_UPLOAD_SESSIONS.to_string(),
            "max_upload_sessions (--max-upload-sessions, WHARF_MAX_UPLOAD_SESSIONS)",
        )?;
        let max_upload_bytes = size(
            args.max_upload_bytes.clone().or(file.max_upload_bytes),
            DEFAULT_MAX_UPLOAD_BYTES,
            "max_upload_bytes (--max-upload-bytes, WHARF_MAX_UPLOAD_BYTES)",
        )?;
        let max_upload_sessions_total = whole_number(
            args.max_upload_sessions_total
                .clone()
                .or(file.max_upload_sessions_total),
            "1024",
            "max_upload_sessions_total (--max-upload-sessions-total, WHARF_MAX_UPLOAD_SESSIONS_TOTAL)",
        )?;
        let max_upload_bytes_total = size(
            args.max_upload_bytes_total
                .clone()
                .or(file.max_upload_bytes_total),
            "128GiB",
            "max_upload_bytes_total (--max-upload-bytes-total, WHARF_MAX_UPLOAD_BYTES_TOTAL)",
        )?;
        let max_upstream_tags = whole_number(
            args.max_upstream_tags.clone().or(file.max_upstream_tags),
            &DEFAULT_MAX_UPSTREAM_TAGS.to_string(),
            "max_upstream_tags (--max-upstream-tags, WHARF_MAX_UPSTREAM_TAGS)",
        )?;
        let max_upstream_tag_bytes = size(
            args.max_upstream_tag_bytes
                .clone()
                .or(file.max_upstream_tag_bytes),
            DEFAULT_MAX_UPSTREAM_TAG_BYTES,
            "max_upstream_tag_bytes (--max-upstream-tag-bytes, WHARF_MAX_UPSTREAM_TAG_BYTES)",
        )?;
        let storage = storage::resolve(
            &args.storage,
            storage::FileStorage {
                storage: file.storage,
                s3_endpoint: file.s3_endpoint,
                s3_bucket: file.s3_bucket,
                s3_region: file.s3_region,
                s3_prefix: file.s3_prefix,
                s3_path_style: file.s3_path_style,
                local_cache_size: file.local_cache_size,
                s3_access_key_id: file.s3_access_key_id,
                s3_secret_access_key_file: file.s3_secret_access_key_file,
            },
            |k| std::env::var(k).ok(),
        )?;
        let log_format = match args
            .log_format
            .clone()
            .or(file.log_format)
            .as_deref()
            .map(str::trim)
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format (--log-format, WHARF_LOG_FORMAT)",
                    value: other.to_string(),
                    allowed: "expected text or json",
                })
            }
        };
        let token_ttl = positive(
            args.token_ttl.clone().or(file.token_ttl),
            DEFAULT_TOKEN_TTL,
            "token_ttl (--token-ttl, WHARF_TOKEN_TTL)",
        )?;
        let prefetch = prefetch_lists(&file.prefetch, &upstreams)?;
        Ok(Config {
            prefetch,
            tls,
            htpasswd,
            policy,
            token_ttl,
            token_key: args.token_key.clone().or(file.token_key),
            max_upload_sessions,
            max_upload_bytes,
            max_upload_sessions_total,
            max_upload_bytes_total,
            max_upstream_tags,
            max_upstream_tag_bytes,
            log_format,
            storage,
            listen,
            data,
            upload_timeout,
            upstreams,
            default_upstream,
            local_namespaces,
            offline: args.offline || file.offline.unwrap_or(false),
            max_cache_size: match args.max_cache_size.clone().or(file.max_cache_size) {
                None => None,
                Some(v) => Some(parse_size(&v).ok_or(ConfigError::Invalid {
                    key: "max_cache_size (--max-cache-size, WHARF_MAX_CACHE_SIZE)",
                    value: v.clone(),
                    allowed: "expected a size of at least 1MiB, e.g. 800MB, 50GiB, 2TB",
                })?),
            },
            index_cache_size: {
                let v = args.index_cache_size.clone().or(file.index_cache_size);
                match v {
                    None => DEFAULT_INDEX_CACHE,
                    Some(v) => parse_size(&v).ok_or(ConfigError::Invalid {
                        key: "index_cache_size (--index-cache-size, WHARF_INDEX_CACHE_SIZE)",
                        value: v.clone(),
                        allowed: "expected a size of at least 1MiB, e.g. 16MiB, 256MB",
                    })?,
                }
            },
            upstream_idle_timeout: positive(
                args.upstream_idle_timeout
                    .clone()
                    .or(file.upstream_idle_timeout),
                "30s",
                "upstream_idle_timeout (--upstream-idle-timeout, WHARF_UPSTREAM_IDLE_TIMEOUT)",
            )?,
            header_timeout: positive(
                args.header_timeout.clone().or(file.header_timeout),
                "30s",
                "header_timeout (--header-timeout, WHARF_HEADER_TIMEOUT)",
            )?,
            max_connections: whole_number(
                args.max_connections.clone().or(file.max_connections),
                "10000",
                "max_connections (--max-connections, WHARF_MAX_CONNECTIONS)",
            )?,
            max_client_connections: whole_number(
                args.max_client_connections
                    .clone()
                    .or(file.max_client_connections),
                "256",
                "max_client_connections (--max-client-connections, WHARF_MAX_CLIENT_CONNECTIONS)",
            )?,
            idle_timeout: positive(
                args.idle_timeout.clone().or(file.idle_timeout),
                "60s",
                "idle_timeout (--idle-timeout, WHARF_IDLE_TIMEOUT)",
            )?,
            stall_timeout: positive(
                args.stall_timeout.clone().or(file.stall_timeout),
                "120s",
                "stall_timeout (--stall-timeout, WHARF_STALL_TIMEOUT)",
            )?,
            body_timeout: positive(
                args.body_timeout.clone().or(file.body_timeout),
                "30s",
                "body_timeout (--body-timeout, WHARF_BODY_TIMEOUT)",
            )?,
            gc_interval: parse_ttl(
                &args
                    .gc_interval
                    .clone()
                    .or(file.gc_interval)
                    .unwrap_or_else(|| "1h".into()),
                "gc_interval (--gc-interval, WHARF_GC_INTERVAL)",
            )?,
            gc_grace: parse_ttl(
                &args
                    .gc_grace
                    .clone()
                    .or(file.gc_grace)
                    .unwrap_or_else(|| "1h".into()),
                "gc_grace (--gc-grace, WHARF_GC_GRACE)",
            )?,
        })
    }

    /// The upstream called `name`, if configured.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// Validates one upstream's NAME and URL.
fn upstream(name: &str, url: &str, key: &'static str) -> Result<UpstreamConfig, ConfigError> {
    let name = name.trim().to_ascii_lowercase();
    let valid_name = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b':')
        });
    if !valid_name {
        return Err(ConfigError::Invalid {
            key,
            value: name,
            allowed: "NAME must be a registry host such as ghcr.io or registry.example.com:5000",
        });
    }
    let parsed = url::Url::parse(url.trim()).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    });
    let Some(mut parsed) = parsed else {
        return Err(ConfigError::Invalid {
            key,
            value: redact_url(url),
            allowed:
                "URL must be http:// or https:// with a host, no query and no credentials (those go in username/password_file), e.g. https://ghcr.io",
        });
    };
    let path = parsed.path().trim_end_matches('/').to_string();
    parsed.set_path(&path);
    Ok(UpstreamConfig {
        name,
        url: parsed,
        alias: None,
        username: None,
        password: None,
        tag_ttl: Duration::from_secs(300),
        ratelimit_reserve: RatelimitReserve::default(),
        ca_file: None,
        token_realms: Vec::new(),
        redirect_hosts: Vec::new(),
    })
}

/// Validates `token_realms` or `redirect_hosts` entries (`host` or
/// `host:port`).
fn host_patterns(
    entries: Option<Vec<String>>,
    key: &'static str,
) -> Result<Vec<HostPattern>, ConfigError> {
    entries
        .unwrap_or_default()
        .iter()
        .map(|e| {
            HostPattern::parse(e).ok_or_else(|| ConfigError::Invalid {
                key,
                value: e.clone(),
                allowed: "expected a host or host:port, e.g. auth.example.com or cdn.example.com:8443 (no scheme, no path)",
            })
        })
        .collect()
}

/// Docker Hub hands out every token from `auth.docker.io`: an upstream at
/// Docker Hub's URL trusts that realm on top of its own `token_realms`.
/// (Pointing `docker.io` at another URL, e.g. an in-house proxy, drops it.)
fn trust_docker_hub_realm(u: &mut UpstreamConfig) {
    let hub = [DOCKER_HUB_URL, "https://index.docker.io"]
        .iter()
        .filter_map(|h| url::Url::parse(h).ok())
        .any(|h| h.origin() == u.url.origin());
    if hub {
        if let Some(p) = HostPattern::parse(DOCKER_HUB_TOKEN_REALM) {
            if !u.token_realms.contains(&p) {
                u.token_realms.push(p);
            }
        }
    }
}

/// A duration setting that must be at least one second.
/// A size of at least 1 MiB, or `default`.
fn size(v: Option<String>, default: &str, key: &'static str) -> Result<u64, ConfigError> {
    let v = v.unwrap_or_else(|| default.into());
    parse_size(&v).ok_or(ConfigError::Invalid {
        key,
        value: v.clone(),
        allowed: "expected a size of at least 1MiB, e.g. 800MB, 32GiB",
    })
}

/// A whole number of at least 1, or `default`.
fn whole_number(v: Option<String>, default: &str, key: &'static str) -> Result<usize, ConfigError> {
    let v = v.unwrap_or_else(|| default.into());
    v.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(ConfigError::Invalid {
            key,
            value: v.clone(),
            allowed: "expected a whole number of at least 1",
        })
}

fn positive(v: Option<String>, default: &str, key: &'static str) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or_else(|| default.to_string());
    parse_duration(&v).ok_or(ConfigError::Invalid {
        key,
        value: v.clone(),
        allowed: "expected a duration of at least 1s, e.g. 10s, 2m",
    })
}

/// Parses `50GiB`, `800MB`, `1.5TiB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return None,
    };
    let bytes = (num * mult).round();
    (1024.0 * 1024.0..1.8e19)
        .contains(&bytes)
        .then_some(bytes as u64)
}

/// A URL as it may appear in a message: any password replaced.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn parse_ttl(s: &str, key: &'static str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim()).map_err(|_| ConfigError::Invalid {
        key,
        value: s.to_string(),
        allowed: "expected a duration, e.g. 0s, 30s, 5m, 1h",
    })
}

fn parse_reserve(s: &str, key: &'static str) -> Result<RatelimitReserve, ConfigError> {
    RatelimitReserve::parse(s).ok_or_else(|| ConfigError::Invalid {
        key,
        value: s.to_string(),
        allowed: "expected a share of the limit from 0% to 100%, e.g. 10%, or a number of pulls, e.g. 20",
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|d| *d >= Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data, PathBuf::from(DEFAULT_DATA));
        assert_eq!(c.upload_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50GiB"), Some(50 << 30));
        assert_eq!(parse_size("800MB"), Some(800_000_000));
        assert_eq!(parse_size("2 TB"), Some(2_000_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("16777216"), Some(16 << 20));
        assert_eq!(parse_size("10"), None, "below 1 MiB");
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5XB"), None);
    }

    #[test]
    fn the_index_cache_size_is_a_size_with_a_small_default() {
        let load = |v: Option<&str>| {
            Config::load(&ServeArgs {
                index_cache_size: v.map(str::to_string),
                ..Default::default()
            })
        };
        assert_eq!(load(None).unwrap().index_cache_size, DEFAULT_INDEX_CACHE);
        assert_eq!(load(Some("64MiB")).unwrap().index_cache_size, 64 << 20);
        assert!(load(Some("lots")).is_err());
        assert!(load(Some("1KiB")).is_err(), "under 1 MiB");
    }

    #[test]
    fn the_ratelimit_reserve_is_a_share_or_a_count_per_upstream() {
        assert_eq!(
            RatelimitReserve::parse("10%"),
            Some(RatelimitReserve::Percent(10))
        );
        assert_eq!(
            RatelimitReserve::parse(" 0 % "),
            Some(RatelimitReserve::Percent(0))
        );
        assert_eq!(
            RatelimitReserve::parse("20"),
            Some(RatelimitReserve::Pulls(20))
        );
        for bad in ["101%", "-1", "ten", "%", "1.5%"] {
            assert_eq!(RatelimitReserve::parse(bad), None, "{bad}");
        }
        assert_eq!(RatelimitReserve::Percent(10).of(Some(100)), Some(10));
        assert_eq!(
            RatelimitReserve::Percent(10).of(Some(5)),
            Some(1),
            "rounded up"
        );
        assert_eq!(RatelimitReserve::Percent(10).of(None), None);
        assert_eq!(RatelimitReserve::Pulls(3).of(None), Some(3));
        assert_eq!(
            RatelimitReserve::Percent(100).of(Some(u64::MAX)),
            Some(u64::MAX)
        );

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        std::fs::write(
            &f,
            "ratelimit_reserve = 25\n\
             [[upstreams]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\nratelimit_reserve = \"50%\"\n\
             [[upstreams]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n",
        )
        .unwrap();
        let load = |flag: Option<&str>| {
            Config::load(&ServeArgs {
                config: Some(f.clone()),
                ratelimit_reserve: flag.map(str::to_string),
                ..Default::default()
            })
        };
        let c = load(None).unwrap();
        let reserve = |c: &Config, u: &str| c.upstream(u).unwrap().ratelimit_reserve;
        assert_eq!(reserve(&c, "docker.io"), RatelimitReserve::Pulls(25));
        assert_eq!(reserve(&c, "ghcr.io"), RatelimitReserve::Percent(50));
        assert_eq!(reserve(&c, "quay.io"), RatelimitReserve::Pulls(25));
        let c = load(Some("5%")).unwrap();
        assert_eq!(
            reserve(&c, "docker.io"),
            RatelimitReserve::Percent(5),
            "the flag wins"
        );
        assert_eq!(reserve(&c, "ghcr.io"), RatelimitReserve::Percent(50));
        assert!(load(Some("lots")).is_err());
        assert_eq!(
            reserve(&Config::load(&ServeArgs::default()).unwrap(), "docker.io"),
            RatelimitReserve::Percent(10)
        );
    }

    #[test]
    fn prefetch_lists_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        let load = |text: &str| {
            std::fs::write(&f, text).unwrap();
            Config::load(&ServeArgs {
                config: Some(f.clone()),
                ..Default::default()
            })
        };
        let c = load(
            "[[upstreams]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\n[[prefetch]]\nimages = [\"alpine:3.20\", \"ghcr.io/org/app:1\"]\nevery = \"6h\"\nplatforms = [\"linux/arm64/v8\"]\nreferrers = true\n",
        )
        .unwrap();
        assert_eq!(c.prefetch.len(), 1);
        assert_eq!(c.prefetch[0].images[1].name, "ghcr.io/org/app");
        assert_eq!(c.prefetch[0].every, Duration::from_secs(6 * 3600));
        assert!(c.prefetch[0].referrers);
        for (bad, says) in [
            (
                "[[prefetch]]\nimages = []\nevery = \"6h\"\n",
                "images is empty",
            ),
            (
                "[[prefetch]]\nimages = [\"a\"]\nevery = \"10s\"\n",
                "at least 1m",
            ),
            (
                "[[prefetch]]\nimages = [\"A:1\"]\nevery = \"1h\"\n",
                "not an image reference",
            ),
            (
                "[[prefetch]]\nimages = [\"a\"]\nevery = \"1h\"\nplatforms = [\"x\"]\n",
                "--platform",
            ),
            ("[[prefetch]]\nimages = [\"a\"]\n", "every"),
            (
                "[[prefetch]]\nimages = [\"quay.io/org/app:1\"]\nevery = \"1h\"\n",
                "quay.io is not a configured upstream",
            ),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        std::fs::write(&f, include_str!("../../deploy/wharf.toml")).unwrap();
        let c = Config::load(&ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.data, PathBuf::from("/var/lib/wharf"));
        assert_eq!(c.local_namespaces, ["local", "golden", "charts"]);
        assert_eq!(c.max_cache_size, Some(200 << 30));
        assert_eq!(c.max_connections, 10000);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.upstream("ghcr.io").unwrap().alias.as_deref(), Some("gh"));
        assert_eq!(
            c.upstream("registry.k8s.io").unwrap().tag_ttl,
            Duration::from_secs(3600)
        );
        assert_eq!(
            c.upstream("ghcr.io").unwrap().ratelimit_reserve,
            RatelimitReserve::Percent(10)
        );
        assert_eq!(
            c.upstream("docker.io").unwrap().url.host_str(),
            Some("registry-1.docker.io")
        );
    }

    #[test]
    fn the_s3_deploy_example_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s3-secret");
        std::fs::write(&secret, "example-secret\n").unwrap();
        let f = dir.path().join("wharf.toml");
        let text = include_str!("../../deploy/s3/wharf.toml")
            .replace("/etc/wharf/s3-secret", &secret.display().to_string());
        std::fs::write(&f, text).unwrap();
        let c = Config::load(&ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap();
        let Storage::S3(s3) = &c.storage else {
            panic!("expected s3 storage");
        };
        assert_eq!(s3.bucket, "wharf");
        assert_eq!(s3.region, "garage");
        assert_eq!(s3.prefix, "wharf/");
        assert!(s3.path_style);
        assert_eq!(s3.local_cache_size, 50 << 30);
        assert_eq!(
            s3.endpoint.as_ref().map(|u| u.as_str()),
            Some("http://garage.internal:3900/")
        );
        if std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none() {
            assert_eq!(s3.secret_access_key.expose(), "example-secret");
        }
        assert_eq!(c.max_cache_size, Some(2 << 40));
    }

    #[test]
    fn the_tls_deploy_example_is_valid() {
        use crate::auth::policy::{decide, Action, Decision, Identity, Op, Place};
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("wharf.toml");
        std::fs::write(&f, include_str!("../../deploy/tls/wharf.toml")).unwrap();
        let c = Config::load(&ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/wharf/tls/wharf.crt"));
        assert!(tls.client_ca.is_none());
        assert_eq!(c.htpasswd, Some(PathBuf::from("/etc/wharf/htpasswd")));
        assert_eq!(c.token_ttl, Duration::from_secs(300));
        assert_eq!(c.max_upload_sessions, 64);
        assert_eq!(c.max_upload_bytes, 32 << 30);
        assert!(!c.policy.is_open());
        assert_eq!(c.policy.rules().len(), 3);
        let op = |name, action| Op::Repo {
            name,
            full: None,
            place: Place::Local,
            action,
        };
        let builder = Identity::User("builder2".into());
        assert_eq!(
            decide(&c.policy, &builder, &op("charts/web", Action::Push)),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &c.policy,
                &Identity::Anonymous,
                &op("charts/web", Action::Pull)
            ),
            Decision::Deny
        );
    }

    #[test]
    fn access_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        let load = |text: &str, args: ServeArgs| {
            std::fs::write(&f, text).unwrap();
            Config::load(&ServeArgs {
                config: Some(f.clone()),
                ..args
            })
        };
        let e = load("tls_cert = \"/x.crt\"\n", ServeArgs::default()).unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
        let e = load("tls_client_ca = \"/ca.crt\"\n", ServeArgs::default()).unwrap_err();
        assert!(e.to_string().contains("tls_cert"), "{e}");
        let e = load("anonymous_pull = false\n", ServeArgs::default()).unwrap_err();
        assert!(e.to_string().contains("htpasswd"), "{e}");
        let e = load(
            "[[access]]\nrepositories = \"x/*\"\npull = [\"group:nope\"]\n",
            ServeArgs::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("group:nope"), "{e}");
        let e = load(
            "[[access]]\nrepositories = \"x/*\"\npul = [\"alice\"]\n",
            ServeArgs::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("pul"), "{e}");
        let e = load(
            "",
            ServeArgs {
                anonymous_pull: Some("maybe".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("anonymous_pull"), "{e}");
        // Open by default; any user file or rule turns access control on.
        assert!(load("", ServeArgs::default()).unwrap().policy.is_open());
        let c = load(
            "",
            ServeArgs {
                htpasswd: Some("/etc/wharf/htpasswd".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!c.policy.is_open());
        // Secrets never print.
        let c = load(
            "[[upstreams]]\nname = \"x.io\"\nurl = \"https://x.io\"\nusername = \"u\"\npassword = \"hunter2\"\n",
            ServeArgs::default(),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn upstream_trust_and_tag_list_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        let load = |text: &str| {
            std::fs::write(&f, text).unwrap();
            Config::load(&ServeArgs {
                config: Some(f.clone()),
                ..Default::default()
            })
        };
        let names = |v: &[HostPattern]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        // Docker Hub trusts its realm built in; nothing else trusts anything.
        let c = load("").unwrap();
        let hub = c.upstream("docker.io").unwrap();
        assert_eq!(names(&hub.token_realms), ["auth.docker.io"]);
        assert!(hub.redirect_hosts.is_empty());
        assert_eq!(c.max_upstream_tags, 100_000);
        assert_eq!(c.max_upstream_tag_bytes, 16 << 20);
        // A docker.io table's list adds to auth.docker.io; it cannot drop it.
        let c = load(
            "[[upstreams]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ntoken_realms = [\"Auth.Example.com:8443\"]\nredirect_hosts = [\"cdn.corp\", \"10.0.0.9:9000\"]\n",
        )
        .unwrap();
        let hub = c.upstream("docker.io").unwrap();
        assert_eq!(
            names(&hub.token_realms),
            ["auth.example.com:8443", "auth.docker.io"]
        );
        assert_eq!(names(&hub.redirect_hosts), ["cdn.corp", "10.0.0.9:9000"]);
        // docker.io at another URL (an in-house proxy) does not trust it.
        let c = load("[[upstreams]]\nname = \"docker.io\"\nurl = \"https://hub-proxy.corp\"\n")
            .unwrap();
        assert!(c.upstream("docker.io").unwrap().token_realms.is_empty());
        for (text, key) in [
            (
                "[[upstreams]]\nname = \"x.io\"\nurl = \"https://x.io\"\ntoken_realms = [\"https://auth.x.io/token\"]\n",
                "upstreams.token_realms",
            ),
            (
                "[[upstreams]]\nname = \"x.io\"\nurl = \"https://x.io\"\nredirect_hosts = [\"cdn.x.io:99999\"]\n",
                "upstreams.redirect_hosts",
            ),
            ("max_upstream_tags = 0\n", "max_upstream_tags"),
            ("max_upstream_tag_bytes = \"10\"\n", "max_upstream_tag_bytes"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let c = load("max_upstream_tags = 5000\nmax_upstream_tag_bytes = \"2MiB\"\n").unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(
            load("log_format = \"json\"\n").unwrap().log_format,
            LogFormat::Json
        );
        let e = load("log_format = \"xml\"\n").unwrap_err().to_string();
        assert!(e.contains("log_format"), "{e}");
        assert_eq!(
            (c.max_upstream_tags, c.max_upstream_tag_bytes),
            (5000, 2 << 20)
        );
    }

    #[test]
    fn connection_and_upload_limits() {
        let c = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(
            (c.idle_timeout, c.stall_timeout, c.body_timeout),
            (
                Duration::from_secs(60),
                Duration::from_secs(120),
                Duration::from_secs(30)
            )
        );
        assert_eq!(c.max_client_connections, 256);
        assert_eq!(c.max_upload_sessions_total, 1024);
        assert_eq!(c.max_upload_bytes_total, 128 << 30);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        std::fs::write(
            &f,
            "max_client_connections = 8\nidle_timeout = \"5s\"\nmax_upload_sessions_total = 9\nmax_upload_bytes_total = \"2GiB\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(f),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.max_client_connections, 8);
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.max_upload_sessions_total, 9);
        assert_eq!(c.max_upload_bytes_total, 2 << 30);
        args.max_client_connections = Some("0".into());
        args.stall_timeout = Some("0s".into());
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.contains("max_client_connections"), "{e}");
        args.max_client_connections = None;
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.contains("stall_timeout"), "{e}");
    }

    #[test]
    fn flags_override_file_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:7000\"\nupload_timeout = \"5m\"\n").unwrap();
        let mut args = ServeArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.upload_timeout, Duration::from_secs(300));
        args.listen = Some("127.0.0.1:7001".into());
        assert_eq!(Config::load(&args).unwrap().listen.port(), 7001);

        let mut bad = args.clone();
        bad.upstream = vec!["x.io=https://user:secret@x.io".into()];
        let e = Config::load(&bad).unwrap_err().to_string();
        assert!(e.contains("no credentials") && !e.contains("secret"), "{e}");

        args.upload_timeout = Some("soon".into());
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.contains("upload_timeout") && e.contains("soon"), "{e}");

        std::fs::write(&f, "lissen = \"x\"\n").unwrap();
        let e = Config::load(&ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("lissen"), "{e}");
    }
}
