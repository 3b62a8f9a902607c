//! The sled index: what blob files cannot say about themselves. One sled
//! tree with prefixed keys, so a change that touches several records (a
//! manifest, its tag, its referrer entry) is one atomic batch. Digests in
//! keys and values are binary (`layout` owns every encoding):
//!
//! | key | value |
//! |---|---|
//! | `p/<repo>` | repository holds a manifest (for the catalog and tag lists) |
//! | `l/<repo>\0<digest>` | blob (or manifest) is linked into the repository |
//! | `m/<repo>\0<digest>` | [`ManifestMeta`] |
//! | `t/<repo>\0<tag>` | digest the tag points to |
//! | `r/<repo>\0<subject>\0<digest>` | referrer [`Descriptor`] (JSON) |
//! | `u/<session>` | [`UploadMeta`] (JSON) |
//! | `B/<upstream>\0<digest>` | a mirrored blob is cached (its size) |
//! | `M/<upstream>\0<digest>` | a mirrored manifest is cached ([`ManifestMeta`]) |
//! | `T/<upstream>\0<repo>\0<tag>` | last known digest of a mirrored tag |
//! | `s/<digest>` | the blob file's last access, unix milliseconds (written at most once a minute), and its seal: ctime and length when it was committed |
//! | `J/<key>` | with a bucket: record `<key>` changed, the bucket may lack it (see `store::journal`) |
//! | `S/origin` | with a bucket: which bucket the durable records came from |
//! | `C/counts` | the mirror cache's totals at the last clean shutdown (see `store::cache`) |
//! | `V/layout` | the layout of the records (`migrate` turns older ones into this one) |
//!
//! The database is the directory `DATA/index.v2`; `DATA/index` is a file
//! naming its layout (see `migrate`).
//!
//! Mirrored content is keyed by upstream, apart from local repositories:
//! a mirrored name can never shadow a local one, nor the other way round.
//! sled keeps keys sorted by bytes, so tags and repositories list in
//! lexical order for free, and referrers in digest order. Keep sled behind
//! this module.
//!
//! A repository leaves the catalog when its last manifest and tag are
//! deleted: the check that it is empty and the removal of `p/<repo>` hold
//! the index's gate exclusively, and every manifest PUT records under it
//! (shared), so a push landing while the repository empties is never
//! left out of the catalog. Long reads (listings) go through
//! [`Index::blocking`], on the blocking pool.

mod layout;
mod migrate;

use super::bucket::Bucket;
use super::journal::{Journal, Noted};
use crate::error::{Error, Result};
use crate::oci::manifest::Descriptor;
use crate::oci::{Digest, RepoName, Tag};
use layout::FileRecord;
pub(super) use layout::{from_text, text_key, to_text};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

/// What the index records about a stored manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestMeta {
    pub media_type: String,
    pub size: u64,
    #[serde(default)]
    pub subject: Option<Digest>,
    /// When it was pushed (local) or cached (mirrored), unix seconds; 0
    /// for records written before this was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stored: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One cached mirrored blob or manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorEntry {
    pub upstream: String,
    pub digest: Digest,
    pub size: u64,
    pub manifest: bool,
}

/// A persisted upload session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UploadMeta {
    pub repo: String,
    pub started_unix: u64,
    /// Whose upload limits the session counts against.
    #[serde(default)]
    pub owner: String,
}

/// A new manifest and everything that changes with it.
pub struct ManifestPut<'a> {
    pub repo: &'a RepoName,
    pub digest: &'a Digest,
    pub meta: ManifestMeta,
    pub tags: &'a [Tag],
    /// The descriptor to list under the manifest's subject, if it has one.
    pub referrer: Option<Descriptor>,
}

#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    flusher: Arc<GroupFlush>,
    /// Shared by manifest PUTs while they record; exclusive while a
    /// repository that may have emptied is checked and forgotten.
    gate: Arc<RwLock<()>>,
    /// Slots for [`Index::blocking`] jobs.
    jobs: Arc<tokio::sync::Semaphore>,
    /// With a bucket: the durable records' changes on their way there.
    journal: Option<Arc<Journal>>,
    /// `DATA/index.lock`, held while any handle is open.
    _lock: Arc<std::fs::File>,
}

/// Changes applied to sled in one batch, and journaled.
#[derive(Default)]
struct Changes {
    batch: sled::Batch,
    keys: Vec<Vec<u8>>,
}

impl Changes {
    fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.batch.remove(k.as_ref());
        self.keys.push(k.as_ref().to_vec());
    }
}

/// Adds the removal of `d`'s mirror records (and its access time and
/// seal) to `b`.
fn forget_into<'a>(b: &mut Changes, d: &Digest, entries: impl Iterator<Item = &'a MirrorEntry>) {
    for e in entries {
        b.remove(if e.manifest {
            layout::mirror_manifest(&e.upstream, d)
        } else {
            layout::mirror_blob(&e.upstream, d)
        });
    }
    b.remove(layout::file(d));
}

/// The key of the mirror cache's totals saved at a clean shutdown.
const COUNTS: &[u8] = b"C/counts";

/// Most [`Index::blocking`] jobs at once: the rest wait (without a
/// thread), leaving the blocking pool to file reads and writes.
const BLOCKING_JOBS: usize = 4;

