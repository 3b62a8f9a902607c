//! The process's metrics and `GET /metrics`: one registry (a process-wide
//! static, so the server, the mirror, the upstream clients and the store
//! count without handles passed around) holding every metric Wharf
//! exports, the handles the hot paths count with (made once, for every
//! fixed label value, so a request builds no label set or string), the
//! cheap classification of a request path into the kind of route it is
//! (never a repository name: label values stay bounded), the parsing of
//! upstream rate-limit headers, and the encoding in the Prometheus text
//! format (version 0.0.4) by `prometheus-client`. What every request
//! counts is sharded by thread (each thread adds in a cache line of its
//! own, summed when scraped), so two cores serving requests never pass a
//! counter's line back and forth. What is cheaper to read
//! when scraped than to count as it happens (store bytes, upload sessions,
//! fills in flight, the server's connection counters) is read then.

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

/// The `Content-Type` of the `/metrics` answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the request duration buckets: 100 µs to 10 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Statuses whose request counters are kept in slots, so most requests
/// count without a map lookup (the rest go through the family's map).
const SLOT_STATUSES: [u16; 8] = [200, 201, 202, 206, 304, 307, 401, 404];
const METHODS: usize = 10;

/// Shards of a hot metric.
const SHARDS: usize = 8;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The shard this thread counts in.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

fn shard() -> usize {
    SHARD.with(|s| *s)
}

/// A counter in a cache line of its own.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Line(AtomicU64);

/// A counter sharded by thread: what every request counts.
#[derive(Clone, Debug, Default)]
pub struct HotCounter(Arc<[Line; SHARDS]>);

