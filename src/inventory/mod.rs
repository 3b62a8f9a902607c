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
use crate::store::index::ManifestMeta;
use crate::store::{Index, Store};
pub use describe::{Description, Part};
use std::sync::Arc;
use std::time::Duration;

/// Repository names read from the index at a time.
const NAME_BATCH: usize = 256;
/// Most repositories one listing request looks at (a filter that matches
/// few of many returns a shorter page and a cursor to go on from).
const SCAN_BUDGET: usize = 5_000;
/// Tags read to summarise one repository (more are shown as "100+").
const SUMMARY_TAGS: usize = 100;
/// Most tags one listing request summarises (across its repositories):
/// past it, the page ends early with a cursor to go on from.
const WORK_BUDGET: usize = 10_000;
/// Listing jobs on the blocking pool at once (their own slots: the
/// index's are left to the registry and the probes).
const JOBS: usize = 2;
/// Bytes the manifest descriptions cache may hold (estimated).
const DESCRIBED_BYTES: u64 = 32 << 20;
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

    /// The repository a name as listed (or as a client names it) stands
    /// for. A mirrored name may start with a configured upstream name that
    /// holds a port, which repository names cannot.
    pub fn parse(router: &Router, s: &str) -> Result<Repo> {
        if let Some((first, rest)) = s.split_once('/') {
            if let Some(upstream) = router.upstream_prefixed(first) {
                let rest = parse_name(rest)?;
                if let Backend::Mirror { upstream, repo } = router.mirror(upstream, rest.as_str()) {
                    return Ok(Repo::Mirror { upstream, repo });
                }
            }
        }
        Repo::resolve(router, &parse_name(s)?)
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

    /// Whether it holds anything to list.
    fn exists(&self, i: &Index) -> Result<bool> {
        match self {
            Repo::Local(r) => i.repo_exists(r),
            Repo::Mirror { .. } => Ok(!self.tags(i, None, 1)?.is_empty()),
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
    /// Descriptions of manifests that are not indexes (an index's depends
    /// on which children its repository holds).
    described: moka::sync::Cache<Digest, Arc<Description>>,
    jobs: Arc<tokio::sync::Semaphore>,
    /// Signs the cursors that name where a scan stopped.
    cursors: Arc<ring::hmac::Key>,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::new()
    }
}

impl Inventory {
    pub fn new() -> Inventory {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"wharf"));
        Inventory {
            described: moka::sync::Cache::builder()
                .weigher(|_, d: &Arc<Description>| d.weight())
                .max_capacity(DESCRIBED_BYTES)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            jobs: Arc::new(tokio::sync::Semaphore::new(JOBS)),
            cursors: Arc::new(key),
        }
    }

    /// Runs `f` on the blocking pool in one of the inventory's own slots.
    async fn run<T, F>(&self, store: &Store, f: F) -> Result<T>
    where
        F: FnOnce(&Index) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _slot = self
            .jobs
            .acquire()
            .await
            .map_err(|e| Error::storage("waiting for a listing slot", e))?;
        let store = store.clone();
        tokio::task::spawn_blocking(move || f(store.index()))
            .await
            .map_err(|e| Error::storage("listing", e))?
    }

    /// A cursor for `repo` that does not say its name: `~` and the name
    /// and a signature, in base64url.
    fn seal_cursor(&self, repo: &Repo) -> String {
        use base64::Engine as _;
        let name = repo.name();
        let tag = ring::hmac::sign(&self.cursors, name.as_bytes());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "~{}.{}",
            b64.encode(name.as_bytes()),
            b64.encode(&tag.as_ref()[..16])
        )
    }

    /// The name a `last` stands for: itself, or what a sealed cursor this
    /// process made holds.
    fn open_cursor(&self, last: &str) -> Result<String> {
        use base64::Engine as _;
        let Some(sealed) = last.strip_prefix('~') else {
            return Ok(last.to_string());
        };
        let bad = || {
            Error::oci(
                ErrorCode::ParameterInvalid,
                "last is not a cursor this server gave (they last until it restarts)",
            )
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (name, tag) = sealed.split_once('.').ok_or_else(bad)?;
        let name = b64.decode(name).map_err(|_| bad())?;
        let tag = b64.decode(tag).map_err(|_| bad())?;
        let want = ring::hmac::sign(&self.cursors, &name);
        if tag.len() != 16
            || !bool::from(subtle::ConstantTimeEq::ct_eq(
                &want.as_ref()[..16],
                &tag[..],
            ))
        {
            return Err(bad());
        }
        String::from_utf8(name).map_err(|_| bad())
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
            Some(l) => Some(Repo::parse(router, &self.open_cursor(l)?)?),
            None => None,
        };
        let upstreams: Arc<[String]> = router.upstream_names().into();
        let mut out: Vec<RepoSummary> = Vec::new();
        let (mut scanned, mut work) = (0, 0);
        if n == 0 {
            return Ok(Page {
                items: out,
                next: None,
            });
        }
        loop {
            let (after, configured) = (cursor.clone(), upstreams.clone());
            let batch = self
                .run(store, move |i| {
                    names_after(i, after.as_ref(), NAME_BATCH, &configured)
                })
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
                let last_done = sums.last().map(|s| s.repo.clone());
                for s in sums {
                    work += s.tags;
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
                if work >= WORK_BUDGET && !rest.is_empty() {
                    // Enough for one request: go on after the last one
                    // summarised (one the caller may see).
                    return Ok(Page {
                        items: out,
                        next: last_done.map(|r| r.name()),
                    });
                }
            }
            if exhausted {
                return Ok(Page {
                    items: out,
                    next: None,
                });
            }
            if scanned >= SCAN_BUDGET || work >= WORK_BUDGET {
                // The scan may have stopped on a repository the caller may
                // not see: the cursor does not say its name.
                return Ok(Page {
                    items: out,
                    next: cursor.map(|c| self.seal_cursor(&c)),
                });
            }
        }
    }

    async fn summaries(&self, store: &Store, repos: Vec<Repo>) -> Result<Vec<RepoSummary>> {
        let (me, files) = (self.clone(), Files::of(store));
        self.run(store, move |i| {
            repos.iter().map(|r| me.summary(i, &files, r)).collect()
        })
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
            if let Some(desc) = self.describe(i, &files.store, repo, d, &meta, 0)? {
                s.size = s.size.saturating_add(desc.size);
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
        self.run(store, move |i| {
            if !repo.exists(i)? {
                return Ok(None);
            }
            let tags = repo.tags(i, last.as_deref(), n + 1)?;
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
        self.run(store, move |i| {
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
                    .store
                    .read_small_blocking(&d, MAX_MANIFEST_BYTES as u64)?,
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
            Some(m) => self.describe(i, &files.store, repo, &d, m, 0)?,
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
        store: &Store,
        repo: &Repo,
        d: &Digest,
        meta: &ManifestMeta,
        depth: u8,
    ) -> Result<Option<Arc<Description>>> {
        if let Some(hit) = self.described.get(d) {
            return Ok(Some(hit));
        }
        let Some(bytes) = store.read_small_blocking(d, MAX_MANIFEST_BYTES as u64)? else {
            return Ok(None);
        };
        let mut children = Vec::new();
        if depth == 0 {
            for c in describe::children_of(&bytes) {
                if let Some(m) = repo.meta(i, &c)? {
                    if let Some(desc) = self.describe(i, store, repo, &c, &m, depth + 1)? {
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
        if !desc.is_index() {
            self.described.insert(d.clone(), desc.clone());
        }
        Ok(Some(desc))
    }
}

/// The stored files and the record of their use, for blocking jobs.
struct Files {
    store: Store,
}

impl Files {
    fn of(store: &Store) -> Files {
        Files {
            store: store.clone(),
        }
    }

    /// When manifest `d` of `repo` was last pulled, unix seconds. A push
    /// also counts as a use: locally, a use within a second of the push
    /// (or before it) is not a pull. (Caching a mirrored one is.)
    fn pulled(&self, repo: &Repo, d: &Digest, meta: &ManifestMeta) -> Result<Option<u64>> {
        let local = matches!(repo, Repo::Local(_));
        Ok(self
            .store
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
        let repo = Repo::parse(self.router, name)?;
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
                .index()
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
            .index()
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
/// Mirrored repositories of upstreams no longer configured are left out.
fn names_after(
    i: &Index,
    after: Option<&Repo>,
    n: usize,
    configured: &[String],
) -> Result<Vec<Repo>> {
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
    let mut from = mirror_after.map(|(u, r)| (u.to_string(), r.to_string()));
    while out.len() < n {
        let want = n - out.len();
        let got = i.mirror_repos(from.as_ref().map(|(u, r)| (u.as_str(), r.as_str())), want)?;
        let done = got.len() < want;
        from = got.last().cloned();
        for (upstream, repo) in got {
            if configured.contains(&upstream) {
                out.push(Repo::Mirror { upstream, repo });
            }
        }
        if done {
            break;
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
    fn sealed_cursors_hide_the_name_and_refuse_tampering() {
        let inv = Inventory::new();
        let repo = Repo::Local(RepoName::parse("secret/payroll-db").unwrap());
        let c = inv.seal_cursor(&repo);
        assert!(c.starts_with('~') && !c.contains("payroll"), "{c}");
        assert_eq!(inv.open_cursor(&c).unwrap(), "secret/payroll-db");
        assert_eq!(inv.open_cursor("golden/app").unwrap(), "golden/app");
        let mut forged = c.clone();
        forged.replace_range(1..3, "QQ");
        for bad in [forged.as_str(), "~", "~abc", "~abc.def", "~.."] {
            let e = inv.open_cursor(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ParameterInvalid, "{bad}");
        }
        // Another process's cursors do not open here.
        assert!(Inventory::new().open_cursor(&c).is_err());
    }

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
