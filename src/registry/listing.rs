//! The distribution API's lists of local repositories: a repository's
//! tags and the catalog of repositories, rendered from the names the
//! [`inventory`] reads. Both page with `n` and an exclusive `last` (see
//! [`page`]), and a `Link` header while more remain.

use crate::body::Body;
use crate::error::{Error, ErrorCode, Result};
use crate::inventory;
use crate::oci::RepoName;
use crate::reply;
use crate::reply::page;
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

/// GET `/v2/<name>/tags/list`. A repository without manifests is unknown
/// (`NAME_UNKNOWN`), like one never pushed to.
pub async fn tags(store: &Store, parts: &Parts, name: &RepoName) -> Result<Response<Body>> {
    if !store.index().repo_exists(name)? {
        return Err(Error::oci(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(json!({ "name": name.as_str() })));
    }
    let q = reply::query(&parts.uri);
    let n = page::size(&q, TAGS)?;
    let last = reply::query_one(&q, "last");
    let listed = inventory::tag_names(store, name, last, n).await?;
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let list = TagList {
        name: name.as_str(),
        tags: &listed.items,
    };
    let body = serde_json::to_vec(&list).map_err(|e| Error::storage("encoding a tag list", e))?;
    let mut r = reply::json_bytes(body, "application/json");
    if let Some(l) = listed.next {
        let link = page::next_link(&format!("/v2/{name}/tags/list"), &l, n, &[]);
        reply::set(&mut r, header::LINK, &link);
    }
    Ok(r)
}

/// GET `/v2/_catalog`: the local repositories `visible` lets the caller
/// see (those it may pull).
pub async fn catalog(
    store: &Store,
    parts: &Parts,
    visible: impl Fn(&str) -> bool,
) -> Result<Response<Body>> {
    let q = reply::query(&parts.uri);
    let n = page::size(&q, CATALOG)?;
    let last = reply::query_one(&q, "last");
    let listed = inventory::local_names(store, last, n, visible).await?;
    let mut r = reply::json(&json!({ "repositories": listed.items }), "application/json");
    if let Some(l) = listed.next {
        reply::set(
            &mut r,
            header::LINK,
            &page::next_link("/v2/_catalog", &l, n, &[]),
        );
    }
    Ok(r)
}