impl HotCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        if let Some(line) = self.0.get(shard()) {
            line.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|l| l.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for HotCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for HotCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's share of a [`Durations`] histogram: a count per bucket
/// (the last is +Inf) and the sum in nanoseconds.
#[repr(align(128))]
#[derive(Debug, Default)]
struct DurationShard {
    counts: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram of durations over [`DURATION_BUCKETS`], sharded by thread
/// like [`HotCounter`] (prometheus-client's takes a lock per observation).
#[derive(Clone, Debug, Default)]
pub struct Durations(Arc<[DurationShard; SHARDS]>);

impl Durations {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(s) = self.0.get(shard()) {
            if let Some(c) = s.counts.get(bucket) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            s.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        let mut sum_nanos: u64 = 0;
        for s in self.0.iter() {
            for (b, c) in buckets.iter_mut().zip(&s.counts) {
                b.1 = b.1.wrapping_add(c.load(Ordering::Relaxed));
            }
            sum_nanos = sum_nanos.wrapping_add(s.sum_nanos.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).fold(0, u64::wrapping_add);
        encoder.encode_histogram::<NoLabelSet>(sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every metric, registered once.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Writes a fixed label value.
fn label(encoder: &mut LabelValueEncoder, value: &str) -> Result<(), std::fmt::Error> {
    encoder.write_str(value)
}

/// The kind of route a request path names: the `route` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Base,
    Manifest,
    Blob,
    Upload,
    Tags,
    Catalog,
    Referrers,
    Token,
    Health,
    Metrics,
    Ui,
    Api,
    Other,
}

impl Route {
    pub const ALL: [Route; 13] = [
        Route::Base,
        Route::Manifest,
        Route::Blob,
        Route::Upload,
        Route::Tags,
        Route::Catalog,
        Route::Referrers,
        Route::Token,
        Route::Health,
        Route::Metrics,
        Route::Ui,
        Route::Api,
        Route::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::Upload => "upload",
            Route::Tags => "tags",
            Route::Catalog => "catalog",
            Route::Referrers => "referrers",
            Route::Token => "token",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Ui => "ui",
            Route::Api => "api",
            Route::Other => "other",
        }
    }

    /// The kind of route `path` (without the query) names. Cheap: no
    /// allocation, no validation. Distribution routes are matched from the
    /// right-hand end as [`crate::oci::ApiRoute::parse`] does (a name may
    /// hold `manifests` or `blobs`), so the kind is the one the request is
    /// routed as whenever it routes at all.
    pub fn of(path: &str) -> Route {
        match path {
            "/v2" | "/v2/" => return Route::Base,
            "/v2/_catalog" => return Route::Catalog,
            crate::auth::TOKEN_PATH => return Route::Token,
            "/healthz" | "/readyz" => return Route::Health,
            "/metrics" => return Route::Metrics,
            "/" | "/cache" | "/login" => return Route::Ui,
            "/api" => return Route::Api,
            _ => {}
        }
        if path.starts_with("/r/") {
            return Route::Ui;
        }
        if path.starts_with("/api/") {
            return Route::Api;
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::Other;
        };
        if rest.ends_with("/tags/list") {
            return Route::Tags;
        }
        if rest.ends_with("/blobs/uploads/") || rest.ends_with("/blobs/uploads") {
            return Route::Upload;
        }
        let Some((head, _)) = rest.rsplit_once('/') else {
            return Route::Other;
        };
        if head.ends_with("/blobs/uploads") {
            return Route::Upload;
        }
        match head.rsplit_once('/').map(|(_, kind)| kind) {
            Some("manifests") => Route::Manifest,
            Some("blobs") => Route::Blob,
            Some("referrers") => Route::Referrers,
            _ => Route::Other,
        }
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        label(encoder, self.as_str())
    }
}

/// A request method as a label: the standard ones, or `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Connect,
    Trace,
    Other,
}

impl MethodLabel {
    pub fn of(m: &Method) -> MethodLabel {
        match *m {
            Method::GET => MethodLabel::Get,
            Method::HEAD => MethodLabel::Head,
            Method::POST => MethodLabel::Post,
            Method::PUT => MethodLabel::Put,
            Method::PATCH => MethodLabel::Patch,
            Method::DELETE => MethodLabel::Delete,
            Method::OPTIONS => MethodLabel::Options,
            Method::CONNECT => MethodLabel::Connect,
            Method::TRACE => MethodLabel::Trace,
            _ => MethodLabel::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Head => "HEAD",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Options => "OPTIONS",
            MethodLabel::Connect => "CONNECT",
            MethodLabel::Trace => "TRACE",
            MethodLabel::Other => "other",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        label(encoder, self.as_str())
    }
}

/// What a request for mirrored content found in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache.
    Hit,
    /// Not cached: asked of the upstream (whatever it answered).
    Miss,
    /// The last known content, served because the upstream could not
    /// answer (or Wharf runs offline).
    Stale,
}

/// The kinds of mirrored content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Blob,
}

/// Where the bytes sent to a client of mirrored content came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file in the cache (or a manifest held in memory).
    Cache,
    /// A fill in progress: the bytes were arriving from the upstream.
    Upstream,
}

/// Whether an upstream answered, and with what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    Status(u16),
    /// No answer: the connection failed or timed out.
    Error,
}

