//! The web UI's templates (maud): the page frame, the repository list,
//! a repository's tags, a tag, the cache page and the error page. They
//! take inventory values and return markup; maud escapes every value.

use super::format::{ago, exact, short_digest, size};
use super::Context;
use crate::inventory::{Filter, Page, Repo, RepoSummary, TagSummary};
use crate::oci::content_type::ContentType;
use http::StatusCode;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::time::SystemTime;

/// The cache page's figures, gathered by the caller.
#[derive(Debug, Default, Clone)]
pub struct CacheFacts {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub served_from_cache: u64,
    pub served_from_upstream: u64,
    pub mirrored_bytes: u64,
    pub limit: Option<u64>,
    /// `--offline`: no upstream is asked.
    pub offline: bool,
    pub upstreams: Vec<UpstreamFacts>,
}

/// One upstream on the cache page.
#[derive(Debug, Default, Clone)]
pub struct UpstreamFacts {
    pub name: String,
    pub url: String,
    /// `Some(true)` when its last answer came, `Some(false)` when it
    /// failed, `None` before any request.
    pub reachable: Option<bool>,
    /// The last failure and when (unix seconds).
    pub last_error: Option<(u64, String)>,
    pub ratelimit_remaining: Option<u64>,
    pub ratelimit_limit: Option<u64>,
}

