//! Lists: a repository's tags and the catalog of repositories. Both page
//! with `n` and an exclusive `last`, and a `Link` header while more remain.

use crate::body::Body;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::RepoName;
use crate::reply;
use crate::store::Store;
use http::{header, request::Parts, Response};
use serde_json::json;

/// Most catalog entries one page may hold (and the default page size).
const CATALOG_MAX: usize = 1000;
const CATALOG_DEFAULT: usize = 100;

/// The `n` parameter: `None` when absent; 400 when not a number or over `max`.
fn page_size(q: &[(String, String)], max: usize) -> Result<Option<usize>> {
    let Some(v) = reply::query_one(q, "n") else {
        return Ok(None);
    };
    match v.parse::<usize>() {
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(Error::oci(
            ErrorCode::PaginationNumberInvalid,
            format!("n must be a number from 0 to {max}"),
        )),
    }
}

/// Fetches one page through `list(last, limit)` and adds the `Link` header
/// when more entries remain after it.
fn page(
    path: &str,
    q: &[(String, String)],
    n: usize,
    list: impl Fn(Option<&str>, usize) -> Result<Vec<String>>,
) -> Result<(Vec<String>, Option<String>)> {
    let last = reply::query_one(q, "last");
    if n == 0 {
        return Ok((Vec::new(), None));
    }
    let mut items = list(last, n.saturating_add(1))?;
    let more = items.len() > n;
    items.truncate(n);
    let link = match (more, items.last()) {
        (true, Some(l)) => {
            let qs: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("last", l)
                .append_pair("n", &n.to_string())
                .finish();
            Some(format!("<{path}?{qs}>; rel=\"next\""))
        }
        _ => None,
    };
    Ok((items, link))
}

/// GET `/v2/<name>/tags/list`.
pub fn tags(store: &Store, parts: &Parts, name: &RepoName) -> Result<Response<Body>> {
    if !store.index.repo_exists(name)? {
        return Err(Error::oci(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(json!({ "name": name.as_str() })));
    }
    let q = reply::query(&parts.uri);
    let n = page_size(&q, usize::MAX)?.unwrap_or(usize::MAX);
    let path = format!("/v2/{name}/tags/list");
    let (tags, link) = page(&path, &q, n, |last, limit| {
        store.index.tags(name, last, limit)
    })?;
    let mut r = reply::json(
        &json!({ "name": name.as_str(), "tags": tags }),
        "application/json",
    );
    if let Some(l) = link {
        reply::set(&mut r, header::LINK, &l);
    }
    Ok(r)
}

/// GET `/v2/_catalog`: the repositories `visible` lets the caller see
/// (those it may pull).
pub fn catalog(
    store: &Store,
    parts: &Parts,
    visible: impl Fn(&str) -> bool,
) -> Result<Response<Body>> {
    let q = reply::query(&parts.uri);
    let n = page_size(&q, CATALOG_MAX)?.unwrap_or(CATALOG_DEFAULT);
    let (repos, link) = page("/v2/_catalog", &q, n, |last, limit| {
        // Read on past hidden entries until the page is full or the
        // index is exhausted.
        let mut out = Vec::new();
        let mut cursor = last.map(str::to_string);
        loop {
            let batch = store
                .index
                .repos(cursor.as_deref(), limit.max(CATALOG_DEFAULT))?;
            let exhausted = batch.len() < limit.max(CATALOG_DEFAULT);
            cursor = batch.last().cloned();
            out.extend(batch.into_iter().filter(|r| visible(r)));
            if out.len() >= limit || exhausted {
                out.truncate(limit);
                return Ok(out);
            }
        }
    })?;
    let mut r = reply::json(&json!({ "repositories": repos }), "application/json");
    if let Some(l) = link {
        reply::set(&mut r, header::LINK, &l);
    }
    Ok(r)
}