impl EncodeLabelValue for Answer {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Answer::Status(s) => EncodeLabelValue::encode(s, encoder),
            Answer::Error => label(encoder, "error"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: MethodLabel,
    route: Route,
    status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamRequestLabels {
    upstream: Arc<str>,
    method: MethodLabel,
    status: Answer,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoredLabels {
    source: &'static str,
    content_type: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

/// The registry and the handles everything counts with.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, HotCounter>,
    /// The counters of `http_requests` for the common statuses, made on
    /// first use (so only series that happened are exported), indexed by
    /// method, route and the status's place in [`SLOT_STATUSES`].
    http_slots: Vec<OnceLock<HotCounter>>,
    /// One histogram per route kind, indexed by `Route as usize`.
    durations: Vec<Durations>,
    /// `[kind][result]`: manifest/blob × hit/miss/stale.
    cache: [[HotCounter; 3]; 2],
    upstream_requests: Family<UpstreamRequestLabels, Counter>,
    upstream_bytes: Family<UpstreamLabels, Counter>,
    served: [HotCounter; 2],
    ratelimit_remaining: Family<UpstreamLabels, Gauge>,
    ratelimit_limit: Family<UpstreamLabels, Gauge>,
    budget_state: Family<UpstreamLabels, Gauge>,
    budget_saved: Family<UpstreamLabels, Counter>,
    fills_in_flight: Gauge,
    mirrored_bytes: Gauge,
    mirrored_items: Gauge,
    upload_sessions: Gauge,
    evictions: Counter,
    evicted_bytes: Counter,
    eviction_rounds: Durations,
    gc_removed_bytes: Counter,
    /// `[source][content type]`: local/mirror × image/helm/volume/other.
    manifests_stored: [[Counter; 4]; 2],
    health: std::sync::Mutex<Vec<(Arc<str>, SharedHealth)>>,
}

/// The values read when `/metrics` is scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    /// Bytes and items of mirrored content counted toward the cache limit.
    pub mirrored_bytes: u64,
    pub mirrored_items: u64,
    pub fills_in_flight: u64,
    pub upload_sessions: u64,
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let http_requests = Family::<HttpLabels, HotCounter>::default();
        r.register(
            "wharf_http_requests",
            "HTTP requests answered, by method, kind of route and status",
            http_requests.clone(),
        );
        let duration_family = Family::<RouteLabels, Durations>::default();
        r.register(
            "wharf_http_request_duration_seconds",
            "Time from a request's arrival to its response head being ready (body streaming not included), by kind of route",
            duration_family.clone(),
        );
        let durations = Route::ALL
            .iter()
            .map(|&route| duration_family.get_or_create_owned(&RouteLabels { route }))
            .collect();
        let cache_family = Family::<CacheLabels, HotCounter>::default();
        r.register(
            "wharf_cache_requests",
            "Requests for mirrored content by what the cache had: hit, miss (asked upstream), stale (last known content served because the upstream could not answer)",
            cache_family.clone(),
        );
        let cache = ["manifest", "blob"].map(|kind| {
            ["hit", "miss", "stale"]
                .map(|result| cache_family.get_or_create_owned(&CacheLabels { kind, result }))
        });
        let upstream_requests = Family::<UpstreamRequestLabels, Counter>::default();
        r.register(
            "wharf_upstream_requests",
            "HTTP requests sent to upstream registries (each redirect hop and auth challenge counted), by upstream, method and status (error: no answer)",
            upstream_requests.clone(),
        );
        let upstream_bytes = Family::<UpstreamLabels, Counter>::default();
        r.register(
            "wharf_upstream_bytes",
            "Body bytes of manifests and blobs received from upstream registries",
            upstream_bytes.clone(),
        );
        let served_family = Family::<SourceLabels, HotCounter>::default();
        r.register(
            "wharf_served_bytes",
            "Bytes of mirrored content sent to clients: from the cache, or streamed from a fill in progress (upstream)",
            served_family.clone(),
        );
        let served = ["cache", "upstream"]
            .map(|source| served_family.get_or_create_owned(&SourceLabels { source }));
        let ratelimit_remaining = Family::<UpstreamLabels, Gauge>::default();
        r.register(
            "wharf_upstream_ratelimit_remaining",
            "The last ratelimit-remaining an upstream sent (absent until it sends one)",
            ratelimit_remaining.clone(),
        );
        let ratelimit_limit = Family::<UpstreamLabels, Gauge>::default();
        r.register(
            "wharf_upstream_ratelimit_limit",
            "The last ratelimit-limit an upstream sent (absent until it sends one)",
            ratelimit_limit.clone(),
        );
        let budget_state = Family::<UpstreamLabels, Gauge>::default();
        r.register(
            "wharf_upstream_pull_budget_state",
            "What an upstream's rate-limit headers allow: 0 spend freely, 1 in the reserve (tags served at their last known digest), 2 spent (manifest GETs answered 429 without asking)",
            budget_state.clone(),
        );
        let budget_saved = Family::<UpstreamLabels, Counter>::default();
        r.register(
            "wharf_upstream_pull_budget_saved",
            "Upstream manifest requests not sent to save the pull budget: tags served at their last known digest, and GETs refused while it is spent",
            budget_saved.clone(),
        );
        let fills_in_flight = Gauge::default();
        r.register(
            "wharf_fills_in_flight",
            "Blob cache fills running now",
            fills_in_flight.clone(),
        );
        let store_bytes = Family::<ClassLabels, Gauge>::default();
        r.register(
            "wharf_store_bytes",
            "Bytes on disk by class (mirrored: mirrored content counted toward --max-cache-size; content also linked locally is left out)",
            store_bytes.clone(),
        );
        let store_items = Family::<ClassLabels, Gauge>::default();
        r.register(
            "wharf_store_items",
            "Blobs and manifests on disk by class (as wharf_store_bytes)",
            store_items.clone(),
        );
        let mirrored = ClassLabels { class: "mirrored" };
        let mirrored_bytes = store_bytes.get_or_create_owned(&mirrored);
        let mirrored_items = store_items.get_or_create_owned(&mirrored);
        let evictions = Counter::default();
        r.register(
            "wharf_evictions",
            "Mirrored blobs and manifests evicted past --max-cache-size",
            evictions.clone(),
        );
        let evicted_bytes = Counter::default();
        r.register(
            "wharf_evicted_bytes",
            "Bytes of mirrored content evicted past --max-cache-size",
            evicted_bytes.clone(),
        );
        let eviction_rounds = Durations::default();
        r.register(
            "wharf_eviction_round_seconds",
            "How long each eviction round took (reading the index, choosing and removing)",
            eviction_rounds.clone(),
        );
        let gc_removed_bytes = Counter::default();
        r.register(
            "wharf_gc_removed_bytes",
            "Bytes of unreferenced local blobs removed by garbage collection",
            gc_removed_bytes.clone(),
        );
        let stored_family = Family::<StoredLabels, Counter>::default();
        r.register(
            "wharf_manifests_stored",
            "Manifests stored, by source (pushed: local; cached: mirror) and content type (image, helm, volume, other)",
            stored_family.clone(),
        );
        let manifests_stored = ["local", "mirror"].map(|source| {
            ["image", "helm", "volume", "other"].map(|content_type| {
                stored_family.get_or_create_owned(&StoredLabels {
                    source,
                    content_type,
                })
            })
        });
        let upload_sessions = Gauge::default();
        r.register(
            "wharf_upload_sessions",
            "Upload sessions open now (one-request uploads included while they stream)",
            upload_sessions.clone(),
        );
        r.register_collector(Box::new(Connections));
        Metrics {
            registry: r,
            http_requests,
            http_slots: (0..METHODS * Route::ALL.len() * SLOT_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            durations,
            cache,
            upstream_requests,
            upstream_bytes,
            served,
            ratelimit_remaining,
            ratelimit_limit,
            budget_state,
            budget_saved,
            fills_in_flight,
            mirrored_bytes,
            mirrored_items,
            upload_sessions,
            evictions,
            evicted_bytes,
            eviction_rounds,
            gc_removed_bytes,
            manifests_stored,
            health: Default::default(),
        }
    }

    /// Counts one answered request.
    pub fn http(&self, method: &Method, route: Route, status: u16, elapsed: Duration) {
        let method = MethodLabel::of(method);
        let labels = || HttpLabels {
            method,
            route,
            status,
        };
        let slot = SLOT_STATUSES
            .iter()
            .position(|s| *s == status)
            .and_then(|i| {
                self.http_slots.get(
                    (method as usize * Route::ALL.len() + route as usize) * SLOT_STATUSES.len() + i,
                )
            });
        match slot {
            Some(slot) => {
                slot.get_or_init(|| self.http_requests.get_or_create_owned(&labels()))
                    .inc();
            }
            None => {
                self.http_requests.get_or_create(&labels()).inc();
            }
        }
        if let Some(h) = self.durations.get(route as usize) {
            h.observe(elapsed);
        }
    }

    /// Counts one request for mirrored content.
    pub fn cache(&self, kind: Kind, lookup: Lookup) {
        let k = match kind {
            Kind::Manifest => 0,
            Kind::Blob => 1,
        };
        let l = match lookup {
            Lookup::Hit => 0,
            Lookup::Miss => 1,
            Lookup::Stale => 2,
        };
        self.cache[k][l].inc();
    }

    pub fn evicted(&self, items: u64, bytes: u64) {
        self.evictions.inc_by(items);
        self.evicted_bytes.inc_by(bytes);
    }

    /// Times one eviction round.
    pub fn eviction_round(&self, took: Duration) {
        self.eviction_rounds.observe(took);
    }

    pub fn gc_removed(&self, bytes: u64) {
        self.gc_removed_bytes.inc_by(bytes);
    }

    /// Counts a manifest pushed (`mirrored` false) or cached, by its
    /// content type.
    pub fn manifest_stored(&self, mirrored: bool, kind: &crate::oci::content_type::ContentType) {
        use crate::oci::content_type::ContentType as C;
        let k = match kind {
            C::Image => 0,
            C::Helm => 1,
            C::Volume => 2,
            C::Other(_) => 3,
        };
        if let Some(c) = self.manifests_stored[usize::from(mirrored)].get(k) {
            c.inc();
        }
    }

    /// The handles one upstream counts with.
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let name: Arc<str> = Arc::from(name);
        let health = {
            let mut all = self.health.lock().unwrap_or_else(|p| p.into_inner());
            match all.iter().find(|(n, _)| *n == name) {
                Some((_, h)) => h.clone(),
                None => {
                    let h = Arc::new(std::sync::Mutex::new(UpstreamHealth::default()));
                    all.push((name.clone(), h.clone()));
                    h
                }
            }
        };
        UpstreamMetrics {
            bytes: self.upstream_bytes.get_or_create_owned(&UpstreamLabels {
                upstream: name.clone(),
            }),
            name,
            health,
        }
    }

    /// How upstream `name`'s exchanges went (default before any).
    pub fn upstream_health(&self, name: &str) -> UpstreamHealth {
        let all = self.health.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, h)| h.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The cache's counts since start, for the web UI's cache page.
    pub fn cache_totals(&self) -> CacheTotals {
        let sum = |i: usize| self.cache.iter().map(|k| k[i].get()).sum::<u64>();
        CacheTotals {
            hits: sum(0),
            misses: sum(1),
            stale: sum(2),
            served_from_cache: self.served[0].get(),
            served_from_upstream: self.served[1].get(),
        }
    }

    /// The registry in the Prometheus text format, with `snapshot`'s
    /// values.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.fills_in_flight
            .set(gauge_value(snapshot.fills_in_flight));
        self.mirrored_bytes
            .set(gauge_value(snapshot.mirrored_bytes));
        self.mirrored_items
            .set(gauge_value(snapshot.mirrored_items));
        self.upload_sessions
            .set(gauge_value(snapshot.upload_sessions));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug
        // in a label value, and the output so far is still served.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// What one upstream counts with: its byte counter, and its name for the
/// labels made per request (a reference count, not a copy).
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    name: Arc<str>,
    bytes: Counter,
    health: SharedHealth,
}

type SharedHealth = Arc<std::sync::Mutex<UpstreamHealth>>;

/// How an upstream's last exchanges went, as the web UI shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpstreamHealth {
    /// Whether the last exchange got an answer; `None` before any.
    pub reachable: Option<bool>,
    /// The last failure (no answer, a 5xx or a 429) and when (unix
    /// seconds).
    pub last_error: Option<(u64, String)>,
    pub ratelimit_limit: Option<u64>,
    pub ratelimit_remaining: Option<u64>,
}

