//! `wharf prefetch`: pulls images through a running Wharf, as a client
//! would, so that its single-flight fills, verification and accounting
//! cache them: each reference's manifest, every platform of an index (or
//! those asked for), each image's config and layers, and with `referrers`
//! what refers to them (signatures, SBOMs). References are what a user
//! types (`alpine:3.20`, `ghcr.io/org/app:1.2`, `name@sha256:...`). Bytes
//! are counted as fetched from upstream or already cached by the answer's
//! `Cache-Status`; progress shows as bars on a terminal, as log lines
//! otherwise.

use crate::body::Body;
use crate::client::{read_bounded, ServerClient};
use crate::oci::image_ref::{ImageRef, Platform};
use crate::oci::manifest::{self, MANIFEST_TYPES, MAX_MANIFEST_BYTES};
use crate::oci::Digest;
use futures_util::StreamExt;
use http::Response;
use http_body_util::BodyExt;
use std::collections::HashSet;

/// Blobs of one manifest fetched at once.
const BLOBS_AT_ONCE: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Platforms of an index to fetch; empty: all of them.
    pub platforms: Vec<Platform>,
    /// Also what refers to each manifest (the referrers API).
    pub referrers: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub images: usize,
    pub manifests: usize,
    pub blobs: usize,
    /// Bytes the server fetched from upstreams for these answers.
    pub fetched: u64,
    /// Bytes it had cached already.
    pub cached: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.images += o.images;
        self.manifests += o.manifests;
        self.blobs += o.blobs;
        self.fetched += o.fetched;
        self.cached += o.cached;
    }

    fn count(&mut self, bytes: u64, hit: bool) {
        if hit {
            self.cached += bytes;
        } else {
            self.fetched += bytes;
        }
    }
}

/// Whether an answer came from the cache (`Cache-Status: wharf; hit`).
fn was_cached(h: &http::HeaderMap) -> bool {
    h.get("cache-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').any(|p| p.trim() == "hit"))
}

/// A bar drawn from `template` (the default bar should it not parse).
fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar of bytes: `prefix`, the bar, bytes done of all, the message.
pub(crate) fn bytes_style() -> indicatif::ProgressStyle {
    style("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg}")
}

/// Progress on a terminal (bars), or lines on standard error, or (in the
/// server) log lines.
pub struct Progress {
    bars: Option<indicatif::MultiProgress>,
    overall: Option<indicatif::ProgressBar>,
    log: bool,
}

impl Progress {
    /// A line in the log per image (the server's scheduled lists).
    pub fn logged() -> Progress {
        Progress {
            bars: None,
            overall: None,
            log: true,
        }
    }

    /// Bars when standard error is a terminal, for `images` images,
    /// the overall one named `what` (prefetch, export).
    pub fn new(what: &str, images: usize) -> Progress {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress {
                bars: None,
                overall: None,
                log: false,
            };
        }
        let bars = indicatif::MultiProgress::new();
        let overall = bars.add(indicatif::ProgressBar::new(images as u64));
        overall.set_style(style("{prefix:>12} [{bar:30}] {pos}/{len} images, {msg}"));
        overall.set_prefix(what.to_string());
        Progress {
            bars: Some(bars),
            overall: Some(overall),
            log: false,
        }
    }

    /// A bar of bytes for image `name` (hidden without a terminal).
    pub(crate) fn image(&self, name: &str) -> indicatif::ProgressBar {
        let Some(bars) = &self.bars else {
            return indicatif::ProgressBar::hidden();
        };
        let bar = bars.insert_from_back(1, indicatif::ProgressBar::new(0));
        bar.set_style(bytes_style());
        bar.set_prefix("image");
        bar.set_message(name.to_string());
        bar
    }

    fn done(&self, r: &ImageRef, result: &Result<Totals, String>, sum: &Totals) {
        match (&self.overall, result) {
            (Some(o), _) => {
                o.inc(1);
                o.set_message(format!(
                    "{} fetched, {} cached",
                    indicatif::HumanBytes(sum.fetched),
                    indicatif::HumanBytes(sum.cached)
                ));
            }
            (None, Ok(t)) if self.log => tracing::info!(
                image = %r.text,
                manifests = t.manifests,
                blobs = t.blobs,
                fetched_bytes = t.fetched,
                cached_bytes = t.cached,
                "prefetched"
            ),
            (None, Err(e)) if self.log => {
                tracing::warn!(image = %r.text, error = %e, "prefetch failed")
            }
            (None, Ok(t)) => eprintln!(
                "prefetched {}: {} manifests, {} blobs, {} fetched, {} already cached",
                r.text,
                t.manifests,
                t.blobs,
                indicatif::HumanBytes(t.fetched),
                indicatif::HumanBytes(t.cached)
            ),
            (None, Err(e)) => eprintln!("failed {}: {e}", r.text),
        }
    }

    /// One more image done: the overall bar moves and says `message`;
    /// without a terminal, `line` goes to standard error.
    pub(crate) fn step(&self, line: &str, message: String) {
        match &self.overall {
            Some(o) => {
                o.inc(1);
                o.set_message(message);
            }
            None if self.log => tracing::info!("{line}"),
            None => eprintln!("{line}"),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish();
        }
    }
}

