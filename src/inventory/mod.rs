//! What the registry holds, as data: repositories local and mirrored
//! (mirrored ones named as clients name them, `<upstream>/<repository>`),
//! their tags with each tag's content type, size, platforms, times and
//! referrers, and one tag in full. The web UI and the JSON API render the
//! same values; nothing here builds a response. Reads run on the index's
//! blocking pool; manifest descriptions are kept in a bounded cache (a
//! manifest never changes under its digest).

pub mod describe;

use crate::error::{Error, ErrorCode, Result};
use crate::mirror::routing::{Backend, Router};
use crate::oci::content_type::ContentType;
use crate::oci::manifest::{Descriptor, MAX_MANIFEST_BYTES};
use crate::oci::{Digest, RepoName};
use crate::store::cache::CacheTracker;
use crate::store::index::ManifestMeta;
use crate::store::{BlobStore, Index, Store};
pub use describe::{Description, Part};
use std::sync::Arc;
use std::time::Duration;

/// Repository names read from the index at a time.
const NAME_BATCH: usize = 256;
/// Most repositories one listing request looks at (a filter that matches
/// few of many returns a shorter page and a cursor to go on from).
const SCAN_BUDGET: usize = 5_000;
/// Tags read to summarise one repository.
const SUMMARY_TAGS: usize = 1_000;
/// Referrers shown per tag.
const REFERRERS: usize = 100;
/// Longest search text.
pub const MAX_QUERY: usize = 256;
/// Most entries on a page, and the default.
pub const MAX_PAGE: usize = 1_000;
pub const DEFAULT_PAGE: usize = 50;

/// A repository, where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repo {
    Local(RepoName),
    Mirror { upstream: String, repo: String },
}

impl Repo {
    /// The repository a client name routes to.
    pub fn resolve(router: &Router, name: &RepoName) -> Result<Repo> {
        Ok(match router.route(name, None)? {
            Backend::Local => Repo::Local(name.clone()),
            Backend::Mirror { upstream, repo } => Repo::Mirror { upstream, repo },
        })
    }

    /// The name clients pull it by.
    pub fn name(&self) -> String {
        match self {
            Repo::Local(n) => n.to_string(),
            Repo::Mirror { upstream, repo } => format!("{upstream}/{repo}"),
        }
    }

    /// `None` for local content, the upstream's name for mirrored.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Repo::Local(_) => None,
            Repo::Mirror { upstream, .. } => Some(upstream),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Repo::Local(_) => Backend::Local,
            Repo::Mirror { upstream, repo } => Backend::Mirror {
                upstream: upstream.clone(),
                repo: repo.clone(),
            },
        }
    }

    fn tags(&self, i: &Index, last: Option<&str>, n: usize) -> Result<Vec<(String, Digest)>> {
        match self {
            Repo::Local(r) => i.tag_digests(r, last, n),
            Repo::Mirror { upstream, repo } => i.mirror_tag_digests(upstream, repo, last, n),
        }
    }

    fn meta(&self, i: &Index, d: &Digest) -> Result<Option<ManifestMeta>> {
        match self {
            Repo::Local(r) => i.manifest(r, d),
            Repo::Mirror { upstream, .. } => i.mirror_manifest(upstream, d),
        }
    }

    fn referrers(&self, i: &Index, subject: &Digest) -> Result<Vec<Descriptor>> {
        match self {
            Repo::Local(r) => i
                .referrers_after(r, subject, None)
                .take(REFERRERS)
                .collect(),
            // The mirror proxies referrers live; none are kept.
            Repo::Mirror { .. } => Ok(Vec::new()),
        }
    }
}

/// Which repositories a listing asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Only repositories holding a tag of this type (`image`, `helm`,
    /// `volume`, `other`).
    pub kind: Option<&'static str>,
    /// Only names containing this text (any case).
    pub text: Option<String>,
}