/// The cache's counts since start (both kinds together).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheTotals {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub served_from_cache: u64,
    pub served_from_upstream: u64,
}

impl UpstreamMetrics {
    /// Counts one HTTP exchange with the upstream.
    pub fn request(&self, method: &Method, answer: Answer) {
        {
            let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
            match answer {
                Answer::Status(s) => {
                    h.reachable = Some(true);
                    if s >= 500 || s == 429 {
                        h.last_error = Some((unix_secs(), format!("answered HTTP {s}")));
                    }
                }
                Answer::Error => h.reachable = Some(false),
            }
        }
        METRICS
            .upstream_requests
            .get_or_create(&UpstreamRequestLabels {
                upstream: self.name.clone(),
                method: MethodLabel::of(method),
                status: answer,
            })
            .inc();
    }

    /// Records why an exchange got no answer (a message naming no secret).
    pub fn failed(&self, why: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.reachable = Some(false);
        h.last_error = Some((unix_secs(), why.to_string()));
    }

    /// Counts manifest or blob body bytes received.
    pub fn received(&self, bytes: u64) {
        self.bytes.inc_by(bytes);
    }

    /// Sets the pull budget's state: 0 spend freely, 1 reserve, 2 spent.
    pub fn budget_state(&self, state: u8) {
        METRICS
            .budget_state
            .get_or_create(&UpstreamLabels {
                upstream: self.name.clone(),
            })
            .set(i64::from(state));
    }