/// Where prefetch gets content: a running Wharf over HTTP, or the
/// server's own mirror (its scheduled `[[prefetch]]` lists).
pub trait Source: Sync {
    /// `GET /v2/<name>/<what>` (`manifests/REF`, `blobs/DIGEST`,
    /// `referrers/DIGEST`) accepting `accept`: a 2xx answer, or what went
    /// wrong.
    fn get(
        &self,
        name: &str,
        what: &str,
        accept: &[&str],
    ) -> impl std::future::Future<Output = Result<Response<Body>, Failed>> + Send;
}

/// Why a GET did not work.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The answer was a 404 (for referrers: no referrers API upstream).
    pub not_found: bool,
    pub message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Source for ServerClient {
    async fn get(&self, name: &str, what: &str, accept: &[&str]) -> Result<Response<Body>, Failed> {
        let resp = ServerClient::get(self, &format!("/v2/{name}/{what}"), accept)
            .await
            .map_err(|e| Failed {
                not_found: e.status == Some(http::StatusCode::NOT_FOUND),
                message: e.message,
            })?;
        Ok(resp.map(|b| b.map_err(std::io::Error::other).boxed_unsync()))
    }
}

/// Prefetches `refs` one after another; the totals and the failures
/// (reference, why).
pub async fn run(
    client: &impl Source,
    refs: &[ImageRef],
    opts: &Options,
    progress: &Progress,
) -> (Totals, Vec<(String, String)>) {
    let mut sum = Totals::default();
    let mut failures = Vec::new();
    for r in refs {
        let bar = progress.image(&r.text);
        let result = image(client, r, opts, &bar).await;
        bar.finish_and_clear();
        match &result {
            Ok(t) => sum.add(t),
            Err(e) => {
                let hint = match r.host() {
                    Some(h) if e.contains("unknown") || e.contains("404") => {
                        format!("{e} (if {h} is a registry, is it an upstream of this Wharf?)")
                    }
                    _ => e.clone(),
                };
                failures.push((r.text.clone(), hint));
            }
        }
        progress.done(r, &result, &sum);
    }
    progress.finish();
    (sum, failures)
}

/// The lines printed at the end of a run of `wanted` references.
pub fn summary(t: &Totals, wanted: usize, failures: &[(String, String)]) -> Vec<String> {
    let mut lines = vec![format!(
        "prefetched {} of {wanted} images ({} manifests, {} blobs): {} fetched from upstreams, {} already cached",
        t.images,
        t.manifests,
        t.blobs,
        indicatif::HumanBytes(t.fetched),
        indicatif::HumanBytes(t.cached)
    )];
    for (r, why) in failures {
        lines.push(format!("failed: {r}: {why}"));
    }
    lines
}

/// One reference: its manifests and blobs.
async fn image(
    client: &impl Source,
    r: &ImageRef,
    opts: &Options,
    bar: &indicatif::ProgressBar,
) -> Result<Totals, String> {
    let mut t = Totals {
        images: 1,
        ..Totals::default()
    };
    let mut queue = vec![r.reference.clone()];
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(reference) = queue.pop() {
        let Manifest {
            bytes,
            media_type,
            digest,
            hit,
        } = fetch_manifest(client, &r.name, &reference).await?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        t.manifests += 1;
        t.count(bytes.len() as u64, hit);
        let plan = plan(&bytes, media_type.as_deref(), &opts.platforms)
            .map_err(|e| format!("manifest {reference}: {e}"))?;
        queue.extend(plan.children);
        let sizes: u64 = plan.blobs.iter().map(|(_, n)| n).sum();
        let blobs: Vec<Digest> = plan.blobs.into_iter().map(|(d, _)| d).collect();
        bar.inc_length(sizes);
        // The futures made by an iterator (not a stream's map over a
        // closure taking references), so the whole walk stays Send.
        let name = r.name.as_str();
        let fetched: Vec<Result<(u64, bool), String>> =
            futures_util::stream::iter(blobs.into_iter().map(|d| blob(client, name, d, bar)))
                .buffer_unordered(BLOBS_AT_ONCE)
                .collect()
                .await;
        for f in fetched {
            let (n, hit) = f?;
            t.blobs += 1;
            t.count(n, hit);
        }
        if opts.referrers {
            queue.extend(referrers(client, &r.name, &digest).await?);
        }
    }
    Ok(t)
}