const STYLE: &str = r#"
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f8fa}
header{background:#0b3954;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff;text-decoration:none}header .brand{font-weight:700;font-size:1.2em}
header .who{margin-left:auto;opacity:.85}
main{padding:1em 1.2em;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e1e4e8;vertical-align:top}
tr.group th{background:#eef2f6;font-weight:600}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}
pre{background:#fff;border:1px solid #e1e4e8;padding:.7em;overflow:auto;max-height:40em}
pre.pull{background:#0b3954;color:#fff;max-height:none}
.badge{display:inline-block;border-radius:.8em;padding:0 .6em;font-size:.8em;font-weight:600;margin-right:.3em;color:#fff}
.badge.image{background:#2f7ed8}.badge.helm{background:#0f8b6b}.badge.volume{background:#8e44ad}
.badge.other{background:#7b8794}.badge.missing{background:#c0392b}
nav.filters a{margin-right:.8em}nav.filters a.on{font-weight:700;text-decoration:none;color:#1d2733}
form.search{margin:.5em 0 1em}form.search input[type=search]{width:22em;padding:.3em}
.muted{color:#6a737d}.num{text-align:right}
"#;

fn frame(cx: &Context<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Wharf" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "Wharf" }
                    a href="/" { "Repositories" }
                    a href="/cache" { "Cache" }
                    span.who {
                        @if let Some(u) = cx.user {
                            "Signed in as " strong { (u) }
                        } @else if cx.can_sign_in {
                            a #login href="/login" { "Sign in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The badge of a content type, its media type on hover.
fn badge(c: &ContentType, media_type: &str) -> Markup {
    let (label, shown) = match c {
        ContentType::Image => ("Image", media_type),
        ContentType::Helm => ("Helm", media_type),
        ContentType::Volume => ("Volume", media_type),
        ContentType::Other(t) => ("Other", t.as_str()),
    };
    html! {
        span class={"badge " (c.as_str())} data-type=(c.as_str()) title=(shown) { (label) }
        @if let ContentType::Other(t) = c { code.muted { (t) } }
    }
}

fn when(unix: Option<u64>, now: SystemTime) -> Markup {
    html! {
        @match unix {
            Some(t) => time datetime=(exact(t)) title=(exact(t)) { (ago(t, now)) },
            None => span.muted { "—" },
        }
    }
}

fn repo_link(name: &str) -> String {
    format!("/r/{name}")
}

fn source_label(repo: &Repo) -> String {
    match repo.upstream() {
        None => "Local".into(),
        Some(u) => format!("Mirrored from {u}"),
    }
}

/// `/`: the repositories, grouped by where they come from.
pub fn repositories(cx: &Context<'_>, f: &Filter, page: &Page<RepoSummary>, n: usize) -> Markup {
    let now = SystemTime::now();
    let text = f.text.clone().unwrap_or_default();
    let filter_link = |kind: Option<&str>| {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        if let Some(k) = kind {
            qs.append_pair("type", k);
        }
        if !text.is_empty() {
            qs.append_pair("q", &text);
        }
        let qs = qs.finish();
        if qs.is_empty() {
            "/".to_string()
        } else {
            format!("/?{qs}")
        }
    };
    let next = page.next.as_ref().map(|l| {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        qs.append_pair("last", l).append_pair("n", &n.to_string());
        if let Some(k) = f.kind {
            qs.append_pair("type", k);
        }
        if !text.is_empty() {
            qs.append_pair("q", &text);
        }
        format!("/?{}", qs.finish())
    });
    html! {
        (frame(cx, "Repositories", html! {
            h1 { "Repositories" }
            form.search #search method="get" action="/" {
                input type="search" name="q" value=(text) placeholder="Search repositories" aria-label="Search repositories";
                @if let Some(k) = f.kind { input type="hidden" name="type" value=(k); }
                " " button type="submit" { "Search" }
            }
            nav.filters {
                @for (label, kind) in [("All", None), ("Image", Some("image")), ("Helm", Some("helm")), ("Volume", Some("volume")), ("Other", Some("other"))] {
                    a.filter.on[f.kind == kind] data-type=(kind.unwrap_or("all")) href=(filter_link(kind)) { (label) }
                }
            }
            @if page.items.is_empty() {
                p #empty.muted { "No repositories match." }
            } @else {
                table #repositories {
                    thead { tr { th { "Name" } th { "Content" } th.num { "Tags" } th.num { "Size" } th { "Pushed or cached" } th { "Last pulled" } } }
                    tbody {
                        @for (i, r) in page.items.iter().enumerate() {
                            @let g = source_label(&r.repo);
                            @if i == 0 || page.items.get(i - 1).map(|p| source_label(&p.repo)) != Some(g.clone()) {
                                tr.group { th colspan="6" { (g) } }
                            }
                            tr.repo data-name=(r.repo.name()) {
                                td.name { a href=(repo_link(&r.repo.name())) { (r.repo.name()) } }
                                td.types { @for k in &r.kinds { (badge(k, "")) } }
                                td.num { (r.tags) @if r.more_tags { "+" } }
                                td.num { (size(r.size)) }
                                td { (when(r.updated, now)) }
                                td { (when(r.pulled, now)) }
                            }
                        }
                    }
                }
            }
            @if let Some(href) = next { p { a #next href=(href) { "Next page →" } } }
        }))
    }
}

/// `/r/<name>`: a repository's tags.
pub fn repository(cx: &Context<'_>, repo: &Repo, page: &Page<TagSummary>, n: usize) -> Markup {
    let now = SystemTime::now();
    let name = repo.name();
    html! {
        (frame(cx, &name, html! {
            h1 #repo-name { (name) }
            p.muted { (source_label(repo)) }
            table #tags {
                thead { tr { th { "Tag" } th { "Content" } th { "Digest" } th { "Platforms" } th.num { "Size" } th { "Pushed or cached" } th { "Last pulled" } th { "Referrers" } } }
                tbody {
                    @for t in &page.items {
                        tr.tag data-tag=(t.tag) {
                            td.tagname { a href=(format!("/r/{name}:{}", t.tag)) { (t.tag) } }
                            td.type {
                                @match &t.description {
                                    Some(d) => (badge(&d.content_type, d.config.as_ref().map_or(d.media_type.as_str(), |c| c.media_type.as_str()))),
                                    None => span.badge.missing title="the manifest is no longer cached" { "Not cached" },
                                }
                            }
                            td { code title=(t.digest) { (short_digest(&t.digest.to_string())) } }
                            td.platforms { @if let Some(d) = &t.description { (d.platforms().join(", ")) } }
                            td.num { @if let Some(d) = &t.description { (size(d.size)) } }
                            td { (when(t.stored, now)) }
                            td { (when(t.pulled, now)) }
                            td.referrers {
                                @for r in &t.referrers {
                                    div.referrer { code title=(r.digest) { (short_digest(&r.digest.to_string())) } " " span.muted { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) } }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(l) = &page.next {
                p { a #next href=(format!("/r/{name}?{}", form_urlencoded::Serializer::new(String::new()).append_pair("last", l).append_pair("n", &n.to_string()).finish())) { "Next page →" } }
            }
        }))
    }
}

/// The commands that pull a tag of this content type from Wharf.
pub fn pull_commands(host: &str, name: &str, tag: &str, c: Option<&ContentType>) -> Vec<String> {
    match c {
        Some(ContentType::Image) => vec![
            format!("docker pull {host}/{name}:{tag}"),
            format!("podman pull {host}/{name}:{tag}"),
        ],
        Some(ContentType::Helm) => vec![format!("helm pull oci://{host}/{name} --version {tag}")],
        _ => vec![format!("oras pull {host}/{name}:{tag}")],
    }
}

/// `/r/<name>:<tag>`: one tag.
pub fn tag(cx: &Context<'_>, repo: &Repo, t: &TagSummary, manifest: Option<&[u8]>) -> Markup {
    let now = SystemTime::now();
    let name = repo.name();
    let d = t.description.as_deref();
    let pretty = manifest.map(|b| match serde_json::from_slice::<serde_json::Value>(b) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    });
    html! {
        (frame(cx, &format!("{name}:{}", t.tag), html! {
            h1 { a href=(repo_link(&name)) { (name) } ":" span #tag-name { (t.tag) } }
            p {
                @match d {
                    Some(d) => (badge(&d.content_type, d.config.as_ref().map_or(d.media_type.as_str(), |c| c.media_type.as_str()))),
                    None => span.badge.missing { "Not cached" },
                }
                " " code #digest { (t.digest) }
            }
            h2 { "Pull it" }
            @for cmd in pull_commands(&cx.host, &name, &t.tag, d.map(|d| &d.content_type)) {
                pre.pull { (cmd) }
            }
            @if let Some(d) = d {
                table #facts {
                    tr { th { "Media type" } td { code { (d.media_type) } } }
                    @if let Some(a) = &d.artifact_type { tr { th { "Artifact type" } td { code { (a) } } } }
                    @if let Some(c) = &d.config { tr { th { "Config" } td { code { (c.media_type) } " " span.muted { (size(c.size)) } } } }
                    tr { th { "Size" } td { (size(d.size)) } }
                    tr { th { "Pushed or cached" } td { (when(t.stored, now)) } }
                    tr { th { "Last pulled" } td { (when(t.pulled, now)) } }
                    @if !d.platforms().is_empty() { tr { th { "Platforms" } td #platforms { (d.platforms().join(", ")) } } }
                }
                @if !d.annotations.is_empty() {
                    h2 { "Annotations" }
                    table #annotations { @for (k, v) in &d.annotations { tr { th { code { (k) } } td { (v) } } } }
                }
                @if !d.layers.is_empty() {
                    h2 { "Layers" }
                    table #layers {
                        thead { tr { th { "Digest" } th { "Media type" } th.num { "Size" } } }
                        @for l in &d.layers { tr { td { code title=(l.digest) { (short_digest(&l.digest)) } } td { code { (l.media_type) } } td.num { (size(l.size)) } } }
                    }
                }
                @if !d.children.is_empty() {
                    h2 { "Manifests" }
                    table #children {
                        thead { tr { th { "Platform" } th { "Digest" } th.num { "Size" } } }
                        @for c in &d.children { tr { td { (c.platform.as_deref().unwrap_or("—")) } td { code title=(c.digest) { (short_digest(&c.digest)) } } td.num { (size(c.size)) } } }
                    }
                }
            }
            @if !t.referrers.is_empty() {
                h2 { "Referrers" }
                table #referrers {
                    thead { tr { th { "Artifact type" } th { "Digest" } th.num { "Size" } } }
                    @for r in &t.referrers { tr { td { code { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) } } td { code title=(r.digest) { (short_digest(&r.digest.to_string())) } } td.num { (size(r.size)) } } }
                }
            }
            @if let Some(p) = pretty {
                h2 { "Manifest" }
                pre #manifest { (p) }
            }
        }))
    }
}

/// `/cache`: what the cache does.
pub fn cache(cx: &Context<'_>, f: &CacheFacts) -> Markup {
    let lookups = f.hits + f.misses + f.stale;
    let ratio = if lookups == 0 {
        "—".to_string()
    } else {
        format!("{:.1}%", 100.0 * f.hits as f64 / lookups as f64)
    };
    let now = SystemTime::now();
    html! {
        (frame(cx, "Cache", html! {
            h1 { "Cache" }
            @if f.offline { p #offline { strong { "Offline:" } " no upstream is asked; what is cached is served." } }
            table #cache-facts {
                tr { th { "Hit ratio" } td #hit-ratio { (ratio) " " span.muted { "(" (f.hits) " hits, " (f.stale) " stale, " (f.misses) " misses since start)" } } }
                tr { th { "Served from cache" } td #served-cache { (size(f.served_from_cache)) } }
                tr { th { "Served from upstream" } td #served-upstream { (size(f.served_from_upstream)) } }
                tr { th { "Mirrored content stored" } td #stored { (size(f.mirrored_bytes)) @match f.limit { Some(l) => { " of " (size(l)) " (--max-cache-size)" }, None => " (no --max-cache-size)", } } }
            }
            h2 { "Upstreams" }
            table #upstreams {
                thead { tr { th { "Upstream" } th { "State" } th { "Last error" } th { "Rate limit remaining" } } }
                @for u in &f.upstreams {
                    tr.upstream data-name=(u.name) {
                        td { strong { (u.name) } @if !u.url.is_empty() { br; code.muted { (u.url) } } }
                        td.state { @match u.reachable { Some(true) => "reachable", Some(false) => "unreachable", None => span.muted { "not asked yet" } } }
                        td.error { @if let Some((at, e)) = &u.last_error { (e) " " span.muted { "(" (when(Some(*at), now)) ")" } } }
                        td.ratelimit { @match (u.ratelimit_remaining, u.ratelimit_limit) {
                            (Some(r), Some(l)) => { (r) " of " (l) },
                            (Some(r), None) => (r),
                            _ => span.muted { "not reported" },
                        } }
                    }
                }
            }
        }))
    }
}

/// The page of an error.
pub fn error(cx: &Context<'_>, status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    html! {
        (frame(cx, title, html! {
            h1 { (status.as_u16()) " " (title) }
            p #error { (message) }
            p { a href="/" { "All repositories" } }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::describe::describe;
    use crate::oci::{Digest, RepoName};
    use std::sync::Arc;

    fn cx() -> Context<'static> {
        Context {
            host: "wharf.example:5000".into(),
            user: None,
            can_sign_in: true,
        }
    }

    const EVIL: &str = "<script>alert(1)</script>";

    /// Whatever a name, tag, annotation, media type or host holds is
    /// escaped: no tag a browser would run survives.
    #[test]
    fn hostile_values_are_escaped() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"{EVIL}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:{}","size":2}},"layers":[{{"mediaType":"\"><img src=x onerror=alert(1)>","digest":"{EVIL}","size":1}}],"annotations":{{"{EVIL}":"{EVIL}","title":"<img src=x onerror=alert(2)>"}}}}"#,
            "a".repeat(64)
        );
        let d = Arc::new(describe(
            body.as_bytes(),
            "application/vnd.oci.image.manifest.v1+json",
            |_| None,
        ));
        let t = TagSummary {
            tag: "v1".into(),
            digest: Digest::of(crate::oci::digest::Algorithm::Sha256, b"x"),
            description: Some(d),
            stored: Some(1),
            pulled: None,
            referrers: Vec::new(),
        };
        let repo = Repo::Local(RepoName::parse("golden/app").unwrap());
        let mut c = cx();
        c.host = "h\"><script>".into();
        let pages = [
            tag(&c, &repo, &t, Some(body.as_bytes())).into_string(),
            tag(&c, &repo, &t, Some(EVIL.as_bytes())).into_string(),
            error(&c, StatusCode::BAD_REQUEST, EVIL).into_string(),
            repository(
                &c,
                &repo,
                &Page {
                    items: vec![t.clone()],
                    next: Some(EVIL.into()),
                },
                5,
            )
            .into_string(),
            repositories(
                &c,
                &Filter {
                    kind: None,
                    text: Some(EVIL.into()),
                },
                &Page {
                    items: Vec::new(),
                    next: Some(EVIL.into()),
                },
                5,
            )
            .into_string(),
        ];
        assert!(pages[0].contains("&lt;script&gt;alert(1)"));
        assert!(pages[0].contains("&lt;img src=x onerror=alert(2)&gt;"));
        for p in pages {
            let lower = p.to_lowercase();
            assert!(!lower.contains("<script"), "{p}");
            assert!(!lower.contains("<img"), "{p}");
        }
    }

    #[test]
    fn pull_commands_follow_the_content_type() {
        let h = "w:5000";
        assert_eq!(
            pull_commands(h, "golden/app", "1", Some(&ContentType::Image))[0],
            "docker pull w:5000/golden/app:1"
        );
        assert_eq!(
            pull_commands(h, "charts/web", "0.1.0", Some(&ContentType::Helm)),
            ["helm pull oci://w:5000/charts/web --version 0.1.0"]
        );
        assert_eq!(
            pull_commands(h, "a/b", "v", Some(&ContentType::Volume)),
            ["oras pull w:5000/a/b:v"]
        );
        assert_eq!(
            pull_commands(h, "a/b", "v", None),
            ["oras pull w:5000/a/b:v"]
        );
    }
}