    /// Counts one upstream manifest request not sent to save the budget.
    pub fn budget_saved(&self) {
        METRICS
            .budget_saved
            .get_or_create(&UpstreamLabels {
                upstream: self.name.clone(),
            })
            .inc();
    }

    /// Records the rate-limit headers of an answer, when it has them.
    pub fn rate_limits(&self, headers: &http::HeaderMap) {
        let read = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(ratelimit_value)
        };
        for (name, family) in [
            ("ratelimit-limit", &METRICS.ratelimit_limit),
            ("ratelimit-remaining", &METRICS.ratelimit_remaining),
        ] {
            if let Some(v) = read(name) {
                {
                    let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                    if name == "ratelimit-limit" {
                        h.ratelimit_limit = Some(v);
                    } else {
                        h.ratelimit_remaining = Some(v);
                    }
                }
                family
                    .get_or_create(&UpstreamLabels {
                        upstream: self.name.clone(),
                    })
                    .set(gauge_value(v));
            }
        }
    }
}

/// `body`, counting its bytes as served from `source` as they are sent (a
/// body never polled, such as a HEAD's, counts nothing).
pub fn counted(body: crate::body::Body, source: Source) -> crate::body::Body {
    use http_body_util::BodyExt;
    Counted {
        inner: body,
        counter: &METRICS.served[source as usize],
    }
    .boxed_unsync()
}