impl Filter {
    /// A filter from the `type` and `q` parameters, refusing what is not
    /// one of the types or is longer than [`MAX_QUERY`].
    pub fn parse(kind: Option<&str>, text: Option<&str>) -> Result<Filter> {
        let kind = match kind.unwrap_or("") {
            "" | "all" => None,
            "image" => Some("image"),
            "helm" => Some("helm"),
            "volume" => Some("volume"),
            "other" => Some("other"),
            _ => {
                return Err(Error::oci(
                    ErrorCode::ParameterInvalid,
                    "type must be one of image, helm, volume, other",
                ))
            }
        };
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        if text.is_some_and(|t| t.len() > MAX_QUERY) {
            return Err(Error::oci(
                ErrorCode::ParameterInvalid,
                format!("q must be at most {MAX_QUERY} bytes"),
            ));
        }
        Ok(Filter {
            kind,
            text: text.map(str::to_lowercase),
        })
    }

    fn matches_name(&self, name: &str) -> bool {
        self.text.as_deref().is_none_or(|t| name.contains(t))
    }
}

/// A repository, summarised.
#[derive(Clone, Debug)]
pub struct RepoSummary {
    pub repo: Repo,
    /// Tags read (at most [`SUMMARY_TAGS`]; `more_tags` says there are more).
    pub tags: usize,
    pub more_tags: bool,
    /// The content types of its tags, each once, in tag order.
    pub kinds: Vec<ContentType>,
    /// Bytes of its tagged manifests and what they reference (each
    /// manifest once; layers shared between them counted in each).
    pub size: u64,
    /// Latest push (local) or caching (mirrored), unix seconds.
    pub updated: Option<u64>,
    /// Latest recorded pull of a tagged manifest, unix seconds.
    pub pulled: Option<u64>,
}

/// A tag, summarised.
#[derive(Clone, Debug)]
pub struct TagSummary {
    pub tag: String,
    pub digest: Digest,
    /// `None` when the manifest is not stored (a mirrored tag whose
    /// content was evicted).
    pub description: Option<Arc<Description>>,
    pub stored: Option<u64>,
    pub pulled: Option<u64>,
    pub referrers: Vec<Descriptor>,
}

/// One page of a listing and where the next one starts.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The `last` of the next page, while more may remain.
    pub next: Option<String>,
}