/// Group commit for [`Index::flush`]: one synchronous sled flush at a time,
/// and each one covers every caller that asked before it started.
///
/// sled 0.34's `flush_async` deadlocks when called concurrently
/// (spacejam/sled#1308, fixed only on its unreleased main branch); under 25
/// concurrent pushes it hung the whole server here. The blocking `flush`
/// runs on the blocking pool instead, and coalescing keeps N concurrent
/// pushes from occupying N blocking threads with N fsyncs.
#[derive(Default)]
struct GroupFlush {
    /// Tickets handed out; a caller takes one after its writes.
    requested: std::sync::atomic::AtomicU64,
    /// Every ticket up to this one is durable.
    completed: std::sync::atomic::AtomicU64,
    /// Held while a flush runs.
    running: tokio::sync::Mutex<()>,
}

/// The key prefix under which all `prefix` records of `repo` live.
fn repo_prefix(prefix: &str, repo: &RepoName) -> Vec<u8> {
    layout::under(prefix, &[layout::Part::Text(repo.as_str())])
}

/// A manifest record's value, or why it cannot be read.
fn decode_meta(v: &[u8]) -> Result<ManifestMeta> {
    layout::decode_meta(v).ok_or_else(|| {
        Error::storage(
            "decoding a manifest record",
            std::io::Error::other("malformed record"),
        )
    })
}

