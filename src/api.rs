//! The JSON API under `/api/v1/`: the web UI's data for scripts.
//!
//! - `GET /api/v1/repositories?type=image|helm|volume|other&q=TEXT&n=&last=`
//! - `GET /api/v1/repositories/<name>/tags?n=&last=`
//!
//! Both list only what the caller may pull, page with `n` and `last`
//! (with a `Link` header and a `next` field while more remain), and
//! render the [`inventory`](crate::inventory) values the UI shows.

use crate::body::Body;
use crate::error::{Error, ErrorCode, Result};
use crate::inventory::{self, Filter, Repo, RepoSummary, TagSummary, Viewer};
use crate::oci::content_type::ContentType;
use crate::reply;
use crate::reply::page;
use http::{header, request::Parts, Response};
use serde_json::{json, Value};

pub const PREFIX: &str = "/api/v1/";

/// Page sizes of both listings (a larger `n` is cut to the maximum).
const LIMITS: page::Limits = page::Limits {
    default: inventory::DEFAULT_PAGE,
    max: inventory::MAX_PAGE,
    refuse_over_max: false,
};

/// An API path.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiPath<'a> {
    Repositories,
    Tags(&'a str),
}

impl ApiPath<'_> {
    /// The API route `path` names (it starts with [`PREFIX`]).
    pub fn parse(path: &str) -> Option<ApiPath<'_>> {
        let rest = path.strip_prefix(PREFIX)?;
        if rest == "repositories" {
            return Some(ApiPath::Repositories);
        }
        let name = rest.strip_prefix("repositories/")?.strip_suffix("/tags")?;
        (!name.is_empty()).then_some(ApiPath::Tags(name))
    }
}

/// Answers a GET of `path`.
pub async fn answer(v: &Viewer<'_>, parts: &Parts, path: ApiPath<'_>) -> Result<Response<Body>> {
    let q = reply::query(&parts.uri);
    let n = page::size(&q, LIMITS)?;
    let last = reply::query_one(&q, "last");
    match path {
        ApiPath::Repositories => {
            let kind = reply::query_one(&q, "type");
            let text = reply::query_one(&q, "q");
            let filter = Filter::parse(kind, text)?;
            let page = v.repositories(&filter, last, n).await?;
            let items: Vec<Value> = page.items.iter().map(repository).collect();
            let mut keep = Vec::new();
            if let Some(k) = filter.kind {
                keep.push(("type", k));
            }
            if let Some(t) = &filter.text {
                keep.push(("q", t.as_str()));
            }
            let mut r = reply::json(
                &json!({ "repositories": items, "next": page.next }),
                "application/json",
            );
            if let Some(l) = &page.next {
                reply::set(
                    &mut r,
                    header::LINK,
                    &page::next_link("/api/v1/repositories", l, n, &keep),
                );
            }
            Ok(r)
        }
        ApiPath::Tags(name) => {
            let (repo, page) = v.tags(name, last, n).await?;
            let items: Vec<Value> = page.items.iter().map(tag).collect();
            let mut body = source(&repo);
            body["name"] = json!(repo.name());
            body["tags"] = json!(items);
            body["next"] = json!(page.next);
            let mut r = reply::json(&body, "application/json");
            if let Some(l) = &page.next {
                let path = format!("/api/v1/repositories/{}/tags", repo.name());
                reply::set(&mut r, header::LINK, &page::next_link(&path, l, n, &[]));
            }
            Ok(r)
        }
    }
}

/// The answer to an `/api/` path that names no route.
pub fn not_found(path: &str) -> Error {
    Error::oci(ErrorCode::NameUnknown, format!("no API route {path}"))
}

fn source(repo: &Repo) -> Value {
    json!({
        "source": if repo.upstream().is_some() { "mirror" } else { "local" },
        "upstream": repo.upstream(),
    })
}

fn kind(c: &ContentType) -> Value {
    json!({ "content_type": c.as_str(), "media_type": c.media_type() })
}

/// RFC 3339 (UTC, seconds) of unix seconds.
pub fn time(unix: Option<u64>) -> Value {
    match unix {
        Some(s) => json!(humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)
        )
        .to_string()),
        None => Value::Null,
    }
}

fn repository(s: &RepoSummary) -> Value {
    let mut v = source(&s.repo);
    v["name"] = json!(s.repo.name());
    v["tags"] = json!(s.tags);
    v["more_tags"] = json!(s.more_tags);
    v["content_types"] = json!(s.kinds.iter().map(kind).collect::<Vec<_>>());
    v["size"] = json!(s.size);
    v["updated"] = time(s.updated);
    v["last_pulled"] = time(s.pulled);
    v
}

fn tag(t: &TagSummary) -> Value {
    let d = t.description.as_deref();
    json!({
        "tag": t.tag,
        "digest": t.digest.to_string(),
        "cached": d.is_some(),
        "media_type": d.map(|d| d.media_type.as_str()),
        "content_type": d.map(|d| d.content_type.as_str()),
        "content_media_type": d.and_then(|d| d.content_type.media_type()),
        "artifact_type": d.and_then(|d| d.artifact_type.as_deref()),
        "config_media_type": d.and_then(|d| d.config.as_ref().map(|c| c.media_type.as_str())),
        "size": d.map(|d| d.size),
        "platforms": d.map(|d| d.platforms()).unwrap_or_default(),
        "stored": time(t.stored),
        "last_pulled": time(t.pulled),
        "referrers": t.referrers.iter().map(|r| json!({
            "digest": r.digest.to_string(),
            "media_type": r.media_type,
            "artifact_type": r.artifact_type,
            "size": r.size,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            ApiPath::parse("/api/v1/repositories"),
            Some(ApiPath::Repositories)
        );
        assert_eq!(
            ApiPath::parse("/api/v1/repositories/docker.io/library/alpine/tags"),
            Some(ApiPath::Tags("docker.io/library/alpine"))
        );
        assert_eq!(ApiPath::parse("/api/v1/repositories//tags"), None);
        assert_eq!(ApiPath::parse("/api/v1/repositories/"), None);
        assert_eq!(ApiPath::parse("/api/v2/repositories"), None);
        assert_eq!(time(Some(0)), json!("1970-01-01T00:00:00Z"));
    }
}