/// The manifest descriptions cache and the listings built on it.
#[derive(Clone)]
pub struct Inventory {
    described: moka::sync::Cache<Digest, Arc<Description>>,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::new()
    }
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory {
            // An index's children may be cached later and change its
            // description, so entries age out.
            described: moka::sync::Cache::builder()
                .max_capacity(20_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }

    /// A page of repositories `visible` lets the caller see, local first,
    /// then mirrored ones by upstream, after `last` (a name as listed).
    pub async fn repositories(
        &self,
        store: &Store,
        router: &Router,
        filter: &Filter,
        last: Option<&str>,
        n: usize,
        visible: &(dyn Fn(&Repo) -> bool + Sync),
    ) -> Result<Page<RepoSummary>> {
        let mut cursor = match last {
            Some(l) => Some(Repo::resolve(router, &parse_name(l)?)?),
            None => None,
        };
        let mut out: Vec<RepoSummary> = Vec::new();
        let mut scanned = 0;
        if n == 0 {
            return Ok(Page {
                items: out,
                next: None,
            });
        }
        loop {
            let after = cursor.clone();
            let batch = store
                .index
                .blocking(move |i| names_after(i, after.as_ref(), NAME_BATCH))
                .await?;
            let exhausted = batch.len() < NAME_BATCH;
            scanned += batch.len();
            let mut wanted: Vec<Repo> = Vec::new();
            for r in batch {
                cursor = Some(r.clone());
                if filter.matches_name(&r.name()) && visible(&r) {
                    wanted.push(r);
                }
            }
            // Summaries cost file reads: a few at a time, no more than the
            // page still needs when nothing is filtered by type.
            let mut rest = wanted.as_slice();
            while !rest.is_empty() {
                let take = if filter.kind.is_some() {
                    rest.len().min(64)
                } else {
                    rest.len().min(n + 1 - out.len())
                };
                let chunk = rest[..take].to_vec();
                rest = &rest[take..];
                let sums = self.summaries(store, chunk).await?;
                for s in sums {
                    if filter
                        .kind
                        .is_none_or(|k| s.kinds.iter().any(|c| c.as_str() == k))
                    {
                        out.push(s);
                    }
                    if out.len() > n {
                        out.truncate(n);
                        let next = out.last().map(|s| s.repo.name());
                        return Ok(Page { items: out, next });
                    }
                }
            }
            if exhausted {
                return Ok(Page {
                    items: out,
                    next: None,
                });
            }
            if scanned >= SCAN_BUDGET {
                return Ok(Page {
                    items: out,
                    next: cursor.map(|c| c.name()),
                });
            }
        }
    }

    async fn summaries(&self, store: &Store, repos: Vec<Repo>) -> Result<Vec<RepoSummary>> {
        let (me, files) = (self.clone(), Files::of(store));
        store
            .index
            .blocking(move |i| repos.iter().map(|r| me.summary(i, &files, r)).collect())
            .await
    }

    fn summary(&self, i: &Index, files: &Files, repo: &Repo) -> Result<RepoSummary> {
        let tags = repo.tags(i, None, SUMMARY_TAGS + 1)?;
        let more_tags = tags.len() > SUMMARY_TAGS;
        let mut seen: std::collections::HashSet<&Digest> = Default::default();
        let mut s = RepoSummary {
            repo: repo.clone(),
            tags: tags.len().min(SUMMARY_TAGS),
            more_tags,
            kinds: Vec::new(),
            size: 0,
            updated: None,
            pulled: None,
        };
        for (_, d) in tags.iter().take(SUMMARY_TAGS) {
            if !seen.insert(d) {
                continue;
            }
            let Some(meta) = repo.meta(i, d)? else {
                continue;
            };
            if meta.stored > 0 {
                s.updated = s.updated.max(Some(meta.stored));
            }
            s.pulled = s.pulled.max(files.pulled(repo, d, &meta)?);
            if let Some(desc) = self.describe(i, &files.blobs, repo, d, &meta, 0)? {
                s.size += desc.size;
                if !s.kinds.contains(&desc.content_type) {
                    s.kinds.push(desc.content_type.clone());
                }
            }
        }
        Ok(s)
    }

    /// A page of `repo`'s tags after `last`; `None` when it has none.
    pub async fn tags(
        &self,
        store: &Store,
        repo: &Repo,
        last: Option<&str>,
        n: usize,
    ) -> Result<Option<Page<TagSummary>>> {
        let (me, files, repo, last) = (
            self.clone(),
            Files::of(store),
            repo.clone(),
            last.map(str::to_string),
        );
        store
            .index
            .blocking(move |i| {
                let tags = repo.tags(i, last.as_deref(), n + 1)?;
                if tags.is_empty() && last.is_none() {
                    return Ok(None);
                }
                let more = tags.len() > n;
                let mut items = Vec::new();
                for (tag, d) in tags.into_iter().take(n) {
                    items.push(me.tag_summary(i, &files, &repo, tag, d)?);
                }
                let next = if more {
                    items.last().map(|t: &TagSummary| t.tag.clone())
                } else {
                    None
                };
                Ok(Some(Page { items, next }))
            })
            .await
    }

    /// One tag, with its manifest as stored (for the tag page).
    pub async fn tag(
        &self,
        store: &Store,
        repo: &Repo,
        tag: &str,
    ) -> Result<Option<(TagSummary, Option<Vec<u8>>)>> {
        let (me, files, repo, tag) = (
            self.clone(),
            Files::of(store),
            repo.clone(),
            tag.to_string(),
        );
        store
            .index
            .blocking(move |i| {
                let d = match &repo {
                    Repo::Local(r) => i.tag(r, &parse_tag(&tag)?)?,
                    Repo::Mirror { upstream, repo } => i.mirror_tag(upstream, repo, &tag)?,
                };
                let Some(d) = d else {
                    return Ok(None);
                };
                let summary = me.tag_summary(i, &files, &repo, tag, d.clone())?;
                let bytes = match summary.description {
                    Some(_) => files
                        .blobs
                        .read_small(&d, MAX_MANIFEST_BYTES as u64)
                        .map_err(|e| Error::storage("reading a manifest", e))?,
                    None => None,
                };
                Ok(Some((summary, bytes)))
            })
            .await
    }

    fn tag_summary(
        &self,
        i: &Index,
        files: &Files,
        repo: &Repo,
        tag: String,
        d: Digest,
    ) -> Result<TagSummary> {
        let meta = repo.meta(i, &d)?;
        let description = match &meta {
            Some(m) => self.describe(i, &files.blobs, repo, &d, m, 0)?,
            None => None,
        };
        let pulled = match &meta {
            Some(m) => files.pulled(repo, &d, m)?,
            None => None,
        };
        Ok(TagSummary {
            tag,
            stored: meta.as_ref().map(|m| m.stored).filter(|s| *s > 0),
            pulled,
            referrers: repo.referrers(i, &d)?,
            description,
            digest: d,
        })
    }

    /// The description of stored manifest `d` (and of its children, one
    /// level down), from the cache or its bytes.
    fn describe(
        &self,
        i: &Index,
        blobs: &BlobStore,
        repo: &Repo,
        d: &Digest,
        meta: &ManifestMeta,
        depth: u8,
    ) -> Result<Option<Arc<Description>>> {
        if let Some(hit) = self.described.get(d) {
            return Ok(Some(hit));
        }
        let Some(bytes) = blobs
            .read_small(d, MAX_MANIFEST_BYTES as u64)
            .map_err(|e| Error::storage("reading a manifest", e))?
        else {
            return Ok(None);
        };
        let mut children = Vec::new();
        if depth == 0 {
            for c in describe::children_of(&bytes) {
                if let Some(m) = repo.meta(i, &c)? {
                    if let Some(desc) = self.describe(i, blobs, repo, &c, &m, depth + 1)? {
                        children.push((c, desc));
                    }
                }
            }
        }
        let desc = Arc::new(describe::describe(&bytes, &meta.media_type, |c| {
            children
                .iter()
                .find(|(d, _)| d == c)
                .map(|(_, desc)| desc.clone())
        }));
        self.described.insert(d.clone(), desc.clone());
        Ok(Some(desc))
    }
}

