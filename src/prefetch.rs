//! `wharf prefetch`: pulls images through a running Wharf, as a client
//! would, so that its single-flight fills, verification and accounting
//! cache them: each reference's manifest, every platform of an index (or
//! those asked for), each image's config and layers, and with `referrers`
//! what refers to them (signatures, SBOMs). References are what a user
//! types (`alpine:3.20`, `ghcr.io/org/app:1.2`, `name@sha256:...`). Bytes
//! are counted as fetched from upstream or already cached by the answer's
//! `Cache-Status`; progress shows as bars on a terminal, as log lines
//! otherwise.

use crate::client::{read_bounded, ServerClient};
use crate::oci::manifest::{self, MANIFEST_TYPES, MAX_MANIFEST_BYTES};
use crate::oci::Digest;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use std::collections::HashSet;

/// Blobs of one manifest fetched at once.
const BLOBS_AT_ONCE: usize = 4;

/// A reference as a user types it, and where Wharf serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// What the user typed.
    pub text: String,
    /// The repository's name in Wharf's `/v2/` paths.
    pub name: String,
    /// A tag, or a digest.
    pub reference: String,
}

/// Docker Hub's names for itself.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

impl ImageRef {
    /// `alpine`, `alpine:3.20`, `ghcr.io/org/app:1.2`,
    /// `registry.example.com:5000/team/app@sha256:...`.
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let t = text.trim();
        let bad = |why: &str| format!("{t:?} is not an image reference: {why}");
        let (rest, digest) = match t.split_once('@') {
            Some((r, d)) => {
                d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?;
                (r, Some(d))
            }
            None => (t, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                && !tag.starts_with(['.', '-']);
            if !ok {
                return Err(bad("a tag is up to 128 letters, digits, '_', '.' and '-'"));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let host = parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
        if host && !is_host(parts[0]) {
            return Err(bad(
                "the registry host is not a host name with an optional :port",
            ));
        }
        let repo_parts = if host { &parts[1..] } else { &parts[..] };
        let repo = repo_parts.join("/");
        crate::oci::RepoName::parse(&repo).map_err(|e| bad(&e.to_string()))?;
        if host && DOCKER_HUB.contains(&parts[0]) {
            parts[0] = "docker.io";
            if parts.len() == 2 {
                parts.insert(1, "library");
            }
        }
        Ok(ImageRef {
            text: t.to_string(),
            name: parts.join("/"),
            reference: digest.or(tag).unwrap_or("latest").to_string(),
        })
    }

    /// The registry host named in the reference, if any.
    fn host(&self) -> Option<&str> {
        let first = self.name.split('/').next()?;
        (self.name.contains('/') && (first.contains(['.', ':']) || first == "localhost"))
            .then_some(first)
    }
}

/// `registry.example.com`, `localhost:5000`: labels of letters, digits
/// and inner `-`, dot-separated, and a numeric port.
fn is_host(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.split('.').all(label)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// References from a list file: one per line; blank lines and `#`
/// comments are skipped.
pub fn read_list(text: &str) -> Result<Vec<ImageRef>, String> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| ImageRef::parse(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "--platform {s:?}: expected os/arch or os/arch/variant, e.g. linux/amd64, linux/arm64/v8"
            )),
        }
    }

    /// Whether an index entry's `platform` object is this one (a variant
    /// asked for must match; none asked for matches any).
    fn matches(&self, p: &serde_json::Value) -> bool {
        p["os"].as_str() == Some(self.os.as_str())
            && p["architecture"].as_str() == Some(self.arch.as_str())
            && self
                .variant
                .as_deref()
                .is_none_or(|v| p["variant"].as_str() == Some(v))
    }
}

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

/// Progress on a terminal (bars), or log lines.
pub struct Progress {
    bars: Option<indicatif::MultiProgress>,
    overall: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Bars when standard error is a terminal, for `images` images.
    pub fn new(images: usize) -> Progress {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress {
                bars: None,
                overall: None,
            };
        }
        let bars = indicatif::MultiProgress::new();
        let overall = bars.add(indicatif::ProgressBar::new(images as u64));
        overall.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} images, {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("prefetch");
        Progress {
            bars: Some(bars),
            overall: Some(overall),
        }
    }

    fn image(&self, name: &str) -> indicatif::ProgressBar {
        let Some(bars) = &self.bars else {
            return indicatif::ProgressBar::hidden();
        };
        let bar = bars.insert_from_back(1, indicatif::ProgressBar::new(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
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

    fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish();
        }
    }
}