fn db_err(context: &str) -> impl FnOnce(sled::Error) -> Error + '_ {
    move |e| Error::storage(context.to_string(), e)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::storage("decoding an index record", e))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Index {
    /// Opens the index at `path`, keeping up to `cache_bytes` of it in
    /// memory; with a `bucket`, every change of a durable record also goes
    /// to the bucket by the next flush.
    pub(super) fn open(
        path: &Path,
        cache_bytes: u64,
        bucket: Option<Arc<Bucket>>,
    ) -> Result<Index> {
        let lock = migrate::lock(path)?;
        let db = migrate::open(path, cache_bytes)?;
        let journal = match bucket {
            Some(b) => Some(Arc::new(Journal::open(b, db.clone())?)),
            None => None,
        };
        Ok(Index {
            db,
            flusher: Default::default(),
            gate: Default::default(),
            jobs: Arc::new(tokio::sync::Semaphore::new(BLOCKING_JOBS)),
            journal,
            _lock: Arc::new(lock),
        })
    }

    /// Notes (before they happen) that records `keys` change; the changes
    /// are made while the returned guard is held.
    fn note<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> sled::Result<Noted<'_>> {
        match &self.journal {
            Some(j) => j.note(keys),
            None => Ok(Noted::none()),
        }
    }

    /// Inserts one record, journaling it.
    fn insert(&self, k: Vec<u8>, v: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        let _noted = self.note([k.as_slice()])?;
        self.db.insert(&k, v.as_ref())
    }

    /// Removes one record, journaling it.
    fn remove(&self, k: Vec<u8>) -> sled::Result<Option<sled::IVec>> {
        let _noted = self.note([k.as_slice()])?;
        self.db.remove(&k)
    }

    /// Applies a batch, journaling it.
    fn apply(&self, c: Changes) -> sled::Result<()> {
        let _noted = self.note(c.keys.iter().map(Vec::as_slice))?;
        self.db.apply_batch(c.batch)
    }

    /// With a bucket: sends the changes noted so far to it (not a full
    /// flush: the local index is a cache there). Garbage collection and
    /// eviction call it between forgetting a blob and deleting its object,
    /// so the bucket never keeps a record of a deleted object.
    pub(super) async fn push_journal(&self) -> Result<()> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        // One at a time with flushes, to keep each record's order.
        let _running = self.flusher.running.lock().await;
        j.push().await
    }

    /// The sled database, for checks at start-up.
    pub(super) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// With a bucket: fills the index from it when this data directory
    /// does not hold its records yet.
    pub(super) async fn restore(&self) -> Result<Option<usize>> {
        match &self.journal {
            Some(j) => super::journal::restore(j).await,
            None => Ok(None),
        }
    }

    /// Runs `f` (index work that may take long: listings, scans) on the
    /// blocking pool, at most [`BLOCKING_JOBS`] at once, so the async
    /// workers keep answering everyone else meanwhile.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Index) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .jobs
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::storage("waiting for an index job slot", e))?;
        let index = self.clone();
        tokio::task::spawn_blocking(move || {
            // Held until the job ends, even if the request is dropped.
            let _permit = permit;
            f(&index)
        })
        .await
        .map_err(|e| Error::storage("joining an index job", e))?
    }

    /// Whether the index answers a read (for the readiness probe).
    pub async fn readable(&self) -> Result<()> {
        self.blocking(|index| {
            index
                .db
                .get(b"readiness probe")
                .map(|_| ())
                .map_err(db_err("reading the index"))
        })
        .await
    }

    /// Makes every change so far durable (with a bucket: in the bucket); a
    /// push is acknowledged after this.
    pub(super) async fn flush(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let g = &self.flusher;
        let ticket = g.requested.fetch_add(1, SeqCst) + 1;
        let _running = g.running.lock().await;
        if g.completed.load(SeqCst) >= ticket {
            return Ok(()); // a flush that started after our writes finished
        }
        // Everyone holding a ticket up to `covers` wrote before taking it.
        let covers = g.requested.load(SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| Error::storage("flushing the index".to_string(), e))?
            .map_err(db_err("flushing the index"))?;
        // Then the bucket: one flush at a time, so a record's changes
        // reach it in the order they were made.
        if let Some(j) = &self.journal {
            j.push().await?;
        }
        g.completed.store(covers, SeqCst);
        Ok(())
    }

    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        self.db
            .contains_key(layout::repo(repo.as_str()))
            .map_err(db_err("reading a repository"))
    }

    /// Repository names in lexical order, after `last`, at most `n`.
    pub fn repos(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.list_after(b"p/".to_vec(), last, n)
    }

    /// Links a blob into a repository. A repository holding only blobs
    /// is not listed (it has no manifest yet).
    pub(super) fn link_blob(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        self.insert(layout::link(repo.as_str(), d), [])
            .map(|_| ())
            .map_err(db_err("linking a blob"))
    }

    pub fn blob_linked(&self, repo: &RepoName, d: &Digest) -> Result<bool> {
        self.db
            .contains_key(layout::link(repo.as_str(), d))
            .map_err(db_err("reading a blob link"))
    }

    /// Unlinks a blob from a repository; false when it was not linked.
    pub(super) fn unlink_blob(&self, repo: &RepoName, d: &Digest) -> Result<bool> {
        self.remove(layout::link(repo.as_str(), d))
            .map(|old| old.is_some())
            .map_err(db_err("unlinking a blob"))
    }

    /// Records a manifest, its tags, its link and its referrer entry at
    /// once. Returns what each tag pointed at before (for the audit log).
    pub(super) fn put_manifest(&self, put: ManifestPut<'_>) -> Result<Vec<Option<Digest>>> {
        let repo = put.repo.as_str();
        let digest = layout::digest_bytes(put.digest);
        let meta = layout::encode_meta(&put.meta);
        let referrer = match (&put.meta.subject, &put.referrer) {
            (Some(subject), Some(desc)) => {
                Some((layout::referrer(repo, subject, put.digest), encode(desc)))
            }
            _ => None,
        };
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let mut written: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (layout::repo(repo), Vec::new()),
            (layout::link(repo, put.digest), Vec::new()),
        ];
        written.extend(referrer);
        written.push((layout::manifest(repo, put.digest), meta));
        let records = written.len();
        for tag in put.tags {
            written.push((layout::tag(repo, tag.as_str()), digest.clone()));
        }
        let _noted = self
            .note(written.iter().map(|(k, _)| k.as_slice()))
            .map_err(db_err("recording a manifest"))?;
        let old = self
            .db
            .transaction(|tx| {
                for (k, v) in &written[..records] {
                    tx.insert(k.as_slice(), v.as_slice())?;
                }
                let mut old = Vec::with_capacity(put.tags.len());
                for (k, v) in &written[records..] {
                    old.push(tx.insert(k.as_slice(), v.as_slice())?);
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(old)
            })
            .map_err(|e| {
                Error::storage(
                    "recording a manifest",
                    std::io::Error::other(format!("{e:?}")),
                )
            })?;
        Ok(old
            .into_iter()
            .map(|v| v.and_then(|v| layout::read_digest(&v)))
            .collect())
    }

    pub fn manifest(&self, repo: &RepoName, d: &Digest) -> Result<Option<ManifestMeta>> {
        self.db
            .get(layout::manifest(repo.as_str(), d))
            .map_err(db_err("reading a manifest"))?
            .map(|v| decode_meta(&v))
            .transpose()
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        self.digest_at(layout::tag(repo.as_str(), tag.as_str()))
    }

    /// The digest stored as the value of `k`, if any.
    fn digest_at(&self, k: Vec<u8>) -> Result<Option<Digest>> {
        let Some(v) = self.db.get(k).map_err(db_err("reading a tag"))? else {
            return Ok(None);
        };
        layout::read_digest(&v).map(Some).ok_or_else(|| {
            Error::storage("decoding a tag", std::io::Error::other("malformed record"))
        })
    }

    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    pub fn tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        self.list_after(repo_prefix("t/", repo), last, n)
    }

    /// Removes a tag; returns whether it existed and what it pointed at.
    pub(super) fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Option<Digest>>> {
        let old = self
            .remove(layout::tag(repo.as_str(), tag.as_str()))
            .map_err(db_err("deleting a tag"))?;
        if old.is_some() {
            self.forget_if_empty(repo)?;
        }
        Ok(old.map(|v| layout::read_digest(&v)))
    }

    /// Removes `repo` from the catalog if it holds no manifest and no tag.
    /// Exclusive against manifest PUTs recording (see the module notes).
    fn forget_if_empty(&self, repo: &RepoName) -> Result<()> {
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        for prefix in ["m/", "t/"] {
            let any = self
                .db
                .scan_prefix(repo_prefix(prefix, repo))
                .next()
                .transpose()
                .map_err(db_err("checking a repository"))?;
            if any.is_some() {
                return Ok(());
            }
        }
        self.remove(layout::repo(repo.as_str()))
            .map(|_| ())
            .map_err(db_err("forgetting an empty repository"))
    }

    /// Removes a manifest, every tag pointing at it, its link and its
    /// referrer entry, at once. Returns the tags removed, or `None` when
    /// the manifest did not exist.
    pub(super) fn delete_manifest(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<Option<Vec<String>>> {
        let Some(meta) = self.manifest(repo, d)? else {
            return Ok(None);
        };
        let digest = layout::digest_bytes(d);
        let mut b = Changes::default();
        let prefix = repo_prefix("t/", repo);
        let mut tags = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(db_err("scanning tags"))?;
            if v.as_ref() == digest.as_slice() {
                tags.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
                b.remove(k);
            }
        }
        if let Some(subject) = &meta.subject {
            b.remove(layout::referrer(repo.as_str(), subject, d));
        }
        b.remove(layout::manifest(repo.as_str(), d));
        b.remove(layout::link(repo.as_str(), d));
        self.apply(b).map_err(db_err("deleting a manifest"))?;
        self.forget_if_empty(repo)?;
        Ok(Some(tags))
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`,
    /// in digest order, after the referrer digest `after`; read lazily, so
    /// a page reads only what it lists.
    pub fn referrers_after(
        &self,
        repo: &RepoName,
        subject: &Digest,
        after: Option<&Digest>,
    ) -> impl Iterator<Item = Result<Descriptor>> {
        use layout::Part;
        let prefix = layout::under("r/", &[Part::Text(repo.as_str()), Part::Digest(subject)]);
        let start = match after {
            Some(a) => {
                let mut k = layout::referrer(repo.as_str(), subject, a);
                k.push(0); // the smallest key after `a`'s
                k
            }
            None => prefix.clone(),
        };
        self.db
            .range(start..)
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|kv| decode(&kv.map_err(db_err("scanning referrers"))?.1))
    }

    pub(super) fn put_upload(&self, id: &str, meta: &UploadMeta) -> Result<()> {
        self.insert(layout::upload(id), encode(meta))
            .map(|_| ())
            .map_err(db_err("recording an upload"))
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadMeta>> {
        self.db
            .get(layout::upload(id))
            .map_err(db_err("reading an upload"))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Removes a session's record; returns it if this call removed it.
    pub(super) fn remove_upload(&self, id: &str) -> Result<Option<UploadMeta>> {
        self.remove(layout::upload(id))
            .map_err(db_err("removing an upload"))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every recorded upload session id.
    pub fn upload_ids(&self) -> Result<Vec<String>> {
        self.db
            .scan_prefix(b"u/")
            .map(|kv| {
                let (k, _) = kv.map_err(db_err("scanning uploads"))?;
                Ok(String::from_utf8_lossy(&k[2..]).into_owned())
            })
            .collect()
    }

    /// Records a cached mirrored blob.
    pub(super) fn put_mirror_blob(&self, upstream: &str, d: &Digest, size: u64) -> Result<()> {
        self.insert(
            layout::mirror_blob(upstream, d),
            size.to_string().as_bytes(),
        )
        .map(|_| ())
        .map_err(db_err("recording a mirrored blob"))
    }

    /// The recorded size of a cached mirrored blob.
    pub fn mirror_blob_size(&self, upstream: &str, d: &Digest) -> Result<Option<u64>> {
        Ok(self
            .db
            .get(layout::mirror_blob(upstream, d))
            .map_err(db_err("reading a mirrored blob"))?
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok())))
    }

    pub fn mirror_blob(&self, upstream: &str, d: &Digest) -> Result<bool> {
        self.db
            .contains_key(layout::mirror_blob(upstream, d))
            .map_err(db_err("reading a mirrored blob"))
    }

    /// Records a cached mirrored manifest.
    pub(super) fn put_mirror_manifest(
        &self,
        upstream: &str,
        d: &Digest,
        meta: &ManifestMeta,
    ) -> Result<()> {
        self.insert(
            layout::mirror_manifest(upstream, d),
            layout::encode_meta(meta),
        )
        .map(|_| ())
        .map_err(db_err("recording a mirrored manifest"))
    }

    pub fn mirror_manifest(&self, upstream: &str, d: &Digest) -> Result<Option<ManifestMeta>> {
        self.db
            .get(layout::mirror_manifest(upstream, d))
            .map_err(db_err("reading a mirrored manifest"))?
            .map(|v| decode_meta(&v))
            .transpose()
    }

    /// Forgets a cached mirrored manifest (its file is gone).
    pub(super) fn remove_mirror_manifest(&self, upstream: &str, d: &Digest) -> Result<()> {
        self.remove(layout::mirror_manifest(upstream, d))
            .map(|_| ())
            .map_err(db_err("forgetting a mirrored manifest"))
    }

    /// Forgets a cached mirrored blob (its file is gone).
    pub(super) fn remove_mirror_blob(&self, upstream: &str, d: &Digest) -> Result<()> {
        self.remove(layout::mirror_blob(upstream, d))
            .map(|_| ())
            .map_err(db_err("forgetting a mirrored blob"))
    }

    /// Remembers the digest a mirrored tag resolved to (the offline
    /// fallback). Writes only when it changed.
    pub(super) fn put_mirror_tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        d: &Digest,
    ) -> Result<()> {
        let k = layout::mirror_tag(upstream, repo, tag);
        let v = layout::digest_bytes(d);
        let old = self.db.get(&k).map_err(db_err("reading a mirrored tag"))?;
        if old.as_deref() != Some(v.as_slice()) {
            self.insert(k, v)
                .map_err(db_err("recording a mirrored tag"))?;
        }
        Ok(())
    }

    pub fn mirror_tag(&self, upstream: &str, repo: &str, tag: &str) -> Result<Option<Digest>> {
        self.digest_at(layout::mirror_tag(upstream, repo, tag))
    }

    /// Tags of a mirrored repository known from earlier pulls.
    pub fn mirror_tags(
        &self,
        upstream: &str,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>> {
        let prefix = layout::mirror_tags_of(upstream, repo);
        self.list_after(prefix, last, n)
    }

    /// Tags of a mirrored repository known from earlier pulls, with the
    /// digests they last resolved to, after `last`, at most `n`.
    pub fn mirror_tag_digests(
        &self,
        upstream: &str,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(String, Digest)>> {
        let prefix = layout::mirror_tags_of(upstream, repo);
        self.tagged(prefix, last, n)
    }

    /// Tags of local `repo` with their digests, in lexical order, after
    /// `last`, at most `n`.
    pub fn tag_digests(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(String, Digest)>> {
        self.tagged(repo_prefix("t/", repo), last, n)
    }

    fn tagged(
        &self,
        prefix: Vec<u8>,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(String, Digest)>> {
        let mut out = Vec::new();
        for kv in self.db.range(after_key(&prefix, last)..) {
            if out.len() >= n {
                break;
            }
            let (k, v) = kv.map_err(db_err("listing tags"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let tag = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(d) = layout::read_digest(&v) {
                out.push((tag, d));
            }
        }
        Ok(out)
    }

    /// Mirrored repositories known from earlier pulls (those with a
    /// remembered tag), as (upstream, repository), in key order after
    /// `after`, at most `n`. Skips from one repository to the next without
    /// reading its tags.
    pub fn mirror_repos(
        &self,
        after: Option<(&str, &str)>,
        n: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut start = match after {
            Some((u, r)) => past_repo(u, r),
            None => b"T/".to_vec(),
        };
        let mut out = Vec::new();
        while out.len() < n {
            let Some(kv) = self.db.range(start..).next() else {
                break;
            };
            let (k, _) = kv.map_err(db_err("listing mirrored repositories"))?;
            if !k.starts_with(b"T/") {
                break;
            }
            let rest = String::from_utf8_lossy(&k[2..]).into_owned();
            let mut parts = rest.splitn(3, '\0');
            let (Some(u), Some(r), Some(_tag)) = (parts.next(), parts.next(), parts.next()) else {
                // Not a tag record: step over this one key.
                start = k.to_vec();
                start.push(0);
                continue;
            };
            start = past_repo(u, r);
            out.push((u.to_string(), r.to_string()));
        }
        Ok(out)
    }

    /// What the index keeps about blob file `d` (local: never journaled).
    /// A record that does not decode has a seal no file matches, so the
    /// file is hashed again rather than trusted.
    fn file(&self, d: &Digest) -> Result<Option<FileRecord>> {
        Ok(self
            .db
            .get(layout::file(d))
            .map_err(db_err("reading a blob's record"))?
            .map(|v| {
                FileRecord::decode(&v).unwrap_or_else(|| FileRecord {
                    access: 0,
                    seal: "unreadable".into(),
                })
            }))
    }

    /// Changes blob file `d`'s record atomically (the seal and the access
    /// time are written by different tasks): `f` gets the current record
    /// (a default one when there is none); an empty result removes it.
    fn update_file(&self, d: &Digest, f: impl Fn(&mut FileRecord)) -> Result<()> {
        self.db
            .update_and_fetch(layout::file(d), |old| {
                let mut r = old.and_then(FileRecord::decode).unwrap_or_default();
                f(&mut r);
                (!r.is_empty()).then(|| r.encode())
            })
            .map(|_| ())
            .map_err(db_err("recording a blob's record"))
    }

    /// Last recorded access of `d`, unix milliseconds.
    pub fn access_time(&self, d: &Digest) -> Result<Option<u64>> {
        Ok(self.file(d)?.map(|r| r.access).filter(|&t| t > 0))
    }

    /// Records the seal (ctime and length) of a committed blob file.
    pub(super) fn put_seal(&self, d: &Digest, seal: &str) -> Result<()> {
        self.update_file(d, |r| r.seal = seal.to_string())
    }

    pub(super) fn seal(&self, d: &Digest) -> Result<Option<String>> {
        Ok(self.file(d)?.map(|r| r.seal).filter(|s| !s.is_empty()))
    }

    pub(super) fn remove_seal(&self, d: &Digest) -> Result<()> {
        self.update_file(d, |r| r.seal.clear())
    }

    /// Takes the mirror cache's totals saved at the last clean shutdown,
    /// removing them durably: whatever changes from now on makes them
    /// stale, so a crash before the next save leads to a recount.
    pub(super) fn take_counts(&self) -> Result<Option<Vec<u8>>> {
        let v = self
            .db
            .remove(COUNTS)
            .map_err(db_err("reading the saved cache totals"))?;
        if v.is_some() {
            self.db.flush().map_err(db_err("flushing the index"))?;
        }
        Ok(v.map(|v| v.to_vec()))
    }

    /// Saves the mirror cache's totals (a local record: never journaled).
    pub(super) fn save_counts(&self, v: &[u8]) -> Result<()> {
        self.db
            .insert(COUNTS, v)
            .map(|_| ())
            .map_err(db_err("saving the cache totals"))
    }

    /// Drops saved totals that no longer hold.
    pub(super) fn forget_counts(&self) -> Result<()> {
        self.db
            .remove(COUNTS)
            .map(|_| ())
            .map_err(db_err("dropping the saved cache totals"))
    }

    /// Every cached mirrored blob and manifest: (upstream, digest, size).
    pub fn mirror_entries(&self) -> Result<Vec<MirrorEntry>> {
        let mut out = Vec::new();
        self.for_each_mirror_entry(|e| out.push(e))?;
        Ok(out)
    }

    /// Calls `f` with each cached mirrored blob and manifest, in key order,
    /// holding none of them (for passes over a whole store).
    pub fn for_each_mirror_entry(&self, mut f: impl FnMut(MirrorEntry)) -> Result<()> {
        for (prefix, manifest) in [(&b"B/"[..], false), (&b"M/"[..], true)] {
            for kv in self.db.scan_prefix(prefix) {
                let (k, v) = kv.map_err(db_err("scanning the cache"))?;
                let Some((upstream, digest)) = layout::name_and_digest(&k) else {
                    continue;
                };
                let size = if manifest {
                    layout::decode_meta(&v).map_or(0, |m| m.size)
                } else {
                    std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                };
                f(MirrorEntry {
                    upstream,
                    digest,
                    size,
                    manifest,
                });
            }
        }
        Ok(())
    }

    /// Digests linked into any local repository (and so never evicted),
    /// with the repositories holding each.
    pub fn local_links(&self) -> Result<HashMap<Digest, Vec<String>>> {
        let mut out: HashMap<Digest, Vec<String>> = HashMap::new();
        self.for_each_local_link(|repo, d| out.entry(d).or_default().push(repo.to_string()))?;
        Ok(out)
    }

    /// Calls `f` with each (repository, digest) link of local content.
    pub fn for_each_local_link(&self, f: impl FnMut(&str, Digest)) -> Result<()> {
        self.for_each_repo_digest(b"l/", "scanning links", f)
    }

    /// Calls `f` with the repository and digest of each local manifest.
    pub fn for_each_local_manifest(&self, f: impl FnMut(&str, Digest)) -> Result<()> {
        self.for_each_repo_digest(b"m/", "scanning manifests", f)
    }

    /// Calls `f` with the repository and digest of each `<prefix><repo>\0<digest>`
    /// key (skipping keys that do not parse).
    fn for_each_repo_digest(
        &self,
        prefix: &[u8],
        context: &'static str,
        mut f: impl FnMut(&str, Digest),
    ) -> Result<()> {
        for kv in self.db.scan_prefix(prefix) {
            let (k, _) = kv.map_err(db_err(context))?;
            if let Some((repo, d)) = layout::name_and_digest(&k) {
                f(&repo, d);
            }
        }
        Ok(())
    }

    /// Local manifests in key order after (repository, digest) `after`, at
    /// most `n`: a pass over them a page at a time.
    pub fn local_manifests_after(
        &self,
        after: Option<&(String, Digest)>,
        n: usize,
    ) -> Result<Vec<(String, Digest, ManifestMeta)>> {
        let start = match after {
            Some((repo, d)) => {
                let mut k = layout::manifest(repo, d);
                k.push(0);
                k
            }
            None => b"m/".to_vec(),
        };
        let mut out = Vec::new();
        for kv in self.db.range(start..) {
            if out.len() >= n {
                break;
            }
            let (k, v) = kv.map_err(db_err("scanning manifests"))?;
            if !k.starts_with(b"m/") {
                break;
            }
            if let Some((repo, d)) = layout::name_and_digest(&k) {
                out.push((repo, d, decode_meta(&v)?));
            }
        }
        Ok(out)
    }

    /// Last-access times (unix milliseconds) recorded so far.
    pub fn access_times(&self) -> Result<HashMap<Digest, u64>> {
        let mut out = HashMap::new();
        for kv in self.db.scan_prefix(b"s/") {
            let (k, v) = kv.map_err(db_err("scanning access times"))?;
            let Some(d) = layout::parse_key(&k).and_then(|p| p.first()?.digest().cloned()) else {
                continue;
            };
            match FileRecord::decode(&v) {
                Some(r) if r.access > 0 => {
                    out.insert(d, r.access);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Records last-access times, in one batch: each record is read, its
    /// time set, and all are written at once (one write per eviction round
    /// and per minute, not one per blob). A seal written between the read
    /// and the batch (a file sealed again after it was hashed again) is
    /// overwritten by the one read: that file is hashed once more at its
    /// next open, never trusted on a wrong seal; a record removed between
    /// them (its blob evicted) comes back with its old seal, which no new
    /// file matches.
    pub(super) fn put_access_times(&self, times: &[(Digest, u64)]) -> Result<()> {
        let mut b = sled::Batch::default();
        for (d, t) in times {
            let mut r = self.file(d)?.unwrap_or_default();
            r.access = *t;
            b.insert(layout::file(d), r.encode());
        }
        self.db
            .apply_batch(b)
            .map_err(db_err("recording access times"))
    }

    /// Forgets every mirror record of each digest (with its size and
    /// records) in `batch`, in one write: they are being evicted.
    pub(super) fn forget_mirrored_many(
        &self,
        batch: &[(Digest, u64, Vec<MirrorEntry>)],
    ) -> Result<()> {
        let mut b = Changes::default();
        for (d, _, entries) in batch {
            forget_into(&mut b, d, entries.iter());
        }
        self.apply(b).map_err(db_err("forgetting evicted content"))
    }

    /// Forgets every mirror record of `d` (found damaged or missing).
    pub(super) fn forget_mirrored(&self, d: &Digest, entries: &[&MirrorEntry]) -> Result<()> {
        let mut b = Changes::default();
        forget_into(&mut b, d, entries.iter().copied());
        self.apply(b).map_err(db_err("forgetting mirrored content"))
    }

    /// Forgets the mirrored tags that last resolved to a manifest in
    /// `gone` (upstream, digest) that is no longer cached: evicted content
    /// leaves no record behind pointing at it (a pull of such a tag asks
    /// the upstream again). One pass over the tag records; a tag that
    /// moved meanwhile, or whose manifest came back, stays. Returns how
    /// many were forgotten.
    pub(super) fn forget_tags_of(&self, gone: &HashSet<(String, Digest)>) -> Result<usize> {
        if gone.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        for kv in self.db.scan_prefix(b"T/") {
            let (k, v) = kv.map_err(db_err("scanning mirrored tags"))?;
            let Some(upstream) = k[2..].split(|b| *b == 0).next() else {
                continue;
            };
            let upstream = String::from_utf8_lossy(upstream).into_owned();
            let Some(d) = layout::read_digest(&v) else {
                continue;
            };
            let entry = (upstream, d);
            if !gone.contains(&entry) {
                continue;
            }
            let (upstream, d) = entry;
            if self.mirror_manifest(&upstream, &d)?.is_some() {
                continue;
            }
            let _noted = self
                .note([&k[..]])
                .map_err(db_err("forgetting a mirrored tag"))?;
            let swapped = self
                .db
                .compare_and_swap(&k, Some(&v), None as Option<&[u8]>)
                .map_err(db_err("forgetting a mirrored tag"))?;
            n += usize::from(swapped.is_ok());
        }
        Ok(n)
    }

    /// Removes every local link to `d` (garbage collection).
    pub(super) fn unlink_everywhere(&self, d: &Digest, repos: &[String]) -> Result<()> {
        let mut b = Changes::default();
        for r in repos {
            b.remove(layout::link(r, d));
        }
        b.remove(layout::file(d));
        self.apply(b).map_err(db_err("unlinking collected blobs"))
    }

    /// Keys under `prefix` (with the prefix cut off), after `last`, at most `n`.
    fn list_after(&self, prefix: Vec<u8>, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let start = after_key(&prefix, last);
        let mut out = Vec::new();
        for kv in self.db.range(start..) {
            if out.len() >= n {
                break;
            }
            let (k, _) = kv.map_err(db_err("listing"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }
}

/// The smallest key after every tag record of mirrored `upstream`/`repo`
/// (tags are printable ASCII, so no tag key reaches byte 0xff).
fn past_repo(upstream: &str, repo: &str) -> Vec<u8> {
    let mut k = layout::mirror_tags_of(upstream, repo);
    k.push(0xff);
    k
}

/// The first key under `prefix` that comes after `prefix` + `last`.
fn after_key(prefix: &[u8], last: Option<&str>) -> Vec<u8> {
    let mut s = prefix.to_vec();
    if let Some(l) = last {
        s.extend_from_slice(l.as_bytes());
        s.push(0); // the smallest key strictly after `last`
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Algorithm;

    fn index() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index"), 1 << 20, None).unwrap();
        (dir, idx)
    }

    fn meta() -> ManifestMeta {
        ManifestMeta {
            media_type: "m".into(),
            size: 1,
            subject: None,
            stored: 0,
        }
    }

    #[test]
    fn tags_page_in_lexical_order_per_repo() {
        let (_d, idx) = index();
        let a = RepoName::parse("a").unwrap();
        let ab = RepoName::parse("a/b").unwrap();
        let dg = Digest::of(Algorithm::Sha256, b"m");
        let tags: Vec<Tag> = ["b", "a", "c", "a1"]
            .iter()
            .map(|t| Tag::parse(t).unwrap())
            .collect();
        idx.put_manifest(ManifestPut {
            repo: &a,
            digest: &dg,
            meta: meta(),
            tags: &tags,
            referrer: None,
        })
        .unwrap();
        let other = [Tag::parse("zz").unwrap()];
        idx.put_manifest(ManifestPut {
            repo: &ab,
            digest: &dg,
            meta: meta(),
            tags: &other,
            referrer: None,
        })
        .unwrap();
        assert_eq!(idx.tags(&a, None, 100).unwrap(), ["a", "a1", "b", "c"]);
        assert_eq!(idx.tags(&a, None, 2).unwrap(), ["a", "a1"]);
        assert_eq!(idx.tags(&a, Some("a1"), 100).unwrap(), ["b", "c"]);
        assert_eq!(idx.tags(&a, Some("c"), 100).unwrap(), Vec::<String>::new());
        assert_eq!(idx.repos(None, 10).unwrap(), ["a", "a/b"]);
        assert_eq!(idx.repos(Some("a"), 10).unwrap(), ["a/b"]);

        assert!(idx.delete_manifest(&a, &dg).unwrap().is_some());
        assert!(idx.tags(&a, None, 100).unwrap().is_empty());
        assert_eq!(idx.tags(&ab, None, 100).unwrap(), ["zz"]);
        assert!(!idx.blob_linked(&a, &dg).unwrap());
    }

    fn put(idx: &Index, repo: &RepoName, d: &Digest, tags: &[Tag], subject: Option<&Digest>) {
        let referrer = subject.map(|_| Descriptor {
            media_type: "m".into(),
            digest: d.clone(),
            size: 1,
            artifact_type: Some("t".into()),
            annotations: None,
            urls: None,
        });
        idx.put_manifest(ManifestPut {
            repo,
            digest: d,
            meta: ManifestMeta {
                subject: subject.cloned(),
                ..meta()
            },
            tags,
            referrer,
        })
        .unwrap();
    }

    #[test]
    fn an_emptied_repository_leaves_the_catalog() {
        let (_d, idx) = index();
        let a = RepoName::parse("a").unwrap();
        let (m1, m2) = (
            Digest::of(Algorithm::Sha256, b"1"),
            Digest::of(Algorithm::Sha256, b"2"),
        );
        idx.link_blob(&a, &Digest::of(Algorithm::Sha256, b"blob"))
            .unwrap();
        assert!(!idx.repo_exists(&a).unwrap(), "blobs alone list nothing");
        let t = [Tag::parse("t").unwrap()];
        put(&idx, &a, &m1, &t, None);
        put(&idx, &a, &m2, &[], None);
        assert_eq!(idx.repos(None, 10).unwrap(), ["a"]);
        idx.delete_tag(&a, &t[0]).unwrap();
        idx.delete_manifest(&a, &m1).unwrap();
        assert!(idx.repo_exists(&a).unwrap(), "an untagged manifest remains");
        idx.delete_manifest(&a, &m2).unwrap();
        assert!(!idx.repo_exists(&a).unwrap());
        assert!(idx.repos(None, 10).unwrap().is_empty());
        assert!(idx
            .blob_linked(&a, &Digest::of(Algorithm::Sha256, b"blob"))
            .unwrap());
        put(&idx, &a, &m1, &t, None);
        assert_eq!(idx.repos(None, 10).unwrap(), ["a"]);
    }

    /// A manifest recorded while the repository's last one is deleted
    /// keeps the repository listed, whichever lands first.
    #[test]
    fn a_push_while_the_repository_empties_stays_listed() {
        let (_d, idx) = index();
        let a = RepoName::parse("a").unwrap();
        for round in 0..300u32 {
            let x = Digest::of(Algorithm::Sha256, &(2 * round).to_be_bytes());
            let y = Digest::of(Algorithm::Sha256, &(2 * round + 1).to_be_bytes());
            put(&idx, &a, &x, &[], None);
            let deleting = {
                let (idx, a, x) = (idx.clone(), a.clone(), x.clone());
                std::thread::spawn(move || idx.delete_manifest(&a, &x).unwrap())
            };
            let pushing = {
                let (idx, a, y) = (idx.clone(), a.clone(), y.clone());
                std::thread::spawn(move || put(&idx, &a, &y, &[], None))
            };
            deleting.join().unwrap();
            pushing.join().unwrap();
            assert!(idx.repo_exists(&a).unwrap(), "round {round}");
            idx.delete_manifest(&a, &y).unwrap();
            assert!(!idx.repo_exists(&a).unwrap(), "round {round}");
        }
    }

    #[test]
    fn referrers_list_in_digest_order_after_a_digest() {
        let (_d, idx) = index();
        let a = RepoName::parse("a").unwrap();
        let ab = RepoName::parse("a/b").unwrap();
        let s = Digest::of(Algorithm::Sha256, b"subject");
        let other = Digest::of(Algorithm::Sha256, b"other");
        for i in 0..5u8 {
            put(
                &idx,
                &a,
                &Digest::of(Algorithm::Sha256, &[i]),
                &[],
                Some(&s),
            );
        }
        put(
            &idx,
            &ab,
            &Digest::of(Algorithm::Sha256, b"x"),
            &[],
            Some(&s),
        );
        put(
            &idx,
            &a,
            &Digest::of(Algorithm::Sha256, b"y"),
            &[],
            Some(&other),
        );
        let list = |after: Option<&str>| -> Vec<String> {
            let after: Option<Digest> = after.map(|a| a.parse().unwrap());
            idx.referrers_after(&a, &s, after.as_ref())
                .map(|d| d.unwrap().digest.to_string())
                .collect()
        };
        let all = list(None);
        assert_eq!(all.len(), 5);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(list(Some(&all[1])), all[2..]);
        assert!(list(Some(&all[4])).is_empty());
        let before_all = format!("sha256:{}", "0".repeat(64));
        assert_eq!(list(Some(&before_all)), all, "before every digest");
    }

    /// The sled 0.34 `flush_async` deadlock (spacejam/sled#1308) showed up
    /// as concurrent pushes that never completed; the group flush must not.
    /// The work runs on its own runtime thread so a deadlock fails the test
    /// instead of hanging it.
    #[test]
    fn concurrent_flushes_all_complete() {
        let (_d, idx) = index();
        let repo = RepoName::parse("r").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (idx2, repo2) = (idx.clone(), repo.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap();
            let done = rt.block_on(async move {
                let tasks: Vec<_> = (0..200u32)
                    .map(|i| {
                        let (idx, repo) = (idx2.clone(), repo2.clone());
                        tokio::spawn(async move {
                            let d = Digest::of(Algorithm::Sha256, &i.to_be_bytes());
                            idx.link_blob(&repo, &d).unwrap();
                            idx.flush().await.unwrap();
                            d
                        })
                    })
                    .collect();
                let mut done = Vec::new();
                for t in tasks {
                    done.push(t.await.unwrap());
                }
                done
            });
            let _ = tx.send(done);
        });
        let done = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("concurrent flushes deadlocked");
        for d in done {
            assert!(idx.blob_linked(&repo, &d).unwrap());
        }
        use std::sync::atomic::Ordering::SeqCst;
        assert_eq!(idx.flusher.completed.load(SeqCst), 200);
    }

    #[test]
    fn mirrored_repositories_list_once_each_and_page() {
        let (_d, idx) = index();
        let d = Digest::of(Algorithm::Sha256, b"x");
        for (u, r, t) in [
            ("docker.io", "library/alpine", "3.20"),
            ("docker.io", "library/alpine", "latest"),
            ("docker.io", "library/alpine/sub", "1"),
            ("docker.io", "library/busybox", "1"),
            ("quay.io", "a/b", "v1"),
        ] {
            idx.put_mirror_tag(u, r, t, &d).unwrap();
        }
        let all = idx.mirror_repos(None, 100).unwrap();
        let names: Vec<String> = all.iter().map(|(u, r)| format!("{u}/{r}")).collect();
        assert_eq!(
            names,
            [
                "docker.io/library/alpine",
                "docker.io/library/alpine/sub",
                "docker.io/library/busybox",
                "quay.io/a/b"
            ]
        );
        let page = idx
            .mirror_repos(Some(("docker.io", "library/alpine")), 2)
            .unwrap();
        assert_eq!(page[0].1, "library/alpine/sub");
        assert_eq!(page.len(), 2);
        let tags = idx
            .mirror_tag_digests("docker.io", "library/alpine", None, 10)
            .unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].0, "3.20");
        assert!(idx
            .mirror_repos(Some(("quay.io", "a/b")), 5)
            .unwrap()
            .is_empty());
    }
}