struct Counted {
    inner: crate::body::Body,
    counter: &'static HotCounter,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The number a `ratelimit-limit` or `ratelimit-remaining` header value
/// starts with: Docker Hub sends `100;w=21600` (100 pulls per 21600 s),
/// older drafts of the standard `100, 100;w=60`.
pub fn ratelimit_value(v: &str) -> Option<u64> {
    v.split([';', ',']).next()?.trim().parse().ok()
}

/// The server's connection counters ([`crate::server::STATS`]), read when
/// scraped.
#[derive(Debug)]
struct Connections;

impl Collector for Connections {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &crate::server::STATS;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Help texts end in a period, as the registry's own do.
        let counters: [(&str, &str, &AtomicU64); 4] = [
            (
                "wharf_connections_accept_errors",
                "Accepts that failed (out of file descriptors or memory); the server backs off.",
                &s.accept_errors,
            ),
            (
                "wharf_connections_refused",
                "Connections closed at once: their client address held --max-client-connections.",
                &s.over_client_limit,
            ),
            (
                "wharf_connections_shed",
                "Silent connections closed to make room for a new one when every slot was taken.",
                &s.shed,
            ),
            (
                "wharf_connections_busy",
                "Requests answered 503 because too many requests were in flight.",
                &s.busy,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(load(value));
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let mut family = encoder.encode_descriptor(
            "wharf_connections_closed",
            "Connections closed by the server's deadlines, by reason (no_request: none within --header-timeout; idle: --idle-timeout; stalled: --stall-timeout).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, value) in [
            ("no_request", &s.closed_no_request),
            ("idle", &s.closed_idle),
            ("stalled", &s.closed_stalled),
        ] {
            let labels = [("reason", reason)];
            ConstCounter::new(load(value)).encode(family.encode_family(&labels)?)?;
        }
        let open = ConstGauge::new(gauge_value(load(&s.open)));
        open.encode(encoder.encode_descriptor(
            "wharf_connections_open",
            "Client connections open now.",
            None,
            open.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_headers_give_their_first_number() {
        assert_eq!(ratelimit_value("100;w=21600"), Some(100));
        assert_eq!(ratelimit_value("76;w=21600"), Some(76));
        assert_eq!(ratelimit_value(" 42 "), Some(42));
        assert_eq!(ratelimit_value("10, 10;w=1, 50;w=60"), Some(10));
        assert_eq!(ratelimit_value("0;w=21600"), Some(0));
        assert_eq!(ratelimit_value(""), None);
        assert_eq!(ratelimit_value("-1;w=1"), None);
        assert_eq!(ratelimit_value("lots"), None);
    }

    #[test]
    fn sharded_metrics_sum_their_shards() {
        let c = HotCounter::default();
        let d = Durations::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        c.inc();
                    }
                    d.observe(Duration::from_micros(300));
                    d.observe(Duration::from_secs(20));
                });
            }
        });
        assert_eq!(c.get(), 400);
        let mut r = Registry::default();
        r.register("t", "Test.", d);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).unwrap();
        for line in [
            "t_bucket{le=\"0.00025\"} 0\n",
            "t_bucket{le=\"0.0005\"} 4\n",
            "t_bucket{le=\"10\"} 4\n",
            "t_bucket{le=\"+Inf\"} 8\n",
            "t_count 8\n",
            "t_sum 80.0012\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }

    #[test]
    fn paths_are_classified_by_kind_never_by_name() {
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        for (path, want) in [
            ("/v2/", Route::Base),
            ("/v2", Route::Base),
            ("/v2/_catalog", Route::Catalog),
            ("/v2/library/alpine/manifests/latest", Route::Manifest),
            (&format!("/v2/alpine/manifests/{d}"), Route::Manifest),
            ("/v2/manifests/manifests/manifests/v1", Route::Manifest),
            ("/v2/blobs/x/manifests/v1", Route::Manifest),
            (&format!("/v2/library/alpine/blobs/{d}"), Route::Blob),
            (&format!("/v2/manifests/app/blobs/{d}"), Route::Blob),
            ("/v2/golden/app/blobs/uploads/", Route::Upload),
            ("/v2/golden/app/blobs/uploads", Route::Upload),
            ("/v2/golden/app/blobs/uploads/0b1c-22", Route::Upload),
            ("/v2/golden/app/tags/list", Route::Tags),
            (&format!("/v2/golden/app/referrers/{d}"), Route::Referrers),
            ("/token", Route::Token),
            ("/healthz", Route::Health),
            ("/readyz", Route::Health),
            ("/metrics", Route::Metrics),
            ("/", Route::Ui),
            ("/r/golden/app:1.0", Route::Ui),
            ("/cache", Route::Ui),
            ("/login", Route::Ui),
            ("/ui/x", Route::Other),
            ("/api/v1/repositories", Route::Api),
            ("/v2/golden/app", Route::Other),
            ("/v2/golden/app/whatever/x", Route::Other),
            ("/favicon.ico", Route::Other),
            ("/metrics/", Route::Other),
            ("", Route::Other),
        ] {
            assert_eq!(Route::of(path), want, "{path}");
        }
        for r in Route::ALL {
            assert_eq!(Route::ALL[r as usize], r, "ALL is in declaration order");
        }
        assert_eq!(MethodLabel::Other as usize + 1, METHODS);
    }

    #[test]
    fn the_encoded_output_names_every_metric() {
        let m = &*METRICS;
        m.http(&Method::GET, Route::Manifest, 200, Duration::from_millis(1));
        m.http(
            &Method::from_bytes(b"BREW").unwrap(),
            Route::Other,
            405,
            Duration::ZERO,
        );
        m.cache(Kind::Blob, Lookup::Stale);
        let body = counted(crate::body::full("12345"), Source::Upstream);
        futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body))
            .unwrap()
            .unwrap();
        let up = m.upstream("unit.test");
        up.request(&Method::HEAD, Answer::Status(200));
        up.request(&Method::GET, Answer::Error);
        up.received(7);
        let text = m.render(&Snapshot {
            mirrored_bytes: 11,
            mirrored_items: 2,
            fills_in_flight: 1,
            upload_sessions: 3,
        });
        // Not seen yet: absent.
        assert!(
            !text.contains("wharf_upstream_ratelimit_remaining{upstream=\"unit.test\"}"),
            "{text}"
        );
        let mut h = http::HeaderMap::new();
        h.insert("ratelimit-limit", "100;w=21600".parse().unwrap());
        h.insert("ratelimit-remaining", "76;w=21600".parse().unwrap());
        up.rate_limits(&h);
        let text = m.render(&Snapshot::default());
        for line in [
            "wharf_http_requests_total{method=\"GET\",route=\"manifest\",status=\"200\"}",
            "wharf_http_requests_total{method=\"other\",route=\"other\",status=\"405\"}",
            "wharf_http_request_duration_seconds_bucket{route=\"manifest\",le=\"0.0025\"}",
            "wharf_http_request_duration_seconds_bucket{route=\"manifest\",le=\"+Inf\"}",
            "wharf_http_request_duration_seconds_count{route=\"blob\"}",
            "wharf_cache_requests_total{kind=\"blob\",result=\"stale\"}",
            "wharf_cache_requests_total{kind=\"manifest\",result=\"hit\"}",
            "wharf_upstream_requests_total{upstream=\"unit.test\",method=\"HEAD\",status=\"200\"} 1",
            "wharf_upstream_requests_total{upstream=\"unit.test\",method=\"GET\",status=\"error\"} 1",
            "wharf_upstream_bytes_total{upstream=\"unit.test\"} 7",
            "wharf_served_bytes_total{source=\"upstream\"}",
            "wharf_served_bytes_total{source=\"cache\"}",
            "wharf_upstream_ratelimit_remaining{upstream=\"unit.test\"} 76",
            "wharf_upstream_ratelimit_limit{upstream=\"unit.test\"} 100",
            "wharf_fills_in_flight 0",
            "wharf_store_bytes{class=\"mirrored\"} 0",
            "wharf_store_items{class=\"mirrored\"} 0",
            "wharf_evictions_total",
            "wharf_evicted_bytes_total",
            "wharf_gc_removed_bytes_total",
            "wharf_upload_sessions 0",
            "wharf_connections_accept_errors_total",
            "wharf_connections_refused_total",
            "wharf_connections_shed_total",
            "wharf_connections_busy_total",
            "wharf_connections_closed_total{reason=\"stalled\"}",
            "wharf_connections_open",
            "# TYPE wharf_http_requests_total counter",
            "# TYPE wharf_http_request_duration_seconds histogram",
            "# TYPE wharf_connections_open gauge",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
