//! Lists of local repositories: a repository's tags and the catalog of
//! repositories. Both page with `n` and an exclusive `last` (see
//! [`page`]), and a `Link` header while more remain; the index is read on
//! the blocking pool, so a listing of 100,000 tags never holds up the
//! async workers.

use super::page;
use crate::body::Body;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::RepoName;
use crate::reply;
use crate::store::Store;
use http::{header, request::Parts, Response};
use serde_json::json;

/// Tags on a page without `n`, and the most one may hold (a larger `n` is
/// cut to it; the `Link` leads on).
pub const TAGS: page::Limits = page::Limits {
    default: 10_000,
    max: 10_000,
    refuse_over_max: false,
};

/// Repositories on a page without `n`, and the most one may hold (a
/// larger `n` is refused, as distribution refuses it).
pub const CATALOG: page::Limits = page::Limits {
    default: 100,
    max: 1000,
    refuse_over_max: true,
};

/// Repository names read from the index at a time while a catalog page
/// skips those the caller may not see.
const CATALOG_BATCH: usize = 1000;

/// GET `/v2/<name>/tags/list`. A repository without manifests is unknown
/// (`NAME_UNKNOWN`), like one never pushed to.
pub async fn tags(store: &Store, parts: &Parts, name: &RepoName) -> Result<Response<Body>> {
    if !store.index.repo_exists(name)? {
        return Err(Error::oci(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(json!({ "name": name.as_str() })));
    }
    let q = reply::query(&parts.uri);
    let n = page::size(&q, TAGS)?;
    let last = reply::query_one(&q, "last").map(str::to_string);
    let repo = name.clone();
    // The answer is serialised there too: 10,000 tags make a large one.
    let (body, next) = store
        .index
        .blocking(move |i| {
            let items = match n {
                0 => Vec::new(),
                n => i.tags(&repo, last.as_deref(), n + 1)?,
            };
            let (tags, next) = page::cut(items, n);
            #[derive(serde::Serialize)]
            struct TagList<'a> {
                name: &'a str,
                tags: &'a [String],
            }
            let list = TagList {
                name: repo.as_str(),
                tags: &tags,
            };
            let body =
                serde_json::to_vec(&list).map_err(|e| Error::storage("encoding a tag list", e))?;
            Ok((body, next))
        })
        .await?;
    let mut r = reply::json_bytes(body, "application/json");
    if let Some(l) = next {
        let link = page::next_link(&format!("/v2/{name}/tags/list"), &l, n, &[]);
        reply::set(&mut r, header::LINK, &link);
    }
    Ok(r)
}

/// GET `/v2/_catalog`: the repositories `visible` lets the caller see
/// (those it may pull). Names are read in batches on the blocking pool;
/// the caller's view is checked here, between batches, so a caller who
/// sees few of many repositories never holds an async worker for long.
pub async fn catalog(
    store: &Store,
    parts: &Parts,
    visible: impl Fn(&str) -> bool,
) -> Result<Response<Body>> {
    let q = reply::query(&parts.uri);
    let n = page::size(&q, CATALOG)?;
    let mut repos = Vec::new();
    let mut cursor = reply::query_one(&q, "last").map(str::to_string);
    // One more than the page, to know whether more remain.
    while n > 0 && repos.len() <= n {
        let after = cursor.clone();
        let batch = store
            .index
            .blocking(move |i| i.repos(after.as_deref(), CATALOG_BATCH))
            .await?;
        let exhausted = batch.len() < CATALOG_BATCH;
        cursor = batch.last().cloned();
        repos.extend(
            batch
                .into_iter()
                .filter(|r| visible(r))
                .take(n + 1 - repos.len()),
        );
        if exhausted {
            break;
        }
    }
    let (repos, next) = page::cut(repos, n);
    let mut r = reply::json(&json!({ "repositories": repos }), "application/json");
    if let Some(l) = next {
        reply::set(
            &mut r,
            header::LINK,
            &page::next_link("/v2/_catalog", &l, n, &[]),
        );
    }
    Ok(r)
}