/// A manifest as the server sent it.
pub struct Manifest {
    pub bytes: bytes::Bytes,
    pub media_type: Option<String>,
    /// Its sha256 digest (checked against `reference` when that is one).
    pub digest: String,
    /// Whether the server had it cached.
    pub hit: bool,
}

/// GETs manifest `reference` (a tag or digest) of `name`.
pub async fn fetch_manifest(
    client: &impl Source,
    name: &str,
    reference: &str,
) -> Result<Manifest, String> {
    let resp = client
        .get(name, &format!("manifests/{reference}"), &MANIFEST_TYPES)
        .await
        .map_err(|e| format!("manifest {reference}: {e}"))?;
    let hit = was_cached(resp.headers());
    let media_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| manifest::bare_media_type(v).to_string());
    let bytes = read_bounded(resp, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| format!("manifest {reference}: {e}"))?;
    let digest = match reference.parse::<Digest>() {
        Ok(d) => {
            let got = Digest::of(d.algorithm(), &bytes);
            if got != d {
                return Err(format!(
                    "manifest {reference}: the server sent content whose digest is {got}"
                ));
            }
            d.to_string()
        }
        Err(_) => Digest::of(crate::oci::Algorithm::Sha256, &bytes).to_string(),
    };
    Ok(Manifest {
        bytes,
        media_type,
        digest,
        hit,
    })
}

/// What a manifest leads to: the child manifests to fetch (an index's, of
/// the `platforms` asked for, all when none are) and an image's blobs
/// with their sizes, foreign layers left out (Windows base layers are not
/// the registry's to serve; clients skip them too).
pub struct Plan {
    pub children: Vec<String>,
    pub blobs: Vec<(Digest, u64)>,
}

pub fn plan(
    bytes: &[u8],
    media_type: Option<&str>,
    platforms: &[Platform],
) -> Result<Plan, String> {
    let parsed = manifest::parse(bytes, media_type).map_err(|e| e.to_string())?;
    let raw: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let mut children = Vec::new();
    for c in raw["manifests"].as_array().into_iter().flatten() {
        let wanted = platforms.is_empty() || platforms.iter().any(|p| p.matches(&c["platform"]));
        if let (true, Some(d)) = (wanted, c["digest"].as_str()) {
            children.push(d.to_string());
        }
    }
    let descriptors: Vec<&serde_json::Value> = raw["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&raw["config"]))
        .collect();
    let foreign = |d: &Digest| {
        descriptors.iter().any(|l| {
            l["digest"].as_str() == Some(d.to_string().as_str())
                && (l["urls"].is_array()
                    || l["mediaType"]
                        .as_str()
                        .is_some_and(|m| m.contains("foreign")))
        })
    };
    let size = |d: &Digest| {
        descriptors
            .iter()
            .find(|l| l["digest"].as_str() == Some(d.to_string().as_str()))
            .and_then(|l| l["size"].as_u64())
            .unwrap_or(0)
    };
    let blobs = parsed
        .blobs
        .iter()
        .filter(|d| !foreign(d))
        .map(|d| (d.clone(), size(d)))
        .collect();
    Ok(Plan { children, blobs })
}

/// The digests of what refers to manifest `digest` of `name`.
pub async fn referrers(
    client: &impl Source,
    name: &str,
    digest: &str,
) -> Result<Vec<String>, String> {
    // No referrers API upstream (a 404): no referrers.
    let resp = match client
        .get(name, &format!("referrers/{digest}"), &[manifest::OCI_INDEX])
        .await
    {
        Ok(r) => r,
        Err(e) if e.not_found => return Ok(Vec::new()),
        Err(e) => return Err(format!("referrers of {digest}: {e}")),
    };
    let body = read_bounded(resp, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| format!("referrers of {digest}: {e}"))?;
    let index: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("referrers of {digest}: not JSON: {e}"))?;
    Ok(index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["digest"].as_str())
        .filter(|d| d.parse::<Digest>().is_ok())
        .map(str::to_string)
        .collect())
}

/// Fetches one blob, its bytes read and dropped as they come; its size
/// and whether it was cached.
async fn blob(
    client: &impl Source,
    name: &str,
    d: Digest,
    bar: &indicatif::ProgressBar,
) -> Result<(u64, bool), String> {
    let resp = client
        .get(name, &format!("blobs/{d}"), &[])
        .await
        .map_err(|e| format!("blob {d}: {e}"))?;
    let hit = was_cached(resp.headers());
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("blob {d}: {e}"))?;
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
            bar.inc(data.len() as u64);
        }
    }
    Ok((n, hit))
}