/// Prefetches `refs` one after another; the totals and the failures
/// (reference, why).
pub async fn run(
    client: &ServerClient,
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
    client: &ServerClient,
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
        let path = format!("/v2/{}/manifests/{reference}", r.name);
        let resp = client
            .get(&path, &MANIFEST_TYPES)
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
        let digest = Digest::of(crate::oci::Algorithm::Sha256, &bytes).to_string();
        if reference.contains(':') && reference.parse::<Digest>().is_ok() && reference != digest {
            return Err(format!(
                "manifest {reference}: the server sent content whose digest is {digest}"
            ));
        }
        if !seen.insert(digest.clone()) {
            continue;
        }
        t.manifests += 1;
        t.count(bytes.len() as u64, hit);
        let parsed = manifest::parse(&bytes, media_type.as_deref())
            .map_err(|e| format!("manifest {reference}: {e}"))?;
        let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(children) = raw["manifests"].as_array() {
            for c in children {
                let wanted = opts.platforms.is_empty()
                    || opts.platforms.iter().any(|p| p.matches(&c["platform"]));
                if let (true, Some(d)) = (wanted, c["digest"].as_str()) {
                    queue.push(d.to_string());
                }
            }
        }
        // Foreign layers (Windows base layers) are not the registry's to
        // serve: skipped, as clients skip them.
        let foreign: HashSet<&str> = raw["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| {
                l["urls"].is_array()
                    || l["mediaType"]
                        .as_str()
                        .is_some_and(|m| m.contains("foreign"))
            })
            .filter_map(|l| l["digest"].as_str())
            .collect();
        let blobs: Vec<&Digest> = parsed
            .blobs
            .iter()
            .filter(|d| !foreign.contains(d.to_string().as_str()))
            .collect();
        let sizes: u64 = raw["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&raw["config"]))
            .filter_map(|d| d["size"].as_u64())
            .sum();
        bar.inc_length(sizes);
        let fetched: Vec<Result<(u64, bool), String>> = futures_util::stream::iter(blobs)
            .map(|d| blob(client, &r.name, d, bar))
            .buffer_unordered(BLOBS_AT_ONCE)
            .collect()
            .await;
        for f in fetched {
            let (n, hit) = f?;
            t.blobs += 1;
            t.count(n, hit);
        }
        if opts.referrers {
            let path = format!("/v2/{}/referrers/{digest}", r.name);
            let resp = client
                .get(&path, &[manifest::OCI_INDEX])
                .await
                .map_err(|e| format!("referrers of {digest}: {e}"))?;
            let body = read_bounded(resp, MAX_MANIFEST_BYTES)
                .await
                .map_err(|e| format!("referrers of {digest}: {e}"))?;
            let index: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| format!("referrers of {digest}: not JSON: {e}"))?;
            for m in index["manifests"].as_array().into_iter().flatten() {
                if let Some(d) = m["digest"].as_str() {
                    queue.push(d.to_string());
                }
            }
        }
    }
    Ok(t)
}

/// Fetches one blob, its bytes read and dropped as they come; its size
/// and whether it was cached.
async fn blob(
    client: &ServerClient,
    name: &str,
    d: &Digest,
    bar: &indicatif::ProgressBar,
) -> Result<(u64, bool), String> {
    let resp = client
        .get(&format!("/v2/{name}/blobs/{d}"), &[])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> (String, String) {
        let r = ImageRef::parse(text).unwrap();
        (r.name, r.reference)
    }

    #[test]
    fn references_as_users_type_them() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(r("alpine"), s("alpine", "latest"));
        assert_eq!(r("alpine:3.20"), s("alpine", "3.20"));
        assert_eq!(r("library/alpine:3.20"), s("library/alpine", "3.20"));
        assert_eq!(r("docker.io/alpine:3"), s("docker.io/library/alpine", "3"));
        assert_eq!(
            r("index.docker.io/bitnami/redis"),
            s("docker.io/bitnami/redis", "latest")
        );
        assert_eq!(r("ghcr.io/org/app:1.2"), s("ghcr.io/org/app", "1.2"));
        assert_eq!(
            r("localhost:5000/team/app"),
            s("localhost:5000/team/app", "latest")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(r(&format!("nginx@{d}")), s("nginx", &d));
        assert_eq!(
            r(&format!("nginx:1.27@{d}")),
            s("nginx", &d),
            "the digest wins"
        );
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:short",
            "ghcr.io/",
            "a//b",
            "alpine:3.20:x",
            "../etc",
            "-x.io/app",
            "reg.io:http/app",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ImageRef::parse("ghcr.io/org/app").unwrap().host(),
            Some("ghcr.io")
        );
        assert_eq!(ImageRef::parse("team/app").unwrap().host(), None);
    }

    #[test]
    fn lists_skip_comments_and_name_bad_lines() {
        let refs = read_list("# bases\nalpine:3.20\n\n  ghcr.io/org/app:1 # pinned\n").unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].name, "ghcr.io/org/app");
        let e = read_list("alpine\nnot a ref\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert!(p.matches(&j(
            r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#
        )));
        assert!(!p.matches(&j(r#"{"os":"linux","architecture":"arm64"}"#)));
        let p = Platform::parse("linux/amd64").unwrap();
        assert!(p.matches(&j(
            r#"{"os":"linux","architecture":"amd64","variant":"v3"}"#
        )));
        assert!(!p.matches(&j(r#"{"os":"windows","architecture":"amd64"}"#)));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
