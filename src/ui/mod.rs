//! The web UI: server-rendered HTML pages (no JavaScript needed) over the
//! same [`inventory`](crate::inventory) data the JSON API serves.
//!
//! | path | page |
//! |---|---|
//! | `/` | repositories, local then mirrored by upstream; search (`q`), content-type filter (`type`), paged (`n`, `last`) |
//! | `/r/<name>` | a repository's tags |
//! | `/r/<name>:<tag>` | one tag: pull commands, manifest, layers, referrers |
//! | `/cache` | hit ratio, bytes served, store size, upstream states |
//! | `/login` | asks the browser for a user name and password (Basic; routed in [`pages`](crate::pages)) |
//!
//! Every value a name, tag, annotation or header puts on a page goes
//! through maud's escaping; nothing is written into a page unescaped but
//! the fixed style sheet.

pub mod format;
mod render;

pub use render::{CacheFacts, UpstreamFacts};

use crate::body::{self, Body};
use crate::error::{Error, Result};
use crate::inventory::{self, Filter, Viewer};
use crate::reply;
use crate::reply::page;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};

/// A UI path.
#[derive(Debug, PartialEq, Eq)]
pub enum UiPath<'a> {
    Home,
    Repo(&'a str),
    Tag(&'a str, &'a str),
    Cache,
}

impl UiPath<'_> {
    pub fn parse(path: &str) -> Option<UiPath<'_>> {
        match path {
            "/" => Some(UiPath::Home),
            "/cache" => Some(UiPath::Cache),
            _ => {
                let rest = path.strip_prefix("/r/")?;
                // A tag follows the last component's `:` (names have none;
                // an upstream's port is in the first component).
                let (dir, last) = match rest.rsplit_once('/') {
                    Some((d, l)) => (Some(d), l),
                    None => (None, rest),
                };
                match last.split_once(':') {
                    Some((repo_last, tag)) => {
                        let name_len = dir.map_or(0, |d| d.len() + 1) + repo_last.len();
                        Some(UiPath::Tag(&rest[..name_len], tag))
                    }
                    None => Some(UiPath::Repo(rest)),
                }
            }
        }
    }
}

/// Who is looking, and at which address they reach Wharf.
pub struct Context<'a> {
    /// The `Host` the browser used (for pull commands), checked.
    pub host: String,
    /// The signed-in user, if any.
    pub user: Option<&'a str>,
    /// Whether signing in can show more (access control is on).
    pub can_sign_in: bool,
}

impl Context<'_> {
    /// The host for pull commands: the request's authority (HTTP/2) or
    /// `Host` (HTTP/1.1) when it is a plain host[:port], else `fallback`.
    pub fn host_of(parts: &Parts, fallback: &str) -> String {
        parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or(fallback)
            .to_string()
    }
}

/// Answers a GET of a UI page. Errors become an HTML page with the
/// error's status and message.
pub async fn answer(
    v: &Viewer<'_>,
    cx: &Context<'_>,
    parts: &Parts,
    path: UiPath<'_>,
    cache: impl FnOnce() -> CacheFacts,
) -> Response<Body> {
    match page(v, cx, parts, path, cache).await {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(e) => {
            let (status, message) = e.public();
            html_response(status, render::error(cx, status, &message).into_string())
        }
    }
}

async fn page(
    v: &Viewer<'_>,
    cx: &Context<'_>,
    parts: &Parts,
    path: UiPath<'_>,
    cache: impl FnOnce() -> CacheFacts,
) -> Result<String> {
    const LIMITS: page::Limits = page::Limits {
        default: inventory::DEFAULT_PAGE,
        max: inventory::MAX_PAGE,
        refuse_over_max: false,
    };
    let q = reply::query(&parts.uri);
    let n = page::size(&q, LIMITS)?;
    let last = reply::query_one(&q, "last");
    Ok(match path {
        UiPath::Home => {
            let filter = Filter::parse(reply::query_one(&q, "type"), reply::query_one(&q, "q"))?;
            let listed = v.repositories(&filter, last, n).await?;
            render::repositories(cx, &filter, &listed, n)
        }
        UiPath::Repo(name) => {
            let (repo, tags) = v.tags(name, last, n).await?;
            render::repository(cx, &repo, &tags, n)
        }
        UiPath::Tag(name, tag) => {
            let (repo, t, bytes) = v.tag(name, tag).await?;
            render::tag(cx, &repo, &t, bytes.as_deref())
        }
        UiPath::Cache => render::cache(cx, &cache()),
    }
    .into_string())
}

fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let len = html.len();
    let mut r = Response::new(body::full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // Pages of our own: no framing, no sniffing, no scripts but our own
    // (there are none), no referrer leaking names elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `/login` for a caller not signed in: the browser asks for a password.
pub fn ask_for_password() -> Response<Body> {
    let mut r = html_response(
        StatusCode::UNAUTHORIZED,
        "<!DOCTYPE html><title>Sign in</title><p>Sign in to see more. <a href=\"/\">Back</a></p>"
            .into(),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"wharf\", charset=\"UTF-8\""),
    );
    r
}

/// `/login` once signed in: back to the start page.
pub fn signed_in() -> Response<Body> {
    let mut r = reply::empty(StatusCode::SEE_OTHER);
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    r
}

/// An HTML answer for an error that happened before a page could render
/// (credentials that do not check out).
pub fn refused(cx: &Context<'_>, e: Error) -> Response<Body> {
    let (status, message) = e.public();
    let mut r = html_response(status, render::error(cx, status, &message).into_string());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"wharf\", charset=\"UTF-8\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for (p, want) in [
            ("/", Some(UiPath::Home)),
            ("/cache", Some(UiPath::Cache)),
            ("/r/golden/app", Some(UiPath::Repo("golden/app"))),
            ("/r/golden/app:1.0", Some(UiPath::Tag("golden/app", "1.0"))),
            ("/r/alpine:3", Some(UiPath::Tag("alpine", "3"))),
            (
                "/r/docker.io/library/alpine:3.20",
                Some(UiPath::Tag("docker.io/library/alpine", "3.20")),
            ),
            ("/r/a/b:c:d", Some(UiPath::Tag("a/b", "c:d"))),
            ("/v2/", None),
            ("/rr", None),
        ] {
            assert_eq!(UiPath::parse(p), want, "{p}");
        }
    }
}