/// The stored files and the record of their use, for blocking jobs.
struct Files {
    blobs: BlobStore,
    cache: Arc<CacheTracker>,
}

impl Files {
    fn of(store: &Store) -> Files {
        Files {
            blobs: store.blobs.clone(),
            cache: store.cache.clone(),
        }
    }

    /// When manifest `d` of `repo` was last pulled, unix seconds. A push
    /// also counts as a use: locally, a use within a second of the push
    /// (or before it) is not a pull. (Caching a mirrored one is.)
    fn pulled(&self, repo: &Repo, d: &Digest, meta: &ManifestMeta) -> Result<Option<u64>> {
        let local = matches!(repo, Repo::Local(_));
        Ok(self
            .cache
            .last_used(d)?
            .map(|ms| ms / 1000)
            .filter(|s| !local || *s > meta.stored + 1))
    }
}

/// The inventory as one caller may see it: only repositories `visible`
/// lets them pull; any other is unknown, as if it did not exist.
pub struct Viewer<'a> {
    pub store: &'a Store,
    pub router: &'a Router,
    pub inventory: &'a Inventory,
    pub visible: &'a (dyn Fn(&Repo) -> bool + Sync),
}

impl Viewer<'_> {
    pub async fn repositories(
        &self,
        filter: &Filter,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page<RepoSummary>> {
        self.inventory
            .repositories(self.store, self.router, filter, last, n, self.visible)
            .await
    }

    /// The repository a client name routes to, if the caller may see it.
    pub fn repo(&self, name: &str) -> Result<Repo> {
        let repo = Repo::resolve(self.router, &parse_name(name)?)?;
        if (self.visible)(&repo) {
            Ok(repo)
        } else {
            Err(unknown_repo(name))
        }
    }

    /// A page of a visible repository's tags; unknown when it has none.
    pub async fn tags(
        &self,
        name: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Repo, Page<TagSummary>)> {
        let repo = self.repo(name)?;
        match self.inventory.tags(self.store, &repo, last, n).await? {
            Some(p) => Ok((repo, p)),
            None => Err(unknown_repo(name)),
        }
    }

    /// One tag of a visible repository and its stored manifest.
    pub async fn tag(&self, name: &str, tag: &str) -> Result<(Repo, TagSummary, Option<Vec<u8>>)> {
        let repo = self.repo(name)?;
        match self.inventory.tag(self.store, &repo, tag).await? {
            Some((t, bytes)) => Ok((repo, t, bytes)),
            None => Err(Error::oci(
                ErrorCode::ManifestUnknown,
                format!("{name} has no tag {tag}"),
            )),
        }
    }
}

fn unknown_repo(name: &str) -> Error {
    Error::oci(
        ErrorCode::NameUnknown,
        format!("repository {name} is not known here"),
    )
}

/// Repository names read from the index at a time while a catalog page
/// skips those the caller may not see.
const CATALOG_BATCH: usize = 1000;

/// A page of local `repo`'s tag names after `last`, read on the blocking
/// pool (a page may hold 10,000).
pub async fn tag_names(
    store: &Store,
    repo: &RepoName,
    last: Option<&str>,
    n: usize,
) -> Result<Page<String>> {
    let (repo, last) = (repo.clone(), last.map(str::to_string));
    let items = match n {
        0 => Vec::new(),
        n => {
            store
                .index
                .blocking(move |i| i.tags(&repo, last.as_deref(), n + 1))
                .await?
        }
    };
    Ok(cut(items, n))
}

/// A page of local repository names after `last` that `visible` lets the
/// caller see. Names are read in batches on the blocking pool and checked
/// between batches, so a caller who sees few of many repositories never
/// holds an async worker for long.
pub async fn local_names(
    store: &Store,
    last: Option<&str>,
    n: usize,
    visible: impl Fn(&str) -> bool,
) -> Result<Page<String>> {
    let mut repos = Vec::new();
    let mut cursor = last.map(str::to_string);
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
    Ok(cut(repos, n))
}

/// A page of `items`, read with one entry more than the page holds.
fn cut(items: Vec<String>, n: usize) -> Page<String> {
    let (items, next) = crate::reply::page::cut(items, n);
    Page { items, next }
}

/// Repositories after `after` in listing order: local ones (by name), then
/// mirrored ones (by upstream, then name).
fn names_after(i: &Index, after: Option<&Repo>, n: usize) -> Result<Vec<Repo>> {
    let mut out = Vec::new();
    let mirror_after = match after {
        Some(Repo::Mirror { upstream, repo }) => Some((upstream.as_str(), repo.as_str())),
        local => {
            let last = match local {
                Some(Repo::Local(l)) => Some(l.as_str()),
                _ => None,
            };
            for name in i.repos(last, n)? {
                if let Ok(r) = RepoName::parse(&name) {
                    out.push(Repo::Local(r));
                }
            }
            None
        }
    };
    if out.len() < n {
        for (upstream, repo) in i.mirror_repos(mirror_after, n - out.len())? {
            out.push(Repo::Mirror { upstream, repo });
        }
    }
    Ok(out)
}

/// A repository name from a request, or `NAME_INVALID`.
pub fn parse_name(s: &str) -> Result<RepoName> {
    RepoName::parse(s).map_err(|e| Error::oci(ErrorCode::NameInvalid, e.to_string()))
}

fn parse_tag(s: &str) -> Result<crate::oci::Tag> {
    crate::oci::Tag::parse(s).map_err(|e| Error::oci(ErrorCode::TagInvalid, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_refuse_unknown_types_and_long_text() {
        assert!(Filter::parse(Some("bogus"), None).is_err());
        assert!(Filter::parse(None, Some(&"a".repeat(100 * 1024))).is_err());
        let f = Filter::parse(Some("helm"), Some("  Alp ")).unwrap();
        assert_eq!(f.kind, Some("helm"));
        assert!(f.matches_name("docker.io/library/alpine"));
        assert!(!f.matches_name("golden/app"));
        assert_eq!(
            Filter::parse(Some("all"), Some("")).unwrap(),
            Filter::default()
        );
    }
}
